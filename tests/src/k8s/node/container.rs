//! Starting one container as a process tree inside its pod's network namespace.
//!
//! The process is `ip netns exec <ns> /bin/sh -c <script> <argv…>`: `ip netns exec` enters the
//! pod's network namespace and a private mount namespace, the script bind-mounts each volume's
//! host directory at the container's real mount path (so programs see the paths their pod spec
//! names, as in a container), changes to the working dir, drops to the container's user with
//! `setpriv` and `exec`s the program (`ip` itself is started through `setpriv --pdeathsig KILL`,
//! and the drop to the container's user sets it again, so a test process killed outright takes
//! its pods' main processes with it): the pid spawned is the container's main process, in a
//! process group of its own. Mount points missing on the host are created first (see
//! [`super::volumes::MountPoints`]); a source that an earlier mount covers (an emptyDir on
//! `/tmp` while the node keeps its volumes under `/tmp`) is opened before the first mount, since
//! the kubelet reaches every source on the host. `$(VAR)` references in env values, command and args expand
//! as the kubelet expands them.

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Container;

use super::images::{ImageSpec, DEFAULT_PATH};

/// A bind mount into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// Everything needed to start a container process.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<(u32, u32)>,
    pub supplementary_group: Option<u32>,
    pub mounts: Vec<BindMount>,
}

