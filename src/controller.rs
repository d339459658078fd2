//! Controllers (docs/protocol.md §7): fixed input and output buffers per
//! connection, line framing, and output flow control with `overflow`.
//!
//! A controller that stops reading only ever stalls itself: its output
//! buffer is fixed (2048 bytes); when a line does not fit after a
//! non-blocking flush, that line and all later output are dropped until the
//! buffer drains, then `overflow` is written.

use crate::clock::Mono;
use crate::command::Name;
use crate::log::Log;
use crate::sys;
use arrayvec::ArrayVec;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Input buffer size: the longest command line plus its LF.
pub const IN_BUF: usize = 1024;
/// Output buffer size.
pub const OUT_BUF: usize = 2048;
/// The bytes of one controller slot's buffers (input, output, listing
/// filters): one page.
pub const SLOT_BYTES: usize = IN_BUF + OUT_BUF + IN_BUF;

/// One controller slot's buffers, carved from memory that becomes resident
/// only where it is used ([`sys::untouched_zeroed`]): a slot that never
/// holds a controller costs address space only, and a live one only the
/// pages its traffic reaches. They move with the slot's box and survive its
/// resets.
pub struct Bufs {
    inbuf: &'static mut [u8],
    outbuf: &'static mut [u8],
    filters: &'static mut [u8],
}

impl Bufs {
    /// The buffers of `slots` slots, one page-sized piece each.
    pub fn pool(slots: usize) -> impl Iterator<Item = Bufs> {
        sys::untouched_zeroed(slots * SLOT_BYTES).chunks_exact_mut(SLOT_BYTES).map(Bufs::from_slot)
    }

    /// One slot's buffers outside a pool (tests; a slot beyond the pool).
    pub fn single() -> Bufs {
        Bufs::from_slot(sys::untouched_zeroed(SLOT_BYTES))
    }

    fn from_slot(slot: &'static mut [u8]) -> Bufs {
        let (inbuf, rest) = slot.split_at_mut(IN_BUF);
        let (outbuf, filters) = rest.split_at_mut(OUT_BUF);
        Bufs { inbuf, outbuf, filters }
    }

    fn empty() -> Bufs {
        Bufs { inbuf: &mut [], outbuf: &mut [], filters: &mut [] }
    }
}

/// Most received descriptors queued for `fd.take` (docs/protocol.md §3.15).
pub const MAX_TAKEN: usize = 2;
/// Most commands one controller runs per loop pass (docs/protocol.md §2.5).
pub const COMMANDS_PER_PASS: usize = 3;

/// What kind of controller this is (docs/protocol.md §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `-i`: fd 0 in, fd 1 out.
    Interactive,
    /// `-c FILE` or `-c -`: input only.
    Config,
    /// An accepted control-socket connection.
    Socket,
    /// The daemonproxy end of a controller service's socketpair.
    Service,
}

/// What the next piece of input is.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// A complete line of this many bytes was copied out.
    Line(usize),
    /// A line over the limit was found; `true` if it starts with `#`.
    TooLong(bool),
    /// End of input with a partial last line of this many bytes.
    Partial(usize),
    /// End of input, nothing left.
    Eof,
    /// Nothing to do until more input arrives.
    Wait,
}

/// Where a paused listing resumes: a `statedump` (docs/protocol.md §3.2), or the extension
/// listings `service.stat *` and `service.query`, whose filters are kept
/// in [`Controller::filters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dump {
    /// Handles after the given name (`None`: from the start).
    Handles(Option<Name>),
    /// Services: after the given name, which of the five lines of the
    /// current service comes next, and (for lines 1 to 4) the slot that
    /// service was in, to be checked before it is looked up by name.
    Services(Option<Name>, u8, usize),
    /// Signal lines: how many were written.
    Signals(u8),
    /// `service.stat *`: after the given name; lines written so far.
    Stat(Option<Name>, u32),
    /// `service.query`: after the given name; matches written so far.
    Query(Option<Name>, u32),
}

