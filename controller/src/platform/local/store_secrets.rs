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

/// Writes the instance's backup key ring (`$TOYGRES_HOME/instances/<name>/keyring/`, what its
/// members' `--backup-encryption-keyring` names): `current.key` from the store secret
/// `current`, `previous-<secret>.key` from each of `previous` (so what they encrypted stays
/// readable); each file 0600, through a temporary file renamed into place, the current one
/// last, then the keys no longer named removed. The values are copied, never shown.
pub fn put_keyring(
    layout: &LocalLayout,
    instance: &str,
    current: &str,
    previous: &[String],
) -> anyhow::Result<()> {
    let key_of = |name: &str| -> anyhow::Result<Vec<u8>> {
        let path = layout
            .store_secret_dir(name)
            .join(toygres_common::store_secret_api::ENCRYPTION_KEY_SETTING);
        fs::read(&path).with_context(|| format!("read the encryption key of store secret {name}"))
    };
    let dir = layout.keyring_dir(instance);
    private_dir(&dir)?;
    let mut files: Vec<(String, Vec<u8>)> = previous
        .iter()
        .filter(|name| name.as_str() != current)
        .map(|name| Ok((format!("previous-{name}.key"), key_of(name)?)))
        .collect::<anyhow::Result<_>>()?;
    files.push(("current.key".to_string(), key_of(current)?));
    for (file, value) in &files {
        let path = dir.join(file);
        let tmp = dir.join(format!(".{file}.tmp{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let written = write_new_private(&tmp, value).and_then(|()| {
            fs::rename(&tmp, &path).with_context(|| format!("write {}", path.display()))
        });
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
    }
    for entry in fs::read_dir(&dir).with_context(|| format!("list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("list {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".key") && !files.iter().any(|(f, _)| *f == name) {
            fs::remove_file(entry.path())
                .with_context(|| format!("remove {}", entry.path().display()))?;
        }
    }
    Ok(())
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

    #[test]
    fn a_key_ring_holds_the_current_key_and_the_previous_ones_as_private_files() {
        let home = tempfile::tempdir().unwrap();
        let layout = LocalLayout::new(home.path().to_path_buf(), false);
        let key = toygres_common::store_secret_api::ENCRYPTION_KEY_SETTING;
        for (name, value) in [("k1", "11"), ("k2", "22"), ("k3", "33")] {
            let values = BTreeMap::from([(key.to_string(), SecretValue::new(value.repeat(32)))]);
            put(&layout, name, &values).unwrap();
        }
        put_keyring(&layout, "db", "k1", &[]).unwrap();
        let dir = layout.keyring_dir("db");
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        assert_eq!(
            fs::read_to_string(dir.join("current.key")).unwrap(),
            "11".repeat(32)
        );
        put_keyring(&layout, "db", "k3", &["k1".into(), "k2".into()]).unwrap();
        put_keyring(&layout, "db", "k3", &["k2".into(), "k3".into()]).unwrap();
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["current.key", "previous-k2.key"]);
        let current = dir.join("current.key");
        assert_eq!(fs::read_to_string(&current).unwrap(), "33".repeat(32));
        assert_eq!(fs::metadata(&current).unwrap().mode() & 0o777, 0o600);
        let e = put_keyring(&layout, "db", "missing", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("store secret missing"), "{e:#}");
    }
}
