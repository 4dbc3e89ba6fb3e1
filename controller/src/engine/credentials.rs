//! Password rotation: checked against the CMS, then recorded and queued on the instance's
//! actor, so it runs after the operations queued before it and never beside a switchover.

use toygres_common::controller_api::OperationAccepted;
use toygres_common::credentials_api::{CredentialRole, RotateCredentialsRequest};
use toygres_common::domain::OperationKind;

use super::{new_operation_id, Engine, EngineError};
use crate::orchestrations::credentials::RotateCredentialsInput;
use crate::orchestrations::instance_actor::ActorCommand;

impl Engine {
    /// Queues a *RotateCredentials* operation on the instance's actor.
    pub async fn rotate_credentials(
        &self,
        name: &str,
        request: RotateCredentialsRequest,
    ) -> Result<OperationAccepted, EngineError> {
        let instance = self.running_instance(name).await?;
        match request.role {
            CredentialRole::Owner => {
                if self.cms.instance_app_access(name).await?.is_none() {
                    return Err(EngineError::Conflict(format!(
                        "instance {name} was created without an application owner"
                    )));
                }
            }
            // The sidecars read its file at each use, so they follow a rotation.
            CredentialRole::Superuser => {}
        }
        let operation_id = new_operation_id();
        let command = ActorCommand::RotateCredentials(RotateCredentialsInput {
            operation_id: operation_id.clone(),
            instance: name.to_string(),
            role: request.role,
        });
        self.queue_operation(
            &instance,
            &operation_id,
            OperationKind::CredentialsRotate,
            &command,
        )
        .await
    }
}
