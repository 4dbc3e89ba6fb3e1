//! Kubernetes Events on an instance's root ConfigMap, so that `kubectl describe configmap
//! <instance>-toygres` (and `kubectl get events`) tells what the controller did to the
//! instance: members created, started again, fenced and deleted, and the primary label moving
//! (a failover or a switchover). An Event that cannot be written is logged and never fails the
//! operation: Events are for people, the CMS keeps the record.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::{KubernetesPlatform, FIELD_MANAGER};
use crate::platform::kubernetes::root_config_map_name;

/// What happened, as an Event's reason and action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceEvent {
    /// A member's StatefulSet was created.
    MemberCreated,
    /// A stopped member was started again (to rejoin).
    MemberStarted,
    /// A member was killed and kept down (fencing).
    MemberFenced,
    /// A member was deleted.
    MemberDeleted,
    /// A member's data was set aside for an in-place restore, put back, or deleted.
    DataSetAside,
    /// The primary label moved to another member: a failover or a switchover.
    PrimaryChanged,
    /// No member carries the primary label: `-rw` leads nowhere.
    PrimaryUnrouted,
}

impl InstanceEvent {
    fn reason_and_action(self) -> (&'static str, &'static str, EventType) {
        match self {
            InstanceEvent::MemberCreated => ("MemberCreated", "Create", EventType::Normal),
            InstanceEvent::MemberStarted => ("MemberStarted", "Start", EventType::Normal),
            InstanceEvent::MemberFenced => ("MemberFenced", "Fence", EventType::Warning),
            InstanceEvent::MemberDeleted => ("MemberDeleted", "Delete", EventType::Normal),
            InstanceEvent::DataSetAside => ("DataSetAside", "Restore", EventType::Normal),
            InstanceEvent::PrimaryChanged => ("PrimaryChanged", "Route", EventType::Normal),
            InstanceEvent::PrimaryUnrouted => ("PrimaryUnrouted", "Route", EventType::Warning),
        }
    }
}

impl KubernetesPlatform {
    /// Publishes `event` with `note` on `instance`'s root ConfigMap, in the background: an
    /// Event is an API round trip that nothing the caller does next needs (a failover's fence
    /// and routing do not wait for it).
    pub(super) fn record(&self, instance: &str, event: InstanceEvent, note: String) {
        let client = self.client.clone();
        let namespace = self.namespace.clone();
        let instance = instance.to_string();
        tokio::spawn(async move { publish(client, namespace, &instance, event, note).await });
    }
}

async fn publish(
    client: kube::Client,
    namespace: String,
    instance: &str,
    event: InstanceEvent,
    note: String,
) {
    let (reason, action, type_) = event.reason_and_action();
    let reference = ObjectReference {
        api_version: Some("v1".to_string()),
        kind: Some("ConfigMap".to_string()),
        name: Some(root_config_map_name(instance)),
        namespace: Some(namespace),
        ..ObjectReference::default()
    };
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: None,
        },
    );
    let published = recorder
        .publish(
            &Event {
                type_,
                reason: reason.to_string(),
                note: Some(note),
                action: action.to_string(),
                secondary: None,
            },
            &reference,
        )
        .await;
    if let Err(e) = published {
        tracing::warn!(instance, reason, "write a Kubernetes Event: {e}");
    }
}
