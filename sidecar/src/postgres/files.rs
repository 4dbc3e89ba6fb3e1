//! The files the sidecar owns in and beside the data directory: `toygres.conf` (settings the
//! sidecar manages, included by `postgresql.conf`), `pg_hba.conf`, the member's TLS files (in
//! the run directory; the superuser's `pgpass` file only during a rewind of a member without
//! the rewind role's certificate),
//! `standby.signal`, the fence marker, the archive settings (see [`crate::archive`]), and
//! `toygres.state.json` (what the sidecar must remember
//! across restarts: the primary it follows and the synchronous replication settings).

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use toygres_common::names::PgAddress;
use toygres_common::pg_exec::PgBinaries;
use toygres_common::sidecar_api::SyncPolicy;
use toygres_common::tls::{self, MemberTlsFiles};

use super::settings::MemberSettings;
use crate::owned;

/// Settings the sidecar manages itself; `PUT /v1/parameters` refuses them.
pub const OWNED_PARAMETERS: &[&str] = &[
    "archive_command",
    "archive_library",
    "archive_mode",
    "cluster_name",
    "config_file",
    "data_directory",
    "external_pid_file",
    "full_page_writes",
    "hba_file",
    "hot_standby",
    "ident_file",
    "listen_addresses",
    "logging_collector",
    "max_slot_wal_keep_size",
    "port",
    "primary_conninfo",
    "primary_slot_name",
    "promote_trigger_file",
    "recovery_target",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_timeline",
    "recovery_target_xid",
    "restore_command",
    "ssl",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_key_file",
    "synchronous_commit",
    "synchronous_standby_names",
    "unix_socket_directories",
    "unix_socket_group",
    "unix_socket_permissions",
    "wal_level",
    "wal_log_hints",
];

/// Values of `synchronous_commit` Postgres accepts.
pub const SYNCHRONOUS_COMMIT_VALUES: &[&str] =
    &["on", "off", "local", "remote_write", "remote_apply"];

/// Whether the sidecar manages `name` itself.
pub fn is_owned(name: &str) -> bool {
    OWNED_PARAMETERS.contains(&name)
}

/// What the sidecar remembers about replication, kept in the data directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ReplicationState {
    /// The primary this server follows when it is a standby.
    pub primary: Option<PgAddress>,
    #[serde(default)]
    pub synchronous_standby_names: String,
    #[serde(default = "default_synchronous_commit")]
    pub synchronous_commit: String,
    /// The synchronous replication policy (primary only). While one is set, the sidecar
    /// computes `synchronous_standby_names` from it (see [`crate::postgres::sync`]).
    #[serde(default)]
    pub sync_policy: Option<SyncPolicy>,
    /// `degrade` mode: `synchronous_standby_names` is emptied because too few of the policy's
    /// standbys stream. Kept across restarts, so a restarted sidecar does not block commits
    /// again before its standbys are back.
    #[serde(default)]
    pub sync_degraded: bool,
}

impl ReplicationState {
    /// Drops the synchronous replication policy and the `synchronous_standby_names` it set
    /// (on promotion and demotion: the policy described another topology).
    pub fn forget_sync_policy(&mut self) {
        if self.sync_policy.take().is_some() || self.sync_degraded {
            self.synchronous_standby_names.clear();
        }
        self.sync_degraded = false;
    }
}

fn default_synchronous_commit() -> String {
    "on".into()
}

/// Paths of one member's files.
#[derive(Debug, Clone)]
pub struct Layout {
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
}

