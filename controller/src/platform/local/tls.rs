//! An instance's CA and its members' certificates in local mode, under the instance's secrets
//! directory (0700): `tls/ca.crt` and `tls/ca.key` (the CA key never leaves the controller's
//! files), and `tls/<member>/` holding what the member's sidecar reads through `--tls-dir`
//! (see [`toygres_common::tls::MEMBER_FILES`]). Keys are 0600. Everything is issued once and
//! never rewritten; a crash half-way leaves a member directory the next call completes.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use toygres_common::tls::pki::{member_server_names, InstanceCa};
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
    let ca = ensure_ca(layout, instance)?;
    let mut names = member_server_names(instance, member, None);
    if !names.contains(&host.to_string()) {
        names.push(host.to_string());
    }
    let tls = ca.member_tls(member, &names)?;
    private_dir(&files.dir)?;
    for (name, content) in tls.files() {
        let secret = MEMBER_FILES.iter().any(|(n, key)| *n == name && *key);
        write_new(
            &files.file(name),
            content,
            if secret { 0o600 } else { 0o644 },
        )?;
    }
    Ok(files)
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
    }
}
