//! Activities of switchover, failover and rejoin: survey the members, fence the old primary,
//! promote a standby, point the others at it, rejoin the old primary as a standby, and record
//! the new roles. Each is idempotent: fencing a fenced member, promoting a primary or rejoining
//! a streaming standby succeed without doing anything.

use std::sync::Arc;
use std::time::Duration;

use duroxide::ActivityContext;
use serde::{Deserialize, Serialize};
use toygres_common::sidecar_api::{
    parse_lsn, DemoteRequest, PromoteRequest, ReplicationRequest, Role, Status, SyncPolicy,
};

use super::deps::{describe, ActivityDeps};
use super::sidecar::{poll_status, sidecar, sidecar_within, Polled};
use crate::platform::{Bootstrap, MemberSpec, Placement, SecretRefs};
use toygres_common::sidecar_client::SidecarClientError;

/// Survey some members of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurveyInput {
    pub instance: String,
    pub members: Vec<String>,
    pub timeout_ms: u64,
}

/// One member as its sidecar described itself (or did not).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberSurvey {
    pub member: String,
    /// The sidecar answered.
    pub reachable: bool,
    /// Postgres runs (and the member is not fenced).
    pub running: bool,
    pub fenced: bool,
    /// `primary`, `standby` or `unknown`.
    pub role: Option<Role>,
    pub timeline: Option<u32>,
    /// Primary: its current WAL position.
    pub current_lsn: Option<u64>,
    /// Standby: WAL received (flushed) and replayed.
    pub receive_lsn: Option<u64>,
    pub replay_lsn: Option<u64>,
    /// Standby: its WAL receiver streams.
    pub streaming: bool,
    /// Standby: seconds since it last heard from its primary.
    pub primary_last_contact_seconds: Option<f64>,
    /// Standby: the primary it follows.
    pub upstream: Option<toygres_common::names::PgAddress>,
    /// Primary: its standbys as `(name, sync_state, flush LSN)`.
    pub standbys: Vec<(String, String, Option<u64>)>,
    /// Primary: synchronous replication degraded to asynchronous.
    pub sync_degraded: bool,
    pub error: Option<String>,
}

impl MemberSurvey {
    /// How far this member's WAL goes: a primary's current position, a standby's received one.
    pub fn wal_position(&self) -> Option<u64> {
        self.current_lsn.or(self.receive_lsn).or(self.replay_lsn)
    }

    fn from_status(member: &str, status: &Status) -> Self {
        let lsn = |v: &Option<String>| v.as_deref().and_then(parse_lsn);
        MemberSurvey {
            member: member.to_string(),
            reachable: true,
            running: status.running && !status.fenced,
            fenced: status.fenced,
            role: Some(status.role),
            timeline: status.timeline,
            current_lsn: lsn(&status.current_lsn),
            receive_lsn: lsn(&status.receive_lsn),
            replay_lsn: lsn(&status.replay_lsn),
            streaming: status.wal_receiver_status.as_deref() == Some("streaming"),
            primary_last_contact_seconds: status.primary_last_contact_seconds,
            upstream: status.primary.clone(),
            standbys: status
                .standbys
                .iter()
                .map(|s| {
                    (
                        s.application_name.clone(),
                        s.sync_state.clone(),
                        s.flush_lsn.as_deref().and_then(parse_lsn),
                    )
                })
                .collect(),
            sync_degraded: status.sync_degraded,
            error: None,
        }
    }
}

/// Asks every member's sidecar for its status at once. Never fails: a member that does not
/// answer within the timeout is reported unreachable.
pub async fn survey_members(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: SurveyInput,
) -> Result<Vec<MemberSurvey>, String> {
    let timeout = Duration::from_millis(input.timeout_ms.max(50));
    let asks = input.members.iter().map(|member| {
        let deps = &deps;
        let instance = &input.instance;
        async move {
            let status = match sidecar(deps, instance, member, timeout).await {
                Ok(client) => tokio::time::timeout(timeout, client.status())
                    .await
                    .map_err(|_| format!("no answer within {timeout:?}"))
                    .and_then(|r| r.map_err(|e| e.to_string())),
                Err(e) => Err(e),
            };
            match status {
                Ok(status) => MemberSurvey::from_status(member, &status),
                Err(error) => MemberSurvey {
                    member: member.clone(),
                    error: Some(error),
                    ..MemberSurvey::default()
                },
            }
        }
    });
    Ok(futures::future::join_all(asks).await)
}

