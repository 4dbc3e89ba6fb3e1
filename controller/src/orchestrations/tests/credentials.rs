//! *RotateCredentials* as a command of the instance's actor: one rotation activity, between
//! the operation's start and end records.

#![allow(clippy::unwrap_used)]

use toygres_common::credentials_api::CredentialRole;

use super::*;
use crate::orchestrations::credentials::RotateCredentialsInput;

#[tokio::test]
async fn a_queued_rotation_runs_once_between_the_operations_records() {
    let harness = Harness::start(&[]).await;
    harness.start_actor("db", 50).await;
    harness
        .queue(
            "db",
            &ActorCommand::RotateCredentials(RotateCredentialsInput {
                operation_id: "op-r1".into(),
                instance: "db".into(),
                role: CredentialRole::Owner,
            }),
        )
        .await;
    let status = harness
        .client
        .wait_for_orchestration("op-r1", Duration::from_secs(20))
        .await
        .unwrap();
    let OrchestrationStatus::Completed { output, .. } = status else {
        panic!("the rotation did not complete: {status:?}");
    };
    assert!(
        output.contains("the role db has a new password"),
        "{output}"
    );
    let rotated = harness.calls_to(act::ROTATE_PASSWORD);
    assert_eq!(rotated.len(), 1);
    assert_eq!(rotated[0], json!({"instance": "db", "role": "owner"}));
    let started = harness.calls_to(act::RECORD_OPERATION_STARTED);
    assert!(started
        .iter()
        .any(|s| s["operation_id"] == "op-r1" && s["kind"] == "credentials-rotate"));
    let finished = harness.calls_to(act::RECORD_OPERATION_FINISHED);
    assert!(finished
        .iter()
        .any(|f| f["operation_id"] == "op-r1" && f["error"].is_null()));
}
