//! An instance's ro endpoint in the CMS: its rule ([`RoSettings`], changed by operators) and
//! where the last health round left it ([`RoEndpointView`]: each standby's state).

use toygres_common::ro_api::{RoEndpointView, RoSettings};

use super::{get, Cms, CmsError};

fn invalid(what: &'static str, e: serde_json::Error) -> CmsError {
    CmsError::Invalid {
        what,
        message: e.to_string(),
    }
}

impl Cms {
    /// The instance's ro rule: as an operator last set it, else as its create request gave it,
    /// else the defaults. `None` when the instance does not exist.
    pub async fn get_ro_settings(&self, name: &str) -> Result<Option<RoSettings>, CmsError> {
        let what = "read an instance's ro settings";
        let rows = self
            .query(
                what,
                "SELECT coalesce(ro, spec->'ro', '{}'::jsonb) FROM toygres.instances
                  WHERE name = $1",
                &[&name],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let value: serde_json::Value = get(row, 0, what)?;
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| invalid(what, e))
    }

    /// Stores the instance's ro rule.
    pub async fn set_ro_settings(&self, name: &str, ro: &RoSettings) -> Result<(), CmsError> {
        let what = "store an instance's ro settings";
        let value = serde_json::to_value(ro).map_err(|e| invalid(what, e))?;
        self.execute(
            what,
            "UPDATE toygres.instances SET ro = $2 WHERE name = $1",
            &[&name, &value],
        )
        .await?;
        Ok(())
    }

    /// Records where a health round left the instance's ro endpoint.
    pub async fn record_ro_view(&self, name: &str, view: &RoEndpointView) -> Result<(), CmsError> {
        let what = "record the ro endpoint's backends";
        let value = serde_json::to_value(view).map_err(|e| invalid(what, e))?;
        self.execute(
            what,
            "UPDATE toygres.instances SET ro_view = $2 WHERE name = $1",
            &[&name, &value],
        )
        .await?;
        Ok(())
    }

    /// The live instances' ro endpoints as last recorded, by instance name.
    pub async fn ro_views(
        &self,
        only: Option<&str>,
    ) -> Result<Vec<(String, RoEndpointView)>, CmsError> {
        let what = "read the ro endpoints' backends";
        let rows = self
            .query(
                what,
                "SELECT name, ro_view FROM toygres.instances
                  WHERE ro_view IS NOT NULL AND state NOT IN ('deleting', 'deleted')
                    AND ($1::text IS NULL OR name = $1)
                  ORDER BY name",
                &[&only],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let value: serde_json::Value = get(row, 1, what)?;
                let view = serde_json::from_value(value).map_err(|e| invalid(what, e))?;
                Ok((get(row, 0, what)?, view))
            })
            .collect()
    }
}
