//! The CMS: the PostgreSQL database that holds the controller's record of instances, members,
//! operations and events. This module owns the connection to it (reconnecting after the server
//! goes away) and the queries the API needs; [`embedded`] runs the database when no
//! `DATABASE_URL` is given, and [`migrate`] brings its schema up to date at start-up.

pub mod backups;
pub mod embedded;
pub mod events;
pub mod health;
pub mod instances;
pub mod migrate;
pub mod operations;
pub mod parameters;
pub mod ro;
pub mod stats;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row};

use toygres_common::domain::InstanceState;

use toygres_common::controller_api::InstanceSummary;

/// The schema holding the CMS tables.
pub const SCHEMA: &str = "toygres";

/// The name of the CMS database in the embedded Postgres.
pub const DATABASE: &str = "toygres";

/// How long one CMS query may take before the caller gives up.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the CMS could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CmsError {
    #[error("connect to the CMS: {0}")]
    Connect(#[source] tokio_postgres::Error),
    #[error("{what}: {source}")]
    Query {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{0}: the CMS did not answer within 5 seconds")]
    Timeout(&'static str),
    #[error("{what}: {message}")]
    Invalid { what: &'static str, message: String },
}

impl CmsError {
    /// Whether the CMS could not be reached at all (as opposed to refusing or failing a query).
    pub fn is_unavailable(&self) -> bool {
        match self {
            CmsError::Connect(_) | CmsError::Timeout(_) => true,
            CmsError::Query { source, .. } => source.is_closed(),
            CmsError::Invalid { .. } => false,
        }
    }
}

/// Opens a connection and drives it on a background task, which logs when it ends in error.
pub async fn connect(config: &tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("CMS connection ended: {e}");
        }
    });
    Ok(client)
}

