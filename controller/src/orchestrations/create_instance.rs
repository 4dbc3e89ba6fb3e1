//! *CreateInstance*: a primary and N standbys, streaming (and, in sync mode, one confirmed
//! synchronous), behind the instance's stable endpoints, recorded in the CMS, with its actor
//! running.

use duroxide::OrchestrationContext;
use serde::{Deserialize, Serialize};
use toygres_common::controller_api::{ReplicationMode, ValidatedCreateInstance};
use toygres_common::domain::{InstanceState, OperationKind, Role};

use super::durable::{call, call_once};
use super::ha::sync::sync_policy;
use super::instance_actor::{actor_id, ActorInput, ActorSettings};
use super::members::{
    delete_members, member_name, MEMBER_READY_TIMEOUT_SECS, RESTORE_READY_TIMEOUT_SECS,
};
use super::names;
use super::operation::{report, route_endpoints, OperationRun};
use super::parameters::{apply_on_new_primary, confirm_everywhere};
use crate::activities::app_access::AppAccessInput;
use crate::activities::ha::SyncPolicyInput;
use crate::activities::members::{CreateMemberInput, InstanceRef};
use crate::activities::names as act;
use crate::activities::records::{ActorRef, InstanceRunning, MemberRole};
use crate::activities::sidecar::{ExpectedRole, MemberReady, WaitReadyInput, WaitSyncInput};
use crate::platform::{
    Bootstrap, EndpointRoutes, Endpoints, MemberHandle, Placement, RestoreSource, SecretRefs,
};

/// How long the first standby may take to become synchronous once asked.
pub const SYNC_TIMEOUT_SECS: u64 = 60;

/// The input of *CreateInstance*.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateInstanceInput {
    pub operation_id: String,
    pub spec: ValidatedCreateInstance,
    /// Settings the instance's actor starts with.
    pub actor: ActorSettings,
    /// Restore: the primary starts from another instance's backup instead of initdb
    /// (`POST /v1/instances/{name}/restore`); `None` for a new, empty instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSource>,
}

/// What *CreateInstance* returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateInstanceOutput {
    pub endpoints: Endpoints,
    pub primary: String,
    pub standbys: Vec<String>,
    /// Sync mode: the standby confirmed synchronous.
    pub sync_standby: Option<String>,
    pub actor_id: String,
}

/// Runs the create runbook; records the outcome on the operation and the instance whatever
/// happens.
pub async fn create_instance(
    ctx: OrchestrationContext,
    input: CreateInstanceInput,
) -> Result<CreateInstanceOutput, String> {
    let operation = OperationRun::begin(
        &ctx,
        &input.operation_id,
        OperationKind::Create,
        &input.spec.name,
    )
    .await?;
    let result = provision(&ctx, &input, &operation).await;
    // The duration ends before the clean-up of a failed create.
    let duration_ms = operation.elapsed_ms(&ctx).await?;
    match result {
        Ok(output) => {
            report(&ctx, STEPS, STEPS, "the instance is running");
            operation
                .record_finished(&ctx, None, None, duration_ms)
                .await?;
            Ok(output)
        }
        Err(error) => {
            ctx.trace_error(format!("create {} failed: {error}", input.spec.name));
            clean_up(&ctx, &input.spec).await;
            report(&ctx, 0, STEPS, format!("failed: {error}"));
            operation
                .record_finished(
                    &ctx,
                    Some(error.clone()),
                    Some(InstanceState::Failed),
                    duration_ms,
                )
                .await?;
            Err(error)
        }
    }
}

const STEPS: u32 = 9;

/// After a failed create, removes what it made (members with their data, endpoints,
/// credentials), so nothing keeps running for an instance that never served; the instance's
/// record stays, `failed`, with its events. Each step is best effort: what fails here is left
/// for `toygres delete`.
async fn clean_up(ctx: &OrchestrationContext, spec: &ValidatedCreateInstance) {
    let name = &spec.name;
    let members: Vec<String> = (0..=spec.replicas).map(|n| member_name(name, n)).collect();
    let deleted = delete_members(ctx, name, &members, false).await;
    let instance = InstanceRef {
        instance: name.clone(),
    };
    let mut errors: Vec<String> = deleted.into_iter().filter_map(Result::err).collect();
    if let Err(e) = call::<_, ()>(ctx, act::DELETE_ENDPOINTS, &instance).await {
        errors.push(e);
    }
    if let Err(e) = call::<_, ()>(ctx, act::DELETE_SECRETS, &instance).await {
        errors.push(e);
    }
    if !errors.is_empty() {
        ctx.trace_warn(format!(
            "clean-up after the failed create of {name} left something behind: {}",
            errors.join("; ")
        ));
    }
}

