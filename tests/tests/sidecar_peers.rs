//! A sidecar sends credentials only to members of its own instance: `PUT /v1/replication` and
//! `POST /v1/demote` naming any other server are refused with a 4xx, and that server never sees
//! a connection (issue 14: a listener asking for a cleartext password got the superuser's).
//!
//! The sidecars here live in the local platform's layout (`<member>/data` beside
//! `<member>/member.json`), which is how a sidecar knows its instance's members there.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use toygres_common::ErrorBody;
use toygres_tests::{Sidecar, SidecarSpec, TestDir, API_TOKEN};

/// A listener that only counts the connections it is offered (it never answers them).
fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, count)
}

/// The local platform's record of a member, as much of it as a sidecar reads.
fn write_record(dir: &TestDir, sidecar: &Sidecar, instance: &str) {
    let record = serde_json::json!({"instance": instance, "member": sidecar.member, "pg_port": sidecar.pg_port});
    std::fs::write(
        dir.path().join(&sidecar.member).join("member.json"),
        record.to_string(),
    )
    .unwrap();
}

async fn call(
    sidecar: &Sidecar,
    method: reqwest::Method,
    path: &str,
    body: serde_json::Value,
) -> (u16, String) {
    let response = sidecar
        .http()
        .request(method, format!("{}{path}", sidecar.api_url()))
        .bearer_auth(API_TOKEN)
        .timeout(Duration::from_secs(60))
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_refuses_to_follow_or_rewind_from_a_server_outside_its_instance() {
    let dir = TestDir::new();
    let primary = Sidecar::start(&dir, SidecarSpec::primary("peer-0")).await;
    let standby = Sidecar::start(&dir, SidecarSpec::standby("peer-1", &primary)).await;
    write_record(&dir, &primary, "peer");
    write_record(&dir, &standby, "peer");
    let (stranger_port, offered) = counting_listener();
    let stranger = serde_json::json!({"host": "127.0.0.1", "port": stranger_port});

    let (status, text) = call(
        &standby,
        reqwest::Method::PUT,
        "/v1/replication",
        serde_json::json!({"primary": stranger}),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let body: ErrorBody = serde_json::from_str(&text).unwrap();
    assert_eq!(body.error.code, "not_a_member", "{text}");

    let (status, text) = call(
        &primary,
        reqwest::Method::POST,
        "/v1/demote",
        serde_json::json!({"primary": stranger}),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let body: ErrorBody = serde_json::from_str(&text).unwrap();
    assert_eq!(body.error.code, "not_a_member", "{text}");
    assert_eq!(
        offered.load(Ordering::SeqCst),
        0,
        "the stranger was sent a connection"
    );

    // A member of the instance is followed as before.
    let (status, text) = call(
        &standby,
        reqwest::Method::PUT,
        "/v1/replication",
        serde_json::json!({"primary": {"host": "127.0.0.1", "port": primary.pg_port}}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
}

/// A fake server that declines TLS and then asks for a cleartext password, keeping every byte
/// it is sent.
fn cleartext_asking_listener() -> (u16, Arc<std::sync::Mutex<Vec<u8>>>) {
    use std::io::{Read as _, Write as _};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = Arc::clone(&received);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let kept = Arc::clone(&kept);
            std::thread::spawn(move || {
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut buf = [0u8; 4096];
                loop {
                    let n = match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    kept.lock().unwrap().extend_from_slice(&buf[..n]);
                    // An SSLRequest (length 8, code 80877103) gets "no TLS"; anything else
                    // (a startup message) gets AuthenticationCleartextPassword.
                    let reply: &[u8] = if n == 8 && buf[4..8] == [0x04, 0xd2, 0x16, 0x2f] {
                        b"N"
                    } else {
                        &[b'R', 0, 0, 0, 8, 0, 0, 0, 3]
                    };
                    if stream.write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, received)
}

/// A sidecar without a member list (run by hand) still sends no password to a server that is
/// not a member: the connection requires TLS with the instance's CA, so a fake server that
/// declines TLS and asks for a cleartext password gets no password, and a real Postgres whose
/// certificate comes from another CA is refused at the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_prove_membership_gets_no_password() {
    let dir = TestDir::new();
    let primary = Sidecar::start(&dir, SidecarSpec::primary("cred-0")).await;
    let standby = Sidecar::start(&dir, SidecarSpec::standby("cred-1", &primary)).await;

    let (fake_port, received) = cleartext_asking_listener();
    let fake = serde_json::json!({"host": "127.0.0.1", "port": fake_port});
    for (sidecar, method, path) in [
        (&standby, reqwest::Method::PUT, "/v1/replication"),
        (&primary, reqwest::Method::POST, "/v1/demote"),
    ] {
        let (status, text) =
            call(sidecar, method, path, serde_json::json!({"primary": fake})).await;
        assert!(status >= 400, "{path} followed the fake server: {text}");
        assert!(!text.contains(toygres_tests::SUPERUSER_PASSWORD), "{text}");
    }
    let bytes = received.lock().unwrap().clone();
    assert!(!bytes.is_empty(), "the fake server was never tried");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains(toygres_tests::SUPERUSER_PASSWORD),
        "the password reached the fake server"
    );
    // Nothing but SSLRequests: no startup message, so no user name and no password message.
    let ssl_request: &[u8] = &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    assert!(
        bytes.chunks(8).all(|chunk| chunk == ssl_request),
        "{bytes:?}"
    );

    // A real server from another instance (another CA): refused before authentication.
    let other_dir = TestDir::new();
    let other = Sidecar::start(&other_dir, SidecarSpec::primary("other-0")).await;
    let (status, text) = call(
        &standby,
        reqwest::Method::PUT,
        "/v1/replication",
        serde_json::json!({"primary": {"host": "127.0.0.1", "port": other.pg_port}}),
    )
    .await;
    assert!(status >= 400, "followed another instance's server: {text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    // The standby still follows its own primary.
    assert_eq!(
        standby.client().status().await.unwrap().role,
        toygres_common::sidecar_api::Role::Standby
    );
    primary
        .connect()
        .await
        .batch_execute("CREATE TABLE still_streaming (x int)")
        .await
        .unwrap();
    toygres_tests::eventually(Duration::from_secs(30), "the standby to replay", || async {
        let c = standby.try_connect().await.ok()?;
        c.query_opt(
            "SELECT 1 FROM pg_class WHERE relname = 'still_streaming'",
            &[],
        )
        .await
        .ok()
        .flatten()
    })
    .await;
}

/// Clients verify the server against the instance's CA: with it (tokio-postgres and psql,
/// `sslmode=verify-full`) they connect; with another CA, or without TLS, they cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_client_with_the_instance_ca_connects() {
    let dir = TestDir::new();
    let primary = Sidecar::start(&dir, SidecarSpec::primary("ca-0")).await;
    let other_dir = TestDir::new();
    let config = || {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(primary.pg_port)
            .user("postgres")
            .password(toygres_tests::SUPERUSER_PASSWORD)
            .dbname("postgres");
        config
    };
    toygres_tests::connect_tls(config(), &dir.ca_file())
        .await
        .expect("the instance's CA connects");
    let wrong = toygres_tests::connect_tls(config(), &other_dir.ca_file()).await;
    assert!(wrong.is_err(), "a client with another CA connected");
    let plain = config().connect(tokio_postgres::NoTls).await;
    assert!(plain.is_err(), "a client without TLS connected");

    let passfile = dir.path().join("client.pgpass");
    std::fs::write(
        &passfile,
        format!("*:*:*:postgres:{}\n", toygres_tests::SUPERUSER_PASSWORD),
    )
    .unwrap();
    std::fs::set_permissions(
        &passfile,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let psql = |ca: &std::path::Path| {
        std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
            .arg(format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-full \
                 sslrootcert={} passfile={} connect_timeout=5",
                primary.pg_port,
                ca.display(),
                passfile.display()
            ))
            .args([
                "-XAtc",
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            ])
            .output()
            .unwrap()
    };
    let good = psql(&dir.ca_file());
    assert!(good.status.success(), "{good:?}");
    assert_eq!(String::from_utf8_lossy(&good.stdout).trim(), "t");
    let bad = psql(&other_dir.ca_file());
    assert!(!bad.status.success(), "psql trusted another CA");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("certificate verify failed"),
        "{bad:?}"
    );
}
