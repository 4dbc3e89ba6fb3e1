//! Activities that talk to a member's sidecar: wait until it serves in its role, set the
//! primary's synchronous standbys, and probe its health.

use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide::ActivityContext;
use serde::{Deserialize, Serialize};
use toygres_common::domain::SyncState;
use toygres_common::sidecar_api::{Role, Status};
use toygres_common::sidecar_client::SidecarClientError;
use toygres_common::SidecarClient;

use super::deps::{describe, ActivityDeps};
use crate::platform::{connect_member_superuser, Platform};

/// A client of the member's sidecar, with the instance's sidecar token.
pub(crate) async fn sidecar(
    deps: &ActivityDeps,
    instance: &str,
    member: &str,
    timeout: Duration,
) -> Result<SidecarClient, String> {
    sidecar_on(deps.platform.as_ref(), instance, member, timeout).await
}

/// [`sidecar`] with its timeout in seconds: what most activities, which wait a fixed time for one
/// call, ask for.
pub(crate) async fn sidecar_within(
    deps: &ActivityDeps,
    instance: &str,
    member: &str,
    timeout_secs: u64,
) -> Result<SidecarClient, String> {
    sidecar(deps, instance, member, Duration::from_secs(timeout_secs)).await
}

/// A client of the member's sidecar on `platform`, with the instance's sidecar token.
pub(crate) async fn sidecar_on(
    platform: &dyn Platform,
    instance: &str,
    member: &str,
    timeout: Duration,
) -> Result<SidecarClient, String> {
    crate::platform::sidecar_client(platform, instance, member, timeout)
        .await
        .map_err(describe)
}

/// What one look at a member's status decided.
pub(crate) enum Polled<T> {
    /// Done: the poll returns this.
    Done(T),
    /// Not yet: what was seen, for the error at the deadline.
    Waiting(String),
}

/// What a failed bootstrap's error starts with (the sidecar answered `bootstrap_failed`).
pub(crate) const BOOTSTRAP_FAILED: &str = "could not make its data directory";

/// Asks the member's sidecar for its status every poll interval until `look` is done with it,
/// or `timeout` passes or the activity is cancelled: then fails with the last thing seen. A
/// sidecar whose bootstrap failed (a restore with the wrong key …) fails it at once, with the
/// sidecar's reason.
pub(crate) async fn poll_status<T>(
    deps: &ActivityDeps,
    ctx: &ActivityContext,
    instance: &str,
    member: &str,
    timeout: Duration,
    mut look: impl FnMut(Result<Status, SidecarClientError>) -> Polled<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    let client = sidecar(deps, instance, member, Duration::from_secs(5)).await?;
    loop {
        let answer = client.status().await;
        if let Err(SidecarClientError::Api { code, message, .. }) = &answer {
            if code == "bootstrap_failed" {
                return Err(format!("{BOOTSTRAP_FAILED}: {message}"));
            }
        }
        let last = match look(answer) {
            Polled::Done(value) => return Ok(value),
            Polled::Waiting(last) => last,
        };
        if Instant::now() >= deadline || ctx.is_cancelled() {
            return Err(last);
        }
        tokio::time::sleep(deps.poll_interval).await;
    }
}

/// The role a member must reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpectedRole {
    /// Accepts writes.
    Primary,
    /// Streams from its primary.
    Standby,
}

/// Wait until a member serves in its role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitReadyInput {
    pub instance: String,
    pub member: String,
    pub role: ExpectedRole,
    pub timeout_secs: u64,
}

/// What a member looked like once ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReady {
    pub member: String,
    pub timeline: Option<u32>,
}

/// Whether `status` shows the member serving as `role`.
pub fn serves_as(status: &Status, role: ExpectedRole) -> bool {
    match role {
        ExpectedRole::Primary => status.running && status.role == Role::Primary,
        ExpectedRole::Standby => {
            status.running
                && status.role == Role::Standby
                && status.wal_receiver_status.as_deref() == Some("streaming")
        }
    }
}

/// Polls the member's sidecar until it serves in the expected role (a primary accepting
/// writes, a standby streaming), failing after the deadline with the last thing it saw.
pub async fn wait_member_ready(
    deps: Arc<ActivityDeps>,
    ctx: ActivityContext,
    input: WaitReadyInput,
) -> Result<MemberReady, String> {
    let timeout = Duration::from_secs(input.timeout_secs);
    poll_status(
        &deps,
        &ctx,
        &input.instance,
        &input.member,
        timeout,
        |answer| match answer {
            Ok(status) if serves_as(&status, input.role) => Polled::Done(MemberReady {
                member: input.member.clone(),
                timeline: status.timeline,
            }),
            Ok(status) => Polled::Waiting(format!(
                "role {:?}, running {}, WAL receiver {}",
                status.role,
                status.running,
                status.wal_receiver_status.as_deref().unwrap_or("none")
            )),
            Err(e) => Polled::Waiting(e.to_string()),
        },
    )
    .await
    .map_err(|last| {
        if last.starts_with(BOOTSTRAP_FAILED) {
            format!("member {} {last}", input.member)
        } else {
            format!(
                "member {} did not become a ready {:?} within {} s: {last}",
                input.member, input.role, input.timeout_secs
            )
        }
    })
}

