//! The only place daemonproxy starts a process (docs/protocol.md §5.3).
//!
//! Everything the child needs — argv and the descriptor map — is built in
//! reusable buffers *before* the fork. The child then makes raw `libc` calls
//! only: reset signal dispositions and mask, place descriptors at 0..n-1
//! without clobbering sources, close the rest, `execvp`. A failed exec exits
//! with status 3.
//!
//! The child never writes anything: with `CLONE_VFORK` daemonproxy is
//! suspended until the child execs or exits, so one blocking write (to a
//! log pipe nobody reads, say) would hang the supervisor for good. Instead
//! the child stores the errno of what failed in memory it shares with the
//! parent (`CLONE_VM`), and the parent logs it through its own log, which
//! never blocks (docs/nonblocking.md).

use crate::line::Line;
use std::ffi::c_char;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

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
    /// Start the child as the leader of a new process group
    /// (`--setpgid`), so a terminal's signals reach daemonproxy only.
    pub new_group: bool,
    /// `exec(ARG0, ...) failed: ` for the parent's log line.
    exec_msg: Line,
    /// The child's stack until it execs: resident only as deep as a child
    /// has used it.
    stack: &'static mut [u8],
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
            new_group: false,
            exec_msg: Line::new(),
            stack: crate::sys::untouched_zeroed(CHILD_STACK),
        }
    }

    /// Name the child's stack to be given back while the loop rests: it
    /// holds nothing between spawns (docs/design.md, "Code at rest").
    pub fn rest(&mut self, plan: &mut crate::sys::RestPlan) {
        plan.add_spare(self.stack);
    }

    /// Prepare argv from the raw TAB-separated `service.args` value.
    pub fn set_args(&mut self, args: &[u8]) {
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
        let arg0 = args.split(|&b| b == b'\t').next().unwrap_or(b"");
        self.exec_msg.s("exec(").push(arg0).s(", ...) failed: ");
    }

    /// The start of the log message for a failed exec (strerror follows).
    pub fn exec_msg(&self) -> &[u8] {
        self.exec_msg.as_bytes()
    }

    /// Start the child and exec. Returns the child's pid and, if its
    /// set-up or exec failed (it then exits with [`EXEC_FAILED`]), the errno
    /// of the failure; or the errno of `clone`.
    pub fn spawn(&mut self) -> Result<Spawned, i32> {
        let mut all: libc::sigset_t = unsafe_zeroed_sigset();
        let mut old: libc::sigset_t = unsafe_zeroed_sigset();
        // SAFETY: valid sigset pointers. Blocking every signal around fork
        // keeps daemonproxy's handlers from running in the child (docs/protocol.md §8.1).
        unsafe {
            libc::sigfillset(&mut all);
            libc::sigprocmask(libc::SIG_SETMASK, &all, &mut old);
        }
        // clone(CLONE_VM | CLONE_VFORK), as posix_spawn(3) does: the child
        // runs on its own stack in our address space while we wait, until
        // it execs or exits. Unlike fork() nothing is copied, so the cost
        // does not grow with daemonproxy's memory. The child only makes raw
        // syscalls on memory prepared above and never returns.
        let arg = ChildArg { spawner: self as *const Spawner, err: AtomicI32::new(0) };
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
        if pid < 0 {
            return Err(err);
        }
        // The child has exec'd or exited by now (CLONE_VFORK); what it
        // stored is visible to us (same memory, and the kernel's wake-up
        // orders it before this load).
        let e = arg.err.load(Ordering::SeqCst);
        Ok(Spawned { pid, exec_errno: (e != 0).then_some(e) })
    }

    /// The child's side. Only raw syscalls on prepared memory; nothing that
    /// can block (see the module comment). `err` receives the errno of a
    /// failure before the child exits.
    unsafe fn child(&self, err: &AtomicI32) -> ! {
        // SAFETY: the clone child, on its own stack, while the parent is
        // suspended; pointers come from buffers prepared before the clone.
        unsafe {
            // Only the dispositions daemonproxy set itself (docs/protocol.md §5.3); others
            // are inherited as daemonproxy inherited them.
            for &sig in crate::signal::OWN_DISPOSITIONS.iter() {
                libc::signal(sig, libc::SIG_DFL);
            }
            let mut empty: libc::sigset_t = unsafe_zeroed_sigset();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            if self.new_group && libc::setpgid(0, 0) < 0 {
                fail(err);
            }

            let n = self.map.len() as RawFd;
            // Make room first: at the open-files limit (RLIMIT_NOFILE) the
            // copies below would fail. This child's descriptor table is its
            // own copy, and of it only the sources go on.
            let mut keep = [-1 as RawFd; 1024];
            let mut k = 0;
            for src in self.map.iter().take(keep.len()) {
                if let Source::Fd(fd) = *src {
                    keep[k] = fd;
                    k += 1;
                }
            }
            close_all_but(&mut keep[..k]);
            if self.abort {
                // The parent has logged why. Not abort() or raise(): with
                // CLONE_VM the C library's idea of "this thread" is still
                // the parent's.
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
                        fail(err);
                    }
                }
            }
            for (i, src) in self.map.iter().enumerate().take(high.len()) {
                match *src {
                    Source::Fd(_) => {
                        if libc::dup2(high[i], i as RawFd) < 0 {
                            fail(err);
                        }
                    }
                    Source::Closed => {
                        libc::close(i as RawFd);
                    }
                }
            }
            // Close everything else ([FIX F14]: not just below 1024).
            close_from_to(n, RawFd::MAX);
            if !self.argv[0].is_null() {
                libc::execvp(self.argv[0], self.argv.as_ptr());
            } else {
                *libc::__errno_location() = libc::ENOENT;
            }
            fail(err)
        }
    }
}

/// A started child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spawned {
    /// Its pid.
    pub pid: i32,
    /// The errno of its failed set-up or exec (it has exited with
    /// [`EXEC_FAILED`]), `None` if it exec'd (or aborted as asked).
    pub exec_errno: Option<i32>,
}

/// Child side: hand errno to the parent and exit with [`EXEC_FAILED`].
fn fail(err: &AtomicI32) -> ! {
    // SAFETY: child-side only; errno is thread-local storage we may read;
    // _exit never returns.
    unsafe {
        let e = *libc::__errno_location();
        err.store(if e == 0 { libc::EINVAL } else { e }, Ordering::SeqCst);
        libc::_exit(EXEC_FAILED)
    }
}

/// What `clone` hands the child.
struct ChildArg {
    spawner: *const Spawner,
    /// Written by the child on failure, read by the parent after clone.
    err: AtomicI32,
}

/// Stack size of the spawned child until it execs.
const CHILD_STACK: usize = 64 * 1024;

extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: arg is the ChildArg set up by spawn(), alive while we run.
    let a = unsafe { &*arg.cast::<ChildArg>() };
    // SAFETY: the Spawner is alive and unchanged while the parent waits.
    unsafe { (*a.spawner).child(&a.err) }
}

fn unsafe_zeroed_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain old data; all-zero is a valid (empty) set.
    unsafe { std::mem::zeroed() }
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
