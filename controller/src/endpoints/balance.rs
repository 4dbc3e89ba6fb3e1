//! How the ro endpoint spreads connections over its standbys: round-robin (each new connection
//! starts at the next standby: [`super::proxy::ProxyTargets`] rotates the list), or
//! least-connections (the standby with the fewest open ro connections first; ties keep the
//! round-robin order). [`BackendLoad`] counts each standby's open connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Open connections per backend.
#[derive(Debug, Default)]
pub struct BackendLoad {
    open: Mutex<HashMap<SocketAddr, u64>>,
}

impl BackendLoad {
    fn open(&self) -> MutexGuard<'_, HashMap<SocketAddr, u64>> {
        match self.open.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Counts a connection to `backend` for as long as the guard lives.
    pub fn hold(self: &Arc<Self>, backend: SocketAddr) -> LoadGuard {
        *self.open().entry(backend).or_insert(0) += 1;
        LoadGuard {
            load: self.clone(),
            backend,
        }
    }

    /// Open connections to `backend`.
    pub fn active(&self, backend: SocketAddr) -> u64 {
        self.open().get(&backend).copied().unwrap_or(0)
    }

    /// Puts the least loaded backends first, keeping the given order among equals.
    pub fn least_loaded_first(&self, backends: &mut [SocketAddr]) {
        let open = self.open();
        backends.sort_by_key(|b| open.get(b).copied().unwrap_or(0));
    }
}

/// One open connection to a backend; dropping it ends the count.
#[derive(Debug)]
pub struct LoadGuard {
    load: Arc<BackendLoad>,
    backend: SocketAddr,
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        let mut open = self.load.open();
        if let Some(n) = open.get_mut(&self.backend) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.backend);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_least_loaded_backend_comes_first_and_ties_keep_their_order() {
        let load = Arc::new(BackendLoad::default());
        let (a, b, c) = (addr(1), addr(2), addr(3));
        let held_a = load.hold(a);
        let _held_a2 = load.hold(a);
        let held_b = load.hold(b);
        let mut order = [a, b, c];
        load.least_loaded_first(&mut order);
        assert_eq!(order, [c, b, a]);
        drop(held_b);
        drop(held_a);
        assert_eq!(load.active(a), 1);
        assert_eq!(load.active(b), 0);
        let mut order = [c, b, a];
        load.least_loaded_first(&mut order);
        assert_eq!(order, [c, b, a], "c and b tie: the rotation's order stays");
    }
}
