//! Every metric hookflow exports. Labels are bounded: outcomes, reasons, status classes and
//! error kinds, never URLs, ids or free text.

/// Kafka messages handled, by `outcome`: `started` (every delivery started or found
/// existing), `skipped` (no destination wants it), `dead_lettered`, `interrupted`
/// (shutdown came while a start was being retried: not committed, consumed again).
pub const CONSUMER_MESSAGES: &str = "hookflow_consumer_messages_total";
/// Messages skipped, by `reason`: `no_destinations`, `no_matching_destination`.
pub const CONSUMER_SKIPPED: &str = "hookflow_consumer_skipped_total";
/// Messages dead-lettered, by `reason`: `not_json`, `contract`, `empty`, `unstartable`.
pub const CONSUMER_DEAD_LETTERS: &str = "hookflow_consumer_dead_letters_total";
/// Dead letters sent truncated because the full copy was refused as too large.
pub const CONSUMER_DEAD_LETTERS_TRUNCATED: &str = "hookflow_consumer_dead_letters_truncated_total";
/// Offset commits, by `result`: `ok`, `error`.
pub const CONSUMER_COMMITS: &str = "hookflow_consumer_commits_total";
/// Messages behind the high watermark, by `topic` and `partition` (bounded by the topic's
/// partition count), from librdkafka's statistics every 5 s; 0 in a process once the
/// partition is revoked from it.
pub const CONSUMER_LAG: &str = "hookflow_consumer_lag";
/// Messages being processed now.
pub const CONSUMER_MESSAGES_IN_FLIGHT: &str = "hookflow_consumer_messages_in_flight";
/// Workflow starts, by `result`: `started`, `already_exists` (the delivery is running or
/// finished: a replayed or duplicated message), `failed`.
pub const WORKFLOW_STARTS: &str = "hookflow_workflow_starts_total";
/// Workflow starts waiting for Temporal's answer now (bounded by
/// `kafka.max_starts_in_flight`).
pub const WORKFLOW_STARTS_IN_FLIGHT: &str = "hookflow_workflow_starts_in_flight";
/// Destinations loaded from the destination store.
pub const DESTINATIONS_LOADED: &str = "hookflow_destinations_loaded";
/// Reloads of the destinations file after it changed, by `result`: `ok`, `error` (the last
/// good destinations stay in use).
pub const DESTINATION_RELOADS: &str = "hookflow_destination_reloads_total";
/// Catalog rows applied by this process, by `result`: `applied`, `refused` (the row cannot
/// be read or validated; see `hookflow_destination_rows_refused`).
pub const DESTINATION_CHANGES: &str = "hookflow_destination_changes_total";
/// Catalog rows this process refuses now, by `in_use`: `last_good` (an earlier version of
/// the destination delivers), `none` (it has no usable version and receives nothing).
pub const DESTINATION_ROWS_REFUSED: &str = "hookflow_destination_rows_refused";
/// 1 while the destination catalog (PostgreSQL) answers this process, 0 while it does not
/// (the destinations in memory stay in use; writes answer 503).
pub const DESTINATION_CATALOG_UP: &str = "hookflow_destination_catalog_up";
/// Time to start one delivery workflow, seconds.
pub const WORKFLOW_START_DURATION: &str = "hookflow_workflow_start_duration_seconds";
/// HTTP attempts, by `class`: `2xx`…`5xx`, `timeout`, `connect`, `blocked`, `invalid`, `other`.
pub const DELIVERY_ATTEMPTS: &str = "hookflow_delivery_attempts_total";
/// Duration of one HTTP attempt, seconds.
pub const DELIVERY_ATTEMPT_DURATION: &str = "hookflow_delivery_attempt_duration_seconds";
/// Finished deliveries, by `outcome`: `delivered`, `failed_permanently`, `gave_up`,
/// `cancelled`, `destination_disabled`, `destination_deleted`.
pub const DELIVERIES: &str = "hookflow_deliveries_total";
/// HTTP attempts a finished delivery made.
pub const DELIVERY_ATTEMPTS_PER_DELIVERY: &str = "hookflow_delivery_attempts_per_delivery";
/// From the event's Kafka timestamp to the endpoint's 2xx, seconds.
pub const DELIVERY_END_TO_END_DURATION: &str = "hookflow_delivery_end_to_end_seconds";
/// Circuit breaker phase changes made by this process, by `from` and `to`: `closed`,
/// `open`, `half_open`. Summed over processes it counts every transition once.
pub const BREAKER_TRANSITIONS: &str = "hookflow_breaker_transitions_total";
/// Endpoints this process knows, by breaker `state`. No endpoint label: endpoints are
/// customer-controlled and unbounded.
pub const BREAKERS: &str = "hookflow_breakers";
/// How long each of the [`OPEN_BREAKERS_NAMED`] longest-open breakers this process knows
/// has been open or half-open since it tripped, by `endpoint_key` (never a
/// path, query or credential). Computed at each scrape, so at most that many series exist.
pub const BREAKER_OPEN_SECONDS: &str = "hookflow_breaker_open_seconds";
/// How many open breakers each process names in [`BREAKER_OPEN_SECONDS`].
pub const OPEN_BREAKERS_NAMED: usize = 10;
/// Attempts deferred without a request, by `reason`: `rate_limited` (the limiter
/// refused), `concurrency_cap`, `breaker_open`.
pub const DEFERRALS: &str = "hookflow_deferrals_total";
/// Deliveries woken because their endpoint's breaker closed, by `result`: `signalled`, or
/// `error` (finished since, or Temporal unreachable: they wake by their own timers).
pub const BREAKER_WAKEUPS: &str = "hookflow_breaker_wakeups_total";
/// Local activities run again after their workflow task failed or was lost, answered with
/// the result their first run recorded instead of acting again, by `activity`: `attempt`
/// (no request sent twice), `record_outcome` (no delivery counted twice).
pub const ACTIVITIES_RECALLED: &str = "hookflow_activities_recalled_total";
/// Attempts in flight now in this worker.
pub const ATTEMPTS_IN_FLIGHT: &str = "hookflow_attempts_in_flight";
/// Live worker processes sharing the rate limits (from the Redis worker set).
pub const WORKERS_LIVE: &str = "hookflow_workers_live";
/// Destination notices published to the outcomes topic, by `type` (`destination.failing`,
/// `destination.disabled`, `destination.enabled`) and `result` (`sent`, `error`).
pub const NOTICES: &str = "hookflow_notices_total";
/// Destinations disabled by this process, after 410 Gone or a failure streak.
pub const DESTINATIONS_DISABLED: &str = "hookflow_destinations_disabled_total";
/// 1 while Redis answers, 0 while this process runs on its per-process fallback.
pub const REDIS_AVAILABLE: &str = "hookflow_redis_available";
/// Redis commands that failed or timed out.
pub const REDIS_ERRORS: &str = "hookflow_redis_errors_total";
/// 1 while a component is ready, by `component`: `temporal`, `kafka_consumer`,
/// `temporal_worker`, `redis`, `destinations`, `temporal_starts` (Temporal accepts workflow
/// starts; not ready while it refuses them and consumption waits)
/// (what `/_readiness` reports, for alerting).
pub const COMPONENT_READY: &str = "hookflow_component_ready";
/// Failed attempts by `endpoint_key` (`scheme://host:port` or the destination's key). Only
/// exported when `telemetry.endpoint_labels` is on: endpoints are customer-controlled, so
/// the label is unbounded; opt in where the destination count is known and small.
pub const ENDPOINT_FAILURES: &str = "hookflow_endpoint_failures_total";
/// Outcome summaries for the outcomes topic, by `result`: `sent`, `error` (kept and sent
/// with the next window), `dropped` (too many kept while the broker was down).
pub const OUTCOME_SUMMARIES: &str = "hookflow_outcome_summaries_total";
/// Always 1, labelled with the running `version`.
pub const BUILD_INFO: &str = "hookflow_build_info";

#[cfg(test)]
mod tests {
    /// Every metric above has a row in docs/metrics.md, and every row names a metric above.
    #[test]
    fn the_metrics_table_lists_exactly_these_metrics() {
        let source = include_str!("names.rs");
        let mut defined: Vec<&str> = source
            .lines()
            .filter(|l| l.starts_with("pub const "))
            .filter_map(|l| l.split('"').nth(1))
            .collect();
        let doc = include_str!("../../../docs/metrics.md");
        let mut documented: Vec<String> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `hookflow_"))
            .filter_map(|l| l.split('`').next())
            .map(|name| format!("hookflow_{name}"))
            .collect();
        defined.sort_unstable();
        documented.sort_unstable();
        assert_eq!(defined, documented);
    }
}