/// Wait until the primary reports a synchronous standby.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitSyncInput {
    pub instance: String,
    pub primary: String,
    pub timeout_secs: u64,
}

/// Polls the primary until one of its standbys is `sync` (or `quorum`); returns that standby's
/// name.
pub async fn wait_sync_standby(
    deps: Arc<ActivityDeps>,
    ctx: ActivityContext,
    input: WaitSyncInput,
) -> Result<String, String> {
    let timeout = Duration::from_secs(input.timeout_secs);
    poll_status(
        &deps,
        &ctx,
        &input.instance,
        &input.primary,
        timeout,
        |answer| {
            let status = match answer {
                Ok(status) => status,
                Err(e) => return Polled::Waiting(e.to_string()),
            };
            // `quorum` under ANY n: each of them counts towards confirming commits.
            match status
                .standbys
                .iter()
                .find(|s| SyncState::text_confirms_commits(&s.sync_state))
            {
                Some(sync) => Polled::Done(sync.application_name.clone()),
                None => Polled::Waiting(format!(
                    "standbys {:?}, synchronous_standby_names {:?}",
                    status
                        .standbys
                        .iter()
                        .map(|s| format!("{}={}", s.application_name, s.sync_state))
                        .collect::<Vec<_>>(),
                    status.synchronous_standby_names
                )),
            }
        },
    )
    .await
    .map_err(|last| {
        format!(
            "no standby of {} became synchronous within {} s: {last}",
            input.primary, input.timeout_secs
        )
    })
}

/// Probe one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeInput {
    pub instance: String,
    pub member: String,
    /// The instance's custom health query, run when the member is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_query: Option<String>,
    /// The probe's deadline in milliseconds (the controller's probe timeout when absent, or
    /// when shorter): past it the member is unreachable, whatever it is doing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// How a member's custom health query went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub ok: bool,
    /// Why not, or what it returned.
    pub message: String,
}

/// What a probe saw of a member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub member: String,
    /// The sidecar answered and Postgres runs.
    pub healthy: bool,
    /// `primary`, `standby` or `unknown`, when the sidecar answered.
    pub role: Option<Role>,
    pub timeline: Option<u32>,
    /// The primary's current LSN or the standby's replay LSN.
    pub lsn: Option<String>,
    /// Standby: replay lag in bytes.
    pub lag_bytes: Option<u64>,
    /// Standby: replay lag in seconds (0 when replay has caught up with what it received).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// Primary: its standbys' sync states, `name=state` (`db-1=sync`).
    pub standbys: Vec<String>,
    /// The member's own sync state as its primary reports it (filled in by the actor).
    pub sync_state: Option<String>,
    /// Primary: its synchronous replication degraded to asynchronous.
    #[serde(default)]
    pub sync_degraded: bool,
    /// The custom health query's outcome, when there is one and the member is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckResult>,
    /// The data directory's file system: bytes free (for Postgres) and in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_available_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_total_bytes: Option<u64>,
    pub latency_ms: f64,
    pub error: Option<String>,
}

impl ProbeResult {
    /// A member whose sidecar did not answer (`error` says how), after `latency_ms`.
    pub fn unreachable(member: &str, error: String, latency_ms: f64) -> Self {
        ProbeResult {
            member: member.to_string(),
            healthy: false,
            role: None,
            timeline: None,
            lsn: None,
            lag_bytes: None,
            lag_seconds: None,
            standbys: Vec::new(),
            sync_state: None,
            sync_degraded: false,
            check: None,
            disk_available_bytes: None,
            disk_total_bytes: None,
            latency_ms,
            error: Some(error),
        }
    }

    /// Primary: its standbys and their sync states, as `(name, state)`.
    pub fn standby_states(&self) -> impl Iterator<Item = (&str, &str)> {
        self.standbys.iter().filter_map(|s| s.split_once('='))
    }
}

/// Asks the member's sidecar for its status. Never fails: an unreachable sidecar, or one that
/// does not answer within the probe's deadline (a frozen member), is an unhealthy result, not an
/// activity error, so no member holds up a health round.
pub async fn probe_member(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: ProbeInput,
) -> Result<ProbeResult, String> {
    Ok(probe(&deps, &input).await)
}

