//! The udpm transport against the real LCM library, each test inside a
//! fresh network namespace of its own (nothing reaches a real interface):
//! the library's datagrams captured with a plain socket and compared with
//! docs/fleet.md §2.2, a hand-built LC02 datagram delivered to the library, our own
//! datagrams' forms, and a >64 KB fragmented `deputy_info_t` both ways.

mod lcm_util;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use daemonproxy::procman::{DeputyInfo, PM_DISCOVER, PM_INFO};
use lcm_util::{Ours, Peer, golden_file, in_netns, unhex};
use nix::sys::socket::{self, AddressFamily, IpMembershipRequest, SockFlag, SockType, SockaddrIn, sockopt};

const URL: &str = "udpm://239.255.76.67:7667?ttl=0";
const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 76, 67);
const PORT: u16 = 7667;
const T: Duration = Duration::from_secs(10);

/// A plain UDP socket joined to the group, as the spec's capture recipe says.
fn capture() -> UdpSocket {
    let fd = socket::socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).unwrap();
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true).unwrap();
    socket::bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(GROUP, PORT))).unwrap();
    socket::setsockopt(&fd, sockopt::IpAddMembership, &IpMembershipRequest::new(GROUP, None)).unwrap();
    let s = UdpSocket::from(fd);
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    s
}

/// The next datagram whose channel (short form, or fragment 0) is not
/// liblcm's self-test, and every datagram after it; panics after `T`.
fn datagrams(s: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + T;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while out.len() < n {
        assert!(Instant::now() < deadline, "captured {} of {n} datagrams", out.len());
        let Ok(len) = s.recv(&mut buf) else { continue };
        let d = buf[..len].to_vec();
        if d.windows(13).any(|w| w == b"LCM_SELF_TEST") {
            continue;
        }
        out.push(d);
    }
    out
}

fn sender() -> UdpSocket {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_multicast_ttl_v4(0).unwrap();
    s.set_multicast_loop_v4(true).unwrap();
    s
}

fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(d[at..at + 4].try_into().unwrap())
}

fn be16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(d[at..at + 2].try_into().unwrap())
}

#[test]
fn library_datagrams_are_the_spec_forms() {
    if !in_netns("library_datagrams_are_the_spec_forms") {
        return;
    }
    let cap = capture();
    let mut lib = Peer::on(URL);
    let payload = golden_file("discovery_t-spec");
    assert_eq!(payload.len(), 31);
    lib.publish(PM_DISCOVER, &payload);
    let d = datagrams(&cap, 1).remove(0);
    let mut want = unhex("4c433032 00000000 504d5f444953434f56455200");
    want.extend_from_slice(&payload);
    assert_eq!(d, want, "docs/fleet.md §2.2 example: 51 bytes");

    // 76 800 bytes on BIG: datagrams of 65 507 and 11 337 bytes.
    let big: Vec<u8> = (0..76_800u32).map(|i| (i * 7) as u8).collect();
    lib.publish("BIG", &big);
    let d = datagrams(&cap, 2);
    assert_eq!((d[0].len(), d[1].len()), (65_507, 11_337));
    for (i, f) in d.iter().enumerate() {
        assert_eq!(be32(f, 0), 0x4c433033, "LC03");
        assert_eq!(be32(f, 4), 1, "seqno: one more than the discovery's");
        assert_eq!(be32(f, 8), 76_800, "payload_size");
        assert_eq!((be16(f, 16), be16(f, 18)), (i as u16, 2), "fragment_number, n_fragments");
    }
    assert_eq!((be32(&d[0], 12), be32(&d[1], 12)), (0, 65_483), "fragment offsets");
    assert_eq!(d[0][20..24], *b"BIG\0");
    assert_eq!([&d[0][24..], &d[1][20..]].concat(), big);
}

#[test]
fn hand_built_datagram_reaches_the_library() {
    if !in_netns("hand_built_datagram_reaches_the_library") {
        return;
    }
    let mut lib = Peer::on(URL);
    lib.ok("sub HAND");
    let payload = golden_file("orders_t-spec");
    let mut d = unhex("4c433032 00001234");
    d.extend_from_slice(b"HAND\0");
    d.extend_from_slice(&payload);
    let s = sender();
    // The library may still be joining; resend until it reports the message.
    let deadline = Instant::now() + T;
    let got = loop {
        assert!(Instant::now() < deadline, "the library never delivered the datagram");
        s.send_to(&d, SocketAddrV4::new(GROUP, PORT)).unwrap();
        if let Some((channel, data)) = lib.recv(200) {
            break (channel, data);
        }
    };
    assert_eq!(got, ("HAND".to_string(), payload));
}

