//! Network partitions, end to end on the local platform: each member's sidecar (and so its
//! Postgres) runs in a network namespace of its own, joined to the controller's by a bridge
//! ([`support::netns`]), and a test cuts links. Three members, sync, writers through rw
//! recording the server (`inet_server_port()`, unique per member) of each acknowledged commit:
//!
//! - the primary cut from the controller only: no failover, its standbys heard from it just
//!   now (a `failover-skipped` event names them);
//! - the primary cut from its standbys only: no failover, the controller still reaches it (its
//!   probes succeed, so it never fails a check); sync commits wait until the link is back;
//! - the primary cut from everything: a standby takes over, the isolated primary fences itself
//!   within its lease, and a client inside its namespace gets no commit acknowledged by it;
//! - the primary cut from everything, automatic failover off: it fences itself within its
//!   lease, and stays fenced until the operator fails over;
//! - the controller cut from everything: nothing changes.
//!
//! In each: no acknowledged commit lost, and in commit order the server changes at most once
//! (never two servers acknowledging). They need root and `ip netns`; elsewhere they say so and
//! pass.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::netns::{Network, Node};
use support::*;

/// One partition test at a time: they measure how long things take.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a partition that must change nothing is held.
const HOLD: Duration = Duration::from_secs(10);

/// The sidecars' default isolation lease.
const LEASE: Duration = Duration::from_secs(5);

/// The home, then the network its members run in: fields drop in this order, so the members
/// are stopped before their namespaces are deleted.
struct Partitioned {
    home: Home,
    api: Api,
    network: Network,
    name: String,
}

/// A controller on the bridge and a three-member sync instance `name` whose members each run
/// in a namespace; `None` (the test passes, saying why) where namespaces cannot be made.
async fn partitioned(name: &str, ha: serde_json::Value) -> Option<Partitioned> {
    if !Network::available() {
        eprintln!("skipped: network namespaces need root and `ip netns`");
        return None;
    }
    // Members `<name>-0..3`: the three, and one more should the instance replace one.
    let members: Vec<String> = (0..4).map(|i| format!("{name}-{i}")).collect();
    let network = Network::create(&members);
    let mut home = Home::new();
    let map = home.path().join("member-networks.json");
    network.write_map(&map);
    let api = home
        .start_on(
            &network.controller_host().to_string(),
            &[("TOYGRES_LOCAL_MEMBER_NETWORKS", map.to_str().unwrap())],
        )
        .await;
    create_ha(&home, &api, name, ha).await;
    Some(Partitioned {
        home,
        api,
        network,
        name: name.to_string(),
    })
}

impl Partitioned {
    async fn primary(&self) -> String {
        primary_of(&self.api, &self.name).await.unwrap()
    }

    async fn standbys(&self, primary: &str) -> Vec<String> {
        members(&self.api, &self.name)
            .await
            .members
            .into_iter()
            .map(|m| m.name)
            .filter(|m| m != primary)
            .collect()
    }

    async fn last_event_id(&self) -> i64 {
        events(&self.api, &self.name)
            .await
            .events
            .last()
            .map_or(0, |e| e.id)
    }

    /// The events after `after`, one a line.
    async fn events_since(&self, after: i64) -> Vec<String> {
        events(&self.api, &self.name)
            .await
            .events
            .into_iter()
            .filter(|e| e.id > after)
            .map(|e| format!("{} {} {:?}: {}", e.at, e.kind, e.member, e.message))
            .collect()
    }

    fn fence_marker(&self, member: &str) -> std::path::PathBuf {
        self.home
            .path()
            .join("instances")
            .join(&self.name)
            .join(member)
            .join("data/toygres.fenced")
    }

