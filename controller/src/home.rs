//! `$TOYGRES_HOME`: the directory where the controller keeps its token, the file that tells the CLI
//! where the controller listens, and the embedded CMS.

use std::fs;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The layout of `$TOYGRES_HOME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerHome {
    root: PathBuf,
}

impl ControllerHome {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The API bearer token (mode 0600).
    pub fn token_file(&self) -> PathBuf {
        self.root.join("controller.token")
    }

    /// The URL the controller's API listens on, written once it is bound.
    pub fn addr_file(&self) -> PathBuf {
        self.root.join("controller.addr")
    }

    /// The controller's own CA and certificate (when it issues them itself).
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }

    /// The CA certificate clients trust the controller's API with (when it issues its own).
    pub fn ca_file(&self) -> PathBuf {
        self.tls_dir().join("ca.crt")
    }

    /// The embedded CMS's directory.
    pub fn cms_dir(&self) -> PathBuf {
        self.root.join("cms")
    }

    /// Creates the directory (mode 0700) when missing. `traversable_by_others` adds search
    /// permission for group and others (0711), which the `postgres` OS user needs to reach the
    /// embedded CMS when the controller runs as root.
    pub fn create(&self, traversable_by_others: bool) -> anyhow::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .with_context(|| format!("create {}", self.root.display()))?;
        if traversable_by_others {
            let mode = fs::metadata(&self.root)
                .with_context(|| format!("read the metadata of {}", self.root.display()))?
                .permissions()
                .mode();
            if mode & 0o011 != 0o011 {
                fs::set_permissions(
                    &self.root,
                    fs::Permissions::from_mode((mode | 0o011) & 0o7777),
                )
                .with_context(|| format!("make {} traversable", self.root.display()))?;
            }
        }
        Ok(())
    }
}

/// The URL clients use to reach an API bound to `addr` (`https` when it serves TLS): an
/// unspecified address (`0.0.0.0`, `::`) is reached through loopback.
pub fn listen_url(addr: SocketAddr, tls: bool) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

/// Writes `contents` to `path` with `mode` through a temporary file and a rename, so a reader
/// never sees half of it.
pub fn write_file_atomically(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let file_name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        file.write_all(contents.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("write {}", tmp.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("rename {} into place", tmp.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes the address file if it still holds `url` (another controller may have replaced it).
pub fn remove_addr_file(path: &Path, url: &str) {
    match fs::read_to_string(path) {
        Ok(contents) if contents.trim() == url => {
            if let Err(e) = fs::remove_file(path) {
                tracing::warn!("remove {}: {e}", path.display());
            }
        }
        _ => {}
    }
}

/// Whether a user (`uid`, primary group `gid`) may search a directory with `mode`, owned by
/// `owner`:`group`.
pub fn can_search(mode: u32, owner: u32, group: u32, uid: u32, gid: u32) -> bool {
    if uid == 0 {
        return true;
    }
    let bit = if uid == owner {
        0o100
    } else if gid == group {
        0o010
    } else {
        0o001
    };
    mode & bit != 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn search_permission_follows_owner_group_other() {
        // Owner postgres (uid 100, gid 200) on a 0700 dir.
        assert!(can_search(0o40700, 100, 200, 100, 200));
        // Someone else's 0700 dir: no; 0711: yes.
        assert!(!can_search(0o40700, 0, 0, 100, 200));
        assert!(can_search(0o40711, 0, 0, 100, 200));
        // Group-only search.
        assert!(can_search(0o40710, 0, 200, 100, 200));
        assert!(!can_search(0o40701, 0, 200, 100, 200));
    }

    #[test]
    fn listen_url_reaches_unspecified_addresses_through_loopback() {
        assert_eq!(
            listen_url("0.0.0.0:7700".parse().unwrap(), false),
            "http://127.0.0.1:7700"
        );
        assert_eq!(
            listen_url("[::]:80".parse().unwrap(), true),
            "https://[::1]:80"
        );
        assert_eq!(
            listen_url("10.1.2.3:7700".parse().unwrap(), false),
            "http://10.1.2.3:7700"
        );
    }

    #[test]
    fn home_is_created_private_or_traversable() {
        let dir = tempfile::tempdir().unwrap();
        let private = ControllerHome::new(dir.path().join("a/private"));
        private.create(false).unwrap();
        let mode = fs::metadata(private.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);

        let shared = ControllerHome::new(dir.path().join("shared"));
        shared.create(true).unwrap();
        let mode = fs::metadata(shared.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o711);
    }

    #[test]
    fn address_file_is_replaced_whole_and_removed_only_when_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.addr");
        write_file_atomically(&path, "http://127.0.0.1:1\n", 0o644).unwrap();
        write_file_atomically(&path, "http://127.0.0.1:2\n", 0o644).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "http://127.0.0.1:2\n");
        remove_addr_file(&path, "http://127.0.0.1:1");
        assert!(path.exists());
        remove_addr_file(&path, "http://127.0.0.1:2");
        assert!(!path.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
