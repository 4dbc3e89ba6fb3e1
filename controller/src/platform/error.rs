//! What went wrong on the platform.

use toygres_common::names::InvalidName;

/// What went wrong on the platform.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The member, endpoints or secret named does not exist.
    #[error("{kind} {name:?} does not exist")]
    NotFound { kind: &'static str, name: String },
    /// An instance or member name that cannot be used.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// A request that contradicts the platform's state (for example, routing to a member of
    /// another instance).
    #[error("{0}")]
    Invalid(String),
    /// Anything else (I/O, processes, the Kubernetes API); the context says what failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl PlatformError {
    /// A [`PlatformError::NotFound`] for `kind` (`"member"`, `"endpoints"`, …) named `name`.
    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Self::NotFound {
            kind,
            name: name.into(),
        }
    }
}