/// Fence a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceInput {
    pub instance: String,
    pub member: String,
    /// How long the sidecar may take to answer before the platform kills the member instead.
    pub timeout_ms: u64,
    /// Kill it through the platform at once, without asking its sidecar first: an automatic
    /// failover of a synchronous primary that failed its checks (its sidecar rarely answers,
    /// and a clean stop hands no acknowledged commit to anyone that a kill would lose).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub platform_first: bool,
}

/// How a member was fenced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fenced {
    /// `sidecar` (clean stop, kept stopped) or `platform` (killed and kept down).
    pub method: String,
    /// The WAL position the member reported just before it was stopped, when it answered.
    pub last_lsn: Option<u64>,
    /// Why the sidecar could not do it, when the platform did.
    pub sidecar_error: Option<String>,
}

/// Stops the member's Postgres and keeps it stopped: through its sidecar (a clean shutdown,
/// which first sends the remaining WAL to the connected standbys), or, when the sidecar does
/// not answer, through the platform (killed, and marked fenced so it cannot come back as a
/// primary).
pub async fn fence_member(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: FenceInput,
) -> Result<Fenced, String> {
    let timeout = Duration::from_millis(input.timeout_ms.max(100));
    if input.platform_first {
        deps.platform
            .kill_member(&input.instance, &input.member)
            .await
            .map_err(describe)?;
        return Ok(Fenced {
            method: "platform".into(),
            last_lsn: None,
            sidecar_error: None,
        });
    }
    let attempt = async {
        let client = sidecar(&deps, &input.instance, &input.member, timeout).await?;
        let before = client.status().await.map_err(|e| e.to_string())?;
        let last_lsn = before.current_lsn.as_deref().and_then(parse_lsn);
        // A clean stop may take longer than a status call.
        let stopper = sidecar(&deps, &input.instance, &input.member, timeout * 30).await?;
        stopper.fence().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(last_lsn)
    };
    let error = match attempt.await {
        Ok(last_lsn) => {
            return Ok(Fenced {
                method: "sidecar".into(),
                last_lsn,
                sidecar_error: None,
            })
        }
        Err(e) => e,
    };
    tracing::warn!(
        instance = input.instance,
        member = input.member,
        "the sidecar did not fence the member ({error}); killing it through the platform"
    );
    deps.platform
        .kill_member(&input.instance, &input.member)
        .await
        .map_err(describe)?;
    Ok(Fenced {
        method: "platform".into(),
        last_lsn: None,
        sidecar_error: Some(error),
    })
}

/// Promote a standby.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteInput {
    pub instance: String,
    pub member: String,
    /// The old primary is fenced (stopped or killed): skip the sidecar's check that the
    /// primary it streamed from is gone (a cut-off primary's address does not answer at all,
    /// and that check waited a second for it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// The new primary's synchronous replication policy, in force before it takes a write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncPolicy>,
}

/// What a promotion produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promoted {
    pub timeline: u32,
    pub lsn: Option<u64>,
    pub duration_ms: u64,
    /// The input's policy was set before the promotion (else the caller sets it after).
    #[serde(default)]
    pub sync_set: bool,
}

/// Promotes the member (it replays all the WAL it received first). A member that is already a
/// primary succeeds.
pub async fn promote_member(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: PromoteInput,
) -> Result<Promoted, String> {
    let client = sidecar_within(&deps, &input.instance, &input.member, 120).await?;
    let mut request = PromoteRequest {
        force: input.force,
        sync: input.sync.clone(),
    };
    let mut promoted = client.promote_with(&request).await;
    if request.sync.is_some()
        && matches!(&promoted, Err(e) if matches!(e.status(), Some(400 | 422)))
    {
        // A sidecar of an earlier version takes no policy: promoted without it, the caller
        // sets it after (as before).
        request.sync = None;
        promoted = client.promote_with(&request).await;
    }
    match promoted {
        Ok(promoted) => Ok(Promoted {
            timeline: promoted.timeline,
            lsn: parse_lsn(&promoted.lsn),
            duration_ms: promoted.duration_ms,
            sync_set: request.sync.is_some() && promoted.sync_set,
        }),
        // Run again after a crash of the controller: the first run did it.
        Err(e) if e.status() == Some(409) => {
            let status = client.status().await.map_err(describe)?;
            if status.running && status.role == Role::Primary {
                Ok(Promoted {
                    timeline: status.timeline.unwrap_or(0),
                    lsn: status.current_lsn.as_deref().and_then(parse_lsn),
                    duration_ms: 0,
                    sync_set: false,
                })
            } else {
                Err(describe(e))
            }
        }
        Err(e) => Err(describe(e)),
    }
}

