//! One active controller at a time on Kubernetes: a `coordination.k8s.io` Lease.
//!
//! Several controller replicas may run (the chart's `controller.replicas` with an external
//! CMS); only the holder of the Lease runs the engine, the platform's relabeler and the API.
//! The others wait, answering `/healthz` (alive) and 503 everywhere else, so the chart's
//! readiness probe keeps the Service on the active one.
//!
//! The rules, after client-go's leader election:
//! - a candidate takes the Lease when it has no holder, or when its record has not changed for
//!   a whole lease duration *by the candidate's own clock* (the holder's renew times are never
//!   compared with the candidate's clock, so clock skew between nodes does not matter);
//! - every write carries the resourceVersion it read, so two candidates cannot both win;
//! - the holder renews every third of the duration and gives up (the process stops, and the
//!   pod's restart makes it a candidate again) when it has not renewed for two thirds of it —
//!   before any other candidate may take over;
//! - a holder that stops cleanly releases the Lease, so a waiting replica takes over at its
//!   next try instead of after a lease duration.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::oneshot;

/// How long a Lease holds without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);

/// The Lease of one controller candidate.
#[derive(Debug)]
pub struct LeaderLease {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

/// What a candidate saw of the Lease at its last look.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    resource_version: Option<String>,
    holder: Option<String>,
    at: Instant,
}

/// What a candidate should do with the Lease it read.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Write this candidate into it.
    Take,
    /// Someone else holds it; look again later.
    Wait,
}

/// Whether a candidate may take a Lease whose holder is `holder`, given what it observed
/// before (`previous`) and now (`now_version`, at `now`).
fn decide(
    identity: &str,
    holder: Option<&str>,
    now_version: Option<&str>,
    previous: Option<&Observed>,
    now: Instant,
    duration: Duration,
) -> Decision {
    match holder {
        None | Some("") => return Decision::Take,
        Some(h) if h == identity => return Decision::Take,
        Some(_) => {}
    }
    match previous {
        // Unchanged since we first saw it, for a whole duration: the holder stopped renewing.
        Some(seen)
            if seen.resource_version.as_deref() == now_version
                && now.duration_since(seen.at) >= duration =>
        {
            Decision::Take
        }
        _ => Decision::Wait,
    }
}

impl LeaderLease {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration: LEASE_DURATION,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Tries until this candidate holds the Lease (never returns otherwise; the caller selects
    /// it against its shutdown signal).
    pub async fn acquire(&self) -> Leadership {
        let retry = self.duration / 5;
        let mut observed: Option<Observed> = None;
        let mut logged_holder: Option<String> = None;
        loop {
            match self.try_acquire(&mut observed).await {
                Ok(true) => {
                    tracing::info!(
                        lease = %self.name,
                        identity = %self.identity,
                        "this controller holds the lease: it is the active one"
                    );
                    return Leadership {
                        renewed_at: Instant::now(),
                    };
                }
                Ok(false) => {
                    let holder = observed.as_ref().and_then(|o| o.holder.clone());
                    if holder != logged_holder {
                        tracing::info!(
                            lease = %self.name,
                            holder = holder.as_deref().unwrap_or(""),
                            "another controller holds the lease: waiting as a standby"
                        );
                        logged_holder = holder;
                    }
                }
                Err(e) => tracing::warn!(lease = %self.name, "read or take the lease: {e:#}"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// One look at the Lease; `Ok(true)` when this candidate now holds it.
    async fn try_acquire(&self, observed: &mut Option<Observed>) -> anyhow::Result<bool> {
        let now = Instant::now();
        let Some(lease) = self
            .api
            .get_opt(&self.name)
            .await
            .with_context(|| format!("read Lease {}", self.name))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                // Another candidate created it first.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e).with_context(|| format!("create Lease {}", self.name)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone();
        let version = lease.metadata.resource_version.clone();
        let previous = observed
            .as_ref()
            .filter(|o| o.resource_version == version)
            .cloned();
        let seen = previous.unwrap_or(Observed {
            resource_version: version.clone(),
            holder: holder.clone(),
            at: now,
        });
        let decision = decide(
            &self.identity,
            holder.as_deref(),
            version.as_deref(),
            Some(&seen),
            now,
            self.duration,
        );
        *observed = Some(seen);
        if decision == Decision::Wait {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0)
            + i32::from(holder.as_deref() != Some(self.identity.as_str()));
        self.write(lease, Some(&spec), transitions).await
    }

    /// Writes this candidate into `lease` (read with its resourceVersion); `Ok(false)` when
    /// another write came first.
    async fn write(
        &self,
        mut lease: Lease,
        previous: Option<&LeaseSpec>,
        transitions: i32,
    ) -> anyhow::Result<bool> {
        lease.spec = Some(self.spec(previous, transitions));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e).with_context(|| format!("write Lease {}", self.name)),
        }
    }

    fn spec(&self, previous: Option<&LeaseSpec>, transitions: i32) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        let kept_acquire = previous
            .filter(|p| p.holder_identity.as_deref() == Some(self.identity.as_str()))
            .and_then(|p| p.acquire_time.clone());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.duration.as_secs()).unwrap_or(15)),
            acquire_time: Some(kept_acquire.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Renews the Lease every third of its duration; returns (with why) once this controller
    /// may no longer act: the Lease names someone else, or it could not be renewed for two
    /// thirds of its duration.
    pub async fn hold(&self, mut leadership: Leadership) -> anyhow::Error {
        let every = self.duration / 3;
        let give_up_after = self.duration * 2 / 3;
        loop {
            tokio::time::sleep(every).await;
            match self.renew().await {
                Ok(()) => leadership.renewed_at = Instant::now(),
                Err(Lost(why)) => return why,
                Err(Failed(e)) => {
                    let since = leadership.renewed_at.elapsed();
                    if since >= give_up_after {
                        return e.context(format!(
                            "the lease {} was not renewed for {since:?}",
                            self.name
                        ));
                    }
                    tracing::warn!(lease = %self.name, "renew the lease (will retry): {e:#}");
                }
            }
        }
    }

    async fn renew(&self) -> Result<(), RenewError> {
        let lease = self
            .api
            .get(&self.name)
            .await
            .map_err(|e| Failed(anyhow::Error::new(e).context("read the lease")))?;
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Err(Lost(anyhow::anyhow!(
                "the lease {} now names {}",
                self.name,
                spec.holder_identity.as_deref().unwrap_or("no holder")
            )));
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        match self.write(lease, Some(&spec), transitions).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Failed(anyhow::anyhow!(
                "the lease changed while being renewed"
            ))),
            Err(e) => Err(Failed(e)),
        }
    }

