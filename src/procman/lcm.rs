//! [`Lcm`]: one LCM endpoint (udpm or tcpq) for a single-threaded poll
//! loop, with liblcm's subscription semantics (a channel regex, matched
//! against the whole channel name).
//!
//! Use it with mio (`Lcm` is an [`mio::event::Source`]; it keeps its
//! registration across tcpq reconnects), or with raw `poll(2)`: poll
//! [`Lcm::fds`] (and for writability when [`Lcm::wants_write`]) afresh each
//! round. Either way, on readiness and at [`Lcm::next_deadline`], call
//! [`Lcm::recv`] until it returns `None`: that drains the sockets to
//! `WouldBlock` (as edge-triggered polling needs), flushes queued output and
//! drives reconnection.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Instant;

use arrayvec::ArrayVec;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use regex_lite::Regex;

use super::tcpq::{Tcpq, TcpqStats};
use super::udpm::{Udpm, UdpmStats};
use super::url::Url;

/// A message as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Its channel.
    pub channel: String,
    /// Its payload (an encoded message, maybe followed by a trailer).
    pub data: Vec<u8>,
    /// The sender's address (udpm only; over tcpq the sender is the hub).
    pub source: Option<SocketAddr>,
}

/// What the endpoint has counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// udpm receive-side drops.
    pub udpm: UdpmStats,
    /// tcpq connection counts.
    pub tcpq: TcpqStats,
    /// Messages received on channels nobody subscribed to.
    pub unsubscribed: u64,
}

/// Compiles an LCM subscription: a regex that must match the whole channel.
pub fn channel_regex(pattern: &str) -> io::Result<Regex> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

enum Transport {
    Udpm(Udpm),
    Tcpq(Tcpq),
}

/// One LCM endpoint.
pub struct Lcm {
    url: Url,
    transport: Transport,
    subscriptions: Vec<(String, Regex)>,
    unsubscribed: u64,
}

impl Lcm {
    /// Opens the endpoint `url` names. udpm sockets are ready at once; a
    /// tcpq client starts connecting and keeps retrying with backoff.
    pub fn new(url: &Url) -> io::Result<Lcm> {
        let transport = match url {
            Url::Udpm { group, port, ttl, recv_buf_size } => {
                Transport::Udpm(Udpm::open(*group, *port, *ttl, *recv_buf_size)?)
            }
            Url::Tcpq { host, port } => Transport::Tcpq(Tcpq::new(host, *port)?),
            Url::TcpqUnix { path } => Transport::Tcpq(Tcpq::unix(path)?),
        };
        Ok(Lcm { url: url.clone(), transport, subscriptions: Vec::new(), unsubscribed: 0 })
    }

    /// The URL this endpoint was opened with (log it at start, §6.4).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// udpm: the address our datagrams are sent from, so a receiver can
    /// tell its own looped-back messages ([`Received::source`] has this
    /// port). `None` over tcpq.
    pub fn send_addr(&self) -> Option<SocketAddr> {
        match &self.transport {
            Transport::Udpm(u) => u.send_addr().ok(),
            Transport::Tcpq(_) => None,
        }
    }

    /// tcpq: true while the hub connection is up. udpm: always true.
    pub fn connected(&self) -> bool {
        match &self.transport {
            Transport::Udpm(_) => true,
            Transport::Tcpq(t) => t.connected(),
        }
    }

    /// What has been counted so far.
    pub fn stats(&self) -> Stats {
        let mut s = Stats { unsubscribed: self.unsubscribed, ..Stats::default() };
        match &self.transport {
            Transport::Udpm(u) => s.udpm = u.stats(),
            Transport::Tcpq(t) => s.tcpq = t.stats(),
        }
        s
    }

    /// Subscribes to every channel the regex `pattern` fully matches
    /// (a plain name matches just itself). Subscribing twice is one
    /// subscription.
    pub fn subscribe(&mut self, pattern: &str) -> io::Result<()> {
        if self.subscriptions.iter().any(|(p, _)| p == pattern) {
            return Ok(());
        }
        let re = channel_regex(pattern)?;
        self.subscriptions.push((pattern.to_string(), re));
        if let Transport::Tcpq(t) = &mut self.transport {
            t.subscribe(pattern);
        }
        Ok(())
    }

