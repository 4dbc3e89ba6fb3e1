//! Security on the Kubernetes platform, on the real control plane through the process nodes:
//! a sidecar follows only members of its own instance (a pod IP is checked against what the
//! headless `<instance>-members` Service resolves to, at every request, so a rescheduled pod's
//! new IP is accepted and any other address gets `400 not_a_member`), and members' certificates
//! are renewed in their `<member>-tls` Secrets before they expire, reaching Postgres and the
//! sidecar API without a restart.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::DeleteParams;
use kube::{Api, Client};
use toygres_tests::k8s::toygres::{
    self, create_namespace, member_pods, ready_endpoints, rw_primary, Controller, NS,
};
use toygres_tests::k8s::Cluster;
use toygres_tests::{bin_path, eventually, TestDir};

const WAIT: Duration = Duration::from_secs(120);
const INSTANCE: &str = "orders";

/// Key `key` of Secret `name`.
async fn secret_value(client: &Client, name: &str, key: &str) -> Vec<u8> {
    let secret = Api::<Secret>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .unwrap();
    secret.data.unwrap()[key].0.clone()
}

/// The instance's CA certificate, written to a file in `dir`.
async fn ca_file(client: &Client, dir: &TestDir) -> std::path::PathBuf {
    let path = dir.path().join("ca.crt");
    std::fs::write(
        &path,
        secret_value(client, &format!("{INSTANCE}-ca"), "ca.crt").await,
    )
    .unwrap();
    path
}

/// `PUT /v1/replication` on the sidecar at `ip`, naming `host:5432` as the primary: the
/// status and body.
async fn re_point(client: &Client, ca: &Path, ip: &str, host: &str) -> (u16, String) {
    let token = secret_value(client, &format!("{INSTANCE}-credentials"), "sidecar-token").await;
    let url = format!("https://{ip}:8008/v1/replication");
    let answer = toygres_tests::https_client(ca, &url)
        .put(&url)
        .bearer_auth(String::from_utf8(token).unwrap())
        .json(&serde_json::json!({"primary": {"host": host, "port": 5432}}))
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.text().await.unwrap_or_default())
}

