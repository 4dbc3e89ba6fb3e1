//! The fast path of health (issue 17): one task in the controller probes every running
//! instance's members each health interval, outside any orchestration's history, and wakes an
//! instance's actor (`CheckNow`) only when something matters — a member's health, role,
//! timeline, lag class, check or disk changed, the instance's settings or members changed, or
//! the instance is unhealthy when first seen. The actor then runs its durable round and makes
//! its decisions exactly as before; while the instance stays quiet it sleeps its quiet interval
//! ([`QUIET_INTERVAL_MS`], longer in a large fleet: [`quiet_interval_ms`]), a safety net.
//!
//! A probe that failed wakes the actor again at most every [`NUDGE_EVERY`] health intervals
//! while it keeps failing, so an actor that missed the change (its own round saw the member
//! answer) counts the failures at its normal speed instead of after its quiet interval.
//!
//! An actor is never woken twice for one round: while a wake-up it has not taken is queued, or
//! while its round runs (begun, not yet recorded), what would wake it is owed and sent once
//! that round is over (each queued `CheckNow` is a full durable round; under load the rounds
//! queued behind each other and fed themselves). And a probe that timed out while the prober
//! itself runs late (its pass began late or the last pass outlasted the interval: the
//! controller is starved of CPU, and the deadline says more about it than about the member)
//! counts only when the next pass's probe fails too; a refused connection counts at once, and
//! so does a timeout when the prober is on time, so a kill or freeze is seen as fast as before.
//!
//! The rounds that change nothing are written to the CMS here, batched per pass: member health
//! and the check history (no events; the instance's health stays its actor's) at most once per
//! [`RECORD_EVERY`] per instance, and otherwise only the time of the check (one statement),
//! so `toygres get`'s last check stays one interval old. Each member's probe has a deadline
//! under half the interval and the instances are checked concurrently: a frozen member delays
//! nobody's pass. Nothing here decides anything: a missed wake-up costs at most the quiet
//! interval.
//!
//! [`QUIET_INTERVAL_MS`]: crate::activities::members::QUIET_INTERVAL_MS
//! [`quiet_interval_ms`]: crate::activities::members::quiet_interval_ms

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide::Client;
use futures::StreamExt as _;
use toygres_common::domain::{InstanceHealth, InstanceState, Role};

use crate::activities::members::{actor_view, ActorView};
use crate::activities::records::{member_checks, ActorRef, HealthReport};
use crate::activities::sidecar::{probe, ProbeInput, ProbeResult};
use crate::activities::ActivityDeps;
use crate::endpoints::ro_rule::LagRule;
use crate::metrics::Wakeup;
use crate::orchestrations::instance_actor::health_round::round_deadline_ms;
use crate::orchestrations::instance_actor::{assess, ActorCommand, ActorState, COMMANDS_QUEUE};

/// How long an instance's view (members, settings) is used before it is read again.
const VIEW_REFRESH: Duration = Duration::from_secs(10);
/// How often a quiet instance's health is written to the CMS.
pub const RECORD_EVERY: Duration = Duration::from_secs(5);
/// Instances checked at once.
const CONCURRENCY: usize = 64;
/// While a probe keeps failing, the actor is woken again after this many health intervals.
pub const NUDGE_EVERY: u32 = 3;
/// A wake-up the actor has not taken yet (it began no round since) is not repeated for this
/// many health intervals: its round will see the latest anyway, and wake-ups piling up in a
/// busy actor's queue would each cost a round (under load, a feedback loop that starved the
/// failovers of a 100-instance fleet).
pub const WAKE_PATIENCE: u32 = 30;
/// A pass that begins this fraction of the interval late (or follows a pass longer than the
/// interval) runs overloaded: its timed-out probes need a second pass to count.
const LATE_DIVISOR: u32 = 2;

/// What the prober remembers of one instance.
#[derive(Debug, Clone)]
struct Watched {
    actor_id: String,
    view: ActorView,
    view_read: Instant,
    /// The members as last assessed (for the lag bounds' hysteresis).
    memory: ActorState,
    /// What the last pass saw that matters.
    digest: Option<Digest>,
    recorded: Option<Instant>,
    /// When the actor was last woken.
    woken: Option<Instant>,
    /// A wake-up was withheld (one was queued or a round ran): it is sent once that is over.
    owed: bool,
    /// Members whose probe timed out in an overloaded pass, not yet corroborated.
    suspect: Vec<String>,
}

/// What a pass does for one instance besides waking its actor.
#[derive(Debug)]
enum Write {
    Nothing,
    /// Its full health (due).
    Record(HealthReport),
    /// Only the time of the check.
    Touch(String),
}

/// What of a pass matters to the actor: a change wakes it.
#[derive(Debug, Clone, PartialEq)]
struct Digest {
    health: InstanceHealth,
    members: Vec<MemberDigest>,
}

