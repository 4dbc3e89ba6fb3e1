//! The orchestrations on duroxide's SQLite store (a file per test), with fake activities that record what
//! they were asked: the runbooks' order, inputs and failure handling, without any pod.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duroxide::providers::sqlite::SqliteProvider;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::Runtime;
use duroxide::{ActivityContext, Client, OrchestrationStatus};
use serde_json::{json, Value};
use toygres_common::controller_api::{ReplicationMode, ValidatedCreateInstance};
use toygres_common::domain::Role;

use super::create_instance::CreateInstanceInput;
use super::delete_instance::DeleteInstanceInput;
use super::instance_actor::{
    assess, desired_routes, ActorCommand, ActorInput, ActorSettings, ActorState, MemberSeen,
    COMMANDS_QUEUE, NOT_FOLLOWING_ROUNDS,
};
use super::members::next_member_name;
use super::replicas::AddReplicaInput;
use super::{names, registry};
use crate::activities::names as act;
use crate::activities::sidecar::ProbeResult;
use crate::engine::{runtime_options, EngineSettings};

/// Every activity call, in order: (name, input).
type Calls = Arc<Mutex<Vec<(String, Value)>>>;

/// Fake activities: each records its call and answers like the real one would. Members named in
/// `failing` never become ready.
fn fake_activities(calls: Calls, failing: BTreeSet<String>) -> ActivityRegistry {
    let all = [
        act::RECORD_OPERATION_STARTED,
        act::RECORD_OPERATION_FINISHED,
        act::RECORD_INSTANCE_RUNNING,
        act::RECORD_ACTOR,
        act::RECORD_HEALTH,
        act::RECORD_REPLICAS,
        act::ENSURE_SECRETS,
        act::DELETE_SECRETS,
        act::ENSURE_ENDPOINTS,
        act::ROUTE_ENDPOINTS,
        act::DELETE_ENDPOINTS,
        act::CREATE_MEMBER,
        act::DELETE_MEMBER,
        act::LIST_MEMBERS,
        act::READ_TOPOLOGY,
        act::ACTOR_MEMBERS,
        act::STOP_ACTOR,
        act::PRUNE_ACTOR_HISTORY,
        act::WAIT_MEMBER_READY,
        act::WAIT_SYNC_STANDBY,
        act::PROBE_MEMBER,
        act::READ_ACTOR_VIEW,
        act::SURVEY_MEMBERS,
        act::FENCE_MEMBER,
        act::PROMOTE_MEMBER,
        act::UNFENCE_MEMBER,
        act::REPOINT_STANDBY,
        act::SET_SYNC_POLICY,
        act::WAIT_CAUGHT_UP,
        act::WAIT_RECEIVED,
        act::REJOIN_MEMBER,
        act::RECORD_HANDOVER,
        act::RECORD_EVENT,
        act::SET_MEMBER_STATE,
        act::RECORD_MEMBER_OPTIONS,
    ];
    let mut builder = ActivityRegistry::builder();
    for name in all {
        let calls = Arc::clone(&calls);
        let failing = failing.clone();
        builder = builder.register(name, move |_ctx: ActivityContext, input: String| {
            let calls = Arc::clone(&calls);
            let failing = failing.clone();
            async move {
                let input: Value = serde_json::from_str(&input).unwrap_or(Value::Null);
                calls
                    .lock()
                    .unwrap()
                    .push((name.to_string(), input.clone()));
                if name == act::WAIT_MEMBER_READY && input["member"] == "db-2" {
                    // A slow copy: long enough for health rounds to run meanwhile.
                    tokio::time::sleep(Duration::from_millis(800)).await;
                }
                answer(name, &input, &failing).map(|v| v.to_string())
            }
        });
    }
    builder.build_result().unwrap()
}

