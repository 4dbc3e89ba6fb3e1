//! The endpoints: the `-rw`, `-ro` and `-members` Services, and the role labels on member pods
//! that decide where `-rw` and `-ro` lead.
//!
//! Routing changes labels in two passes: first every pod that loses or changes its role loses
//! its label (the old primary leaves `-rw` before anything else happens), then the pods that
//! gain a role get it. So `-rw` never lists two pods, even for a moment.
//!
//! The routes are also recorded on the instance's root ConfigMap ([`ROUTES_ANNOTATION`]): a pod
//! that the StatefulSet controller re-creates starts without a role label, and the relabeler
//! ([`KubernetesPlatform::spawn_relabeler`]) gives it back the role the recorded routes name. It
//! only ever adds a missing label, under the same per-instance lock as routing, so it cannot
//! undo a removal. It watches member pods, so a re-created pod gets its label as soon as it
//! appears, and also passes over every instance at the supervise interval.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use toygres_common::names::PgAddress;

use super::events::InstanceEvent;
use super::members::member_pods_selector;
use super::{classify, KubernetesPlatform, FIELD_MANAGER};
use crate::platform::kubernetes::labels::{
    role_label_patch, Component, RoleLabel, APP_COMPONENT_KEY, APP_MANAGED_BY_KEY, INSTANCE_KEY,
    MANAGED_BY, MEMBER_KEY, ROLE_KEY,
};
use crate::platform::kubernetes::services::{ro_selector_patch, ro_service_role};
use crate::platform::kubernetes::{
    members_service_name, ro_service_name, root_config_map_name, rw_service_name, PG_PORT,
};
use crate::platform::{validate_member_of, EndpointRoutes, Endpoints, PlatformError};

/// A pod's role label as it is, and as the routes want it.
type PodRoles = (Option<RoleLabel>, Option<RoleLabel>);

/// The annotation of the root ConfigMap holding the instance's current [`EndpointRoutes`] (JSON).
pub const ROUTES_ANNOTATION: &str = "toygres.io/routes";

/// The role `routes` give `member`.
pub fn desired_role(routes: &EndpointRoutes, member: &str) -> Option<RoleLabel> {
    if routes.rw.as_deref() == Some(member) {
        Some(RoleLabel::Primary)
    } else if routes.ro.iter().any(|m| m == member) {
        Some(RoleLabel::Standby)
    } else {
        None
    }
}

/// Whether a live member pod carries no role label (the relabeler may owe it one).
fn unlabelled(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && current_role(pod).is_none()
}

/// The instance a member pod belongs to.
fn pod_instance(pod: &Pod) -> Option<String> {
    pod.metadata.labels.as_ref()?.get(INSTANCE_KEY).cloned()
}

/// The role label a pod carries.
fn current_role(pod: &Pod) -> Option<RoleLabel> {
    match pod.metadata.labels.as_ref()?.get(ROLE_KEY)?.as_str() {
        "primary" => Some(RoleLabel::Primary),
        "standby" => Some(RoleLabel::Standby),
        // An unknown value is as good as none: it is replaced.
        _ => None,
    }
}

/// The label changes that take pods from their `current` roles to the `desired` ones: first
/// the removals, then the additions (by pod name).
pub fn label_changes(
    pods: &BTreeMap<String, (Option<RoleLabel>, Option<RoleLabel>)>,
) -> (Vec<String>, Vec<(String, RoleLabel)>) {
    let mut removals = Vec::new();
    let mut additions = Vec::new();
    for (pod, (current, desired)) in pods {
        if current == desired {
            continue;
        }
        if current.is_some() {
            removals.push(pod.clone());
        }
        if let Some(role) = desired {
            additions.push((pod.clone(), *role));
        }
    }
    (removals, additions)
}

impl KubernetesPlatform {
    /// Applies the instance's root, Services and PodDisruptionBudget; returns the Services'
    /// in-cluster addresses.
    pub(super) async fn ensure_services(&self, instance: &str) -> Result<Endpoints, PlatformError> {
        let settings = self.settings(instance, None);
        settings.validate()?;
        let owner = self.ensure_root(&settings).await?;
        self.apply_instance_objects(&settings, &owner).await?;
        let address = |service: String| PgAddress {
            host: self.service_host(&service),
            port: PG_PORT,
        };
        Ok(Endpoints {
            rw: address(rw_service_name(instance)),
            ro: address(ro_service_name(instance)),
        })
    }

