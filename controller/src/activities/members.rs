//! Activities on the platform: an instance's credentials, endpoints and members.

use std::sync::Arc;

use duroxide::ActivityContext;
use serde::{Deserialize, Serialize};

use super::deps::{describe, ActivityDeps};
use super::records::ActorRef;
use crate::cms::instances::MemberRow;
use crate::platform::{
    Bootstrap, EndpointRoutes, Endpoints, MemberArchive, MemberHandle, MemberSpec, Placement,
    SecretRefs,
};
use toygres_common::controller_api::HaSettings;
use toygres_common::domain::{InstanceState, MemberState, ReplicationMode, Role};
use toygres_common::names::PgAddress;

/// The instance an activity acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRef {
    pub instance: String,
}

/// Generates the instance's credentials the first time; returns references to them.
pub async fn ensure_secrets(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: InstanceRef,
) -> Result<SecretRefs, String> {
    deps.platform
        .ensure_instance_secrets(&input.instance)
        .await
        .map_err(describe)
}

/// Removes the instance's credentials.
pub async fn delete_secrets(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: InstanceRef,
) -> Result<(), String> {
    deps.platform
        .delete_instance_secrets(&input.instance)
        .await
        .map_err(describe)
}

/// Creates the instance's rw and ro endpoints (stable addresses) and records their ports.
pub async fn ensure_endpoints(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: InstanceRef,
) -> Result<Endpoints, String> {
    let endpoints = deps
        .platform
        .ensure_endpoints(&input.instance)
        .await
        .map_err(describe)?;
    deps.cms
        .set_instance_endpoints(&input.instance, endpoints.rw.port, endpoints.ro.port)
        .await
        .map_err(describe)?;
    Ok(endpoints)
}

/// Points the endpoints at members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteInput {
    pub instance: String,
    pub routes: EndpointRoutes,
}

/// Points the instance's endpoints at the given members.
pub async fn route_endpoints(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: RouteInput,
) -> Result<(), String> {
    deps.platform
        .route_endpoint(&input.instance, &input.routes)
        .await
        .map_err(describe)
}

/// Removes the instance's endpoints.
pub async fn delete_endpoints(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: InstanceRef,
) -> Result<(), String> {
    deps.platform
        .delete_endpoints(&input.instance)
        .await
        .map_err(describe)
}

/// A member to create, and the role it starts in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateMemberInput {
    pub instance: String,
    pub member: String,
    pub bootstrap: Bootstrap,
    #[serde(default)]
    pub placement: Placement,
}

/// Where the instance's members archive WAL: its backup store, read from the CMS at the point
/// of use (so no orchestration input carries it); `None` when its backups are off.
pub(crate) async fn member_archive(
    deps: &ActivityDeps,
    instance: &str,
) -> Result<Option<MemberArchive>, String> {
    let config = deps
        .cms
        .get_backup_config(instance)
        .await
        .map_err(describe)?
        .flatten();
    Ok(config.and_then(|c| {
        Some(MemberArchive {
            compression: c.sidecar_compression().map(str::to_string),
            store_url: c.store_url?,
            credentials_secret: c.credentials_secret,
            encryption_secret: c.encryption_secret,
        })
    }))
}

/// Creates (or finds) the member's pod and records it in the CMS as `creating`.
pub async fn create_member(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: CreateMemberInput,
) -> Result<MemberHandle, String> {
    let role = match input.bootstrap {
        Bootstrap::Init | Bootstrap::Restore(_) => Role::Primary,
        Bootstrap::Standby { .. } => Role::Standby,
    };
    let archive = member_archive(&deps, &input.instance).await?;
    let spec = MemberSpec {
        secrets: SecretRefs::for_instance(&input.instance),
        archive,
        instance: input.instance,
        member: input.member,
        bootstrap: input.bootstrap,
        placement: input.placement,
    };
    let handle = deps.platform.create_member(&spec).await.map_err(describe)?;
    let api_port = handle
        .address
        .api_url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok());
    deps.cms
        .upsert_member(&MemberRow {
            instance: &handle.instance,
            name: &handle.member,
            role,
            state: MemberState::Creating,
            host: &handle.address.pg.host,
            pg_port: handle.address.pg.port,
            api_port,
        })
        .await
        .map_err(describe)?;
    Ok(handle)
}

/// A member to delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteMemberInput {
    pub instance: String,
    pub member: String,
    pub keep_data: bool,
}

/// Stops and removes the member (its data too unless `keep_data`) and forgets it in the CMS.
pub async fn delete_member(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: DeleteMemberInput,
) -> Result<(), String> {
    deps.cms
        .set_member_state(&input.instance, &input.member, MemberState::Deleting)
        .await
        .map_err(describe)?;
    deps.platform
        .delete_member(&input.instance, &input.member, input.keep_data)
        .await
        .map_err(describe)?;
    deps.cms
        .delete_member(&input.instance, &input.member)
        .await
        .map_err(describe)
}

/// The instance's members as the platform knows them (those it runs or keeps), by name.
pub async fn list_members(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: InstanceRef,
) -> Result<Vec<String>, String> {
    let members = deps
        .platform
        .list_members(&input.instance)
        .await
        .map_err(describe)?;
    Ok(members.into_iter().map(|m| m.member).collect())
}

