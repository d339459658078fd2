//! Signals daemonproxy receives (docs/protocol.md §8.1, docs/protocol.md §8.2).
//!
//! INT, HUP, TERM, USR1, USR2 and QUIT are *counted*: a handler adds one to
//! an atomic counter on every delivery ([FIX F18]) and wakes the loop through
//! a pipe; the loop turns counts into receipts. CHLD only wakes the loop.
//! PIPE is ignored (children get it back as default before exec). ALRM has
//! an empty handler installed *without* `SA_RESTART`, so it interrupts a
//! blocked log write (docs/protocol.md §10.2).

use crate::clock::Mono;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The counted signals, in the order receipts are taken within one pass.
pub const COUNTED: [i32; 6] = [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGUSR1, libc::SIGUSR2];

/// Every signal whose disposition daemonproxy changes (counted, wake-only,
/// ignored, fatal): a forked child puts exactly these back to default.
pub const OWN_DISPOSITIONS: [i32; 15] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGCHLD,
    libc::SIGALRM,
    libc::SIGPIPE,
    libc::SIGABRT,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGSEGV,
    libc::SIGTRAP,
];

static DELIVERED: [AtomicU32; 6] = [const { AtomicU32::new(0) }; 6];

/// Set by SIGCHLD; the loop clears it and then reaps until nothing is left.
static CHILD_EXITED: AtomicBool = AtomicBool::new(true);

/// Whether a child may have exited since the last call (clears the flag).
pub fn take_child_exited() -> bool {
    CHILD_EXITED.swap(false, Ordering::SeqCst)
}

/// Index of a counted signal in [`COUNTED`].
pub fn counted_index(sig: i32) -> Option<usize> {
    COUNTED.iter().position(|&s| s == sig)
}

/// Install the handlers; `wake` is the write end of the loop's wake pipe.
pub fn install(wake: &std::os::fd::OwnedFd) -> std::io::Result<()> {
    for (counter, &sig) in DELIVERED.iter().zip(COUNTED.iter()) {
        crate::sys::count_signal(sig, counter)?;
        signal_hook::low_level::pipe::register_raw(sig, wake.try_clone()?)?;
    }
    crate::sys::flag_signal(libc::SIGCHLD, &CHILD_EXITED)?;
    signal_hook::low_level::pipe::register_raw(libc::SIGCHLD, wake.try_clone()?)?;
    crate::sys::install_alarm_and_ignore_pipe();
    Ok(())
}

/// Pending counts and receipts of the counted signals.
#[derive(Default)]
pub struct Signals {
    /// Pending count per counted signal.
    pub count: [u64; 6],
    /// Receipt number of the latest delivery (0: never); unique and
    /// increasing, so controllers can tell what they have not heard.
    pub receipt: [u64; 6],
    /// Time of the latest delivery.
    pub at: [Mono; 6],
    seq: u64,
}

impl Signals {
    /// Move deliveries from the handlers into counts. Returns a bit per
    /// counted signal that arrived since the last call.
    pub fn collect(&mut self, now: Mono) -> u8 {
        let mut arrived = 0u8;
        for (i, d) in DELIVERED.iter().enumerate() {
            let n = d.swap(0, Ordering::Relaxed);
            if n > 0 {
                self.record(i, u64::from(n), now);
                arrived |= 1 << i;
            }
        }
        arrived
    }

    /// Record `n` deliveries of counted signal `i` at `now`.
    pub fn record(&mut self, i: usize, n: u64, now: Mono) {
        self.count[i] += n;
        self.seq += 1;
        self.receipt[i] = self.seq;
        self.at[i] = now;
    }

    /// Pending count of signal number `sig` (0 for uncounted signals).
    pub fn count_of(&self, sig: i32) -> u64 {
        counted_index(sig).map_or(0, |i| self.count[i])
    }

    /// `signal.clear`: lower the count, floor 0.
    pub fn clear(&mut self, sig: i32, n: u64) {
        if let Some(i) = counted_index(sig) {
            self.count[i] = self.count[i].saturating_sub(n);
        }
    }

    /// Counted signals with a pending count and a receipt newer than
    /// `seen`, oldest receipt first. Returns how many were put in `out`.
    pub fn newer_than(&self, seen: u64, out: &mut [usize; 6]) -> usize {
        let mut n = 0;
        for i in 0..COUNTED.len() {
            if self.count[i] > 0 && self.receipt[i] > seen {
                out[n] = i;
                n += 1;
            }
        }
        out[..n].sort_unstable_by_key(|&i| self.receipt[i]);
        n
    }

    /// The newest receipt number.
    pub fn latest(&self) -> u64 {
        self.seq
    }

    /// Write `signal\tSIG<NAME>\tTS\tCOUNT` for counted signal `i`.
    pub fn write_event(&self, out: &mut crate::line::Line, i: usize) {
        out.s("signal\tSIG").s(crate::signame::name_of(COUNTED[i])).tab();
        out.int(self.at[i].secs()).tab().int(self.count[i] as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_dispositions_cover_every_handled_signal() {
        for s in COUNTED.iter().chain(crate::fatal::FATAL.iter()) {
            assert!(OWN_DISPOSITIONS.contains(s), "{s}");
        }
    }

    #[test]
    fn receipts_order_and_clear() {
        let mut s = Signals::default();
        s.record(counted_index(libc::SIGUSR2).unwrap(), 1, Mono(204_000_000_000));
        s.record(counted_index(libc::SIGHUP).unwrap(), 2, Mono(205_000_000_000));
        let mut idx = [0; 6];
        let n = s.newer_than(0, &mut idx);
        assert_eq!(n, 2);
        let mut l = crate::line::Line::new();
        s.write_event(&mut l, idx[0]);
        assert_eq!(l.as_bytes(), b"signal\tSIGUSR2\t204\t1");
        assert_eq!(s.newer_than(s.latest(), &mut idx), 0);
        s.clear(libc::SIGHUP, 5);
        assert_eq!(s.count_of(libc::SIGHUP), 0);
        assert_eq!(s.newer_than(0, &mut idx), 1);
    }
}
