//! The isolation lease: a primary cut off from both the controller and its standbys fences
//! itself, so it cannot keep taking writes that a promoted standby would never see.

use std::time::{Duration, Instant};

use toygres_tests::{eventually, Sidecar, SidecarSpec, TestDir};

const LEASE_SECS: u64 = 3;

fn with_lease(mut spec: SidecarSpec) -> SidecarSpec {
    spec.extra_args
        .push(format!("--isolation-lease-secs={LEASE_SECS}"));
    spec
}

/// Checks readiness (unauthenticated, so it is no controller contact) for `window`.
async fn stays_ready(s: &Sidecar, window: Duration) -> bool {
    let client = s.client();
    let end = Instant::now() + window;
    while Instant::now() < end {
        if !client.ready().await.unwrap_or(false) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_primary_fences_itself_within_its_lease() {
    let dir = TestDir::new();
    let primary = Sidecar::start(&dir, with_lease(SidecarSpec::primary("iso-0"))).await;
    let mut standby = Sidecar::start(&dir, SidecarSpec::standby("iso-1", &primary)).await;
    let pc = primary.client();
    // One authenticated request arms the lease; after it the test only uses /readyz.
    eventually(Duration::from_secs(60), "the standby to stream", || async {
        let st = pc.status().await.ok()?;
        (!st.standbys.is_empty()).then_some(())
    })
    .await;

    // No controller contact, but a streaming standby: the primary keeps serving.
    assert!(
        stays_ready(&primary, Duration::from_secs(2 * LEASE_SECS)).await,
        "fenced although a standby was streaming"
    );

    // The standby goes away too: now it is isolated and fences itself within the lease.
    assert_eq!(standby.stop().await, Some(0));
    let lost = Instant::now();
    eventually(
        Duration::from_secs(LEASE_SECS + 10),
        "the primary to fence itself",
        || async { (!pc.ready().await.unwrap_or(true)).then_some(()) },
    )
    .await;
    let took = lost.elapsed();
    assert!(
        took <= Duration::from_secs(LEASE_SECS + 3),
        "fenced {took:?} after isolation; lease {LEASE_SECS} s"
    );
    assert!(
        primary.try_connect().await.is_err(),
        "an isolated primary still accepts connections"
    );
    let st = pc.status().await.unwrap();
    assert!(st.fenced && !st.running);
    let metrics = primary
        .http()
        .get(format!("{}/metrics", primary.api_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("toygres_self_fences_total 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmanaged_primary_never_fences_itself() {
    let dir = TestDir::new();
    // Never contacted with the token: the lease is not armed, however long it is alone.
    let primary = Sidecar::start(&dir, with_lease(SidecarSpec::primary("solo-0"))).await;
    assert!(stays_ready(&primary, Duration::from_secs(2 * LEASE_SECS)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_primary_without_standbys_never_fences_itself() {
    let dir = TestDir::new();
    let primary = Sidecar::start(&dir, with_lease(SidecarSpec::primary("alone-0"))).await;
    // Armed by the controller's request, but no standby ever streamed: nothing could replace
    // it, so losing the controller must not stop it.
    primary.client().status().await.unwrap();
    assert!(stays_ready(&primary, Duration::from_secs(2 * LEASE_SECS)).await);
}