#[derive(Debug, Clone, PartialEq)]
struct MemberDigest {
    member: String,
    healthy: bool,
    lagging: bool,
    check_failed: bool,
    disk_low: bool,
    role: Option<Role>,
    timeline: Option<u32>,
    /// Primary: its standbys and their sync states, sorted.
    standbys: Vec<String>,
    sync_degraded: bool,
}

/// Starts the prober; it runs until the task is aborted.
pub fn spawn(
    deps: Arc<ActivityDeps>,
    client: Client,
    max_lag_bytes: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let interval = Duration::from_millis(deps.health_interval_ms.max(100));
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watched: BTreeMap<String, Watched> = BTreeMap::new();
        let mut last_pass = Duration::ZERO;
        loop {
            let due = ticks.tick().await;
            let began = tokio::time::Instant::now();
            let overloaded = overloaded(began.saturating_duration_since(due), last_pass, interval);
            let passed = pass(
                &deps,
                &client,
                max_lag_bytes,
                interval,
                overloaded,
                &mut watched,
            )
            .await;
            last_pass = began.elapsed();
            if let Err(e) = passed {
                tracing::warn!("health fast path: {e}");
            }
        }
    })
}

/// What one pass knows of itself, for each of its checks.
#[derive(Debug, Clone, Copy)]
struct PassFacts {
    max_lag_bytes: u64,
    interval: Duration,
    /// The prober runs late: a timed-out probe needs a second pass to count.
    overloaded: bool,
}

/// Whether a pass that began `late` after its tick, after a pass that took `last_pass`, runs
/// on a starved controller.
fn overloaded(late: Duration, last_pass: Duration, interval: Duration) -> bool {
    late >= interval / LATE_DIVISOR || last_pass > interval
}

/// One pass over every running instance.
async fn pass(
    deps: &ActivityDeps,
    client: &Client,
    max_lag_bytes: u64,
    interval: Duration,
    overloaded: bool,
    watched: &mut BTreeMap<String, Watched>,
) -> Result<(), String> {
    let instances = deps
        .cms
        .live_instances()
        .await
        .map_err(|e| format!("list the instances: {e:#}"))?;
    let running: Vec<(String, String)> = instances
        .into_iter()
        .filter(|i| i.summary.parsed_state() == Some(InstanceState::Running))
        .filter_map(|i| Some((i.summary.name.clone(), i.actor_id?)))
        .collect();
    deps.watched_instances
        .store(running.len(), std::sync::atomic::Ordering::Relaxed);
    let mut before = std::mem::take(watched);
    let facts = PassFacts {
        max_lag_bytes,
        interval,
        overloaded,
    };
    let checks = running.into_iter().map(|(name, actor_id)| {
        let previous = before.remove(&name);
        async move {
            let kept = check(deps, client, facts, &name, actor_id, previous).await;
            (name, kept)
        }
    });
    let results: Vec<(String, (Option<Watched>, Write))> = futures::stream::iter(checks)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut reports = Vec::new();
    let mut touched = Vec::new();
    for (name, (kept, write)) in results {
        match write {
            Write::Nothing => {}
            Write::Record(report) => reports.push(report),
            Write::Touch(instance) => touched.push(instance),
        }
        if let Some(kept) = kept {
            watched.insert(name, kept);
        }
    }
    if let Ok(mut rounds) = deps.rounds_begun.lock() {
        rounds.retain(|instance, _| watched.contains_key(instance));
    }
    if let Ok(mut rounds) = deps.rounds_ended.lock() {
        rounds.retain(|instance, _| watched.contains_key(instance));
    }
    deps.probe_clients.retain(|instance, member| {
        watched
            .get(instance)
            .is_some_and(|w| w.view.members.iter().any(|m| m == member))
    });
    // Members and history only: the instance's health is its actor's to write (this pass may
    // judge with a view up to VIEW_REFRESH old, e.g. before a new health query).
    let checks: Vec<_> = reports.iter().flat_map(member_checks).collect();
    let recorded = deps.cms.record_health_batch(&checks, &[]).await;
    if let Err(e) = &recorded {
        tracing::debug!("health fast path: record the health: {e}");
    }
    for report in &reports {
        touched.push(report.instance.clone());
        if let Some(w) = watched.get_mut(&report.instance) {
            w.recorded = recorded.is_ok().then(Instant::now);
        }
    }
    if let Err(e) = deps.cms.touch_last_check(&touched).await {
        tracing::debug!("health fast path: record the time of the checks: {e}");
    }
    Ok(())
}

