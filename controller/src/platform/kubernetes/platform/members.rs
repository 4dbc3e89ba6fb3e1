//! Members as one-replica StatefulSets: created and started by applying the StatefulSet, found
//! through their pods, killed by scaling to 0 and deleting the pod at once, deleted with or
//! without their PVC.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::wait::await_condition;
use serde_json::json;
use toygres_common::names::PgAddress;

use super::events::InstanceEvent;
use super::{classify, KubernetesPlatform, FIELD_MANAGER};
use crate::platform::kubernetes::disruption::instance_disruption_budget;
use crate::platform::kubernetes::labels::{instance_pods_selector, RoleLabel, MEMBER_KEY};
use crate::platform::kubernetes::member::{
    data_volume_of, member_stateful_set, use_data_volume, volume_set_aside, DATA_VOLUME, ZONE_LABEL,
};
use crate::platform::kubernetes::services::{
    members_service, ro_service, ro_service_role, rw_service,
};
use crate::platform::kubernetes::{
    credentials_secret_name, member_pg_address, member_pod_name, InstanceSettings, MemberSettings,
    API_PORT, PG_PORT,
};
use crate::platform::{
    validate_member_of, Bootstrap, MemberAddress, MemberHandle, MemberInfo, MemberSpec,
    MemberState, Placement, PlatformError,
};

/// The annotation on a member's StatefulSet recording the bootstrap it was created with: later
/// applies reuse it, so the pod template (and the running pod) never changes because a retry
/// or a restart of the member names another bootstrap source.
pub const BOOTSTRAP_ANNOTATION: &str = "toygres.io/bootstrap";

/// The annotation [`KubernetesPlatform::kill`] sets on a member's StatefulSet: a token new at
/// each kill, which the next apply passes to the sidecar (`TOYGRES_FENCE_TOKEN`), so the old
/// primary's pod, started again, keeps Postgres stopped until it is rejoined as a standby.
pub const FENCE_ANNOTATION: &str = "toygres.io/fence-token";

/// `wait` bounded by `timeout`: `Err` when the time ran out.
pub(super) async fn until<T>(
    timeout: Duration,
    wait: impl std::future::Future<Output = T>,
) -> Result<T, tokio::time::error::Elapsed> {
    tokio::time::timeout(timeout, wait).await
}

/// The PVC of `member`'s data: `data-<member>-0`.
pub fn data_claim_name(member: &str) -> String {
    claim_name(DATA_VOLUME, member)
}

/// The PVC the claim template `volume` of `member`'s StatefulSet makes: `<volume>-<member>-0`.
pub fn claim_name(volume: &str, member: &str) -> String {
    format!("{volume}-{}", member_pod_name(member))
}

/// `instance=<i>,component=member` as a label selector string.
pub fn member_pods_selector(instance: &str) -> String {
    instance_pods_selector(instance)
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The address of a pod with an IP: Postgres and the sidecar API on it.
fn pod_address(pod: &Pod) -> Option<MemberAddress> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    Some(MemberAddress {
        api_url: format!("https://{ip}:{API_PORT}"),
        pg: PgAddress {
            host: ip,
            port: PG_PORT,
        },
    })
}

/// Whether the pod runs (scheduled, started, not being deleted).
fn pod_runs(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// The bootstrap a StatefulSet records.
fn recorded_bootstrap(set: &StatefulSet) -> Option<Bootstrap> {
    let text = set
        .metadata
        .annotations
        .as_ref()?
        .get(BOOTSTRAP_ANNOTATION)?;
    serde_json::from_str(text).ok()
}

/// The fence token a StatefulSet carries since its member was last killed.
fn fence_token(set: &StatefulSet) -> Option<String> {
    set.metadata
        .annotations
        .as_ref()?
        .get(FENCE_ANNOTATION)
        .filter(|token| !token.is_empty())
        .cloned()
}

/// The zone a StatefulSet pins its pod to.
fn pinned_zone(set: &StatefulSet) -> Option<String> {
    set.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .node_selector
        .as_ref()?
        .get(ZONE_LABEL)
        .cloned()
}

/// A token no earlier kill of any member used: the time in milliseconds.
fn new_fence_token() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_millis().to_string()
}

