//! The tcpq client (docs/fleet.md §2.3): a non-blocking TCP connection to a hub,
//! with the handshake, SUBSCRIBE/UNSUBSCRIBE/PUBLISH frames, a bounded
//! output queue, and reconnection with backoff (resubscribing each time).
//! The same framing also runs over a Unix stream socket (`tcpq+unix://`,
//! see url.rs): there the client greets only a hub run by root or by its
//! own user ([`trusted_peer`], `SO_PEERCRED`), and the hub admits only
//! such clients.
//!
//! Nothing here blocks: connecting, greeting, writing and reading all
//! advance from [`Tcpq::recv`], which the owner calls on readiness and at
//! [`Tcpq::next_deadline`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage, UnixAddr};

use super::datagram::{self, MAX_PAYLOAD};
use super::frame::{self, Frame, FrameError};
use super::outbuf::OutBuf;

/// The first wait before reconnecting; it doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A connection attempt still pending after this long is abandoned.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes queued for the hub; a publish beyond it fails.
pub const MAX_QUEUE: usize = 4 * 1024 * 1024;

const READ_CHUNK: usize = 64 * 1024;

/// Counts over the client's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpqStats {
    /// Handshakes completed.
    pub connects: u64,
    /// Connections lost or attempts failed.
    pub failures: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `connect(2)` in progress.
    Connecting { deadline: Instant },
    /// Connected, our greeting queued, waiting for the hub's.
    Greeting,
    /// Frames flow.
    Up,
}

/// Is the process at the other end of a Unix socket root or our own
/// user (by `SO_PEERCRED`, taken when it connected or listened)? The
/// error names the other uid.
pub fn trusted_peer(sock: &impl AsFd) -> io::Result<()> {
    let cred = socket::getsockopt(sock, socket::sockopt::PeerCredentials).map_err(from_nix)?;
    let ours = crate::sys::geteuid();
    if cred.uid() == 0 || cred.uid() == ours {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("the peer is uid {} (pid {}), neither root nor uid {ours}", cred.uid(), cred.pid()),
    ))
}

/// Where the hub is.
enum Target {
    /// TCP, the addresses `host:port` resolved to (tried in turn).
    Tcp(Vec<SocketAddr>),
    /// A Unix stream socket.
    Unix(String),
}

/// The connection's socket.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
            Stream::Unix(s) => s.take_error(),
        }
    }

    /// Connected (a pending TCP connect has no peer yet); over Unix, to a
    /// trusted hub, else the error says who listens.
    fn established(&self) -> Option<io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.peer_addr().ok().map(|_| Ok(())),
            Stream::Unix(s) => s.peer_addr().ok().map(|_| trusted_peer(s)),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Conn {
    stream: Stream,
    phase: Phase,
    out: OutBuf,
    input: Vec<u8>,
    in_head: usize,
}

/// A tcpq client.
pub struct Tcpq {
    target: Target,
    next_addr: usize,
    conn: Option<Conn>,
    retry_at: Option<Instant>,
    backoff: Duration,
    patterns: Vec<String>,
    registration: Option<(Registry, Token)>,
    stats: TcpqStats,
    last_error: Option<io::Error>,
}

