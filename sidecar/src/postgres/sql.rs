//! Talking to Postgres over its protocol (tokio-postgres): the local server through its private
//! Unix socket, and a remote primary over TCP with scram-sha-256.

use std::time::Duration;

use anyhow::Context;
use tokio_postgres::{Client, Config as PgConfig, NoTls};
use toygres_common::names::PgAddress;

use crate::config::Config;

/// Connects to the local server as the superuser through the Unix socket.
pub async fn connect_local(cfg: &Config) -> Result<Client, tokio_postgres::Error> {
    let mut pg = PgConfig::new();
    pg.host_path(&cfg.run_dir)
        .port(cfg.pg_port)
        .user("postgres")
        .dbname("postgres")
        .application_name("toygres-sidecar")
        .connect_timeout(Duration::from_secs(3));
    connect(pg).await
}

/// Connects to a remote server as the superuser over TCP (scram-sha-256).
pub async fn connect_remote(
    cfg: &Config,
    addr: &PgAddress,
) -> Result<Client, tokio_postgres::Error> {
    let mut pg = PgConfig::new();
    pg.host(&addr.host)
        .port(addr.port)
        .user("postgres")
        .password(cfg.secrets.superuser_password.as_bytes())
        .dbname("postgres")
        .application_name("toygres-sidecar")
        .connect_timeout(Duration::from_secs(5));
    connect(pg).await
}

async fn connect(pg: PgConfig) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = pg.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("postgres connection closed: {e}");
        }
    });
    Ok(client)
}

/// Polls until the local server accepts connections and answers a query, or `timeout` passes,
/// or `gave_up` says the server died.
pub async fn wait_until_accepting(
    cfg: &Config,
    timeout: Duration,
    mut gave_up: impl FnMut() -> Option<String>,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last_error;
        if let Some(exit) = gave_up() {
            anyhow::bail!("postgres exited while starting ({exit}); see the log above");
        }
        // Connect only once the postmaster says it accepts connections: each earlier attempt
        // costs a backend and a FATAL line in the log.
        let status = postmaster_status(&cfg.data_dir);
        if !matches!(status.as_deref(), Some("ready" | "standby")) {
            last_error = format!(
                "postmaster status {}",
                status.as_deref().unwrap_or("unknown")
            );
        } else {
            match connect_local(cfg).await {
                Ok(client) => match client.simple_query("SELECT 1").await {
                    Ok(_) => return Ok(()),
                    Err(e) => last_error = e.to_string(),
                },
                Err(e) => last_error = e.to_string(),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("postgres did not accept connections within {timeout:?}: {last_error}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
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
pub async fn ensure_slot_on_primary(cfg: &Config, primary: &PgAddress) -> anyhow::Result<()> {
    let client = connect_remote(cfg, primary)
        .await
        .with_context(|| format!("connect to the primary {primary}"))?;
    let slot = cfg.slot_name();
    client
        .execute(
            "SELECT pg_create_physical_replication_slot($1, true) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&slot],
        )
        .await
        .with_context(|| format!("create the replication slot {slot} on {primary}"))?;
    Ok(())
}

/// Makes sure the `replicator` role exists with the current password, and the superuser's
/// password matches its file. Passwords go to the server as SCRAM verifiers, never as text.
pub async fn ensure_roles(client: &Client, cfg: &Config) -> anyhow::Result<()> {
    let repl =
        postgres_protocol::password::scram_sha_256(cfg.secrets.replication_password.as_bytes());
    let su = postgres_protocol::password::scram_sha_256(cfg.secrets.superuser_password.as_bytes());
    let exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = 'replicator'", &[])
        .await
        .context("look up the replicator role")?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    // Verifiers are base64 and '$'-separated: they hold no quote.
    client
        .batch_execute(&format!(
            "{verb} ROLE replicator WITH REPLICATION LOGIN PASSWORD '{repl}'; \
             ALTER ROLE postgres WITH PASSWORD '{su}';"
        ))
        .await
        .context("set the roles' passwords")?;
    Ok(())
}

/// Parses an LSN (`16/B374D848`) into a byte position.
pub fn parse_lsn(lsn: &str) -> Option<u64> {
    let (hi, lo) = lsn.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
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
}
