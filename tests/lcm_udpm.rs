//! The udpm transport against the real LCM library, each test inside a
//! fresh network namespace of its own (nothing reaches a real interface):
//! the library's datagrams captured with a plain socket and compared with
//! spec §2.2, a hand-built LC02 datagram delivered to the library, our own
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
    assert_eq!(d, want, "spec §2.2 example: 51 bytes");

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
