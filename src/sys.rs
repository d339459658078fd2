//! Thin wrappers over the raw syscalls daemonproxy uses.
//!
//! Policy lives elsewhere; this module only turns `-1` into an error code and
//! keeps the `unsafe` blocks in one place, each with its reason.

use arrayvec::ArrayVec;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An `errno` value, kept as the plain integer so it can cross `fork()`.
pub type Errno = i32;

/// Turn a libc return value into `Ok(value)` or `Err(errno)`.
pub fn cerr<T: Into<i64> + Copy>(ret: T) -> Result<T, Errno> {
    if ret.into() == -1 { Err(errno()) } else { Ok(ret) }
}

/// The calling thread's current `errno`.
pub fn errno() -> Errno {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Write the C library's `strerror(err)` text into `buf` and return it.
///
/// Rust's `io::Error` display appends ` (os error N)`, which docs/protocol.md §0
/// keeps off the wire; this gives the bare libc text without allocating.
pub fn strerror(err: Errno, buf: &mut [u8; 128]) -> &[u8] {
    // SAFETY: buf is a valid writable buffer of the given length; the XSI
    // strerror_r (what the libc crate binds) NUL-terminates on success.
    let rc = unsafe { libc::strerror_r(err, buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        let s = b"Unknown error";
        buf[..s.len()].copy_from_slice(s);
        return &buf[..s.len()];
    }
    let n = memchr::memchr(0, buf).unwrap_or(buf.len());
    &buf[..n]
}

/// `fcntl(fd, F_GETFL)`.
pub fn get_fl(fd: RawFd) -> Result<i32, Errno> {
    // SAFETY: F_GETFL takes no pointer argument; an invalid fd gives EBADF.
    cerr(unsafe { libc::fcntl(fd, libc::F_GETFL) })
}

/// Set or clear `O_NONBLOCK` on the open file description behind `fd`.
pub fn set_nonblock(fd: RawFd, on: bool) -> Result<(), Errno> {
    let fl = get_fl(fd)?;
    let new = if on { fl | libc::O_NONBLOCK } else { fl & !libc::O_NONBLOCK };
    if new != fl {
        // SAFETY: F_SETFL with an integer flag word.
        cerr(unsafe { libc::fcntl(fd, libc::F_SETFL, new) })?;
    }
    Ok(())
}

/// Set `FD_CLOEXEC` on `fd`.
pub fn set_cloexec(fd: RawFd) -> Result<(), Errno> {
    // SAFETY: F_SETFD with an integer flag word.
    cerr(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) }).map(|_| ())
}

/// Duplicate `fd` onto the lowest free descriptor ≥ `min`, close-on-exec.
pub fn dup_cloexec(fd: RawFd, min: RawFd) -> Result<RawFd, Errno> {
    // SAFETY: F_DUPFD_CLOEXEC with an integer argument.
    cerr(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) })
}

/// Is `fd` an open descriptor?
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD takes no pointer; EBADF for a closed fd.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Is `fd` a terminal (`isatty(3)`)?
pub fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty takes an integer and only queries the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// Is `fd` a socket?
pub fn is_socket(fd: RawFd) -> bool {
    // SAFETY: st is a plain-old-data out parameter, zero-initialised.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into st only.
    let rc = unsafe { libc::fstat(fd, &mut st) };
    rc == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
}

/// `getsockopt(fd, SOL_SOCKET, opt)` for an integer option.
pub fn sockopt_int(fd: RawFd, opt: i32) -> Result<i32, Errno> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are valid out parameters of the sizes passed.
    cerr(unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut v).cast(), &mut len) })?;
    Ok(v)
}

/// The address family a socket is bound with (`getsockname`).
pub fn socket_family(fd: RawFd) -> Option<i32> {
    // SAFETY: sockaddr_storage is plain old data.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: ss/len are valid out parameters of the given size.
    let rc = unsafe { libc::getsockname(fd, (&raw mut ss).cast(), &mut len) };
    if rc == 0 { Some(i32::from(ss.ss_family)) } else { None }
}

/// `write(2)` once; returns bytes written.
pub fn write(fd: RawFd, buf: &[u8]) -> Result<usize, Errno> {
    // SAFETY: buf is valid for reads of buf.len() bytes.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 { Err(errno()) } else { Ok(n as usize) }
}

