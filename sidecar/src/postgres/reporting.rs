//! The member's reporting state (what [`super::report`] sends reports with), kept apart so
//! that [`super::member::Member`] can hold it without importing the reporting logic.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::RwLock;

use crate::notify::Notifier;

/// The member's reporting state, held by [`super::member::Member`].
#[derive(Debug, Default)]
pub struct Reporting {
    /// Where reports go, once the sidecar knows its controller; replaced when the controller
    /// points them elsewhere (`PUT /v1/notify`).
    pub(super) notifier: RwLock<Option<Notifier>>,
    /// Reports under way (bounded).
    pub(super) in_flight: AtomicUsize,
    /// The controller-silent report went out for the present silence.
    pub(super) silence_reported: AtomicBool,
}
