//! Members as the runbooks name, wait for and delete them.

use duroxide::OrchestrationContext;

use super::durable::{call, call_once, first_error};
use crate::activities::members::DeleteMemberInput;
use crate::activities::names as act;
use crate::activities::sidecar::{ExpectedRole, MemberReady, WaitReadyInput};

/// How long a new member may take to serve in its role (initdb or pg_basebackup included).
pub const MEMBER_READY_TIMEOUT_SECS: u64 = 300;

/// How long a restored primary may take to download its base backup and replay WAL to its
/// target before a restore (into a new instance, or in place) gives up on it.
pub const RESTORE_READY_TIMEOUT_SECS: u64 = 6 * 3600;

/// The name of member `n` of `instance`.
pub fn member_name(instance: &str, n: u32) -> String {
    format!("{instance}-{n}")
}

/// The next member name of `instance`: one past the highest `<instance>-<n>` in `existing`.
pub fn next_member_name(instance: &str, existing: &[String]) -> String {
    let next = existing
        .iter()
        .filter_map(|m| {
            m.strip_prefix(instance)?
                .strip_prefix('-')?
                .parse::<u32>()
                .ok()
        })
        .max()
        .map_or(0, |n| n + 1);
    member_name(instance, next)
}

/// Starts `standbys` of `instance`, in parallel, as standbys cloned from `primary`; the first
/// failure once all have ended.
pub(crate) async fn create_standbys(
    ctx: &OrchestrationContext,
    instance: &str,
    primary: &toygres_common::names::PgAddress,
    standbys: &[String],
) -> Result<(), String> {
    let created = ctx
        .join(
            standbys
                .iter()
                .map(|standby| {
                    call::<_, crate::platform::MemberHandle>(
                        ctx,
                        act::CREATE_MEMBER,
                        crate::activities::members::CreateMemberInput {
                            instance: instance.to_string(),
                            member: standby.clone(),
                            bootstrap: crate::platform::Bootstrap::Standby {
                                primary: primary.clone(),
                            },
                            placement: crate::platform::Placement::default(),
                        },
                    )
                })
                .collect(),
        )
        .await;
    first_error(created).map(drop)
}

/// Waits, in parallel, until every one of `standbys` of `instance` streams from its primary; the
/// first failure once all have ended.
pub(crate) async fn wait_standbys_streaming(
    ctx: &OrchestrationContext,
    instance: &str,
    standbys: &[String],
) -> Result<(), String> {
    let streaming = ctx
        .join(
            standbys
                .iter()
                .map(|standby| {
                    call_once::<_, MemberReady>(
                        ctx,
                        act::WAIT_MEMBER_READY,
                        WaitReadyInput {
                            instance: instance.to_string(),
                            member: standby.clone(),
                            role: ExpectedRole::Standby,
                            timeout_secs: MEMBER_READY_TIMEOUT_SECS,
                        },
                    )
                })
                .collect(),
        )
        .await;
    first_error(streaming).map(drop)
}

/// Deletes `members` of `instance` in parallel (their data too unless `keep_data`); one result
/// per member, once all have ended.
pub(crate) async fn delete_members(
    ctx: &OrchestrationContext,
    instance: &str,
    members: &[String],
    keep_data: bool,
) -> Vec<Result<(), String>> {
    ctx.join(
        members
            .iter()
            .map(|member| {
                call::<_, ()>(
                    ctx,
                    act::DELETE_MEMBER,
                    DeleteMemberInput {
                        instance: instance.to_string(),
                        member: member.clone(),
                        keep_data,
                    },
                )
            })
            .collect(),
    )
    .await
}
