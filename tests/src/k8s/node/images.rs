//! Which local program a container image stands for. A process node has no image store: each
//! image repository maps to an [`ImageSpec`] that says what the image's Dockerfile would set —
//! entrypoint, cmd, user, working dir, environment — with the image's paths translated to this
//! machine's (`/usr/local/bin/toygres-sidecar` is the workspace's build, `/usr/lib/postgresql/15/bin`
//! is the machine's PostgreSQL). Tests extend the map (`busybox` runs the host's `/bin/sh`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What one image runs, translated to this machine.
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    /// The image's ENTRYPOINT (image paths; translated through `programs`).
    pub entrypoint: Vec<String>,
    /// The image's CMD.
    pub cmd: Vec<String>,
    /// Program name or image path → the program on this machine.
    pub programs: Vec<(String, PathBuf)>,
    /// The image's ENV (with this machine's paths).
    pub env: Vec<(String, String)>,
    /// The image's WORKDIR.
    pub working_dir: Option<String>,
    /// The image's USER as uid:gid (after `uid_map`).
    pub user: Option<(u32, u32)>,
    /// Image uid → a uid of this machine with a passwd entry (PostgreSQL refuses to run as a
    /// uid without one). Also applied to `runAsUser`/`runAsGroup` from the pod.
    pub uid_map: Vec<(u32, (u32, u32))>,
}

impl ImageSpec {
    /// The host path of `argv[0]`: a mapped program (by full image path or bare name), else as is.
    pub fn translate_program(&self, argv0: &str) -> String {
        let base = argv0.rsplit('/').next().unwrap_or(argv0);
        for (name, host) in &self.programs {
            let name_base = name.rsplit('/').next().unwrap_or(name);
            if name == argv0 || (!argv0.contains('/') && name_base == base) {
                return host.display().to_string();
            }
        }
        argv0.to_string()
    }

    /// A uid (and its gid) as it runs here.
    pub fn map_uid(&self, uid: u32, gid: Option<u32>) -> (u32, u32) {
        match self.uid_map.iter().find(|(from, _)| *from == uid) {
            Some((_, to)) => *to,
            None => (uid, gid.unwrap_or(uid)),
        }
    }
}

/// Image repository → spec. Lookup ignores the registry host and the tag or digest.
#[derive(Debug, Clone, Default)]
pub struct ImageMap {
    images: HashMap<String, ImageSpec>,
}

/// The default PATH of a Debian image.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The repository of an image reference: `reg:5000/toygres/sidecar:dev@sha256:…` → `toygres/sidecar`.
pub fn repository(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let mut parts: Vec<&str> = without_digest.split('/').collect();
    if parts.len() > 1
        && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost")
    {
        parts.remove(0);
    }
    let mut repo = parts.join("/");
    if let Some(last) = repo.rfind(':') {
        if !repo[last..].contains('/') {
            repo.truncate(last);
        }
    }
    repo.strip_prefix("library/")
        .map(str::to_string)
        .unwrap_or(repo)
}

/// The machine's PostgreSQL bin dir: the newest `/usr/lib/postgresql/*/bin`, else `pg_config`'s.
pub fn host_pg_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    dirs.sort();
    if let Some((_, dir)) = dirs.pop() {
        return Some(dir);
    }
    let out = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    dir.join("initdb").exists().then_some(dir)
}

