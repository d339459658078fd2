//! The tcpq client (spec §2.3): a non-blocking TCP connection to a hub,
//! with the handshake, SUBSCRIBE/UNSUBSCRIBE/PUBLISH frames, a bounded
//! output queue, and reconnection with backoff (resubscribing each time).
//!
//! Nothing here blocks: connecting, greeting, writing and reading all
//! advance from [`Tcpq::recv`], which the owner calls on readiness and at
//! [`Tcpq::next_deadline`].

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage};

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

struct Conn {
    stream: TcpStream,
    phase: Phase,
    out: OutBuf,
    input: Vec<u8>,
    in_head: usize,
}

/// A tcpq client.
pub struct Tcpq {
    addrs: Vec<SocketAddr>,
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
        let mut t = Tcpq {
            addrs,
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
        Ok(t)
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
        let addr = self.addrs[self.next_addr % self.addrs.len()];
        self.next_addr = self.next_addr.wrapping_add(1);
        let stream = match start_connect(addr) {
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
            match stream.peer_addr() {
                Ok(_) => {
                    if let Some(c) = self.conn.as_mut() {
                        c.phase = Phase::Greeting;
                    }
                }
                Err(_) if now >= deadline => {
                    return self.fail(now, io::Error::new(io::ErrorKind::TimedOut, "tcpq connect timed out"));
                }
                Err(_) => return,
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
