//! The udpm transport's sockets (docs/fleet.md §2.2): one non-blocking socket that
//! sends to the multicast group, one bound to GROUP:PORT that receives from
//! it. Datagram forms and reassembly are in [`super::datagram`].

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use nix::sys::socket::{self, AddressFamily, IpMembershipRequest, SockFlag, SockType, SockaddrIn, sockopt};

use super::datagram::{self, Datagram, DatagramError, Reassembler, ReassemblyStats};

/// The receive buffer asked for when the URL gives none (docs/fleet.md §2.2).
pub const DEFAULT_RECV_BUF: usize = 2 * 1024 * 1024;

/// Largest datagram read (the largest UDP payload, rounded up).
const READ_BUF: usize = 65_536;

/// A received message: channel, payload, sender.
pub type Message = (String, Vec<u8>, SocketAddr);

/// Counts of datagrams the receiver threw away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpmStats {
    /// Datagrams that did not parse.
    pub malformed: u64,
    /// What reassembly threw away.
    pub reassembly: ReassemblyStats,
}

/// Sockets and state of one udpm endpoint.
pub struct Udpm {
    send: UdpSocket,
    recv: UdpSocket,
    group: SocketAddrV4,
    seqno: u32,
    scratch: Vec<u8>,
    buf: Vec<u8>,
    reassembler: Reassembler,
    malformed: u64,
}

fn from_nix(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn udp_socket() -> io::Result<OwnedFd> {
    socket::socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
        .map_err(from_nix)
}

/// Sets the receive buffer, forcing past `rmem_max` where allowed (root).
fn set_recv_buf(fd: &impl AsFd, size: usize) {
    if socket::setsockopt(fd, sockopt::RcvBufForce, &size).is_err() {
        // Without CAP_NET_ADMIN the kernel clamps to rmem_max; that is
        // still a working socket, just one that drops under bursts.
        let _ = socket::setsockopt(fd, sockopt::RcvBuf, &size);
    }
}

impl Udpm {
    /// Opens the two sockets for `group:port`: the sender with
    /// `IP_MULTICAST_TTL=ttl` and `IP_MULTICAST_LOOP=1`, the receiver with
    /// `SO_REUSEADDR`, bound to `group:port`, joined on INADDR_ANY.
    pub fn open(group: Ipv4Addr, port: u16, ttl: u8, recv_buf_size: Option<usize>) -> io::Result<Udpm> {
        let target = SocketAddrV4::new(group, port);

        let send = udp_socket()?;
        socket::setsockopt(&send, sockopt::IpMulticastTtl, &ttl).map_err(from_nix)?;
        socket::setsockopt(&send, sockopt::IpMulticastLoop, &true).map_err(from_nix)?;
        let any = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        socket::bind(send.as_raw_fd(), &any).map_err(from_nix)?;

        let recv = udp_socket()?;
        socket::setsockopt(&recv, sockopt::ReuseAddr, &true).map_err(from_nix)?;
        set_recv_buf(&recv, recv_buf_size.unwrap_or(DEFAULT_RECV_BUF));
        socket::bind(recv.as_raw_fd(), &SockaddrIn::from(target)).map_err(from_nix)?;
        socket::setsockopt(&recv, sockopt::IpAddMembership, &IpMembershipRequest::new(group, None))
            .map_err(from_nix)?;

        Ok(Udpm {
            send: UdpSocket::from(send),
            recv: UdpSocket::from(recv),
            group: target,
            seqno: 0,
            scratch: Vec::with_capacity(READ_BUF),
            buf: vec![0; READ_BUF],
            reassembler: Reassembler::new(),
            malformed: 0,
        })
    }

    /// The sending socket's address: datagrams whose source port is this
    /// one (from a local address) are our own, looped back.
    pub fn send_addr(&self) -> io::Result<SocketAddr> {
        self.send.local_addr()
    }

    /// The receiving socket, the one to poll for readability.
    pub fn recv_fd(&self) -> RawFd {
        self.recv.as_raw_fd()
    }

    /// Sends one message (short form, or fragments sharing one seqno).
    /// A full socket buffer gives `WouldBlock`; the message is then lost,
    /// which the full-state protocol tolerates.
    pub fn publish(&mut self, channel: &str, payload: &[u8]) -> io::Result<()> {
        let seqno = self.seqno;
        self.seqno = self.seqno.wrapping_add(1);
        let (send, group) = (&self.send, self.group);
        datagram::encode(channel, payload, seqno, &mut self.scratch, |d| send.send_to(d, group).map(drop))
    }

    /// Reads datagrams until a message is complete (`Some`) or the socket
    /// would block (`None`). Bad datagrams are counted and skipped.
    pub fn recv(&mut self, now: Instant) -> io::Result<Option<Message>> {
        loop {
            let (n, source) = match self.recv.recv_from(&mut self.buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            match datagram::parse(&self.buf[..n]) {
                Ok(Datagram::Short { channel, payload, .. }) => {
                    return Ok(Some((channel.to_string(), payload.to_vec(), source)));
                }
                Ok(Datagram::Fragment(f)) => {
                    if let Some((channel, payload)) = self.reassembler.push(source, &f, now) {
                        return Ok(Some((channel, payload, source)));
                    }
                }
                Err(_) => self.malformed += 1,
            }
        }
    }

    /// Drops partial messages that have timed out.
    pub fn expire(&mut self, now: Instant) {
        self.reassembler.expire(now);
    }

    /// What the receiver threw away so far.
    pub fn stats(&self) -> UdpmStats {
        UdpmStats { malformed: self.malformed, reassembly: self.reassembler.stats() }
    }
}

impl From<DatagramError> for io::Error {
    fn from(e: DatagramError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}