/// An instance's members by role, as the CMS records them, and where its primary listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub primary: Option<String>,
    pub primary_address: Option<PgAddress>,
    pub standbys: Vec<String>,
    /// `sync` or `async`.
    pub replication_mode: ReplicationMode,
    pub replicas: u32,
    /// The instance's HA settings (sync mode, quorum …).
    #[serde(default)]
    pub ha: toygres_common::controller_api::HaSettings,
    /// The standbys that may be synchronous (not added with `--mode async`).
    #[serde(default)]
    pub sync_candidates: Vec<String>,
    /// Former primaries still waiting to rejoin.
    #[serde(default)]
    pub rejoining: Vec<String>,
    /// Members kept stopped (a switchover's `stop_and_retain`): out of replication.
    #[serde(default)]
    pub fenced: Vec<String>,
}

impl Topology {
    /// The standbys that stay standbys when `target` takes over (a member kept fenced by an
    /// earlier switchover is out of replication).
    pub fn staying_standbys(&self, target: &str) -> Vec<String> {
        self.standbys
            .iter()
            .filter(|s| *s != target && !self.fenced.contains(s))
            .cloned()
            .collect()
    }
}

/// The names of the recorded members that match.
pub(crate) fn member_names(
    members: &[toygres_common::controller_api::MemberView],
    matches: impl Fn(&toygres_common::controller_api::MemberView) -> bool,
) -> Vec<String> {
    members
        .iter()
        .filter(|m| matches(m))
        .map(|m| m.name.clone())
        .collect()
}

/// Reads the instance's topology: members and roles from the CMS, the primary's address from
/// the platform.
pub async fn read_topology(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: InstanceRef,
) -> Result<Topology, String> {
    let instance = deps
        .cms
        .get_instance(&input.instance)
        .await
        .map_err(describe)?
        .ok_or_else(|| format!("instance {} does not exist", input.instance))?;
    let members = deps
        .cms
        .list_members(&input.instance)
        .await
        .map_err(describe)?;
    let ha = deps
        .cms
        .get_ha_settings(&input.instance)
        .await
        .map_err(describe)?
        .unwrap_or_default();
    let primary = members
        .iter()
        .find(|m| m.parsed_role() == Role::Primary)
        .map(|m| m.name.clone());
    let primary_address = match &primary {
        Some(primary) => Some(
            deps.platform
                .member_address(&input.instance, primary)
                .await
                .map_err(describe)?
                .pg,
        ),
        None => None,
    };
    Ok(Topology {
        primary,
        primary_address,
        standbys: member_names(&members, |m| m.parsed_role() == Role::Standby),
        sync_candidates: member_names(&members, |m| {
            m.parsed_role() == Role::Standby
                && m.sync_candidate
                && m.parsed_state() != Some(MemberState::Fenced)
        }),
        rejoining: member_names(&members, |m| {
            m.parsed_state() == Some(MemberState::Rejoining)
        }),
        fenced: member_names(&members, |m| m.parsed_state() == Some(MemberState::Fenced)),
        replication_mode: instance.summary.parsed_replication_mode(),
        replicas: instance.replicas,
        ha,
    })
}

/// The members an instance actor should probe, or `None` when it is no longer the instance's
/// actor (another one replaced it, or the instance is being deleted): it should then stop.
pub async fn actor_members(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: ActorRef,
) -> Result<Option<Vec<String>>, String> {
    let instance = deps
        .cms
        .get_instance(&input.instance)
        .await
        .map_err(describe)?;
    let current = instance.is_some_and(|i| {
        i.actor_id.as_deref() == Some(input.actor_id.as_str())
            && !i
                .summary
                .parsed_state()
                .is_some_and(InstanceState::is_ending)
    });
    if !current {
        return Ok(None);
    }
    let members = deps
        .platform
        .list_members(&input.instance)
        .await
        .map_err(describe)?;
    Ok(Some(members.into_iter().map(|m| m.member).collect()))
}

/// What the actor needs each round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorView {
    /// Every member the platform has.
    pub members: Vec<String>,
    /// The primary as the CMS records it.
    pub primary: Option<String>,
    /// Where that primary's Postgres listens.
    #[serde(default)]
    pub primary_address: Option<toygres_common::names::PgAddress>,
    /// `sync` or `async`.
    pub replication_mode: ReplicationMode,
    pub ha: HaSettings,
    /// Former primaries waiting to rejoin as standbys.
    pub rejoining: Vec<String>,
    /// Standbys that may never be synchronous.
    #[serde(default)]
    pub not_sync: Vec<String>,
    /// Standbys with their own lag bound.
    #[serde(default)]
    pub lag_bounds: std::collections::BTreeMap<String, u64>,
    /// The controller's current health interval.
    #[serde(default)]
    pub health_interval_ms: Option<u64>,
    /// Standbys the CMS records running (not being created, rejoining or fenced).
    #[serde(default)]
    pub running_standbys: Vec<String>,
    /// The ro endpoint's rule.
    #[serde(default)]
    pub ro: toygres_common::ro_api::RoSettings,
    /// With the fast path: how long the actor of a quiet instance sleeps between rounds (the
    /// prober wakes it sooner when something changes). `None` (and in histories written before
    /// the fast path): a round every health interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_interval_ms: Option<u64>,
}

