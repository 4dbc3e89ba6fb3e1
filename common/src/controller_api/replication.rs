//! How standbys acknowledge commits, and the instance-wide limits on standbys and queued work.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::request::InvalidRequest;

/// The most standbys an instance may have.
pub const MAX_REPLICAS: u32 = 5;

/// The most operations one instance's actor holds, queued and running: one more is answered
/// `429 Too Many Requests`.
pub const MAX_QUEUED_OPERATIONS: i64 = 8;

/// How standbys acknowledge commits.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    /// Commits return once the primary has them; standbys follow as fast as they can.
    #[default]
    Async,
    /// Commits return once the synchronous standby has flushed them too.
    Sync,
}

impl ReplicationMode {
    /// `async` or `sync`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationMode::Async => "async",
            ReplicationMode::Sync => "sync",
        }
    }
}

impl fmt::Display for ReplicationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReplicationMode {
    type Err = InvalidRequest;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "async" => Ok(ReplicationMode::Async),
            "sync" => Ok(ReplicationMode::Sync),
            other => Err(InvalidRequest::new(
                "replication",
                format!("must be \"sync\" or \"async\", not {other:?}"),
            )),
        }
    }
}