/// One controller slot.
pub struct Controller {
    /// Slot number, as logs show it (`controller[N]`).
    pub id: usize,
    /// Kind.
    pub kind: Kind,
    /// Descriptor(s) owned by the controller (closed when it goes).
    pub owned: Option<OwnedFd>,
    /// Input descriptor, if it has an input side.
    pub in_fd: Option<RawFd>,
    /// Output descriptor, if it has an output side.
    pub out_fd: Option<RawFd>,
    /// Input is registered with the poller (else: always try).
    pub in_polled: bool,
    /// Output is registered with the poller (else: always try).
    pub out_polled: bool,
    /// Last read did not hit `WouldBlock`.
    pub readable: bool,
    /// Last write did not hit `WouldBlock`.
    pub writable: bool,
    /// End of input seen.
    pub eof: bool,
    /// Input, output and listing-filter buffers (see [`Bufs`]).
    bufs: Bufs,
    in_len: usize,
    /// Discarding an over-long line up to its LF.
    discarding: bool,
    out_len: usize,
    /// Output is being dropped until the buffer drains (docs/protocol.md §7.4).
    pub overflow: bool,
    /// Newest signal receipt this controller was told about (docs/protocol.md §8.2).
    pub signal_seen: u64,
    /// A statedump (or listing) in progress.
    pub dump: Option<Dump>,
    /// The filters of the listing in progress (`service.query`,
    /// `service.stat *`), validated, matched in place.
    filters_len: usize,
    /// `exit` was run, or input ended: close once output is flushed.
    pub closing: bool,
    /// Writing failed for good: drop output, close.
    pub broken: bool,
    /// When the output started to block (reset on progress).
    pub blocked_since: Option<Mono>,
    /// The RESET warning was logged for this blocking episode ([FIX F13]).
    pub warned: bool,
    /// Seconds of blocked output before the warning / forced overflow.
    pub reset_timeout: i64,
    /// Seconds of blocked output before the connection is closed.
    pub close_timeout: i64,
    /// The service this controller belongs to, for controller services.
    pub service: Option<usize>,
    /// Input is a socket: read with `recvmsg` to receive descriptors.
    pub recv_fds: bool,
    /// Descriptors received with `SCM_RIGHTS`, oldest first.
    pub taken: ArrayVec<OwnedFd, MAX_TAKEN>,
}

impl Controller {
    /// A fresh controller.
    pub fn new(
        id: usize,
        kind: Kind,
        owned: Option<OwnedFd>,
        in_fd: Option<RawFd>,
        out_fd: Option<RawFd>,
        bufs: Bufs,
    ) -> Controller {
        Controller {
            id,
            kind,
            owned,
            in_fd,
            out_fd,
            in_polled: false,
            out_polled: false,
            readable: true,
            writable: true,
            eof: in_fd.is_none(),
            bufs,
            in_len: 0,
            discarding: false,
            out_len: 0,
            overflow: false,
            signal_seen: 0,
            dump: None,
            filters_len: 0,
            closing: false,
            broken: false,
            blocked_since: None,
            warned: false,
            reset_timeout: 15,
            close_timeout: 30,
            service: None,
            recv_fds: in_fd.is_some_and(sys::is_socket),
            taken: ArrayVec::new(),
        }
    }

    /// Make this box a fresh controller, keeping its buffers (the old one's
    /// descriptors are closed as it is dropped).
    pub fn reset(
        &mut self,
        id: usize,
        kind: Kind,
        owned: Option<OwnedFd>,
        in_fd: Option<RawFd>,
        out_fd: Option<RawFd>,
    ) {
        let bufs = std::mem::replace(&mut self.bufs, Bufs::empty());
        *self = Controller::new(id, kind, owned, in_fd, out_fd, bufs);
    }

    /// The filters of the listing in progress (`service.query`,
    /// `service.stat *`), validated, matched in place.
    pub fn filters(&self) -> &[u8] {
        &self.bufs.filters[..self.filters_len]
    }

    /// Keep `filters` for the listing that starts (cut to the buffer).
    pub fn set_filters(&mut self, filters: &[u8]) {
        let n = filters.len().min(self.bufs.filters.len());
        self.bufs.filters[..n].copy_from_slice(&filters[..n]);
        self.filters_len = n;
    }

    /// Whether there is an output side that is still usable.
    pub fn has_output(&self) -> bool {
        self.out_fd.is_some() && !self.broken
    }

    /// Free bytes in the output buffer.
    pub fn out_free(&self) -> usize {
        OUT_BUF - self.out_len
    }

    /// Bytes waiting to be written.
    pub fn out_pending(&self) -> usize {
        self.out_len
    }

    /// Is the input buffer full (reading paused)?
    pub fn in_full(&self) -> bool {
        self.in_len == IN_BUF
    }

    /// May the next command run (≥ 1024 bytes free, or in overflow)?
    pub fn can_run(&self) -> bool {
        !self.has_output() || self.overflow || self.out_free() >= IN_BUF
    }