/// `read(2)` once; returns bytes read (0 at end of file).
pub fn read(fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 { Err(errno()) } else { Ok(n as usize) }
}

/// `close(2)`, ignoring the result (there is nothing to do about it).
pub fn close(fd: RawFd) {
    // SAFETY: the caller owns fd and does not use it afterwards.
    unsafe { libc::close(fd) };
}

/// Poll one descriptor for writability without waiting.
pub fn writable_now(fd: RawFd) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    let rc = unsafe { libc::poll(&mut p, 1, 0) };
    rc > 0 && p.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0
}

/// Arm (or with 0, disarm) a one-shot `ITIMER_REAL` of `usec` microseconds.
///
/// Used to cut off a blocking log write (docs/protocol.md §10.2): SIGALRM is
/// installed without `SA_RESTART`, so the `write` returns `EINTR`.
pub fn alarm_usec(usec: i64) {
    let t = libc::itimerval {
        it_interval: libc::timeval { tv_sec: 0, tv_usec: 0 },
        it_value: libc::timeval { tv_sec: usec / 1_000_000, tv_usec: (usec % 1_000_000) as _ },
    };
    // SAFETY: t is a valid itimerval; the old value is not wanted.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &t, std::ptr::null_mut()) };
}

/// The effective uid.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// The process id.
pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// The uid of the process at the other end of a unix socket
/// (`SO_PEERCRED`).
pub fn peer_uid(fd: RawFd) -> Option<u32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid out parameters of the given size.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, (&raw mut cred).cast(), &mut len) };
    (rc == 0).then_some(cred.uid)
}

/// 8 random bytes from the kernel (`getrandom(2)`), or `None` if it has
/// none to give.
pub fn random_u64() -> Option<u64> {
    let mut b = [0u8; 8];
    // SAFETY: b is a valid 8-byte buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    (n == 8).then(|| u64::from_be_bytes(b))
}

/// The C library's description of a signal (`Terminated`).
pub fn strsignal(sig: i32) -> String {
    // SAFETY: strsignal returns a pointer to a static or thread-local
    // string (or NULL); it is copied at once.
    let p = unsafe { libc::strsignal(sig) };
    if p.is_null() {
        return format!("Signal {sig}");
    }
    // SAFETY: a NUL-terminated string from the C library.
    unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// `send(2)` with `MSG_NOSIGNAL` (no SIGPIPE for a gone reader); returns
/// the bytes sent.
pub fn send_nosignal(fd: RawFd, buf: &[u8]) -> Result<usize, Errno> {
    // SAFETY: buf is valid for reads of buf.len() bytes.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    if n < 0 { Err(errno()) } else { Ok(n as usize) }
}

/// Wait up to `ms` milliseconds for `fd` to be readable (`poll(2)`); a
/// negative `fd` just sleeps. Returns whether it is readable.
pub fn wait_readable(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd (poll ignores a negative fd).
    let rc = unsafe { libc::poll(&mut p, 1, ms) };
    rc > 0 && p.revents != 0
}

/// Take ownership of a descriptor that nothing in this process owns yet:
/// one inherited at start-up, or one a raw call below just returned. `None`
/// for a negative or closed descriptor.
pub fn own_fd(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: an open descriptor no other object in this process owns
    // (the contract above); OwnedFd closes it once.
    (fd >= 0 && fd_is_open(fd)).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `dup2(src, dst)` onto a raw descriptor number (0, 1 and 2 at start-up
/// and in `-D`; nix's `dup2` wants an `OwnedFd` target).
pub fn dup2(src: RawFd, dst: RawFd) -> Result<(), Errno> {
    // SAFETY: plain integers; dup2 closes dst first if it was open.
    cerr(unsafe { libc::dup2(src, dst) }).map(|_| ())
}

/// `kill(2)` the process `pid`, or with `group` `killpg(2)` its group. The
/// signal may be a real-time one (nix's `Signal` has none of those).
pub fn kill(pid: i32, sig: i32, group: bool) -> Result<(), Errno> {
    // SAFETY: plain integers; sending a signal touches no memory of ours.
    cerr(unsafe { if group { libc::killpg(pid, sig) } else { libc::kill(pid, sig) } }).map(|_| ())
}

/// Reap one exited child without waiting (`waitpid(-1, WNOHANG)`):
/// `Some((pid, wait status))`, or `None` when none is left.
pub fn reap_any() -> Option<(i32, i32)> {
    let mut status = 0;
    // SAFETY: status is a valid out parameter.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (pid > 0).then_some((pid, status))
}

/// `recvmsg(2)` into `buf`, taking the descriptors of any `SCM_RIGHTS`
/// message (close-on-exec) and handing each to `take`. Returns the bytes
/// read. Nothing is allocated: the control buffer is on the stack.
pub fn recv_with_fds(fd: RawFd, buf: &mut [u8], mut take: impl FnMut(OwnedFd)) -> Result<usize, Errno> {
    const MAX_FDS: usize = 8;
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut cbuf = [0u64; 16];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain old data; zero is a valid start.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure computation.
    msg.msg_controllen =
        (unsafe { libc::CMSG_SPACE((MAX_FDS * size_of::<RawFd>()) as u32) } as usize).min(std::mem::size_of_val(&cbuf));
    // SAFETY: msg points at valid buffers that outlive the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(errno());
    }
    // SAFETY: walking the control messages the kernel filled in, within
    // msg_controllen, with the libc CMSG helpers; each descriptor received
    // is new in this process and owned by nobody else.
    unsafe {
        let mut cm = libc::CMSG_FIRSTHDR(&msg);
        while !cm.is_null() {
            if (*cm).cmsg_level == libc::SOL_SOCKET && (*cm).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cm).cast::<RawFd>();
                let count = ((*cm).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / size_of::<RawFd>();
                for k in 0..count {
                    take(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(k))));
                }
            }
            cm = libc::CMSG_NXTHDR(&msg, cm);
        }
    }
    Ok(n as usize)
}

