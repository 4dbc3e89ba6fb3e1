//! Talking to Postgres over its protocol (tokio-postgres): the local server through its private
//! Unix socket, and a remote primary over TLS (its certificate verified against the instance's
//! CA before the superuser's scram-sha-256 exchange).

use std::time::Duration;

use anyhow::Context;
use tokio_postgres::{Client, Config as PgConfig, NoTls};
use toygres_common::names::PgAddress;
use toygres_common::poll::{poll, Attempt, PollError};
pub use toygres_common::sidecar_api::{format_lsn, parse_lsn};
use toygres_common::tls::{self, pg::PgTls};

use super::settings::MemberSettings;

/// Connects to the local server as the superuser through the Unix socket.
pub async fn connect_local(cfg: &MemberSettings) -> Result<Client, tokio_postgres::Error> {
    let mut pg = PgConfig::new();
    pg.host_path(&cfg.run_dir)
        .port(cfg.pg_port)
        .user("postgres")
        .dbname("postgres")
        .application_name("toygres-sidecar")
        .connect_timeout(Duration::from_secs(3));
    connect(pg).await
}

/// Connects to a remote server as the superuser. TLS is required and the server's certificate
/// must come from the instance's CA, so the password goes only to a member of the instance.
pub async fn connect_remote(cfg: &MemberSettings, addr: &PgAddress) -> anyhow::Result<Client> {
    let tls = PgTls::new(
        &cfg.tls.file(tls::CA_CERT),
        Some((
            &cfg.tls.file(tls::SUPERUSER_CERT),
            &cfg.tls.file(tls::SUPERUSER_KEY),
        )),
    )
    .context("load the instance's CA and the superuser's certificate")?;
    let password = cfg.secrets.superuser_password()?;
    let mut pg = PgConfig::new();
    PgTls::require(&mut pg)
        .host(&addr.host)
        .port(addr.port)
        .user("postgres")
        .password(password.as_bytes())
        .dbname("postgres")
        .application_name("toygres-sidecar")
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = pg.connect(tls).await?;
    spawn_connection(connection);
    Ok(client)
}

async fn connect(pg: PgConfig) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = pg.connect(NoTls).await?;
    spawn_connection(connection);
    Ok(client)
}

fn spawn_connection<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("postgres connection closed: {e}");
        }
    });
}

/// Polls until the local server accepts connections and answers a query, or `timeout` passes,
/// or `gave_up` says the server died.
pub async fn wait_until_accepting(
    cfg: &MemberSettings,
    timeout: Duration,
    mut gave_up: impl FnMut() -> Option<String>,
) -> anyhow::Result<()> {
    let attempt = || {
        let gave_up = gave_up();
        async move {
            if let Some(exit) = gave_up {
                return Attempt::GiveUp(anyhow::anyhow!(
                    "postgres exited while starting ({exit}); see the log above"
                ));
            }
            // Connect only once the postmaster says it accepts connections: each earlier
            // attempt costs a backend and a FATAL line in the log.
            let status = postmaster_status(&cfg.data_dir);
            if !matches!(status.as_deref(), Some("ready" | "standby")) {
                return Attempt::NotYet(format!(
                    "postmaster status {}",
                    status.as_deref().unwrap_or("unknown")
                ));
            }
            match connect_local(cfg).await {
                Ok(client) => match client.simple_query("SELECT 1").await {
                    Ok(_) => Attempt::Done(()),
                    Err(e) => Attempt::NotYet(e.to_string()),
                },
                Err(e) => Attempt::NotYet(e.to_string()),
            }
        }
    };
    match poll(
        "postgres accepts connections",
        Duration::from_millis(20),
        timeout,
        attempt,
    )
    .await
    {
        Ok(()) => Ok(()),
        Err(PollError::GaveUp(e)) => Err(e),
        Err(PollError::TimedOut(t)) => anyhow::bail!(
            "postgres did not accept connections within {timeout:?}: {}",
            t.last.unwrap_or_default()
        ),
    }
}

/// The status line of `postmaster.pid` (`starting`, `ready`, `standby`, `stopping`), which the
/// postmaster updates as it goes.
fn postmaster_status(data_dir: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    // Line 8 (PM_STATUS) since PostgreSQL 10.
    text.lines().nth(7).map(|l| l.trim().to_string())
}