#[test]
fn our_datagrams_are_the_spec_forms() {
    if !in_netns("our_datagrams_are_the_spec_forms") {
        return;
    }
    let cap = capture();
    let mut ours = Ours::open(URL);
    let payload = golden_file("discovery_t-spec");
    ours.lcm.publish(PM_DISCOVER, &payload).unwrap();
    let mut want = unhex("4c433032 00000000 504d5f444953434f56455200");
    want.extend_from_slice(&payload);
    assert_eq!(datagrams(&cap, 1).remove(0), want);

    let big: Vec<u8> = (0..76_800u32).map(|i| (i * 3) as u8).collect();
    ours.lcm.publish("BIG", &big).unwrap();
    let d = datagrams(&cap, 2);
    assert_eq!((d[0].len(), d[1].len()), (65_507, 11_337));
    assert_eq!(d[0][..24], *unhex("4c433033 00000001 00012c00 00000000 0000 0002 42494700").as_slice());
    assert_eq!(d[1][..20], *unhex("4c433033 00000001 00012c00 0000ffcb 0001 0002").as_slice());
    assert_eq!([&d[0][24..], &d[1][20..]].concat(), big);

    ours.lcm.publish(PM_DISCOVER, &payload).unwrap();
    assert_eq!(be32(&datagrams(&cap, 1)[0], 4), 2, "seqno counts messages, not datagrams");
}

#[test]
fn fragmented_info_both_ways() {
    if !in_netns("fragmented_info_both_ways") {
        return;
    }
    let big = golden_file("deputy_info_t-big");
    assert!(big.len() > 65_536, "{}", big.len());
    let mut lib = Peer::on(URL);
    lib.ok("sub PM_INFO");
    let mut ours = Ours::open(URL);
    ours.lcm.subscribe(PM_INFO).unwrap();

    // Library to us.
    lib.publish(PM_INFO, &big);
    let r = ours.recv_on(PM_INFO, T);
    assert_eq!(r.data, big);
    let (info, used) = DeputyInfo::decode(&r.data).unwrap();
    assert_eq!((info.cmds.len(), used), (120, big.len()));
    assert_ne!(r.source.map(|s| s.port()), ours.lcm.send_addr().map(|s| s.port()), "not our own");
    // The library hears its own message too; drain it.
    assert_eq!(lib.recv_on(PM_INFO, 10_000), big);

    // Us to the library; our own copy comes back, marked by its source.
    ours.lcm.publish(PM_INFO, &big).unwrap();
    assert_eq!(lib.recv_on(PM_INFO, 10_000), big);
    let mine = ours.recv_on(PM_INFO, T);
    assert_eq!(mine.data, big);
    assert_eq!(mine.source.map(|s| s.port()), ours.lcm.send_addr().map(|s| s.port()), "our own echo");

    // Small messages still use the short form both ways.
    let small = golden_file("deputy_info_t-two");
    ours.lcm.publish(PM_INFO, &small).unwrap();
    assert_eq!(lib.recv_on(PM_INFO, 10_000), small);
    lib.publish(PM_INFO, &small);
    assert_eq!(ours.wait_for(T, |r| r.data == small).channel, PM_INFO);
    let s = ours.lcm.stats().udpm;
    assert_eq!((s.malformed, s.reassembly.dropped), (0, 0), "{s:?}");
}

#[test]
fn unsubscribed_channels_are_not_delivered() {
    if !in_netns("unsubscribed_channels_are_not_delivered") {
        return;
    }
    let mut lib = Peer::on(URL);
    let mut ours = Ours::open(URL);
    ours.lcm.subscribe("PM_.*").unwrap();
    lib.publish("OTHER", b"x");
    lib.publish("PM_MARK", b"y");
    let r = ours.wait_for(T, |_| true);
    assert_eq!((r.channel.as_str(), r.data.as_slice()), ("PM_MARK", b"y".as_slice()));
    assert_eq!(ours.lcm.stats().unsubscribed, 1);
    ours.lcm.unsubscribe("PM_.*");
    lib.publish("PM_MARK", b"z");
    assert!(ours.try_wait_for(Duration::from_millis(300), |_| true).is_none());
}

