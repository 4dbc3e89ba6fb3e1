//! Brings the CMS schema up to date at start-up: the numbered SQL files of `migrations/`, embedded
//! in the binary, applied in order, each in its own transaction, and recorded in
//! `toygres.schema_migrations`. Every transaction first takes a transaction-scoped advisory lock,
//! so controllers starting together against one database apply each migration exactly once.

use tokio_postgres::Client;

/// One numbered migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in the order they apply.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "cms",
        sql: include_str!("../../../migrations/0001_cms.sql"),
    },
    Migration {
        version: 2,
        name: "orchestrations",
        sql: include_str!("../../../migrations/0002_orchestrations.sql"),
    },
    Migration {
        version: 3,
        name: "ha",
        sql: include_str!("../../../migrations/0003_ha.sql"),
    },
    Migration {
        version: 4,
        name: "backups",
        sql: include_str!("../../../migrations/0004_backups.sql"),
    },
    Migration {
        version: 5,
        name: "operation_cancel",
        sql: include_str!("../../../migrations/0005_operation_cancel.sql"),
    },
    Migration {
        version: 6,
        name: "parameters",
        sql: include_str!("../../../migrations/0006_parameters.sql"),
    },
    Migration {
        version: 7,
        name: "ro_endpoint",
        sql: include_str!("../../../migrations/0007_ro_endpoint.sql"),
    },
    Migration {
        version: 8,
        name: "fleet_health",
        sql: include_str!("../../../migrations/0008_fleet_health.sql"),
    },
    Migration {
        version: 9,
        name: "restore_in_place",
        sql: include_str!("../../../migrations/0009_restore_in_place.sql"),
    },
    Migration {
        version: 10,
        name: "endpoint_ports_per_platform",
        sql: include_str!("../../../migrations/0010_endpoint_ports_per_platform.sql"),
    },
];

/// The advisory lock key every migrating controller takes ("toygres" in ASCII).
const LOCK_KEY: i64 = 0x0074_6f79_6772_6573;

const PREPARE: &str = "
    CREATE SCHEMA IF NOT EXISTS toygres;
    CREATE TABLE IF NOT EXISTS toygres.schema_migrations (
        version    integer PRIMARY KEY,
        name       text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
    );";

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("prepare the CMS migration table: {0}")]
    Prepare(#[source] tokio_postgres::Error),
    #[error("apply CMS migration {version} ({name}): {source}")]
    Apply {
        version: i32,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "the CMS schema is at version {found}, newer than this controller knows ({known}); \
         run a newer controller"
    )]
    TooNew { found: i32, known: i32 },
}

/// Applies the migrations the database lacks. Returns the versions this call applied (empty
/// when the schema was already up to date).
pub async fn apply(client: &mut Client) -> Result<Vec<i32>, MigrateError> {
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        let fail = |source| MigrateError::Apply {
            version: migration.version,
            name: migration.name,
            source,
        };
        let tx = client.transaction().await.map_err(MigrateError::Prepare)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(MigrateError::Prepare)?;
        tx.batch_execute(PREPARE)
            .await
            .map_err(MigrateError::Prepare)?;
        let latest: Option<i32> = tx
            .query_one("SELECT max(version) FROM toygres.schema_migrations", &[])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(MigrateError::Prepare)?;
        if let Some(found) = latest.filter(|v| *v > known) {
            return Err(MigrateError::TooNew { found, known });
        }
        let done = tx
            .query_opt(
                "SELECT 1 FROM toygres.schema_migrations WHERE version = $1",
                &[&migration.version],
            )
            .await
            .map_err(fail)?
            .is_some();
        if done {
            tx.commit().await.map_err(fail)?;
            continue;
        }
        tx.batch_execute(migration.sql).await.map_err(fail)?;
        tx.execute(
            "INSERT INTO toygres.schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        tracing::info!(
            "applied CMS migration {} ({})",
            migration.version,
            migration.name
        );
        applied.push(migration.version);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_one_up_without_gaps() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                usize::try_from(migration.version).ok(),
                Some(index + 1),
                "{}",
                migration.name
            );
            assert!(!migration.sql.trim().is_empty(), "{}", migration.name);
        }
    }

    #[test]
    fn migrations_do_not_manage_their_own_transactions() {
        // Each runs inside the transaction that records it; a COMMIT inside would break that.
        for migration in MIGRATIONS {
            let upper = migration.sql.to_ascii_uppercase();
            for word in ["BEGIN;", "COMMIT;", "ROLLBACK;"] {
                assert!(!upper.contains(word), "{} contains {word}", migration.name);
            }
        }
    }
}
