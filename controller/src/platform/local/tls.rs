//! An instance's CA and its members' certificates in local mode, under the instance's secrets
//! directory (0700): `tls/ca.crt` and `tls/ca.key` (the CA key never leaves the controller's
//! files), and `tls/<member>/` holding what the member's sidecar reads through `--tls-dir`
//! (see [`toygres_common::tls::MEMBER_FILES`]). Keys are 0600. A member's files are issued
//! once and replaced only when due for renewal ([`renew_member_if_due`]), each file through a
//! rename; a crash half-way leaves a member directory the next call completes.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use toygres_common::tls::pki::{member_server_names, renewal_due, InstanceCa};
use toygres_common::tls::{MemberTlsFiles, MEMBER_FILES};

use super::layout::LocalLayout;

/// The instance's TLS directory.
pub fn tls_dir(layout: &LocalLayout, instance: &str) -> PathBuf {
    layout.secrets_dir(instance).join("tls")
}

/// The CA certificate's file.
pub fn ca_file(layout: &LocalLayout, instance: &str) -> PathBuf {
    tls_dir(layout, instance).join("ca.crt")
}

/// The member's TLS directory (its sidecar's `--tls-dir`).
pub fn member_dir(layout: &LocalLayout, instance: &str, member: &str) -> MemberTlsFiles {
    MemberTlsFiles::new(tls_dir(layout, instance).join(member))
}

/// The instance's CA: made the first time, read back afterwards.
pub fn ensure_ca(layout: &LocalLayout, instance: &str) -> anyhow::Result<InstanceCa> {
    let dir = tls_dir(layout, instance);
    private_dir(&dir)?;
    let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    if cert.is_file() && key.is_file() {
        let read =
            |p: &Path| fs::read_to_string(p).with_context(|| format!("read {}", p.display()));
        return InstanceCa::from_pem(instance, read(&cert)?, read(&key)?)
            .with_context(|| format!("read the CA of instance {instance}"));
    }
    let ca = InstanceCa::generate(instance)?;
    // The key first: a certificate without its key is never left behind.
    write_new(&key, &ca.key_pem, 0o600)?;
    write_new(&cert, &ca.cert_pem, 0o644)?;
    Ok(ca)
}

/// Issues the member's certificates unless its directory holds them all; returns the directory.
/// The server certificate names loopback and `host`, the address the member listens on.
pub fn ensure_member(
    layout: &LocalLayout,
    instance: &str,
    member: &str,
    host: std::net::IpAddr,
) -> anyhow::Result<MemberTlsFiles> {
    let files = member_dir(layout, instance, member);
    if files.missing().is_empty() {
        return Ok(files);
    }
    issue_member(layout, instance, member, host)?;
    Ok(files)
}

/// Issues the member new certificates when its server or a client certificate has a third of
/// its lifetime or less left (or does not read, or is missing); returns whether it did. The sidecar installs
/// them and reloads Postgres; its API serves the new one at the next handshake.
pub fn renew_member_if_due(
    layout: &LocalLayout,
    instance: &str,
    member: &str,
    host: std::net::IpAddr,
) -> anyhow::Result<bool> {
    let files = member_dir(layout, instance, member);
    let now = std::time::SystemTime::now();
    // A member issued its files before pg_rewind had its own role lacks `rewind.crt`: it is
    // due, and gets every file anew.
    let due = [
        files.server_cert(),
        files.replicator_cert(),
        files.superuser_cert(),
        files.rewind_cert(),
    ]
    .iter()
    .any(|path| fs::read_to_string(path).map_or(true, |pem| renewal_due(&pem, now)));
    if !due {
        return Ok(false);
    }
    issue_member(layout, instance, member, host)?;
    Ok(true)
}

/// Issues every file of the member's directory (the keys before their certificates).
fn issue_member(
    layout: &LocalLayout,
    instance: &str,
    member: &str,
    host: std::net::IpAddr,
) -> anyhow::Result<()> {
    let files = member_dir(layout, instance, member);
    let ca = ensure_ca(layout, instance)?;
    let mut names = member_server_names(instance, member, None);
    if !names.contains(&host.to_string()) {
        names.push(host.to_string());
    }
    let tls = ca.member_tls(member, &names)?;
    private_dir(&files.dir)?;
    let mut ordered = tls.files();
    ordered.sort_by_key(|(name, _)| !is_key(name));
    for (name, content) in ordered {
        write_new(
            &files.file(name),
            content,
            if is_key(name) { 0o600 } else { 0o644 },
        )?;
    }
    Ok(())
}

fn is_key(name: &str) -> bool {
    MEMBER_FILES.iter().any(|(n, key)| *n == name && *key)
}

fn private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))
}

/// Writes `content` to `path` through a temporary file renamed into place.
fn write_new(path: &Path, content: &str, mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    file.write_all(content.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("rename into {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_member_gets_its_files_once_keys_private_and_the_ca_key_stays_out() {
        let dir = tempfile::tempdir().unwrap();
        let layout = LocalLayout::new(dir.path().to_path_buf(), true);
        let files = ensure_member(&layout, "db", "db-0", LOOPBACK).unwrap();
        assert!(files.missing().is_empty());
        assert!(!files.dir.join("ca.key").exists());
        for (name, key) in MEMBER_FILES {
            let mode = fs::metadata(files.file(name)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077 == 0, key, "{name}");
        }
        let mode = fs::metadata(tls_dir(&layout, "db").join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let before = fs::read(files.server_key()).unwrap();
        ensure_member(&layout, "db", "db-0", LOOPBACK).unwrap();
        assert_eq!(fs::read(files.server_key()).unwrap(), before);
        let other = ensure_member(&layout, "db", "db-1", LOOPBACK).unwrap();
        assert_eq!(
            fs::read(other.ca_cert()).unwrap(),
            fs::read(files.ca_cert()).unwrap()
        );
        assert_eq!(
            fs::read(files.ca_cert()).unwrap(),
            fs::read(ca_file(&layout, "db")).unwrap()
        );
        assert!(!renew_member_if_due(&layout, "db", "db-0", LOOPBACK).unwrap());
        assert_eq!(fs::read(files.server_key()).unwrap(), before);
        // A certificate that no longer reads is replaced, with every other file but the CA.
        fs::write(files.replicator_cert(), "garbage").unwrap();
        let ca = fs::read(files.ca_cert()).unwrap();
        assert!(renew_member_if_due(&layout, "db", "db-0", LOOPBACK).unwrap());
        assert_ne!(fs::read(files.server_key()).unwrap(), before);
        assert!(fs::read_to_string(files.replicator_cert())
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE"));
        assert_eq!(fs::read(files.ca_cert()).unwrap(), ca);
        // A member issued its files before pg_rewind had its own role gets them all at the
        // next renewal check.
        let server = fs::read(files.server_key()).unwrap();
        fs::remove_file(files.rewind_cert()).unwrap();
        fs::remove_file(files.rewind_key()).unwrap();
        assert_eq!(files.missing_required(), Vec::<&str>::new());
        assert!(renew_member_if_due(&layout, "db", "db-0", LOOPBACK).unwrap());
        assert!(files.missing().is_empty());
        assert_ne!(fs::read(files.server_key()).unwrap(), server);
    }
}
