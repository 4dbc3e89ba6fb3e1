//! An in-place restore's old data on Kubernetes: kept in the member's own PVC, untouched,
//! while a fresh PVC takes the restore.
//!
//! A StatefulSet's claim template cannot change, so setting a member's data aside stops its
//! pod (scaled to 0: the sidecar shuts Postgres down cleanly), deletes the StatefulSet with
//! its dependents orphaned (the PVC stays, bound to its volume) and creates it again, still at
//! 0 replicas, with a claim template of a new name (`data` → `data-1`): the next start gets a
//! new, empty PVC and bootstraps from the backup. The StatefulSet records the claim set aside
//! in an annotation. Ending it either deletes that PVC (the restored primary is up: the
//! provisioner reclaims its volume), or puts it back: the StatefulSet made again with the old
//! claim template, the restore's PVC deleted. Nothing here needs more than the chart's Role
//! (StatefulSets created and deleted, PVCs deleted); no PersistentVolume is touched.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::wait::await_condition;
use serde_json::json;

use super::events::InstanceEvent;
use super::members::{claim_name, until, BOOTSTRAP_ANNOTATION};
use super::{classify, KubernetesPlatform, FIELD_MANAGER};
use crate::platform::kubernetes::member::{
    data_volume_of, next_data_volume, use_data_volume, volume_set_aside, DATA_ASIDE_ANNOTATION,
    TERMINATION_GRACE_SECS,
};
use crate::platform::kubernetes::member_pod_name;
use crate::platform::{validate_member_of, PlatformError};

/// The bootstrap the member was created with, kept while its data is set aside (the restore
/// records its own bootstrap), and recorded again when the data is put back.
pub const BOOTSTRAP_BEFORE_ASIDE_ANNOTATION: &str = "toygres.io/bootstrap-before-aside";

fn annotation(set: &StatefulSet, key: &str) -> Option<String> {
    set.metadata
        .annotations
        .as_ref()?
        .get(key)
        .filter(|v| !v.is_empty())
        .cloned()
}

/// `set` as a new object to apply: its spec and labels, `annotations`, 0 replicas, and its
/// data on the claim template `volume`.
fn made_again(
    set: &StatefulSet,
    volume: &str,
    annotations: std::collections::BTreeMap<String, String>,
) -> StatefulSet {
    let mut again = StatefulSet {
        metadata: kube::api::ObjectMeta {
            name: set.metadata.name.clone(),
            namespace: set.metadata.namespace.clone(),
            labels: set.metadata.labels.clone(),
            annotations: Some(annotations),
            owner_references: set.metadata.owner_references.clone(),
            ..kube::api::ObjectMeta::default()
        },
        spec: set.spec.clone(),
        status: None,
    };
    if let Some(spec) = again.spec.as_mut() {
        spec.replicas = Some(0);
    }
    use_data_volume(&mut again, volume);
    again
}

impl KubernetesPlatform {
    async fn member_set(&self, member: &str) -> Result<StatefulSet, PlatformError> {
        self.api::<StatefulSet>()
            .get(member)
            .await
            .map_err(|e| classify(e, "member", member, format!("read StatefulSet {member}")))
    }