/// Probes one instance and wakes its actor when that matters. Returns what to remember (`None`:
/// the instance is not watched now, its view unreadable or its actor replaced) and what to
/// write for it.
async fn check(
    deps: &ActivityDeps,
    client: &Client,
    facts: PassFacts,
    instance: &str,
    actor_id: String,
    previous: Option<Watched>,
) -> (Option<Watched>, Write) {
    let PassFacts {
        max_lag_bytes,
        interval,
        overloaded,
    } = facts;
    let previous = previous.filter(|w| w.actor_id == actor_id);
    let mut settings_changed = false;
    let mut watched = match previous {
        Some(w) if w.view_read.elapsed() < VIEW_REFRESH => w,
        previous => {
            let owner = ActorRef {
                instance: instance.to_string(),
                actor_id: actor_id.clone(),
            };
            let view = match actor_view(deps, &owner).await {
                Ok(Some(view)) => view,
                Ok(None) => return (None, Write::Nothing),
                Err(e) => {
                    tracing::debug!(instance, "health fast path: read the view: {e}");
                    return (previous, Write::Nothing);
                }
            };
            match previous {
                Some(mut w) => {
                    settings_changed = settings_differ(&w.view, &view);
                    w.view = view;
                    w.view_read = Instant::now();
                    w
                }
                None => Watched {
                    actor_id,
                    view,
                    view_read: Instant::now(),
                    memory: ActorState::default(),
                    digest: None,
                    recorded: None,
                    woken: None,
                    owed: false,
                    suspect: Vec::new(),
                },
            }
        }
    };
    let view = &watched.view;
    let deadline_ms = round_deadline_ms(view.ha.check_timeout_ms, interval);
    let probes: Vec<ProbeResult> = futures::future::join_all(view.members.iter().map(|member| {
        let input = ProbeInput {
            instance: instance.to_string(),
            member: member.clone(),
            health_query: view.ha.health_query.clone(),
            timeout_ms: Some(deadline_ms),
        };
        async move { probe(deps, &input).await }
    }))
    .await;
    // Overloaded: a member that answered last time and timed out now is looked at again next
    // pass before anything is made of it.
    let timed_out: Vec<String> = probes
        .iter()
        .filter(|p| !p.healthy && p.latency_ms >= deadline_ms as f64 * 0.9)
        .filter(|p| answered_before(watched.digest.as_ref(), &p.member))
        .map(|p| p.member.clone())
        .collect();
    if overloaded && timed_out.iter().any(|m| !watched.suspect.contains(m)) {
        deps.metrics.record_wakeup(Wakeup::Uncorroborated);
        watched.suspect = timed_out;
        return (Some(watched), Write::Nothing);
    }
    watched.suspect.clear();
    let lag_rule = LagRule {
        settings: view.ro.clone(),
        default_bytes: max_lag_bytes,
        member_bytes: view.lag_bounds.clone(),
    };
    let assessment = assess(&watched.memory, probes, &lag_rule);
    let digest = digest_of(&assessment.state, &assessment.probes, assessment.health);
    let changed = match &watched.digest {
        Some(before) => *before != digest,
        None => assessment.health != InstanceHealth::Healthy,
    };
    // A probe still failing: the actor may not know (its own round saw the member answer).
    let nudge = assessment.probes.iter().any(|p| !p.healthy)
        && watched
            .woken
            .is_none_or(|t| t.elapsed() >= interval * NUDGE_EVERY);
    watched.memory.members = assessment.state.members.clone();
    watched.digest = Some(digest);
    let busy = busy(
        watched.woken,
        deps.round_begun(instance),
        deps.round_ended(instance),
        interval * WAKE_PATIENCE,
    );
    if busy {
        // A wake-up is queued (its round sees this) or a round runs (it may have probed
        // before this): nothing more is queued now; a change is owed for after the round.
        if changed || settings_changed {
            watched.owed = true;
            deps.metrics.record_wakeup(Wakeup::Withheld);
        }
        return (Some(watched), Write::Nothing);
    }
    if changed || settings_changed || nudge || watched.owed {
        let command = serde_json::to_string(&ActorCommand::CheckNow).unwrap_or_default();
        match client
            .enqueue_event(&watched.actor_id, COMMANDS_QUEUE, command)
            .await
        {
            Ok(()) => {
                watched.woken = Some(Instant::now());
                watched.owed = false;
                deps.metrics.record_wakeup(Wakeup::Sent);
            }
            Err(e) => tracing::warn!(instance, "health fast path: wake the actor: {e}"),
        }
        // Its round records this.
        watched.recorded = Some(Instant::now());
        return (Some(watched), Write::Nothing);
    }
    if assessment.health != InstanceHealth::Healthy {
        // Its actor runs (and records) every round while it is not healthy.
        return (Some(watched), Write::Nothing);
    }
    let due = watched.recorded.is_none_or(|t| t.elapsed() >= RECORD_EVERY);
    let write = if due {
        Write::Record(HealthReport {
            instance: instance.to_string(),
            health: assessment.health,
            probes: assessment.probes,
            events: Vec::new(),
            ro: None,
        })
    } else {
        Write::Touch(instance.to_string())
    };
    (Some(watched), write)
}