impl Layout {
    pub fn new(cfg: &MemberSettings) -> Self {
        Self {
            data_dir: cfg.data_dir.clone(),
            run_dir: cfg.run_dir.clone(),
        }
    }
    pub fn pg_version_file(&self) -> PathBuf {
        self.data_dir.join("PG_VERSION")
    }
    pub fn standby_signal(&self) -> PathBuf {
        self.data_dir.join("standby.signal")
    }
    pub fn fence_marker(&self) -> PathBuf {
        self.data_dir.join("toygres.fenced")
    }
    /// The last fence token ([`crate::bootstrap`]) this data directory has seen.
    pub fn fence_token_file(&self) -> PathBuf {
        self.data_dir.join("toygres.fence-token")
    }
    pub fn state_file(&self) -> PathBuf {
        self.data_dir.join("toygres.state.json")
    }
    pub fn toygres_conf(&self) -> PathBuf {
        self.data_dir.join("toygres.conf")
    }
    /// Recovery settings of a restore (`restore_command` from the source, the target), included
    /// by `toygres.conf` while the file exists.
    pub fn recovery_conf(&self) -> PathBuf {
        self.data_dir.join("toygres.recovery.conf")
    }
    pub fn pgpass(&self) -> PathBuf {
        self.run_dir.join("pgpass")
    }
    /// The member's TLS files as Postgres and libpq read them (owned by the Postgres OS user).
    pub fn tls(&self) -> MemberTlsFiles {
        MemberTlsFiles::new(self.run_dir.join("tls"))
    }
    /// A sibling of the data directory that bootstrap fills before renaming it into place, so a
    /// bootstrap cut short never leaves a half-made data directory behind.
    pub fn bootstrap_dir(&self) -> PathBuf {
        let mut name = self
            .data_dir
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".bootstrap");
        self.data_dir.with_file_name(name)
    }
    /// Where a re-clone keeps the old data directory until the new copy is in place.
    pub fn discarded_dir(&self) -> PathBuf {
        let mut name = self
            .data_dir
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".discarded");
        self.data_dir.with_file_name(name)
    }
    /// The data directory holds a Postgres cluster.
    pub fn is_initialized(&self) -> bool {
        self.pg_version_file().exists()
    }
    pub fn is_standby(&self) -> bool {
        self.standby_signal().exists()
    }
    pub fn is_fenced(&self) -> bool {
        self.fence_marker().exists()
    }
}

/// Quotes a value for a Postgres configuration file.
pub fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Quotes a value inside a libpq connection string.
fn conninfo_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The libpq connection string a standby uses to reach `primary`: no password, the
/// `replicator` client certificate, and the primary's certificate verified against the
/// instance's CA before anything else is sent.
pub fn primary_conninfo(cfg: &MemberSettings, layout: &Layout, primary: &PgAddress) -> String {
    format!(
        "{} application_name={} connect_timeout=5 \
         keepalives_idle=5 keepalives_interval=2 keepalives_count=3",
        replication_conninfo(layout, primary),
        conninfo_quote(&cfg.member_name),
    )
}

/// How `replicator` reaches `primary`: its client certificate, the CA to verify the primary
/// with, and no password.
pub fn replication_conninfo(layout: &Layout, primary: &PgAddress) -> String {
    let files = layout.tls();
    format!(
        "host={} port={} user=replicator {}",
        conninfo_quote(&primary.host),
        primary.port,
        tls::libpq_params(
            &primary.host,
            &files.ca_cert(),
            Some((&files.replicator_cert(), &files.replicator_key()))
        ),
    )
}

/// The libpq connection string pg_rewind uses to read `primary` as
/// [`tls::REWIND_ROLE`]: its client certificate, the CA to verify the primary with, and no
/// password (the primary's `pg_hba.conf` asks the role for none).
pub fn rewind_conninfo(layout: &Layout, primary: &PgAddress) -> String {
    let files = layout.tls();
    format!(
        "host={} port={} user={} dbname=postgres connect_timeout=10 {}",
        conninfo_quote(&primary.host),
        primary.port,
        tls::REWIND_ROLE,
        tls::libpq_params(
            &primary.host,
            &files.ca_cert(),
            Some((&files.rewind_cert(), &files.rewind_key()))
        ),
    )
}

/// The libpq connection string pg_rewind used before it had its own role, still used by a
/// member without the role's certificate: the superuser, its password from the pgpass file,
/// sent only once the server's certificate is verified against the instance's CA; the
/// superuser's client certificate presented.
pub fn superuser_conninfo(layout: &Layout, primary: &PgAddress) -> String {
    let files = layout.tls();
    format!(
        "host={} port={} user=postgres dbname=postgres passfile={} connect_timeout=10 {}",
        conninfo_quote(&primary.host),
        primary.port,
        conninfo_quote(&layout.pgpass().display().to_string()),
        tls::libpq_params(
            &primary.host,
            &files.ca_cert(),
            Some((&files.superuser_cert(), &files.superuser_key()))
        ),
    )
}

