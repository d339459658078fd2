//! An embedded tcpq hub (docs/fleet.md §2.3): accepts clients, greets them, and
//! relays each PUBLISH once to every client with a matching subscription
//! (channel regex, full match), the publisher included.
//!
//! The hub owns a `mio::Poll`, whose descriptor ([`Hub::as_raw_fd`])
//! becomes readable when the hub has work, so a program can nest it in its
//! own loop and call [`Hub::turn`] with a zero timeout; tests run it on a
//! thread with [`Hub::spawn`]. It binds loopback unless told otherwise
//! (§6.4): anyone who can reach a hub can command every deputy on it.
//! On loopback that is every local user; a hub on a Unix socket
//! ([`Hub::bind_unix`], `tcpq+unix://`) is for its own user only: the
//! socket is made mode 0600, and a client that is neither root nor the
//! hub's user (`SO_PEERCRED`) is closed before it is greeted.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use regex_lite::Regex;

use super::frame::{self, Frame};
use super::lcm::channel_regex;
use super::outbuf::OutBuf;

/// Bytes queued for one client beyond which messages to it are dropped.
pub const MAX_CLIENT_QUEUE: usize = 16 * 1024 * 1024;
/// The most clients served at once; further connections are closed.
pub const MAX_CLIENTS: usize = 1024;
/// The most subscriptions one client may hold.
pub const MAX_SUBSCRIPTIONS: usize = 256;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CLIENT: usize = 2;
const READ_CHUNK: usize = 64 * 1024;

/// Where the hub listens.
enum Listener {
    Tcp(TcpListener),
    /// The socket and its path (removed when the hub is dropped).
    Unix(UnixListener, String),
}

/// A client's socket.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn fd(&self) -> RawFd {
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

struct Client {
    stream: Stream,
    greeted: bool,
    subscriptions: Vec<(String, Regex)>,
    input: Vec<u8>,
    out: OutBuf,
}

impl Client {
    fn matches(&self, channel: &str) -> bool {
        self.subscriptions.iter().any(|(_, re)| re.is_match(channel))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush_to(&mut self.stream)
    }
}

/// One frame's effect, taken out of the input buffer.
enum Action {
    Relay(String, Vec<u8>),
    Subscribe(String),
    Unsubscribe(String),
}

/// Counts over the hub's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Clients accepted.
    pub accepted: u64,
    /// PUBLISH frames received.
    pub published: u64,
    /// Copies delivered into client queues.
    pub relayed: u64,
    /// Copies dropped because a client's queue was full.
    pub dropped: u64,
    /// Clients dropped for a protocol error.
    pub protocol_errors: u64,
    /// Unix-socket clients closed unheard: neither root nor the hub's user.
    pub refused: u64,
}

/// A tcpq hub.
pub struct Hub {
    poll: Poll,
    events: Events,
    listener: Listener,
    clients: Vec<Option<Client>>,
    stats: HubStats,
}