impl ActorView {
    /// The members that may be synchronous standbys of `primary`: not it, not rejoining, not
    /// added as asynchronous, not kept fenced.
    pub fn sync_candidates(&self, primary: &str) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| *m != primary && !self.rejoining.contains(m) && !self.not_sync.contains(m))
            .cloned()
            .collect()
    }
}

/// With the fast path, a quiet instance's actor runs a durable round at least this often
/// (in a small fleet: see [`quiet_interval_ms`]).
pub const QUIET_INTERVAL_MS: u64 = 30_000;

/// The safety-net rounds of a whole fleet's quiet actors, per second on average: a larger
/// fleet spreads them wider, so their durable work stays bounded whatever its size.
pub const QUIET_ROUNDS_PER_SEC: u64 = 4;

/// How long a quiet actor sleeps in a fleet of `instances`: [`QUIET_INTERVAL_MS`], or longer
/// once the fleet's quiet rounds would exceed [`QUIET_ROUNDS_PER_SEC`] (125 s at 500).
pub fn quiet_interval_ms(instances: usize) -> u64 {
    super::deps::spread_ms(instances, QUIET_INTERVAL_MS, QUIET_ROUNDS_PER_SEC)
}

/// Reads the actor's view of its instance; `None` when the actor is no longer the instance's
/// (replaced, or the instance is being deleted).
pub async fn read_actor_view(
    deps: Arc<ActivityDeps>,
    _ctx: ActivityContext,
    input: ActorRef,
) -> Result<Option<ActorView>, String> {
    deps.round_begins(&input.instance);
    actor_view(&deps, &input).await
}

/// The instance as its actor sees it, or `None` when `input` is no longer its actor (or the
/// instance is ending). Also read by the fast path's prober.
pub async fn actor_view(
    deps: &ActivityDeps,
    input: &ActorRef,
) -> Result<Option<ActorView>, String> {
    let Some(instance) = deps
        .cms
        .get_instance(&input.instance)
        .await
        .map_err(describe)?
    else {
        return Ok(None);
    };
    if instance.actor_id.as_deref() != Some(input.actor_id.as_str())
        || instance
            .summary
            .parsed_state()
            .is_some_and(InstanceState::is_ending)
    {
        return Ok(None);
    }
    let ha = deps
        .cms
        .get_ha_settings(&input.instance)
        .await
        .map_err(describe)?
        .unwrap_or_default();
    let ro = deps
        .cms
        .get_ro_settings(&input.instance)
        .await
        .map_err(describe)?
        .unwrap_or_default();
    let recorded = deps
        .cms
        .list_members(&input.instance)
        .await
        .map_err(describe)?;
    let members = deps
        .platform
        .list_members(&input.instance)
        .await
        .map_err(describe)?;
    let primary = recorded
        .iter()
        .find(|m| m.parsed_role() == Role::Primary)
        .map(|m| m.name.clone());
    let primary_address = members
        .iter()
        .find(|m| Some(&m.member) == primary.as_ref())
        .map(|m| m.address.pg.clone());
    Ok(Some(ActorView {
        members: members.into_iter().map(|m| m.member).collect(),
        primary,
        primary_address,
        replication_mode: instance.summary.parsed_replication_mode(),
        ha,
        rejoining: member_names(&recorded, |m| {
            m.parsed_state() == Some(MemberState::Rejoining)
        }),
        not_sync: member_names(&recorded, |m| {
            !m.sync_candidate || m.parsed_state() == Some(MemberState::Fenced)
        }),
        lag_bounds: recorded
            .iter()
            .filter_map(|m| Some((m.name.clone(), u64::try_from(m.max_lag_bytes?).ok()?)))
            .collect(),
        health_interval_ms: Some(deps.health_interval_ms),
        running_standbys: member_names(&recorded, |m| {
            m.parsed_role() == Role::Standby && m.parsed_state() == Some(MemberState::Running)
        }),
        ro,
        quiet_interval_ms: deps
            .fast_path
            .then(|| super::deps::jittered_ms(quiet_interval_ms(deps.fleet_size()))),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_rounds_spread_wider_in_a_large_fleet() {
        assert_eq!(quiet_interval_ms(0), QUIET_INTERVAL_MS);
        assert_eq!(quiet_interval_ms(100), QUIET_INTERVAL_MS);
        assert_eq!(quiet_interval_ms(500), 125_000);
        // The fleet's quiet rounds per second stay at most QUIET_ROUNDS_PER_SEC.
        for n in [120_u64, 500, 2_000] {
            let per_sec = n as f64 * 1000.0 / quiet_interval_ms(n as usize) as f64;
            assert!(
                per_sec <= QUIET_ROUNDS_PER_SEC as f64 + 1e-9,
                "{n}: {per_sec}"
            );
        }
    }
}
