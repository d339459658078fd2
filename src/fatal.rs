//! The fatal-signal path (docs/protocol.md §8.1, docs/protocol.md §8.4): SIGABRT, SIGBUS, SIGFPE,
//! SIGILL, SIGSEGV and SIGTRAP never kill daemonproxy silently. The handler
//! execs the exit program (if one is configured) with
//! `DAEMONPROXY_EXITCODE=4` and `DAEMONPROXY_ERROR=Received signal SIG<NAME>
//! (<N>)`; if there is none or the exec fails, it logs `fatal: ...` and exits
//! with code 4 — or, when the terminate guard is armed, returns and lets
//! daemonproxy continue.
//!
//! A signal handler may only make async-signal-safe calls, so everything it
//! needs (the resolved program path, argv, the environment with the two
//! variables, the log lines) is prepared ahead by [`prepare`] and published
//! through an atomic pointer. The handler itself calls `poll`, `setitimer`,
//! `write`, `signal`, `sigprocmask`, `execve` and `_exit` only.
//!
//! Its log writes never hang daemonproxy: a destination that does not poll
//! writable is skipped, and a write is cut off after 1/16 s by `ITIMER_REAL`
//! as the log's own writes are (src/log.rs; docs/nonblocking.md).

use crate::line::Line;
use std::ffi::{CString, c_char};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicPtr, Ordering};

/// The signals that take the fatal path.
pub const FATAL: [i32; 6] = [libc::SIGABRT, libc::SIGBUS, libc::SIGFPE, libc::SIGILL, libc::SIGSEGV, libc::SIGTRAP];

/// Exit code of the fatal path.
pub const FATAL_CODE: i32 = 4;

/// Everything the handler needs, built outside it.
struct Prep {
    /// Program to execve (resolved through PATH), if exec-on-exit is set.
    path: Option<CString>,
    _args: Vec<CString>,
    argv: Vec<*const c_char>,
    _env: Vec<CString>,
    /// One environment per fatal signal (its DAEMONPROXY_ERROR differs).
    envp: Vec<Vec<*const c_char>>,
    log_fd: i32,
    guarded: bool,
    /// Per signal: the `warning: daemonproxy exec_on_exit to ...` line.
    exec_line: Vec<u8>,
    /// Per signal: `error: Unable to exec ...: ` (strerror appended).
    exec_fail: Vec<u8>,
    /// Per signal: the `fatal: ...` line.
    fatal_line: Vec<Vec<u8>>,
}

static PREP: AtomicPtr<Prep> = AtomicPtr::new(std::ptr::null_mut());

/// The protocol's message for a fatal signal.
pub fn message(sig: i32) -> String {
    format!("Received signal SIG{} ({sig})", crate::signame::name_of(sig))
}

fn resolve(arg0: &[u8]) -> Option<CString> {
    if arg0.contains(&b'/') {
        return CString::new(arg0).ok();
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in path.as_bytes().split(|&b| b == b':') {
        let mut p = dir.to_vec();
        if p.is_empty() {
            p.push(b'.');
        }
        p.push(b'/');
        p.extend_from_slice(arg0);
        let c = CString::new(p).ok()?;
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
            return Some(c);
        }
    }
    CString::new(arg0).ok()
}

