//! Which Postgres settings a Toygres user may change, and why the others are refused.
//!
//! An allow-list, as RDS's `IsModifiable` and CloudNativePG's fixed list are: a setting missing
//! here is refused, so a new Postgres release adds no way to load a library, run a command or
//! move a file. The refused families each get their own reason, so the catalog can say why.

/// Settings users may change (PostgreSQL 15 names). Sorted, so a lookup is a binary search.
const ALLOWED: &[&str] = &[
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "application_name",
    "archive_timeout",
    "array_nulls",
    "authentication_timeout",
    "autovacuum",
    "autovacuum_analyze_scale_factor",
    "autovacuum_analyze_threshold",
    "autovacuum_freeze_max_age",
    "autovacuum_max_workers",
    "autovacuum_multixact_freeze_max_age",
    "autovacuum_naptime",
    "autovacuum_vacuum_cost_delay",
    "autovacuum_vacuum_cost_limit",
    "autovacuum_vacuum_insert_scale_factor",
    "autovacuum_vacuum_insert_threshold",
    "autovacuum_vacuum_scale_factor",
    "autovacuum_vacuum_threshold",
    "autovacuum_work_mem",
    "backend_flush_after",
    "backslash_quote",
    "bgwriter_delay",
    "bgwriter_flush_after",
    "bgwriter_lru_maxpages",
    "bgwriter_lru_multiplier",
    "bytea_output",
    "check_function_bodies",
    "checkpoint_completion_target",
    "checkpoint_flush_after",
    "checkpoint_timeout",
    "checkpoint_warning",
    "client_connection_check_interval",
    "client_encoding",
    "client_min_messages",
    "commit_delay",
    "commit_siblings",
    "compute_query_id",
    "constraint_exclusion",
    "cpu_index_tuple_cost",
    "cpu_operator_cost",
    "cpu_tuple_cost",
    "cursor_tuple_fraction",
    "deadlock_timeout",
    "default_statistics_target",
    "default_text_search_config",
    "default_toast_compression",
    "default_transaction_deferrable",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "effective_cache_size",
    "effective_io_concurrency",
    "enable_async_append",
    "enable_bitmapscan",
    "enable_gathermerge",
    "enable_hashagg",
    "enable_hashjoin",
    "enable_incremental_sort",
    "enable_indexonlyscan",
    "enable_indexscan",
    "enable_material",
    "enable_memoize",
    "enable_mergejoin",
    "enable_nestloop",
    "enable_parallel_append",
    "enable_parallel_hash",
    "enable_partition_pruning",
    "enable_partitionwise_aggregate",
    "enable_partitionwise_join",
    "enable_seqscan",
    "enable_sort",
    "enable_tidscan",
    "escape_string_warning",
    "extra_float_digits",
    "from_collapse_limit",
    "geqo",
    "geqo_effort",
    "geqo_generations",
    "geqo_pool_size",
    "geqo_seed",
    "geqo_selection_bias",
    "geqo_threshold",
    "gin_fuzzy_search_limit",
    "gin_pending_list_limit",
    "hash_mem_multiplier",
    "hot_standby_feedback",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "jit",
    "jit_above_cost",
    "jit_inline_above_cost",
    "jit_optimize_above_cost",
    "join_collapse_limit",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "lock_timeout",
    "log_autovacuum_min_duration",
    "log_checkpoints",
    "log_connections",
    "log_disconnections",
    "log_duration",
    "log_error_verbosity",
    "log_hostname",
    "log_line_prefix",
    "log_lock_waits",
    "log_min_duration_sample",
    "log_min_duration_statement",
    "log_min_error_statement",
    "log_min_messages",
    "log_parameter_max_length",
    "log_parameter_max_length_on_error",
    "log_recovery_conflict_waits",
    "log_replication_commands",
    "log_statement",
    "log_statement_sample_rate",
    "log_temp_files",
    "log_timezone",
    "log_transaction_sample_rate",
    "logical_decoding_work_mem",
    "maintenance_io_concurrency",
    "maintenance_work_mem",
    "max_connections",
    "max_locks_per_transaction",
    "max_logical_replication_workers",
    "max_parallel_maintenance_workers",
    "max_parallel_workers",
    "max_parallel_workers_per_gather",
    "max_pred_locks_per_page",
    "max_pred_locks_per_relation",
    "max_pred_locks_per_transaction",
    "max_prepared_transactions",
    "max_replication_slots",
    "max_standby_archive_delay",
    "max_standby_streaming_delay",
    "max_sync_workers_per_subscription",
    "max_wal_senders",
    "max_wal_size",
    "max_worker_processes",
    "min_parallel_index_scan_size",
    "min_parallel_table_scan_size",
    "min_wal_size",
    "parallel_leader_participation",
    "parallel_setup_cost",
    "parallel_tuple_cost",
    "plan_cache_mode",
    "quote_all_identifiers",
    "random_page_cost",
    "row_security",
    "search_path",
    "seq_page_cost",
    "shared_buffers",
    "standard_conforming_strings",
    "statement_timeout",
    "superuser_reserved_connections",
    "synchronize_seqscans",
    "tcp_keepalives_count",
    "tcp_keepalives_idle",
    "tcp_keepalives_interval",
    "tcp_user_timeout",
    "temp_buffers",
    "temp_file_limit",
    "track_activities",
    "track_activity_query_size",
    "track_commit_timestamp",
    "track_counts",
    "track_functions",
    "track_io_timing",
    "track_wal_io_timing",
    "transform_null_equals",
    "vacuum_cost_delay",
    "vacuum_cost_limit",
    "vacuum_cost_page_dirty",
    "vacuum_cost_page_hit",
    "vacuum_cost_page_miss",
    "vacuum_failsafe_age",
    "vacuum_freeze_min_age",
    "vacuum_freeze_table_age",
    "vacuum_multixact_failsafe_age",
    "vacuum_multixact_freeze_min_age",
    "vacuum_multixact_freeze_table_age",
    "wal_buffers",
    "wal_compression",
    "wal_keep_size",
    "wal_receiver_status_interval",
    "wal_receiver_timeout",
    "wal_retrieve_retry_interval",
    "wal_sender_timeout",
    "wal_writer_delay",
    "wal_writer_flush_after",
    "work_mem",
    "xmlbinary",
    "xmloption",
];