/// Creates this member's physical replication slot on `primary` unless it exists.
pub async fn ensure_slot_on_primary(
    cfg: &MemberSettings,
    primary: &PgAddress,
) -> anyhow::Result<()> {
    let client = connect_remote(cfg, primary)
        .await
        .with_context(|| format!("connect to the primary {primary}"))?;
    ensure_slot(cfg, &client)
        .await
        .with_context(|| format!("on {primary}"))
}

/// Creates this member's physical replication slot, unless it exists, on the primary `client`
/// is connected to.
pub async fn ensure_slot(cfg: &MemberSettings, client: &Client) -> anyhow::Result<()> {
    let slot = cfg.slot_name();
    client
        .execute(
            "SELECT pg_create_physical_replication_slot($1, true) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&slot],
        )
        .await
        .with_context(|| format!("create the replication slot {slot}"))?;
    Ok(())
}

/// The timeline `client`'s server writes on, or `None` when it is in recovery (not a primary).
pub async fn primary_timeline(client: &Client) -> anyhow::Result<Option<u32>> {
    let walfile: Option<String> = client
        .query_one(
            "SELECT CASE WHEN pg_is_in_recovery() THEN NULL \
                         ELSE pg_walfile_name(pg_current_wal_lsn()) END",
            &[],
        )
        .await
        .context("ask the server its timeline")?
        .get(0);
    walfile
        .map(|w| timeline_of_walfile(&w).with_context(|| format!("unexpected WAL file name {w}")))
        .transpose()
}

/// Makes sure the `replicator` role exists without a password (it authenticates with its
/// client certificate), the superuser's password matches its file, and the rewind role is
/// there ([`ensure_rewind_role`]). The password goes to the server as a SCRAM verifier, never
/// as text.
pub async fn ensure_roles(client: &Client, cfg: &MemberSettings) -> anyhow::Result<()> {
    let su =
        postgres_protocol::password::scram_sha_256(cfg.secrets.superuser_password()?.as_bytes());
    let exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = 'replicator'", &[])
        .await
        .context("look up the replicator role")?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    // Verifiers are base64 and '$'-separated: they hold no quote.
    client
        .batch_execute(&format!(
            "{verb} ROLE replicator WITH REPLICATION LOGIN PASSWORD NULL; \
             ALTER ROLE postgres WITH PASSWORD '{su}';"
        ))
        .await
        .context("set the roles' passwords")?;
    ensure_rewind_role(client).await
}

/// The functions pg_rewind calls on its source server (PostgreSQL 15's documentation, "pg_rewind
/// … a role having sufficient permissions"): all [`tls::REWIND_ROLE`] may execute beyond what
/// every role may.
pub const REWIND_FUNCTIONS: [&str; 4] = [
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
];

/// Makes sure the role pg_rewind reads this primary as ([`tls::REWIND_ROLE`]) exists as it
/// should: a login that is no superuser, has no password (it authenticates with its client
/// certificate) and may execute [`REWIND_FUNCTIONS`]. Writes only when something is missing (an
/// instance made before the role existed gets it when a member next becomes its primary), and
/// without waiting for synchronous standbys, which a new primary may not have yet.
pub async fn ensure_rewind_role(client: &Client) -> anyhow::Result<()> {
    let role = tls::REWIND_ROLE;
    let granted = REWIND_FUNCTIONS
        .iter()
        .map(|f| format!("has_function_privilege('{role}', '{f}', 'EXECUTE')"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let ready: bool = client
        .query_one(
            &format!(
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_authid WHERE rolname = '{role}' \
                   AND rolcanlogin AND NOT rolsuper AND NOT rolreplication \
                   AND rolpassword IS NULL) THEN {granted} ELSE false END"
            ),
            &[],
        )
        .await
        .with_context(|| format!("look up the {role} role"))?
        .get(0);
    if ready {
        return Ok(());
    }
    let grants: String = REWIND_FUNCTIONS
        .iter()
        .map(|f| format!("GRANT EXECUTE ON FUNCTION {f} TO {role};"))
        .collect();
    client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL synchronous_commit = local; \
             DO $$ BEGIN \
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN \
                 CREATE ROLE {role}; \
               END IF; \
             END $$; \
             ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
               NOBYPASSRLS PASSWORD NULL; \
             {grants} COMMIT;"
        ))
        .await
        .with_context(|| format!("create the {role} role"))?;
    tracing::info!(role, "created the role pg_rewind reads this primary as");
    Ok(())
}

