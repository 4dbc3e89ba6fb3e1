//! The protected routes' bearer-token check (`toygres_common::http_api`, shared with the
//! controller), and what an authenticated request tells the member: the controller is there.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::state::AppState;

/// Records, after the token was checked, that the controller reached this member (the isolation
/// lease counts it).
pub async fn note_controller_contact(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    state.member.touch_controller();
    next.run(request).await
}