fn from_nix(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Starts a non-blocking connect to a Unix socket. It completes at once
/// or fails (`EAGAIN` when the hub's backlog is full: retried later).
fn start_connect_unix(path: &str) -> io::Result<UnixStream> {
    let fd: OwnedFd =
        socket::socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
            .map_err(from_nix)?;
    let addr = UnixAddr::new(path).map_err(from_nix)?;
    socket::connect(fd.as_raw_fd(), &addr).map_err(from_nix)?;
    Ok(UnixStream::from(fd))
}

/// Starts a non-blocking connect; the stream is usable once writable.
fn start_connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd: OwnedFd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
        .map_err(from_nix)?;
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) | Err(nix::Error::EINPROGRESS) => {}
        Err(e) => return Err(from_nix(e)),
    }
    let stream = TcpStream::from(fd);
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Tcpq {
    /// Resolves `host:port` (once, now) and starts connecting.
    pub fn new(host: &str, port: u16) -> io::Result<Tcpq> {
        let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("tcpq host {host} has no address")));
        }
        Ok(Tcpq::with_target(Target::Tcp(addrs)))
    }

    /// A client of the hub on the Unix socket `path` (`tcpq+unix://`);
    /// starts connecting.
    pub fn unix(path: &str) -> io::Result<Tcpq> {
        // An over-long path is an error now, not a retry for ever.
        UnixAddr::new(path).map_err(from_nix)?;
        Ok(Tcpq::with_target(Target::Unix(path.to_string())))
    }

    fn with_target(target: Target) -> Tcpq {
        let mut t = Tcpq {
            target,
            next_addr: 0,
            conn: None,
            retry_at: None,
            backoff: MIN_BACKOFF,
            patterns: Vec::new(),
            registration: None,
            stats: TcpqStats::default(),
            last_error: None,
        };
        t.connect(Instant::now());
        t
    }

    /// True once the hub has greeted us on the current connection.
    pub fn connected(&self) -> bool {
        matches!(self.conn, Some(Conn { phase: Phase::Up, .. }))
    }

    /// Counts over the client's life.
    pub fn stats(&self) -> TcpqStats {
        self.stats
    }

    /// The error that ended the last connection or attempt, if any.
    pub fn last_error(&self) -> Option<&io::Error> {
        self.last_error.as_ref()
    }

    /// The socket to poll, if a connection exists or is being made.
    pub fn fd(&self) -> Option<RawFd> {
        self.conn.as_ref().map(|c| c.stream.as_raw_fd())
    }

    /// True if the socket should be polled for writability too.
    pub fn wants_write(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| matches!(c.phase, Phase::Connecting { .. }) || !c.out.is_empty())
    }

    /// When [`Tcpq::recv`] must be called even without readiness: a retry
    /// or a connect timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.conn {
            None => self.retry_at,
            Some(Conn { phase: Phase::Connecting { deadline }, .. }) => Some(*deadline),
            Some(_) => None,
        }
    }

    /// Registers the current socket (and every later one) with `registry`.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        if let Some(fd) = self.fd() {
            registry.register(&mut SourceFd(&fd), token, Interest::READABLE | Interest::WRITABLE)?;
        }
        self.registration = Some((registry.try_clone()?, token));
        Ok(())
    }

    /// Moves the registration to a new token or interest set.
    pub fn reregister(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        if let Some(fd) = self.fd() {
            registry.reregister(&mut SourceFd(&fd), token, Interest::READABLE | Interest::WRITABLE)?;
        }
        self.registration = Some((registry.try_clone()?, token));
        Ok(())
    }

    /// Removes the registration.
    pub fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.registration = None;
        match self.fd() {
            Some(fd) => registry.deregister(&mut SourceFd(&fd)),
            None => Ok(()),
        }
    }

    fn connect(&mut self, now: Instant) {
        self.retry_at = None;
        let started = match &self.target {
            Target::Tcp(addrs) => {
                let addr = addrs[self.next_addr % addrs.len()];
                start_connect(addr).map(Stream::Tcp)
            }
            Target::Unix(path) => start_connect_unix(path).map(Stream::Unix),
        };
        self.next_addr = self.next_addr.wrapping_add(1);
        let stream = match started {
            Ok(s) => s,
            Err(e) => return self.fail(now, e),
        };
        let mut out = OutBuf::with(&frame::handshake(false));
        for p in &self.patterns {
            frame::subscription(out.tail(), true, p);
        }
        if let Some((registry, token)) = &self.registration {
            let fd = stream.as_raw_fd();
            if let Err(e) = registry.register(&mut SourceFd(&fd), *token, Interest::READABLE | Interest::WRITABLE) {
                return self.fail(now, e);
            }
        }
        let deadline = now + CONNECT_TIMEOUT;
        self.conn = Some(Conn { stream, phase: Phase::Connecting { deadline }, out, input: Vec::new(), in_head: 0 });
    }

    /// Drops the connection (deregistering it first) and schedules a retry.
    fn fail(&mut self, now: Instant, e: io::Error) {
        if let (Some(c), Some((registry, _))) = (&self.conn, &self.registration) {
            let _ = registry.deregister(&mut SourceFd(&c.stream.as_raw_fd()));
        }
        self.conn = None;
        self.stats.failures += 1;
        self.last_error = Some(e);
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Advances connecting and writing; reconnects when a retry is due.
    fn drive(&mut self, now: Instant) {
        if self.conn.is_none() {
            if self.retry_at.is_some_and(|t| now >= t) {
                self.connect(now);
            }
            if self.conn.is_none() {
                return;
            }
        }
        if let Some(Conn { stream, phase: Phase::Connecting { deadline }, .. }) = &self.conn {
            let deadline = *deadline;
            match stream.take_error() {
                Ok(Some(e)) | Err(e) => return self.fail(now, e),
                Ok(None) => {}
            }
            match stream.established() {
                Some(Ok(())) => {
                    if let Some(c) = self.conn.as_mut() {
                        c.phase = Phase::Greeting;
                    }
                }
                Some(Err(e)) => return self.fail(now, e),
                None if now >= deadline => {
                    return self.fail(now, io::Error::new(io::ErrorKind::TimedOut, "tcpq connect timed out"));
                }
                None => return,
            }
        }
        if let Err(e) = self.flush() {
            self.fail(now, e);
        }
    }

    /// Writes queued bytes until done or the socket would block.
    pub fn flush(&mut self) -> io::Result<()> {
        let Some(c) = self.conn.as_mut() else { return Ok(()) };
        if matches!(c.phase, Phase::Connecting { .. }) {
            return Ok(());
        }
        c.out.flush_to(&mut c.stream)
    }

    fn queue(&mut self, now: Instant, f: impl FnOnce(&mut Vec<u8>)) {
        if let Some(c) = self.conn.as_mut() {
            f(c.out.tail());
        }
        self.drive(now);
    }

    /// Adds a subscription; it is sent now if connected and after every reconnect.
    pub fn subscribe(&mut self, pattern: &str) {
        self.patterns.push(pattern.to_string());
        self.queue(Instant::now(), |out| frame::subscription(out, true, pattern));
    }

    /// Drops a subscription by its exact pattern.
    pub fn unsubscribe(&mut self, pattern: &str) {
        self.patterns.retain(|p| p != pattern);
        self.queue(Instant::now(), |out| frame::subscription(out, false, pattern));
    }

    /// Queues a message. Fails with `NotConnected` while there is no
    /// connection (a full-state message is better resent later than
    /// delivered stale), and `WouldBlock` when the queue is full.
    pub fn publish(&mut self, channel: &str, data: &[u8]) -> io::Result<()> {
        datagram::check_channel(channel)?;
        if data.len() > MAX_PAYLOAD {
            return Err(datagram::DatagramError::TooLarge.into());
        }
        let Some(c) = self.conn.as_ref() else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "tcpq hub not connected"));
        };
        if c.out.len() + data.len() + channel.len() + 12 > MAX_QUEUE {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "tcpq output queue full"));
        }
        self.queue(Instant::now(), |out| frame::publish(out, channel, data));
        Ok(())
    }

    /// Advances the connection and returns the next message from the hub;
    /// `None` once the socket would block (or there is no connection).
    pub fn recv(&mut self, now: Instant) -> Option<(String, Vec<u8>)> {
        self.drive(now);
        loop {
            let c = self.conn.as_mut()?;
            if matches!(c.phase, Phase::Connecting { .. }) {
                return None;
            }
            let greeting = c.phase == Phase::Greeting;
            let taken = take_frame(c);
            if greeting && c.phase == Phase::Up {
                self.stats.connects += 1;
                self.backoff = MIN_BACKOFF;
            }
            match taken {
                Ok(Some(m)) => return Some(m),
                Ok(None) => {}
                Err(e) => {
                    self.fail(now, io::Error::new(io::ErrorKind::InvalidData, e));
                    return None;
                }
            }
            let len = c.input.len();
            c.input.resize(len + READ_CHUNK, 0);
            let r = c.stream.read(&mut c.input[len..]);
            c.input.truncate(len + *r.as_ref().unwrap_or(&0));
            match r {
                Ok(0) => {
                    self.fail(now, io::Error::new(io::ErrorKind::UnexpectedEof, "tcpq hub closed the connection"));
                    return None;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(now, e);
                    return None;
                }
            }
        }
    }
}

/// Takes the greeting or one PUBLISH frame from the connection's input.
fn take_frame(c: &mut Conn) -> Result<Option<(String, Vec<u8>)>, FrameError> {
    loop {
        let buf = &c.input[c.in_head..];
        if c.phase == Phase::Greeting {
            let Some(greeting) = buf.first_chunk::<8>() else { return Ok(None) };
            frame::check_handshake(greeting, true)?;
            c.in_head += 8;
            c.phase = Phase::Up;
            continue;
        }
        let Some((f, used)) = frame::parse(buf)? else {
            if c.in_head > 0 {
                c.input.drain(..c.in_head);
                // A large message's room is not kept for good.
                if c.input.capacity() > 32 * READ_CHUNK {
                    c.input.shrink_to(READ_CHUNK.max(c.input.len()));
                }
                c.in_head = 0;
            }
            return Ok(None);
        };
        let Frame::Publish { channel, data } = f else {
            return Err(FrameError::NotPublish);
        };
        let m = (channel.to_string(), data.to_vec());
        c.in_head += used;
        return Ok(Some(m));
    }
}