/// One probe of a member (the activity's body; the fast path's prober calls it directly).
pub async fn probe(deps: &ActivityDeps, input: &ProbeInput) -> ProbeResult {
    let started = Instant::now();
    let deadline = probe_deadline(deps.probe_timeout, input.timeout_ms);
    let asked = async {
        let client = match deps.probe_clients.get(&input.instance, &input.member) {
            Some(kept) => kept,
            None => {
                let made =
                    sidecar(deps, &input.instance, &input.member, deps.probe_timeout).await?;
                deps.probe_clients
                    .keep(&input.instance, &input.member, made.clone());
                made
            }
        };
        client.status().await.map_err(|e| e.to_string())
    };
    let status = match tokio::time::timeout(deadline, asked).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("no answer within {} ms", deadline.as_millis())),
    };
    if status.is_err() {
        // The next probe starts afresh: the member may have moved, or its connection be dead.
        deps.probe_clients.forget(&input.instance, &input.member);
    }
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut result = match status {
        Ok(status) => ProbeResult {
            member: input.member.clone(),
            healthy: status.running && !status.fenced,
            role: Some(status.role),
            timeline: status.timeline,
            lsn: status.current_lsn.or(status.replay_lsn),
            lag_bytes: status.lag_bytes,
            lag_seconds: status.lag_seconds,
            standbys: status
                .standbys
                .iter()
                .map(|s| format!("{}={}", s.application_name, s.sync_state))
                .collect(),
            sync_state: None,
            sync_degraded: status.sync_degraded,
            check: None,
            disk_available_bytes: status.disk.map(|d| d.available_bytes),
            disk_total_bytes: status.disk.map(|d| d.total_bytes),
            latency_ms,
            error: (!status.running).then(|| "Postgres is not running".to_string()),
        },
        Err(error) => ProbeResult::unreachable(&input.member, error, latency_ms),
    };
    if let (true, Some(query)) = (result.healthy, &input.health_query) {
        result.check =
            Some(run_health_query(deps, &input.instance, &input.member, query, deadline).await);
    }
    deps.metrics.record_health_check(result.healthy);
    result
}

/// A probe's deadline: the one asked for, never longer than the controller's probe timeout,
/// never under 50 ms.
pub fn probe_deadline(probe_timeout: Duration, asked_ms: Option<u64>) -> Duration {
    asked_ms
        .map(Duration::from_millis)
        .map_or(probe_timeout, |asked| asked.min(probe_timeout))
        .max(Duration::from_millis(50))
}

/// Runs the custom health query on the member's Postgres as the superuser (scram over TCP),
/// within the probe timeout. `false` in the first column, or an error, fails the check.
async fn run_health_query(
    deps: &ActivityDeps,
    instance: &str,
    member: &str,
    query: &str,
    deadline: Duration,
) -> CheckResult {
    let attempt = async {
        let (client, connection) =
            connect_member_superuser(deps.platform.as_ref(), instance, member, "toygres-health")
                .await
                .map_err(describe)?;
        let rows = client.simple_query(query).await.map_err(|e| format!("{e}"));
        drop(client);
        let _ = connection.await;
        let first = rows?.into_iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        });
        Ok::<_, String>(first)
    };
    match tokio::time::timeout(deadline, attempt).await {
        Err(_) => CheckResult {
            ok: false,
            message: format!("no answer within {deadline:?}"),
        },
        Ok(Err(e)) => CheckResult {
            ok: false,
            message: e,
        },
        Ok(Ok(Some(value))) if value == "f" || value == "false" => CheckResult {
            ok: false,
            message: format!("returned {value}"),
        },
        Ok(Ok(value)) => CheckResult {
            ok: true,
            message: format!("returned {}", value.as_deref().unwrap_or("no rows")),
        },
    }
}

/// Drop a removed standby's replication slot on the primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropSlotInput {
    pub instance: String,
    pub primary: String,
    /// The standby that left.
    pub member: String,
    pub timeout_secs: u64,
}

/// Drops `member`'s slot on the primary, so it stops keeping WAL for a standby that is gone.
/// The slot stays busy for a moment after the standby stops (its WAL sender exits): retried
/// until the deadline. An absent slot is success.
pub async fn drop_slot(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: DropSlotInput,
) -> Result<(), String> {
    let client = sidecar_within(&deps, &input.instance, &input.primary, 30).await?;
    let deadline = Instant::now() + Duration::from_secs(input.timeout_secs);
    loop {
        match client.drop_slot(&input.member).await {
            Ok(_) => return Ok(()),
            Err(e) if e.status() == Some(409) && Instant::now() < deadline => {
                tokio::time::sleep(deps.poll_interval).await;
            }
            Err(e) => return Err(describe(e)),
        }
    }
}
