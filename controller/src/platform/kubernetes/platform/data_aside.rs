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
//! (StatefulSets created and deleted, PVCs deleted, the root ConfigMap patched); no
//! PersistentVolume is touched.
//!
//! Making a StatefulSet again is three writes (delete, apply, annotate) and the controller may
//! die between any two: the activity then runs again and must end as an uninterrupted run
//! would. So the StatefulSet to make, and the annotations to set on it, are first recorded on
//! the instance's root ConfigMap (which outlives the StatefulSet), and removed only once all
//! three are done; every set-aside and put-back first finishes a remake so recorded. Without
//! it, a retry after the delete found no StatefulSet (the member gone, its PVC orphaned), and
//! one after the apply found the new claim template without the annotation naming the PVC kept.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::wait::await_condition;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::events::InstanceEvent;
use super::members::{claim_name, until, BOOTSTRAP_ANNOTATION};
use super::{classify, KubernetesPlatform, FIELD_MANAGER};
use crate::platform::kubernetes::member::{
    data_volume_of, next_data_volume, use_data_volume, volume_set_aside, DATA_ASIDE_ANNOTATION,
    TERMINATION_GRACE_SECS,
};
use crate::platform::kubernetes::{member_pod_name, root_config_map_name};
use crate::platform::{validate_member_of, PlatformError};

/// The bootstrap the member was created with, kept while its data is set aside (the restore
/// records its own bootstrap), and recorded again when the data is put back.
pub const BOOTSTRAP_BEFORE_ASIDE_ANNOTATION: &str = "toygres.io/bootstrap-before-aside";

/// The prefix of the root ConfigMap's annotation recording a member's StatefulSet to be made
/// again (`toygres.io/remake.<member>`: a member name is at most 40 + 1 + a few characters,
/// within the 63 an annotation's name may have).
const REMAKE_ANNOTATION_PREFIX: &str = "toygres.io/remake.";

/// TEST ONLY (fault injection): the environment variable naming a point of a remake at which
/// the controller aborts (`std::process::abort`, a crash like SIGKILL), so that an end-to-end
/// test can crash it in a window and check that the retry after a restart finishes the work.
/// The points: `aside-after-delete`, `aside-after-apply`, `put-back-after-delete`,
/// `put-back-after-apply`. Unset (as it always is outside tests), it does nothing.
pub const TEST_ABORT_AT_ENV: &str = "TOYGRES_TEST_ABORT_AT";

/// The root ConfigMap's annotation recording `member`'s remake.
fn remake_annotation(member: &str) -> String {
    format!("{REMAKE_ANNOTATION_PREFIX}{member}")
}

/// A member's StatefulSet to be made again, recorded before the old one is deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Remake {
    /// A put-back (else a setting aside): for the log and the abort points.
    put_back: bool,
    /// The StatefulSet to apply (0 replicas, on its new claim template).
    set: StatefulSet,
    /// The annotations then set (`Some`) or removed (`None`) by a merge patch: they are the
    /// controller's own, beside the applied fields, and stay through later applies.
    annotations: BTreeMap<String, Option<String>>,
}

impl Remake {
    /// The abort point of this remake after `step` (`delete` or `apply`).
    fn point(&self, step: &str) -> String {
        let kind = if self.put_back { "put-back" } else { "aside" };
        format!("{kind}-after-{step}")
    }
}

/// The claim template the StatefulSet to make holds its data on.
fn target_volume(remake: &Remake) -> String {
    data_volume_of(&remake.set)
}

/// Whether `existing` (the member's StatefulSet as it is) must still be deleted before the
/// remake's is applied: it is there, and is the old one (another claim template) or is being
/// deleted. Absent, or already the new one (a crash after the apply), it need not.
fn old_set_remains(existing: Option<&StatefulSet>, remake: &Remake) -> bool {
    existing.is_some_and(|set| {
        set.metadata.deletion_timestamp.is_some() || data_volume_of(set) != target_volume(remake)
    })
}