/// Whether a standby can follow a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    /// It can (or its position is not known, in which case streaming will tell).
    Yes,
    /// Its WAL left the server's history: why.
    Diverged(String),
    /// The server is not a primary.
    NotPrimary,
}

/// Whether this standby (`local`) can follow `remote`: it cannot when `remote` is not a
/// primary, when its WAL went past the point where the primary's timeline forked from the
/// standby's, or when its timeline is not in the primary's history at all.
pub async fn can_follow(local: &Client, remote: &Client) -> anyhow::Result<Follow> {
    let Some(primary_tli) = primary_timeline(remote).await? else {
        return Ok(Follow::NotPrimary);
    };
    // The standby's timeline: the one of its last restartpoint, or later if its WAL receiver
    // got WAL of a later one. (Its history files are no guide: the WAL receiver fetches the
    // history of a timeline it then cannot follow.)
    let row = local
        .query_one(
            "SELECT (SELECT timeline_id FROM pg_control_checkpoint()), \
                    (SELECT received_tli FROM pg_stat_wal_receiver), \
                    pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text",
            &[],
        )
        .await
        .context("ask this standby its position")?;
    let own_tli =
        (row.get::<_, i32>(0) as u32).max(row.get::<_, Option<i32>>(1).unwrap_or(0) as u32);
    let position = [
        row.get::<_, Option<String>>(2),
        row.get::<_, Option<String>>(3),
    ]
    .iter()
    .flatten()
    .filter_map(|l| parse_lsn(l))
    .max();
    let Some(position) = position else {
        return Ok(Follow::Yes);
    };
    if primary_tli == own_tli {
        return Ok(Follow::Yes);
    }
    if primary_tli < own_tli {
        return Ok(Follow::Diverged(format!(
            "this standby is on timeline {own_tli}, later than the new primary's {primary_tli}"
        )));
    }
    let history: String = remote
        .query_one(
            "SELECT pg_read_file('pg_wal/' || $1 || '.history')",
            &[&format!("{primary_tli:08X}")],
        )
        .await
        .with_context(|| format!("read the history of timeline {primary_tli} on the new primary"))?
        .get(0);
    Ok(match switchpoint(&history, own_tli) {
        None => Follow::Diverged(format!(
            "timeline {own_tli} of this standby is not in the history of the new primary's \
             timeline {primary_tli}"
        )),
        Some(fork) if position > fork => Follow::Diverged(format!(
            "this standby's WAL reaches {} on timeline {own_tli}, past {}, where the new \
             primary's history left it",
            format_lsn(position),
            format_lsn(fork)
        )),
        Some(_) => Follow::Yes,
    })
}

/// The entries of a timeline history file: each ancestor timeline and where it ended.
pub use toygres_common::sidecar_api::parse_timeline_history as parse_history;

/// Where `tli` ended according to a timeline history file; `None` when it is not an ancestor.
pub fn switchpoint(history: &str, tli: u32) -> Option<u64> {
    parse_history(history)
        .into_iter()
        .find_map(|(parent, lsn)| (parent == tli).then_some(lsn))
}

/// The timeline a WAL file name starts with (`00000002000000000000000A` → 2).
pub fn timeline_of_walfile(name: &str) -> Option<u32> {
    u32::from_str_radix(name.get(..8)?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_parse() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("1/10"), Some((1 << 32) + 16));
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("zz"), None);
    }

    #[test]
    fn switchpoints_come_from_history_files() {
        let history = "1\t0/3000000\tno recovery target specified\n\n\
                       2\t0/5A0F2D8\tno recovery target specified\n";
        assert_eq!(switchpoint(history, 1), Some(0x300_0000));
        assert_eq!(switchpoint(history, 2), Some(0x5A0_F2D8));
        assert_eq!(switchpoint(history, 3), None);
        assert_eq!(switchpoint("# comment\n", 1), None);
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
    }
}
