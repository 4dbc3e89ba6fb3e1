//! One pod's life on a process node, as a kubelet would run it: network namespace and address,
//! volumes, init containers in order, then every container supervised (restarted per
//! `restartPolicy` with back-off, probed with startup, liveness and readiness probes), status
//! reported to the apiserver after each change, and on deletion SIGTERM to each container's
//! main process, the grace period, SIGKILL to everything left in the pod's namespace, and the
//! object removed with grace 0.
//!
//! Differences from a kubelet, on purpose: back-off starts at 1 s and is capped at 10 s (tests
//! must not wait five minutes); when a container's main process exits, its process group is
//! killed, and in a single-container pod everything left in the pod's network namespace is
//! killed too (processes that `setsid`, like a postmaster started by `pg_ctl`, leave the group;
//! the namespace is what a cgroup would be).

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::join_all;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodIP, PodStatus, Probe,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::{watch, Notify};

use super::container::{argv, launch_script, merge_env, BindMount, LaunchPlan};
use super::context::{NodeContext, PodEntry};
use super::env::{resolve, ObjectCache};
use super::images::ImageSpec;
use super::probes::{run_once, ProbeTarget};
use super::volumes::{prepare, PreparedVolume};
use crate::k8s::network::{kill_netns, PodNet};

const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// What the node knows about one container.
#[derive(Debug, Clone)]
struct ContainerRecord {
    name: String,
    image: String,
    restart_count: i32,
    state: ContainerState,
    last_state: Option<ContainerState>,
    ready: bool,
    started: bool,
}

impl ContainerRecord {
    fn new(c: &Container) -> Self {
        Self {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            restart_count: 0,
            state: waiting("ContainerCreating", None),
            last_state: None,
            ready: false,
            started: false,
        }
    }

    fn status(&self) -> ContainerStatus {
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: format!("process://{}", self.image),
            container_id: Some(format!("process://{}", self.name)),
            ready: self.ready,
            started: Some(self.started),
            restart_count: self.restart_count,
            state: Some(self.state.clone()),
            last_state: self.last_state.clone(),
            ..ContainerStatus::default()
        }
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..ContainerState::default()
    }
}

/// What the node reports about the pod.
#[derive(Debug)]
struct PodRecord {
    ip: String,
    host_ip: String,
    start_time: Time,
    phase: &'static str,
    initialized: bool,
    init_containers: Vec<ContainerRecord>,
    containers: Vec<ContainerRecord>,
    transitions: HashMap<&'static str, (bool, Time)>,
}

impl PodRecord {
    fn status(&mut self) -> PodStatus {
        let running = self.phase == "Running";
        let containers_ready = running && self.containers.iter().all(|c| c.ready);
        let mut conditions = Vec::new();
        for (kind, value) in [
            ("PodScheduled", true),
            ("Initialized", self.initialized),
            ("ContainersReady", containers_ready),
            ("Ready", containers_ready && self.initialized),
        ] {
            let entry = self.transitions.entry(kind).or_insert((value, now()));
            if entry.0 != value {
                *entry = (value, now());
            }
            conditions.push(PodCondition {
                type_: kind.into(),
                status: if value { "True" } else { "False" }.into(),
                last_transition_time: Some(entry.1.clone()),
                ..PodCondition::default()
            });
        }
        PodStatus {
            phase: Some(self.phase.into()),
            pod_ip: Some(self.ip.clone()),
            pod_ips: Some(vec![PodIP {
                ip: self.ip.clone(),
            }]),
            host_ip: Some(self.host_ip.clone()),
            start_time: Some(self.start_time.clone()),
            conditions: Some(conditions),
            init_container_statuses: (!self.init_containers.is_empty()).then(|| {
                self.init_containers
                    .iter()
                    .map(ContainerRecord::status)
                    .collect()
            }),
            container_statuses: Some(
                self.containers
                    .iter()
                    .map(ContainerRecord::status)
                    .collect(),
            ),
            ..PodStatus::default()
        }
    }