impl KubernetesPlatform {
    /// Applies the objects every member needs: the three Services and the PodDisruptionBudget.
    pub(super) async fn apply_instance_objects(
        &self,
        settings: &InstanceSettings,
        owner: &OwnerReference,
    ) -> anyhow::Result<()> {
        // `-ro` keeps leading where the recorded routes last pointed it.
        let ro_leads_to = self
            .recorded_routes(&settings.instance)
            .await?
            .map_or(RoleLabel::Standby, |routes| ro_service_role(&routes));
        self.apply(&rw_service(settings, owner)).await?;
        self.apply(&ro_service(settings, owner, ro_leads_to))
            .await?;
        self.apply(&members_service(settings, owner)).await?;
        self.apply(&instance_disruption_budget(settings, owner))
            .await?;
        Ok(())
    }

    pub(super) async fn create_member_objects(
        &self,
        spec: &MemberSpec,
    ) -> Result<MemberHandle, PlatformError> {
        spec.validate()?;
        let mut member_settings = MemberSettings::from_spec(spec)?;
        let settings = self.settings(&spec.instance, spec.archive.as_ref());
        settings.validate()?;
        let owner = self.ensure_root(&settings).await?;
        let secret = credentials_secret_name(&spec.instance);
        let present = self
            .api::<Secret>()
            .get_opt(&secret)
            .await
            .with_context(|| format!("read Secret {}/{secret}", self.namespace))?;
        if present.is_none() {
            return Err(PlatformError::not_found(
                "secret",
                spec.secrets.superuser_password.to_string(),
            ));
        }
        self.apply_instance_objects(&settings, &owner).await?;
        self.ensure_keyring(&settings, spec.archive.as_ref(), &owner)
            .await?;
        self.ensure_member_tls(&settings, &owner, &spec.member)
            .await?;
        let existing = self
            .api::<StatefulSet>()
            .get_opt(&spec.member)
            .await
            .with_context(|| format!("read StatefulSet {}/{}", self.namespace, spec.member))?;
        if let Some(bootstrap) = existing.as_ref().and_then(recorded_bootstrap) {
            member_settings.bootstrap = bootstrap;
        }
        member_settings.fence_token = existing.as_ref().and_then(fence_token);
        let mut set = member_stateful_set(&settings, &member_settings, &owner);
        // The claim template cannot change: an existing StatefulSet keeps its data volume (a
        // new one since an in-place restore, see `data_aside`).
        if let Some(existing) = &existing {
            use_data_volume(&mut set, &data_volume_of(existing));
        }
        let bootstrap = serde_json::to_string(&member_settings.bootstrap)
            .context("encode the member's bootstrap")?;
        set.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(BOOTSTRAP_ANNOTATION.to_string(), bootstrap);
        self.apply(&set).await?;
        let was_stopped = existing
            .as_ref()
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.replicas)
            == Some(0);
        match existing {
            None => {
                let note = match &member_settings.bootstrap {
                    Bootstrap::Init => format!("member {}: a new primary (initdb)", spec.member),
                    Bootstrap::Standby { primary } => {
                        format!("member {}: a new standby of {primary}", spec.member)
                    }
                    Bootstrap::Restore(source) => format!(
                        "member {}: a new primary restored from backup {} of {}",
                        spec.member, source.backup_id, source.instance
                    ),
                };
                self.record(&spec.instance, InstanceEvent::MemberCreated, note);
            }
            Some(_) if was_stopped => {
                let note = format!("member {} started again after it was stopped", spec.member);
                self.record(&spec.instance, InstanceEvent::MemberStarted, note);
            }
            Some(_) => {}
        }
        let address = self.wait_pod_address(&spec.member).await?;
        tracing::info!(
            instance = %spec.instance,
            member = %spec.member,
            pod_ip = %address.pg.host,
            "the member's pod runs"
        );
        Ok(MemberHandle {
            instance: spec.instance.clone(),
            member: spec.member.clone(),
            address,
        })
    }

    /// Waits until `member`'s pod has an IP, watching it (no polling).
    async fn wait_pod_address(&self, member: &str) -> anyhow::Result<MemberAddress> {
        let pods = self.api::<Pod>();
        let name = member_pod_name(member);
        let has_ip = |pod: Option<&Pod>| pod.and_then(pod_address).is_some();
        let timeout = self.config.pod_start_timeout;
        match until(timeout, await_condition(pods.clone(), &name, has_ip)).await {
            Ok(Ok(pod)) => {
                if let Some(address) = pod.as_ref().and_then(pod_address) {
                    return Ok(address);
                }
            }
            Ok(Err(e)) => {
                return Err(
                    anyhow::Error::new(e).context(format!("watch Pod {}/{name}", self.namespace))
                )
            }
            // Out of time: the pod as it is now says why.
            Err(_) => {}
        }
        let pod = pods
            .get_opt(&name)
            .await
            .with_context(|| format!("read Pod {}/{name}", self.namespace))?;
        if let Some(address) = pod.as_ref().and_then(pod_address) {
            return Ok(address);
        }
        let status = pod
            .and_then(|p| p.status)
            .map(|s| {
                let conditions: Vec<String> = s
                    .conditions
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|c| c.message.map(|m| format!("{}: {m}", c.type_)))
                    .collect();
                format!("phase {:?} {}", s.phase, conditions.join("; "))
            })
            .unwrap_or_else(|| "no pod".into());
        anyhow::bail!(
            "pod {}/{name} got no IP within {timeout:?} ({status})",
            self.namespace,
        );
    }

    pub(super) async fn address_of(
        &self,
        instance: &str,
        member: &str,
    ) -> Result<MemberAddress, PlatformError> {
        validate_member_of(instance, member)?;
        let pod = self
            .api::<Pod>()
            .get_opt(&member_pod_name(member))
            .await
            .with_context(|| format!("read the pod of member {member}"))?;
        if let Some(address) = pod.as_ref().and_then(pod_address) {
            return Ok(address);
        }
        // A member without a running pod keeps its stable in-cluster name, as a stopped local
        // member keeps its ports.
        self.api::<StatefulSet>()
            .get(member)
            .await
            .map_err(|e| classify(e, "member", member, format!("read StatefulSet {member}")))?;
        Ok(self.dns_address(instance, member))
    }

    fn dns_address(&self, instance: &str, member: &str) -> MemberAddress {
        let settings = self.settings(instance, None);
        let pg = member_pg_address(&settings, member);
        MemberAddress {
            api_url: format!("https://{}:{API_PORT}", pg.host),
            pg,
        }
    }

    pub(super) async fn members_of(
        &self,
        instance: &str,
    ) -> Result<Vec<MemberInfo>, PlatformError> {
        let selector = member_pods_selector(instance);
        let params = ListParams::default().labels(&selector);
        let sets = self
            .api::<StatefulSet>()
            .list(&params)
            .await
            .with_context(|| format!("list the StatefulSets of instance {instance}"))?;
        let pods = self
            .api::<Pod>()
            .list(&params)
            .await
            .with_context(|| format!("list the pods of instance {instance}"))?;
        let mut members = Vec::new();
        for set in sets.items {
            let Some(member) = set.metadata.name.clone() else {
                continue;
            };
            let pod = pods.items.iter().find(|pod| {
                pod.metadata.labels.as_ref().and_then(|l| l.get(MEMBER_KEY)) == Some(&member)
            });
            let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let state = if replicas == 0 {
                MemberState::Stopped
            } else if pod.is_some_and(pod_runs) {
                MemberState::Running
            } else {
                MemberState::Down
            };
            let address = pod
                .and_then(pod_address)
                .unwrap_or_else(|| self.dns_address(instance, &member));
            members.push(MemberInfo {
                placement: Placement {
                    zone: pinned_zone(&set),
                    size: None,
                },
                member,
                address,
                state,
            });
        }
        members.sort_by(|a, b| a.member.cmp(&b.member));
        Ok(members)
    }

    /// Scales the member to 0 (so nothing starts it again), marks it with a new fence token (so
    /// whoever starts it again finds its Postgres kept stopped until it is made a standby) and
    /// deletes its pod with no grace.
    pub(super) async fn kill(&self, instance: &str, member: &str) -> Result<(), PlatformError> {
        validate_member_of(instance, member)?;
        let sets = self.api::<StatefulSet>();
        let scaled = sets
            .patch(
                member,
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_string()),
                    ..PatchParams::default()
                },
                &Patch::Merge(json!({
                    "metadata": { "annotations": { FENCE_ANNOTATION: new_fence_token() } },
                    "spec": { "replicas": 0 },
                })),
            )
            .await
            .map_err(|e| classify(e, "member", member, format!("scale {member} to 0")))?;
        // Deleted once the StatefulSet controller has seen the new count, so it does not start
        // the pod again; after a short wait, deleted anyway (a late restart is scaled away).
        let generation = scaled.metadata.generation;
        let observed = move |set: Option<&StatefulSet>| {
            set.and_then(|s| s.status.as_ref())
                .and_then(|s| s.observed_generation)
                >= generation
        };
        if let Ok(Err(e)) = until(
            Duration::from_secs(5),
            await_condition(sets, member, observed),
        )
        .await
        {
            tracing::debug!(member, "watch StatefulSet {member}: {e}");
        }
        self.delete_if_present::<Pod>(
            &member_pod_name(member),
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await?;
        tracing::warn!(
            instance,
            member,
            "killed the member's pod (kept at 0 replicas)"
        );
        let note = format!("member {member} killed: its pod deleted at once, kept at 0 replicas");
        self.record(instance, InstanceEvent::MemberFenced, note);
        Ok(())
    }

    pub(super) async fn delete_member_objects(
        &self,
        instance: &str,
        member: &str,
        keep_data: bool,
    ) -> Result<(), PlatformError> {
        validate_member_of(instance, member)?;
        // Its claims: the one it uses, and the one set aside by an in-place restore.
        let set = self
            .api::<StatefulSet>()
            .get_opt(member)
            .await
            .with_context(|| format!("read StatefulSet {}/{member}", self.namespace))?;
        let mut claims = vec![data_claim_name(member)];
        for volume in set
            .iter()
            .flat_map(|s| std::iter::once(data_volume_of(s)).chain(volume_set_aside(s)))
        {
            let claim = claim_name(&volume, member);
            if !claims.contains(&claim) {
                claims.push(claim);
            }
        }
        self.delete_if_present::<StatefulSet>(
            member,
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            },
        )
        .await?;
        // The pod stops with its grace period (the sidecar shuts Postgres down cleanly, then
        // the kubelet kills what is left).
        let pod = member_pod_name(member);
        self.delete_if_present::<Pod>(&pod, &DeleteParams::default())
            .await?;
        let grace = crate::platform::kubernetes::member::TERMINATION_GRACE_SECS;
        let bound = Duration::from_secs(grace.unsigned_abs() + 30);
        let gone = |pod: Option<&Pod>| pod.is_none();
        match until(bound, await_condition(self.api::<Pod>(), &pod, gone)).await {
            Ok(watched) => {
                watched.with_context(|| format!("watch Pod {pod}"))?;
            }
            Err(_) => return Err(anyhow::anyhow!("pod {pod} is still terminating").into()),
        }
        if keep_data {
            tracing::info!(instance, member, "deleted the member, keeping its PVC");
        } else {
            for claim in &claims {
                self.delete_if_present::<PersistentVolumeClaim>(claim, &DeleteParams::default())
                    .await?;
            }
            self.delete_if_present::<Secret>(
                &crate::platform::kubernetes::tls::member_tls_secret_name(member),
                &DeleteParams::default(),
            )
            .await?;
            tracing::info!(
                instance,
                member,
                "deleted the member, its PVC and its certificates"
            );
        }
        let note = format!(
            "member {member} deleted{}",
            if keep_data { ", its PVC kept" } else { "" }
        );
        self.record(instance, InstanceEvent::MemberDeleted, note);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_members_claim_and_selector_follow_the_stateful_set_naming() {
        assert_eq!(data_claim_name("orders-1"), "data-orders-1-0");
        assert_eq!(claim_name("data-2", "orders-1"), "data-2-orders-1-0");
        assert_eq!(
            member_pods_selector("orders"),
            "app.kubernetes.io/component=member,toygres.io/instance=orders"
        );
    }
}