    /// Scales the member to 0 and waits until its pod is gone (stopped with its grace period:
    /// the sidecar shuts Postgres down cleanly).
    async fn stop_and_wait(&self, member: &str) -> Result<(), PlatformError> {
        let sets = self.api::<StatefulSet>();
        sets.patch(
            member,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({ "spec": { "replicas": 0 } })),
        )
        .await
        .map_err(|e| classify(e, "member", member, format!("scale {member} to 0")))?;
        let pod = member_pod_name(member);
        let bound = Duration::from_secs(TERMINATION_GRACE_SECS.unsigned_abs() + 30);
        let gone = |pod: Option<&Pod>| pod.is_none();
        match until(bound, await_condition(self.api::<Pod>(), &pod, gone)).await {
            Ok(watched) => {
                watched.with_context(|| format!("watch Pod {pod}"))?;
                Ok(())
            }
            Err(_) => Err(anyhow::anyhow!("pod {pod} is still terminating").into()),
        }
    }

    /// Deletes the (stopped) StatefulSet, orphaning its PVC, and applies `again` in its place
    /// (applied, not created: its fields are then the platform's own, and the next apply by
    /// `create_member` replaces them, as it would have replaced the old StatefulSet's);
    /// `aside` then sets or clears the two annotations of a data set aside, which stay through
    /// that apply.
    async fn make_again(
        &self,
        member: &str,
        again: &StatefulSet,
        aside: [(&str, Option<String>); 2],
    ) -> Result<(), PlatformError> {
        let sets = self.api::<StatefulSet>();
        let old_uid = sets
            .get_opt(member)
            .await
            .with_context(|| format!("read StatefulSet {member}"))?
            .and_then(|s| s.metadata.uid);
        self.delete_if_present::<StatefulSet>(
            member,
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Orphan),
                ..DeleteParams::default()
            },
        )
        .await?;
        // Gone once the garbage collector has orphaned its dependents (the PVC loses its
        // owner reference when the retention policy set one).
        let gone = move |set: Option<&StatefulSet>| {
            set.is_none_or(|s| s.metadata.uid.is_some() && s.metadata.uid != old_uid)
        };
        match until(
            Duration::from_secs(60),
            await_condition(sets.clone(), member, gone),
        )
        .await
        {
            Ok(watched) => {
                watched.with_context(|| format!("watch StatefulSet {member}"))?;
            }
            Err(_) => {
                return Err(anyhow::anyhow!("StatefulSet {member} is still being deleted").into())
            }
        }
        self.apply(again).await?;
        let annotations: serde_json::Map<String, serde_json::Value> = aside
            .into_iter()
            .map(|(key, value)| (key.to_string(), json!(value)))
            .collect();
        sets.patch(
            member,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({ "metadata": { "annotations": annotations } })),
        )
        .await
        .map_err(|e| classify(e, "member", member, format!("annotate {member}")))?;
        Ok(())
    }

    async fn claim_exists(&self, claim: &str) -> Result<bool, PlatformError> {
        Ok(self
            .api::<PersistentVolumeClaim>()
            .get_opt(claim)
            .await
            .with_context(|| format!("read PVC {claim}"))?
            .is_some_and(|c| c.metadata.deletion_timestamp.is_none()))
    }

    /// See [`crate::platform::Platform::set_data_aside`] and the module's comment.
    pub(super) async fn set_aside(
        &self,
        instance: &str,
        member: &str,
    ) -> Result<(), PlatformError> {
        validate_member_of(instance, member)?;
        self.stop_and_wait(member).await?;
        let set = self.member_set(member).await?;
        if volume_set_aside(&set).is_some() {
            // A retry: set aside already.
            return Ok(());
        }
        let current = data_volume_of(&set);
        let bootstrap = annotation(&set, BOOTSTRAP_ANNOTATION);
        if !self.claim_exists(&claim_name(&current, member)).await? {
            // No data to keep: the next start bootstraps afresh on the claim it gets, with
            // the bootstrap it is given.
            self.api::<StatefulSet>()
                .patch(
                    member,
                    &PatchParams {
                        field_manager: Some(FIELD_MANAGER.to_string()),
                        ..PatchParams::default()
                    },
                    &Patch::Merge(json!({
                        "metadata": { "annotations": { BOOTSTRAP_ANNOTATION: null } }
                    })),
                )
                .await
                .map_err(|e| classify(e, "member", member, format!("annotate {member}")))?;
            return Ok(());
        }
        let mut annotations = set.metadata.annotations.clone().unwrap_or_default();
        annotations.remove(BOOTSTRAP_ANNOTATION);
        let next = next_data_volume(&current);
        let aside = [
            (DATA_ASIDE_ANNOTATION, Some(current.clone())),
            (BOOTSTRAP_BEFORE_ASIDE_ANNOTATION, bootstrap),
        ];
        self.make_again(member, &made_again(&set, &next, annotations), aside)
            .await?;
        let (kept, fresh) = (claim_name(&current, member), claim_name(&next, member));
        tracing::info!(instance, member, kept, fresh, "set the member's data aside");
        let note = format!(
            "member {member}: its data set aside in PVC {kept} (kept), the next start on a new PVC {fresh}"
        );
        self.record(instance, InstanceEvent::DataSetAside, note);
        Ok(())
    }

    /// See [`crate::platform::Platform::end_data_aside`] and the module's comment.
    pub(super) async fn end_aside(
        &self,
        instance: &str,
        member: &str,
        put_back: bool,
    ) -> Result<(), PlatformError> {
        validate_member_of(instance, member)?;
        if put_back {
            self.stop_and_wait(member).await?;
        }
        let set = self.member_set(member).await?;
        let current = data_volume_of(&set);
        let Some(aside) = volume_set_aside(&set) else {
            if put_back && !self.claim_exists(&claim_name(&current, member)).await? {
                // Started now, the member would bootstrap a new, empty cluster.
                return Err(PlatformError::Invalid(format!(
                    "{member} has no data to put back (none was set aside)"
                )));
            }
            return Ok(());
        };
        let kept = claim_name(&aside, member);
        if !put_back {
            if aside != current {
                self.delete_if_present::<PersistentVolumeClaim>(&kept, &DeleteParams::default())
                    .await?;
            }
            // Metadata only: the pod template, and the running pod, stay as they are.
            self.api::<StatefulSet>()
                .patch(
                    member,
                    &PatchParams {
                        field_manager: Some(FIELD_MANAGER.to_string()),
                        ..PatchParams::default()
                    },
                    &Patch::Merge(json!({ "metadata": { "annotations": {
                        DATA_ASIDE_ANNOTATION: null,
                        BOOTSTRAP_BEFORE_ASIDE_ANNOTATION: null,
                    } } })),
                )
                .await
                .map_err(|e| classify(e, "member", member, format!("annotate {member}")))?;
            tracing::info!(instance, member, claim = kept, "deleted the data set aside");
            let note = format!("member {member}: the data set aside deleted (PVC {kept})");
            self.record(instance, InstanceEvent::DataSetAside, note);
            return Ok(());
        }
        if !self.claim_exists(&kept).await? {
            return Err(PlatformError::Invalid(format!(
                "{member}'s data set aside (PVC {kept}) is gone: nothing to put back"
            )));
        }
        // The restore's claim goes first: a retry still finds the annotation and carries on.
        if aside != current {
            let restored = claim_name(&current, member);
            self.delete_if_present::<PersistentVolumeClaim>(&restored, &DeleteParams::default())
                .await?;
            // Gone before a later restore names the same claim again.
            let gone = |claim: Option<&PersistentVolumeClaim>| claim.is_none();
            let claims = self.api::<PersistentVolumeClaim>();
            match until(
                Duration::from_secs(60),
                await_condition(claims, &restored, gone),
            )
            .await
            {
                Ok(watched) => {
                    watched.with_context(|| format!("watch PVC {restored}"))?;
                }
                Err(_) => {
                    return Err(anyhow::anyhow!("PVC {restored} is still being deleted").into())
                }
            }
        }
        let mut annotations = set.metadata.annotations.clone().unwrap_or_default();
        annotations.remove(DATA_ASIDE_ANNOTATION);
        match annotations.remove(BOOTSTRAP_BEFORE_ASIDE_ANNOTATION) {
            Some(bootstrap) => annotations.insert(BOOTSTRAP_ANNOTATION.to_string(), bootstrap),
            None => annotations.remove(BOOTSTRAP_ANNOTATION),
        };
        let cleared = [
            (DATA_ASIDE_ANNOTATION, None),
            (BOOTSTRAP_BEFORE_ASIDE_ANNOTATION, None),
        ];
        self.make_again(member, &made_again(&set, &aside, annotations), cleared)
            .await?;
        tracing::warn!(
            instance,
            member,
            claim = kept,
            "put the data set aside back"
        );
        let note = format!("member {member}: its data set aside put back (PVC {kept})");
        self.record(instance, InstanceEvent::DataSetAside, note);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::kubernetes::member::{member_stateful_set, DATA_VOLUME};
    use crate::platform::kubernetes::{fixtures, MemberSettings};
    use crate::platform::Bootstrap;

    #[test]
    fn a_stateful_set_made_again_keeps_its_spec_on_another_claim_stopped() {
        let member = MemberSettings {
            ordinal: 0,
            bootstrap: Bootstrap::Init,
            zone: None,
            fence_token: None,
        };
        let mut set = member_stateful_set(&fixtures::orders(), &member, &fixtures::owner());
        set.metadata.uid = Some("u1".into());
        set.metadata.resource_version = Some("7".into());
        let annotations = std::collections::BTreeMap::from([(
            super::super::members::FENCE_ANNOTATION.to_string(),
            "17".into(),
        )]);
        let again = made_again(&set, "data-1", annotations);
        assert_eq!(again.metadata.uid, None);
        assert_eq!(again.metadata.resource_version, None);
        assert_eq!(
            again.metadata.owner_references,
            set.metadata.owner_references
        );
        assert_eq!(again.metadata.labels, set.metadata.labels);
        assert_eq!(
            again.metadata.annotations.as_ref().unwrap()["toygres.io/fence-token"],
            "17"
        );
        assert_eq!(volume_set_aside(&again), None);
        assert_eq!(data_volume_of(&set), DATA_VOLUME);
        assert_eq!(data_volume_of(&again), "data-1");
        let (spec, old) = (again.spec.unwrap(), set.spec.unwrap());
        assert_eq!(spec.replicas, Some(0));
        assert_eq!(spec.selector, old.selector);
        assert_eq!(
            spec.template.spec.as_ref().unwrap().containers[0].env,
            old.template.spec.as_ref().unwrap().containers[0].env
        );
    }
}
