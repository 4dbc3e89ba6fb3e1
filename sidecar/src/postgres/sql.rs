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
/// primary, when it replayed WAL past the point where the primary's timeline forked from the
/// standby's, or when its timeline is not in the primary's history at all.
///
/// What counts is what Postgres checks itself: the end of the last record the standby
/// *replayed*. WAL it received past the fork but did not replay is the start of a record the
/// new primary never got whole (the old primary died in the middle of sending it); streaming
/// the new timeline overwrites it. Received WAL that is complete is replayed at once, so while
/// the received position is past the fork the replayed one is watched until it settles (a
/// standby whose replay stops short of the fork although it has complete records past it,
/// held by a query conflict, is refused by Postgres when it streams: the re-point then times
/// out and the rejoin rewinds it).
pub async fn can_follow(local: &Client, remote: &Client) -> anyhow::Result<Follow> {
    let Some(primary_tli) = primary_timeline(remote).await? else {
        return Ok(Follow::NotPrimary);
    };
    let mut history: Option<String> = None;
    let mut last_replayed = None;
    let deadline = tokio::time::Instant::now() + FOLLOW_SETTLE_TIMEOUT;
    loop {
        let own = standby_position(local).await?;
        if own.timeline < primary_tli && history.is_none() {
            history = Some(
                remote
                    .query_one(
                        "SELECT pg_read_file('pg_wal/' || $1 || '.history')",
                        &[&format!("{primary_tli:08X}")],
                    )
                    .await
                    .with_context(|| {
                        format!("read the history of timeline {primary_tli} on the new primary")
                    })?
                    .get(0),
            );
        }
        match judge_follow(&own, primary_tli, history.as_deref()) {
            Verdict::Yes => return Ok(Follow::Yes),
            Verdict::Diverged(why) => return Ok(Follow::Diverged(why)),
            Verdict::Unsettled(why) => {
                // Replay stood still between two looks: what is past the fork is a torn record.
                if last_replayed.is_some() && last_replayed == own.replayed {
                    tracing::info!("following although {why}: replay has settled before it");
                    return Ok(Follow::Yes);
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(Follow::Diverged(format!(
                        "{why}, and replay has not settled"
                    )));
                }
                last_replayed = own.replayed;
                tokio::time::sleep(FOLLOW_SETTLE_STEP).await;
            }
        }
    }
}

/// How long [`can_follow`] waits for a standby's replay to settle.
const FOLLOW_SETTLE_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Between two looks at a standby's replay position.
const FOLLOW_SETTLE_STEP: Duration = Duration::from_millis(40);

/// A standby's timeline and positions, as [`judge_follow`] weighs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyPosition {
    /// The timeline of the WAL it holds: its last restartpoint's, or later if its WAL receiver
    /// receives (or last received, as the newest segment in `pg_wal` says) a later one. (Its
    /// history files are no guide: the WAL receiver fetches the history of a timeline it then
    /// cannot follow. The checkpoint's alone lags a timeline switch until the next
    /// restartpoint.)
    pub timeline: u32,
    /// The end of the WAL it received (flushed).
    pub received: Option<u64>,
    /// The end of the last record it replayed.
    pub replayed: Option<u64>,
}

async fn standby_position(local: &Client) -> anyhow::Result<StandbyPosition> {
    let row = local
        .query_one(
            "SELECT (SELECT timeline_id FROM pg_control_checkpoint()), \
                    (SELECT received_tli FROM pg_stat_wal_receiver), \
                    (SELECT max(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'), \
                    pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text",
            &[],
        )
        .await
        .context("ask this standby its position")?;
    let newest_segment: Option<String> = row.get(2);
    let timeline = (row.get::<_, i32>(0) as u32)
        .max(row.get::<_, Option<i32>>(1).unwrap_or(0) as u32)
        .max(
            newest_segment
                .as_deref()
                .and_then(timeline_of_walfile)
                .unwrap_or(0),
        );
    let lsn = |i: usize| {
        row.get::<_, Option<String>>(i)
            .as_deref()
            .and_then(parse_lsn)
    };
    Ok(StandbyPosition {
        timeline,
        received: lsn(3),
        replayed: lsn(4),
    })
}

