//! daemonproxy's own log (docs/protocol.md §10): `<level>: <message>` lines in a
//! fixed 1024-byte buffer, flushed with one `write()` per attempt to a
//! destination that is never made non-blocking.
//!
//! A blocking write is cut off after 1/16 s by `ITIMER_REAL`. After a failed
//! write the next attempt waits until the destination polls writable; if
//! that fails too, attempts happen every 0.5 s. Messages that do not fit are
//! counted and reported once a write succeeds.

use crate::clock::{Mono, SEC};
use crate::command::Name;
use crate::line::Line;
use crate::sys;
use std::fmt;
use std::os::fd::RawFd;

/// Size of the log buffer.
pub const LOG_BUF: usize = 1024;

/// Message levels, lowest first. The numeric value is the filter index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum Level {
    Trace = 1,
    Debug = 2,
    Info = 3,
    Warning = 4,
    Error = 5,
    Fatal = 6,
}

impl Level {
    /// The word printed before the colon.
    pub fn word(self) -> &'static str {
        FILTER_NAMES[self as usize]
    }
}

/// Filter values of `log.filter`, index = the highest level hidden.
pub const FILTER_NAMES: [&str; 7] = ["none", "trace", "debug", "info", "warning", "error", "fatal"];

/// Default filter: `debug` (info and up are shown).
pub const DEFAULT_FILTER: u8 = 2;

/// Where log lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// A raw descriptor (fd 2 by default).
    Fd(RawFd),
    /// A named handle, looked up again whenever handles change (docs/protocol.md §3.20).
    Handle(Name),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// Write whenever there is something to write.
    Ready,
    /// The last write failed: try again once the destination polls writable.
    WaitWritable,
    /// That failed too: try again at this time.
    At(Mono),
}

/// The log.
pub struct Log {
    buf: [u8; LOG_BUF],
    len: usize,
    /// Filter index into [`FILTER_NAMES`]; levels ≤ filter are hidden.
    pub filter: u8,
    lost: u64,
    /// Configured destination.
    pub dest: Dest,
    /// The descriptor `dest` currently resolves to, if any.
    fd: Option<RawFd>,
    /// `fd` is a terminal (a person reads it).
    tty: bool,
    retry: Retry,
}

impl Default for Log {
    fn default() -> Self {
        Self::new()
    }
}

impl Log {
    /// A log to fd 2 with the default filter.
    pub fn new() -> Log {
        Log {
            buf: [0; LOG_BUF],
            len: 0,
            filter: DEFAULT_FILTER,
            lost: 0,
            dest: Dest::Fd(2),
            fd: Some(2),
            tty: sys::is_tty(2),
            retry: Retry::Ready,
        }
    }

    /// Would a message of `level` be shown?
    pub fn enabled(&self, level: Level) -> bool {
        level as u8 > self.filter
    }

    /// Point the log at a (possibly missing) descriptor. Called whenever the
    /// destination or the handle table changes.
    pub fn set_fd(&mut self, fd: Option<RawFd>) {
        if self.fd != fd {
            self.fd = fd;
            self.tty = fd.is_some_and(sys::is_tty);
            self.retry = Retry::Ready;
        }
    }

    /// Whether the destination is a terminal.
    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// The descriptor log lines go to now, if any.
    pub fn fd(&self) -> Option<RawFd> {
        self.fd
    }

    /// Log one message (if the filter lets it through).
    pub fn msg(&mut self, level: Level, args: fmt::Arguments<'_>) {
        if !self.enabled(level) {
            return;
        }
        let mut line = Line::new();
        line.s(level.word()).s(": ");
        let _ = fmt::write(&mut line, args);
        self.append_line(line.as_bytes());
    }

    /// Log a message made of raw bytes (command text is not UTF-8-checked).
    pub fn bytes(&mut self, level: Level, parts: &[&[u8]]) {
        if !self.enabled(level) {
            return;
        }
        let mut line = Line::new();
        line.s(level.word()).s(": ");
        for p in parts {
            line.push(p);
        }
        self.append_line(line.as_bytes());
    }

    fn append_line(&mut self, msg: &[u8]) {
        if self.lost > 0 {
            self.lost += 1;
            return;
        }
        if !self.fits(msg.len() + 1) {
            self.flush(Mono::now());
            if !self.fits(msg.len() + 1) {
                self.lost = 1;
                return;
            }
        }
        self.put(msg);
    }

    fn fits(&self, n: usize) -> bool {
        LOG_BUF - self.len >= n
    }

