#![allow(clippy::unwrap_used)]

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A server that answers each connection with its name, then echoes.
async fn named_server(name: &'static str) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            connections.spawn(async move {
                socket.write_all(name.as_bytes()).await.unwrap();
                let mut buf = [0u8; 64];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, task)
}

async fn proxy(targets: ProxyTargets) -> InstanceProxy {
    let rw = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ro = TcpListener::bind("127.0.0.1:0").await.unwrap();
    InstanceProxy::start("db", rw, ro, targets).unwrap()
}

/// Connects through `endpoint` and reads the server's name; `None` when the proxy closes the
/// connection instead.
async fn greeting(endpoint: SocketAddr) -> (Option<String>, TcpStream) {
    let mut stream = TcpStream::connect(endpoint).await.unwrap();
    let mut buf = [0u8; 2];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut buf))
        .await
        .unwrap();
    let name = read
        .ok()
        .map(|_| String::from_utf8_lossy(&buf).into_owned());
    (name, stream)
}

async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 8];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[test]
fn ro_candidates_rotate_and_fall_back_to_the_primary() {
    let targets = ProxyTargets {
        rw: Some(addr(1)),
        ro: vec![addr(2), addr(3)],
        ..Default::default()
    };
    assert_eq!(targets.candidates(EndpointRole::Ro, 0), [addr(2), addr(3)]);
    assert_eq!(targets.candidates(EndpointRole::Ro, 1), [addr(3), addr(2)]);
    assert_eq!(targets.candidates(EndpointRole::Rw, 1), [addr(1)]);
    assert!(targets.allows(EndpointRole::Ro, addr(3)));
    assert!(!targets.allows(EndpointRole::Ro, addr(1)));

    let primary_only = ProxyTargets {
        rw: Some(addr(1)),
        ro: vec![],
        ..Default::default()
    };
    assert_eq!(primary_only.candidates(EndpointRole::Ro, 5), [addr(1)]);
    assert!(primary_only.allows(EndpointRole::Ro, addr(1)));
    assert!(ProxyTargets::default()
        .candidates(EndpointRole::Ro, 0)
        .is_empty());
}

#[tokio::test]
async fn endpoints_forward_spread_and_fall_back() {
    let (p, _p) = named_server("p0").await;
    let (s1, _s1) = named_server("s1").await;
    let (s2, _s2) = named_server("s2").await;
    let proxy = proxy(ProxyTargets {
        rw: Some(p),
        ro: vec![s1, s2],
        ..Default::default()
    })
    .await;
    let rw = proxy.addr(EndpointRole::Rw);
    let ro = proxy.addr(EndpointRole::Ro);

    let (name, mut stream) = greeting(rw).await;
    assert_eq!(name.as_deref(), Some("p0"));
    stream.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    stream.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");

    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(greeting(ro).await.0.unwrap());
    }
    seen.sort();
    assert_eq!(seen, ["s1", "s1", "s2", "s2"]);

    proxy.route(ProxyTargets {
        rw: Some(p),
        ro: vec![],
        ..Default::default()
    });
    assert_eq!(greeting(ro).await.0.as_deref(), Some("p0"));
    let stats = proxy.stats(EndpointRole::Ro);
    assert_eq!(stats.total, 5);
    assert_eq!(stats.refused, 0);
    proxy.stop().await;
}

#[tokio::test]
async fn held_rw_connections_wait_for_the_new_primary() {
    let (old, _old) = named_server("p0").await;
    let (new, _new) = named_server("p1").await;
    let proxy = proxy(ProxyTargets {
        rw: Some(old),
        ..Default::default()
    })
    .await;
    let rw = proxy.addr(EndpointRole::Rw);
    let (_, mut on_old) = greeting(rw).await;
    // Writes held: the old primary's connection closes, a new one waits.
    proxy.route(ProxyTargets {
        hold_rw: true,
        ..Default::default()
    });
    assert!(closed(&mut on_old).await);
    let waiting = tokio::spawn(greeting(rw));
    // Accepted and parked: nothing answers while held.
    eventually_active(&proxy, 1).await;
    assert!(!waiting.is_finished());
    proxy.route(ProxyTargets {
        rw: Some(new),
        ..Default::default()
    });
    let (name, _stream) = waiting.await.unwrap();
    assert_eq!(name.as_deref(), Some("p1"));
    assert_eq!(proxy.stats(EndpointRole::Rw).refused, 0);

    // A hold released without a primary closes the parked connections.
    proxy.route(ProxyTargets {
        hold_rw: true,
        ..Default::default()
    });
    let waiting = tokio::spawn(greeting(rw));
    eventually_active(&proxy, 1).await;
    proxy.route(ProxyTargets::default());
    assert_eq!(waiting.await.unwrap().0, None);
    proxy.stop().await;
}

