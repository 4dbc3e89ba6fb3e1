//! The instance actor: health rounds around a queued operation, continue-as-new, stopping when
//! replaced, rejoining lost and diverged standbys, and failing over.

#![allow(clippy::unwrap_used)]

use super::*;

#[tokio::test]
async fn the_actor_keeps_checking_health_while_a_queued_add_replica_runs_and_continues_as_new() {
    let harness = Harness::start(&[]).await;
    harness.start_actor("db", 3).await;
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
    harness.queue("db", &command).await;
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
    // rw goes to db-1 while the standbys are re-pointed; once db-2 is found diverged, ro
    // leaves it.
    let routed = at(act::ROUTE_ENDPOINTS, &|i| {
        i["routes"]["rw"] == "db-1" && i["routes"]["ro"] == json!([])
    });
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

#[tokio::test]
async fn the_actor_fails_over_once_the_primary_misses_enough_checks_fencing_before_promoting() {
    let harness = Harness::start(&[]).await;
    harness.start_actor("down", 50).await;
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
    // Writes are held and the old primary fenced at once, both before the promotion.
    assert!(
        held < promoted
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