/// Whether the actor must not be woken now: a wake-up sent at `woken` is not taken yet (no
/// round began since), or a round began and has not recorded its health. Either holds at most
/// `patience` (a wake-up lost with a replaced actor, a round that failed before recording).
fn busy(
    woken: Option<Instant>,
    begun: Option<Instant>,
    ended: Option<Instant>,
    patience: Duration,
) -> bool {
    let queued =
        woken.is_some_and(|woken| woken.elapsed() < patience && begun.is_none_or(|b| b < woken));
    let running = begun.is_some_and(|b| b.elapsed() < patience && ended.is_none_or(|e| e < b));
    queued || running
}

/// Whether the last pass saw `member` answer.
fn answered_before(digest: Option<&Digest>, member: &str) -> bool {
    digest.is_some_and(|d| d.members.iter().any(|m| m.member == member && m.healthy))
}

/// Whether the instance's settings or members differ between two reads of its view. The quiet
/// interval is no setting: every read draws it afresh (jittered), so comparing it woke every
/// quiet actor at every view refresh — a full durable round per instance every
/// [`VIEW_REFRESH`], the larger part of the CMS's work in a quiet fleet.
fn settings_differ(before: &ActorView, now: &ActorView) -> bool {
    let settings = |view: &ActorView| ActorView {
        quiet_interval_ms: None,
        ..view.clone()
    };
    settings(before) != settings(now)
}

fn digest_of(state: &ActorState, probes: &[ProbeResult], health: InstanceHealth) -> Digest {
    let members = probes
        .iter()
        .map(|p| {
            let seen = state.members.get(&p.member);
            let mut standbys = p.standbys.clone();
            standbys.sort();
            MemberDigest {
                member: p.member.clone(),
                healthy: p.healthy,
                lagging: seen.is_some_and(|s| s.lagging),
                check_failed: seen.is_some_and(|s| s.check_failed),
                disk_low: seen.is_some_and(|s| s.disk_low),
                role: p.role,
                timeline: p.timeline,
                standbys,
                sync_degraded: p.sync_degraded,
            }
        })
        .collect();
    Digest { health, members }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn view(quiet_interval_ms: Option<u64>) -> ActorView {
        let mut view: ActorView = serde_json::from_value(serde_json::json!({
            "members": ["db-1", "db-2"],
            "primary": "db-1",
            "replication_mode": "async",
            "ha": {},
            "rejoining": [],
        }))
        .unwrap();
        view.quiet_interval_ms = quiet_interval_ms;
        view
    }

    #[test]
    fn an_actor_is_not_woken_while_its_wake_up_is_queued_or_its_round_runs() {
        let patience = Duration::from_secs(30);
        let ago = |s: u64| Instant::now().checked_sub(Duration::from_secs(s));
        // Never woken, no round: free.
        assert!(!busy(None, None, None, patience));
        // Woken, no round since: queued.
        assert!(busy(ago(5), None, None, patience));
        assert!(busy(ago(5), ago(8), ago(7), patience));
        // Woken, its round began and has not recorded: running.
        assert!(busy(ago(5), ago(3), ago(7), patience));
        // Woken, its round began and recorded: free.
        assert!(!busy(ago(5), ago(3), ago(2), patience));
        // A round of its own (a timer) runs: not woken on top of it.
        assert!(busy(None, ago(1), None, patience));
        assert!(busy(None, ago(1), ago(10), patience));
        // Patience: a wake-up never taken, a round never recorded, no longer hold.
        assert!(!busy(ago(40), None, None, patience));
        assert!(!busy(None, ago(40), None, patience));
    }

    #[test]
    fn a_late_pass_or_a_long_one_is_overloaded() {
        let second = Duration::from_secs(1);
        assert!(!overloaded(
            Duration::from_millis(20),
            Duration::from_millis(300),
            second
        ));
        assert!(overloaded(
            Duration::from_millis(600),
            Duration::from_millis(300),
            second
        ));
        assert!(overloaded(
            Duration::ZERO,
            Duration::from_millis(1_400),
            second
        ));
    }

    #[test]
    fn a_new_draw_of_the_quiet_interval_is_no_settings_change() {
        assert!(!settings_differ(&view(Some(30_000)), &view(Some(36_123))));
        assert!(!settings_differ(&view(None), &view(Some(30_000))));
        let mut other = view(Some(30_000));
        other.members.push("db-3".into());
        assert!(settings_differ(&view(Some(30_000)), &other));
        let mut other = view(Some(30_000));
        other.ha.failover_enabled = !other.ha.failover_enabled;
        assert!(settings_differ(&view(Some(30_000)), &other));
    }
}
