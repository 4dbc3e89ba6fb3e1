//! What every activity reaches (the platform, the CMS, the metrics and the timing settings),
//! and how an activity's error is written into the history.

use std::sync::Arc;
use std::time::Duration;

use crate::cms::Cms;
use crate::metrics::ControllerMetrics;
use crate::platform::Platform;

/// What the activities reach.
#[derive(Debug)]
pub struct ActivityDeps {
    pub platform: Arc<dyn Platform>,
    pub cms: Arc<Cms>,
    pub metrics: Arc<ControllerMetrics>,
    /// How often the waiting activities poll a sidecar.
    pub poll_interval: Duration,
    /// How long one health probe of a member may take.
    pub probe_timeout: Duration,
    /// The health interval this controller runs with (its `--health-interval-ms`): running
    /// actors pick it up from their next round, so a restart with a new value reaches them.
    pub health_interval_ms: u64,
    /// The fast path runs: actors of quiet instances sleep between its wake-ups.
    pub fast_path: bool,
    /// The running instances the fast path watched in its last pass (their quiet actors'
    /// safety-net rounds are spread wider as the fleet grows).
    pub watched_instances: std::sync::atomic::AtomicUsize,
    /// When each instance's actor last began a health round (read its view): a wake-up sent
    /// before that is consumed. The fast path sends no other while one is pending.
    pub rounds_begun: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// When each instance's actor last finished a health round (recorded it): a round begun
    /// after that still runs, and a wake-up sent now would queue one more round behind it.
    pub rounds_ended: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// The health probes' sidecar clients, kept between probes ([`ProbeClients`]).
    pub probe_clients: ProbeClients,
}

/// How long a health probe's sidecar client is reused before it is made again. A changed
/// address, token or CA fails the next probe, which drops the client; this only bounds how long
/// a client lives whatever happens (a shorter one would churn a fleet's clients and memory).
const PROBE_CLIENT_TTL: std::time::Duration = std::time::Duration::from_secs(3600);
/// Kept clients beyond which the stale ones are dropped as a new one is kept.
const PROBE_CLIENTS_PRUNE_AT: usize = 4096;

/// The sidecar clients of the health probes, one per member, kept between probes: making one
/// looks up the member's address, token and CA and sets up TLS, and a new client opens a new
/// connection and handshake, which at a fleet's 1,000 probes a second is most of the prober's
/// work. A client is dropped when a probe through it fails, when its member leaves the fast
/// path's view, and after [`PROBE_CLIENT_TTL`].
#[derive(Debug, Default)]
pub struct ProbeClients {
    clients: std::sync::Mutex<
        std::collections::HashMap<
            (String, String),
            (toygres_common::SidecarClient, std::time::Instant),
        >,
    >,
}

impl ProbeClients {
    /// The kept client of `member` of `instance`, when one is fresh.
    pub fn get(&self, instance: &str, member: &str) -> Option<toygres_common::SidecarClient> {
        let clients = self.clients.lock().ok()?;
        let (client, made) = clients.get(&(instance.to_string(), member.to_string()))?;
        (made.elapsed() < PROBE_CLIENT_TTL).then(|| client.clone())
    }

    /// Keeps `client` for `member` of `instance`.
    pub fn keep(&self, instance: &str, member: &str, client: toygres_common::SidecarClient) {
        if let Ok(mut clients) = self.clients.lock() {
            // Without the fast path's pass to prune it, stale clients go as the map grows.
            if clients.len() >= PROBE_CLIENTS_PRUNE_AT {
                clients.retain(|_, (_, made)| made.elapsed() < PROBE_CLIENT_TTL);
            }
            clients.insert(
                (instance.to_string(), member.to_string()),
                (client, std::time::Instant::now()),
            );
        }
    }

    /// Drops the client of `member` of `instance` (a probe through it failed).
    pub fn forget(&self, instance: &str, member: &str) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.remove(&(instance.to_string(), member.to_string()));
        }
    }

    /// Drops the clients of members no longer in `live` (instance, member) pairs.
    pub fn retain(&self, live: impl Fn(&str, &str) -> bool) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.retain(|(i, m), _| live(i, m));
        }
    }
}

impl ActivityDeps {
    /// The running instances the fast path watched last (0 without it).
    pub fn fleet_size(&self) -> usize {
        self.watched_instances
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The actor of `instance` begins a health round now.
    pub fn round_begins(&self, instance: &str) {
        if let Ok(mut rounds) = self.rounds_begun.lock() {
            rounds.insert(instance.to_string(), std::time::Instant::now());
        }
    }

    /// The actor of `instance` finished a health round now (recorded its health).
    pub fn round_ends(&self, instance: &str) {
        if let Ok(mut rounds) = self.rounds_ended.lock() {
            rounds.insert(instance.to_string(), std::time::Instant::now());
        }
    }

    /// When the actor of `instance` last finished a health round (in this process).
    pub fn round_ended(&self, instance: &str) -> Option<std::time::Instant> {
        self.rounds_ended
            .lock()
            .ok()
            .and_then(|rounds| rounds.get(instance).copied())
    }

    /// When the actor of `instance` last began a health round (in this process).
    pub fn round_begun(&self, instance: &str) -> Option<std::time::Instant> {
        self.rounds_begun
            .lock()
            .ok()
            .and_then(|rounds| rounds.get(instance).copied())
    }
}

/// How long each of a fleet's `instances` periodic loops waits between its turns so that
/// together they run at most `per_sec` turns a second, and never less than `floor_ms`: a fixed
/// per-instance loop would make the durable work grow with the fleet.
pub fn spread_ms(instances: usize, floor_ms: u64, per_sec: u64) -> u64 {
    let instances = u64::try_from(instances).unwrap_or(u64::MAX);
    floor_ms.max(instances.saturating_mul(1000) / per_sec.max(1))
}

/// `ms` plus up to a quarter more, at random: loops started together (a fleet created at once,
/// a controller restart) drift apart instead of all waking in the same second, which queued
/// a hundred rounds at once ahead of a failover's steps. An activity result, so replay safe.
pub fn jittered_ms(ms: u64) -> u64 {
    use rand::Rng as _;
    ms.saturating_add(rand::thread_rng().gen_range(0..=ms / 4))
}

/// An activity's error: the whole chain of causes, as text (it goes into the history).
pub(crate) fn describe(e: impl Into<anyhow::Error>) -> String {
    format!("{:#}", e.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_adds_at_most_a_quarter() {
        for _ in 0..200 {
            let ms = jittered_ms(30_000);
            assert!((30_000..=37_500).contains(&ms), "{ms}");
        }
        assert_eq!(jittered_ms(0), 0);
    }
}