    /// Gives the Lease up (on a clean stop), so that a standby takes over at its next try.
    pub async fn release(&self) {
        let Ok(mut lease) = self.api.get(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.name, "released the lease"),
            Err(e) => tracing::warn!(lease = %self.name, "release the lease: {e}"),
        }
    }
}

/// Holding the Lease, since the last successful write.
#[derive(Debug)]
pub struct Leadership {
    renewed_at: Instant,
}

enum RenewError {
    /// Someone else holds the Lease.
    Lost(anyhow::Error),
    /// The renewal failed; the Lease may still be ours.
    Failed(anyhow::Error),
}
use RenewError::{Failed, Lost};

/// Runs [`LeaderLease::hold`] in a task; the receiver gets why leadership ended.
pub fn spawn_holder(
    lease: std::sync::Arc<LeaderLease>,
    leadership: Leadership,
) -> (
    tokio::task::JoinHandle<()>,
    oneshot::Receiver<anyhow::Error>,
) {
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        let why = lease.hold(leadership).await;
        let _ = tx.send(why);
    });
    (task, rx)
}

/// This candidate's name in the Lease: `POD_NAME` (the chart sets it from the pod), else the
/// host name and process id.
pub fn default_identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()) {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "controller".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn a_lease_with_no_holder_or_our_own_name_is_taken() {
        let now = Instant::now();
        assert_eq!(decide("a", None, Some("1"), None, now, D), Decision::Take);
        assert_eq!(
            decide("a", Some(""), Some("1"), None, now, D),
            Decision::Take
        );
        assert_eq!(
            decide("a", Some("a"), Some("1"), None, now, D),
            Decision::Take
        );
    }

    #[test]
    fn another_holder_is_waited_out_for_a_whole_duration_of_an_unchanged_record() {
        let start = Instant::now();
        let seen = Observed {
            resource_version: Some("7".into()),
            holder: Some("b".into()),
            at: start,
        };
        // First look, and any look before a whole duration has passed: wait.
        assert_eq!(
            decide("a", Some("b"), Some("7"), None, start, D),
            Decision::Wait
        );
        assert_eq!(
            decide("a", Some("b"), Some("7"), Some(&seen), start + D / 2, D),
            Decision::Wait
        );
        // The record changed (b renewed): wait, whatever the time.
        assert_eq!(
            decide("a", Some("b"), Some("8"), Some(&seen), start + D * 2, D),
            Decision::Wait
        );
        // Unchanged for a whole duration by our clock: b stopped renewing.
        assert_eq!(
            decide("a", Some("b"), Some("7"), Some(&seen), start + D, D),
            Decision::Take
        );
    }

    #[test]
    fn the_holder_gives_up_before_anyone_else_may_take_over() {
        // Renewals every third; giving up after two thirds leaves a third as the margin.
        let every = LEASE_DURATION / 3;
        let give_up_after = LEASE_DURATION * 2 / 3;
        assert!(every < give_up_after && give_up_after < LEASE_DURATION);
    }
}
