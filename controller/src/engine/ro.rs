//! An instance's ro endpoint rule: read, and changed (checked, stored, logged as an event, and
//! applied by the instance's actor at a health round run at once).

use toygres_common::domain::{HaEventKind, InstanceState};
use toygres_common::ro_api::{RoSettings, RoSettingsPatch};

use super::{Engine, EngineError};

impl Engine {
    /// The instance's ro rule.
    pub async fn ro_settings(&self, name: &str) -> Result<RoSettings, EngineError> {
        self.cms
            .get_instance(name)
            .await?
            .filter(|i| i.summary.parsed_state() != Some(InstanceState::Deleted))
            .ok_or_else(|| EngineError::NotFound(format!("instance {name} does not exist")))?;
        Ok(self.cms.get_ro_settings(name).await?.unwrap_or_default())
    }

    /// Changes the instance's ro rule; its actor applies it at a round run at once.
    pub async fn set_ro_settings(
        &self,
        name: &str,
        patch: &RoSettingsPatch,
    ) -> Result<RoSettings, EngineError> {
        let next = self
            .ro_settings(name)
            .await?
            .patched(patch)
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        self.cms.set_ro_settings(name, &next).await?;
        self.settings_changed(name, HaEventKind::RoSettings, "ro settings", patch)
            .await?;
        Ok(next)
    }

    /// After an instance's settings changed: logs the change as an event of `kind` and nudges
    /// the instance's actor to apply them at a round now rather than at the next tick.
    pub(super) async fn settings_changed(
        &self,
        name: &str,
        kind: HaEventKind,
        what: &str,
        patch: &impl serde::Serialize,
    ) -> Result<(), EngineError> {
        self.cms
            .record_event(
                name,
                None,
                None,
                kind.into(),
                &format!(
                    "{what} changed: {}",
                    serde_json::to_string(patch).unwrap_or_default()
                ),
            )
            .await?;
        if let Err(e) = self.check_now(name).await {
            tracing::debug!(instance = name, "nudge the actor: {e}");
        }
        Ok(())
    }
}
