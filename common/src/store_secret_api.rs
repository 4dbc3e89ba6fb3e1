//! Store secrets in the controller's operator API: the credentials an object store needs,
//! registered once under a name (`PUT /v1/secrets/{name}`, `toygres secret set`) and then named
//! by instances (`--backup-credentials NAME`). The values go into the platform's secret store
//! (local: files under `$TOYGRES_HOME/store-secrets`; Kubernetes: a Secret) and never come back
//! out of the API: reads show the setting names only.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::request::InvalidRequest;

/// The prefixes a store setting's name may have: the providers' own variable names.
pub const SETTING_PREFIXES: [&str; 3] = ["AWS_", "AZURE_", "GOOGLE_"];

/// The setting of a store secret that holds an instance's backup encryption key (64 hex
/// digits: 32 random bytes, e.g. from `openssl rand -hex 32`).
pub const ENCRYPTION_KEY_SETTING: &str = "TOYGRES_BACKUP_ENCRYPTION_KEY";

/// Whether `value` is a well-formed encryption key: 64 hex digits.
pub fn is_encryption_key(value: &str) -> bool {
    let value = value.trim();
    value.len() == 64 && value.chars().all(|c| c.is_ascii_hexdigit())
}

/// The longest value of one setting (a GCS service account key is a few KiB).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// `PUT /v1/secrets/{name}`: the settings, named like the provider's environment variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`, `AZURE_STORAGE_ACCOUNT_KEY`,
/// …). Replaces an existing secret of that name. Its `Debug` shows the names only.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSecretRequest {
    pub values: BTreeMap<String, String>,
}

impl fmt::Debug for StoreSecretRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSecretRequest")
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl StoreSecretRequest {
    /// Checks the names and values; messages name the setting, never its value.
    pub fn validate(&self, name: &str) -> Result<(), InvalidRequest> {
        crate::backup_api::validate_secret_name(name)
            .map_err(|e| InvalidRequest::new("name", e.message))?;
        if self.values.is_empty() {
            return Err(InvalidRequest::new("values", "name at least one setting"));
        }
        for (key, value) in &self.values {
            let well_formed = key
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            let known = SETTING_PREFIXES.iter().any(|p| key.starts_with(p))
                || key == ENCRYPTION_KEY_SETTING;
            if !well_formed || !known {
                return Err(InvalidRequest::new(
                    "values",
                    format!(
                        "{key:?} is not a store setting: use the provider's variable names \
                         (AWS_…, AZURE_… or GOOGLE_…, upper case) or \
                         {ENCRYPTION_KEY_SETTING}"
                    ),
                ));
            }
            if key == ENCRYPTION_KEY_SETTING && !is_encryption_key(value) {
                return Err(InvalidRequest::new(
                    "values",
                    format!(
                        "{ENCRYPTION_KEY_SETTING} must be 64 hex digits (32 random bytes, e.g. \
                         `openssl rand -hex 32`)"
                    ),
                ));
            }
            if key.len() > 100 {
                return Err(InvalidRequest::new(
                    "values",
                    "a setting's name is at most 100 characters",
                ));
            }
            if value.is_empty() || value.len() > MAX_VALUE_BYTES || value.contains('\0') {
                return Err(InvalidRequest::new(
                    "values",
                    format!("the value of {key} must be 1 to {MAX_VALUE_BYTES} bytes, without NUL"),
                ));
            }
        }
        Ok(())
    }
}

/// A registered store secret as the API shows it: its setting names, never their values.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreSecretView {
    pub name: String,
    pub keys: Vec<String>,
}

/// Reads `KEY=VALUE` lines (blank lines and `#` comments skipped; `export ` and one pair of
/// surrounding quotes allowed), the form of an env file. Errors name the line, not its value.
pub fn parse_env_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut values = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=VALUE", n + 1));
        };
        let value = value.trim();
        let value = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
            .unwrap_or(value);
        values.insert(key.trim().to_string(), value.to_string());
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_and_requests_are_checked_without_showing_values() {
        let values = parse_env_file(
            "# moto\nexport AWS_ACCESS_KEY_ID=id\nAWS_SECRET_ACCESS_KEY=\"s3cr3t\"\n\n",
        )
        .unwrap();
        assert_eq!(values["AWS_SECRET_ACCESS_KEY"], "s3cr3t");
        assert!(parse_env_file("AWS_X").unwrap_err().contains("line 1"));
        let request = StoreSecretRequest { values };
        request.validate("moto-creds").unwrap();
        assert!(!format!("{request:?}").contains("s3cr3t"));
        assert_eq!(request.validate("Bad_Name").unwrap_err().field, "name");
        for (key, value) in [("PATH", "x"), ("aws_key", "x"), ("AWS_KEY", "")] {
            let bad = StoreSecretRequest {
                values: [(key.to_string(), value.to_string())].into(),
            };
            let e = bad.validate("ok").unwrap_err();
            assert_eq!(e.field, "values", "{key}");
        }
        let key = |v: &str| StoreSecretRequest {
            values: [(ENCRYPTION_KEY_SETTING.to_string(), v.to_string())].into(),
        };
        key(&"0f".repeat(32)).validate("k").unwrap();
        let e = key("not-a-key-value").validate("k").unwrap_err();
        assert!(!e.message.contains("not-a-key-value"), "{}", e.message);
        assert!(StoreSecretRequest {
            values: BTreeMap::new()
        }
        .validate("ok")
        .is_err());
    }
}