fn answer(name: &str, input: &Value, failing: &BTreeSet<String>) -> Result<Value, String> {
    let instance = input["instance"].as_str().unwrap_or("db").to_string();
    let member = input["member"].as_str().unwrap_or_default().to_string();
    Ok(match name {
        n if n == act::ENSURE_SECRETS => {
            serde_json::to_value(crate::platform::SecretRefs::for_instance(&instance)).unwrap()
        }
        n if n == act::ENSURE_ENDPOINTS => json!({
            "rw": {"host": "127.0.0.1", "port": 6000},
            "ro": {"host": "127.0.0.1", "port": 6001},
        }),
        n if n == act::CREATE_MEMBER => json!({
            "instance": instance,
            "member": member,
            "address": {"pg": {"host": "127.0.0.1", "port": 7000}, "api_url": "http://127.0.0.1:8000"},
        }),
        n if n == act::WAIT_MEMBER_READY => {
            if failing.contains(&member) {
                return Err(format!("member {member} did not become ready"));
            }
            json!({"member": member, "timeline": 1})
        }
        n if n == act::WAIT_SYNC_STANDBY => json!("db-1"),
        n if n == act::LIST_MEMBERS => json!(["db-0", "db-1"]),
        n if n == act::READ_ACTOR_VIEW && input["actor_id"] == "actor-stale" => Value::Null,
        n if n == act::READ_ACTOR_VIEW => json!({
            "members": ["db-0", "db-1"],
            "primary": "db-0",
            "replication_mode": if instance == "down" { "async" } else { "sync" },
            "ha": {"failure_threshold": 2, "check_interval_ms": 50},
            "rejoining": [],
            "running_standbys": if ["lost", "following"].contains(&instance.as_str()) {
                json!(["db-1"])
            } else {
                json!([])
            },
        }),
        n if n == act::READ_TOPOLOGY && instance == "fork" => json!({
            "primary": "db-0",
            "primary_address": {"host": "127.0.0.1", "port": 7000},
            "standbys": ["db-1", "db-2"],
            "sync_candidates": ["db-1", "db-2"],
            "replication_mode": "async",
            "replicas": 2,
        }),
        n if n == act::REPOINT_STANDBY && instance == "fork" && member == "db-2" => {
            json!({"diverged": "its WAL went past the fork"})
        }
        n if n == act::READ_TOPOLOGY => json!({
            "primary": "db-0",
            "primary_address": {"host": "127.0.0.1", "port": 7000},
            "standbys": ["db-1"],
            "sync_candidates": ["db-1"],
            "replication_mode": if instance == "down" { "async" } else { "sync" },
            "replicas": 1,
        }),
        n if n == act::SURVEY_MEMBERS => json!(input["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| if m == "db-0" {
                json!({"member": m, "reachable": false, "error": "connection refused"})
            } else {
                json!({"member": m, "reachable": true, "running": true, "role": "standby",
                       "receive_lsn": 100, "streaming": false})
            })
            .collect::<Vec<_>>()),
        n if n == act::FENCE_MEMBER => {
            json!({"method": "platform", "last_lsn": null, "sidecar_error": "unreachable"})
        }
        n if n == act::PROMOTE_MEMBER => json!({"timeline": 2, "lsn": 100, "duration_ms": 5}),
        n if n == act::REJOIN_MEMBER => json!("rewind"),
        n if n == act::REPOINT_STANDBY => json!({"diverged": null}),
        n if n == act::PROBE_MEMBER && instance == "down" && member == "db-0" => {
            serde_json::to_value(ProbeResult {
                member: member.clone(),
                healthy: false,
                role: None,
                timeline: None,
                lsn: None,
                lag_bytes: None,
                standbys: Vec::new(),
                sync_state: None,
                sync_degraded: false,
                check: None,
                disk_available_bytes: None,
                disk_total_bytes: None,
                latency_ms: 1.0,
                error: Some("connection refused".into()),
            })
            .unwrap()
        }
        n if n == act::PROBE_MEMBER => serde_json::to_value(ProbeResult {
            member: member.clone(),
            healthy: true,
            role: Some(if member.ends_with("-0") {
                Role::Primary
            } else {
                Role::Standby
            }),
            timeline: Some(1),
            lsn: None,
            lag_bytes: Some(0),
            standbys: if instance == "following" && member == "db-0" {
                vec!["db-1=sync".into()]
            } else {
                Vec::new()
            },
            sync_state: None,
            sync_degraded: false,
            check: None,
            disk_available_bytes: None,
            disk_total_bytes: None,
            latency_ms: 1.0,
            error: None,
        })
        .unwrap(),
        _ => Value::Null,
    })
}