/// A shared handle on the CMS: a few connections taken in turn (each pipelines its callers'
/// queries, which its server process runs one after another), each opened on first use and
/// re-opened after it breaks.
#[derive(Debug)]
pub struct Cms {
    config: tokio_postgres::Config,
    clients: Vec<tokio::sync::Mutex<Option<Arc<Client>>>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Cms {
    /// A handle with one connection, opened with `config` on first use.
    pub fn new(config: tokio_postgres::Config) -> Self {
        Self::with_connections(config, 1)
    }

    /// A handle whose queries share `connections` connections (at least one).
    pub fn with_connections(mut config: tokio_postgres::Config, connections: usize) -> Self {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(QUERY_TIMEOUT);
        }
        Self {
            config,
            clients: (0..connections.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The next connection in turn, opening a new one when there is none or it has closed.
    async fn client(&self) -> Result<Arc<Client>, CmsError> {
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut slot = self.clients[turn % self.clients.len()].lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(client));
        }
        *slot = None;
        let client = with_timeout("connect to the CMS", async {
            connect(&self.config).await.map_err(CmsError::Connect)
        })
        .await?;
        let client = Arc::new(client);
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }

    /// Runs one query, within the query timeout.
    pub(crate) async fn query(
        &self,
        what: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, CmsError> {
        with_timeout(what, async {
            let client = self.client().await?;
            client
                .query(sql, params)
                .await
                .map_err(|source| CmsError::Query { what, source })
        })
        .await
    }

    /// Runs one statement, within the query timeout; returns the rows it changed.
    pub(crate) async fn execute(
        &self,
        what: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, CmsError> {
        with_timeout(what, async {
            let client = self.client().await?;
            client
                .execute(sql, params)
                .await
                .map_err(|source| CmsError::Query { what, source })
        })
        .await
    }

    /// A connection of its own, for a transaction (the shared one interleaves callers).
    pub(crate) async fn dedicated(&self, what: &'static str) -> Result<Client, CmsError> {
        with_timeout(what, async {
            connect(&self.config).await.map_err(CmsError::Connect)
        })
        .await
    }

    /// Checks that the CMS answers a query.
    pub async fn ping(&self) -> Result<(), CmsError> {
        let what = "check the CMS with SELECT 1";
        with_timeout(what, async {
            let client = self.client().await?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|source| CmsError::Query { what, source })?;
            Ok(())
        })
        .await
    }

    /// The instances that are not deleted, by name.
    pub async fn list_instances(&self) -> Result<Vec<InstanceSummary>, CmsError> {
        let what = "list instances";
        let rows = with_timeout(what, async {
            let client = self.client().await?;
            client
                .query(
                    "SELECT name, state, health, replication_mode, rw_port, ro_port,
                            to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                            to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                       FROM toygres.instances
                      WHERE state <> 'deleted'
                      ORDER BY name",
                    &[],
                )
                .await
                .map_err(|source| CmsError::Query { what, source })
        })
        .await?;
        rows.iter()
            .map(|row| {
                let port = |index: usize| -> Result<Option<u16>, CmsError> {
                    row.try_get::<_, Option<i32>>(index)
                        .map_err(|source| CmsError::Query { what, source })?
                        .map(|p| {
                            u16::try_from(p).map_err(|_| CmsError::Invalid {
                                what,
                                message: format!("port {p} is out of range"),
                            })
                        })
                        .transpose()
                };
                let text = |index: usize| -> Result<String, CmsError> {
                    row.try_get(index)
                        .map_err(|source| CmsError::Query { what, source })
                };
                Ok(InstanceSummary {
                    name: text(0)?,
                    state: text(1)?,
                    health: text(2)?,
                    replication_mode: text(3)?,
                    rw_port: port(4)?,
                    ro_port: port(5)?,
                    created_at: text(6)?,
                    updated_at: text(7)?,
                })
            })
            .collect()
    }

    /// How many live instances have each health.
    pub async fn count_instances_by_health(&self) -> Result<Vec<(String, i64)>, CmsError> {
        let what = "count instances by health";
        let rows = self
            .query(
                what,
                "SELECT health, count(*) FROM toygres.instances WHERE state <> 'deleted'
                  GROUP BY health ORDER BY health",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((get(row, 0, what)?, get(row, 1, what)?)))
            .collect()
    }

    /// How many instances are in each state; every [`InstanceState`] is present.
    pub async fn count_instances_by_state(&self) -> Result<Vec<(&'static str, i64)>, CmsError> {
        let what = "count instances by state";
        let rows = with_timeout(what, async {
            let client = self.client().await?;
            client
                .query(
                    "SELECT state, count(*) FROM toygres.instances GROUP BY state",
                    &[],
                )
                .await
                .map_err(|source| CmsError::Query { what, source })
        })
        .await?;
        let mut counts: Vec<(&'static str, i64)> = InstanceState::ALL
            .iter()
            .map(|state| (state.as_str(), 0))
            .collect();
        for row in rows {
            let state: String = row
                .try_get(0)
                .map_err(|source| CmsError::Query { what, source })?;
            let count: i64 = row
                .try_get(1)
                .map_err(|source| CmsError::Query { what, source })?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == state) {
                slot.1 = count;
            }
        }
        Ok(counts)
    }
}

/// Reads column `index` of `row`, naming `what` in the error.
pub(crate) fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    index: usize,
    what: &'static str,
) -> Result<T, CmsError> {
    row.try_get(index)
        .map_err(|source| CmsError::Query { what, source })
}

/// SQL rendering a `timestamptz` expression as RFC 3339 in UTC.
macro_rules! rfc3339 {
    ($column:literal) => {
        concat!(
            "to_char(",
            $column,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
        )
    };
}
pub(crate) use rfc3339;

/// SQL rendering a `timestamptz` expression as RFC 3339 in UTC with microseconds, for times
/// compared with others later (a backup's end against a restore's target time).
macro_rules! rfc3339_micros {
    ($column:literal) => {
        concat!(
            "to_char(",
            $column,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        )
    };
}
pub(crate) use rfc3339_micros;

pub(crate) async fn with_timeout<T>(
    what: &'static str,
    fut: impl Future<Output = Result<T, CmsError>>,
) -> Result<T, CmsError> {
    tokio::time::timeout(QUERY_TIMEOUT, fut)
        .await
        .unwrap_or(Err(CmsError::Timeout(what)))
}
