//! Store credentials from a directory of files (`--store-credentials-dir`): one file per
//! setting, named like the provider's environment variable (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`, `AZURE_STORAGE_ACCOUNT_KEY`,
//! `GOOGLE_SERVICE_ACCOUNT_KEY`, …), holding its value. That is how a Kubernetes Secret is
//! mounted, and how the local platform keeps a registered store secret, so the values never
//! travel through argv or the environment of the sidecar and of the Postgres it starts.
//!
//! The directory is read at every [`super::Store::open`]: a rotated secret is picked up by the
//! next upload without a restart. `wal-push` and `wal-fetch` learn the directory from their
//! (non-secret) settings file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;

static DIR: OnceLock<PathBuf> = OnceLock::new();

/// Makes every store this process opens take its credentials from `dir` (the first call wins).
pub fn use_dir(dir: &Path) {
    let _ = DIR.set(dir.to_path_buf());
}

/// The directory set with [`use_dir`], if any.
pub fn dir() -> Option<PathBuf> {
    DIR.get().cloned()
}

/// The settings in the credentials directory whose names start with `prefix` (`AWS_`, …), as
/// (lowercased name, value) pairs: the form the `object_store` builders parse. Hidden entries
/// (a mounted Secret's `..data` links) and empty files are skipped; a trailing newline is cut.
pub fn settings(prefix: &str) -> anyhow::Result<Vec<(String, String)>> {
    let Some(dir) = DIR.get() else {
        return Ok(Vec::new());
    };
    read_settings(dir, prefix)
}

/// Hands each of `settings` whose name the builder knows (its config key type parses it) to
/// `with_config`; the others are skipped.
pub fn configure<B, K: std::str::FromStr>(
    builder: B,
    settings: Vec<(String, String)>,
    with_config: impl Fn(B, K, String) -> B,
) -> B {
    settings
        .into_iter()
        .fold(builder, |b, (key, value)| match key.parse() {
            Ok(key) => with_config(b, key, value),
            Err(_) => b,
        })
}

fn read_settings(dir: &Path, prefix: &str) -> anyhow::Result<Vec<(String, String)>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("read the store credentials directory {}", dir.display()))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("list {}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !name.starts_with(prefix) {
            continue;
        }
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        // The value is never put in a message: only the file's name.
        let value = std::fs::read_to_string(&path)
            .with_context(|| format!("read the store credential {}", path.display()))?;
        let value = value.trim_end_matches(['\n', '\r']).to_string();
        if !value.is_empty() {
            found.push((name.to_ascii_lowercase(), value));
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_the_files_of_the_provider_named_like_its_variables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("AWS_ACCESS_KEY_ID"), "id\n").unwrap();
        std::fs::write(dir.path().join("AWS_SECRET_ACCESS_KEY"), "s3cr3t").unwrap();
        std::fs::write(dir.path().join("AWS_SESSION_TOKEN"), "").unwrap();
        std::fs::write(dir.path().join("AZURE_STORAGE_ACCOUNT_KEY"), "az").unwrap();
        std::fs::create_dir(dir.path().join("..data")).unwrap();
        std::fs::write(dir.path().join(".hidden"), "x").unwrap();
        assert_eq!(
            read_settings(dir.path(), "AWS_").unwrap(),
            vec![
                ("aws_access_key_id".to_string(), "id".to_string()),
                ("aws_secret_access_key".to_string(), "s3cr3t".to_string()),
            ]
        );
        assert_eq!(
            read_settings(dir.path(), "AZURE_").unwrap(),
            vec![("azure_storage_account_key".to_string(), "az".to_string())]
        );
        let missing = read_settings(&dir.path().join("nope"), "AWS_").unwrap_err();
        assert!(format!("{missing:#}").contains("credentials directory"));
    }
}
