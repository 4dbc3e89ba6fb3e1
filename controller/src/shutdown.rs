//! Shutdown requests: SIGTERM (from a supervisor or Kubernetes) and SIGINT (ctrl-c).

use tokio::signal::unix::{signal, Signal, SignalKind};

/// The signals that ask the controller to stop, listened to from start-up on so that none is
/// lost (or kills the process) while the controller is still starting.
#[derive(Debug)]
pub struct ShutdownSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl ShutdownSignals {
    /// Starts listening for SIGTERM and SIGINT.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves at the next SIGTERM or SIGINT, with its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}
