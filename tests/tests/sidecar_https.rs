//! The sidecar's API serves HTTPS only, with the member's certificate from its instance's CA,
//! and the client the controller uses ([`toygres_common::SidecarClient`]) sends its bearer token
//! only to a server whose certificate comes from that CA (issue 14).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use toygres_common::tls::pki::{member_server_names, InstanceCa};
use toygres_common::SidecarClient;
use toygres_tests::{
    eventually, https_client, sidecar_url, Sidecar, SidecarSpec, TestDir, API_TOKEN,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_client_trusting_the_instance_ca_reaches_the_sidecar_api() {
    let dir = TestDir::new();
    let s = Sidecar::start(&dir, SidecarSpec::primary("https-0")).await;
    let status = format!("{}/v1/status", s.api_url());
    assert!(status.starts_with("https://"), "{status}");

    // With the instance's CA: answered.
    let ok = s
        .http()
        .get(&status)
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    // Trusting no CA, or another instance's CA: the handshake fails, nothing is answered.
    let no_ca = reqwest::Client::new().get(&status).send().await;
    assert!(no_ca.is_err(), "a client without the CA connected");
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("ca.crt");
    std::fs::write(&other_ca, InstanceCa::generate("other").unwrap().cert_pem).unwrap();
    let err = https_client(&other_ca, &status)
        .get(&status)
        .send()
        .await
        .expect_err("a client trusting another CA connected");
    assert!(err.is_connect(), "{err:?}");

    // Plain HTTP is not served.
    let plain = status.replacen("https://", "http://", 1);
    let answered = reqwest::Client::new()
        .get(&plain)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        answered.map(|r| r.status() != 200).unwrap_or(true),
        "plain HTTP was answered"
    );
}

/// A TLS server presenting a certificate for 127.0.0.1 from `ca`, keeping every byte it
/// decrypts.
async fn fake_sidecar(ca: &InstanceCa) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let dir = tempfile::tempdir().unwrap();
    let cert = ca
        .issue_server("fake-0", &member_server_names("fake", "fake-0", None))
        .unwrap();
    std::fs::write(dir.path().join("server.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("server.key"), &cert.key_pem).unwrap();
    let served = toygres_common::tls::https::ServedCert::load(
        dir.path().join("server.crt"),
        dir.path().join("server.key"),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(served.server_config().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&received);
    tokio::spawn(async move {
        let _dir = dir;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, kept) = (acceptor.clone(), Arc::clone(&kept));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(2), tls.read(&mut buf)).await
                {
                    if n == 0 {
                        break;
                    }
                    kept.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    (port, received)
}

/// The controller's client refuses a server whose certificate another instance's CA issued,
/// before sending anything: the token never leaves. The same fake server with a certificate
/// from the right CA does receive it (so the check can fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_certified_by_another_instance_gets_no_token() {
    let instance_ca = InstanceCa::generate("orders").unwrap();
    let other_ca = InstanceCa::generate("other").unwrap();

    let (port, received) = fake_sidecar(&other_ca).await;
    let client = SidecarClient::new(
        sidecar_url(port),
        API_TOKEN,
        instance_ca.cert_pem.as_bytes(),
        Duration::from_secs(5),
    )
    .unwrap();
    let err = client.status().await.expect_err("the impostor was trusted");
    assert_eq!(err.status(), None, "{err}");
    assert!(
        received.lock().unwrap().is_empty(),
        "the impostor received {:?}",
        String::from_utf8_lossy(&received.lock().unwrap())
    );

    let (port, received) = fake_sidecar(&instance_ca).await;
    let client = SidecarClient::new(
        sidecar_url(port),
        API_TOKEN,
        instance_ca.cert_pem.as_bytes(),
        Duration::from_secs(1),
    )
    .unwrap();
    let _ = client.status().await;
    eventually(
        Duration::from_secs(10),
        "the member's server to get the request",
        || {
            let seen = String::from_utf8_lossy(&received.lock().unwrap()).into_owned();
            async move { seen.contains(API_TOKEN).then_some(()) }
        },
    )
    .await;
}

/// The certificate the sidecar's API presents to a new TLS connection (DER).
async fn presented_certificate(s: &Sidecar) -> Vec<u8> {
    let ca = std::fs::read(s.ca_file()).unwrap();
    let config = toygres_common::tls::https::client_config(&ca, "127.0.0.1").unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.api_port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A renewed certificate written into the member's TLS directory is served to the next
/// connection, without restarting the sidecar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_api_serves_a_renewed_certificate_without_a_restart() {
    use rustls::pki_types::pem::PemObject as _;
    let dir = TestDir::new();
    let s = Sidecar::start(&dir, SidecarSpec::primary("renew-0")).await;
    let pid = s.pid();
    let files = toygres_common::tls::MemberTlsFiles::new(dir.member_tls("renew-0"));
    let der = |pem: &[u8]| {
        rustls::pki_types::CertificateDer::from_pem_slice(pem)
            .unwrap()
            .to_vec()
    };
    let old = std::fs::read(files.server_cert()).unwrap();
    assert_eq!(presented_certificate(&s).await, der(&old));

    let renewed = dir.issue_server_certificate("renew-0");
    std::fs::write(files.server_key(), &renewed.key_pem).unwrap();
    std::fs::write(files.server_cert(), &renewed.cert_pem).unwrap();
    assert_ne!(der(renewed.cert_pem.as_bytes()), der(&old));
    assert_eq!(
        presented_certificate(&s).await,
        der(renewed.cert_pem.as_bytes())
    );
    assert_eq!(s.pid(), pid, "the sidecar was restarted");
    s.client().status().await.unwrap();
}