struct Harness {
    runtime: Arc<Runtime>,
    client: Client,
    calls: Calls,
    /// The store's directory: one SQLite file per test (duroxide's in-memory store is shared
    /// by every test in the process).
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(failing: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        std::fs::File::create(&path).unwrap();
        let url = format!("sqlite:{}", path.display());
        // Wrapped in the controller's waking store with a one-minute safety net: an idle
        // dispatcher only moves on a wake-up, so every test here also proves that the wake-ups
        // (queued work, finished activities, timers, events) reach it.
        let sqlite: Arc<dyn duroxide::providers::Provider> =
            Arc::new(SqliteProvider::new(&url, None).await.unwrap());
        let store: Arc<dyn duroxide::providers::Provider> = Arc::new(
            crate::wake::WakingStore::new(sqlite, Duration::from_secs(60)),
        );
        let calls: Calls = Arc::default();
        let failing = failing.iter().map(|s| s.to_string()).collect();
        let settings = EngineSettings {
            poll_interval: Duration::from_millis(5),
            ..EngineSettings::default()
        };
        let runtime = Runtime::start_with_options(
            Arc::clone(&store),
            fake_activities(Arc::clone(&calls), failing),
            registry().unwrap(),
            runtime_options(&settings),
        )
        .await;
        Self {
            runtime,
            client: Client::new(store),
            calls,
            _dir: dir,
        }
    }

    async fn run(
        &self,
        id: &str,
        orchestration: &str,
        input: &impl serde::Serialize,
    ) -> OrchestrationStatus {
        self.client
            .start_orchestration(id, orchestration, serde_json::to_string(input).unwrap())
            .await
            .unwrap();
        self.client
            .wait_for_orchestration(id, Duration::from_secs(20))
            .await
            .unwrap()
    }

    fn calls_to(&self, name: &str) -> Vec<Value> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, input)| input.clone())
            .collect()
    }

    fn order(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }

    async fn stop(self) {
        self.runtime.shutdown(Some(1000)).await;
    }
}

fn create_input(replicas: u32, replication: ReplicationMode) -> CreateInstanceInput {
    CreateInstanceInput {
        operation_id: "op-1".into(),
        spec: ValidatedCreateInstance {
            name: "db".into(),
            replicas,
            replication,
            ha: Default::default(),
        },
        actor: ActorSettings {
            // The actor started at the end idles through the test.
            health_interval_ms: 3_600_000,
            ..ActorSettings::default()
        },
    }
}

#[tokio::test]
async fn create_with_a_sync_standby_waits_for_streaming_then_sync_then_routes_and_records() {
    let harness = Harness::start(&[]).await;
    let status = harness
        .run(
            "op-1",
            names::CREATE_INSTANCE,
            &create_input(1, ReplicationMode::Sync),
        )
        .await;
    let OrchestrationStatus::Completed { output, .. } = status else {
        panic!("create did not complete: {status:?}");
    };
    let output: Value = serde_json::from_str(&output).unwrap();
    assert_eq!(output["sync_standby"], "db-1");
    assert_eq!(output["actor_id"], "actor-db-op-1");

    let order = harness.order();
    let position = |name: &str| order.iter().position(|n| n == name).unwrap();
    assert!(position(act::RECORD_OPERATION_STARTED) < position(act::ENSURE_SECRETS));
    assert!(position(act::ENSURE_SECRETS) < position(act::CREATE_MEMBER));
    assert!(position(act::SET_SYNC_POLICY) < position(act::WAIT_SYNC_STANDBY));
    assert!(position(act::WAIT_SYNC_STANDBY) < position(act::ROUTE_ENDPOINTS));
    assert!(position(act::ROUTE_ENDPOINTS) < position(act::RECORD_INSTANCE_RUNNING));

    let creates = harness.calls_to(act::CREATE_MEMBER);
    assert_eq!(creates[0]["member"], "db-0");
    assert_eq!(creates[0]["bootstrap"]["mode"], "init");
    assert_eq!(creates[1]["member"], "db-1");
    assert_eq!(creates[1]["bootstrap"]["mode"], "standby");
    let waits = harness.calls_to(act::WAIT_MEMBER_READY);
    assert_eq!(waits[1]["role"], "standby");
    assert_eq!(
        harness.calls_to(act::SET_SYNC_POLICY)[0]["policy"],
        json!({"mode": "strict", "method": "first", "num_sync": 1, "standbys": ["db-1"],
               "degrade_timeout_secs": 10})
    );
    let route = &harness.calls_to(act::ROUTE_ENDPOINTS)[0]["routes"];
    assert_eq!(route["rw"], "db-0");
    assert_eq!(route["ro"], json!(["db-1"]));
    let finished = &harness.calls_to(act::RECORD_OPERATION_FINISHED)[0];
    assert_eq!(finished["error"], Value::Null);

    // The actor was started as a detached orchestration.
    let actor = harness
        .client
        .get_orchestration_status("actor-db-op-1")
        .await
        .unwrap();
    assert!(
        matches!(actor, OrchestrationStatus::Running { .. }),
        "{actor:?}"
    );
    // No secret ever went through the history: only references.
    for (_, input) in harness.calls.lock().unwrap().iter() {
        assert!(!input.to_string().contains("password\":\""), "{input}");
    }
    harness.stop().await;
}