/// Lets a fenced member serve again (a switchover that failed gives the old primary its role
/// back).
pub async fn unfence_member(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: PromoteInput,
) -> Result<(), String> {
    let client = sidecar_within(&deps, &input.instance, &input.member, 120).await?;
    client.unfence().await.map_err(describe)?;
    Ok(())
}

/// Point a standby at a (new) primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepointInput {
    pub instance: String,
    pub member: String,
    pub primary: String,
}

/// What became of a standby pointed at a new primary: it streams from it, or it cannot follow
/// without a rewind (its WAL went past the new primary's fork), and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repointed {
    pub diverged: Option<String>,
}

/// Makes the standby follow `primary` (it switches timeline by itself). A standby whose WAL
/// went past the fork is left as it is and reported diverged: it needs a rejoin (pg_rewind).
pub async fn repoint_standby(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: RepointInput,
) -> Result<Repointed, String> {
    let primary = deps
        .platform
        .member_address(&input.instance, &input.primary)
        .await
        .map_err(describe)?;
    let client = sidecar_within(&deps, &input.instance, &input.member, 30).await?;
    let answer = client
        .set_replication(&ReplicationRequest {
            primary: Some(primary.pg),
            ..ReplicationRequest::default()
        })
        .await;
    match answer {
        Ok(_) => Ok(Repointed { diverged: None }),
        Err(SidecarClientError::Api { code, message, .. }) if code == "diverged" => Ok(Repointed {
            diverged: Some(message),
        }),
        Err(e) => Err(describe(e)),
    }
}

/// Set the primary's synchronous replication policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPolicyInput {
    pub instance: String,
    pub primary: String,
    /// `None`: asynchronous replication.
    pub policy: Option<SyncPolicy>,
}

/// Applies the policy on the primary (a reload).
pub async fn set_sync_policy(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: SyncPolicyInput,
) -> Result<(), String> {
    let client = sidecar_within(&deps, &input.instance, &input.primary, 30).await?;
    let request = match input.policy {
        Some(policy) => ReplicationRequest {
            synchronous_commit: Some("on".into()),
            sync: Some(policy),
            ..ReplicationRequest::default()
        },
        None => ReplicationRequest {
            synchronous_standby_names: Some(String::new()),
            ..ReplicationRequest::default()
        },
    };
    client.set_replication(&request).await.map_err(describe)?;
    Ok(())
}

/// Wait until a standby has caught up with its primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchUpInput {
    pub instance: String,
    pub primary: String,
    pub standby: String,
    /// Caught up: at most this many bytes behind the primary's current position.
    pub max_lag_bytes: u64,
    pub timeout_secs: u64,
}

/// How far behind a standby was, then and at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaughtUp {
    pub lag_bytes_at_start: u64,
    pub lag_bytes: u64,
}

/// Polls the primary's view of the standby until its flushed WAL is within the bound.
pub async fn wait_caught_up(
    deps: Arc<ActivityDeps>,
    ctx: ActivityContext,
    input: CatchUpInput,
) -> Result<CaughtUp, String> {
    let timeout = Duration::from_secs(input.timeout_secs);
    let mut at_start = None;
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
            let current = status.current_lsn.as_deref().and_then(parse_lsn);
            let flushed = status
                .standbys
                .iter()
                .find(|s| s.application_name == input.standby)
                .and_then(|s| s.flush_lsn.as_deref().and_then(parse_lsn));
            let (Some(current), Some(flushed)) = (current, flushed) else {
                return Polled::Waiting(format!(
                    "{} is not streaming from {}",
                    input.standby, input.primary
                ));
            };
            let lag = current.saturating_sub(flushed);
            let start = *at_start.get_or_insert(lag);
            if lag <= input.max_lag_bytes {
                Polled::Done(CaughtUp {
                    lag_bytes_at_start: start,
                    lag_bytes: lag,
                })
            } else {
                Polled::Waiting(format!("{lag} bytes behind"))
            }
        },
    )
    .await
    .map_err(|last| {
        format!(
            "{} did not catch up with {} within {} s: {last}",
            input.standby, input.primary, input.timeout_secs
        )
    })
}