    fn container(&mut self, init: bool, index: usize) -> &mut ContainerRecord {
        if init {
            &mut self.init_containers[index]
        } else {
            &mut self.containers[index]
        }
    }
}

/// The record and a wake-up for the status writer.
#[derive(Debug)]
struct Shared {
    record: Mutex<PodRecord>,
    changed: Notify,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut PodRecord)) {
        f(&mut self.record.lock().expect("pod record"));
        self.changed.notify_one();
    }
}

/// Writes the pod's status whenever it changes, until aborted.
async fn write_status(api: Api<Pod>, name: String, shared: Arc<Shared>) {
    let mut last: Option<serde_json::Value> = None;
    loop {
        shared.changed.notified().await;
        let status = shared.record.lock().expect("pod record").status();
        let Ok(json) = serde_json::to_value(&status) else {
            continue;
        };
        if last.as_ref() == Some(&json) {
            continue;
        }
        let patch = Patch::Merge(serde_json::json!({ "status": json }));
        match api
            .patch_status(&name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => last = Some(json),
            Err(kube::Error::Api(e)) if e.code == 404 => return,
            Err(e) => {
                tracing::warn!("report status of pod {name}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                shared.changed.notify_one();
            }
        }
    }
}

fn grace_of(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or(pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30);
    Duration::from_secs(seconds.max(0) as u64)
}

enum Ending {
    /// The object has a deletion timestamp: stop within its grace period, then remove it.
    Deleting(Duration),
    /// The object is gone (force-deleted), or the node agent is stopping.
    Gone,
}

/// Runs the pod whose latest object `updates` carries (`None` once deleted), until it ends.
pub(super) async fn run(ctx: Arc<NodeContext>, mut updates: watch::Receiver<Option<Pod>>) {
    let Some(pod) = updates.borrow().clone() else {
        return;
    };
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    if pod.metadata.deletion_timestamp.is_some() {
        delete_object(&api, &name, &uid).await;
        return;
    }
    let net = match ctx.bridge.add_pod() {
        Ok(net) => net,
        Err(e) => {
            tracing::warn!("pod {namespace}/{name}: {e:#}");
            return;
        }
    };
    let key = format!("{namespace}/{name}");
    ctx.pods.lock().expect("pods").insert(
        key.clone(),
        PodEntry {
            uid: uid.clone(),
            net: net.clone(),
            name: super::hosts::PodName {
                namespace: namespace.clone(),
                name: name.clone(),
                hostname: pod.spec.as_ref().and_then(|s| s.hostname.clone()),
                subdomain: pod.spec.as_ref().and_then(|s| s.subdomain.clone()),
                ip: net.ip,
            },
        },
    );
    // Before any container starts: `ip netns exec` mounts the file only if it exists.
    ctx.refresh_hosts();
    let pod_dir = ctx.dir.join("pods").join(&uid);
    let spec = pod.spec.clone().unwrap_or_default();
    let shared = Arc::new(Shared {
        record: Mutex::new(PodRecord {
            ip: net.ip.to_string(),
            host_ip: ctx.bridge.host_ip().to_string(),
            start_time: now(),
            phase: "Pending",
            initialized: spec.init_containers.as_ref().is_none_or(Vec::is_empty),
            init_containers: spec
                .init_containers
                .iter()
                .flatten()
                .map(ContainerRecord::new)
                .collect(),
            containers: spec.containers.iter().map(ContainerRecord::new).collect(),
            transitions: HashMap::new(),
        }),
        changed: Notify::new(),
    });
    shared.changed.notify_one();
    let writer = tokio::spawn(write_status(api.clone(), name.clone(), shared.clone()));

    let (stop_tx, stop_rx) = watch::channel(false);
    let lifecycle = run_containers(
        ctx.clone(),
        shared.clone(),
        Arc::new(pod),
        net.clone(),
        pod_dir.clone(),
        stop_rx,
    );
    tokio::pin!(lifecycle);
    let mut finished = false;
    let ending = loop {
        tokio::select! {
            _ = &mut lifecycle, if !finished => {
                finished = true;
                let netns = net.netns.clone();
                let _ = tokio::task::spawn_blocking(move || kill_netns(&netns, Duration::from_secs(5))).await;
            }
            changed = updates.changed() => {
                if changed.is_err() {
                    break Ending::Gone;
                }
                let latest = updates.borrow().clone();
                match latest {
                    None => break Ending::Gone,
                    Some(p) if p.metadata.deletion_timestamp.is_some() => break Ending::Deleting(grace_of(&p)),
                    Some(_) => {}
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    if let (Ending::Deleting(grace), false) = (&ending, finished) {
        let _ = tokio::time::timeout(*grace, &mut lifecycle).await;
    }
    {
        let mut pods = ctx.pods.lock().expect("pods");
        if pods.get(&key).map(|e| e.uid == uid).unwrap_or(false) {
            pods.remove(&key);
        }
    }
    let bridge = ctx.bridge.clone();
    let removed = net.clone();
    let _ = tokio::task::spawn_blocking(move || bridge.remove_pod(&removed)).await;
    ctx.refresh_hosts();
    // No late status write may land on a successor pod of the same name.
    writer.abort();
    let _ = writer.await;
    let _ = std::fs::remove_dir_all(&pod_dir);
    if let Ending::Deleting(_) = ending {
        delete_object(&api, &name, &uid).await;
    }
}

async fn delete_object(api: &Api<Pod>, name: &str, uid: &str) {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!("delete pod {name}: {e}"),
    }
}

/// Volumes, then init containers one by one, then all containers; returns when every container
/// is done for good or `stop` is set.
async fn run_containers(
    ctx: Arc<NodeContext>,
    shared: Arc<Shared>,
    pod: Arc<Pod>,
    net: PodNet,
    pod_dir: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let host_ip = ctx.bridge.host_ip().to_string();
    let ip = net.ip.to_string();
    let mut objects = ObjectCache::new(ctx.client.clone(), &namespace);
    let volumes = loop {
        match prepare(&ctx.client, &pod, &pod_dir, &ip, &host_ip, &mut objects).await {
            Ok(v) => break v,
            Err(e) => {
                let message = format!("{e:#}");
                shared.update(|r| {
                    for c in r.containers.iter_mut().chain(r.init_containers.iter_mut()) {
                        c.state = waiting("ContainerCreating", Some(message.clone()));
                    }
                });
                objects = ObjectCache::new(ctx.client.clone(), &namespace);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    };
    // Secret and ConfigMap files follow their objects until the pod stops (see `resync`).
    let _resync = super::resync::spawn(ctx.client.clone(), pod.clone(), pod_dir.clone());
    let spec = pod.spec.clone().unwrap_or_default();
    let runner = ContainerRunner {
        ctx: ctx.clone(),
        shared: shared.clone(),
        pod: pod.clone(),
        net: net.clone(),
        pod_dir,
        volumes,
        single: spec.containers.len() == 1,
    };
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        match runner.supervise(c, i, true, stop.clone()).await {
            Some(0) => {}
            Some(_) => {
                shared.update(|r| r.phase = "Failed");
                return;
            }
            None => return,
        }
    }
    shared.update(|r| {
        r.initialized = true;
        r.phase = "Running";
    });
    let codes = join_all(
        spec.containers
            .iter()
            .enumerate()
            .map(|(i, c)| runner.supervise(c, i, false, stop.clone())),
    )
    .await;
    if codes.iter().all(Option::is_some) {
        let ok = codes.iter().all(|c| *c == Some(0));
        shared.update(|r| r.phase = if ok { "Succeeded" } else { "Failed" });
    }
}

/// What every container of a pod shares.
struct ContainerRunner {
    ctx: Arc<NodeContext>,
    shared: Arc<Shared>,
    pod: Arc<Pod>,
    net: PodNet,
    pod_dir: PathBuf,
    volumes: HashMap<String, PreparedVolume>,
    single: bool,
}

enum RunEnd {
    Exited(std::process::ExitStatus),
    Stopped,
}

impl ContainerRunner {
    fn restart_policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }

    /// Runs container `c` until it is done for good (`Some(exit code)`) or stopped (`None`).
    async fn supervise(
        &self,
        c: &Container,
        index: usize,
        init: bool,
        mut stop: watch::Receiver<bool>,
    ) -> Option<i32> {
        let policy = self.restart_policy();
        let mut backoff = BACKOFF_START;
        loop {
            if *stop.borrow() {
                return None;
            }
            let image = c.image.clone().unwrap_or_default();
            let spec = self.ctx.images.read().expect("images").get(&image).cloned();
            let launched = match spec {
                None => Err((
                    "ErrImagePull",
                    format!("image {image} is not mapped to a local program"),
                )),
                Some(spec) => match self.plan(c, &spec).await {
                    Err(e) => Err(("CreateContainerConfigError", format!("{e:#}"))),
                    Ok(plan) => match self.spawn(c, &plan) {
                        Err(e) => Err(("RunContainerError", format!("{e:#}"))),
                        Ok(child) => Ok((child, spec, plan)),
                    },
                },
            };
            let (mut child, spec, plan) = match launched {
                Ok(x) => x,
                Err((reason, message)) => {
                    tracing::warn!("container {}: {message}", c.name);
                    self.shared.update(|r| {
                        r.container(init, index).state = waiting(reason, Some(message))
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return None,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            let pid = child.id().unwrap_or_default();
            let started_at = Instant::now();
            let has_startup = c.startup_probe.is_some() && !init;
            self.shared.update(|r| {
                let rec = r.container(init, index);
                rec.state = ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(now()),
                    }),
                    ..ContainerState::default()
                };
                rec.started = !has_startup;
                rec.ready = !init && !has_startup && c.readiness_probe.is_none();
            });
            let target = ProbeTarget {
                ip: self.net.ip,
                pid,
                env: plan.env.clone(),
            };
            let probes = async {
                if init {
                    return std::future::pending::<()>().await;
                }
                self.probe_until_kill(c, &spec, &target, index).await
            };
            let end = tokio::select! {
                status = child.wait() => RunEnd::Exited(status.unwrap_or_else(|_| std::process::ExitStatus::from_raw(1 << 8))),
                _ = probes => {
                    // Liveness or startup failed: stop the container, then restart it.
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
                    let grace = grace_of(&self.pod);
                    if tokio::time::timeout(grace, child.wait()).await.is_err() {
                        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    }
                    RunEnd::Exited(child.wait().await.unwrap_or_else(|_| std::process::ExitStatus::from_raw(9)))
                }
                _ = stop.changed() => {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
                    let _ = child.wait().await;
                    RunEnd::Stopped
                }
            };
            // Whatever the container left behind goes with it.
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            if self.single && !init {
                let netns = self.net.netns.clone();
                let _ =
                    tokio::task::spawn_blocking(move || kill_netns(&netns, Duration::from_secs(5)))
                        .await;
            }
            let status = match end {
                RunEnd::Stopped => {
                    self.shared.update(|r| {
                        let rec = r.container(init, index);
                        rec.ready = false;
                        rec.state = terminated(None, "Completed");
                    });
                    return None;
                }
                RunEnd::Exited(status) => status,
            };
            let code = status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            let restart = match policy.as_str() {
                "Never" => false,
                "OnFailure" => code != 0,
                _ => !init || code != 0,
            };
            let stopping = *stop.borrow();
            self.shared.update(|r| {
                let rec = r.container(init, index);
                rec.ready = false;
                rec.started = false;
                let state = terminated(Some(code), if code == 0 { "Completed" } else { "Error" });
                if restart && !stopping {
                    rec.last_state = Some(state);
                    rec.restart_count += 1;
                    rec.state = waiting("CrashLoopBackOff", None);
                } else {
                    rec.state = state;
                }
            });
            if !restart || stopping {
                return if stopping { None } else { Some(code) };
            }
            if started_at.elapsed() >= Duration::from_secs(10) {
                backoff = BACKOFF_START;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return None,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Runs the startup, liveness and readiness probes; returns when the container must be
    /// killed (startup or liveness failed `failureThreshold` times in a row).
    async fn probe_until_kill(
        &self,
        c: &Container,
        spec: &ImageSpec,
        target: &ProbeTarget,
        index: usize,
    ) {
        let nsenter = self.ctx.tools.nsenter.clone();
        if let Some(probe) = &c.startup_probe {
            if !self
                .probe_loop(probe, c, spec, target, &nsenter, |_| {}, (true, true))
                .await
            {
                return;
            }
            self.shared.update(|r| {
                r.containers[index].started = true;
                r.containers[index].ready = c.readiness_probe.is_none();
            });
        }
        let readiness = async {
            match &c.readiness_probe {
                Some(probe) => {
                    self.probe_loop(
                        probe,
                        c,
                        spec,
                        target,
                        &nsenter,
                        |ready| {
                            self.shared.update(|r| r.containers[index].ready = ready);
                        },
                        (false, false),
                    )
                    .await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let liveness = async {
            match &c.liveness_probe {
                Some(probe) => {
                    self.probe_loop(probe, c, spec, target, &nsenter, |_| {}, (false, true))
                        .await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = readiness => std::future::pending::<()>().await,
            _ = liveness => {}
        }
    }

    /// Probes every period, calling `on_result` with each settled result (after
    /// successThreshold successes / failureThreshold failures). `(until_success,
    /// until_failure)`: return `true` at the first settled success, `false` at the first
    /// settled failure (readiness never returns, liveness returns on failure, startup on both).
    #[allow(clippy::too_many_arguments)]
    async fn probe_loop(
        &self,
        probe: &Probe,
        c: &Container,
        spec: &ImageSpec,
        target: &ProbeTarget,
        nsenter: &str,
        on_result: impl Fn(bool),
        (until_success, until_failure): (bool, bool),
    ) -> bool {
        let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
        let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
        let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
        tokio::time::sleep(Duration::from_secs(
            probe.initial_delay_seconds.unwrap_or(0).max(0) as u64,
        ))
        .await;
        let (mut successes, mut failures) = (0, 0);
        loop {
            let started = Instant::now();
            if run_once(probe, c, spec, target, nsenter).await {
                successes += 1;
                failures = 0;
                if successes >= success_threshold {
                    on_result(true);
                    if until_success {
                        return true;
                    }
                }
            } else {
                failures += 1;
                successes = 0;
                if failures >= failure_threshold {
                    on_result(false);
                    if until_failure {
                        return false;
                    }
                }
            }
            tokio::time::sleep(period.saturating_sub(started.elapsed())).await;
        }
    }

    /// Env, argv, mounts and user for one start of `c`.
    async fn plan(&self, c: &Container, spec: &ImageSpec) -> anyhow::Result<LaunchPlan> {
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let ip = self.net.ip.to_string();
        let host_ip = self.ctx.bridge.host_ip().to_string();
        let node_env = vec![
            (
                "HOSTNAME".to_string(),
                self.pod.metadata.name.clone().unwrap_or_default(),
            ),
            (
                "KUBERNETES_SERVICE_HOST".to_string(),
                self.ctx.apiserver_host.to_string(),
            ),
            (
                "KUBERNETES_SERVICE_PORT".to_string(),
                self.ctx.apiserver_port.to_string(),
            ),
            (
                "KUBERNETES_SERVICE_PORT_HTTPS".to_string(),
                self.ctx.apiserver_port.to_string(),
            ),
        ];
        let mut objects = ObjectCache::new(self.ctx.client.clone(), &namespace);
        let base: Vec<(String, String)> =
            spec.env.iter().cloned().chain(node_env.clone()).collect();
        let spec_env = resolve(c, &self.pod, &ip, &host_ip, &mut objects, &base).await?;
        let env = merge_env(spec, &node_env, &spec_env);
        let vars: HashMap<String, String> = env.iter().cloned().collect();

        let pod_spec = self.pod.spec.clone().unwrap_or_default();
        let pod_sc = pod_spec.security_context.clone().unwrap_or_default();
        let sc = c.security_context.clone().unwrap_or_default();
        let run_as = sc.run_as_user.or(pod_sc.run_as_user);
        let run_gid = sc.run_as_group.or(pod_sc.run_as_group);
        let user = match run_as {
            Some(uid) => Some(spec.map_uid(uid as u32, run_gid.map(|g| g as u32))),
            None => spec.user,
        };
        let fs_group = pod_sc.fs_group.map(|g| spec.map_uid(g as u32, None).1);

        let mut mounts = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let volume = self
                .volumes
                .get(&m.name)
                .with_context(|| format!("no volume {}", m.name))?;
            let mut source = volume.host_path.clone();
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                source = source.join(sub);
                if !source.exists() {
                    std::fs::create_dir_all(&source).context("create a subPath dir")?;
                }
            }
            if let (true, Some(group)) = (volume.generated, fs_group) {
                super::volumes::share_with_group(&volume.host_path, group)?;
            }
            if volume.writable_data {
                if let Some((uid, gid)) = user.filter(|(uid, _)| *uid != 0) {
                    let gid = fs_group.unwrap_or(gid);
                    let _ = nix::unistd::chown(&source, Some(uid.into()), Some(gid.into()));
                }
            }
            self.ctx
                .mount_points
                .ensure(Path::new(&m.mount_path), source.is_file())?;
            mounts.push(BindMount {
                source,
                target: m.mount_path.clone(),
                read_only: volume.read_only || m.read_only == Some(true),
            });
        }
        let working_dir = c.working_dir.clone().or(spec.working_dir.clone());
        if let Some(dir) = &working_dir {
            let covered = mounts.iter().any(|m| m.target == *dir);
            if !covered && !Path::new(dir).exists() {
                // The image would have created it, owned by its user: give the pod its own.
                let own = self.pod_dir.join("workdir").join(&c.name);
                std::fs::create_dir_all(&own).context("create the working dir")?;
                std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o755))
                    .context("chmod")?;
                if let Some((uid, gid)) = user {
                    let _ = nix::unistd::chown(&own, Some(uid.into()), Some(gid.into()));
                }
                self.ctx.mount_points.ensure(Path::new(dir), false)?;
                mounts.push(BindMount {
                    source: own,
                    target: dir.clone(),
                    read_only: false,
                });
            }
        }
        Ok(LaunchPlan {
            argv: argv(c, spec, &vars),
            env,
            working_dir,
            user,
            supplementary_group: fs_group,
            mounts,
        })
    }

    fn spawn(&self, c: &Container, plan: &LaunchPlan) -> anyhow::Result<tokio::process::Child> {
        anyhow::ensure!(
            !plan.argv.is_empty(),
            "the container has no command and its image no entrypoint"
        );
        let tools = &self.ctx.tools;
        let logs = self.pod_dir.join("logs");
        std::fs::create_dir_all(&logs).context("create the log dir")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{}.log", c.name)))
            .context("open the container log")?;
        let script = launch_script(plan, &tools.setpriv, &tools.mount);
        let mut cmd = tokio::process::Command::new(&tools.ip);
        cmd.args([
            "netns",
            "exec",
            &self.net.netns,
            "/bin/sh",
            "-c",
            &script,
            &c.name,
        ])
        .args(&plan.argv)
        .env_clear()
        .envs(plan.env.iter().cloned())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().context("clone the log")?)
        .stderr(log)
        .process_group(0);
        cmd.spawn().context("start the container process")
    }
}

fn terminated(code: Option<i32>, reason: &str) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code.unwrap_or(0),
            reason: Some(reason.into()),
            finished_at: Some(now()),
            ..ContainerStateTerminated::default()
        }),
        ..ContainerState::default()
    }
}