impl Hub {
    /// Listens on `addr`. Use [`Hub::bind_loopback`] unless the hub must be
    /// reachable from other hosts.
    pub fn bind(addr: SocketAddr) -> io::Result<Hub> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(addr)?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Hub::with(poll, Listener::Tcp(listener)))
    }

    fn with(poll: Poll, listener: Listener) -> Hub {
        Hub { poll, events: Events::with_capacity(256), listener, clients: Vec::new(), stats: HubStats::default() }
    }

    /// Listens on the Unix socket `path` (which must not exist), created
    /// mode 0600; only root and this process's user are served. Put it in
    /// a directory no other user can write to.
    pub fn bind_unix(path: &str) -> io::Result<Hub> {
        let poll = Poll::new()?;
        // Bound under umask 0177: the socket is created mode 0600.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let mut listener = bound?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Hub::with(poll, Listener::Unix(listener, path.to_string())))
    }

    /// Listens on 127.0.0.1:`port` (0 = any free port).
    pub fn bind_loopback(port: u16) -> io::Result<Hub> {
        Hub::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }

    /// The address it listens on (an error for a Unix-socket hub).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.listener {
            Listener::Tcp(l) => l.local_addr(),
            Listener::Unix(..) => Err(io::Error::new(io::ErrorKind::Unsupported, "a Unix-socket hub has no address")),
        }
    }

    /// The URL clients use to reach it.
    pub fn url(&self) -> io::Result<String> {
        if let Listener::Unix(_, path) = &self.listener {
            return Ok(format!("tcpq+unix://{path}"));
        }
        let a = self.local_addr()?;
        Ok(match a {
            SocketAddr::V4(v4) => format!("tcpq://{}:{}", v4.ip(), v4.port()),
            SocketAddr::V6(v6) => format!("tcpq://[{}]:{}", v6.ip(), v6.port()),
        })
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.clients.iter().flatten().count()
    }

    /// Counts over the hub's life.
    pub fn stats(&self) -> HubStats {
        self.stats
    }

    /// Waits up to `timeout` (`None` = forever) for activity, then handles
    /// all of it: accepts, reads, relays, writes. `EINTR` returns early.
    pub fn turn(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let tokens: Vec<Token> = self.events.iter().map(|e| e.token()).collect();
        for t in tokens {
            match t {
                LISTENER => self.accept()?,
                WAKER => {}
                Token(n) => self.service(n - FIRST_CLIENT),
            }
        }
        Ok(())
    }

    fn accept(&mut self) -> io::Result<()> {
        loop {
            let accepted = match &self.listener {
                Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
                Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
            };
            let stream = match accepted {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A client that reset before we accepted it, or a full fd
                // table: give up on this one, keep serving the rest.
                Err(_) => return Ok(()),
            };
            if let Stream::Unix(u) = &stream
                && super::tcpq::trusted_peer(u).is_err()
            {
                self.stats.refused += 1;
                continue;
            }
            if self.clients() >= MAX_CLIENTS {
                continue;
            }
            let slot = match self.clients.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    self.clients.push(None);
                    self.clients.len() - 1
                }
            };
            let token = Token(slot + FIRST_CLIENT);
            let fd = stream.fd();
            if self
                .poll
                .registry()
                .register(&mut SourceFd(&fd), token, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            if let Stream::Tcp(t) = &stream {
                let _ = t.set_nodelay(true);
            }
            self.stats.accepted += 1;
            let client = Client {
                stream,
                greeted: false,
                subscriptions: Vec::new(),
                input: Vec::new(),
                out: OutBuf::with(&frame::handshake(true)),
            };
            self.clients[slot] = Some(client);
            self.service(slot);
        }
    }

    fn drop_client(&mut self, slot: usize) {
        if let Some(c) = self.clients.get_mut(slot).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut SourceFd(&c.stream.fd()));
        }
    }

    /// Reads everything a client has sent, handles each frame, and
    /// flushes every queue the relaying touched.
    fn service(&mut self, slot: usize) {
        let mut touched = vec![slot];
        let ok = self.read_client(slot, &mut touched);
        if !ok {
            self.drop_client(slot);
        }
        touched.sort_unstable();
        touched.dedup();
        for s in touched {
            let failed = match self.clients.get_mut(s).and_then(Option::as_mut) {
                Some(c) => c.flush().is_err(),
                None => false,
            };
            if failed {
                self.drop_client(s);
            }
        }
    }

    /// Returns false when the client must be dropped.
    fn read_client(&mut self, slot: usize, touched: &mut Vec<usize>) -> bool {
        loop {
            let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) else { return true };
            let len = c.input.len();
            c.input.resize(len + READ_CHUNK, 0);
            let r = c.stream.read(&mut c.input[len..]);
            c.input.truncate(len + *r.as_ref().unwrap_or(&0));
            match r {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
            if !self.handle_input(slot, touched) {
                self.stats.protocol_errors += 1;
                return false;
            }
        }
    }

    /// Handles the complete frames in a client's input; false on a protocol error.
    fn handle_input(&mut self, slot: usize, touched: &mut Vec<usize>) -> bool {
        let Some(mut c) = self.clients.get_mut(slot).and_then(Option::take) else { return true };
        let mut used = 0;
        let mut ok = true;
        if !c.greeted {
            match c.input.first_chunk::<8>() {
                None => {}
                Some(g) if frame::check_handshake(g, false).is_ok() => {
                    c.greeted = true;
                    used = 8;
                }
                Some(_) => ok = false,
            }
        }
        while ok && c.greeted {
            let action = match frame::parse(&c.input[used..]) {
                Ok(None) => break,
                Err(_) => {
                    ok = false;
                    break;
                }
                Ok(Some((f, n))) => {
                    used += n;
                    match f {
                        Frame::Publish { channel, data } => {
                            let mut copy = Vec::with_capacity(12 + channel.len() + data.len());
                            frame::publish(&mut copy, channel, data);
                            Action::Relay(channel.to_string(), copy)
                        }
                        Frame::Subscribe(p) => Action::Subscribe(p.to_string()),
                        Frame::Unsubscribe(p) => Action::Unsubscribe(p.to_string()),
                    }
                }
            };
            match action {
                Action::Relay(channel, copy) => {
                    // The publisher is out of the table while its input is
                    // parsed; it is offered the copy too.
                    if c.matches(&channel) {
                        self.deliver(&mut c, &copy);
                        touched.push(slot);
                    }
                    self.relay(&channel, &copy, touched);
                }
                Action::Subscribe(p) => match channel_regex(&p) {
                    Ok(re) if c.subscriptions.len() < MAX_SUBSCRIPTIONS => c.subscriptions.push((p, re)),
                    _ => ok = false,
                },
                Action::Unsubscribe(p) => c.subscriptions.retain(|(q, _)| *q != p),
            }
        }
        c.input.drain(..used);
        self.clients[slot] = Some(c);
        ok
    }

    fn deliver(&mut self, c: &mut Client, frame: &[u8]) {
        if c.out.len() + frame.len() > MAX_CLIENT_QUEUE {
            self.stats.dropped += 1;
        } else {
            c.out.tail().extend_from_slice(frame);
            self.stats.relayed += 1;
        }
    }

    fn relay(&mut self, channel: &str, frame: &[u8], touched: &mut Vec<usize>) {
        self.stats.published += 1;
        for s in 0..self.clients.len() {
            let Some(mut c) = self.clients[s].take() else { continue };
            if c.greeted && c.matches(channel) {
                self.deliver(&mut c, frame);
                touched.push(s);
            }
            self.clients[s] = Some(c);
        }
    }

    /// Runs the hub on its own thread until the handle is dropped.
    pub fn spawn(mut self) -> io::Result<HubThread> {
        let addr = self.local_addr().ok();
        let url = self.url()?;
        let waker = Arc::new(Waker::new(self.poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("tcpq-hub".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                self.turn(Some(Duration::from_millis(500)))?;
            }
            Ok(self.stats)
        })?;
        Ok(HubThread { addr, url, waker, stop, thread: Some(thread) })
    }
}

impl Drop for Hub {
    /// A Unix-socket hub removes its socket.
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = &self.listener {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl AsRawFd for Hub {
    /// The hub's epoll descriptor: readable when [`Hub::turn`] has work.
    fn as_raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }
}

/// A hub running on a thread; dropping it stops the hub and joins the thread.
pub struct HubThread {
    addr: Option<SocketAddr>,
    url: String,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<HubStats>>>,
}

impl HubThread {
    /// The address the hub listens on (0.0.0.0:0 for a Unix-socket hub:
    /// see [`HubThread::url`]).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr.unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    }

    /// The URL clients use to reach it.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Stops the hub and returns its counts (or the error that ended it).
    pub fn stop(mut self) -> io::Result<HubStats> {
        self.halt()
    }

    fn halt(&mut self) -> io::Result<HubStats> {
        self.stop.store(true, Ordering::Relaxed);
        self.waker.wake()?;
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err(io::Error::other("tcpq hub thread panicked"))),
            None => Ok(HubStats::default()),
        }
    }
}

impl Drop for HubThread {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}
