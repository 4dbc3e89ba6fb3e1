//! Pushed detection and self-fencing, end to end on the local platform:
//!
//! - a sidecar reports at once that its Postgres died, and the instance's actor checks then
//!   instead of at its next round: with rounds 5 s apart a killed primary is failed over in well
//!   under 5 s, under writes, with no acknowledged commit lost; a report from a superseded
//!   primary is answered "fence yourself", and reports need the member's own token;
//! - a primary cut off from the controller and from every standby fences itself within the
//!   default isolation lease, stays fenced, and the instance recovers once the controller is
//!   back, with no acknowledged commit lost.

#![allow(clippy::unwrap_used)]

mod support;

use std::fs;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::*;
use toygres_common::member_report::{report_token, ReportAnswer};

/// The health interval of these tests: long, so that only a pushed report explains a quick
/// reaction.
const INTERVAL_MS: u64 = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_whose_postgres_dies_is_failed_over_before_the_next_round() {
    let interval = INTERVAL_MS.to_string();
    // Two failed checks 100 ms apart decide: the sidecar restarts a dead Postgres after 500 ms,
    // and the failover must not depend on winning that race by luck of the round's timing.
    let (home, api) = start_ha(
        &[("TOYGRES_HEALTH_INTERVAL_MS", &interval)],
        "pd",
        serde_json::json!({"cooldown_secs": 0, "failure_threshold": 2,
                           "check_interval_ms": 100}),
    )
    .await;
    let (rw, password) = connection(&api, "pd").await;
    let writers = Writers::start(2, &rw, &password);
    writers
        .acked_after(Instant::now(), None, "a first write")
        .await;
    let primary = primary_of(&api, "pd").await.unwrap();
    let port = pg_port(&api, "pd", &primary).await;

    // Just after a round: the next one is almost a whole interval away.
    eventually(HA_DEADLINE, "a round that just happened", || async {
        (last_check_age(&api, "pd", "").await < 0.3).then_some(())
    })
    .await;
    let before = events(&api, "pd").await.events.last().map_or(0, |e| e.id);
    let postmaster = postmaster_of(&home, "pd", &primary);
    kill(Pid::from_raw(postmaster), Signal::SIGKILL).unwrap();
    let killed = Instant::now();

    let failover = eventually(HA_DEADLINE, "a failover-automatic event", || async {
        events(&api, "pd")
            .await
            .events
            .into_iter()
            .find(|e| e.kind == "failover-automatic")
    })
    .await;
    // Events are timed to the second: the time it was first seen bounds it from above.
    let took = killed.elapsed();
    eprintln!("kill -9 of {primary}'s postmaster: promotion seen after {took:?} at most");
    // Without a report, the first check after the kill is the next round, at least
    // INTERVAL_MS - 300 ms later.
    assert!(
        took < Duration::from_millis(INTERVAL_MS - 1_000),
        "the failover came {took:?} after the kill, not before the next round"
    );
    let all = events(&api, "pd").await.events;
    let report = all
        .iter()
        .find(|e| {
            // The primary's sidecar saw its Postgres die, or a standby lost its stream:
            // whichever came first asked for the check.
            e.kind == "member-report"
                && (e.message.contains("postgres-died") || e.message.contains("primary-lost"))
                && e.id > before
        })
        .unwrap_or_else(|| panic!("no report after the kill: {all:#?}"));
    assert!(
        report.id < failover.id,
        "{report:?} came after {failover:?}"
    );

    let first = writers
        .acked_after(killed, Some(port), "a write on the new primary")
        .await;
    eprintln!("first commit elsewhere after {:?}", first - killed);
    // Enough writes for the loss check to mean something, however loaded the machine.
    eventually(HA_DEADLINE, "more writes on the new primary", || async {
        (writers.acks().len() > 60).then_some(())
    })
    .await;
    let acks = writers.stop().await;
    assert_no_commit_lost(&rw, &password, &acks, 1).await;

    // The old primary, were it still to call itself one on its old timeline, is told to fence.
    let new_primary = primary_of(&api, "pd").await.unwrap();
    let old_timeline = 1;
    eventually(
        HA_DEADLINE,
        "the new primary's timeline recorded",
        || async {
            members(&api, "pd")
                .await
                .members
                .iter()
                .any(|m| m.name == new_primary && m.timeline > Some(old_timeline))
                .then_some(())
        },
    )
    .await;
    let sidecar_token =
        fs::read_to_string(home.path().join("instances/pd/secrets/sidecar-token")).unwrap();
    let report = serde_json::json!({"kind": "controller-silent", "detail": "test",
                                    "role": "primary", "timeline": old_timeline});
    let send = |member: &str, token: String| {
        let url = format!("{}/v1/instances/pd/members/{member}/report", api.url);
        let report = report.clone();
        let http = api.http.clone();
        async move {
            let response = http
                .post(url)
                .bearer_auth(token)
                .json(&report)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let (status, body) = send(&primary, report_token(&sidecar_token, &primary)).await;
    assert_eq!(status, 200, "{body}");
    let answer: ReportAnswer = serde_json::from_str(&body).unwrap();
    assert!(answer.superseded, "{answer:?}");
    assert_eq!(answer.primary.as_deref(), Some(new_primary.as_str()));
    // Another member's token, the sidecar token itself, the operator's token: refused alike.
    for token in [
        report_token(&sidecar_token, &new_primary),
        sidecar_token.trim().to_string(),
        api.token.clone(),
    ] {
        let (status, body) = send(&primary, token).await;
        assert_eq!(status, 401, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_cut_off_from_controller_and_standbys_fences_itself_within_the_lease() {
    // The controller's default lease is what is tested: no TOYGRES_ISOLATION_LEASE_SECS.
    const LEASE: Duration = Duration::from_secs(5);
    let (mut home, api) = start_ha(&[NO_RESTARTS], "cut", serde_json::json!({})).await;
    let (rw, password) = connection(&api, "cut").await;
    let writers = Writers::start(2, &rw, &password);
    writers
        .acked_after(Instant::now(), None, "a first write")
        .await;
    let primary = primary_of(&api, "cut").await.unwrap();
    let port = pg_port(&api, "cut", &primary).await;
    let standbys: Vec<String> = members(&api, "cut")
        .await
        .members
        .into_iter()
        .map(|m| m.name)
        .filter(|m| *m != primary)
        .collect();
    let marker = home
        .path()
        .join("instances/cut")
        .join(&primary)
        .join("data/toygres.fenced");

    // The controller goes (and the rw endpoint with it), then every standby.
    home.kill_controller();
    for standby in &standbys {
        kill_member(&home, "cut", standby);
    }
    let cut = Instant::now();
    let fenced = eventually(
        Duration::from_secs(30),
        "the primary to fence itself",
        || async { marker.exists().then(|| cut.elapsed()) },
    )
    .await;
    eprintln!("{primary} fenced itself {fenced:?} after it was cut off (lease {LEASE:?})");
    assert!(
        fenced <= LEASE + Duration::from_millis(1_500),
        "fenced {fenced:?} after the cut; lease {LEASE:?}"
    );
    assert!(
        fenced >= LEASE - Duration::from_millis(1_000),
        "fenced {fenced:?} after the cut, before its lease {LEASE:?} ran out"
    );
    // It stays fenced, taking no connection, while nobody tells it otherwise.
    let direct =
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=2");
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(marker.exists(), "{primary} unfenced itself");
        let mut config: tokio_postgres::Config = direct.parse().unwrap();
        config.password(&password);
        assert!(
            config.connect(tokio_postgres::NoTls).await.is_err(),
            "the fenced primary accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The controller is back: the instance is whole again (a standby took over, or the
    // controller, which promoted nobody meanwhile, let its primary serve again), and nothing
    // acknowledged is lost.
    let api = home.start_with_env(&[NO_RESTARTS]).await;
    let (rw, password) = connection(&api, "cut").await;
    wait_all_healthy(&api, &home, "cut", 3).await;
    eprintln!(
        "after the controller came back: primary {:?}",
        primary_of(&api, "cut").await
    );
    let back = Instant::now();
    eventually(HA_DEADLINE, "writes after the recovery", || async {
        (writers.acks().iter().filter(|a| a.at > back).count() > 50).then_some(())
    })
    .await;
    let acks = writers.stop().await;
    assert_no_commit_lost(&rw, &password, &acks, 1).await;
}

/// A controller that takes over sidecars an earlier one started points their reports at
/// itself. Here a standby's sidecar runs with a plain-HTTP `--notify-url` (what controllers
/// before TLS passed) naming the address the next controller serves HTTPS on: once adopted, the
/// death of its Postgres is reported to that controller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_sidecar_with_an_http_notify_url_reports_to_the_https_controller() {
    use std::os::unix::process::CommandExt as _;

    let mut home = Home::new();
    let api = home.start().await;
    let request = serde_json::json!({"name": "ad", "replicas": 1, "replication": "async"});
    let created = api.run_operation(&home, "/v1/instances", request).await;
    assert_eq!(created.status, "succeeded", "{created:?}\n{}", home.logs());
    wait_all_healthy(&api, &home, "ad", 2).await;
    let standby = members(&api, "ad")
        .await
        .members
        .into_iter()
        .find(|m| m.role == "standby")
        .unwrap()
        .name;
    home.kill_controller();

    // The standby's sidecar, started again as an earlier controller would have.
    let port = free_port();
    let dir = home.path().join("instances/ad").join(&standby);
    let record: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("member.json")).unwrap()).unwrap();
    let pid = i32::try_from(record["pid"].as_i64().unwrap()).unwrap();
    let split = |bytes: Vec<u8>| -> Vec<String> {
        bytes
            .split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect()
    };
    let argv = split(fs::read(format!("/proc/{pid}/cmdline")).unwrap());
    let environ = split(fs::read(format!("/proc/{pid}/environ")).unwrap());
    assert!(
        argv.iter().any(|a| a.starts_with("--notify-url=https://")),
        "{argv:?}"
    );
    let old_postmaster = postmaster_of(&home, "ad", &standby);
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    eventually(HA_DEADLINE, "the standby's sidecar to stop", || async {
        (!alive(pid) && !alive(old_postmaster)).then_some(())
    })
    .await;
    let args: Vec<String> = argv[1..]
        .iter()
        .filter(|a| !a.starts_with("--notify-ca-file="))
        .map(|a| match a.starts_with("--notify-url=") {
            true => format!("--notify-url=http://127.0.0.1:{port}"),
            false => a.clone(),
        })
        .collect();
    let log = fs::OpenOptions::new()
        .append(true)
        .open(record["log_file"].as_str().unwrap())
        .unwrap();
    let mut sidecar = std::process::Command::new(&argv[0]);
    sidecar
        .args(&args)
        .env_clear()
        .envs(environ.iter().filter_map(|kv| kv.split_once('=')))
        .current_dir(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0);
    let mut started = sidecar.spawn().unwrap();
    let new_pid = i32::try_from(started.id()).unwrap();
    // Reaped when it exits (the home's cleanup stops it with the other members).
    std::thread::spawn(move || started.wait());
    eventually(
        HA_DEADLINE,
        "the standby's Postgres to run again",
        || async {
            let pid_file = dir.join("data/postmaster.pid");
            let postmaster: i32 = fs::read_to_string(pid_file)
                .ok()?
                .lines()
                .next()?
                .trim()
                .parse()
                .ok()?;
            (postmaster != old_postmaster && alive(postmaster)).then_some(())
        },
    )
    .await;

    // The next controller serves HTTPS there and adopts the sidecar (at its start).
    let api = home.start_at("127.0.0.1", port, &[]).await;
    let adopted: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("member.json")).unwrap()).unwrap();
    assert_eq!(
        adopted["pid"].as_i64(),
        Some(i64::from(new_pid)),
        "not adopted"
    );
    wait_all_healthy(&api, &home, "ad", 2).await;

    let before = events(&api, "ad").await.events.last().map_or(0, |e| e.id);
    kill(
        Pid::from_raw(postmaster_of(&home, "ad", &standby)),
        Signal::SIGKILL,
    )
    .unwrap();
    eventually(HA_DEADLINE, "the standby's report", || async {
        events(&api, "ad")
            .await
            .events
            .into_iter()
            .find(|e| {
                e.kind == "member-report"
                    && e.member.as_deref() == Some(standby.as_str())
                    && e.message.contains("postgres-died")
                    && e.id > before
            })
            .map(|_| ())
    })
    .await;
    // It was pointed here, not started again.
    assert!(
        home.logs()
            .lines()
            .any(|l| l.contains("the adopted sidecar reports here now") && l.contains(&standby)),
        "{}",
        home.logs()
    );
}