/// Polls until `n` rw connections are open (accepted and parked or forwarded).
async fn eventually_active(proxy: &InstanceProxy, n: u64) {
    toygres_common::poll::poll_until(
        "a parked connection",
        Duration::from_millis(10),
        Duration::from_secs(10),
        || std::future::ready((proxy.stats(EndpointRole::Rw).active >= n).then_some(())),
    )
    .await
    .expect("no parked connection");
}

#[tokio::test]
async fn rerouting_closes_connections_to_the_old_target_only() {
    let (old, _old) = named_server("p0").await;
    let (new, _new) = named_server("p1").await;
    let (standby, _standby) = named_server("s1").await;
    let proxy = proxy(ProxyTargets {
        rw: Some(old),
        ro: vec![standby],
        ..Default::default()
    })
    .await;
    let rw = proxy.addr(EndpointRole::Rw);
    let (name, mut on_old) = greeting(rw).await;
    assert_eq!(name.as_deref(), Some("p0"));
    let (_, mut on_standby) = greeting(proxy.addr(EndpointRole::Ro)).await;
    assert_eq!(proxy.stats(EndpointRole::Rw).active, 1);

    proxy.route(ProxyTargets {
        rw: Some(new),
        ro: vec![standby],
        ..Default::default()
    });
    assert!(closed(&mut on_old).await);
    assert_eq!(greeting(rw).await.0.as_deref(), Some("p1"));
    // The ro connection still leads to a target: it stays open and working.
    on_standby.write_all(b"hi").await.unwrap();
    let mut echo = [0u8; 2];
    on_standby.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"hi");
    assert_eq!(proxy.stats(EndpointRole::Rw).closed_by_reroute, 1);

    // No primary: rw connections are closed at once.
    proxy.route(ProxyTargets {
        rw: None,
        ro: vec![standby],
        ..Default::default()
    });
    let (name, _) = greeting(rw).await;
    assert_eq!(name, None);
    assert_eq!(proxy.stats(EndpointRole::Rw).refused, 1);
    proxy.stop().await;
}

#[tokio::test]
async fn ro_skips_an_unreachable_standby() {
    let (standby, _standby) = named_server("s1").await;
    let gone = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let proxy = proxy(ProxyTargets {
        rw: None,
        ro: vec![gone, standby],
        ..Default::default()
    })
    .await;
    for _ in 0..2 {
        assert_eq!(
            greeting(proxy.addr(EndpointRole::Ro)).await.0.as_deref(),
            Some("s1")
        );
    }
    assert!(proxy.stats(EndpointRole::Ro).upstream_failures >= 1);
    proxy.stop().await;
}

#[tokio::test]
async fn least_connections_prefers_the_idle_standby_and_refuse_leaves_ro_closed() {
    let (p, _p) = named_server("p0").await;
    let (s1, _s1) = named_server("s1").await;
    let (s2, _s2) = named_server("s2").await;
    let proxy = proxy(ProxyTargets {
        rw: Some(p),
        ro: vec![s1, s2],
        ro_balance: RoBalance::LeastConnections,
        ..Default::default()
    })
    .await;
    let ro = proxy.addr(EndpointRole::Ro);
    // Two connections held on the first standby reached: every new one goes to the other.
    let (first, _held1) = greeting(ro).await;
    let first = first.unwrap();
    let (busy, idle, idle_name) = if first == "s1" {
        (s1, s2, "s2")
    } else {
        (s2, s1, "s1")
    };
    let (second, _held2) = greeting(ro).await;
    assert_eq!(second.as_deref(), Some(idle_name));
    let mut held = Vec::new();
    for _ in 0..3 {
        let (name, stream) = greeting(ro).await;
        held.push(stream);
        assert!(name.is_some());
    }
    // 5 open: the balance never lets one standby get 2 ahead.
    let (a, b) = (proxy.ro_connections(busy), proxy.ro_connections(idle));
    assert_eq!(a + b, 5);
    assert!(a.abs_diff(b) <= 1, "{a} vs {b}");

    // No standby and refuse: ro connections are closed at once, rw still works.
    proxy.route(ProxyTargets {
        rw: Some(p),
        ro: vec![],
        ro_fallback: RoFallback::Refuse,
        ..Default::default()
    });
    assert_eq!(greeting(ro).await.0, None);
    assert_eq!(
        greeting(proxy.addr(EndpointRole::Rw)).await.0.as_deref(),
        Some("p0")
    );
    assert!(proxy.stats(EndpointRole::Ro).refused >= 1);
    proxy.stop().await;
}

#[tokio::test]
async fn stopping_frees_the_ports_and_closes_connections() {
    let (p, _p) = named_server("p0").await;
    let proxy = proxy(ProxyTargets {
        rw: Some(p),
        ro: vec![],
        ..Default::default()
    })
    .await;
    let rw = proxy.addr(EndpointRole::Rw);
    let (_, mut open) = greeting(rw).await;
    proxy.stop().await;
    assert!(closed(&mut open).await);
    TcpListener::bind(rw).await.unwrap();
}
