//! An instance's desired Postgres parameters in the CMS: what operators set, one row per
//! setting; a reset removes the row.

use std::collections::BTreeMap;

use super::{get, Cms, CmsError};

impl Cms {
    /// The instance's desired parameters, by name.
    pub async fn desired_parameters(
        &self,
        instance: &str,
    ) -> Result<BTreeMap<String, String>, CmsError> {
        let what = "read the desired parameters";
        let rows = self
            .query(
                what,
                "SELECT name, value FROM toygres.instance_parameters WHERE instance = $1",
                &[&instance],
            )
            .await?;
        rows.iter()
            .map(|r| -> Result<(String, String), CmsError> {
                Ok((get(r, 0, what)?, get(r, 1, what)?))
            })
            .collect()
    }

    /// Records a change in one statement: a value sets the setting, `None` resets it.
    pub async fn set_desired_parameters(
        &self,
        instance: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<(), CmsError> {
        let json = serde_json::to_string(changes).map_err(|e| CmsError::Invalid {
            what: "encode the desired parameters",
            message: e.to_string(),
        })?;
        self.execute(
            "record the desired parameters",
            "WITH changes AS (SELECT key AS name, value FROM jsonb_each_text($2::text::jsonb)),
                  reset AS (DELETE FROM toygres.instance_parameters p USING changes c
                             WHERE p.instance = $1 AND p.name = c.name AND c.value IS NULL)
             INSERT INTO toygres.instance_parameters (instance, name, value)
             SELECT $1, name, value FROM changes WHERE value IS NOT NULL
             ON CONFLICT (instance, name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            &[&instance, &json],
        )
        .await?;
        Ok(())
    }

    /// The size the instance declared at create (its spec's `size`), if it did.
    pub async fn instance_size(
        &self,
        instance: &str,
    ) -> Result<Option<toygres_common::controller_api::InstanceSize>, CmsError> {
        let what = "read an instance's declared size";
        let rows = self
            .query(
                what,
                "SELECT spec->'size' FROM toygres.instances WHERE name = $1",
                &[&instance],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let value: Option<serde_json::Value> = get(row, 0, what)?;
        Ok(value.and_then(|v| serde_json::from_value(v).ok()))
    }
}
