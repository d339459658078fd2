//! The tcpq transport against the real LCM library: our hub between
//! library clients and our client, and our client against an independent
//! hub (tests/lcm_py/hub.py), including reconnection. Loopback only.

mod lcm_util;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use daemonproxy::procman::auth::{Key, Signer, Verdict, Verifier};
use daemonproxy::procman::hub::Hub;
use daemonproxy::procman::{DeputyInfo, Orders, PM_INFO, PM_ORDERS};
use lcm_util::{Ours, Peer, golden_file, python, script};

const T: Duration = Duration::from_secs(10);

#[test]
fn our_hub_relays_between_library_clients_and_us() {
    let hub = Hub::bind_loopback(0).unwrap().spawn().unwrap();
    let url = hub.url();
    let mut ours = Ours::open(&url);
    ours.subscribe_synced(PM_ORDERS);
    ours.subscribe_synced(PM_INFO);
    let mut a = Peer::on(&url);
    a.ok("sub PM_.*");
    a.publish("PM_SYNC", b"sync");
    assert_eq!(a.recv_on("PM_SYNC", 10_000), b"sync");
    let mut b = Peer::on(&url);

    // Library to us (and to the other library client).
    let orders = golden_file("orders_t-two");
    b.publish(PM_ORDERS, &orders);
    let r = ours.recv_on(PM_ORDERS, T);
    assert_eq!((r.data.as_slice(), r.source), (orders.as_slice(), None));
    assert_eq!(a.recv_on(PM_ORDERS, 10_000), orders);

    // Us to the library; the hub sends our own message back to us too.
    let info = golden_file("deputy_info_t-two");
    ours.lcm.publish(PM_INFO, &info).unwrap();
    assert_eq!(a.recv_on(PM_INFO, 10_000), info);
    assert_eq!(ours.recv_on(PM_INFO, T).data, info);

    // More than 64 KB either way.
    let big = golden_file("deputy_info_t-big");
    ours.lcm.publish(PM_INFO, &big).unwrap();
    assert_eq!(a.recv_on(PM_INFO, 10_000), big);
    b.publish(PM_INFO, &big);
    assert_eq!(ours.recv_on(PM_INFO, T).data, big);
    assert_eq!(ours.recv_on(PM_INFO, T).data, big, "the copy from b");
    drop(hub);
}

#[test]
fn unsubscribe_reaches_the_hub() {
    let hub = Hub::bind_loopback(0).unwrap().spawn().unwrap();
    let url = hub.url();
    let mut b = Peer::on(&url);
    let mut ours = Ours::open(&url);
    ours.subscribe_synced(PM_ORDERS);
    ours.subscribe_synced("MARK");
    b.publish(PM_ORDERS, b"first");
    assert_eq!(ours.recv_on(PM_ORDERS, T).data, b"first");

    ours.lcm.unsubscribe(PM_ORDERS);
    // Our own marker comes back only after the hub read the UNSUBSCRIBE
    // (frames on one connection are handled in order).
    ours.lcm.publish("MARK", b"ours").unwrap();
    assert_eq!(ours.recv_on("MARK", T).data, b"ours");
    b.publish(PM_ORDERS, b"second");
    b.publish("MARK", b"theirs");
    let r = ours.wait_for(T, |r| r.channel == "MARK" || r.channel == PM_ORDERS);
    assert_eq!((r.channel.as_str(), r.data.as_slice()), ("MARK", b"theirs".as_slice()));
    assert_eq!(ours.lcm.stats().unsubscribed, 0, "the hub filtered, not us");
}

#[test]
fn signed_messages_cross_the_hub_intact() {
    let hub = Hub::bind_loopback(0).unwrap().spawn().unwrap();
    let mut ours = Ours::open(&hub.url());
    ours.subscribe_synced(PM_ORDERS);
    let key = Key::from_bytes(&[9; 32]).unwrap();
    let mut signer = Signer::new(key.clone());
    let mut verifier = Verifier::new([key]).unwrap();
    let orders = Orders {
        utime: daemonproxy::procman::auth::now_us(),
        deputy_id: "d".into(),
        sheriff_id: "s".into(),
        cmds: vec![],
    };
    let mut data = orders.to_bytes().unwrap();
    signer.append(PM_ORDERS, &mut data, 0);
    ours.lcm.publish(PM_ORDERS, &data).unwrap();
    let r = ours.recv_on(PM_ORDERS, T);
    let (back, verdict) = verifier.check::<Orders>(&r.channel, &r.data).unwrap();
    assert_eq!((back, verdict), (orders, Verdict::Valid { key_id: signer.key_id() }));
    let (_, replay) = verifier.check::<Orders>(&r.channel, &r.data).unwrap();
    assert!(matches!(replay, Verdict::Replayed { .. }));
}

