//! Self-fencing of an isolated primary. A primary that has lost both the controller (no
//! authenticated API request) and every standby (none streaming) for longer than the isolation
//! lease stops Postgres and fences itself: cut off from everyone, it cannot know whether a
//! standby has been promoted meanwhile, and it must not keep taking writes that would be lost.
//!
//! The lease is off unless configured, and it arms only after the first authenticated request
//! and the first streaming standby: a sidecar nobody manages, or a primary that never had a
//! standby (nobody could take its place), never fences itself.
//!
//! A primary the controller has not reached for half its lease tells the controller so
//! ([`super::report`]); an answer that another member was promoted on a newer timeline fences it
//! at once, before the lease runs out. A fenced member stays fenced (across sidecar restarts)
//! until the controller unfences or rejoins it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use toygres_common::member_report::ReportKind;

use super::member::Member;
use super::watchers::Contacts;

impl Member {
    /// Records a request from the controller (any authenticated API call).
    pub fn touch_controller(&self) {
        self.contacts().controller = Some(Instant::now());
        self.reporting
            .silence_reported
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    fn contacts(&self) -> std::sync::MutexGuard<'_, Contacts> {
        self.contacts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches the lease until shutdown; returns at once when no lease is configured.
    pub async fn watch_isolation(self: Arc<Self>) {
        let Some(lease) = self.cfg.isolation_lease else {
            return;
        };
        let tick = (lease / 10).clamp(Duration::from_millis(100), Duration::from_millis(500));
        loop {
            tokio::time::sleep(tick).await;
            if self.is_shutting_down() || self.layout.is_fenced() || self.layout.is_standby() {
                continue;
            }
            if let Some(heard) = self.last_standby_reply().await {
                let mut contacts = self.contacts();
                if contacts.standby.is_none_or(|before| heard > before) {
                    contacts.standby = Some(heard);
                }
            }
            let verdict = {
                let c = self.contacts();
                lease_verdict(c.controller, c.standby, Instant::now(), lease)
            };
            match verdict {
                Lease::NotArmed | Lease::Holds => {}
                Lease::ControllerSilent(silent) => self.report_controller_silence(silent),
                Lease::Expired(silent) => {
                    tracing::error!(
                        "isolated for {silent:?} (no controller request, no streaming standby; \
                         lease {lease:?}): fencing this primary so it takes no more writes"
                    );
                    // Counted when decided: the fence is visible (marker, readiness) before
                    // Postgres has finished stopping.
                    self.count_self_fence();
                    if let Err(e) = self.fence().await {
                        tracing::error!("self-fence: {e}");
                    }
                    self.report(
                        ReportKind::Fenced,
                        format!("isolated for {} ms: fenced itself", silent.as_millis()),
                    );
                }
            }
        }
    }

    /// A primary that has not heard from the controller for half its lease says so, once per
    /// silence: the answer tells it whether another member was promoted meanwhile.
    fn report_controller_silence(self: &Arc<Self>, silent: Duration) {
        if !self
            .reporting
            .silence_reported
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.report(
                ReportKind::ControllerSilent,
                format!(
                    "no request from the controller for {} ms",
                    silent.as_millis()
                ),
            );
        }
    }

    /// When a streaming standby last replied (`pg_stat_replication.reply_time`), if one
    /// streams. A standby cut off by the network stays "streaming" until `wal_sender_timeout`
    /// ends its WAL sender: the time of its last reply, not its state, is the contact.
    ///
    /// A base backup's WAL stream (`pg_basebackup --wal-method=stream`, application name
    /// `pg_basebackup`; standbys stream under their member name) is no standby: counting it
    /// armed the lease while a new standby was being copied, and when the copy ended the
    /// primary fenced itself before the standby had started streaming (under load that takes
    /// longer than the lease), so the standby never streamed and the create failed.
    async fn last_standby_reply(&self) -> Option<Instant> {
        let client = self.query_client().await.ok()?;
        let query = client.query_one(
            "SELECT extract(epoch FROM clock_timestamp() - max(reply_time))::float8 \
             FROM pg_stat_replication \
             WHERE state = 'streaming' AND application_name <> 'pg_basebackup'",
            &[],
        );
        let row = tokio::time::timeout(Duration::from_secs(2), query)
            .await
            .ok()?
            .ok()?;
        let age: Option<f64> = row.get(0);
        reply_instant(Instant::now(), age?)
    }
}