    /// Queue one line (LF added). In overflow, or if it does not fit after a
    /// non-blocking flush, it is dropped and overflow starts.
    pub fn send(&mut self, line: &[u8], now: Mono) {
        if !self.has_output() || self.overflow {
            return;
        }
        let need = line.len() + 1;
        if self.out_free() < need {
            self.flush(now);
            if self.out_free() < need {
                self.overflow = true;
                return;
            }
        }
        self.put(line);
    }

    /// Queue a line only if it fits now; `false` (nothing queued) otherwise.
    /// Used by statedump, which pauses instead of overflowing.
    pub fn try_send(&mut self, line: &[u8]) -> bool {
        if !self.has_output() || self.overflow {
            return true;
        }
        if self.out_free() < line.len() + 1 {
            return false;
        }
        self.put(line);
        true
    }

    fn put(&mut self, line: &[u8]) {
        let n = line.len();
        self.bufs.outbuf[self.out_len..self.out_len + n].copy_from_slice(line);
        self.bufs.outbuf[self.out_len + n] = b'\n';
        self.out_len += n + 1;
    }

    /// Write as much buffered output as the descriptor takes without
    /// blocking. Ends an overflow episode once the buffer has drained.
    pub fn flush(&mut self, now: Mono) {
        let Some(fd) = self.out_fd else { return };
        if self.broken {
            self.out_len = 0;
            return;
        }
        while self.out_len > 0 {
            // Only whole lines are written (docs/protocol.md §7.4).
            let end = memchr::memrchr(b'\n', &self.bufs.outbuf[..self.out_len]).map_or(self.out_len, |p| p + 1);
            match sys::write(fd, &self.bufs.outbuf[..end]) {
                Ok(0) => break,
                Ok(n) => {
                    self.bufs.outbuf.copy_within(n..self.out_len, 0);
                    self.out_len -= n;
                    self.blocked_since = None;
                    self.warned = false;
                }
                Err(libc::EINTR) => continue,
                Err(libc::EAGAIN) => {
                    self.writable = false;
                    if self.blocked_since.is_none() {
                        self.blocked_since = Some(now);
                    }
                    break;
                }
                Err(_) => {
                    self.broken = true;
                    self.out_len = 0;
                    break;
                }
            }
        }
        if self.out_len == 0 {
            self.blocked_since = None;
            if self.overflow {
                self.overflow = false;
                self.put(b"overflow");
                self.flush(now);
            }
        }
    }

    /// Read whatever is available into the input buffer. Returns whether
    /// anything new arrived or the state changed.
    pub fn fill(&mut self, log: &mut Log) -> bool {
        let Some(fd) = self.in_fd else { return false };
        let mut progress = false;
        while !self.eof && self.in_len < IN_BUF {
            let r = if self.recv_fds { self.recv(fd, log) } else { sys::read(fd, &mut self.bufs.inbuf[self.in_len..]) };
            match r {
                Ok(0) => {
                    self.eof = true;
                    progress = true;
                }
                Ok(n) => {
                    self.in_len += n;
                    progress = true;
                }
                Err(libc::EINTR) => continue,
                Err(libc::EAGAIN) => {
                    self.readable = false;
                    break;
                }
                Err(_) => {
                    // A read error ends the input like EOF (the log names it).
                    self.eof = true;
                    progress = true;
                }
            }
        }
        progress
    }