/// Expands `$(VAR)` from `vars`; `$$(VAR)` escapes to `$(VAR)`; unknown references stay as is.
pub fn expand(input: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match vars.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// argv from the container's command/args and the image's entrypoint/cmd (Kubernetes' rules),
/// expanded and with `argv[0]` translated to the local program.
pub fn argv(
    container: &Container,
    image: &ImageSpec,
    vars: &HashMap<String, String>,
) -> Vec<String> {
    let command = container.command.clone().unwrap_or_default();
    let args = container.args.clone().unwrap_or_default();
    let mut argv: Vec<String> = match (command.is_empty(), args.is_empty()) {
        (false, false) => command.into_iter().chain(args).collect(),
        (false, true) => command,
        (true, false) => image.entrypoint.iter().cloned().chain(args).collect(),
        (true, true) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    }
    .into_iter()
    .map(|a| expand(&a, vars))
    .collect();
    if let Some(first) = argv.first_mut() {
        *first = image.translate_program(first);
    }
    argv
}

/// `s` quoted for sh.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script `/bin/sh -c` runs inside `ip netns exec`: mounts, working dir, user, exec.
pub fn launch_script(plan: &LaunchPlan, setpriv: &str, mount: &str) -> String {
    let mut script = String::from("set -e\n");
    let mut mounts = plan.mounts.clone();
    // Parents before children.
    mounts.sort_by_key(|m| m.target.matches('/').count());
    let sources = sources_behind_earlier_mounts(&mounts);
    for (fd, m) in sources
        .iter()
        .filter_map(|(i, fd)| Some((fd, mounts.get(*i)?)))
    {
        let src = sh_quote(&m.source.display().to_string());
        script.push_str(&format!("exec {fd}<{src}\n"));
    }
    for (i, m) in mounts.iter().enumerate() {
        let src = match sources.iter().find(|(j, _)| *j == i) {
            Some((_, fd)) => format!("/proc/self/fd/{fd}"),
            None => sh_quote(&m.source.display().to_string()),
        };
        let dst = sh_quote(&m.target);
        script.push_str(&format!("{mount} --bind {src} {dst}\n"));
        if m.read_only {
            script.push_str(&format!("{mount} -o remount,bind,ro {dst}\n"));
        }
    }
    for (_, fd) in &sources {
        script.push_str(&format!("exec {fd}<&-\n"));
    }
    if let Some(dir) = &plan.working_dir {
        script.push_str(&format!("cd {}\n", sh_quote(dir)));
    }
    match plan.user {
        Some((uid, gid)) if uid != 0 => {
            let groups = match plan.supplementary_group {
                Some(g) => format!("--groups={g}"),
                None => "--clear-groups".to_string(),
            };
            script.push_str(&format!(
                "exec {setpriv} --reuid={uid} --regid={gid} {groups} --pdeathsig KILL -- \"$@\"\n"
            ));
        }
        _ => script.push_str("exec \"$@\"\n"),
    }
    script
}

/// The mounts (by index, in mount order) whose host source an earlier mount hides, each with the
/// file descriptor the script opens on its source before mounting anything. The kubelet resolves
/// a volume's host directory on the host, so a container that mounts an emptyDir over `/tmp`
/// still gets its other volumes even when the node keeps them under `/tmp`; here the script
/// mounts inside the container's mount namespace, so a later source under an earlier target
/// is reached through `/proc/self/fd/N` instead of its (now covered) path. sh offers fds 3 to
/// 9; beyond seven such sources the path is used and the mount fails with a clear message.
fn sources_behind_earlier_mounts(mounts: &[BindMount]) -> Vec<(usize, u8)> {
    let hidden = mounts.iter().enumerate().filter(|(i, m)| {
        mounts[..*i]
            .iter()
            .any(|earlier| m.source.starts_with(&earlier.target))
    });
    hidden.map(|(i, _)| i).zip(3u8..=9).collect()
}

/// The env a container starts with: the image's, then what the node adds, then the pod spec's
/// (already resolved, in order).
pub fn merge_env(
    image: &ImageSpec,
    node: &[(String, String)],
    spec: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(name, _)| name == k) {
        Some(entry) => entry.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    set("PATH", DEFAULT_PATH);
    for (k, v) in image.env.iter().chain(node).chain(spec) {
        set(k, v);
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> HashMap<String, String> {
        [("A", "1"), ("POD", "web-0")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expand_follows_the_kubelet_rules() {
        for (input, want) in [
            ("$(A)", "1"),
            ("x-$(POD)-y", "x-web-0-y"),
            ("$$(A)", "$(A)"),
            ("$(MISSING)", "$(MISSING)"),
            ("$A $(A", "$A $(A"),
            ("100$", "100$"),
        ] {
            assert_eq!(expand(input, &vars()), want, "{input}");
        }
    }

    #[test]
    fn argv_combines_command_args_entrypoint_and_cmd_like_kubernetes() {
        let image = ImageSpec {
            entrypoint: vec!["toygres-sidecar".into(), "run".into()],
            cmd: vec!["--default".into()],
            programs: vec![(
                "/usr/local/bin/toygres-sidecar".into(),
                "/t/toygres-sidecar".into(),
            )],
            ..ImageSpec::default()
        };
        let c = |command: Option<Vec<&str>>, args: Option<Vec<&str>>| Container {
            command: command.map(|v| v.into_iter().map(String::from).collect()),
            args: args.map(|v| v.into_iter().map(String::from).collect()),
            ..Container::default()
        };
        assert_eq!(
            argv(&c(None, None), &image, &vars()),
            ["/t/toygres-sidecar", "run", "--default"]
        );
        assert_eq!(
            argv(&c(None, Some(vec!["--member=$(POD)"])), &image, &vars()),
            ["/t/toygres-sidecar", "run", "--member=web-0"]
        );
        assert_eq!(
            argv(
                &c(Some(vec!["sh", "-c"]), Some(vec!["echo $(A)"])),
                &image,
                &vars()
            ),
            ["sh", "-c", "echo 1"]
        );
        assert_eq!(
            argv(&c(Some(vec!["/bin/true"]), None), &image, &vars()),
            ["/bin/true"]
        );
    }

    #[test]
    fn the_launch_script_mounts_parents_first_then_drops_privileges() {
        let plan = LaunchPlan {
            argv: vec![],
            env: vec![],
            working_dir: Some("/var/lib/it's".into()),
            user: Some((101, 104)),
            supplementary_group: None,
            mounts: vec![
                BindMount {
                    source: "/h/token".into(),
                    target: "/var/run/secrets/x".into(),
                    read_only: true,
                },
                BindMount {
                    source: "/h/data".into(),
                    target: "/data".into(),
                    read_only: false,
                },
            ],
        };
        let script = launch_script(&plan, "/usr/bin/setpriv", "/usr/bin/mount");
        assert_eq!(
            script,
            "set -e\n\
             /usr/bin/mount --bind '/h/data' '/data'\n\
             /usr/bin/mount --bind '/h/token' '/var/run/secrets/x'\n\
             /usr/bin/mount -o remount,bind,ro '/var/run/secrets/x'\n\
             cd '/var/lib/it'\\''s'\n\
             exec /usr/bin/setpriv --reuid=101 --regid=104 --clear-groups --pdeathsig KILL -- \"$@\"\n"
        );
    }

    #[test]
    fn a_source_under_an_earlier_target_is_opened_before_mounting_and_closed_after() {
        let mount = |source: &str, target: &str| BindMount {
            source: source.into(),
            target: target.into(),
            read_only: false,
        };
        let plan = LaunchPlan {
            argv: vec![],
            env: vec![],
            working_dir: None,
            user: None,
            supplementary_group: None,
            mounts: vec![
                mount("/tmp/node/pod/shm", "/dev/shm"),
                mount("/tmp/node/pod/tmp", "/tmp"),
                mount("/srv/pv/data", "/data/pg"),
            ],
        };
        let script = launch_script(&plan, "/usr/bin/setpriv", "/bin/mount");
        assert_eq!(
            script,
            "set -e\n\
             exec 3<'/tmp/node/pod/shm'\n\
             /bin/mount --bind '/tmp/node/pod/tmp' '/tmp'\n\
             /bin/mount --bind /proc/self/fd/3 '/dev/shm'\n\
             /bin/mount --bind '/srv/pv/data' '/data/pg'\n\
             exec 3<&-\n\
             exec \"$@\"\n"
        );
    }

    #[test]
    fn spec_env_overrides_node_env_overrides_image_env() {
        let image = ImageSpec {
            env: vec![("PATH".into(), "/img".into()), ("LANG".into(), "C".into())],
            ..ImageSpec::default()
        };
        let env = merge_env(
            &image,
            &[("HOSTNAME".into(), "p".into())],
            &[("LANG".into(), "en".into())],
        );
        assert_eq!(
            env,
            [
                ("PATH".to_string(), "/img".to_string()),
                ("LANG".to_string(), "en".to_string()),
                ("HOSTNAME".to_string(), "p".to_string())
            ]
        );
    }
}