/// Two named network namespaces joined by a veth pair with multicast
/// routed over it (docs/fleet.md §7, multi-host); deleted on drop.
struct TwoHosts {
    a: String,
    b: String,
}

fn ip(args: &[&str]) {
    let st = std::process::Command::new("ip").args(args).status().expect("run ip (iproute2)");
    assert!(st.success(), "ip {} failed", args.join(" "));
}

impl TwoHosts {
    fn new() -> TwoHosts {
        let id = std::process::id();
        let h = TwoHosts { a: format!("dpA{id}"), b: format!("dpB{id}") };
        ip(&["netns", "add", &h.a]);
        ip(&["netns", "add", &h.b]);
        // Created inside the namespaces: nothing appears in the host's.
        ip(&["-n", &h.a, "link", "add", "vA", "type", "veth", "peer", "name", "vB", "netns", &h.b]);
        for (ns, dev, addr) in [(&h.a, "vA", "10.231.7.1/24"), (&h.b, "vB", "10.231.7.2/24")] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev]);
        }
        h
    }

    /// Runs `f` on a thread that has entered namespace `ns`; sockets it
    /// creates stay in that namespace.
    fn inside<R: Send + 'static>(ns: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns(2) on a valid namespace descriptor affects only
            // this thread, which exists just to create sockets there.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("namespace thread")
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = std::process::Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// What `peer` receives on `TTL.*` in `window` after `until` has been seen.
fn collect_lib(peer: &mut Peer, until: &[&[u8]], window_ms: u64) -> Vec<Vec<u8>> {
    let mut got: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + T;
    while !until.iter().all(|u| got.iter().any(|g| g == u)) {
        assert!(Instant::now() < deadline, "only got {got:?}");
        if let Some((_, d)) = peer.recv(200) {
            got.push(d);
        }
    }
    while let Some((_, d)) = peer.recv(window_ms) {
        got.push(d);
    }
    got
}

#[test]
fn ttl_1_crosses_hosts_and_ttl_0_does_not() {
    let hosts = TwoHosts::new();
    let url = |ttl| format!("udpm://239.255.76.67:7667?ttl={ttl}");
    let (u0, u1) = (url(0), url(1));
    let (mut a0, mut a1) = TwoHosts::inside(&hosts.a, move || (Ours::open(&u0), Ours::open(&u1)));
    let u1 = url(1);
    let mut b = TwoHosts::inside(&hosts.b, move || Ours::open(&u1));
    b.lcm.subscribe("TTL.*").unwrap();
    a1.lcm.subscribe("TTL.*").unwrap();
    let mut lib_b = Peer::start_in(Some(&hosts.b));
    lib_b.ok(&format!("url {}", url(1)));
    lib_b.ok("sub TTL.*");
    let mut lib_a0 = Peer::start_in(Some(&hosts.a));
    lib_a0.ok(&format!("url {}", url(0)));
    let mut lib_a1 = Peer::start_in(Some(&hosts.a));
    lib_a1.ok(&format!("url {}", url(1)));

    // The ttl=0 messages go first, so by the time both ttl=1 ones have
    // crossed, a ttl=0 one that crossed would have been seen too.
    a0.lcm.publish("TTL0", b"zero-ours").unwrap();
    lib_a0.publish("TTL0", b"zero-lib");
    a1.lcm.publish("TTL1", b"one-ours").unwrap();
    lib_a1.publish("TTL1", b"one-lib");

    let got = collect_lib(&mut lib_b, &[b"one-ours", b"one-lib"], 300);
    assert!(!got.iter().any(|g| g.starts_with(b"zero")), "ttl=0 left its host: {got:?}");

    let mut ours_b = Vec::new();
    while ours_b.len() < 2 {
        ours_b.push(b.wait_for(T, |_| true).data);
    }
    ours_b.extend(b.try_wait_for(Duration::from_millis(300), |_| true).map(|r| r.data));
    ours_b.sort();
    assert_eq!(ours_b, [b"one-lib".to_vec(), b"one-ours".to_vec()]);

    // On its own host, ttl=0 is still delivered (multicast loopback).
    let mut local: Vec<Vec<u8>> = (0..4).map(|_| a1.wait_for(T, |_| true).data).collect();
    local.sort();
    assert_eq!(local, [&b"one-lib"[..], b"one-ours", b"zero-lib", b"zero-ours"].map(<[u8]>::to_vec));
    drop(hosts);
}