    /// Ends the subscription with exactly this pattern (no-op if none).
    pub fn unsubscribe(&mut self, pattern: &str) {
        let before = self.subscriptions.len();
        self.subscriptions.retain(|(p, _)| p != pattern);
        if self.subscriptions.len() != before
            && let Transport::Tcpq(t) = &mut self.transport
        {
            t.unsubscribe(pattern);
        }
    }

    /// Sends `payload` on `channel`. udpm: sent now (fragmented if large);
    /// `WouldBlock` if the socket buffer is full. tcpq: queued and written
    /// as the socket allows; `NotConnected` without a hub, `WouldBlock`
    /// when the queue is full. Channels over 63 bytes and payloads over
    /// 1 MiB give `InvalidInput`. A lost message is healed by the next
    /// periodic one, so callers usually count the error and go on.
    pub fn publish(&mut self, channel: &str, payload: &[u8]) -> io::Result<()> {
        match &mut self.transport {
            Transport::Udpm(u) => u.publish(channel, payload),
            Transport::Tcpq(t) => t.publish(channel, payload),
        }
    }

    /// Writes queued tcpq output as far as the socket allows.
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.transport {
            Transport::Udpm(_) => Ok(()),
            Transport::Tcpq(t) => t.flush(),
        }
    }

    /// The next message on a subscribed channel, or `None` once every
    /// socket would block. Also flushes output and drives reconnection.
    pub fn recv(&mut self) -> Option<Received> {
        let now = Instant::now();
        loop {
            let r = match &mut self.transport {
                Transport::Udpm(u) => {
                    u.expire(now);
                    // A socket error other than WouldBlock is transient for
                    // UDP (e.g. ENOMEM); the next readiness retries.
                    let (channel, data, source) = u.recv(now).ok()??;
                    Received { channel, data, source: Some(source) }
                }
                Transport::Tcpq(t) => {
                    let (channel, data) = t.recv(now)?;
                    Received { channel, data, source: None }
                }
            };
            if self.subscriptions.iter().any(|(_, re)| re.is_match(&r.channel)) {
                return Some(r);
            }
            self.unsubscribed += 1;
        }
    }

    /// The descriptors to poll for readability. Over tcpq the descriptor
    /// changes on reconnect (and is absent while waiting to retry), so
    /// raw-`poll(2)` users ask again every round.
    pub fn fds(&self) -> ArrayVec<RawFd, 1> {
        let mut v = ArrayVec::new();
        match &self.transport {
            Transport::Udpm(u) => v.push(u.recv_fd()),
            Transport::Tcpq(t) => v.extend(t.fd()),
        }
        v
    }

    /// True if [`Lcm::fds`] should also be polled for writability.
    pub fn wants_write(&self) -> bool {
        match &self.transport {
            Transport::Udpm(_) => false,
            Transport::Tcpq(t) => t.wants_write(),
        }
    }

    /// When [`Lcm::recv`] must be called even without readiness
    /// (a tcpq retry or connect timeout).
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.transport {
            Transport::Udpm(_) => None,
            Transport::Tcpq(t) => t.next_deadline(),
        }
    }
}

/// Registers the endpoint's sockets under one token, for reading (and for
/// writing over tcpq). The registration follows tcpq reconnects.
impl mio::event::Source for Lcm {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match &mut self.transport {
            Transport::Udpm(u) => SourceFd(&u.recv_fd()).register(registry, token, interests),
            Transport::Tcpq(t) => t.register(registry, token),
        }
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match &mut self.transport {
            Transport::Udpm(u) => SourceFd(&u.recv_fd()).reregister(registry, token, interests),
            Transport::Tcpq(t) => t.reregister(registry, token),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match &mut self.transport {
            Transport::Udpm(u) => SourceFd(&u.recv_fd()).deregister(registry),
            Transport::Tcpq(t) => t.deregister(registry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_match_whole_channels() {
        let re = channel_regex("PM_INFO").unwrap();
        assert!(re.is_match("PM_INFO"));
        assert!(!re.is_match("PM_INFO2"));
        assert!(!re.is_match("XPM_INFO"));
        let any = channel_regex("PM_.*").unwrap();
        assert!(any.is_match("PM_ORDERS") && !any.is_match("PMD_ORDERS2"));
        let alt = channel_regex("A|B").unwrap();
        assert!(alt.is_match("A") && alt.is_match("B") && !alt.is_match("AB"), "alternation is grouped");
        assert_eq!(channel_regex("(").unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