/// The content of `toygres.conf`: the settings the sidecar owns, from its flags and state.
pub fn render_toygres_conf(
    cfg: &MemberSettings,
    layout: &Layout,
    state: &ReplicationState,
    standby: bool,
) -> String {
    let mut lines = vec![
        "# Managed by toygres-sidecar and rewritten at every start: do not edit.".to_string(),
        format!("listen_addresses = {}", conf_quote(&cfg.pg_listen)),
        format!("port = {}", cfg.pg_port),
        format!(
            "unix_socket_directories = {}",
            conf_quote(&layout.run_dir.display().to_string())
        ),
        "unix_socket_permissions = 0700".into(),
        "wal_level = replica".into(),
        "hot_standby = on".into(),
        // pg_rewind needs hint-bit changes in WAL (data checksums give the same; both are on).
        "wal_log_hints = on".into(),
        "full_page_writes = on".into(),
        // Postgres logs to stderr, which the sidecar forwards into its own log.
        "logging_collector = off".into(),
        format!("cluster_name = {}", conf_quote(&cfg.member_name)),
        format!(
            "max_slot_wal_keep_size = {}",
            conf_quote(&cfg.max_slot_wal_keep_size)
        ),
        format!(
            "synchronous_standby_names = {}",
            conf_quote(&state.synchronous_standby_names)
        ),
        format!(
            "synchronous_commit = {}",
            conf_quote(&state.synchronous_commit)
        ),
        "recovery_target_timeline = 'latest'".into(),
        // TLS with the member's certificate; clients' certificates must come from the CA.
        "ssl = on".into(),
        format!(
            "ssl_cert_file = {}",
            conf_quote(&layout.tls().server_cert().display().to_string())
        ),
        format!(
            "ssl_key_file = {}",
            conf_quote(&layout.tls().server_key().display().to_string())
        ),
        format!(
            "ssl_ca_file = {}",
            conf_quote(&layout.tls().ca_cert().display().to_string())
        ),
    ];
    lines.extend(
        super::settings::REPLICATION_TIMEOUTS
            .iter()
            .map(|l| l.to_string()),
    );
    if let Some(archive) = &cfg.archive {
        lines.extend(archive.conf_lines(conf_quote));
    }
    if standby {
        if let Some(primary) = &state.primary {
            lines.push(format!(
                "primary_conninfo = {}",
                conf_quote(&primary_conninfo(cfg, layout, primary))
            ));
            lines.push(format!(
                "primary_slot_name = {}",
                conf_quote(&cfg.slot_name())
            ));
        }
    }
    // Last, so that a restore's recovery settings win.
    lines.push("include_if_exists 'toygres.recovery.conf'".into());
    lines.push(String::new());
    lines.join("\n")
}

/// `pg_hba.conf`: the local socket (private to the Postgres OS user) is trusted; TCP is TLS
/// only (no `host` line: a connection without TLS matches nothing and is refused).
/// `replicator` may only replicate, and `toygres_rewind` ([`tls::REWIND_ROLE`]) only connect to
/// the `postgres` database (where pg_rewind reads the files); both authenticate with their
/// client certificate (CN the role's name, from the instance's CA) and never with a password.
/// Everyone else authenticates with scram-sha-256.
pub const PG_HBA: &str = "\
# Managed by toygres-sidecar: do not edit.
# TYPE   DATABASE     USER            ADDRESS     METHOD
# The socket directory is mode 0700, owned by the Postgres OS user.
local    all          all                         trust
local    replication  all                         trust
hostssl  replication  replicator      0.0.0.0/0   cert
hostssl  replication  replicator      ::/0        cert
hostssl  all          replicator      0.0.0.0/0   reject
hostssl  all          replicator      ::/0        reject
hostssl  postgres     toygres_rewind  0.0.0.0/0   cert
hostssl  postgres     toygres_rewind  ::/0        cert
hostssl  all          toygres_rewind  0.0.0.0/0   reject
hostssl  all          toygres_rewind  ::/0        reject
hostssl  all          all             0.0.0.0/0   scram-sha-256
hostssl  all          all             ::/0        scram-sha-256
";

