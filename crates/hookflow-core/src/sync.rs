//! Locks that survive a panic. hookflow's shared state behind a `std::sync` lock (caches of
//! breakers and limiters, offset bookkeeping, counters, the live destination set) is
//! updated in one step under the lock, so a panic elsewhere while it was held cannot leave
//! it half-written. A poisoned lock is therefore taken as it is: one panicking task must
//! not take every later delivery down with it.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `lock()` that recovers a poisoned mutex.
pub trait LockUnpoisoned<T: ?Sized> {
    /// The guard, poisoned or not.
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockUnpoisoned<T> for Mutex<T> {
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `read()` and `write()` that recover a poisoned lock.
pub trait RwLockUnpoisoned<T: ?Sized> {
    /// The read guard, poisoned or not.
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T>;
    /// The write guard, poisoned or not.
    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockUnpoisoned<T> for RwLock<T> {
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_lock_poisoned_by_a_panic_is_still_usable() {
        let shared = Arc::new(Mutex::new(1));
        let poisoner = shared.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.lock().expect("first lock");
            panic!("a task panics while holding the lock");
        })
        .join();
        assert!(shared.is_poisoned());
        *shared.lock_unpoisoned() += 1;
        assert_eq!(*shared.lock_unpoisoned(), 2);
    }
}