    /// Append bytes to the input buffer as a read would, as far as they fit;
    /// returns how many were taken. The loop reads with
    /// [`Controller::fill`]; this is the same framing without a descriptor,
    /// for the framing fuzzer (`fuzz/fuzz_targets/framing.rs`).
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(IN_BUF - self.in_len);
        self.bufs.inbuf[self.in_len..self.in_len + n].copy_from_slice(&bytes[..n]);
        self.in_len += n;
        n
    }

    /// `recvmsg` into the input buffer, queueing any descriptors received.
    fn recv(&mut self, fd: RawFd, log: &mut Log) -> Result<usize, sys::Errno> {
        let taken = &mut self.taken;
        sys::recv_with_fds(fd, &mut self.bufs.inbuf[self.in_len..], |owned| {
            let raw = owned.as_raw_fd();
            if taken.try_push(owned).is_err() {
                crate::log!(log, Error, "No room for ancillary file descriptor {raw}");
            }
        })
    }

    /// Take the next piece of input, copying a complete line into `out`.
    pub fn next_input(&mut self, out: &mut [u8; IN_BUF]) -> Input {
        loop {
            let found = memchr::memchr(b'\n', &self.bufs.inbuf[..self.in_len]);
            if self.discarding {
                match found {
                    Some(p) => {
                        self.consume(p + 1);
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        self.in_len = 0;
                        return if self.eof { Input::Eof } else { Input::Wait };
                    }
                }
            }
            return match found {
                Some(p) => {
                    out[..p].copy_from_slice(&self.bufs.inbuf[..p]);
                    self.consume(p + 1);
                    Input::Line(p)
                }
                None if self.in_len == IN_BUF => {
                    let hash = self.bufs.inbuf[0] == b'#';
                    self.in_len = 0;
                    self.discarding = true;
                    Input::TooLong(hash)
                }
                None if self.eof && self.in_len > 0 => {
                    let n = self.in_len;
                    out[..n].copy_from_slice(&self.bufs.inbuf[..n]);
                    self.in_len = 0;
                    Input::Partial(n)
                }
                None if self.eof => Input::Eof,
                None => Input::Wait,
            };
        }
    }

    /// Drop buffered input (after `exit`).
    pub fn drop_input(&mut self) {
        self.in_len = 0;
        self.eof = true;
    }

    /// Whether a complete line is buffered.
    pub fn has_line(&self) -> bool {
        memchr::memchr(b'\n', &self.bufs.inbuf[..self.in_len]).is_some()
    }

    /// Whether a complete line (or a decision) is waiting in the buffer.
    pub fn input_ready(&self) -> bool {
        self.in_fd.is_some()
            && (self.in_len == IN_BUF
                || (self.eof && !self.closing)
                || memchr::memchr(b'\n', &self.bufs.inbuf[..self.in_len]).is_some())
    }

    fn consume(&mut self, n: usize) {
        self.bufs.inbuf.copy_within(n..self.in_len, 0);
        self.in_len -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        let (a, b) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            None,
            nix::sys::socket::SockFlag::SOCK_NONBLOCK,
        )
        .unwrap();
        (a, b)
    }

    #[test]
    fn framing_and_too_long() {
        let (a, b) = pair();
        let mut c = Controller::new(0, Kind::Socket, None, Some(a.as_raw_fd()), None, Bufs::single());
        let mut data = b"one\r\ntwo\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 3000));
        data.extend(b"\nthree\npart");
        let mut sent = 0;
        let mut out = [0u8; IN_BUF];
        let mut got = Vec::new();
        loop {
            if sent < data.len() {
                sent += sys::write(b.as_raw_fd(), &data[sent..]).unwrap_or(0);
            }
            let progress = c.fill(&mut Log::new());
            match c.next_input(&mut out) {
                Input::Line(n) => got.push(String::from_utf8_lossy(&out[..n]).into_owned()),
                Input::TooLong(h) => got.push(format!("TOOLONG{h}")),
                Input::Wait if sent == data.len() && !progress => break,
                Input::Wait => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, ["one\r", "two", "TOOLONGfalse", "three"]);
        drop(b);
        c.readable = true;
        c.fill(&mut Log::new());
        assert_eq!(c.next_input(&mut out), Input::Partial(4));
        assert_eq!(c.next_input(&mut out), Input::Eof);
    }

    #[test]
    fn overflow_then_recovery() {
        let (a, b) = pair();
        let mut c = Controller::new(0, Kind::Socket, None, None, Some(a.as_raw_fd()), Bufs::single());
        let now = Mono::now();
        let line = [b'y'; 1000];
        let mut i = 0;
        while !c.overflow {
            c.send(&line, now);
            i += 1;
            assert!(i < 10_000);
        }
        assert!(!c.can_run() || c.overflow);
        // Drain the peer until the controller has written everything.
        let mut buf = vec![0u8; 1 << 20];
        let mut all = Vec::new();
        for _ in 0..1000 {
            if let Ok(n) = sys::read(b.as_raw_fd(), &mut buf) {
                all.extend_from_slice(&buf[..n]);
            }
            c.flush(now);
            if !c.overflow && c.out_pending() == 0 {
                break;
            }
        }
        while let Ok(n) = sys::read(b.as_raw_fd(), &mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        assert!(all.ends_with(b"\noverflow\n"));
        assert!(all.split(|&x| x == b'\n').all(|l| l.is_empty() || l == b"overflow" || l.len() == 1000));
    }
}