/// The instant a reply `age_secs` old (as Postgres measured it) came in; a negative age (clock
/// skew between processes) is now.
fn reply_instant(now: Instant, age_secs: f64) -> Option<Instant> {
    if !age_secs.is_finite() {
        return None;
    }
    now.checked_sub(Duration::from_secs_f64(age_secs.max(0.0)))
}

/// What the isolation lease says of a primary at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Nobody has managed this member yet, or it never had a streaming standby: nothing can
    /// have been promoted in its place, so stopping would only turn a lost controller into an
    /// outage.
    NotArmed,
    /// It heard from the controller or a streaming standby recently enough.
    Holds,
    /// The controller has been silent for more than half the lease (a standby still streams,
    /// or the lease has not run out yet): for this long.
    ControllerSilent(Duration),
    /// Neither the controller nor any streaming standby for longer than the lease: for this
    /// long. The primary fences itself.
    Expired(Duration),
}

/// The lease's verdict at `now`, from the last controller request and the last time a standby
/// was seen streaming.
pub fn lease_verdict(
    controller: Option<Instant>,
    standby: Option<Instant>,
    now: Instant,
    lease: Duration,
) -> Lease {
    let (Some(ctl), Some(standby)) = (controller, standby) else {
        return Lease::NotArmed;
    };
    let silent = now.saturating_duration_since(ctl.max(standby));
    if silent > lease {
        return Lease::Expired(silent);
    }
    let controller_silent = now.saturating_duration_since(ctl);
    if controller_silent > lease / 2 {
        return Lease::ControllerSilent(controller_silent);
    }
    Lease::Holds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_reply_counts_from_when_it_came() {
        let now = Instant::now() + Duration::from_secs(10);
        assert_eq!(
            reply_instant(now, 1.5),
            Some(now - Duration::from_millis(1_500))
        );
        assert_eq!(reply_instant(now, -0.2), Some(now));
        assert_eq!(reply_instant(now, f64::NAN), None);
    }

    #[test]
    fn the_lease_runs_out_only_without_controller_and_standbys() {
        let lease = Duration::from_secs(4);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Unarmed: never managed, or never had a standby.
        assert_eq!(
            lease_verdict(None, Some(t0), at(60_000), lease),
            Lease::NotArmed
        );
        assert_eq!(
            lease_verdict(Some(t0), None, at(60_000), lease),
            Lease::NotArmed
        );
        // Recent contact of either kind holds it.
        assert_eq!(
            lease_verdict(Some(at(0)), Some(at(0)), at(1_000), lease),
            Lease::Holds
        );
        assert_eq!(
            lease_verdict(Some(at(0)), Some(at(9_000)), at(10_000), lease),
            Lease::ControllerSilent(Duration::from_secs(10))
        );
        assert_eq!(
            lease_verdict(Some(at(0)), Some(at(0)), at(2_500), lease),
            Lease::ControllerSilent(Duration::from_millis(2_500))
        );
        // Both silent past the lease, counted from the later of the two.
        assert_eq!(
            lease_verdict(Some(at(0)), Some(at(1_000)), at(5_000), lease),
            Lease::ControllerSilent(Duration::from_secs(5))
        );
        assert_eq!(
            lease_verdict(Some(at(0)), Some(at(1_000)), at(5_001), lease),
            Lease::Expired(Duration::from_millis(4_001))
        );
        assert_eq!(
            lease_verdict(Some(at(3_000)), Some(at(1_000)), at(7_500), lease),
            Lease::Expired(Duration::from_millis(4_500))
        );
    }
}
