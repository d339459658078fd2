//! The only place daemonproxy starts a process (protocol.md §5.3).
//!
//! Everything the child needs — argv, the descriptor map, the messages it may
//! have to log — is built in reusable buffers *before* the fork. The child
//! then makes raw `libc` calls only: reset signal dispositions and mask,
//! place descriptors at 0..n-1 without clobbering sources, close the rest,
//! `execvp`. A failed exec logs and exits with status 3.

use crate::line::Line;
use std::ffi::c_char;
use std::os::fd::RawFd;

/// Exit status of a child whose exec (or set-up) failed.
pub const EXEC_FAILED: i32 = 3;

/// Where child descriptor `i` comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// This descriptor of daemonproxy's.
    Fd(RawFd),
    /// `-`: closed in the child.
    Closed,
}

/// Reusable buffers for one spawn at a time.
pub struct Spawner {
    argv_buf: Vec<u8>,
    argv: Vec<*const c_char>,
    /// The descriptor map, filled by the caller before [`Spawner::spawn`].
    pub map: Vec<Source>,
    /// The child must abort (a handle was missing at exec time).
    pub abort: bool,
    /// The message it logs first (empty if the log filter hides it).
    pub abort_msg: Line,
    /// Messages the child logs before exec (zero-length names).
    pub warn_msg: Line,
    exec_msg: Line,
    /// The child's stack until it execs.
    stack: Vec<u8>,
}

impl Default for Spawner {
    fn default() -> Self {
        Self::new()
    }
}

impl Spawner {
    /// Buffers with room for typical services (they grow only at need).
    pub fn new() -> Spawner {
        Spawner {
            argv_buf: Vec::with_capacity(2048),
            argv: Vec::with_capacity(256),
            map: Vec::with_capacity(64),
            abort: false,
            abort_msg: Line::new(),
            warn_msg: Line::new(),
            exec_msg: Line::new(),
            stack: vec![0; CHILD_STACK],
        }
    }

    /// Prepare argv from the raw TAB-separated `service.args` value.
    pub fn set_args(&mut self, args: &[u8], log_errors: bool) {
        self.argv_buf.clear();
        self.argv.clear();
        if args.is_empty() {
            self.argv.push(std::ptr::null());
        } else {
            for a in args.split(|&b| b == b'\t') {
                self.argv_buf.extend_from_slice(a);
                self.argv_buf.push(0);
            }
            let base = self.argv_buf.as_ptr();
            let mut off = 0;
            for a in args.split(|&b| b == b'\t') {
                // SAFETY: off stays within argv_buf, which is not modified
                // again until the next set_args.
                self.argv.push(unsafe { base.add(off) }.cast());
                off += a.len() + 1;
            }
            self.argv.push(std::ptr::null());
        }
        self.exec_msg.clear();
        if log_errors {
            let arg0 = args.split(|&b| b == b'\t').next().unwrap_or(b"");
            self.exec_msg.s("error: exec(").push(arg0).s(", ...) failed: ");
        }
    }