/// tests/lcm_py/hub.py on `port` (0 = any); returns it and its port.
fn python_hub(port: u16) -> (KillOnDrop, u16) {
    let mut child = Command::new(python())
        .arg(script("hub.py"))
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start hub.py");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(T).expect("hub.py did not start");
    let port = line.trim().strip_prefix("listening ").and_then(|p| p.parse().ok()).expect("hub.py port");
    (KillOnDrop(child), port)
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn our_client_against_another_hub_reconnects_and_resubscribes() {
    let (hub, port) = python_hub(0);
    let url = format!("tcpq://127.0.0.1:{port}");
    let mut ours = Ours::open(&url);
    ours.subscribe_synced(PM_ORDERS);
    let mut peer = Peer::on(&url);
    peer.subscribe_synced(PM_INFO);
    let info = golden_file("deputy_info_t-two");
    ours.lcm.publish(PM_INFO, &info).unwrap();
    assert_eq!(peer.recv_on(PM_INFO, 10_000), info);
    let orders = golden_file("orders_t-spec");
    peer.publish(PM_ORDERS, &orders);
    assert_eq!(ours.recv_on(PM_ORDERS, T).data, orders);

    // The hub goes away: publishing fails cleanly, a retry is scheduled.
    drop(peer);
    drop(hub);
    let lost = std::time::Instant::now() + T;
    while ours.lcm.connected() {
        assert!(std::time::Instant::now() < lost, "the lost hub went unnoticed");
        let _ = ours.try_wait_for(Duration::from_millis(20), |_| false);
    }
    let e = ours.lcm.publish(PM_INFO, &info).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotConnected);
    assert!(ours.lcm.next_deadline().is_some());

    // A hub comes back on the same port: we reconnect and resubscribe.
    let (_hub, _) = python_hub(port);
    ours.wait_connected(T);
    // Resubscribed: our own marker comes back without a new subscribe call.
    ours.lcm.publish(PM_ORDERS, b"sync").unwrap();
    ours.wait_for(T, |r| r.data == b"sync");
    let mut peer = Peer::on(&url);
    peer.publish(PM_ORDERS, &orders);
    assert_eq!(ours.recv_on(PM_ORDERS, T).data, orders);
    let s = ours.lcm.stats().tcpq;
    assert!(s.connects >= 2 && s.failures >= 1, "{s:?}");
}

#[test]
fn starting_before_the_hub_connects_later() {
    // Find a free port, then leave it closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut ours = Ours::open(&format!("tcpq://127.0.0.1:{port}"));
    ours.lcm.subscribe(PM_ORDERS).unwrap();
    assert!(ours.try_wait_for(Duration::from_millis(300), |_| true).is_none());
    assert!(!ours.lcm.connected());
    served_by_a_new_hub(&mut ours, port);
    assert!(DeputyInfo::decode(b"late").is_err());
}

/// Starts our hub on `port` and checks that `ours` connects to it with its
/// PM_ORDERS subscription (made before) in effect.
fn served_by_a_new_hub(ours: &mut Ours, port: u16) {
    let hub = Hub::bind_loopback(port).unwrap().spawn().unwrap();
    ours.wait_connected(T);
    ours.lcm.publish(PM_ORDERS, b"sync").unwrap();
    ours.wait_for(T, |r| r.data == b"sync");
    let mut peer = Peer::on(&hub.url());
    peer.publish(PM_ORDERS, b"late");
    assert_eq!(ours.recv_on(PM_ORDERS, T).data, b"late");
}

/// Reads until EOF or `T`; true if the peer closed the connection.
fn closed_by_peer(s: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let deadline = std::time::Instant::now() + T;
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn hub_drops_misbehaving_clients_and_serves_the_rest() {
    use std::io::Write;
    let hub = Hub::bind_loopback(0).unwrap().spawn().unwrap();
    let hello = [0x28, 0x76, 0x17, 0xfb, 0, 0, 1, 0];
    let bad: [&[u8]; 4] = [
        b"GET / HTTP/1.0\r\n\r\n",                                              // not tcpq
        &[&hello[..], &[0, 0, 0, 9, 0, 0, 0, 0]].concat(),                      // unknown frame type
        &[&hello[..], &[0, 0, 0, 1, 0, 0, 0, 1, b'C', 0x7f, 0, 0, 0]].concat(), // >1 MiB payload
        &[&hello[..], &[0, 0, 0, 2, 0, 0, 0, 1, b'(']].concat(),                // bad regex
    ];
    for (i, bytes) in bad.iter().enumerate() {
        let mut s = std::net::TcpStream::connect(hub.local_addr()).unwrap();
        s.write_all(bytes).unwrap();
        assert!(closed_by_peer(&mut s), "case {i} was not dropped");
    }
    let mut peer = Peer::on(&hub.url());
    peer.subscribe_synced("X");
    peer.publish("X", b"still serving");
    assert_eq!(peer.recv_on("X", 10_000), b"still serving");
    let stats = hub.stop().unwrap();
    assert_eq!(stats.protocol_errors, 4, "{stats:?}");
    assert!(stats.accepted >= 5 && stats.relayed >= 1, "{stats:?}");
}

#[test]
fn client_retries_after_a_bad_greeting() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut ours = Ours::open(&format!("tcpq://127.0.0.1:{port}"));
    ours.lcm.subscribe(PM_ORDERS).unwrap();
    let (mut s, _) = listener.accept().unwrap();
    s.write_all(b"not a hub").unwrap();
    let deadline = std::time::Instant::now() + T;
    while ours.lcm.stats().tcpq.failures == 0 {
        assert!(std::time::Instant::now() < deadline, "a bad greeting was accepted");
        let _ = ours.try_wait_for(Duration::from_millis(20), |_| false);
    }
    assert!(!ours.lcm.connected());
    // It comes back (backoff), and still wants the same subscription.
    drop(listener);
    served_by_a_new_hub(&mut ours, port);
}
