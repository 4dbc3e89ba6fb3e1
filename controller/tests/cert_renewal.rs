//! Certificates are renewed before they expire, with no restart: a controller issuing
//! 30-second certificates (the hidden `TOYGRES_CERT_LIFETIME_SECS`) renews each member's and its
//! own API certificate with a third of the lifetime left; Postgres serves the new one after a
//! reload (its postmaster's pid unchanged), so do the sidecar's and the controller's APIs, and
//! clients trusting the instance's CA keep connecting, a standby keeps streaming.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// How long issued certificates last in this test.
const LIFETIME_SECS: &str = "30";

/// The certificate a TLS server on `port` presents (PEM), verified against `ca_file`;
/// `starttls`: ask as a Postgres client does first. `None` when no verified one came.
fn served_certificate(port: u16, ca_file: &Path, starttls: bool) -> Option<String> {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .arg("-CAfile")
        .arg(ca_file)
        .arg("-verify_return_error");
    if starttls {
        cmd.args(["-starttls", "postgres"]);
    }
    let out = cmd.arg("-showcerts").stdin(Stdio::null()).output().unwrap();
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let begin = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text[begin..].find("-----END CERTIFICATE-----")? + begin;
    Some(text[begin..end].to_string())
}

/// The `notAfter` of a PEM certificate, as openssl prints it.
fn not_after(pem: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-enddate"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{pem}-----END CERTIFICATE-----\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The sidecar API's port of `member`, from its record.
fn api_port(home: &Home, instance: &str, member: &str) -> u16 {
    let record = home
        .path()
        .join("instances")
        .join(instance)
        .join(member)
        .join("member.json");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(record).unwrap()).unwrap();
    u16::try_from(record["api_port"].as_u64().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_and_api_certificates_are_renewed_and_served_without_a_restart() {
    let mut home = Home::new();
    let api = home
        .start_with_env(&[
            ("TOYGRES_CERT_LIFETIME_SECS", LIFETIME_SECS),
            ("TOYGRES_SUPERVISE_INTERVAL_MS", "1000"),
        ])
        .await;
    let created = api
        .run_operation(
            &home,
            "/v1/instances",
            serde_json::json!({"name": "rot", "replicas": 1, "replication": "async"}),
        )
        .await;
    assert_eq!(created.status, "succeeded", "{created:?}\n{}", home.logs());
    wait_all_healthy(&api, &home, "rot", 2).await;

    let ca_file = home.path().join("instances/rot/secrets/tls/ca.crt");
    let controller_ca = home.path().join("tls/ca.crt");
    let controller_port: u16 = api.url.rsplit_once(':').unwrap().1.parse().unwrap();
    let primary = primary_of(&api, "rot").await.unwrap();
    let pg = u16::try_from(pg_port(&api, "rot", &primary).await).unwrap();
    let sidecar = api_port(&home, "rot", &primary);
    let postmasters = ["rot-0", "rot-1"].map(|m| postmaster_of(&home, "rot", m));

    let first_pg = served_certificate(pg, &ca_file, true).expect("Postgres serves TLS");
    let first_api = served_certificate(sidecar, &ca_file, false).expect("the sidecar serves TLS");
    let first_controller =
        served_certificate(controller_port, &controller_ca, false).expect("the controller too");

    // Each is replaced within its lifetime (a third before it ends, plus the looks' intervals),
    // and every replacement verifies against the same CA.
    let renewed = Duration::from_secs(60);
    let new_pg = eventually(
        renewed,
        "Postgres to serve a renewed certificate",
        || async { served_certificate(pg, &ca_file, true).filter(|c| *c != first_pg) },
    )
    .await;
    let new_api = eventually(
        renewed,
        "the sidecar API to serve a renewed one",
        || async { served_certificate(sidecar, &ca_file, false).filter(|c| *c != first_api) },
    )
    .await;
    eventually(
        renewed,
        "the controller API to serve a renewed one",
        || async {
            served_certificate(controller_port, &controller_ca, false)
                .filter(|c| *c != first_controller)
        },
    )
    .await;
    assert_ne!(not_after(&new_pg), not_after(&first_pg));
    assert_ne!(not_after(&new_api), not_after(&first_api));

    // Well past the first certificates' end: clients trusting the instance's CA still connect
    // (verify-full through the printed URI), the controller still reaches the sidecars, the
    // standby still streams, and no postmaster was restarted.
    tokio::time::sleep(Duration::from_secs(35)).await;
    let (rw, password) = connection(&api, "rot").await;
    let client = connect(&rw, &password).await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let standby = connect_member(&api, "rot", "rot-1").await;
    let in_recovery: bool = standby
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(in_recovery);
    wait_all_healthy(&api, &home, "rot", 2).await;
    assert_eq!(
        ["rot-0", "rot-1"].map(|m| postmaster_of(&home, "rot", m)),
        postmasters,
        "a postmaster was restarted"
    );
    assert!(
        served_certificate(pg, &ca_file, true).is_some(),
        "the served certificate no longer verifies"
    );
    let logs = home.logs();
    assert!(logs.contains("renewed the member's certificates"), "{logs}");
}