/// Wait until a standby has received WAL up to a position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedInput {
    pub instance: String,
    pub member: String,
    pub lsn: u64,
    pub timeout_ms: u64,
}

/// Polls the standby until it has received (flushed) WAL up to `lsn`, or the timeout passes;
/// returns how far it got (`None` when it never answered). A switchover stops the old primary
/// cleanly, which hands its last WAL to the standbys; this waits for that WAL to land rather
/// than taking the first answer as final.
pub async fn wait_received(
    deps: Arc<ActivityDeps>,
    ctx: ActivityContext,
    input: ReceivedInput,
) -> Result<Option<u64>, String> {
    let timeout = Duration::from_millis(input.timeout_ms);
    let mut got = None;
    // Short of the position at the deadline is an answer too: how far it got gives the
    // data-loss bytes.
    let _reached = poll_status(
        &deps,
        &ctx,
        &input.instance,
        &input.member,
        timeout,
        |answer| {
            if let Ok(status) = answer {
                let received = [&status.receive_lsn, &status.replay_lsn]
                    .into_iter()
                    .flatten()
                    .filter_map(|l| parse_lsn(l))
                    .max();
                got = got.max(received);
            }
            match got {
                Some(g) if g >= input.lsn => Polled::Done(()),
                _ => Polled::Waiting(String::new()),
            }
        },
    )
    .await;
    Ok(got)
}

/// Rejoin a former primary as a standby of the current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejoinInput {
    pub instance: String,
    pub member: String,
    pub primary: String,
    pub timeout_secs: u64,
}

/// Makes sure the member's pod runs (it comes back fenced when the platform killed it), then
/// demotes it to follow `primary`: pg_rewind when its history diverged, a fresh copy when that
/// is impossible. Returns how (`rewind`, `none`, `reclone`, `already-streaming`).
pub async fn rejoin_member(
    deps: Arc<ActivityDeps>,
    ctx: ActivityContext,
    input: RejoinInput,
) -> Result<String, String> {
    let primary = deps
        .platform
        .member_address(&input.instance, &input.primary)
        .await
        .map_err(describe)?;
    let placement = deps
        .platform
        .list_members(&input.instance)
        .await
        .map_err(describe)?
        .into_iter()
        .find(|m| m.member == input.member)
        .map(|m| m.placement)
        .unwrap_or_else(Placement::default);
    let archive = super::members::member_archive(&deps, &input.instance).await?;
    deps.platform
        .create_member(&MemberSpec {
            archive,
            instance: input.instance.clone(),
            member: input.member.clone(),
            bootstrap: Bootstrap::Standby {
                primary: primary.pg.clone(),
            },
            secrets: SecretRefs::for_instance(&input.instance),
            placement,
        })
        .await
        .map_err(describe)?;
    let timeout = Duration::from_secs(input.timeout_secs.max(10));
    let status = poll_status(
        &deps,
        &ctx,
        &input.instance,
        &input.member,
        timeout,
        |answer| match answer {
            Ok(status) => Polled::Done(status),
            Err(e) => Polled::Waiting(e.to_string()),
        },
    )
    .await
    .map_err(|last| format!("{} did not answer: {last}", input.member))?;
    let client = sidecar(&deps, &input.instance, &input.member, timeout).await?;
    let follows = status.primary.as_ref() == Some(&primary.pg);
    if status.role == Role::Standby
        && !status.fenced
        && follows
        && status.wal_receiver_status.as_deref() == Some("streaming")
    {
        return Ok("already-streaming".into());
    }
    let demoted = client
        .demote(&DemoteRequest {
            primary: primary.pg,
            reclone_if_needed: true,
        })
        .await
        .map_err(describe)?;
    Ok(demoted.method)
}