    /// A Service's name in the cluster's DNS.
    pub(super) fn service_host(&self, service: &str) -> String {
        format!("{service}.{}.svc", self.namespace)
    }

    /// The DNS names of the instance's rw and ro Services.
    pub(super) fn endpoint_service_hosts(&self, instance: &str) -> (String, String) {
        (
            self.service_host(&rw_service_name(instance)),
            self.service_host(&ro_service_name(instance)),
        )
    }

    pub(super) async fn delete_services(&self, instance: &str) -> Result<(), PlatformError> {
        for name in [
            rw_service_name(instance),
            ro_service_name(instance),
            members_service_name(instance),
        ] {
            self.delete_if_present::<Service>(&name, &DeleteParams::default())
                .await?;
        }
        Ok(())
    }

    /// Moves the role labels so that `-rw` leads to `routes.rw` and `-ro` to `routes.ro`.
    /// Members whose pod is not there (killed, being rescheduled) are skipped: a pod is
    /// labelled when the controller routes to it again.
    pub(super) async fn route(
        &self,
        instance: &str,
        routes: &EndpointRoutes,
    ) -> Result<(), PlatformError> {
        for member in routes.rw.iter().chain(&routes.ro) {
            validate_member_of(instance, member)?;
        }
        let _lock = self.lock(instance).await;
        // The members' StatefulSets (each routed member must have one) and pods in one round
        // trip: two lists at once, not a read per member and then a list.
        let params = ListParams::default().labels(&member_pods_selector(instance));
        let (sets, pods) = tokio::try_join!(
            async {
                self.api::<StatefulSet>()
                    .list(&params)
                    .await
                    .with_context(|| format!("list the StatefulSets of instance {instance}"))
            },
            async {
                self.api::<Pod>()
                    .list(&params)
                    .await
                    .with_context(|| format!("list the pods of instance {instance}"))
            },
        )?;
        for member in routes.rw.iter().chain(&routes.ro) {
            if !sets
                .items
                .iter()
                .any(|set| set.metadata.name.as_deref() == Some(member.as_str()))
            {
                return Err(PlatformError::not_found("member", member.clone()));
            }
        }
        let roles: BTreeMap<String, PodRoles> = pods
            .items
            .iter()
            .filter_map(|pod| {
                let name = pod.metadata.name.clone()?;
                let member = pod.metadata.labels.as_ref()?.get(MEMBER_KEY)?;
                Some((name, (current_role(pod), desired_role(routes, member))))
            })
            .collect();
        let (removals, additions) = label_changes(&roles);
        let primary_of = |pick: fn(&PodRoles) -> Option<RoleLabel>| {
            roles
                .iter()
                .find(|(_, roles)| pick(roles) == Some(RoleLabel::Primary))
                .map(|(pod, _)| pod.clone())
        };
        let old_primary = primary_of(|(current, _)| *current);
        let new_primary = primary_of(|(_, desired)| *desired);
        // `-ro` falling back to the primary switches first, before the standbys lose their
        // labels; back to the standbys it switches last, once they have them: no gap either way.
        let ro_leads_to = ro_service_role(routes);
        if ro_leads_to == RoleLabel::Primary {
            self.point_ro_service(instance, ro_leads_to).await?;
        }
        // The routes are recorded while the old roles go (the relabeler reads them under the
        // same lock), then the new roles come, each pass's patches at once.
        let removed =
            futures::future::try_join_all(removals.iter().map(|pod| self.label_pod(pod, None)));
        tokio::try_join!(self.record_routes(instance, routes), removed)?;
        futures::future::try_join_all(
            additions
                .iter()
                .map(|(pod, role)| self.label_pod(pod, Some(*role))),
        )
        .await?;
        if ro_leads_to != RoleLabel::Primary {
            self.point_ro_service(instance, ro_leads_to).await?;
        }
        if old_primary != new_primary {
            let was = old_primary.as_deref().unwrap_or("no pod");
            match &new_primary {
                Some(pod) => {
                    let note = format!("the rw Service leads to pod {pod} (was {was})");
                    self.record(instance, InstanceEvent::PrimaryChanged, note);
                }
                None => {
                    let note = format!("the rw Service leads nowhere (was pod {was})");
                    self.record(instance, InstanceEvent::PrimaryUnrouted, note);
                }
            }
        }
        Ok(())
    }

