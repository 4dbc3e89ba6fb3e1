//! What the member reports to the controller ([`crate::notify`]) and when: its Postgres died
//! (the supervisor), its WAL receiver lost the primary ([`Member::watch_upstream`]), it fenced
//! itself or has not heard from the controller for half its isolation lease
//! ([`super::isolation`]). Reports go out in the background and never hold up supervision. An
//! answer saying another member was promoted on a newer timeline makes a primary fence itself
//! at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use toygres_common::member_report::{MemberReport, ReportKind};
use toygres_common::sidecar_api::Role;

use super::member::Member;
use crate::notify::Notifier;

/// A standby whose WAL receiver heard nothing for this long has lost its primary: a live
/// primary sends a keepalive about every half second (`wal_sender_timeout` is 1 s). It matches
/// the default `standby_contact_window_ms`, so the check the report causes finds the evidence
/// stale.
pub const UPSTREAM_STALE: Duration = Duration::from_millis(1_000);
/// How often a standby looks at its WAL receiver.
const UPSTREAM_TICK: Duration = Duration::from_millis(100);
/// Reports under way at most; more are dropped (the controller's rounds still see the change).
const MAX_IN_FLIGHT: usize = 4;
/// How long the facts a report carries (the timeline, the WAL receiver's state) may take.
const FACT_TIMEOUT: Duration = Duration::from_millis(500);

/// What a look at the WAL receiver found.
#[derive(Debug, Clone, PartialEq)]
pub enum Upstream {
    /// Streaming, and heard from the primary within [`UPSTREAM_STALE`].
    Fresh,
    /// Not streaming, or silent for too long: why.
    Lost(String),
}

/// Reads a row of `pg_stat_wal_receiver` (`None`: no receiver at all): its status and the
/// milliseconds since its last message from the primary.
pub fn judge_upstream(row: Option<(String, Option<f64>)>) -> Upstream {
    match row {
        None => Upstream::Lost("no WAL receiver runs".into()),
        Some((status, _)) if status != "streaming" => {
            Upstream::Lost(format!("the WAL receiver is {status}"))
        }
        Some((_, Some(age_ms))) if age_ms > UPSTREAM_STALE.as_millis() as f64 => Upstream::Lost(
            format!("the WAL receiver heard nothing from the primary for {age_ms:.0} ms"),
        ),
        Some(_) => Upstream::Fresh,
    }
}

impl Member {
    /// Sends reports to `notifier` from now on (in place of any earlier one).
    pub fn set_notifier(&self, notifier: Notifier) {
        *self
            .reporting
            .notifier
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(notifier);
    }

    /// Whether reports have somewhere to go.
    pub fn has_notifier(&self) -> bool {
        self.reporting
            .notifier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Reports `kind` to the controller in the background; does nothing without `--notify-url`.
    pub fn report(self: &Arc<Self>, kind: ReportKind, detail: String) {
        let notifier = self
            .reporting
            .notifier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(notifier) = notifier else {
            return;
        };
        if self.reporting.in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
            self.reporting.in_flight.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("too many reports under way; dropping {}", kind.as_str());
            return;
        }
        let member = Arc::clone(self);
        tokio::spawn(async move {
            member.send_report(&notifier, kind, detail).await;
            member.reporting.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }

    async fn send_report(self: &Arc<Self>, notifier: &Notifier, kind: ReportKind, detail: String) {
        let role = if !self.layout.is_initialized() {
            None
        } else if self.layout.is_standby() {
            Some(Role::Standby)
        } else {
            Some(Role::Primary)
        };
        let timeline = if role == Some(Role::Primary) && self.pid().is_some() {
            self.current_timeline().await
        } else {
            None
        };
        let report = MemberReport {
            kind,
            detail,
            role,
            timeline,
        };
        match notifier.send(&report).await {
            Err(e) => tracing::warn!("report {} to the controller: {e}", kind.as_str()),
            Ok(answer) => {
                tracing::info!(
                    checking = answer.checking,
                    "reported {} to the controller",
                    kind.as_str()
                );
                if answer.superseded {
                    self.fence_superseded(answer.primary.as_deref()).await;
                }
            }
        }
    }

    /// The controller says another member was promoted on a newer timeline: this primary
    /// takes no more writes. It stays fenced until the controller has it rejoin.
    async fn fence_superseded(&self, primary: Option<&str>) {
        if self.layout.is_fenced() || self.layout.is_standby() {
            return;
        }
        tracing::error!(
            "the controller records {} as the primary, on a newer timeline: this primary was \
             superseded; fencing it",
            primary.unwrap_or("another member")
        );
        self.count_self_fence();
        if let Err(e) = self.fence().await {
            tracing::error!("fence a superseded primary: {e}");
        }
    }

    async fn current_timeline(&self) -> Option<u32> {
        let ask = async {
            let client = self.query_client().await.ok()?;
            super::sql::primary_timeline(&client).await.ok().flatten()
        };
        tokio::time::timeout(FACT_TIMEOUT, ask).await.ok().flatten()
    }

    /// Runs until shutdown: a standby whose WAL receiver streamed and then stops (or stops
    /// hearing from the primary) reports `primary-lost`, once per loss.
    pub async fn watch_upstream(self: Arc<Self>) {
        let mut streamed = false;
        loop {
            tokio::time::sleep(UPSTREAM_TICK).await;
            if self.is_shutting_down() {
                return;
            }
            // Nobody to tell (yet: the controller may point reports here later).
            if !self.has_notifier() {
                continue;
            }
            if !self.layout.is_standby() || self.layout.is_fenced() || self.pid().is_none() {
                streamed = false;
                continue;
            }
            match self.upstream().await {
                Some(Upstream::Fresh) => streamed = true,
                Some(Upstream::Lost(why)) if streamed => {
                    streamed = false;
                    tracing::warn!("lost the primary: {why}");
                    self.report(ReportKind::PrimaryLost, why);
                }
                _ => {}
            }
        }
    }

    /// The WAL receiver's state; `None` when Postgres cannot be asked in time.
    async fn upstream(&self) -> Option<Upstream> {
        let ask = async {
            let client = self.query_client().await.ok()?;
            let row = client
                .query_opt(
                    "SELECT status, (extract(epoch FROM now() - last_msg_receipt_time) \
                     * 1000)::float8 FROM pg_stat_wal_receiver",
                    &[],
                )
                .await
                .ok()?;
            Some(row.map(|r| (r.get::<_, String>(0), r.get::<_, Option<f64>>(1))))
        };
        let row = tokio::time::timeout(FACT_TIMEOUT, ask).await.ok()??;
        Some(judge_upstream(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_has_lost_its_primary_when_it_no_longer_streams_fresh() {
        assert_eq!(
            judge_upstream(Some(("streaming".into(), Some(900.0)))),
            Upstream::Fresh
        );
        assert_eq!(
            judge_upstream(Some(("streaming".into(), None))),
            Upstream::Fresh
        );
        for row in [
            None,
            Some(("waiting".to_string(), Some(10.0))),
            Some(("streaming".to_string(), Some(2_500.0))),
        ] {
            assert!(
                matches!(judge_upstream(row.clone()), Upstream::Lost(_)),
                "{row:?}"
            );
        }
    }
}