/// Escapes a pgpass field.
fn pgpass_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace(':', "\\:")
}

/// The pgpass file pg_rewind reads the superuser's password from when the member has no
/// certificate for the rewind role, with the password its file holds now.
pub fn render_pgpass(cfg: &MemberSettings) -> anyhow::Result<String> {
    Ok(format!(
        "*:*:*:postgres:{}\n",
        pgpass_escape(&cfg.secrets.superuser_password()?)
    ))
}

/// Writes the pgpass file from the superuser's password file (the current password, after a
/// rotation too), for a rewind as the superuser; [`remove_pgpass`] removes it after.
pub fn write_pgpass(
    cfg: &MemberSettings,
    bins: &PgBinaries,
    layout: &Layout,
) -> anyhow::Result<()> {
    owned::write_file(
        bins,
        &layout.pgpass(),
        render_pgpass(cfg)?.as_bytes(),
        0o600,
    )
}

/// Removes the pgpass file, so no copy of the superuser's password stays on disk beside the
/// data directory (earlier versions kept one there for good).
pub fn remove_pgpass(layout: &Layout) -> anyhow::Result<()> {
    let path = layout.pgpass();
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Writes the run directory's files: the member's TLS files, private to the Postgres OS user
/// (Postgres refuses a key file others can read). A pgpass file left there by an earlier
/// version is removed.
pub fn write_run_files(
    cfg: &MemberSettings,
    bins: &PgBinaries,
    layout: &Layout,
) -> anyhow::Result<()> {
    owned::ensure_private_dir(bins, &layout.run_dir)?;
    remove_pgpass(layout)?;
    let files = layout.tls();
    owned::ensure_private_dir(bins, &files.dir)?;
    for (name, content) in cfg.tls.files() {
        owned::write_file(bins, &files.file(name), &content, 0o600)?;
    }
    Ok(())
}

/// Reads the replication state; a missing file is the default state.
pub fn read_state(layout: &Layout) -> anyhow::Result<ReplicationState> {
    let path = layout.state_file();
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ReplicationState {
            synchronous_commit: default_synchronous_commit(),
            ..Default::default()
        }),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Everything the sidecar writes before Postgres starts: the run directory (socket, TLS files),
/// `pg_hba.conf`, `toygres.conf` and the state file.
pub fn prepare_for_start(
    cfg: &MemberSettings,
    bins: &PgBinaries,
    layout: &Layout,
    state: &ReplicationState,
) -> anyhow::Result<()> {
    write_run_files(cfg, bins, layout)?;
    if let Some(archive) = &cfg.archive {
        archive.write_files(bins)?;
    }
    write_config(cfg, bins, layout, state)
}

/// Writes the state file, `toygres.conf` and `pg_hba.conf` (a reload applies them).
pub fn write_config(
    cfg: &MemberSettings,
    bins: &PgBinaries,
    layout: &Layout,
    state: &ReplicationState,
) -> anyhow::Result<()> {
    let state_json = serde_json::to_vec_pretty(state).context("serialize the replication state")?;
    owned::write_file(bins, &layout.state_file(), &state_json, 0o600)?;
    let conf = render_toygres_conf(cfg, layout, state, layout.is_standby());
    owned::write_file(bins, &layout.toygres_conf(), conf.as_bytes(), 0o600)?;
    owned::write_file(
        bins,
        &layout.data_dir.join("pg_hba.conf"),
        PG_HBA.as_bytes(),
        0o600,
    )?;
    ensure_included(bins, layout)
}

/// Makes `postgresql.conf` include `toygres.conf` (once).
fn ensure_included(bins: &PgBinaries, layout: &Layout) -> anyhow::Result<()> {
    let path = layout.data_dir.join("postgresql.conf");
    let current =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let line = "include 'toygres.conf'";
    if current.lines().any(|l| l.trim() == line) {
        return Ok(());
    }
    let updated = format!(
        "{}\n# Settings owned by toygres-sidecar.\n{line}\n",
        current.trim_end()
    );
    owned::write_file(bins, &path, updated.as_bytes(), 0o600)
}

/// Creates or removes `standby.signal`.
pub fn set_standby_signal(bins: &PgBinaries, layout: &Layout, standby: bool) -> anyhow::Result<()> {
    let path = layout.standby_signal();
    if standby {
        // A standby of a primary never keeps a restore's recovery target.
        match std::fs::remove_file(layout.recovery_conf()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e)
                    .with_context(|| format!("remove {}", layout.recovery_conf().display()))
            }
            _ => {}
        }
        owned::write_file(bins, &path, b"", 0o600)
    } else {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("remove {}", path.display()))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(conf_quote("a'b\\c"), "'a''b\\\\c'");
        assert_eq!(conninfo_quote("a'b"), "'a\\'b'");
        assert_eq!(pgpass_escape("p:w\\d"), "p\\:w\\\\d");
    }

    #[test]
    fn the_rewind_connects_with_its_certificate_and_no_password() {
        let layout = Layout {
            data_dir: "/d/data".into(),
            run_dir: "/d/run".into(),
        };
        let primary: PgAddress = "127.0.0.1:5433".parse().unwrap();
        let conninfo = rewind_conninfo(&layout, &primary);
        assert!(conninfo.contains("user=toygres_rewind "), "{conninfo}");
        assert!(conninfo.contains("sslmode=verify-full"), "{conninfo}");
        assert!(
            conninfo.contains("sslcert='/d/run/tls/rewind.crt'"),
            "{conninfo}"
        );
        assert!(
            conninfo.contains("sslkey='/d/run/tls/rewind.key'"),
            "{conninfo}"
        );
        assert!(!conninfo.contains("pass"), "{conninfo}");
        // The role's lines come before the catch-all password line, and allow only `cert`.
        let rules: Vec<Vec<&str>> = PG_HBA
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        let first_rewind = rules
            .iter()
            .position(|r| r.get(2) == Some(&"toygres_rewind"))
            .unwrap();
        let catch_all = rules
            .iter()
            .position(|r| r.get(2) == Some(&"all") && r[0] == "hostssl")
            .unwrap();
        assert!(first_rewind < catch_all);
        for rule in rules.iter().filter(|r| r.get(2) == Some(&"toygres_rewind")) {
            let method = rule.last().unwrap();
            assert!(*method == "cert" || *method == "reject", "{rule:?}");
            assert!(*method == "reject" || rule[1] == "postgres", "{rule:?}");
        }
    }

    #[test]
    fn forgetting_the_policy_clears_only_the_names_it_set() {
        let policy: SyncPolicy =
            serde_json::from_str(r#"{"mode": "degrade", "standbys": ["db-1"]}"#).unwrap();
        let mut state = ReplicationState {
            synchronous_standby_names: "FIRST 1 (\"db-1\")".into(),
            sync_policy: Some(policy),
            ..Default::default()
        };
        state.forget_sync_policy();
        assert_eq!(state.sync_policy, None);
        assert_eq!(state.synchronous_standby_names, "");
        // A value set by hand (no policy) is the operator's and stays.
        let mut state = ReplicationState {
            synchronous_standby_names: "\"db-1\"".into(),
            ..Default::default()
        };
        state.forget_sync_policy();
        assert_eq!(state.synchronous_standby_names, "\"db-1\"");
    }

    #[test]
    fn owned_parameters_are_sorted_and_cover_the_issue_list() {
        let mut sorted = OWNED_PARAMETERS.to_vec();
        sorted.sort();
        assert_eq!(sorted, OWNED_PARAMETERS);
        for name in [
            "port",
            "listen_addresses",
            "wal_level",
            "archive_command",
            "restore_command",
            "primary_conninfo",
            "synchronous_standby_names",
        ] {
            assert!(is_owned(name), "{name}");
        }
        assert!(!is_owned("work_mem"));
    }
}