/// Whether the Postgres at `ip` is a standby whose WAL receiver streams from `primary_ip`.
async fn streams_from(client: &Client, ip: &str, primary_ip: &str, password: &str) -> bool {
    let Some(pg) = toygres::connect(client, INSTANCE, ip, password).await else {
        return false;
    };
    let row = pg
        .query_opt("SELECT status, sender_host FROM pg_stat_wal_receiver", &[])
        .await
        .ok()
        .flatten();
    row.is_some_and(|row| {
        row.get::<_, String>(0) == "streaming" && row.get::<_, String>(1) == primary_ip
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_point_outside_the_instance_is_refused_and_a_rescheduled_members_new_ip_is_followed() {
    bin_path("toygres-sidecar");
    let cluster = Cluster::start().await;
    let client = cluster.client();
    create_namespace(&client).await;
    let controller = Controller::start(&cluster).await;
    controller.cli_ok(&["create", INSTANCE, "--replicas", "1", "--no-backup"]);
    let dir = TestDir::new();
    let ca = ca_file(&client, &dir).await;
    let password = toygres::superuser_password(&client, INSTANCE).await;
    let (primary, primary_ip) = rw_primary(&client, INSTANCE, None).await;
    let pods = member_pods(&client, INSTANCE).await;
    let (standby, (standby_ip, _, _)) = pods
        .iter()
        .find(|(name, _)| **name != primary)
        .map(|(name, pod)| (name.clone(), pod.clone()))
        .unwrap();

    // An address outside the instance (the node's, which runs no member): refused, and the
    // standby keeps following its primary.
    let outsider = cluster.bridge().host_ip().to_string();
    let (status, body) = re_point(&client, &ca, &standby_ip, &outsider).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not_a_member"), "{body}");
    // A member's pod IP passes the same check (so the refusal above is not a resolver failure).
    let (status, body) = re_point(&client, &ca, &standby_ip, &primary_ip).await;
    assert!((200..300).contains(&status), "{status} {body}");
    eventually(WAIT, "the standby streaming from the primary", || async {
        streams_from(&client, &standby_ip, &primary_ip, &password)
            .await
            .then_some(())
    })
    .await;

    // The standby's pod is rescheduled (deleted; the StatefulSet makes a new one, with a new
    // IP), then becomes the primary by switchover: the old primary is demoted to follow the
    // new IP, which its sidecar must find among the members.
    Api::<Pod>::namespaced(client.clone(), NS)
        .delete(&standby, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let new_ip = eventually(
        WAIT,
        "the standby's pod back with a new IP, streaming",
        || async {
            let pods = member_pods(&client, INSTANCE).await;
            let (ip, role, _) = pods.get(&standby)?;
            (!ip.is_empty()
                && *ip != standby_ip
                && role.as_deref() == Some("standby")
                && streams_from(&client, ip, &primary_ip, &password).await)
                .then(|| ip.clone())
        },
    )
    .await;
    controller.cli_ok(&["replication", "switchover", INSTANCE]);
    let (now_primary, now_primary_ip) = rw_primary(&client, INSTANCE, Some(&primary)).await;
    assert_eq!(
        (now_primary.as_str(), now_primary_ip.as_str()),
        (standby.as_str(), new_ip.as_str())
    );
    eventually(
        WAIT,
        "the old primary streaming from the new IP",
        || async {
            let ro = ready_endpoints(&client, &format!("{INSTANCE}-ro")).await;
            (ro.contains(&primary_ip)
                && streams_from(&client, &primary_ip, &new_ip, &password).await)
                .then_some(())
        },
    )
    .await;
    let log = std::fs::read_to_string(&controller.log).unwrap();
    assert!(!log.contains("not_a_member"), "{}", controller.log_tail());
}

/// The certificate a TLS server at `ip:port` presents (PEM), verified against `ca` (its chain:
/// a pod IP is in no certificate); `starttls`: ask as a Postgres client does first.
fn served_certificate(ip: &str, port: u16, ca: &Path, starttls: bool) -> Option<String> {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("{ip}:{port}")])
        .arg("-CAfile")
        .arg(ca)
        .arg("-verify_return_error");
    if starttls {
        cmd.args(["-starttls", "postgres"]);
    }
    let out = cmd.stdin(Stdio::null()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let begin = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text[begin..].find("-----END CERTIFICATE-----")? + begin;
    Some(format!("{}-----END CERTIFICATE-----\n", &text[begin..end]))
}

/// A PEM certificate's serial and `notAfter`, as openssl prints them.
fn serial_and_not_after(pem: &str) -> (String, String) {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-enddate"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(pem.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .to_string()
    };
    (field("serial="), field("notAfter="))
}

/// When the Postgres at `ip` started, and how many standbys stream from it.
async fn postmaster(client: &Client, ip: &str, password: &str) -> Option<(String, i64)> {
    let pg = toygres::connect(client, INSTANCE, ip, password).await?;
    let row = pg
        .query_one(
            "SELECT pg_postmaster_start_time()::text, \
             (SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming')",
            &[],
        )
        .await
        .ok()?;
    Some((row.get(0), row.get(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_certificates_are_renewed_in_their_secrets_and_served_without_a_restart() {
    bin_path("toygres-sidecar");
    let cluster = Cluster::start().await;
    let client = cluster.client();
    create_namespace(&client).await;
    // Certificates of 60 s are due for renewal after 40 s.
    let controller = Controller::start_with_env(
        &cluster,
        &[
            ("TOYGRES_CERT_LIFETIME_SECS", "60"),
            ("TOYGRES_SUPERVISE_INTERVAL_MS", "1000"),
        ],
    )
    .await;
    controller.cli_ok(&["create", INSTANCE, "--replicas", "1", "--no-backup"]);
    let dir = TestDir::new();
    let ca = ca_file(&client, &dir).await;
    let password = toygres::superuser_password(&client, INSTANCE).await;
    let (_, primary_ip) = rw_primary(&client, INSTANCE, None).await;
    let pods = member_pods(&client, INSTANCE).await;
    let ips: Vec<String> = pods.values().map(|(ip, _, _)| ip.clone()).collect();
    assert_eq!(ips.len(), 2, "{pods:?}");

    // What each member serves now, and when its Postgres started.
    let mut before = Vec::new();
    for ip in &ips {
        let pg = served_certificate(ip, 5432, &ca, true).expect("Postgres serves TLS");
        let api = served_certificate(ip, 8008, &ca, false).expect("the sidecar API serves TLS");
        let started = postmaster(&client, ip, &password).await.expect("connect").0;
        before.push((ip.clone(), pg, api, started));
    }

    // Each member's Postgres and sidecar API come to serve a new certificate from the same CA
    // (the s_client check verifies the chain), valid for longer.
    for (ip, pg, api, started) in &before {
        for (port, starttls, old) in [(5432, true, pg), (8008, false, api)] {
            let renewed = eventually(
                WAIT,
                &format!("a renewed certificate on {ip}:{port}"),
                || async { served_certificate(ip, port, &ca, starttls).filter(|now| now != old) },
            )
            .await;
            let (old_serial, old_end) = serial_and_not_after(old);
            let (new_serial, new_end) = serial_and_not_after(&renewed);
            assert_ne!(old_serial, new_serial, "{ip}:{port}");
            let parse = |end: &str| {
                let out = Command::new("date")
                    .args(["-u", "-d", end, "+%s"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse::<i64>()
                    .unwrap()
            };
            assert!(
                parse(&new_end) > parse(&old_end),
                "{ip}:{port}: {old_end} → {new_end}"
            );
        }
        // No restart: the same postmaster, and clients trusting the CA still connect.
        let (now_started, _) = postmaster(&client, ip, &password).await.expect("connect");
        assert_eq!(&now_started, started, "the postmaster at {ip} restarted");
    }
    // The standby still streams (its client certificate was renewed too), and no pod restarted.
    eventually(WAIT, "the standby streaming from the primary", || async {
        let (_, streaming) = postmaster(&client, &primary_ip, &password).await?;
        (streaming == 1).then_some(())
    })
    .await;
    let restarts = toygres::pod_restarts(&client, INSTANCE).await;
    assert_eq!(restarts, 0, "a member's container restarted");
    let log = std::fs::read_to_string(&controller.log).unwrap();
    assert!(
        log.contains("renewed the member's certificates"),
        "{}",
        controller.log_tail()
    );
}
