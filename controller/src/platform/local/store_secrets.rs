//! Registered store secrets in local mode: `$TOYGRES_HOME/store-secrets/<name>/`, one file per
//! setting (directory 0700, files 0600), the layout of a mounted Kubernetes Secret. A member of
//! an instance whose backups name the secret gets the directory as `--store-credentials-dir`;
//! the values are read by nothing else.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::Context as _;

use super::layout::LocalLayout;
use super::secrets::write_new_private;
use crate::platform::SecretValue;

/// Writes the secret `name` with exactly `values`: each file through a temporary file renamed
/// into place, then the settings it no longer has removed.
pub fn put(
    layout: &LocalLayout,
    name: &str,
    values: &BTreeMap<String, SecretValue>,
) -> anyhow::Result<()> {
    let dir = layout.store_secret_dir(name);
    for d in [layout.store_secrets_dir(), dir.clone()] {
        private_dir(&d)?;
    }
    for (key, value) in values {
        let path = dir.join(key);
        let tmp = dir.join(format!(".{key}.tmp{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let written = write_new_private(&tmp, value.expose().as_bytes()).and_then(|()| {
            fs::rename(&tmp, &path).with_context(|| format!("write {}", path.display()))
        });
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
    }
    for key in keys(layout, name)?.unwrap_or_default() {
        if !values.contains_key(&key) {
            fs::remove_file(dir.join(&key))
                .with_context(|| format!("remove {}", dir.join(&key).display()))?;
        }
    }
    Ok(())
}

/// The setting names of the secret `name`, sorted; `None` when there is no such secret.
pub fn keys(layout: &LocalLayout, name: &str) -> anyhow::Result<Option<Vec<String>>> {
    let dir = layout.store_secret_dir(name);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("list {}", dir.display())),
    };
    let mut keys = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("list {}", dir.display()))?;
        let key = entry.file_name().to_string_lossy().into_owned();
        if !key.starts_with('.') {
            keys.push(key);
        }
    }
    keys.sort();
    Ok(Some(keys))
}

/// Removes the secret `name`; nothing to do when it is gone.
pub fn delete(layout: &LocalLayout, name: &str) -> anyhow::Result<()> {
    let dir = layout.store_secret_dir(name);
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove {}", dir.display())),
    }
}

fn private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("set the mode of {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn a_secret_is_private_files_replaced_whole() {
        let home = tempfile::tempdir().unwrap();
        let layout = LocalLayout::new(home.path().to_path_buf(), false);
        assert_eq!(keys(&layout, "s3").unwrap(), None);
        let value = |v: &str| SecretValue::new(v.to_string());
        let first = BTreeMap::from([
            ("AWS_ACCESS_KEY_ID".to_string(), value("id")),
            ("AWS_SECRET_ACCESS_KEY".to_string(), value("one")),
        ]);
        put(&layout, "s3", &first).unwrap();
        let dir = layout.store_secret_dir("s3");
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let file = dir.join("AWS_SECRET_ACCESS_KEY");
        assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::read_to_string(&file).unwrap(), "one");
        let second = BTreeMap::from([("AWS_SECRET_ACCESS_KEY".to_string(), value("two"))]);
        put(&layout, "s3", &second).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "two");
        assert_eq!(
            keys(&layout, "s3").unwrap(),
            Some(vec!["AWS_SECRET_ACCESS_KEY".to_string()])
        );
        delete(&layout, "s3").unwrap();
        delete(&layout, "s3").unwrap();
        assert_eq!(keys(&layout, "s3").unwrap(), None);
    }
}
