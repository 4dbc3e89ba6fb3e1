//! *Switchover*, *Failover* and *Rejoin*: moving the primary role, planned or not, and bringing
//! a former primary back as a standby. All three run as children of the instance's actor, one at
//! a time with its other commands, so automatic failover never races a switchover.
//!
//! The order is what keeps data safe: the rw endpoint stops leading to the old primary (new
//! connections are held) and the old primary is fenced *before* anything is promoted; a standby
//! is promoted only if it holds every acknowledged commit (sync mode) or is within the lag bound
//! (async mode); the new primary gets its synchronous standbys *before* rw leads to it.
//!
//! - [`target`], [`sync`] and [`evidence`]: the pure decisions (which standby, which synchronous
//!   standbys, whether the standbys' word holds a failover back);
//! - [`failover`], [`switchover`], [`rejoin`]: the runbooks, one per file;
//! - [`handover`]: the steps they share (progress, record, promote and route, rejoin).

pub mod evidence;
pub mod failover;
pub mod handover;
pub mod rejoin;
pub mod switchover;
pub mod sync;
pub mod target;