    /// Points `<instance>-ro`'s selector at the pods labelled `leads_to`.
    async fn point_ro_service(
        &self,
        instance: &str,
        leads_to: RoleLabel,
    ) -> Result<(), PlatformError> {
        let name = ro_service_name(instance);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        self.api::<Service>()
            .patch(
                &name,
                &params,
                &Patch::Merge(ro_selector_patch(instance, leads_to)),
            )
            .await
            .map_err(|e| classify(e, "endpoints", instance, format!("point Service {name}")))?;
        Ok(())
    }

    /// The routes recorded on the instance's root ([`ROUTES_ANNOTATION`]), if any.
    pub(super) async fn recorded_routes(
        &self,
        instance: &str,
    ) -> anyhow::Result<Option<EndpointRoutes>> {
        let root = self
            .api::<ConfigMap>()
            .get_opt(&root_config_map_name(instance))
            .await
            .with_context(|| format!("read the root of instance {instance}"))?;
        Ok(root
            .as_ref()
            .and_then(|r| r.metadata.annotations.as_ref())
            .and_then(|a| a.get(ROUTES_ANNOTATION))
            .and_then(|text| serde_json::from_str::<EndpointRoutes>(text).ok()))
    }

    /// Writes `routes` to the root's [`ROUTES_ANNOTATION`].
    async fn record_routes(
        &self,
        instance: &str,
        routes: &EndpointRoutes,
    ) -> Result<(), PlatformError> {
        let routes = serde_json::to_string(routes).context("encode the routes")?;
        let patch = serde_json::json!({"metadata": {"annotations": {ROUTES_ANNOTATION: routes}}});
        let root = root_config_map_name(instance);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        self.api::<ConfigMap>()
            .patch(&root, &params, &Patch::Merge(patch))
            .await
            .map_err(|e| classify(e, "endpoints", instance, format!("record routes on {root}")))?;
        Ok(())
    }

