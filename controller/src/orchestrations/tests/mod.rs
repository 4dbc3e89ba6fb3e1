//! The orchestrations on duroxide's SQLite store (a file per test), with fake activities that record what
//! they were asked: the runbooks' order, inputs and failure handling, without any pod. This
//! module is the harness; [`create_delete`], [`actor`] and [`backup`] hold the tests.

#![allow(clippy::unwrap_used)]

mod actor;
mod backup;
mod create_delete;
mod credentials;
mod parameters;
mod restore_in_place;

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
    ActorCommand, ActorInput, ActorSettings, COMMANDS_QUEUE, NOT_FOLLOWING_ROUNDS,
};
use super::members::next_member_name;
use super::replicas::AddReplicaInput;
use super::{names, registry};
use crate::activities::names as act;
use crate::activities::sidecar::ProbeResult;
use crate::engine::{runtime_options, EngineSettings};

/// Every activity call, in order: (name, input).
type Calls = Arc<Mutex<Vec<(String, Value)>>>;

/// Fake activities, one for every name in [`act::ALL`]: each records its call and answers like
/// the real one would. Members named in `failing` never become ready.
fn fake_activities(calls: Calls, failing: BTreeSet<String>) -> ActivityRegistry {
    let mut builder = ActivityRegistry::builder();
    for &name in act::ALL {
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
        // A member started again at another address (a Kubernetes pod's new IP).
        n if n == act::CREATE_MEMBER && instance.ends_with("moved") => json!({
            "instance": instance,
            "member": member,
            "address": {"pg": {"host": "10.0.0.9", "port": 5432}, "api_url": "https://10.0.0.9:8008"},
        }),
        n if n == act::CREATE_MEMBER => json!({
            "instance": instance,
            "member": member,
            "address": {"pg": {"host": "127.0.0.1", "port": 7000}, "api_url": "https://127.0.0.1:8000"},
        }),
        n if n == act::WAIT_MEMBER_READY
            && instance.starts_with("unrestorable")
            && input["timeout_secs"] == json!(super::members::RESTORE_READY_TIMEOUT_SECS) =>
        {
            return Err(format!(
                "member {member} failed to bootstrap: recovery ended before the target"
            ))
        }
        n if n == act::WAIT_MEMBER_READY => {
            if failing.contains(&member) {
                return Err(format!("member {member} did not become ready"));
            }
            json!({"member": member, "timeline": 1})
        }
        n if n == act::WAIT_SYNC_STANDBY => json!("db-1"),
        n if n == act::ROTATE_PASSWORD => json!({"role_name": instance, "primary": "db-0"}),
        n if n == act::OPERATION_CANCELLED => json!(false),
        n if n == act::OPERATION_STATUS && input["operation_id"] == "failed-first" => {
            json!("failed")
        }
        n if n == act::OPERATION_STATUS => json!("succeeded"),
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
        n if n == act::BACKUP_CANDIDATES => json!([
            {"member": "db-0", "role": "primary", "state": "running", "health": "healthy"},
            {"member": "db-1", "role": "standby", "state": "running", "health": "healthy",
             "lag_bytes": 0},
        ]),
        n if n == act::TAKE_BACKUP && instance == "broken" => {
            return Err("the store is full".into())
        }
        n if n == act::TAKE_BACKUP => json!({
            "id": "20261204T130000Z", "kind": input["kind"], "instance": instance,
            "member": member, "from_standby": member != "db-0", "start_lsn": "0/2000028",
            "stop_lsn": "0/2000100", "timeline": 1, "start_time": "2026-12-04T13:00:00Z",
            "stop_time": "2026-12-04T13:00:01Z", "raw_bytes": 100, "stored_bytes": 10,
            "compression": "1", "pg_version": "16.4", "system_identifier": "1", "sha256": "00",
            "objects": [],
        }),
        n if n == act::REPOINT_STANDBY => json!({"diverged": null}),
        // A restart-class value written waits for a restart: the change (48MB) everywhere, and
        // on `unfenced`'s primary (restarted with the change by a failed switchover) whatever
        // is written.
        n if n == act::WRITE_PARAMETERS => {
            let values = input["parameters"].as_object().cloned().unwrap_or_default();
            let waiting: Vec<&String> = values
                .iter()
                .filter(|(_, v)| *v == "48MB" || (instance == "unfenced" && member == "db-0"))
                .map(|(k, _)| k)
                .collect();
            json!(waiting)
        }
        n if n == act::WAIT_CAUGHT_UP => json!({"lag_bytes_at_start": 0, "lag_bytes": 0}),
        n if n == act::PLAN_BACKUP_DELETION && instance == "tidy" => json!({"doomed": []}),
        n if n == act::PLAN_BACKUP_DELETION => json!({
            "doomed": [{"id": "bk-old", "store_id": "20261201T000000Z"}, {"id": "bk-failed"}],
            "member": "db-0",
        }),
        n if n == act::DELETE_BACKUP_OBJECTS => {
            json!({"backups": input["store_ids"], "wal_files": 3})
        }
        n if n == act::PROBE_MEMBER && instance == "down" && member == "db-0" => {
            serde_json::to_value(ProbeResult {
                member: member.clone(),
                healthy: false,
                role: None,
                timeline: None,
                lsn: None,
                lag_bytes: None,
                lag_seconds: None,
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
            lag_seconds: None,
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

    /// Starts `actor-<instance>`, with a health round every 100 ms.
    async fn start_actor(&self, instance: &str, rounds_per_execution: u32) {
        let input = ActorInput::new(
            instance,
            ActorSettings {
                health_interval_ms: 100,
                max_lag_bytes: 1024,
                rounds_per_execution,
            },
        );
        self.client
            .start_orchestration(
                &format!("actor-{instance}"),
                names::INSTANCE_ACTOR,
                serde_json::to_string(&input).unwrap(),
            )
            .await
            .unwrap();
    }

    /// Queues `command` on `actor-<instance>`.
    async fn queue(&self, instance: &str, command: &ActorCommand) {
        self.client
            .enqueue_event(
                &format!("actor-{instance}"),
                COMMANDS_QUEUE,
                serde_json::to_string(command).unwrap(),
            )
            .await
            .unwrap();
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
            backup: None,
            app: None,
            ro: Default::default(),
            parameters: Default::default(),
            profile: None,
            size: None,
        },
        actor: ActorSettings {
            // The actor started at the end idles through the test.
            health_interval_ms: 3_600_000,
            ..ActorSettings::default()
        },
        restore: None,
    }
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