async fn provision(
    ctx: &OrchestrationContext,
    input: &CreateInstanceInput,
    operation: &OperationRun,
) -> Result<CreateInstanceOutput, String> {
    let name = &input.spec.name;
    let instance = InstanceRef {
        instance: name.clone(),
    };

    report(ctx, 1, STEPS, "recording the instance");
    operation
        .record_started(ctx, Some(InstanceState::Creating))
        .await?;

    report(ctx, 2, STEPS, "generating credentials and endpoints");
    let _secrets: SecretRefs = call(ctx, act::ENSURE_SECRETS, &instance).await?;
    let endpoints: Endpoints = call(ctx, act::ENSURE_ENDPOINTS, &instance).await?;

    // Restore: the first member bootstraps from the source's backup store and recovers to the
    // target (the sidecar does it, then starts as a primary with this instance's credentials);
    // the standbys below are cloned from it as from any primary.
    let (primary_bootstrap, primary_ready_secs) = match &input.restore {
        Some(source) => (
            Bootstrap::Restore(source.clone()),
            RESTORE_READY_TIMEOUT_SECS,
        ),
        None => (Bootstrap::Init, MEMBER_READY_TIMEOUT_SECS),
    };

    let primary_name = member_name(name, 0);
    report(
        ctx,
        3,
        STEPS,
        format!("starting the primary {primary_name}"),
    );
    let primary: MemberHandle = call(
        ctx,
        act::CREATE_MEMBER,
        CreateMemberInput {
            instance: name.clone(),
            member: primary_name.clone(),
            bootstrap: primary_bootstrap,
            placement: Placement::default(),
        },
    )
    .await?;

    if !input.spec.parameters.is_empty() {
        // On the primary before the standbys copy it: they start with the same values.
        report(ctx, 3, STEPS, "applying the instance's parameters");
        apply_on_new_primary(
            ctx,
            name,
            &primary_name,
            &input.spec.parameters,
            primary_ready_secs,
        )
        .await?;
    }

    let standbys: Vec<String> = (1..=input.spec.replicas)
        .map(|n| member_name(name, n))
        .collect();
    if !standbys.is_empty() {
        // Started at once: each copies the primary as soon as it accepts connections.
        report(
            ctx,
            4,
            STEPS,
            format!("starting the standbys {}", standbys.join(", ")),
        );
        super::members::create_standbys(ctx, name, &primary.address.pg, &standbys).await?;
    }

    report(
        ctx,
        5,
        STEPS,
        format!("waiting for {primary_name} to accept writes"),
    );
    let _: MemberReady = call_once(
        ctx,
        act::WAIT_MEMBER_READY,
        WaitReadyInput {
            instance: name.clone(),
            member: primary_name.clone(),
            role: ExpectedRole::Primary,
            timeout_secs: primary_ready_secs,
        },
    )
    .await?;

    if !standbys.is_empty() {
        report(ctx, 6, STEPS, "waiting for the standbys to stream");
        super::members::wait_standbys_streaming(ctx, name, &standbys).await?;
    }

    if !input.spec.parameters.is_empty() {
        let members: Vec<String> = std::iter::once(primary_name.clone())
            .chain(standbys.iter().cloned())
            .collect();
        confirm_everywhere(ctx, name, &members, &input.spec.parameters).await?;
    }

    let mut sync_standby = None;
    if input.spec.replication == ReplicationMode::Sync {
        report(ctx, 7, STEPS, "making a standby synchronous");
        call::<_, ()>(
            ctx,
            act::SET_SYNC_POLICY,
            &SyncPolicyInput {
                instance: name.clone(),
                primary: primary_name.clone(),
                policy: sync_policy(true, &input.spec.ha, &standbys),
            },
        )
        .await?;
        let confirmed: String = call_once(
            ctx,
            act::WAIT_SYNC_STANDBY,
            &WaitSyncInput {
                instance: name.clone(),
                primary: primary_name.clone(),
                timeout_secs: SYNC_TIMEOUT_SECS,
            },
        )
        .await?;
        sync_standby = Some(confirmed);
    }

    // Application access: the owner role and its database, made on the primary once it accepts
    // writes (standbys get them by replication).
    if let Some(app) = &input.spec.app {
        report(
            ctx,
            7,
            STEPS,
            format!("creating the application database {}", app.database),
        );
        call::<_, ()>(
            ctx,
            act::ENSURE_APP_ACCESS,
            &AppAccessInput {
                instance: name.clone(),
                primary: primary_name.clone(),
                app: app.clone(),
            },
        )
        .await?;
    }

    report(ctx, 8, STEPS, "routing the endpoints");
    route_endpoints(
        ctx,
        name,
        EndpointRoutes {
            rw: Some(primary_name.clone()),
            ro: standbys.clone(),
            ..Default::default()
        },
    )
    .await?;
    let mut members = vec![MemberRole {
        member: primary_name.clone(),
        role: Role::Primary,
    }];
    members.extend(standbys.iter().map(|s| MemberRole {
        member: s.clone(),
        role: Role::Standby,
    }));
    call::<_, ()>(
        ctx,
        act::RECORD_INSTANCE_RUNNING,
        &InstanceRunning {
            instance: name.clone(),
            members,
        },
    )
    .await?;

    report(ctx, 9, STEPS, "starting the instance actor");
    let actor = actor_id(name, &input.operation_id);
    call::<_, ()>(
        ctx,
        act::RECORD_ACTOR,
        &ActorRef {
            instance: name.clone(),
            actor_id: actor.clone(),
        },
    )
    .await?;
    ctx.schedule_orchestration_typed(
        names::INSTANCE_ACTOR,
        actor.clone(),
        &ActorInput::new(name, input.actor),
    );

    Ok(CreateInstanceOutput {
        endpoints,
        primary: primary_name,
        standbys,
        sync_standby,
        actor_id: actor,
    })
}
