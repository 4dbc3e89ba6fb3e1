//! An instance's credentials in local mode: one file per credential under
//! `instances/<name>/secrets/` (directory 0700, files 0600), generated once and never rewritten.
//! The sidecars read them through their `--*-file` flags; nothing else ever sees the values.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::{bail, Context as _};
use rand::RngCore as _;

use super::layout::LocalLayout;
use crate::platform::{SecretName, SecretRef, SecretRefs, SecretValue};
use crate::token::hex;

/// Creates the instance's credential files that are missing and returns references to all.
pub fn ensure(layout: &LocalLayout, instance: &str) -> anyhow::Result<SecretRefs> {
    let dir = layout.secrets_dir(instance);
    layout.create_dir(&layout.instance_dir(instance))?;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Ok(())
            } else {
                Err(e)
            }
        })
        .with_context(|| format!("create {}", dir.display()))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("set the mode of {}", dir.display()))?;
    for name in SecretName::ALL {
        create_once(&layout.secret_file(instance, name))?;
    }
    Ok(SecretRefs::for_instance(instance))
}

/// Writes a new random value to `path` unless it exists. The value goes to a temporary file
/// first and is linked into place, so a crash never leaves a half-written credential and a
/// credential once written is never replaced.
fn create_once(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let value = hex(&bytes);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        file.write_all(format!("{value}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("write {}", tmp.display()))?;
        match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            // Another call won the race: its value stays.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e).with_context(|| format!("create {}", path.display())),
        }
    })();
    let _ = fs::remove_file(&tmp);
    result
}

/// Reads one credential.
pub fn read(layout: &LocalLayout, secret: &SecretRef) -> anyhow::Result<Option<SecretValue>> {
    let path = layout.secret_file(&secret.instance, secret.name);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() || value.contains(['\n', '\0']) {
        bail!("{} does not hold a single-line credential", path.display());
    }
    Ok(Some(SecretValue::new(value.to_string())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn credentials_are_generated_once_private_and_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let layout = LocalLayout::new(dir.path().to_path_buf(), true);
        let refs = ensure(&layout, "db").unwrap();
        assert_eq!(refs, SecretRefs::for_instance("db"));
        let values: Vec<String> = refs
            .all()
            .iter()
            .map(|r| read(&layout, r).unwrap().unwrap().expose().to_string())
            .collect();
        assert_eq!(values[0].len(), 48);
        assert_ne!(values[0], values[1]);
        assert_ne!(values[1], values[2]);
        for name in SecretName::ALL {
            let mode = fs::metadata(layout.secret_file("db", name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mode = fs::metadata(layout.secrets_dir("db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);

        ensure(&layout, "db").unwrap();
        let again: Vec<String> = refs
            .all()
            .iter()
            .map(|r| read(&layout, r).unwrap().unwrap().expose().to_string())
            .collect();
        assert_eq!(values, again);
        assert_eq!(fs::read_dir(layout.secrets_dir("db")).unwrap().count(), 3);
        assert!(
            read(&layout, &SecretRefs::for_instance("other").sidecar_token)
                .unwrap()
                .is_none()
        );
    }
}