    /// Copy one message into the buffer as a single line (an LF inside a
    /// message becomes a space: [FIX F9]).
    fn put(&mut self, msg: &[u8]) {
        let n = msg.len().min(LOG_BUF - self.len - 1);
        for (d, &s) in self.buf[self.len..self.len + n].iter_mut().zip(msg) {
            *d = if s == b'\n' { b' ' } else { s };
        }
        self.len += n;
        self.buf[self.len] = b'\n';
        self.len += 1;
    }

    /// Whether buffered lines are waiting.
    pub fn pending(&self) -> bool {
        self.len > 0
    }

    /// One flush attempt, if one is due. Returns whether the buffer is empty.
    pub fn flush(&mut self, now: Mono) -> bool {
        if self.len == 0 {
            return true;
        }
        let Some(fd) = self.fd else { return false };
        match self.retry {
            Retry::Ready => {}
            Retry::WaitWritable => {
                if !sys::writable_now(fd) {
                    return false;
                }
            }
            Retry::At(t) => {
                if now < t {
                    return false;
                }
            }
        }
        sys::alarm_usec(1_000_000 / 16);
        let r = sys::write(fd, &self.buf[..self.len]);
        sys::alarm_usec(0);
        match r {
            Ok(n) if n > 0 => {
                self.buf.copy_within(n..self.len, 0);
                self.len -= n;
                self.retry = Retry::Ready;
                if self.lost > 0 {
                    let mut l = Line::new();
                    l.s("warning: lost ").int(self.lost as i64).s(" log messages");
                    if self.fits(l.len() + 1) {
                        self.lost = 0;
                        self.put(l.as_bytes());
                    }
                }
            }
            _ => {
                self.retry = match self.retry {
                    Retry::Ready => Retry::WaitWritable,
                    _ => Retry::At(now.plus(SEC / 2)),
                };
            }
        }
        self.len == 0
    }

    /// Write out what is buffered right away, as far as the destination
    /// takes it (a few cut-off attempts at most): for `log.dest`, so that
    /// the buffer — and the count of messages lost to the old destination
    /// — goes to the new one before anything else is logged, and nothing
    /// after the switch is counted as lost (docs/protocol.md §10.2; the C original wrote
    /// its buffer when `log.dest` ran).
    pub fn flush_now(&mut self, now: Mono) {
        self.retry = Retry::Ready;
        for _ in 0..4 {
            let before = self.len;
            if self.flush(now) || self.len == before {
                return;
            }
        }
    }

    /// When the loop must wake up for the log: `Some(now)` for "at once".
    pub fn deadline(&self, now: Mono) -> Option<Mono> {
        if self.len == 0 || self.fd.is_none() {
            return None;
        }
        Some(match self.retry {
            Retry::Ready => now,
            Retry::WaitWritable => now.plus(SEC / 10),
            Retry::At(t) => t,
        })
    }

    /// Last flush before exiting: a few attempts, never more than ~1/4 s.
    pub fn flush_final(&mut self) {
        self.retry = Retry::Ready;
        for _ in 0..4 {
            if self.flush(Mono::now()) {
                return;
            }
            self.retry = Retry::Ready;
        }
    }
}

/// Log through a `Log` with `format!`-style arguments.
#[macro_export]
macro_rules! log {
    ($log:expr, $lvl:ident, $($arg:tt)*) => {
        $log.msg($crate::log::Level::$lvl, format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_levels() {
        let mut l = Log::new();
        assert!(!l.enabled(Level::Debug));
        assert!(l.enabled(Level::Info));
        l.filter = 0;
        assert!(l.enabled(Level::Trace));
        l.filter = 6;
        assert!(!l.enabled(Level::Fatal));
    }

    #[test]
    fn overflow_counts_lost_messages() {
        let (r, w) = nix::unistd::pipe().unwrap();
        use std::os::fd::AsRawFd;
        let mut l = Log::new();
        l.set_fd(None); // hold messages
        for i in 0..200 {
            crate::log!(l, Error, "message number {i}");
        }
        assert!(l.lost > 0);
        l.set_fd(Some(w.as_raw_fd()));
        while !l.flush(Mono::now()) {}
        let mut buf = [0u8; 4096];
        let n = sys::read(r.as_raw_fd(), &mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("error: message number 0\n"), "{text}");
        assert!(text.ends_with(&format!("warning: lost {} log messages\n", 200 - text.lines().count() + 1)), "{text}");
    }
}