/// `fork(2)` for `-D` (daemonize), before the loop runs and while
/// daemonproxy is single-threaded: `Ok(0)` in the child, the child's pid in
/// the parent.
pub fn fork() -> Result<i32, Errno> {
    // SAFETY: called before any thread exists (start-up); the child only
    // continues daemonproxy's own single-threaded start-up.
    cerr(unsafe { libc::fork() })
}

/// `_exit(2)`: end at once, without exit handlers (the parent of `-D`).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes an integer and never returns.
    unsafe { libc::_exit(code) }
}

/// Set an environment variable for the exit program. daemonproxy is
/// single-threaded, so nothing reads the environment meanwhile.
pub fn set_env(key: &str, value: &str) {
    // SAFETY: no other thread exists to read the environment concurrently.
    unsafe { std::env::set_var(key, value) };
}

/// `execvp(3)` `argv` (non-empty); returns the errno if it fails.
pub fn execvp(argv: &[std::ffi::CString]) -> Errno {
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    if argv.is_empty() {
        return libc::ENOENT;
    }
    // SAFETY: ptrs is a NULL-terminated array of valid C strings that
    // outlive the call.
    unsafe { libc::execvp(ptrs[0], ptrs.as_ptr()) };
    errno()
}

/// Every signal's disposition back to default and an empty mask, so a
/// program exec'd next starts clean.
pub fn reset_signals() {
    // SAFETY: plain signal/sigprocmask calls with valid arguments.
    unsafe {
        for sig in 1..libc::SIGRTMAX() + 1 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// Count deliveries of `sig` in `counter` (a handler that only adds one).
pub fn count_signal(sig: i32, counter: &'static std::sync::atomic::AtomicU32) -> std::io::Result<()> {
    // SAFETY: the action only touches an atomic (async-signal-safe).
    unsafe {
        signal_hook::low_level::register(sig, move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })?;
    }
    Ok(())
}

/// Set `flag` on every delivery of `sig`.
pub fn flag_signal(sig: i32, flag: &'static std::sync::atomic::AtomicBool) -> std::io::Result<()> {
    // SAFETY: the action only stores to an atomic (async-signal-safe).
    unsafe {
        signal_hook::low_level::register(sig, move || flag.store(true, std::sync::atomic::Ordering::SeqCst))?;
    }
    Ok(())
}

/// An empty SIGALRM handler installed *without* `SA_RESTART`, so that an
/// alarm interrupts a blocked write with `EINTR` (see [`alarm_usec`]); and
/// SIGPIPE ignored.
pub fn install_alarm_and_ignore_pipe() {
    extern "C" fn on_alarm(_: libc::c_int) {}
    // SAFETY: a plain sigaction with an empty, async-signal-safe handler.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as *const () as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// `getdents64(2)` into a `u64` buffer (aligned for `linux_dirent64`);
/// returns the filled bytes as a slice.
pub fn getdents64_aligned(fd: RawFd, buf: &mut [u64]) -> Result<&[u8], Errno> {
    // SAFETY: viewing the u64 buffer as bytes (any bit pattern is valid).
    let bytes = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), size_of_val(buf)) };
    let n = getdents64(fd, bytes)?;
    Ok(&bytes[..n])
}

