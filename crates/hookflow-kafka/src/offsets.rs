//! Which offsets may be committed. Messages finish out of order (they are processed
//! concurrently), but a commit says "everything before this offset is done", so the
//! committable offset of a partition is its lowest unfinished offset, or one past the
//! highest seen when nothing is unfinished. A message that never finishes (interrupted by
//! shutdown while its dependency was down) holds its partition's commits back, so it is
//! consumed again after a restart: nothing is lost.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A topic and partition.
pub type Partition = (String, i32);

#[derive(Debug, Default)]
struct PartitionOffsets {
    unfinished: BTreeSet<i64>,
    next: Option<i64>,
    committed: Option<i64>,
}

impl PartitionOffsets {
    fn committable(&self) -> Option<i64> {
        self.unfinished.first().copied().or(self.next)
    }
}

/// Offsets in flight and committable, per partition.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<Partition, PartitionOffsets>,
}

impl OffsetTracker {
    /// A message at `offset` started processing.
    pub fn begin(&mut self, partition: &Partition, offset: i64) {
        let p = self.partitions.entry(partition.clone()).or_default();
        p.unfinished.insert(offset);
        p.next = Some(p.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// The message at `offset` is done (started, skipped or dead-lettered).
    pub fn finish(&mut self, partition: &Partition, offset: i64) {
        if let Some(p) = self.partitions.get_mut(partition) {
            p.unfinished.remove(&offset);
        }
    }

    /// Messages still being processed in `partition`.
    pub fn in_flight(&self, partition: &Partition) -> usize {
        self.partitions
            .get(partition)
            .map_or(0, |p| p.unfinished.len())
    }

    /// Messages still being processed in all partitions.
    pub fn total_in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.unfinished.len()).sum()
    }

    /// The offsets to commit now: for each partition whose committable offset moved past
    /// the last commit. Marks them committed; call [`Self::commit_failed`] if the commit fails.
    pub fn take_commits(&mut self) -> BTreeMap<Partition, i64> {
        let mut commits = BTreeMap::new();
        for (partition, p) in &mut self.partitions {
            if let Some(offset) = p.committable()
                && p.committed.is_none_or(|c| offset > c)
            {
                p.committed = Some(offset);
                commits.insert(partition.clone(), offset);
            }
        }
        commits
    }

    /// A commit of `offsets` failed: they will be offered again by the next [`Self::take_commits`].
    pub fn commit_failed(&mut self, offsets: &BTreeMap<Partition, i64>) {
        for partition in offsets.keys() {
            if let Some(p) = self.partitions.get_mut(partition) {
                p.committed = None;
            }
        }
    }

    /// Forgets a partition this consumer no longer owns.
    pub fn forget(&mut self, partition: &Partition) {
        self.partitions.remove(partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> Partition {
        ("t".to_owned(), n)
    }

    #[test]
    fn commits_never_pass_an_unfinished_offset() {
        let mut t = OffsetTracker::default();
        for offset in 10..15 {
            t.begin(&p(0), offset);
        }
        t.finish(&p(0), 11);
        t.finish(&p(0), 12);
        assert_eq!(t.take_commits(), BTreeMap::from([(p(0), 10)]));
        t.finish(&p(0), 10);
        assert_eq!(t.take_commits(), BTreeMap::from([(p(0), 13)]));
        t.finish(&p(0), 14);
        assert_eq!(t.take_commits(), BTreeMap::new(), "13 is still unfinished");
        t.finish(&p(0), 13);
        assert_eq!(t.take_commits(), BTreeMap::from([(p(0), 15)]));
        assert_eq!(t.take_commits(), BTreeMap::new(), "nothing new to commit");
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = OffsetTracker::default();
        t.begin(&p(0), 0);
        t.begin(&p(1), 5);
        t.finish(&p(1), 5);
        assert_eq!(t.take_commits(), BTreeMap::from([(p(0), 0), (p(1), 6)]));
        assert_eq!(t.in_flight(&p(0)), 1);
        assert_eq!(t.total_in_flight(), 1);
    }

    #[test]
    fn a_failed_commit_is_offered_again_and_forgotten_partitions_are_dropped() {
        let mut t = OffsetTracker::default();
        t.begin(&p(0), 0);
        t.finish(&p(0), 0);
        let commits = t.take_commits();
        t.commit_failed(&commits);
        assert_eq!(t.take_commits(), commits);
        t.forget(&p(0));
        t.finish(&p(0), 7);
        assert_eq!(t.take_commits(), BTreeMap::new());
    }
}