    /// Holds for [`HOLD`], asserting all along that no failover began and `primary` did not
    /// fence itself.
    async fn assert_nothing_changes(&self, since: i64, primary: &str) {
        let until = Instant::now() + HOLD;
        while Instant::now() < until {
            let changed: Vec<String> = self
                .events_since(since)
                .await
                .into_iter()
                .filter(|e| e.contains("failover") && !e.contains("failover-skipped"))
                .collect();
            assert!(changed.is_empty(), "a failover began: {changed:#?}");
            assert!(
                !self.fence_marker(primary).exists(),
                "{primary} fenced itself"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(self.primary().await, primary);
    }

    /// Waits for writes through rw after `since`, all taken by the server on `port`.
    async fn writes_resume_on(&self, writers: &Writers, since: Instant, port: i32) {
        eventually(HA_DEADLINE, "writes after the link is back", || async {
            let after: Vec<Ack> = writers
                .acks()
                .into_iter()
                .filter(|a| a.at > since)
                .collect();
            assert!(
                after.iter().all(|a| a.port == port),
                "writes went to another server than {port}"
            );
            (after.len() > 60).then_some(())
        })
        .await;
    }
}

/// Writers through rw, and what was true when they first wrote.
struct Load {
    rw: String,
    password: String,
    writers: Writers,
    primary: String,
    /// The primary's Postgres port (the server id the writers record).
    port: i32,
    /// The newest event before the fault.
    before: i64,
}

impl Partitioned {
    /// Two writers through rw, once they have written.
    async fn load(&self) -> Load {
        let (rw, password) = connection(&self.api, &self.name).await;
        let writers = Writers::start(2, &rw, &password);
        writers.acked_after(Instant::now(), None, "a write").await;
        let primary = self.primary().await;
        let port = pg_port(&self.api, &self.name, &primary).await;
        let before = self.last_event_id().await;
        Load {
            rw,
            password,
            writers,
            primary,
            port,
            before,
        }
    }

    /// Heals every cut link and checks the instance went on as it was: writes resume on the
    /// same server, every member is healthy, no acknowledged commit is lost.
    async fn heal_and_check(&self, load: Load, fault: &str, outcome: &str) {
        self.network.heal();
        let healed = Instant::now();
        self.writes_resume_on(&load.writers, healed, load.port)
            .await;
        wait_all_healthy(&self.api, &self.home, &self.name, 3).await;
        let acks = load.writers.stop().await;
        assert_no_commit_lost(&load.rw, &load.password, &acks, 0).await;
        chaos_row(fault, outcome, None, acks.len());
        eprintln!("events: {:#?}", self.events_since(load.before).await);
    }
}

/// A single writer in `member`'s namespace, straight to that member's Postgres (not through
/// rw): an application next to a primary that the partition left on its side.
struct InsideWriter {
    stop: Arc<AtomicBool>,
    /// How many commits it had acknowledged, last it looked.
    acked: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<Vec<Ack>>,
}

impl InsideWriter {
    /// Starts it, and waits until it has written.
    async fn start(
        network: &Network,
        member: &str,
        rw: &str,
        pg_port: i32,
        password: &str,
    ) -> Self {
        // The rw URI with the member's address in place of the endpoint's.
        let (scheme_user, rest) = rw.split_once('@').unwrap();
        let (_, path) = rest.split_once('/').unwrap();
        let url = format!("{scheme_user}@{}:{pg_port}/{path}", network.host_of(member));
        let (stop, password) = (Arc::new(AtomicBool::new(false)), password.to_string());
        let (stopping, acked) = (stop.clone(), Arc::new(AtomicUsize::new(0)));
        let counted = acked.clone();
        let thread = network.spawn_inside(member, move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                // Ids far from the rw writers'.
                let writers = Writers::start_from(1, 1 << 40, &url, &password);
                while !stopping.load(Ordering::Relaxed) {
                    counted.store(writers.acks().len(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                writers.stop().await
            })
        });
        let writer = Self {
            stop,
            acked,
            thread,
        };
        eventually(Duration::from_secs(30), "a write from inside", || async {
            (writer.acked.load(Ordering::Relaxed) > 10).then_some(())
        })
        .await;
        writer
    }

    fn stop(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_cut_from_the_controller_only_is_not_failed_over() {
    let _serial = SERIAL.lock().await;
    let Some(p) = partitioned("pc", serde_json::json!({})).await else {
        return;
    };
    let load = p.load().await;
    let (primary, before) = (load.primary.clone(), load.before);

    p.network.cut(Node::Controller, Node::Member(&primary));
    // The controller loses the primary (and so does rw, which runs in the controller), asks the
    // standbys, and they heard from it just now.
    let skipped = eventually(
        Duration::from_secs(30),
        "a failover-skipped event",
        || async {
            p.events_since(before)
                .await
                .into_iter()
                .find(|e| e.contains("failover-skipped"))
        },
    )
    .await;
    eprintln!("cut from the controller: {skipped}");
    assert!(skipped.contains("heard from it"), "{skipped}");
    p.assert_nothing_changes(before, &primary).await;

    p.heal_and_check(
        load,
        "primary cut from the controller",
        "no failover (standbys heard it)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_cut_from_its_standbys_only_keeps_serving_once_the_link_is_back() {
    let _serial = SERIAL.lock().await;
    let Some(p) = partitioned("ps", serde_json::json!({})).await else {
        return;
    };
    let load = p.load().await;
    let (primary, before) = (load.primary.clone(), load.before);

    for standby in p.standbys(&primary).await {
        p.network
            .cut(Node::Member(&primary), Node::Member(&standby));
    }
    let cut = Instant::now();
    // The controller still reaches the primary, whose probes succeed: it never fails a check,
    // whatever the standbys report. Sync commits wait for a standby meanwhile.
    p.assert_nothing_changes(before, &primary).await;
    let during = load
        .writers
        .acks()
        .iter()
        .filter(|a| a.at > cut + Duration::from_secs(1))
        .count();
    eprintln!("commits acknowledged during the cut (sync, strict): {during}");
    assert_eq!(during, 0, "a sync commit acknowledged without a standby");

    p.heal_and_check(
        load,
        "primary cut from its standbys",
        "no failover (the controller reaches it); sync commits wait",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_cut_from_everything_is_replaced_and_fences_itself_within_its_lease() {
    let _serial = SERIAL.lock().await;
    let trials: usize = std::env::var("TOYGRES_PARTITION_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    // Repeated trials fail over again and again: no cooldown.
    let Some(p) = partitioned("pe", serde_json::json!({"cooldown_secs": 0})).await else {
        return;
    };
    let (rw, password) = connection(&p.api, &p.name).await;
    let writers = Writers::start(2, &rw, &password);
    let mut inside_acks = Vec::new();
    let mut took = Vec::new();
    for trial in 1..=trials {
        writers.acked_after(Instant::now(), None, "a write").await;
        let primary = p.primary().await;
        let port = pg_port(&p.api, &p.name, &primary).await;
        let inside = InsideWriter::start(&p.network, &primary, &rw, port, &password).await;
        let before = p.last_event_id().await;

        p.network.isolate(&primary);
        let cut = Instant::now();
        let stopped = watch_stop(&p, &primary, cut);
        let first = writers
            .acked_after(cut, Some(port), "a write on another server")
            .await;
        let elsewhere = first - cut;
        let stopped = stopped.await.unwrap();
        eprintln!(
            "trial {trial}: {primary} isolated; first commit elsewhere after {elsewhere:?}; \
             it was fenced or stopped after {stopped:?} (lease {LEASE:?})"
        );
        assert!(
            stopped <= LEASE + Duration::from_millis(1_500),
            "fenced {stopped:?} after the cut; lease {LEASE:?}"
        );
        let acks = inside.stop();
        none_acknowledged_after_the_cut(&acks, cut);
        inside_acks.extend(acks);
        took.push(elsewhere);
        for line in p.events_since(before).await {
            if line.contains("failover-automatic") || line.contains("member-report") {
                eprintln!("  {line}");
            }
        }

        p.network.reconnect(&primary);
        wait_all_healthy(&p.api, &p.home, &p.name, 3).await;
    }
    let mut acks = writers.stop().await;
    let changes = trials;
    acks.extend(inside_acks);
    acks.sort_by_key(|a| a.at);
    assert_no_commit_lost(&rw, &password, &acks, changes).await;
    for (trial, took) in took.iter().enumerate() {
        chaos_row(
            "primary cut from everything",
            &format!("failover, trial {}", trial + 1),
            Some(*took),
            acks.len(),
        );
    }
    took.sort();
    eprintln!(
        "isolated primary -> first commit elsewhere, {} trials: median {:?}, max {:?} \
         ({} commits acknowledged, none lost)",
        took.len(),
        took[took.len() / 2],
        took[took.len() - 1],
        acks.len()
    );
}

/// One row of the chaos suite's table (`scripts/chaos/run.sh` collects them), printed once
/// the test's checks passed: no acknowledged commit lost, never two servers acknowledging.
fn chaos_row(fault: &str, outcome: &str, first_commit_elsewhere: Option<Duration>, acked: usize) {
    let took =
        first_commit_elsewhere.map_or("-".to_string(), |t| format!("{:.2} s", t.as_secs_f64()));
    eprintln!("chaos | {fault} | {outcome} | {took} | {acked} | 0 | 1");
}

/// How long after `cut` the member was fenced (its marker written, by itself or by the
/// platform) or its postmaster gone, polled every 50 ms in the background.
fn watch_stop(p: &Partitioned, member: &str, cut: Instant) -> tokio::task::JoinHandle<Duration> {
    let marker = p.fence_marker(member);
    let postmaster = postmaster_of(&p.home, &p.name, member);
    tokio::spawn(async move {
        while !marker.exists() && alive(postmaster) {
            assert!(
                cut.elapsed() < Duration::from_secs(60),
                "still serving a minute after the cut"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cut.elapsed()
    })
}

/// An isolated primary's acknowledgements: none for a commit sent after the `cut` (no standby
/// can have confirmed it). One sent before may be answered just after it, its standby's
/// confirmation having come in while the link was being cut: printed, and covered by the tests'
/// check that no acknowledged commit is lost.
fn none_acknowledged_after_the_cut(acks: &[Ack], cut: Instant) {
    let late: Vec<&Ack> = acks.iter().filter(|a| a.sent > cut).collect();
    assert!(
        late.is_empty(),
        "the isolated primary acknowledged {} commits sent after the cut (the first {:?} \
         after it)",
        late.len(),
        late.iter().map(|a| a.sent - cut).min()
    );
    let in_flight: Vec<Duration> = acks
        .iter()
        .filter(|a| a.at > cut)
        .map(|a| a.at - cut)
        .collect();
    if !in_flight.is_empty() {
        eprintln!("  sent before the cut, answered after it by {in_flight:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_primary_left_in_place_fences_itself_within_its_lease() {
    let _serial = SERIAL.lock().await;
    // Nobody takes over, and the controller kills nothing: only the primary's own lease acts.
    let Some(p) = partitioned("pf", serde_json::json!({"failover_enabled": false})).await else {
        return;
    };
    let (rw, password) = connection(&p.api, &p.name).await;
    let writers = Writers::start(2, &rw, &password);
    writers.acked_after(Instant::now(), None, "a write").await;
    let primary = p.primary().await;
    let port = pg_port(&p.api, &p.name, &primary).await;
    let inside = InsideWriter::start(&p.network, &primary, &rw, port, &password).await;
    let before = p.last_event_id().await;

    p.network.isolate(&primary);
    let cut = Instant::now();
    let marker = p.fence_marker(&primary);
    let fenced = eventually(
        Duration::from_secs(30),
        "the primary to fence itself",
        || async { marker.exists().then(|| cut.elapsed()) },
    )
    .await;
    eprintln!("{primary} isolated: it fenced itself after {fenced:?} (lease {LEASE:?})");
    assert!(
        fenced <= LEASE + Duration::from_millis(1_500)
            && fenced >= LEASE - Duration::from_millis(1_500),
        "fenced {fenced:?} after the cut; lease {LEASE:?}"
    );
    let inside_acks = inside.stop();
    none_acknowledged_after_the_cut(&inside_acks, cut);
    let began: Vec<String> = p
        .events_since(before)
        .await
        .into_iter()
        .filter(|e| e.contains("failover-automatic"))
        .collect();
    assert!(began.is_empty(), "{began:#?}");

    // Back on the network it stays fenced: the controller, which may not fail over, leaves it
    // so, and the operator fails over.
    p.network.reconnect(&primary);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(marker.exists(), "{primary} unfenced itself");
    let path = format!("/v1/instances/{}/failover", p.name);
    let failover = p
        .api
        .run_operation(&p.home, &path, serde_json::json!({}))
        .await;
    assert_eq!(failover.status, "succeeded", "{failover:?}");
    wait_all_healthy(&p.api, &p.home, &p.name, 3).await;
    let back = Instant::now();
    eventually(HA_DEADLINE, "writes after the link is back", || async {
        (writers.acks().iter().filter(|a| a.at > back).count() > 60).then_some(())
    })
    .await;
    let mut acks = writers.stop().await;
    acks.extend(inside_acks);
    acks.sort_by_key(|a| a.at);
    assert_no_commit_lost(&rw, &password, &acks, 1).await;
    chaos_row(
        "primary isolated, failover off",
        &format!("fenced itself after {fenced:.1?}; operator failover"),
        None,
        acks.len(),
    );
    eprintln!("events: {:#?}", p.events_since(before).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_cut_from_everything_changes_nothing() {
    let _serial = SERIAL.lock().await;
    let Some(p) = partitioned("px", serde_json::json!({})).await else {
        return;
    };
    let load = p.load().await;
    let (primary, before) = (load.primary.clone(), load.before);

    let all = members(&p.api, &p.name).await.members;
    for member in &all {
        p.network.cut(Node::Controller, Node::Member(&member.name));
    }
    p.assert_nothing_changes(before, &primary).await;

    p.heal_and_check(
        load,
        "controller cut from every member",
        "no failover, no fence; same primary after",
    )
    .await;
}
