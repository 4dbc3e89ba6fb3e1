//! The JSON error body every Toygres HTTP API answers with:
//! `{"error": {"code": "...", "message": "..."}}`.

use serde::{Deserialize, Serialize};

/// The body of every non-2xx response (named `ErrorResponse` in the controller's OpenAPI
/// document).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = ErrorResponse))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a machine-readable code and a message for a person.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(as = ErrorResponseDetail)
)]
pub struct ErrorDetail {
    /// Machine-readable: `invalid_request`, `unauthorized`, `not_found`, `conflict`, …
    pub code: String,
    /// For a person.
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