/// Settings Toygres sets itself (on top of those the sidecar writes to `toygres.conf`): a user
/// value would fight the platform or stop replication, backups or TLS from working.
const OWNED: &[&str] = &[
    "archive_cleanup_command",
    "archive_command",
    "archive_library",
    "archive_mode",
    "cluster_name",
    "hot_standby",
    "listen_addresses",
    "max_slot_wal_keep_size",
    "port",
    "primary_conninfo",
    "primary_slot_name",
    "recovery_end_command",
    "recovery_min_apply_delay",
    "restart_after_crash",
    "restore_command",
    "synchronous_commit",
    "synchronous_standby_names",
    "wal_level",
    "wal_log_hints",
    "wal_receiver_create_temp_slot",
];

/// Why a setting is refused, as a machine-readable code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `owned_parameter`, `read_only_parameter` or `not_modifiable`.
    pub code: &'static str,
    pub reason: String,
}

/// Whether users may set `name`. `owned` says the sidecar manages it; `context` is its
/// `pg_settings.context`. `None` means allowed.
pub fn refusal(name: &str, owned: bool, context: &str) -> Option<Refusal> {
    let refuse = |code, reason: &str| {
        Some(Refusal {
            code,
            reason: reason.to_string(),
        })
    };
    if context == "internal" {
        return refuse(
            "read_only_parameter",
            "fixed when the cluster is created and cannot be changed",
        );
    }
    if owned || OWNED.contains(&name) || name.starts_with("ssl") {
        return refuse(
            "owned_parameter",
            "managed by Toygres (replication, archiving, TLS, ports and addresses)",
        );
    }
    if ALLOWED.binary_search(&name).is_ok() {
        return None;
    }
    let reason = if name.ends_with("_libraries") || name == "jit_provider" {
        "loads a shared library into Postgres; refused until an extensions feature checks it"
    } else if name.ends_with("_command") {
        "runs a shell command as the postgres user"
    } else if name.ends_with("_file")
        || name.ends_with("_directory")
        || name.ends_with("_directories")
        || name.ends_with("_path")
        || name.starts_with("log_file")
        || name == "timezone_abbreviations"
    {
        "a file or directory location, which Toygres owns"
    } else if name == "password_encryption"
        || name.starts_with("krb_")
        || name == "db_user_namespace"
        || name.starts_with("scram_")
    {
        "authentication is configured by Toygres"
    } else if matches!(
        name,
        "fsync" | "full_page_writes" | "data_sync_retry" | "zero_damaged_pages" | "wal_sync_method"
    ) {
        "turning it changes how safely data reaches disk"
    } else {
        "not on the list of settings Toygres lets users change"
    };
    refuse("not_modifiable", reason)
}