/// Aborts the process when [`TEST_ABORT_AT_ENV`] names `point` (test-only fault injection).
fn abort_if_asked(point: &str) {
    if std::env::var(TEST_ABORT_AT_ENV).is_ok_and(|at| at == point) {
        tracing::error!(point, "{TEST_ABORT_AT_ENV}: aborting here, as a test asked");
        std::process::abort();
    }
}

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
    annotations: BTreeMap<String, String>,
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

    /// Records `remake` on the instance's root, then carries it out (see
    /// [`Self::carry_out`]). The member is stopped.
    async fn make_again(
        &self,
        instance: &str,
        member: &str,
        remake: &Remake,
    ) -> Result<(), PlatformError> {
        let record = serde_json::to_string(remake).context("encode the StatefulSet to make")?;
        self.patch_root_annotation(instance, &remake_annotation(member), Some(record))
            .await?;
        self.carry_out(instance, member, remake).await
    }

    /// Sets (or, with `None`, removes) one annotation of the instance's root ConfigMap.
    async fn patch_root_annotation(
        &self,
        instance: &str,
        key: &str,
        value: Option<String>,
    ) -> Result<(), PlatformError> {
        let root = root_config_map_name(instance);
        self.api::<ConfigMap>()
            .patch(
                &root,
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_string()),
                    ..PatchParams::default()
                },
                &Patch::Merge(json!({ "metadata": { "annotations": { key: value } } })),
            )
            .await
            .map_err(|e| {
                classify(
                    e,
                    "instance",
                    instance,
                    format!("annotate ConfigMap {root}"),
                )
            })?;
        Ok(())
    }

    /// The remake of `member` recorded on the instance's root, if one was left unfinished.
    async fn recorded_remake(
        &self,
        instance: &str,
        member: &str,
    ) -> Result<Option<Remake>, PlatformError> {
        let root = root_config_map_name(instance);
        let config_map = self
            .api::<ConfigMap>()
            .get_opt(&root)
            .await
            .with_context(|| format!("read ConfigMap {root}"))?;
        let Some(text) = config_map
            .as_ref()
            .and_then(|c| c.metadata.annotations.as_ref())
            .and_then(|a| a.get(&remake_annotation(member)))
        else {
            return Ok(None);
        };
        let remake = serde_json::from_str(text).with_context(|| {
            format!("decode {member}'s StatefulSet to make, recorded on {root}")
        })?;
        Ok(Some(remake))
    }

    /// Finishes a remake of `member` that a crash left half done (the controller died while
    /// this activity, or another on the member, ran): nothing when none is recorded.
    async fn finish_remake(&self, instance: &str, member: &str) -> Result<(), PlatformError> {
        let Some(remake) = self.recorded_remake(instance, member).await? else {
            return Ok(());
        };
        tracing::warn!(
            instance,
            member,
            put_back = remake.put_back,
            "finishing the StatefulSet's remake a crash interrupted"
        );
        self.carry_out(instance, member, &remake).await?;
        let note = format!(
            "member {member}: its StatefulSet made again on claim template {} (finished after an interruption)",
            target_volume(&remake)
        );
        self.record(instance, InstanceEvent::DataSetAside, note);
        Ok(())
    }

    /// Deletes the member's (stopped) StatefulSet unless it is already gone or made again,
    /// orphaning its PVC, applies the remake's in its place (applied, not created: its fields
    /// are then the platform's own, and the next apply by `create_member` replaces them, as it
    /// would have replaced the old StatefulSet's), sets or clears the remake's annotations,
    /// which stay through that apply, and removes the record. Each step may be done again.
    async fn carry_out(
        &self,
        instance: &str,
        member: &str,
        remake: &Remake,
    ) -> Result<(), PlatformError> {
        let sets = self.api::<StatefulSet>();
        let existing = sets
            .get_opt(member)
            .await
            .with_context(|| format!("read StatefulSet {member}"))?;
        if old_set_remains(existing.as_ref(), remake) {
            let old_uid = existing.and_then(|s| s.metadata.uid);
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
                    return Err(
                        anyhow::anyhow!("StatefulSet {member} is still being deleted").into(),
                    )
                }
            }
        }
        abort_if_asked(&remake.point("delete"));
        self.apply(&remake.set).await?;
        abort_if_asked(&remake.point("apply"));
        sets.patch(
            member,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({ "metadata": { "annotations": remake.annotations } })),
        )
        .await
        .map_err(|e| classify(e, "member", member, format!("annotate {member}")))?;
        self.patch_root_annotation(instance, &remake_annotation(member), None)
            .await
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
        self.finish_remake(instance, member).await?;
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
        let remake = Remake {
            put_back: false,
            set: made_again(&set, &next, annotations),
            annotations: BTreeMap::from([
                (DATA_ASIDE_ANNOTATION.to_string(), Some(current.clone())),
                (BOOTSTRAP_BEFORE_ASIDE_ANNOTATION.to_string(), bootstrap),
            ]),
        };
        self.make_again(instance, member, &remake).await?;
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
        self.finish_remake(instance, member).await?;
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
        let remake = Remake {
            put_back: true,
            set: made_again(&set, &aside, annotations),
            annotations: BTreeMap::from([
                (DATA_ASIDE_ANNOTATION.to_string(), None),
                (BOOTSTRAP_BEFORE_ASIDE_ANNOTATION.to_string(), None),
            ]),
        };
        self.make_again(instance, member, &remake).await?;
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
        let annotations = BTreeMap::from([(
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

    fn orders_set() -> StatefulSet {
        let member = MemberSettings {
            ordinal: 0,
            bootstrap: Bootstrap::Init,
            zone: None,
            fence_token: None,
        };
        member_stateful_set(&fixtures::orders(), &member, &fixtures::owner())
    }

    fn aside_remake(set: &StatefulSet) -> Remake {
        Remake {
            put_back: false,
            set: made_again(set, "data-1", BTreeMap::new()),
            annotations: BTreeMap::from([
                (DATA_ASIDE_ANNOTATION.to_string(), Some("data".to_string())),
                (BOOTSTRAP_BEFORE_ASIDE_ANNOTATION.to_string(), None),
            ]),
        }
    }

    #[test]
    fn a_recorded_remake_reads_back_as_it_was_written() {
        let remake = aside_remake(&orders_set());
        let text = serde_json::to_string(&remake).unwrap();
        let read: Remake = serde_json::from_str(&text).unwrap();
        assert_eq!(read, remake);
        assert_eq!(target_volume(&read), "data-1");
        assert_eq!(data_volume_of(&read.set), "data-1");
        // The annotation patch removes what is `None`.
        let patch = json!({ "metadata": { "annotations": read.annotations } });
        assert_eq!(
            patch["metadata"]["annotations"][BOOTSTRAP_BEFORE_ASIDE_ANNOTATION],
            serde_json::Value::Null
        );
        assert_eq!(
            patch["metadata"]["annotations"][DATA_ASIDE_ANNOTATION],
            "data"
        );
    }

    #[test]
    fn only_the_old_stateful_set_is_deleted_before_the_apply() {
        let old = orders_set();
        let remake = aside_remake(&old);
        // Before the delete: the old one (claim template `data`) goes.
        assert!(old_set_remains(Some(&old), &remake));
        // Being deleted (a crash while it was): waited for again.
        let mut deleting = remake.set.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(old_set_remains(Some(&deleting), &remake));
        // After the delete (none), or after the apply (the new one): only applied again.
        assert!(!old_set_remains(None, &remake));
        assert!(!old_set_remains(Some(&remake.set), &remake));
        // A put-back goes the other way: the restore's StatefulSet (on `data-1`) is the old one.
        let back = Remake {
            put_back: true,
            set: made_again(&remake.set, "data", BTreeMap::new()),
            annotations: BTreeMap::new(),
        };
        assert!(old_set_remains(Some(&remake.set), &back));
        assert!(!old_set_remains(Some(&back.set), &back));
    }

    #[test]
    fn the_abort_points_and_the_record_are_named_as_documented() {
        let remake = aside_remake(&orders_set());
        assert_eq!(remake.point("delete"), "aside-after-delete");
        assert_eq!(remake.point("apply"), "aside-after-apply");
        let back = Remake {
            put_back: true,
            ..remake
        };
        assert_eq!(back.point("delete"), "put-back-after-delete");
        assert_eq!(back.point("apply"), "put-back-after-apply");
        // Unset (or naming another point), the hook does nothing.
        abort_if_asked("no-such-point");
        // The longest member name still makes a valid annotation name (at most 63 characters
        // after the prefix's `/`).
        let member = format!(
            "{}-99",
            "a".repeat(toygres_common::names::MAX_INSTANCE_NAME_LEN)
        );
        let key = remake_annotation(&member);
        let (_, name) = key.split_once('/').unwrap();
        assert!(name.len() <= 63, "{key}");
    }
}