/// The names in a buffer of `linux_dirent64` records as `getdents64(2)`
/// fills it (d_ino u64, d_off i64, d_reclen u16, d_type u8, then the
/// NUL-terminated name; records back to back), `.` and `..` among them.
/// Stops at a malformed record.
pub fn dirent_names(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut off = 0;
    std::iter::from_fn(move || {
        if off + 19 >= buf.len() {
            return None;
        }
        let reclen = usize::from(u16::from_ne_bytes([buf[off + 16], buf[off + 17]]));
        if reclen == 0 || off + reclen > buf.len() {
            return None;
        }
        let name = &buf[off + 19..off + reclen];
        off += reclen;
        Some(&name[..memchr::memchr(0, name).unwrap_or(name.len())])
    })
}

/// A non-blocking, close-on-exec `CLOCK_MONOTONIC` timerfd (timerfd_create(2)).
pub fn timerfd() -> Result<std::os::fd::OwnedFd, Errno> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain integer arguments.
    let fd = cerr(unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) })?;
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Arm a timerfd to expire once at monotonic nanosecond `at` (absolute;
/// a time already past expires at once).
pub fn timerfd_at(fd: RawFd, at: i64) -> Result<(), Errno> {
    let at = at.max(1);
    let spec = libc::itimerspec {
        it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
        it_value: libc::timespec { tv_sec: at / 1_000_000_000, tv_nsec: at % 1_000_000_000 },
    };
    // SAFETY: spec is a valid itimerspec; the old value is not wanted.
    cerr(unsafe { libc::timerfd_settime(fd, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) }).map(|_| ())
}

/// `pidfd_open(2)`: a descriptor (always close-on-exec) that refers to
/// process `pid` for as long as it is open, whatever happens to the number.
pub fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes a pid and a flag word; no pointers.
    let fd = cerr(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel just returned this descriptor; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(2)`: signal the process behind a pidfd. Unlike
/// `kill(2)` this cannot reach another process that reused the number.
pub fn pidfd_send_signal(pidfd: RawFd, sig: i32) -> Result<(), Errno> {
    // SAFETY: no siginfo (NULL) and no flags.
    cerr(unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd, sig, std::ptr::null::<libc::siginfo_t>(), 0) })
        .map(|_| ())
}

/// What `waitid(P_PIDFD, ...)` says about the process behind a pidfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PidfdWait {
    /// Not a child of ours (`ECHILD`): the kernel gives us no status.
    NotChild,
    /// A child of ours that has not exited.
    Running,
    /// A child of ours that ended: `si_code` (`CLD_EXITED`, `CLD_KILLED`,
    /// `CLD_DUMPED`) and `si_status` (exit status or signal number).
    Exited(i32, i32),
}

/// `waitid(P_PIDFD, pidfd, WEXITED | WNOHANG)`; with `peek`, `WNOWAIT`
/// too, so an exited child is left to be reaped later.
pub fn pidfd_wait(pidfd: RawFd, peek: bool) -> Result<PidfdWait, Errno> {
    // SAFETY: siginfo_t is plain old data; zero means "no child changed"
    // for WNOHANG (waitid(2)).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | if peek { libc::WNOWAIT } else { 0 };
    // SAFETY: info is a valid out parameter.
    let rc = unsafe { libc::waitid(libc::P_PIDFD, pidfd as libc::id_t, &mut info, flags) };
    if rc != 0 {
        return match errno() {
            libc::ECHILD => Ok(PidfdWait::NotChild),
            e => Err(e),
        };
    }
    // SAFETY: waitid filled in a SIGCHLD siginfo (or left it zeroed).
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 { Ok(PidfdWait::Running) } else { Ok(PidfdWait::Exited(info.si_code, status)) }
}

/// Poll one descriptor for readability without waiting (a pidfd is
/// readable once its process has exited, pidfd_open(2)).
pub fn readable_now(fd: RawFd) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    let rc = unsafe { libc::poll(&mut p, 1, 0) };
    rc > 0 && p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0
}

/// `open(2)` a NUL-terminated path (built by the caller in a fixed buffer,
/// so nothing is allocated), close-on-exec.
pub fn open_cstr(path: &[u8], flags: i32) -> Result<OwnedFd, Errno> {
    if path.last() != Some(&0) {
        return Err(libc::EINVAL);
    }
    // SAFETY: path is NUL-terminated (checked) and outlives the call.
    let fd = cerr(unsafe { libc::open(path.as_ptr().cast(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: the kernel just returned this descriptor; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `getdents64(2)` into `buf`; returns the bytes filled (0 at the end).
pub fn getdents64(fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    let n = cerr(unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) })?;
    Ok(n as usize)
}

/// `readlink(2)` of a NUL-terminated path into `buf`; returns the length.
pub fn readlink_cstr(path: &[u8], buf: &mut [u8]) -> Result<usize, Errno> {
    if path.last() != Some(&0) {
        return Err(libc::EINVAL);
    }
    // SAFETY: path is NUL-terminated; buf is valid for buf.len() bytes.
    let n = unsafe { libc::readlink(path.as_ptr().cast(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 { Err(errno()) } else { Ok(n as usize) }
}

/// `CLOCK_BOOTTIME` in nanoseconds (the clock /proc start times count on).
pub fn boottime_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out parameter; CLOCK_BOOTTIME exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// `sysconf(name)`, or `default` if the value is unknown.
pub fn sysconf(name: i32, default: i64) -> i64 {
    // SAFETY: sysconf takes an integer and has no side effects.
    let v = unsafe { libc::sysconf(name) };
    if v > 0 { v as i64 } else { default }
}

/// Does the fnmatch(3) pattern `pattern` match `s` (no flags)? False if
/// either holds a NUL byte.
pub fn fnmatch(pattern: &str, s: &[u8]) -> bool {
    let (Ok(p), Ok(t)) = (std::ffi::CString::new(pattern), std::ffi::CString::new(s)) else {
        return false;
    };
    // SAFETY: two NUL-terminated strings; fnmatch only reads them.
    unsafe { libc::fnmatch(p.as_ptr(), t.as_ptr(), 0) == 0 }
}

/// Does the fnmatch(3) pattern `pattern` match the path `s` with
/// `FNM_PATHNAME`: a `/` in `s` is matched only by a `/` in the pattern, so
/// `*`, `?` and brackets never cross a directory (`/opt/x/bin/*` does not
/// match `/opt/x/bin/sub/tool`)? False if either holds a NUL byte. The
/// sheriff's filters keep [`fnmatch`].
pub fn fnmatch_path(pattern: &str, s: &[u8]) -> bool {
    let (Ok(p), Ok(t)) = (std::ffi::CString::new(pattern), std::ffi::CString::new(s)) else {
        return false;
    };
    // SAFETY: two NUL-terminated strings; fnmatch only reads them.
    unsafe { libc::fnmatch(p.as_ptr(), t.as_ptr(), libc::FNM_PATHNAME) == 0 }
}

/// This host's name (gethostname(2)), or `localhost` if it has none.
pub fn hostname() -> String {
    let mut b = [0u8; 256];
    // SAFETY: b is writable for its length; gethostname NUL-terminates
    // within it on success.
    let ok = unsafe { libc::gethostname(b.as_mut_ptr().cast(), b.len() - 1) } == 0;
    let n = b.iter().position(|&c| c == 0).unwrap_or(0);
    match std::str::from_utf8(&b[..n]) {
        Ok(h) if ok && !h.is_empty() => h.to_string(),
        _ => "localhost".into(),
    }
}

/// `len` bytes of zeroed memory that become resident only where they are
/// touched, for the preallocated tables and buffers daemonproxy keeps for its
/// whole life (docs/design.md §The tables): an anonymous private
/// mapping, which the kernel backs page by page on first use. A heap
/// allocation of the same size would be touched at once by the allocator's
/// zeroing or by the move of a constructed value. The memory is never given
/// back. Falls back to the heap if the mapping fails.
pub fn untouched_zeroed(len: usize) -> &'static mut [u8] {
    if len == 0 {
        return &mut [];
    }
    // SAFETY: a fresh private anonymous mapping of `len` bytes, readable and
    // writable, zero-filled by the kernel; never unmapped, so the slice is
    // valid for 'static and nothing else refers to it.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p != libc::MAP_FAILED {
            return std::slice::from_raw_parts_mut(p.cast::<u8>(), len);
        }
    }
    Box::leak(vec![0u8; len].into_boxed_slice())
}

/// What [`give_back`] returned to the kernel, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GivenBack {
    /// Resident pages of the program's own file (code, read-only data).
    pub code: usize,
    /// The main thread's stack below the caller's frame.
    pub stack: usize,
    /// Other memory that is not in use between calls (the vfork child's
    /// stack).
    pub spare: usize,
}

/// At most this many mappings of the program file are given back (a
/// program has four or five: headers, code, read-only data, relro, data).
const MAX_GIVE: usize = 8;

/// What [`give_back`] is to give back: found by [`rest_plan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestPlan {
    /// (start, length) of each mapping of the program file to give back.
    code: ArrayVec<(usize, usize), MAX_GIVE>,
    /// The main thread's stack mapping: (start, end).
    stack: Option<(usize, usize)>,
    /// Other (start, length) ranges not in use while the loop waits.
    spare: ArrayVec<(usize, usize), 2>,
}

/// The size of the pages `madvise` works on (x86_64 Linux).
const PAGE: usize = 4096;

impl RestPlan {
    /// Add a range of this process's own memory that holds nothing
    /// anybody reads until it is written again (page-aligned inside).
    pub fn add_spare(&mut self, mem: &mut [u8]) {
        let start = (mem.as_ptr() as usize).div_ceil(PAGE) * PAGE;
        let end = (mem.as_ptr() as usize + mem.len()) & !(PAGE - 1);
        if end > start {
            let _ = self.spare.try_push((start, end - start));
        }
    }
}

/// Find what this process can give back while it waits, once start-up has
/// settled (issue 17; docs/design.md, "Code at rest"): the mappings of
/// the program's own file (its code and read-only data), so that only
/// what runs again comes back, and the main thread's stack, of which the
/// part below the caller of [`give_back`] held only start-up's deeper
/// calls. Also returns start-up's freed heap memory (whole free pages
/// inside the heap: glibc's `malloc_trim` does that besides trimming the
/// top).
///
/// Only mappings of the file /proc/self/exe names that are not writable
/// and hold no private copy of a page (smaps `Anonymous: 0 kB`; relocated
/// data made read-only afterwards has them) are taken. /proc/self/smaps is
/// read through a buffer on the stack; the pages go only in
/// [`give_back`], called just before the wait, so that neither this
/// parsing code nor its buffers are brought back. No allocation: the loop
/// may call it. Never inlined: its buffers must not widen the caller's
/// frame, which bounds the stack that [`give_back`] keeps.
#[inline(never)]
pub fn rest_plan() -> Result<RestPlan, Errno> {
    let mut exe = [0u8; 4096];
    let n = readlink_cstr(b"/proc/self/exe\0", &mut exe)?;
    if n == 0 || n >= exe.len() {
        return Err(libc::ENAMETOOLONG);
    }
    let exe = &exe[..n];
    let fd = open_cstr(b"/proc/self/smaps\0", libc::O_RDONLY)?;
    let mut buf = [0u8; 8192];
    let mut have = 0usize;
    let mut plan = RestPlan::default();
    // The current mapping, if it is one of ours to give back: (start, len).
    let mut current: Option<(usize, usize)> = None;
    loop {
        let got = match read(fd.as_raw_fd(), &mut buf[have..]) {
            Err(libc::EINTR) => continue,
            r => r?,
        };
        have += got;
        let mut used = 0;
        while let Some(end) = memchr::memchr(b'\n', &buf[used..have]) {
            let line = &buf[used..used + end];
            used += end + 1;
            if let Some(kb) = line.strip_prefix(b"Anonymous:") {
                let none = kb.iter().filter(|b| b.is_ascii_digit()).all(|&b| b == b'0');
                if let (true, Some(range)) = (none, current.take()) {
                    let _ = plan.code.try_push(range);
                }
                continue;
            }
            // A mapping's first line: "START-END PERMS OFFSET DEV INODE PATH".
            let mut f = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
            let (Some(range), Some(perms)) = (f.next(), f.next()) else { continue };
            let Some(dash) = memchr::memchr(b'-', range) else { continue };
            let hex = |h: &[u8]| std::str::from_utf8(h).ok().and_then(|t| usize::from_str_radix(t, 16).ok());
            let (Some(start), Some(stop)) = (hex(&range[..dash]), hex(&range[dash + 1..])) else { continue };
            if perms.len() != 4 {
                continue; // a "Key: value" line
            }
            let path = f.nth(3).unwrap_or(b"");
            current = (path == exe && perms[1] != b'w' && stop > start).then_some((start, stop - start));
            if path == b"[stack]" && stop > start {
                plan.stack = Some((start, stop));
            }
        }
        buf.copy_within(used..have, 0);
        have -= used;
        if got == 0 || have == buf.len() {
            break;
        }
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: takes no pointer; malloc's own lock covers the heap.
    unsafe {
        libc::malloc_trim(0);
    }
    Ok(plan)
}

/// Give back what `plan` names; to be called on the main thread just
/// before it waits, from a shallow frame: the stack below this function's
/// own frame (and a margin) goes too. MADV_DONTNEED drops file pages from
/// this process only: they stay in the page cache, and one needed again is
/// a minor fault. Stack and spare pages hold nothing anybody reads; one
/// touched again is a fresh zero page.
#[inline(never)]
pub fn give_back(plan: &RestPlan) -> GivenBack {
    let here = 0u8;
    let sp = std::hint::black_box(std::ptr::addr_of!(here)) as usize;
    // Everything live is above `sp` but this frame's few bytes below it and
    // the madvise wrapper's: a page of margin leaves them alone by far.
    const MARGIN: usize = PAGE;
    let stack = match plan.stack {
        Some((start, stop)) if sp > start && sp < stop => {
            let end = (sp & !(PAGE - 1)).saturating_sub(MARGIN);
            // SAFETY: pages of the main thread's stack wholly below this
            // frame (and the margin): no live frame or object is there; the
            // next touch maps a zero page.
            if end > start { unsafe { dontneed(start, end - start) } } else { 0 }
        }
        _ => 0,
    };
    // SAFETY: page-aligned, private anonymous memory of this process that
    // its owner (RestPlan::add_spare) holds nothing in between uses; it
    // reads back as zeros.
    let spare = plan.spare.iter().map(|&(start, len)| unsafe { dontneed(start, len) }).sum();
    // SAFETY: whole mappings of this process (page-aligned, from
    // /proc/self/smaps) of the program's own file, not writable and holding
    // no private page: their pages are refaulted unchanged from the file on
    // the next access.
    let code = plan.code.iter().map(|&(start, len)| unsafe { dontneed(start, len) }).sum();
    GivenBack { code, stack, spare }
}

/// `madvise(MADV_DONTNEED)` on `len` bytes at `start`: the bytes given
/// back (0 on failure).
///
/// # Safety
/// The range must be this process's own memory whose contents nobody
/// needs (anonymous: they read back as zeros) or that refaults unchanged
/// (clean, read-only file pages).
unsafe fn dontneed(start: usize, len: usize) -> usize {
    // SAFETY: the caller vouches for the range.
    let r = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    if r == 0 { len } else { 0 }
}