/// What [`judge_follow`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Yes,
    Diverged(String),
    /// Only received, unreplayed WAL goes past the fork: a torn record (it can follow) or
    /// records not replayed yet (it cannot); look again once replay settles.
    Unsettled(String),
}

/// Whether a standby at `own` can follow a primary on `primary_tli`, whose timeline history
/// file is `history` (needed when the primary's timeline is later than the standby's).
pub fn judge_follow(own: &StandbyPosition, primary_tli: u32, history: Option<&str>) -> Verdict {
    let own_tli = own.timeline;
    if own.received.is_none() && own.replayed.is_none() {
        return Verdict::Yes;
    }
    if primary_tli == own_tli {
        return Verdict::Yes;
    }
    if primary_tli < own_tli {
        return Verdict::Diverged(format!(
            "this standby is on timeline {own_tli}, later than the new primary's {primary_tli}"
        ));
    }
    let Some(fork) = history.and_then(|h| switchpoint(h, own_tli)) else {
        return Verdict::Diverged(format!(
            "timeline {own_tli} of this standby is not in the history of the new primary's \
             timeline {primary_tli}"
        ));
    };
    let replayed = own.replayed.unwrap_or(0);
    if replayed > fork {
        return Verdict::Diverged(format!(
            "this standby replayed WAL up to {} on timeline {own_tli}, past {}, where the new \
             primary's history left it",
            format_lsn(replayed),
            format_lsn(fork)
        ));
    }
    match own.received {
        Some(received) if received > fork => Verdict::Unsettled(format!(
            "this standby received WAL up to {} on timeline {own_tli}, past {}, where the new \
             primary's history left it, but replayed only up to {}",
            format_lsn(received),
            format_lsn(fork),
            format_lsn(replayed)
        )),
        _ => Verdict::Yes,
    }
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

    #[test]
    fn a_standby_follows_unless_it_replayed_past_the_fork() {
        // Timeline 2 left timeline 1 at 0/5000100.
        let history = "1\t0/5000100\tno recovery target specified\n";
        let at = |timeline, received, replayed| StandbyPosition {
            timeline,
            received: Some(received),
            replayed: Some(replayed),
        };
        let yes = |v: Verdict| v == Verdict::Yes;
        let diverged = |v: Verdict| matches!(v, Verdict::Diverged(_));
        let unsettled = |v: Verdict| matches!(v, Verdict::Unsettled(_));
        // Same timeline; or behind the fork on the parent.
        assert!(yes(judge_follow(&at(2, 0x600_0000, 0x600_0000), 2, None)));
        assert!(yes(judge_follow(
            &at(1, 0x500_0100, 0x500_0100),
            2,
            Some(history)
        )));
        assert!(yes(judge_follow(
            &at(1, 0x500_0000, 0x4FF_0000),
            2,
            Some(history)
        )));
        // Replayed past the fork: only a rewind helps.
        assert!(diverged(judge_follow(
            &at(1, 0x500_0200, 0x500_0180),
            2,
            Some(history)
        )));
        // Received past it, replayed up to it: a torn record, or records still to replay.
        assert!(unsettled(judge_follow(
            &at(1, 0x500_0180, 0x500_0100),
            2,
            Some(history)
        )));
        // A later timeline, or one the primary's history does not hold.
        assert!(diverged(judge_follow(
            &at(3, 0x500_0000, 0x500_0000),
            2,
            None
        )));
        assert!(diverged(judge_follow(
            &at(1, 0x500_0000, 0x500_0000),
            3,
            Some("2\t0/6000000\tx\n")
        )));
        // Nothing known: streaming will tell.
        let unknown = StandbyPosition {
            timeline: 1,
            received: None,
            replayed: None,
        };
        assert!(yes(judge_follow(&unknown, 2, None)));
    }
}