    /// Start the child and exec. `log_fd` receives the child's own
    /// messages. Returns the child's pid, or the errno of `clone`.
    pub fn spawn(&mut self, log_fd: Option<RawFd>) -> Result<i32, i32> {
        let mut all: libc::sigset_t = unsafe_zeroed_sigset();
        let mut old: libc::sigset_t = unsafe_zeroed_sigset();
        // SAFETY: valid sigset pointers. Blocking every signal around fork
        // keeps daemonproxy's handlers from running in the child (§8.1).
        unsafe {
            libc::sigfillset(&mut all);
            libc::sigprocmask(libc::SIG_SETMASK, &all, &mut old);
        }
        // clone(CLONE_VM | CLONE_VFORK), as posix_spawn(3) does: the child
        // runs on its own stack in our address space while we wait, until
        // it execs or exits. Unlike fork() nothing is copied, so the cost
        // does not grow with daemonproxy's memory. The child only makes raw
        // syscalls on memory prepared above and never returns.
        let arg = ChildArg { spawner: self as *const Spawner, log_fd: log_fd.unwrap_or(-1) };
        let len = self.stack.len();
        // SAFETY: the top of our own stack buffer, aligned down to 16 bytes.
        let top = unsafe { self.stack.as_mut_ptr().add(len) } as usize & !15;
        // SAFETY: `child_entry` runs on the dedicated stack with `arg`, which
        // outlives the call (CLONE_VFORK suspends us until exec or exit).
        let pid = unsafe {
            libc::clone(
                child_entry,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&raw const arg).cast_mut().cast(),
            )
        };
        let err = if pid < 0 { crate::sys::errno() } else { 0 };
        // SAFETY: restores the mask saved above.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        if pid < 0 { Err(err) } else { Ok(pid) }
    }

    /// The child's side. Only raw syscalls on prepared memory.
    unsafe fn child(&self, log_fd: Option<RawFd>) -> ! {
        let log_fd = log_fd.filter(|&fd| fd >= 0);
        // SAFETY: the clone child, on its own stack, while the parent is
        // suspended; pointers come from buffers prepared before the clone.
        unsafe {
            // Only the dispositions daemonproxy set itself (§5.3); others
            // are inherited as daemonproxy inherited them.
            for &sig in crate::signal::OWN_DISPOSITIONS.iter() {
                libc::signal(sig, libc::SIG_DFL);
            }
            let mut empty: libc::sigset_t = unsafe_zeroed_sigset();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());

            let n = self.map.len() as RawFd;
            // Make room first: at the open-files limit (RLIMIT_NOFILE) the
            // copies below would fail. This child's descriptor table is its
            // own copy, and of it only the sources and the log go on.
            let mut keep = [-1 as RawFd; 1025];
            let mut k = 0;
            for src in self.map.iter().take(1024) {
                if let Source::Fd(fd) = *src {
                    keep[k] = fd;
                    k += 1;
                }
            }
            if let Some(fd) = log_fd {
                keep[k] = fd;
                k += 1;
            }
            close_all_but(&mut keep[..k]);
            // Keep a private copy of the log destination above the map.
            let log = match log_fd {
                Some(fd) => libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, n.max(3)),
                None => -1,
            };
            if !self.warn_msg.is_empty() && log >= 0 {
                write_all(log, self.warn_msg.as_bytes());
            }
            if self.abort {
                if log >= 0 && !self.abort_msg.is_empty() {
                    write_all(log, self.abort_msg.as_bytes());
                }
                // Not abort() or raise(): with CLONE_VM the C library's
                // idea of "this thread" is still the parent's.
                libc::syscall(libc::SYS_kill, libc::syscall(libc::SYS_getpid), libc::SIGABRT);
                libc::_exit(128 + libc::SIGABRT);
            }
            // Move every source above the target range first, so placing one
            // descriptor never clobbers another's source.
            let mut high = [-1 as RawFd; 1024];
            for (i, src) in self.map.iter().enumerate().take(high.len()) {
                if let Source::Fd(fd) = *src {
                    high[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, n.max(3));
                    if high[i] < 0 {
                        self.fail(log);
                    }
                }
            }
            for (i, src) in self.map.iter().enumerate().take(high.len()) {
                match *src {
                    Source::Fd(_) => {
                        if libc::dup2(high[i], i as RawFd) < 0 {
                            self.fail(log);
                        }
                    }
                    Source::Closed => {
                        libc::close(i as RawFd);
                    }
                }
            }
            // Close everything else ([FIX F14]: not just below 1024), except
            // the close-on-exec log copy kept for an exec failure message.
            if log >= 0 {
                close_from_to(n, log - 1);
                close_from_to(log + 1, RawFd::MAX);
            } else {
                close_from_to(n, RawFd::MAX);
            }
            if !self.argv[0].is_null() {
                libc::execvp(self.argv[0], self.argv.as_ptr());
            } else {
                *libc::__errno_location() = libc::ENOENT;
            }
            self.fail(log)
        }
    }

    /// Log `error: exec(ARG0, ...) failed: <strerror>` and exit 3.
    unsafe fn fail(&self, log: RawFd) -> ! {
        // SAFETY: child-side only; strerror_r writes into a stack buffer.
        unsafe {
            let err = *libc::__errno_location();
            if log >= 0 && !self.exec_msg.is_empty() {
                let mut eb = [0u8; 128];
                let mut l = self.exec_msg.clone();
                l.push(crate::sys::strerror(err, &mut eb)).byte(b'\n');
                write_all(log, l.as_bytes());
            }
            libc::_exit(EXEC_FAILED)
        }
    }
}

/// What `clone` hands the child.
struct ChildArg {
    spawner: *const Spawner,
    log_fd: RawFd,
}

/// Stack size of the spawned child until it execs.
const CHILD_STACK: usize = 64 * 1024;

extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: arg is the ChildArg set up by spawn(), alive while we run.
    let a = unsafe { &*arg.cast::<ChildArg>() };
    // SAFETY: the Spawner is alive and unchanged while the parent waits.
    unsafe { (*a.spawner).child(Some(a.log_fd)) }
}

fn unsafe_zeroed_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain old data; all-zero is a valid (empty) set.
    unsafe { std::mem::zeroed() }
}

fn write_all(fd: RawFd, mut b: &[u8]) {
    while !b.is_empty() {
        match crate::sys::write(fd, b) {
            Ok(0) => return,
            Ok(n) => b = &b[n..],
            Err(libc::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Close every descriptor not in `keep` (sorted in place; duplicates and
/// negative entries allowed). No allocation: for the forked child.
fn close_all_but(keep: &mut [RawFd]) {
    for i in 1..keep.len() {
        let mut j = i;
        while j > 0 && keep[j - 1] > keep[j] {
            keep.swap(j - 1, j);
            j -= 1;
        }
    }
    let mut next: RawFd = 0;
    for &fd in keep.iter().filter(|&&fd| fd >= 0) {
        if fd > next {
            close_from_to(next, fd - 1);
        }
        next = next.max(fd.saturating_add(1));
    }
    close_from_to(next, RawFd::MAX);
}

/// Close descriptors `first..=last`: `close_range(2)` where the kernel has
/// it, else one by one up to the open-files limit.
fn close_from_to(first: RawFd, last: RawFd) {
    if first > last {
        return;
    }
    // SAFETY: close_range takes plain integers.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, last as libc::c_uint, 0u32) };
    if rc == 0 {
        return;
    }
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: rl is a valid out parameter.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    let top = (rl.rlim_cur.min(1 << 20) as RawFd).min(last.saturating_add(1));
    for fd in first..top {
        crate::sys::close(fd);
    }
}
