//! What every request and answer of the operator API shares, below the per-concern modules
//! ([`crate::controller_api`], [`crate::backup_api`]) that use it: a refused value and the answer
//! to a request that started an operation.

use serde::{Deserialize, Serialize};

/// A request value that was refused, with the field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidRequest {
    pub field: &'static str,
    pub message: String,
}

impl InvalidRequest {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// The answer to a request that started an operation (`202 Accepted`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationAccepted {
    pub operation_id: String,
    pub kind: String,
    pub instance: String,
}
