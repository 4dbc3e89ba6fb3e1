//! The API's failures as answers: [`ApiError`] is the one error response both Toygres APIs give
//! (`toygres_common::http_api`); here each [`OpError`] case gets its status and code.

use axum::http::StatusCode;
pub use toygres_common::http_api::ApiError;

use crate::postgres::OpError;

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            OpError::Diverged(m) => ApiError::new(StatusCode::CONFLICT, "diverged", m),
            OpError::Invalid { code, message } => {
                ApiError::new(StatusCode::BAD_REQUEST, code, message)
            }
            OpError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
            OpError::Failed(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "failed", m),
        }
    }
}