    /// Every `interval`, gives each instance's pods that lack a role label the role the
    /// recorded routes name (a pod re-created by its StatefulSet starts unlabelled).
    pub fn spawn_relabeler(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        use futures::StreamExt as _;
        use kube::runtime::{watcher, WatchStreamExt as _};

        let platform = Arc::downgrade(self);
        // Member pods as they change: a pod the StatefulSet controller re-creates is labelled
        // as soon as it appears, not at the next pass. The passes stay, as the safety net for
        // a watch that is down or restarting.
        let selector = format!(
            "{APP_COMPONENT_KEY}={},{APP_MANAGED_BY_KEY}={MANAGED_BY}",
            Component::Member.label_value()
        );
        let pods = watcher(
            self.api::<Pod>(),
            watcher::Config::default().labels(&selector),
        )
        .default_backoff();
        tokio::spawn(async move {
            let mut pods = std::pin::pin!(pods);
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // `None`: every instance (a pass); else the instance of a pod without a role.
                let instance = tokio::select! {
                    _ = ticks.tick() => None,
                    event = pods.next() => match event {
                        Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                            match pod_instance(&pod).filter(|_| unlabelled(&pod)) {
                                Some(instance) => Some(instance),
                                None => continue,
                            }
                        }
                        Some(Err(e)) => {
                            tracing::debug!("watch member pods: {e}");
                            continue;
                        }
                        Some(_) => continue,
                        None => return,
                    },
                };
                let Some(platform) = platform.upgrade() else {
                    return;
                };
                let relabelled = match &instance {
                    None => platform.relabel_all().await,
                    Some(instance) => platform.relabel_recorded(instance).await,
                };
                if let Err(e) = relabelled {
                    tracing::warn!("give re-created pods their role labels: {e:#}");
                }
            }
        })
    }

    async fn relabel_all(&self) -> anyhow::Result<()> {
        let selector = format!(
            "{APP_COMPONENT_KEY}={},{APP_MANAGED_BY_KEY}={MANAGED_BY}",
            Component::Instance.label_value()
        );
        let roots = self
            .api::<ConfigMap>()
            .list(&ListParams::default().labels(&selector))
            .await
            .context("list the instances' root ConfigMaps")?;
        for root in roots.items {
            let recorded = root
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ROUTES_ANNOTATION))
                .and_then(|text| serde_json::from_str::<EndpointRoutes>(text).ok());
            let instance = root
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(INSTANCE_KEY));
            if let (Some(routes), Some(instance)) = (recorded, instance) {
                self.relabel(instance, &routes).await?;
            }
        }
        Ok(())
    }

    /// [`Self::relabel`] with the routes recorded on `instance`'s root, if any.
    async fn relabel_recorded(&self, instance: &str) -> anyhow::Result<()> {
        match self.recorded_routes(instance).await? {
            Some(routes) => self.relabel(instance, &routes).await,
            None => Ok(()),
        }
    }

    /// Labels the pods of `instance` that have no role but should have one.
    async fn relabel(&self, instance: &str, recorded: &EndpointRoutes) -> anyhow::Result<()> {
        let _lock = self.lock(instance).await;
        // Routing may have changed the routes since the list: the root tells the current ones.
        let current = self.recorded_routes(instance).await?;
        let Some(routes) = current.filter(|routes| routes == recorded) else {
            return Ok(());
        };
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&member_pods_selector(instance)))
            .await?;
        for pod in pods.items {
            if pod.metadata.deletion_timestamp.is_some() || current_role(&pod).is_some() {
                continue;
            }
            let member = pod.metadata.labels.as_ref().and_then(|l| l.get(MEMBER_KEY));
            let (Some(name), Some(role)) = (
                pod.metadata.name.as_deref(),
                member.and_then(|m| desired_role(&routes, m)),
            ) else {
                continue;
            };
            tracing::info!(
                instance,
                pod = name,
                "a re-created pod gets its role label back"
            );
            self.label_pod(name, Some(role)).await?;
        }
        Ok(())
    }

    async fn label_pod(&self, pod: &str, role: Option<RoleLabel>) -> Result<(), PlatformError> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        match self
            .api::<Pod>()
            .patch(pod, &params, &Patch::Merge(role_label_patch(role)))
            .await
        {
            Ok(_) => {
                tracing::info!(
                    pod,
                    role = role.map(RoleLabel::label_value).unwrap_or("none"),
                    "labelled the pod"
                );
                Ok(())
            }
            // A pod that went away has no label left to remove, and a new one starts unlabelled.
            Err(kube::Error::Api(status)) if status.is_not_found() && role.is_none() => Ok(()),
            Err(e) => Err(anyhow::Error::new(e)
                .context(format!("label pod {pod}"))
                .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_primary_loses_its_label_before_the_new_one_gets_it() {
        let routes = EndpointRoutes {
            rw: Some("db-1".into()),
            ro: vec!["db-2".into()],
            hold_rw: false,
            ..Default::default()
        };
        assert_eq!(desired_role(&routes, "db-0"), None);
        let pods = BTreeMap::from([
            (
                "db-0-0".to_string(),
                (Some(RoleLabel::Primary), desired_role(&routes, "db-0")),
            ),
            (
                "db-1-0".to_string(),
                (Some(RoleLabel::Standby), desired_role(&routes, "db-1")),
            ),
            (
                "db-2-0".to_string(),
                (Some(RoleLabel::Standby), desired_role(&routes, "db-2")),
            ),
        ]);
        let (removals, additions) = label_changes(&pods);
        assert_eq!(removals, ["db-0-0", "db-1-0"]);
        assert_eq!(additions, [("db-1-0".to_string(), RoleLabel::Primary)]);
    }

    /// The `-ro` Service selects the standbys the ro rule lets in: a standby over its lag bound
    /// loses its label, and gets it back once under the re-entry mark.
    #[test]
    fn the_ro_service_selects_the_standbys_the_ro_rule_qualifies() {
        use toygres_common::ro_api::{RoBackend, RoBackendState, RoSettings};

        use crate::endpoints::ro_rule::{endpoint_view, qualified};

        let backend = |member: &str, state| RoBackend {
            member: member.into(),
            state,
            lag_bytes: None,
            lag_seconds: None,
        };
        let view = endpoint_view(
            vec![
                backend("db-1", RoBackendState::LagOverBound),
                backend("db-2", RoBackendState::In),
                backend("db-3", RoBackendState::Unhealthy),
            ],
            &RoSettings::default(),
        );
        let routes = EndpointRoutes {
            rw: Some("db-0".into()),
            ro: qualified(&view),
            ..Default::default()
        };
        let pods = BTreeMap::from(["db-0", "db-1", "db-2", "db-3"].map(|member| {
            (
                format!("{member}-0"),
                (Some(RoleLabel::Standby), desired_role(&routes, member)),
            )
        }));
        let (removals, additions) = label_changes(&pods);
        assert_eq!(removals, ["db-0-0", "db-1-0", "db-3-0"]);
        assert_eq!(additions, [("db-0-0".to_string(), RoleLabel::Primary)]);
        assert_eq!(desired_role(&routes, "db-2"), Some(RoleLabel::Standby));
    }
}
