//! An instance's credentials in local mode: one file per credential under
//! `instances/<name>/secrets/` (directory 0700, files 0600), generated once and rewritten only
//! by a rotation ([`replace`]).
//! The sidecars read them through their `--*-file` flags; nothing else ever sees the values.
//! Beside each password a libpq password file (`<key>.pgpass`, 0600) is kept, derived from it,
//! which the printed connection URIs name with `passfile=`: they work as printed and never carry
//! the password.

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
    let refs = SecretRefs::for_instance(instance);
    for secret in [refs.superuser_password.clone(), refs.app_password()] {
        write_passfile(layout, &secret)?;
    }
    Ok(refs)
}

/// The user a password file matches for this credential: the superuser's names `postgres`;
/// the application's matches any user, because the platform's store does not know the owner
/// role's name (the file only ever holds that one password). `None`: not a password.
pub fn passfile_user(name: SecretName) -> Option<&'static str> {
    match name {
        SecretName::SuperuserPassword => Some("postgres"),
        SecretName::AppPassword => Some("*"),
        SecretName::ReplicationPassword | SecretName::SidecarToken => None,
    }
}

/// Where the password file of `secret` is.
pub fn passfile(layout: &LocalLayout, secret: &SecretRef) -> std::path::PathBuf {
    layout
        .secrets_dir(&secret.instance)
        .join(format!("{}.pgpass", secret.name.key()))
}

/// (Re)writes the password file of `secret` from its current value, through a temporary file
/// renamed into place, so a reader sees the old file or the new one. Any host, port and
/// database: the same file serves the rw, ro and multi-host URIs.
fn write_passfile(layout: &LocalLayout, secret: &SecretRef) -> anyhow::Result<()> {
    let Some(user) = passfile_user(secret.name) else {
        return Ok(());
    };
    let Some(value) = read(layout, secret)? else {
        bail!("{secret} does not exist");
    };
    let path = passfile(layout, secret);
    // libpq's escapes: `\` and `\:` inside a field.
    let password = value.expose().replace('\\', "\\\\").replace(':', "\\:");
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    file.write_all(format!("*:*:*:{user}:{password}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("rename into {}", path.display()))
}

/// Writes a new random value to `path` unless it exists. The value goes to a temporary file
/// first and is linked into place, so a crash never leaves a half-written credential and a
/// credential once written is never replaced (only [`replace`] does that).
fn create_once(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let tmp = write_random_tmp(path)?;
    let result = match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(()),
        // Another call won the race: its value stays.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("create {}", path.display())),
    };
    let _ = fs::remove_file(&tmp);
    result
}

/// Replaces the credential `secret` with `value` (renamed into place, so a reader sees the old
/// value or the new one, never a part) and rewrites its password file from it.
pub fn replace(
    layout: &LocalLayout,
    secret: &SecretRef,
    value: &SecretValue,
) -> anyhow::Result<()> {
    let path = layout.secret_file(&secret.instance, secret.name);
    if !path.exists() {
        bail!("{secret} does not exist");
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let renamed =
        write_new_private(&tmp, format!("{}\n", value.expose()).as_bytes()).and_then(|()| {
            fs::rename(&tmp, &path).with_context(|| format!("replace {}", path.display()))
        });
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    renamed?;
    write_passfile(layout, secret)
}

/// A new random value (24 bytes from the OS, in hex) in a temporary file (0600, synced) beside
/// `path`; returns the temporary file's path.
fn write_random_tmp(path: &Path) -> anyhow::Result<std::path::PathBuf> {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let value = hex(&bytes);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    match write_new_private(&tmp, format!("{value}\n").as_bytes()) {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Creates `path` (which must not exist) with mode 0600 holding `content`, synced to disk.
pub(super) fn write_new_private(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", path.display()))
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
        let app = read(&layout, &refs.app_password()).unwrap().unwrap();
        assert!(!values.contains(&app.expose().to_string()));
        for (secret, user, value) in [
            (
                refs.superuser_password.clone(),
                "postgres",
                values[0].clone(),
            ),
            (refs.app_password(), "*", app.expose().to_string()),
        ] {
            let file = passfile(&layout, &secret);
            assert_eq!(
                fs::read_to_string(&file).unwrap(),
                format!("*:*:*:{user}:{value}\n")
            );
            let mode = fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
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
        // Four credentials and two password files.
        assert_eq!(fs::read_dir(layout.secrets_dir("db")).unwrap().count(), 6);
        assert!(
            read(&layout, &SecretRefs::for_instance("other").sidecar_token)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_rotated_password_is_new_private_and_in_its_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let layout = LocalLayout::new(dir.path().to_path_buf(), true);
        let refs = ensure(&layout, "db").unwrap();
        let app = refs.app_password();
        let before = read(&layout, &app).unwrap().unwrap();
        let superuser = read(&layout, &refs.superuser_password).unwrap().unwrap();
        replace(&layout, &app, &SecretValue::random()).unwrap();
        let after = read(&layout, &app).unwrap().unwrap();
        assert_ne!(before, after);
        assert_eq!(after.expose().len(), 48);
        assert_eq!(
            fs::read_to_string(passfile(&layout, &app)).unwrap(),
            format!("*:*:*:*:{}\n", after.expose())
        );
        for file in [layout.secret_file("db", app.name), passfile(&layout, &app)] {
            let mode = fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
        // The other credentials stay, and no temporary file is left behind.
        assert_eq!(
            read(&layout, &refs.superuser_password).unwrap().unwrap(),
            superuser
        );
        assert_eq!(fs::read_dir(layout.secrets_dir("db")).unwrap().count(), 6);
        // A later `ensure` keeps the rotated value.
        ensure(&layout, "db").unwrap();
        assert_eq!(read(&layout, &app).unwrap().unwrap(), after);
        let other = SecretRefs::for_instance("other").app_password();
        assert!(replace(&layout, &other, &SecretValue::random()).is_err());
    }
}
