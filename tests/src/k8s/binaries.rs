//! Where the Kubernetes binaries built by `scripts/k8s/build.sh` are: `$TOYGRES_K8S_BIN_DIR`, else
//! the directory that `build.sh --print-bin-dir` prints. Missing binaries fail the test with the
//! command that builds them: these tests run in CI and never skip silently.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory holding `kube` (the multi-call control-plane binary), `etcd` and `helm`.
#[derive(Debug, Clone)]
pub struct K8sBinaries {
    dir: PathBuf,
}

/// The workspace root (the parent of the `tests` crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_path_buf()
}

impl K8sBinaries {
    /// Finds the binaries, or panics saying how to build them.
    pub fn locate() -> Self {
        let dir = match std::env::var_os("TOYGRES_K8S_BIN_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let script = workspace_root().join("scripts/k8s/build.sh");
                let out = Command::new("bash")
                    .arg(&script)
                    .arg("--print-bin-dir")
                    .output()
                    .unwrap_or_else(|e| panic!("run {} --print-bin-dir: {e}", script.display()));
                assert!(
                    out.status.success(),
                    "the Kubernetes binaries are not built: run `bash scripts/k8s/build.sh` \
                     (or set TOYGRES_K8S_BIN_DIR); {} said: {}",
                    script.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
            }
        };
        let bins = Self { dir };
        for name in ["kube", "etcd"] {
            assert!(
                bins.dir.join(name).is_file(),
                "{} is missing: run `bash scripts/k8s/build.sh` (or fix TOYGRES_K8S_BIN_DIR)",
                bins.dir.join(name).display()
            );
        }
        bins
    }

    /// The multi-call binary (`kube kube-apiserver …`, `kube kubectl …`).
    pub fn kube(&self) -> PathBuf {
        self.dir.join("kube")
    }

    pub fn etcd(&self) -> PathBuf {
        self.dir.join("etcd")
    }

    pub fn helm(&self) -> PathBuf {
        let helm = self.dir.join("helm");
        assert!(
            helm.is_file(),
            "{} is missing: run `bash scripts/k8s/build.sh`",
            helm.display()
        );
        helm
    }
}