/// (Re)build what the handler uses: call after start-up and whenever the
/// exec-on-exit arguments, the guard or the log descriptor change.
pub fn prepare(exec_args: &[u8], guarded: bool, log_fd: Option<i32>) {
    let args: Vec<CString> = if exec_args.is_empty() {
        Vec::new()
    } else {
        exec_args.split(|&b| b == b'\t').filter_map(|a| CString::new(a).ok()).collect()
    };
    let mut argv: Vec<*const c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let path = args.first().and_then(|a| resolve(a.as_bytes()));
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != "DAEMONPROXY_EXITCODE" && k != "DAEMONPROXY_ERROR")
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let base = env.len();
    env.push(CString::new(format!("DAEMONPROXY_EXITCODE={FATAL_CODE}")).unwrap_or_default());
    for &sig in &FATAL {
        env.push(CString::new(format!("DAEMONPROXY_ERROR={}", message(sig))).unwrap_or_default());
    }
    let envp = (0..FATAL.len())
        .map(|k| {
            let mut v: Vec<*const c_char> = env[..=base].iter().map(|e| e.as_ptr()).collect();
            v.push(env[base + 1 + k].as_ptr());
            v.push(std::ptr::null());
            v
        })
        .collect();
    let name = args.first().map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned()).unwrap_or_default();
    let prefix = if guarded { "fatal: (attempting to continue) " } else { "fatal: " };
    let prep = Box::new(Prep {
        path,
        _args: args,
        argv,
        _env: env,
        envp,
        log_fd: log_fd.unwrap_or(-1),
        guarded,
        exec_line: format!("warning: daemonproxy exec_on_exit to '{name}'\n").into_bytes(),
        exec_fail: format!("error: Unable to exec \"{name}\": ").into_bytes(),
        fatal_line: FATAL.iter().map(|&s| format!("{prefix}{}\n", message(s)).into_bytes()).collect(),
    });
    let old = PREP.swap(Box::into_raw(prep), Ordering::SeqCst);
    if !old.is_null() {
        // SAFETY: old came from Box::into_raw above; the handler only runs
        // on this thread, never concurrently with this function's code.
        drop(unsafe { Box::from_raw(old) });
    }
}

/// One write of `b` to the log that cannot block: skipped if the
/// destination is full, cut off by SIGALRM otherwise (the alarm is disarmed
/// before returning, so an exec'd exit program never inherits it).
fn raw_write(fd: i32, b: &[u8]) {
    if fd >= 0 && crate::sys::writable_now(fd) {
        crate::sys::alarm_usec(1_000_000 / 16);
        let _ = crate::sys::write(fd, b);
        crate::sys::alarm_usec(0);
    }
}

extern "C" fn on_fatal(sig: libc::c_int) {
    let p = PREP.load(Ordering::SeqCst);
    if p.is_null() {
        // SAFETY: nothing prepared (cannot happen after start-up): die.
        unsafe { libc::_exit(FATAL_CODE) };
    }
    // SAFETY: p points at a live Prep (see prepare()).
    let prep = unsafe { &*p };
    // The interrupted code may be about to read errno (guarded: it goes on).
    // SAFETY: the thread's own errno slot.
    let saved_errno = unsafe { *libc::__errno_location() };
    // SIGALRM must be able to cut a write off, even if the fault came while
    // it was blocked (around a fork).
    // SAFETY: async-signal-safe calls on a local set.
    unsafe {
        let mut alrm: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut alrm);
        libc::sigaddset(&mut alrm, libc::SIGALRM);
        libc::sigprocmask(libc::SIG_UNBLOCK, &alrm, std::ptr::null_mut());
    }
    let k = FATAL.iter().position(|&s| s == sig).unwrap_or(0);
    if let Some(path) = &prep.path {
        raw_write(prep.log_fd, &prep.exec_line);
        // SAFETY: async-signal-safe calls on prepared, NUL-terminated arrays.
        unsafe {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::execve(path.as_ptr(), prep.argv.as_ptr(), prep.envp[k].as_ptr());
            let err = *libc::__errno_location();
            let mut eb = [0u8; 128];
            let mut l = Line::new();
            l.push(&prep.exec_fail).push(crate::sys::strerror(err, &mut eb)).byte(b'\n');
            raw_write(prep.log_fd, l.as_bytes());
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
    }
    raw_write(prep.log_fd, &prep.fatal_line[k]);
    if !prep.guarded {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(FATAL_CODE) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved_errno };
}

/// Install the handlers for the fatal signals.
pub fn install() {
    for &sig in &FATAL {
        // SAFETY: a plain sigaction with a handler that makes only
        // async-signal-safe calls.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_fatal as *const () as usize;
            // No SA_NODEFER: a fault inside the handler then kills outright
            // instead of recursing.
            sa.sa_flags = 0;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

static PANIC_MSG: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Install a panic hook that keeps the panic's message for
/// [`take_panic_message`]; the loop catches the unwind and takes the fatal
/// exec path from ordinary code (issue 4: `panic = abort` is not enough).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        if let Ok(mut m) = PANIC_MSG.lock() {
            *m = format!("Rust panic: {info}").replace('\n', " ");
        }
    }));
}

/// The message of the last panic.
pub fn take_panic_message() -> String {
    PANIC_MSG.lock().map(|mut m| std::mem::take(&mut *m)).unwrap_or_else(|_| "Rust panic".into())
}
