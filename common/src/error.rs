//! The JSON error body every Toygres HTTP API answers with:
//! `{"error": {"code": "...", "message": "..."}}`.

use serde::{Deserialize, Serialize};

/// The body of every non-2xx response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A machine-readable code (`unauthorized`, `invalid_parameter`, `conflict`, …) and a message for
/// a person.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}