#[tokio::test]
async fn async_create_without_replicas_sets_no_synchronous_standby() {
    let harness = Harness::start(&[]).await;
    let status = harness
        .run(
            "op-1",
            names::CREATE_INSTANCE,
            &create_input(0, ReplicationMode::Async),
        )
        .await;
    assert!(
        matches!(status, OrchestrationStatus::Completed { .. }),
        "{status:?}"
    );
    assert!(harness.calls_to(act::SET_SYNC_POLICY).is_empty());
    assert_eq!(harness.calls_to(act::CREATE_MEMBER).len(), 1);
    assert_eq!(
        harness.calls_to(act::ROUTE_ENDPOINTS)[0]["routes"]["ro"],
        json!([])
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_failed_create_records_the_error_and_marks_the_instance_failed() {
    let harness = Harness::start(&["db-1"]).await;
    let status = harness
        .run(
            "op-1",
            names::CREATE_INSTANCE,
            &create_input(1, ReplicationMode::Async),
        )
        .await;
    let OrchestrationStatus::Failed { details, .. } = status else {
        panic!("create should fail: {status:?}");
    };
    assert!(
        details.display_message().contains("db-1"),
        "{}",
        details.display_message()
    );
    let finished = &harness.calls_to(act::RECORD_OPERATION_FINISHED)[0];
    assert!(finished["error"].as_str().unwrap().contains("db-1"));
    assert_eq!(finished["instance_state"], "failed");
    assert!(harness.calls_to(act::ROUTE_ENDPOINTS).is_empty());
    assert!(harness.calls_to(act::RECORD_ACTOR).is_empty());
    // Nothing is left running: both members, the endpoints and the credentials are removed
    // before the failure is recorded.
    let mut deleted: Vec<String> = harness
        .calls_to(act::DELETE_MEMBER)
        .iter()
        .map(|d| d["member"].as_str().unwrap().to_string())
        .collect();
    deleted.sort();
    assert_eq!(deleted, ["db-0", "db-1"]);
    let order = harness.order();
    let position = |name: &str| order.iter().position(|n| n == name).unwrap();
    assert!(position(act::DELETE_ENDPOINTS) < position(act::RECORD_OPERATION_FINISHED));
    assert!(position(act::DELETE_SECRETS) < position(act::RECORD_OPERATION_FINISHED));
    harness.stop().await;
}

#[tokio::test]
async fn delete_stops_the_actor_before_removing_members_endpoints_and_secrets() {
    let harness = Harness::start(&[]).await;
    let input = DeleteInstanceInput {
        operation_id: "op-2".into(),
        instance: "db".into(),
        actor_id: Some("actor-db-op-1".into()),
        keep_data: true,
    };
    let status = harness.run("op-2", names::DELETE_INSTANCE, &input).await;
    assert!(
        matches!(status, OrchestrationStatus::Completed { .. }),
        "{status:?}"
    );
    let order = harness.order();
    let position = |name: &str| order.iter().position(|n| n == name).unwrap();
    assert!(position(act::STOP_ACTOR) < position(act::DELETE_MEMBER));
    assert!(position(act::DELETE_MEMBER) < position(act::DELETE_ENDPOINTS));
    assert!(position(act::DELETE_ENDPOINTS) < position(act::DELETE_SECRETS));
    let deletes = harness.calls_to(act::DELETE_MEMBER);
    assert_eq!(deletes.len(), 2);
    assert!(deletes.iter().all(|d| d["keep_data"] == true));
    let finished = &harness.calls_to(act::RECORD_OPERATION_FINISHED)[0];
    assert_eq!(finished["instance_state"], "deleted");
    harness.stop().await;
}

/// Polls the recorded calls until `check` holds.
async fn until(harness: &Harness, what: &str, check: impl Fn(&Harness) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !check(harness) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out: {what}; calls: {:?}",
            harness
                .calls
                .lock()
                .unwrap()
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_actor_keeps_checking_health_while_a_queued_add_replica_runs_and_continues_as_new() {
    let harness = Harness::start(&[]).await;
    let input = ActorInput::new(
        "db",
        ActorSettings {
            health_interval_ms: 100,
            max_lag_bytes: 1024,
            rounds_per_execution: 3,
        },
    );
    harness
        .client
        .start_orchestration(
            "actor-db",
            names::INSTANCE_ACTOR,
            serde_json::to_string(&input).unwrap(),
        )
        .await
        .unwrap();
    until(&harness, "a first health round", |h| {
        !h.calls_to(act::RECORD_HEALTH).is_empty()
    })
    .await;
    let command = ActorCommand::AddReplica(AddReplicaInput {
        operation_id: "op-9".into(),
        instance: "db".into(),
        member: Some("db-2".into()),
        placement: Default::default(),
        sync_candidate: true,
        max_lag_bytes: None,
    });
    harness
        .client
        .enqueue_event(
            "actor-db",
            COMMANDS_QUEUE,
            serde_json::to_string(&command).unwrap(),
        )
        .await
        .unwrap();
    until(&harness, "the add-replica to finish", |h| {
        h.calls_to(act::RECORD_OPERATION_FINISHED)
            .iter()
            .any(|f| f["operation_id"] == "op-9")
    })
    .await;
    let status = harness
        .client
        .wait_for_orchestration("op-9", Duration::from_secs(20))
        .await
        .unwrap();
    let OrchestrationStatus::Completed { output, .. } = status else {
        panic!("add-replica did not complete: {status:?}");
    };
    assert_eq!(output.trim_matches('"'), "db-2");

    // Health rounds went on while the standby was copied.
    let calls = harness.calls.lock().unwrap().clone();
    let started = calls
        .iter()
        .position(|(n, i)| n == act::RECORD_OPERATION_STARTED && i["operation_id"] == "op-9")
        .unwrap();
    let finished = calls
        .iter()
        .position(|(n, i)| n == act::RECORD_OPERATION_FINISHED && i["operation_id"] == "op-9")
        .unwrap();
    assert!(
        calls[started..finished]
            .iter()
            .any(|(n, _)| n == act::RECORD_HEALTH),
        "no health round during the operation: {:?}",
        calls.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
    );
    // Sync mode: the new standby joins the synchronous set and the ro endpoint.
    let sync = harness.calls_to(act::SET_SYNC_POLICY);
    assert_eq!(
        sync.last().unwrap()["policy"]["standbys"],
        json!(["db-1", "db-2"])
    );
    let routed_during: Vec<&Value> = calls[started..finished]
        .iter()
        .filter(|(n, _)| n == act::ROUTE_ENDPOINTS)
        .map(|(_, input)| &input["routes"]["ro"])
        .collect();
    assert_eq!(routed_during, [&json!(["db-1", "db-2"])]);
    assert_eq!(harness.calls_to(act::RECORD_REPLICAS)[0]["replicas"], 2);

    // The actor continued as new (and pruned its old executions) and still runs.
    until(&harness, "a continue-as-new", |h| {
        !h.calls_to(act::PRUNE_ACTOR_HISTORY).is_empty()
    })
    .await;
    let actor = harness
        .client
        .get_orchestration_status("actor-db")
        .await
        .unwrap();
    assert!(
        matches!(actor, OrchestrationStatus::Running { .. }),
        "{actor:?}"
    );
    harness.stop().await;
}

#[tokio::test]
async fn an_actor_that_is_no_longer_its_instances_stops() {
    let harness = Harness::start(&[]).await;
    let input = ActorInput::new(
        "db",
        ActorSettings {
            health_interval_ms: 100,
            max_lag_bytes: 1024,
            rounds_per_execution: 50,
        },
    );
    let status = harness
        .run("actor-stale", names::INSTANCE_ACTOR, &input)
        .await;
    assert!(
        matches!(status, OrchestrationStatus::Completed { .. }),
        "{status:?}"
    );
    assert!(harness.calls_to(act::PROBE_MEMBER).is_empty());
    harness.stop().await;
}

/// A running standby the healthy primary does not list as streaming is rejoined after
/// [`NOT_FOLLOWING_ROUNDS`] rounds, once; one the primary lists is left alone.
#[tokio::test]
async fn a_standby_that_stopped_following_is_rejoined_after_enough_rounds() {
    let harness = Harness::start(&[]).await;
    for instance in ["lost", "following"] {
        let input = ActorInput::new(
            instance,
            ActorSettings {
                health_interval_ms: 20,
                max_lag_bytes: 1024,
                rounds_per_execution: 50,
            },
        );
        harness
            .client
            .start_orchestration(
                &format!("actor-{instance}"),
                names::INSTANCE_ACTOR,
                serde_json::to_string(&input).unwrap(),
            )
            .await
            .unwrap();
    }
    let rounds_of = |h: &Harness, instance: &str| {
        h.calls_to(act::PROBE_MEMBER)
            .iter()
            .filter(|p| p["instance"] == instance && p["member"] == "db-1")
            .count()
    };
    until(&harness, "the lost standby to be marked rejoining", |h| {
        h.calls_to(act::SET_MEMBER_STATE)
            .iter()
            .any(|c| c["instance"] == "lost" && c["member"] == "db-1" && c["state"] == "rejoining")
    })
    .await;
    let at_mark = rounds_of(&harness, "lost");
    assert!(
        at_mark >= NOT_FOLLOWING_ROUNDS as usize,
        "marked after {at_mark} rounds"
    );
    until(&harness, "the event", |h| {
        h.calls_to(act::RECORD_EVENT)
            .iter()
            .any(|e| e["instance"] == "lost" && e["kind"] == "standby-not-following")
    })
    .await;
    // Past the mark (the fake view never records it rejoining): marked once, and the standby
    // the primary lists was never marked.
    until(&harness, "more rounds", |h| {
        rounds_of(h, "following") >= 2 * NOT_FOLLOWING_ROUNDS as usize
            && rounds_of(h, "lost") >= at_mark + NOT_FOLLOWING_ROUNDS as usize
    })
    .await;
    let marks = |instance: &str| {
        harness
            .calls_to(act::SET_MEMBER_STATE)
            .iter()
            .filter(|c| c["instance"] == instance)
            .count()
    };
    assert_eq!((marks("lost"), marks("following")), (1, 0));
    harness.stop().await;
}

/// A standby that received more than the promoted one cannot follow it: it is left out of ro,
/// and once rw leads to the new primary it is marked rejoining and rejoined (pg_rewind), like
/// the old primary after it.
#[tokio::test]
async fn a_diverged_standby_is_kept_out_of_ro_and_rejoined_after_routing() {
    let harness = Harness::start(&[]).await;
    let standby = |member: &str, lsn: u64| {
        json!({"member": member, "reachable": true, "running": true, "role": "standby",
               "timeline": 1, "receive_lsn": lsn, "streaming": false})
    };
    let input = json!({
        "operation_id": "op-fork",
        "instance": "fork",
        "to": null,
        "force": false,
        "automatic": true,
        "ha": {},
        "last_seen": {"member": "db-0", "lsn": 300, "synchronous": [], "degraded": false},
        "surveyed": [
            {"member": "db-0", "reachable": false, "error": "connection refused"},
            standby("db-1", 300),
            standby("db-2", 200),
        ],
    });
    let status = harness.run("op-fork", names::FAILOVER, &input).await;
    assert!(
        matches!(status, OrchestrationStatus::Completed { .. }),
        "{status:?}"
    );
    let calls = harness.calls.lock().unwrap().clone();
    let at = |name: &str, check: &dyn Fn(&Value) -> bool| {
        calls
            .iter()
            .position(|(n, i)| n == name && check(i))
            .unwrap_or_else(|| panic!("no {name} call: {calls:?}"))
    };
    at(act::PROMOTE_MEMBER, &|i| i["member"] == "db-1");
    let routed = at(act::ROUTE_ENDPOINTS, &|i| i["routes"]["rw"] == "db-1");
    assert_eq!(calls[routed].1["routes"]["ro"], json!([]), "db-2 served ro");
    let marked = at(act::SET_MEMBER_STATE, &|i| {
        i["member"] == "db-2" && i["state"] == "rejoining"
    });
    let rejoined = at(act::REJOIN_MEMBER, &|i| {
        i["member"] == "db-2" && i["primary"] == "db-1"
    });
    let old_rejoined = at(act::REJOIN_MEMBER, &|i| i["member"] == "db-0");
    assert!(
        routed < marked && marked < rejoined && rejoined < old_rejoined,
        "{:?}",
        calls.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
    );
    harness.stop().await;
}

#[test]
fn the_next_member_name_is_one_past_the_highest() {
    assert_eq!(next_member_name("db", &[]), "db-0");
    assert_eq!(
        next_member_name("db", &["db-0".into(), "db-2".into(), "dbx-9".into()]),
        "db-3"
    );
}

fn probe(member: &str, role: &str, healthy: bool, lag: Option<u64>) -> ProbeResult {
    ProbeResult {
        member: member.into(),
        healthy,
        role: healthy.then(|| role.parse().unwrap()),
        timeline: Some(1),
        lsn: None,
        lag_bytes: lag,
        standbys: if role == "primary" {
            vec!["db-1=sync".into()]
        } else {
            Vec::new()
        },
        sync_state: None,
        sync_degraded: false,
        check: None,
        disk_available_bytes: None,
        disk_total_bytes: None,
        latency_ms: 1.0,
        error: (!healthy).then(|| "unreachable".to_string()),
    }
}

#[test]
fn a_standby_going_down_degrades_the_instance_and_is_an_event_once() {
    let first = assess(
        &ActorState::default(),
        vec![
            probe("db-0", "primary", true, None),
            probe("db-1", "standby", true, Some(0)),
        ],
        1024,
        &Default::default(),
    );
    assert_eq!(first.health, "healthy");
    assert_eq!(first.probes[1].sync_state.as_deref(), Some("sync"));
    assert_eq!(first.events.len(), 1, "{:?}", first.events);
    assert_eq!(first.events[0].kind, "instance-health");

    let down = assess(
        &first.state,
        vec![
            probe("db-0", "primary", true, None),
            probe("db-1", "standby", false, None),
        ],
        1024,
        &Default::default(),
    );
    assert_eq!(down.health, "degraded");
    let kinds: Vec<&str> = down.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["member-down", "instance-health"]);
    assert_eq!(
        down.state.members["db-1"],
        MemberSeen {
            healthy: false,
            lagging: false,
            check_failed: false,
            disk_low: false,
        }
    );

    let still_down = assess(
        &down.state,
        vec![
            probe("db-0", "primary", true, None),
            probe("db-1", "standby", false, None),
        ],
        1024,
        &Default::default(),
    );
    assert!(still_down.events.is_empty(), "{:?}", still_down.events);

    let back = assess(
        &still_down.state,
        vec![
            probe("db-0", "primary", true, None),
            probe("db-1", "standby", true, Some(4096)),
        ],
        1024,
        &Default::default(),
    );
    let kinds: Vec<&str> = back.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["member-up", "lag-high", "instance-health"]);
    assert_eq!(back.state.rounds, 4);
}

#[test]
fn ro_leads_to_the_healthy_standbys_that_keep_up_and_rw_to_the_primary() {
    let round = assess(
        &ActorState::default(),
        vec![
            probe("db-0", "primary", true, None),
            probe("db-1", "standby", false, None),
            probe("db-2", "standby", true, Some(0)),
            probe("db-3", "standby", true, Some(1 << 20)),
        ],
        1024,
        &Default::default(),
    );
    let routes = desired_routes(&round.probes, &round.state.members, Some("db-0")).unwrap();
    assert_eq!(routes.rw.as_deref(), Some("db-0"));
    assert_eq!(routes.ro, ["db-2"]);
    // No healthy primary: the routes are left to failover.
    let round = assess(
        &ActorState::default(),
        vec![
            probe("db-0", "primary", false, None),
            probe("db-1", "standby", true, Some(0)),
        ],
        1024,
        &Default::default(),
    );
    assert!(desired_routes(&round.probes, &round.state.members, Some("db-0")).is_none());
}

#[test]
fn no_healthy_primary_makes_the_instance_unavailable() {
    let result = assess(
        &ActorState::default(),
        vec![
            probe("db-0", "primary", false, None),
            probe("db-1", "standby", true, Some(0)),
        ],
        1024,
        &Default::default(),
    );
    assert_eq!(result.health, "unavailable");
}

#[tokio::test]
async fn the_actor_fails_over_once_the_primary_misses_enough_checks_fencing_before_promoting() {
    let harness = Harness::start(&[]).await;
    let input = ActorInput::new(
        "down",
        ActorSettings {
            health_interval_ms: 100,
            max_lag_bytes: 1024,
            rounds_per_execution: 50,
        },
    );
    harness
        .client
        .start_orchestration(
            "actor-down",
            names::INSTANCE_ACTOR,
            serde_json::to_string(&input).unwrap(),
        )
        .await
        .unwrap();
    until(&harness, "the failover to finish", |h| {
        h.calls_to(act::RECORD_OPERATION_FINISHED)
            .iter()
            .any(|f| f["kind"] == "auto-failover")
    })
    .await;
    let calls = harness.calls.lock().unwrap().clone();
    let at = |name: &str, check: &dyn Fn(&Value) -> bool| {
        calls
            .iter()
            .position(|(n, i)| n == name && check(i))
            .unwrap_or_else(|| panic!("no {name} call"))
    };
    let probes_before = calls[..at(act::FENCE_MEMBER, &|_| true)]
        .iter()
        .filter(|(n, i)| n == act::PROBE_MEMBER && i["member"] == "db-0")
        .count();
    assert!(
        probes_before >= 2,
        "failed over after {probes_before} check(s)"
    );
    let held = at(act::ROUTE_ENDPOINTS, &|i| {
        i["routes"]["rw"].is_null() && i["routes"]["hold_rw"] == true
    });
    let fenced = at(act::FENCE_MEMBER, &|i| i["member"] == "db-0");
    let promoted = at(act::PROMOTE_MEMBER, &|i| i["member"] == "db-1");
    let routed = at(act::ROUTE_ENDPOINTS, &|i| i["routes"]["rw"] == "db-1");
    let recorded = at(act::RECORD_HANDOVER, &|i| i["new_primary"] == "db-1");
    let rejoined = at(act::REJOIN_MEMBER, &|i| i["member"] == "db-0");
    assert!(
        held < fenced
            && fenced < promoted
            && promoted < recorded
            && recorded < routed
            && routed < rejoined,
        "{:?}",
        calls.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
    );
    let finished = harness
        .calls_to(act::RECORD_OPERATION_FINISHED)
        .into_iter()
        .find(|f| f["kind"] == "auto-failover")
        .unwrap();
    assert!(finished["error"].is_null(), "{finished}");
    // The fake view still names db-0 the primary and down: the cooldown keeps a second failover
    // from happening, and says so once.
    until(&harness, "the cooldown to be logged", |h| {
        h.calls_to(act::RECORD_EVENT)
            .iter()
            .any(|e| e["kind"] == "failover-cooldown")
    })
    .await;
    assert_eq!(harness.calls_to(act::PROMOTE_MEMBER).len(), 1);
    harness.stop().await;
}

#[test]
fn a_failing_health_query_degrades_the_instance_once_and_recovers() {
    let mut failing = probe("db-1", "standby", true, Some(0));
    failing.check = Some(crate::activities::sidecar::CheckResult {
        ok: false,
        message: "returned f".into(),
    });
    let round = assess(
        &ActorState::default(),
        vec![probe("db-0", "primary", true, None), failing.clone()],
        1024,
        &Default::default(),
    );
    assert_eq!(round.health, "degraded");
    assert!(round
        .events
        .iter()
        .any(|e| e.kind == "check-failed" && e.message.contains("returned f")));
    // Still failing: no new event.
    let again = assess(
        &round.state,
        vec![probe("db-0", "primary", true, None), failing],
        1024,
        &Default::default(),
    );
    assert!(again.events.iter().all(|e| e.kind != "check-failed"));
    let back = assess(
        &again.state,
        vec![
            probe("db-0", "primary", true, None),
            probe("db-1", "standby", true, Some(0)),
        ],
        1024,
        &Default::default(),
    );
    assert_eq!(back.health, "healthy");
    assert!(back.events.iter().any(|e| e.kind == "check-ok"));
}

#[test]
fn a_nearly_full_disk_degrades_the_instance_and_is_an_event() {
    let mut full = probe("db-1", "standby", true, Some(0));
    full.disk_total_bytes = Some(100 << 20);
    full.disk_available_bytes = Some(5 << 20);
    let round = assess(
        &ActorState::default(),
        vec![probe("db-0", "primary", true, None), full],
        1024,
        &Default::default(),
    );
    assert_eq!(round.health, "degraded");
    let event = round.events.iter().find(|e| e.kind == "disk-low").unwrap();
    assert!(
        event.message.contains("5 MiB free of 100 MiB"),
        "{}",
        event.message
    );
}