/// Floors and ceilings Toygres keeps beyond Postgres's own ranges, in the setting's base unit:
/// below them a member cannot serve its standbys, backups or the controller, or Postgres
/// refuses to start.
pub fn toygres_bounds(name: &str) -> Option<(Option<f64>, Option<f64>, &'static str)> {
    Some(match name {
        "max_connections" => (
            Some(20.0),
            None,
            "Toygres keeps at least 20 connections for itself and its standbys",
        ),
        "max_wal_senders" | "max_replication_slots" => (
            Some(10.0),
            None,
            "standbys and backups need at least 10 replication connections and slots",
        ),
        "superuser_reserved_connections" => (
            None,
            Some(10.0),
            "must stay below max_connections (at least 20) or Postgres does not start",
        ),
        // 8kB pages: 16MB. Smaller pools cannot back the connections Toygres keeps.
        "shared_buffers" => (
            Some(2048.0),
            None,
            "Toygres keeps shared_buffers at 16MB or more",
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_is_sorted_so_lookups_find_every_entry() {
        let mut sorted = ALLOWED.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, ALLOWED);
        for name in ALLOWED {
            assert_eq!(refusal(name, false, "user"), None, "{name}");
        }
    }

    #[test]
    fn dangerous_families_are_refused_with_their_reason() {
        let cases = [
            ("shared_preload_libraries", "not_modifiable", "library"),
            ("local_preload_libraries", "not_modifiable", "library"),
            ("session_preload_libraries", "not_modifiable", "library"),
            ("ssl_passphrase_command", "owned_parameter", "TLS"),
            ("archive_command", "owned_parameter", "archiving"),
            ("restore_command", "owned_parameter", "Toygres"),
            ("log_directory", "not_modifiable", "directory"),
            (
                "dynamic_library_path",
                "not_modifiable",
                "file or directory",
            ),
            ("data_directory", "not_modifiable", "directory"),
            ("password_encryption", "not_modifiable", "authentication"),
            ("ssl", "owned_parameter", "TLS"),
            ("port", "owned_parameter", "ports"),
            ("fsync", "not_modifiable", "disk"),
            ("huge_pages", "not_modifiable", "not on the list"),
        ];
        for (name, code, word) in cases {
            let r = refusal(name, false, "postmaster").expect(name);
            assert_eq!(r.code, code, "{name}");
            assert!(r.reason.contains(word), "{name}: {}", r.reason);
        }
        assert_eq!(
            refusal("block_size", false, "internal").map(|r| r.code),
            Some("read_only_parameter")
        );
        assert_eq!(
            refusal("work_mem", true, "user").map(|r| r.code),
            Some("owned_parameter")
        );
    }
}