fn postgres_user() -> Option<(u32, u32)> {
    let user = nix::unistd::User::from_name("postgres").ok()??;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

impl ImageMap {
    /// The workspace's images (from `images/*/Dockerfile`) plus `busybox` (the host's shell).
    pub fn with_workspace_images(bin_dir: &Path) -> Self {
        let mut map = Self::default();
        let pg_bin = host_pg_bin_dir();
        let pg_bin_str = pg_bin
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "/usr/lib/postgresql/15/bin".to_string());
        let path = format!("{}:{pg_bin_str}:{DEFAULT_PATH}", bin_dir.display());
        // images/sidecar/Dockerfile: USER 999:999 (postgres), WORKDIR /var/lib/postgresql.
        let postgres = postgres_user();
        let mut uid_map = Vec::new();
        if let Some(pg) = postgres {
            uid_map.push((999, pg));
            uid_map.push((10001, pg));
        }
        map.insert(
            "toygres/sidecar",
            ImageSpec {
                entrypoint: vec!["toygres-sidecar".into(), "run".into()],
                cmd: Vec::new(),
                programs: vec![(
                    "/usr/local/bin/toygres-sidecar".into(),
                    bin_dir.join("toygres-sidecar"),
                )],
                env: vec![
                    ("LANG".into(), "C.UTF-8".into()),
                    ("PATH".into(), path.clone()),
                    ("TOYGRES_PG_BIN_DIR".into(), pg_bin_str.clone()),
                    (
                        "TOYGRES_DATA_DIR".into(),
                        "/var/lib/postgresql/data/pgdata".into(),
                    ),
                    ("TOYGRES_TLS_DIR".into(), "/etc/toygres/tls".into()),
                ],
                working_dir: Some("/var/lib/postgresql".into()),
                user: postgres.or(Some((999, 999))),
                uid_map: uid_map.clone(),
            },
        );
        // images/controller/Dockerfile: USER 10001:10001, WORKDIR /var/lib/toygres. The
        // embedded CMS needs PostgreSQL's binaries and a uid with a passwd entry: postgres.
        map.insert(
            "toygres/controller",
            ImageSpec {
                entrypoint: vec!["toygres".into(), "controller".into()],
                cmd: Vec::new(),
                programs: vec![("/usr/local/bin/toygres".into(), bin_dir.join("toygres"))],
                env: vec![
                    ("PATH".into(), path),
                    ("TOYGRES_HOME".into(), "/var/lib/toygres".into()),
                ],
                working_dir: Some("/var/lib/toygres".into()),
                user: postgres.or(Some((10001, 10001))),
                uid_map,
            },
        );
        map.insert(
            "busybox",
            ImageSpec {
                cmd: vec!["sh".into()],
                env: vec![("PATH".into(), DEFAULT_PATH.into())],
                ..ImageSpec::default()
            },
        );
        map
    }

    /// Adds or replaces the spec of image repository `repo`.
    pub fn insert(&mut self, repo: &str, spec: ImageSpec) {
        self.images.insert(repository(repo), spec);
    }

    /// The spec of `image`, if mapped.
    pub fn get(&self, image: &str) -> Option<&ImageSpec> {
        self.images.get(&repository(image))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_drops_registry_tag_digest_and_library() {
        for (image, repo) in [
            ("toygres/sidecar", "toygres/sidecar"),
            ("toygres/sidecar:dev", "toygres/sidecar"),
            ("ghcr.io/toygres/sidecar:1.2", "toygres/sidecar"),
            (
                "localhost:5000/toygres/controller@sha256:abc",
                "toygres/controller",
            ),
            ("busybox:1.36", "busybox"),
            ("docker.io/library/busybox", "busybox"),
        ] {
            assert_eq!(repository(image), repo, "{image}");
        }
    }

    #[test]
    fn programs_translate_by_image_path_or_bare_name_only() {
        let spec = ImageSpec {
            programs: vec![(
                "/usr/local/bin/toygres".into(),
                "/w/target/debug/toygres".into(),
            )],
            ..ImageSpec::default()
        };
        assert_eq!(spec.translate_program("toygres"), "/w/target/debug/toygres");
        assert_eq!(
            spec.translate_program("/usr/local/bin/toygres"),
            "/w/target/debug/toygres"
        );
        assert_eq!(spec.translate_program("/opt/toygres"), "/opt/toygres");
        assert_eq!(spec.translate_program("sh"), "sh");
    }

    #[test]
    fn image_uids_map_to_local_users() {
        let spec = ImageSpec {
            uid_map: vec![(999, (101, 104))],
            ..ImageSpec::default()
        };
        assert_eq!(spec.map_uid(999, Some(999)), (101, 104));
        assert_eq!(spec.map_uid(1000, None), (1000, 1000));
        assert_eq!(spec.map_uid(1000, Some(5)), (1000, 5));
    }
}
