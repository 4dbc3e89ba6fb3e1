//! Operations on one instance are serialized, bounded and cancellable, end to end (the real
//! controller, the local platform, real sidecars and Postgres): the replica cap holds where the
//! adds run, not only where they arrive; a full queue is answered 429; a cancelled add removes
//! the member it made; deleting an instance cancels what waits on it instead of answering 409.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::*;
use toygres_common::controller_api::{
    EventList, ReplicationStatus, MAX_QUEUED_OPERATIONS, MAX_REPLICAS,
};

/// Sidecars (not postmasters) of the instance `name`.
fn sidecars(home: &Home, name: &str) -> usize {
    home.instance_processes(name)
        .into_iter()
        .filter(|pid| !is_postmaster(*pid))
        .count()
}

async fn operation(api: &Api, id: &str) -> Operation {
    api.get(&format!("/v1/operations/{id}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_never_pass_the_cap_a_full_queue_gets_429_and_cancel_and_delete_win() {
    let mut home = Home::new();
    let api = home.start().await;
    let created = api.create("capped", 1, "async").await;
    let done = api.wait_operation(&home, &created.operation_id).await;
    assert_eq!(done.status, "succeeded", "{done:?}");
    // The events route pages: the newest `limit`, or the first `limit` after `since`.
    let all: EventList = api.get("/v1/instances/capped/events").await;
    assert!(all.events.len() >= 2, "{all:?}");
    let newest: EventList = api.get("/v1/instances/capped/events?limit=2").await;
    let ids = |list: &EventList| list.events.iter().map(|e| e.id).collect::<Vec<_>>();
    // (Events logged meanwhile are newer: the page holds the newest two, oldest first.)
    let newest_ids = ids(&newest);
    assert_eq!(newest_ids.len(), 2, "{newest:?}");
    assert!(newest_ids[0] < newest_ids[1]);
    assert!(newest_ids[1] >= *ids(&all).last().unwrap());
    let first = all.events[0].id;
    let after: EventList = api
        .get(&format!(
            "/v1/instances/capped/events?since={first}&limit=1"
        ))
        .await;
    assert_eq!(ids(&after), [all.events[1].id]);

    // More adds at once than the queue holds (and more than the cap allows).
    let requests = usize::try_from(MAX_QUEUED_OPERATIONS).unwrap() + 2;
    let answers = futures::future::join_all((0..requests).map(|_| {
        api.send(
            reqwest::Method::POST,
            "/v1/instances/capped/replicas",
            Some(serde_json::json!({})),
        )
    }))
    .await;
    let mut accepted = Vec::new();
    let mut refused = 0;
    for (status, text) in &answers {
        match status {
            202 => accepted.push(
                serde_json::from_str::<OperationAccepted>(text)
                    .unwrap()
                    .operation_id,
            ),
            429 => {
                let body: serde_json::Value = serde_json::from_str(text).unwrap();
                assert_eq!(body["error"]["code"], "too_many_operations", "{text}");
                refused += 1;
            }
            other => panic!("add answered {other}: {text}"),
        }
    }
    assert!(
        accepted.len() <= usize::try_from(MAX_QUEUED_OPERATIONS).unwrap(),
        "{answers:?}"
    );
    assert!(refused >= 2, "{answers:?}");
    // One of them still waits: cancelling it ends it at once, and only once. (`accepted` is
    // in the order the answers came, not the queue's: one that was pending when looked at may
    // have started before the cancel arrives, and is then asked to stop instead; try another.)
    let mut queued = None;
    for id in accepted.iter().rev() {
        if operation(&api, id).await.status != "pending" {
            continue;
        }
        let (status, text) = api
            .send(
                reqwest::Method::DELETE,
                &format!("/v1/operations/{id}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{text}");
        let answer: Operation = serde_json::from_str(&text).unwrap();
        if answer.status == "cancelled" {
            queued = Some(id.clone());
            break;
        }
    }
    let queued = queued.expect("an add still queued, cancelled");
    assert_eq!(operation(&api, &queued).await.status, "cancelled");
    let (status, text) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/operations/{queued}"),
            None,
        )
        .await;
    assert_eq!(status, 409, "{text}");

    // The one copying the primary (its member made: step 2 creates it, step 3 waits for the
    // copy), cancelled, stops at its next safe point and removes its member.
    let running = eventually(Duration::from_secs(60), "an add copying", || async {
        for id in &accepted {
            let op = operation(&api, id).await;
            if op.status == "running" && op.progress.is_some_and(|p| p.step >= 2) {
                return Some(id.clone());
            }
        }
        None
    })
    .await;
    let (status, text) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/operations/{running}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let cancelled = api.wait_operation(&home, &running).await;
    assert_eq!(cancelled.status, "cancelled", "{cancelled:?}");

    // The rest run one by one: the cap holds, the adds past it fail, and nothing is left over.
    let mut succeeded = 0;
    for id in accepted
        .iter()
        .filter(|id| **id != queued && **id != running)
    {
        let op = api.wait_operation(&home, id).await;
        match op.status.as_str() {
            "succeeded" => succeeded += 1,
            "failed" => assert!(
                op.error.as_deref().is_some_and(|e| e.contains("most")),
                "{op:?}"
            ),
            _ => panic!("{op:?}"),
        }
    }
    let cap = usize::try_from(MAX_REPLICAS).unwrap();
    assert_eq!(succeeded, cap - 1, "one standby existed before the adds");
    let status: ReplicationStatus = api.get("/v1/instances/capped/replicas").await;
    assert_eq!(status.replicas, MAX_REPLICAS);
    assert_eq!(status.members.len(), cap + 1, "{:?}", status.members);
    assert_eq!(sidecars(&home, "capped"), cap + 1, "no orphan member runs");

    // Removes queued, then a delete: it goes first, cancelling what still waits.
    let mut removes = Vec::new();
    let standbys: Vec<String> = status
        .members
        .iter()
        .map(|m| m.name.clone())
        .filter(|m| m != "capped-0")
        .take(3)
        .collect();
    for member in &standbys {
        let (status, text) = api
            .send(
                reqwest::Method::DELETE,
                &format!("/v1/instances/capped/replicas/{member}"),
                None,
            )
            .await;
        assert_eq!(status, 202, "{text}");
        removes.push(
            serde_json::from_str::<OperationAccepted>(&text)
                .unwrap()
                .operation_id,
        );
    }
    let (status, text) = api
        .send(reqwest::Method::DELETE, "/v1/instances/capped", None)
        .await;
    assert_eq!(status, 202, "{text}");
    let delete: OperationAccepted = serde_json::from_str(&text).unwrap();
    let deleted = api.wait_operation(&home, &delete.operation_id).await;
    assert_eq!(deleted.status, "succeeded", "{deleted:?}");
    let last_remove = operation(&api, removes.last().unwrap()).await;
    assert_eq!(last_remove.status, "cancelled", "{last_remove:?}");
    for id in &removes {
        assert!(operation(&api, id).await.is_finished());
    }
    assert!(home.instance_processes("capped").is_empty());
}
