//! Mount points on the host: a container bind-mounts each volume at its real path (say
//! `/etc/toygres/secrets`) inside its own mount namespace, so that path must exist on the host.
//! The harness creates the ones that are missing and removes them again when the last user is
//! gone.
//!
//! "The last user" is counted across every test process on the machine, not just this one:
//! removing a directory on the host detaches every bind mount on it in other mount namespaces
//! (Linux ≥ 3.18), so a test process that removed `/etc/toygres/secrets` when it finished took
//! the Secret files away from the running pods of every other test process (a sidecar then could
//! not read `/etc/toygres/secrets/superuser-password`). The users of each created path are
//! recorded per process in [`REGISTRY`], changed only under an exclusive `flock`; a path is
//! removed when no live process holds it, which also cleans up after a test process killed
//! outright.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};

/// The machine-wide record of created mount points: path → (pid → uses).
pub const REGISTRY: &str = "/run/toygres-k8s/mount-points.json";

type Holders = BTreeMap<PathBuf, BTreeMap<i32, usize>>;

/// The mount points one harness created or shares; released on drop (each removed when no
/// process uses it any more).
#[derive(Debug)]
pub struct MountPoints {
    registry: PathBuf,
    held: Mutex<Vec<PathBuf>>,
}

impl Default for MountPoints {
    fn default() -> Self {
        Self::with_registry(PathBuf::from(REGISTRY))
    }
}

impl MountPoints {
    /// Mount points recorded in `registry` (tests use their own).
    pub fn with_registry(registry: PathBuf) -> Self {
        Self {
            registry,
            held: Mutex::new(Vec::new()),
        }
    }

    /// Makes sure `target` exists (a file when `is_file`), recording a use of every component
    /// the harness created (now or earlier, by any test process).
    pub fn ensure(&self, target: &Path, is_file: bool) -> anyhow::Result<()> {
        let mut held = self.held.lock().expect("held mount points");
        self.with_holders(|holders| {
            let components: Vec<PathBuf> = target.ancestors().map(Path::to_path_buf).collect();
            for (i, path) in components.iter().rev().enumerate() {
                let last = i + 1 == components.len();
                if let Some(users) = holders.get_mut(path) {
                    *users.entry(own_pid()).or_default() += 1;
                } else if !path.exists() {
                    if last && is_file {
                        std::fs::write(path, b"")
                            .with_context(|| format!("create {}", path.display()))?;
                    } else {
                        std::fs::create_dir(path)
                            .with_context(|| format!("create {}", path.display()))?;
                        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                            .context("chmod a mount point")?;
                    }
                    holders.insert(path.clone(), BTreeMap::from([(own_pid(), 1)]));
                } else {
                    continue;
                }
                held.push(path.clone());
            }
            Ok(())
        })
    }

    /// Runs `f` on the registry under its lock, after dropping dead processes' uses and
    /// removing what nobody uses any more, and saves what `f` left.
    fn with_holders(
        &self,
        f: impl FnOnce(&mut Holders) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        if let Some(dir) = self.registry.parent() {
            std::fs::create_dir_all(dir).context("create the mount point registry's dir")?;
        }
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.registry.with_extension("lock"))
            .context("open the mount point registry's lock")?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .context("lock the mount point registry")?;
        let mut holders: Holders = std::fs::read(&self.registry)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        for users in holders.values_mut() {
            users.retain(|pid, uses| *uses > 0 && alive(*pid));
        }
        let outcome = f(&mut holders);
        remove_unused(&mut holders);
        let tmp = self.registry.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&holders)?)
            .context("write the mount point registry")?;
        std::fs::rename(&tmp, &self.registry).context("replace the mount point registry")?;
        outcome
    }
}

impl Drop for MountPoints {
    fn drop(&mut self) {
        let held = std::mem::take(&mut *self.held.lock().expect("held mount points"));
        let released = self.with_holders(|holders| {
            for path in &held {
                if let Some(uses) = holders.get_mut(path).and_then(|u| u.get_mut(&own_pid())) {
                    *uses = uses.saturating_sub(1);
                }
            }
            Ok(())
        });
        if let Err(e) = released {
            tracing::warn!("release mount points: {e:#}");
        }
    }
}

/// Removes (deepest first) every recorded path no process uses, and forgets it.
fn remove_unused(holders: &mut Holders) {
    let mut unused: Vec<PathBuf> = holders
        .iter()
        .filter(|(_, users)| users.values().all(|uses| *uses == 0))
        .map(|(path, _)| path.clone())
        .collect();
    unused.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for path in unused {
        let removed = if path.is_dir() {
            std::fs::remove_dir(&path).is_ok()
        } else {
            // A file mount point is removed only while it is still the empty file made here.
            std::fs::metadata(&path).is_ok_and(|m| m.len() == 0)
                && std::fs::remove_file(&path).is_ok()
        };
        if removed || !path.exists() {
            holders.remove(&path);
        }
    }
}

fn own_pid() -> i32 {
    std::process::id() as i32
}

fn alive(pid: i32) -> bool {
    pid == own_pid() || Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_created_for_a_pod_are_removed_with_the_last_user() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = dir.path().join("registry/mount-points.json");
        let target = dir.path().join("a/b/c");
        let file = dir.path().join("a/f.conf");
        let first = MountPoints::with_registry(registry.clone());
        let second = MountPoints::with_registry(registry.clone());
        first.ensure(&target, false).expect("ensure");
        first.ensure(&file, true).expect("ensure file");
        second.ensure(&target, false).expect("ensure again");
        assert!(target.is_dir() && file.is_file());
        drop(first);
        assert!(target.is_dir(), "still used by the second harness");
        assert!(!file.exists(), "only the first harness used the file");
        drop(second);
        assert!(!dir.path().join("a").exists());
        assert!(dir.path().exists(), "what existed before stays");
    }

    #[test]
    fn a_mount_point_another_live_process_uses_stays_and_a_dead_ones_goes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = dir.path().join("mount-points.json");
        let shared = dir.path().join("etc/toygres/secrets");
        let ours = MountPoints::with_registry(registry.clone());
        ours.ensure(&shared, false).expect("ensure");
        // Another test process (pid 1 stands for one that lives on) uses the same path.
        let mut holders: Holders =
            serde_json::from_slice(&std::fs::read(&registry).expect("registry")).expect("json");
        holders.get_mut(&shared).expect("recorded").insert(1, 1);
        std::fs::write(&registry, serde_json::to_vec(&holders).expect("json")).expect("write");
        drop(ours);
        assert!(shared.is_dir(), "removed under another process's pods");

        // That process dies without releasing it: the next harness cleans up.
        let mut holders: Holders =
            serde_json::from_slice(&std::fs::read(&registry).expect("registry")).expect("json");
        let dead = i32::MAX;
        for users in holders.values_mut() {
            *users = BTreeMap::from([(dead, 1)]);
        }
        std::fs::write(&registry, serde_json::to_vec(&holders).expect("json")).expect("write");
        let next = MountPoints::with_registry(registry);
        next.ensure(&dir.path().join("elsewhere"), false)
            .expect("ensure");
        assert!(
            !dir.path().join("etc").exists(),
            "a dead process's mount points stay"
        );
        drop(next);
        assert!(!dir.path().join("elsewhere").exists());
    }
}
