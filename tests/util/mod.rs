//! Shared harness for the integration tests: runs the real `daemonproxy`
//! binary in a fresh temporary directory, talks the protocol of
//! `docs/protocol.md` over pipes and matches the lines that come back.
//!
//! Every wait has a timeout; every process is started in its own process
//! group (whose id is the daemon's pid), and the whole group is killed when
//! the handle is dropped, so services left running by a test die with it.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test: `$DAEMONPROXY` when set (so the same tests can
/// check another build, e.g. the static one of `make static-test`), else
/// the one cargo built for this test run.
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| match std::env::var("DAEMONPROXY") {
        // Absolute: the daemon runs in each test's temp directory.
        Ok(p) if !p.is_empty() => std::fs::canonicalize(&p).map_or(p, |a| a.display().to_string()),
        _ => env!("CARGO_BIN_EXE_daemonproxy").to_string(),
    })
}

/// Default time to wait for a line that must come.
pub const T: Duration = Duration::from_secs(5);

/// Shorthand for a duration in milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Shorthand for a duration in seconds.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---------------------------------------------------------------------------
// Temporary directories

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/dp-<tag>-XXXXXX` with mkdtemp(3) (a fresh name
    /// nobody could have planted), then mode 0755 so that tests running a
    /// process as another uid can reach it. Keep `tag` short: unix socket
    /// paths inside it must stay below 108 bytes.
    pub fn new(tag: &str) -> TempDir {
        let template = std::env::temp_dir().join(format!("dp-{tag}-XXXXXX"));
        let path = nix::unistd::mkdtemp(&template).expect("create temp dir");
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }

    /// Writes a file inside the directory.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(name);
        fs::write(&p, contents).expect("write file in temp dir");
        p
    }

    /// Writes an executable script inside the directory.
    pub fn script(&self, name: &str, contents: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.write(name, contents);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    /// Reads a file inside the directory ("" if missing).
    pub fn read(&self, name: &str) -> String {
        fs::read(self.join(name)).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    pub fn exists(&self, name: &str) -> bool {
        self.join(name).exists()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------
// Small helpers

/// Current `CLOCK_MONOTONIC` time in seconds (system-wide, same clock the
/// daemon prints).
pub fn mono_f64() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Current `CLOCK_MONOTONIC` time in whole seconds.
pub fn mono() -> i64 {
    mono_f64() as i64
}

/// Whether `line` matches `pat`: both are split at TABs, the field counts
/// must agree and every pattern field must equal the line field, except a
/// pattern field `*`, which matches any one field (pids, times, durations).
pub fn matches(pat: &str, line: &str) -> bool {
    let p: Vec<&str> = pat.split('\t').collect();
    let l: Vec<&str> = line.split('\t').collect();
    p.len() == l.len() && p.iter().zip(l.iter()).all(|(p, l)| *p == "*" || p == l)
}

/// Shows TABs and control characters visibly for assertion messages.
pub fn vis(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            '\t' => o.push_str("\\t"),
            '\r' => o.push_str("\\r"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => o.push_str(&format!("\\x{:02x}", c as u32)),
            c => o.push(c),
        }
    }
    o
}

fn vis_lines(lines: &[String]) -> String {
    lines.iter().map(|l| format!("    {}\n", vis(l))).collect()
}

/// Asserts that `lines` match `pats` one to one, with a readable message.
pub fn assert_lines(lines: &[String], pats: &[&str], what: &str) {
    let ok = lines.len() == pats.len() && lines.iter().zip(pats.iter()).all(|(l, p)| matches(p, l));
    if !ok {
        let pats: Vec<String> = pats.iter().map(|s| s.to_string()).collect();
        panic!("{what}: lines differ\n  expected:\n{}  actual:\n{}", vis_lines(&pats), vis_lines(lines));
    }
}

/// The error line of docs/protocol.md §2.7: `error\t<MSG>, for command "<L30>[...]"`.
pub fn err_for(msg: &str, line: &str) -> String {
    let b = line.as_bytes();
    let n = b.len().min(30);
    let mut s = format!("error\t{msg}, for command \"{}", String::from_utf8_lossy(&b[..n]));
    if b.len() >= 30 {
        s.push_str("...");
    }
    s.push('"');
    s
}

/// The first log line of a failed command (docs/protocol.md §2.7): `error: controller[N]
/// command failed: '<L90>'[...]`.
pub fn log_failed(n: usize, line: &str) -> String {
    let b = line.as_bytes();
    let k = b.len().min(90);
    let mut s = format!("error: controller[{n}] command failed: '{}'", String::from_utf8_lossy(&b[..k]));
    if b.len() >= 90 {
        s.push_str("...");
    }
    s
}

/// The second log line of a failed command: `error:   with error: '<MSG>'`.
pub fn log_with_error(msg: &str) -> String {
    format!("error:   with error: '{msg}'")
}

/// Field `i` (0-based) of a TAB-separated line.
pub fn field(line: &str, i: usize) -> String {
    line.split('\t').nth(i).unwrap_or_else(|| panic!("line {:?} has no field {i}", vis(line))).to_string()
}

/// Field `i` parsed as an integer.
pub fn field_i64(line: &str, i: usize) -> i64 {
    let f = field(line, i);
    f.parse().unwrap_or_else(|_| panic!("field {i} of {:?} is not an integer", vis(line)))
}

/// Sends `sig` to `pid`.
pub fn kill(pid: i32, sig: i32) -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// A `/proc/PID/status` value in kB (`VmRSS`, `VmHWM`).
pub fn status_kb(pid: i32, key: &str) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let l = s.lines().find(|l| l.starts_with(&format!("{key}:"))).unwrap_or_else(|| panic!("no {key} in status"));
    l.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// CPU time process `pid` has used, user and system (`/proc/PID/stat`).
pub fn cpu_time(pid: i32) -> Duration {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 1000 / hz)
}

/// The children of `pid` (every thread's list, `/proc/PID/task/*/children`).
pub fn children(pid: i32) -> Vec<i32> {
    let mut v = Vec::new();
    for t in fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        if let Ok(s) = fs::read_to_string(t.path().join("children")) {
            v.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
        }
    }
    v
}

/// How many descriptors process `pid` has open (`/proc/PID/fd`).
pub fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// A uid no account uses and no other test shares (the kernel needs no
/// passwd entry): RLIMIT_NPROC then counts only the processes of the test
/// that uses it.
pub fn fresh_uid() -> u32 {
    static N: AtomicUsize = AtomicUsize::new(0);
    160_000 + (std::process::id() % 100_000) * 4 + N.fetch_add(1, Ordering::SeqCst) as u32 % 4
}

/// Makes the daemon run as `uid` (group `uid`, no supplementary groups)
/// with `RLIMIT_NPROC` = `nproc`, set in the child before exec. As root,
/// RLIMIT_NPROC is not enforced, so a test of it needs an unprivileged uid;
/// `dir` is handed to that uid.
pub fn unprivileged(c: &mut Command, dir: &Path, uid: u32, nproc: u64) {
    std::os::unix::fs::chown(dir, Some(uid), Some(uid)).expect("chown the test directory");
    // SAFETY: the closure only makes raw syscalls (async-signal-safe).
    unsafe {
        c.pre_exec(move || {
            let r = libc::rlimit { rlim_cur: nproc, rlim_max: nproc };
            if libc::setrlimit(libc::RLIMIT_NPROC, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sets `RLIMIT_NOFILE` = `n` in the child before exec.
pub fn nofile_limit(c: &mut Command, n: u64) {
    // SAFETY: the closure only makes a raw syscall (async-signal-safe).
    unsafe {
        c.pre_exec(move || {
            let r = libc::rlimit { rlim_cur: n, rlim_max: n };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Echo round trips measured while something attacks the daemon: the
/// median and the 95th percentile under 10 ms, and no single one beyond
/// 100 ms (the machine is shared; a scheduling hiccup is not the daemon
/// blocking). Prints the figures.
pub fn assert_round_trips(rtts: &[Duration], what: &str) {
    let mut v = rtts.to_vec();
    v.sort();
    let (med, p95, max) = (v[v.len() / 2], v[v.len() * 95 / 100], v[v.len() - 1]);
    println!("{what}: {} echo round trips, median {med:?}, p95 {p95:?}, max {max:?}", v.len());
    assert!(med < ms(10) && p95 < ms(10), "{what}: round trips median {med:?}, p95 {p95:?}");
    assert!(max < ms(100), "{what}: a round trip of {max:?}");
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            // state is the field after the ")" that closes the command name
            let st = s.rfind(')').and_then(|i| s[i + 1..].split_whitespace().next().map(|x| x.to_string()));
            !matches!(st.as_deref(), Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Polls `f` every 10 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(ms(10));
    }
}

/// Prepares a command for the binary: own process group, cwd `dir`, and no
/// inherited descriptor beyond 0..2 (they are marked close-on-exec), so
/// that the daemon's handle table holds only what the spec lists.
pub fn command(dir: &Path, args: &[&str]) -> Command {
    command_under(&[], dir, args)
}

/// Like `command`, but runs `WRAPPER... bin() ARGS` (for instance under
/// `unshare --pid --fork`); the process group is the wrapper's, and the
/// wrapper must pass descriptors 0..2 on. An empty wrapper is `command`.
pub fn command_under(wrapper: &[&str], dir: &Path, args: &[&str]) -> Command {
    command_of(bin(), wrapper, dir, args)
}

/// `command_under` for another copy of the binary at `bin`.
fn command_of(bin: &str, wrapper: &[&str], dir: &Path, args: &[&str]) -> Command {
    let mut c = match wrapper.split_first() {
        Some((prog, rest)) => {
            let mut c = Command::new(prog);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    c.args(args).current_dir(dir).process_group(0);
    // SAFETY: the closure only makes raw syscalls (async-signal-safe).
    unsafe {
        c.pre_exec(|| {
            let r = libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
            if r != 0 {
                for fd in 3..4096 {
                    let fl = libc::fcntl(fd, libc::F_GETFD);
                    if fl >= 0 {
                        libc::fcntl(fd, libc::F_SETFD, fl | libc::FD_CLOEXEC);
                    }
                }
            }
            Ok(())
        });
    }
    c
}

/// Makes the child inherit descriptors: for each `(src, target)`, `src`
/// (open in this process) is `dup2`ed onto `target` just before exec (after
/// the close-on-exec sweep of `command`), so the daemon finds it open.
pub fn inherit(c: &mut Command, fds: &[(i32, i32)]) {
    let fds = fds.to_vec();
    // SAFETY: the closure only makes raw syscalls (async-signal-safe).
    unsafe {
        c.pre_exec(move || {
            // first move every source out of the way of every target
            let mut high = [0i32; 16];
            for (i, (src, _)) in fds.iter().enumerate().take(16) {
                high[i] = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 200);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, (_, target)) in fds.iter().enumerate().take(16) {
                if libc::dup2(high[i], *target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Byte collector fed by a reader thread.
#[derive(Clone, Default)]
pub struct Collector {
    buf: Arc<Mutex<Vec<u8>>>,
    done: Arc<AtomicBool>,
}

impl Collector {
    /// Starts a thread collecting everything read from `r`.
    pub fn spawn<R: Read + Send + 'static>(mut r: R) -> Collector {
        let c = Collector::default();
        let c2 = c.clone();
        thread::spawn(move || {
            let mut b = [0u8; 8192];
            loop {
                match r.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => c2.buf.lock().unwrap().extend_from_slice(&b[..n]),
                }
            }
            c2.done.store(true, Ordering::SeqCst);
        });
        c
    }

    /// Everything collected so far, lossily decoded.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.buf.lock().unwrap().clone()
    }

    /// Complete lines collected so far (a final partial line included).
    pub fn lines(&self) -> Vec<String> {
        let t = self.text();
        let mut v: Vec<String> = t.split('\n').map(|s| s.to_string()).collect();
        if v.last().map(|s| s.is_empty()).unwrap_or(false) {
            v.pop();
        }
        v
    }

    /// Waits until the writer side is closed by everyone.
    pub fn wait_eof(&self, timeout: Duration) -> bool {
        wait_until(timeout, || self.done.load(Ordering::SeqCst))
    }

    pub fn is_eof(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
}

fn kill_group(pgid: i32) {
    if pgid > 1 {
        // SAFETY: plain syscall on a process group we created.
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
    }
}

/// Waits up to `timeout` for `child` to exit; its status, or `None`.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= end {
            return None;
        }
        thread::sleep(ms(5));
    }
}

/// Describes an exit status for messages.
pub fn describe(st: &ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (_, Some(s)) => format!("killed by signal {s}"),
        _ => format!("{st:?}"),
    }
}

// ---------------------------------------------------------------------------
// A plain process run (options, -c)

/// The daemon run with arbitrary arguments, stdin piped, stdout and stderr
/// collected in the background.
pub struct Proc {
    child: Child,
    pid: i32,
    stdin: Option<ChildStdin>,
    pub out: Collector,
    pub err: Collector,
    pub dir: TempDir,
}

impl Proc {
    /// Starts `daemonproxy ARGS` in a fresh temp dir.
    pub fn start(tag: &str, args: &[&str]) -> Proc {
        Proc::start_in(TempDir::new(tag), args)
    }

    /// Starts `daemonproxy ARGS` in `dir`.
    pub fn start_in(dir: TempDir, args: &[&str]) -> Proc {
        Proc::start_under(&[], dir, args)
    }

    /// Starts `WRAPPER... daemonproxy ARGS` in `dir` (see `command_under`);
    /// `pid()` is then the wrapper's pid.
    pub fn start_under(wrapper: &[&str], dir: TempDir, args: &[&str]) -> Proc {
        let mut c = command_under(wrapper, dir.path(), args);
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn daemonproxy");
        let pid = child.id() as i32;
        let out = Collector::spawn(child.stdout.take().unwrap());
        let err = Collector::spawn(child.stderr.take().unwrap());
        let stdin = child.stdin.take();
        Proc { child, pid, stdin, out, err, dir }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn write_stdin(&mut self, data: &[u8]) {
        let w = self.stdin.as_mut().expect("stdin already closed");
        w.write_all(data).expect("write to daemonproxy stdin");
        w.flush().unwrap();
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the daemon to exit; panics (showing stderr) on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match wait_child(&mut self.child, timeout) {
            Some(st) => st,
            None => panic!(
                "daemonproxy did not exit within {timeout:?}\nstderr:\n{}\nstdout:\n{}",
                self.err.text(),
                self.out.text()
            ),
        }
    }

    /// Waits for exit and returns the exit code (panics if killed).
    pub fn exit_code(&mut self, timeout: Duration) -> i32 {
        let st = self.wait_exit(timeout);
        st.code().unwrap_or_else(|| panic!("daemonproxy {}; stderr:\n{}", describe(&st), self.err.text()))
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stdout once the pipe is closed (or after 2 s).
    pub fn stdout_text(&self) -> String {
        self.out.wait_eof(secs(2));
        self.out.text()
    }

    /// Stderr once the pipe is closed (or after 2 s).
    pub fn stderr_text(&self) -> String {
        self.err.wait_eof(secs(2));
        self.err.text()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.err.wait_eof(secs(2));
        self.err.lines()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stdin = None;
        kill_group(self.pid);
        let _ = wait_child(&mut self.child, secs(5));
    }
}

/// Runs `daemonproxy ARGS` to completion (stdin fed then closed), with a
/// timeout; returns the finished process for inspection.
pub fn run_in(dir: TempDir, args: &[&str], stdin: &[u8], timeout: Duration) -> (Proc, ExitStatus) {
    let mut p = Proc::start_in(dir, args);
    if !stdin.is_empty() {
        // a daemon that exits early may close its stdin: ignore EPIPE
        let _ = p.stdin.as_mut().unwrap().write_all(stdin);
    }
    p.close_stdin();
    let st = p.wait_exit(timeout);
    (p, st)
}

// ---------------------------------------------------------------------------
// The interactive controller

/// The 6th banner line (docs/protocol.md §7.2).
pub const BANNER_LAST: &str =
    "info\tInteractive mode.  Use ^D or 'exit' to terminate.  See 'man daemonproxy' for command syntax.";

enum Msg {
    Line(String),
    Eof,
}

enum Input {
    Pipe(ChildStdin),
    Sock(UnixStream),
}

/// `daemonproxy -i` with stdin/stdout (pipes, or one socket) as the
/// controller channel, stdout read line by line by a background thread.
pub struct Dp {
    child: Child,
    pid: i32,
    input: Option<Input>,
    rx: Receiver<Msg>,
    /// Lines received but not yet consumed (pushed back by `peek`-style
    /// helpers).
    pending: VecDeque<String>,
    eof: bool,
    /// Every stdout line received so far (for failure messages).
    pub seen: Vec<String>,
    pub err: Collector,
    token: usize,
    pub dir: TempDir,
    /// The 6 banner lines.
    pub banner: Vec<String>,
}

fn line_reader<R: Read + Send + 'static>(r: R, tx: Sender<Msg>) {
    thread::spawn(move || {
        let mut r = BufReader::new(r);
        loop {
            let mut buf = Vec::new();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(Msg::Eof);
                    return;
                }
                Ok(_) => {
                    let complete = buf.last() == Some(&b'\n');
                    if complete {
                        buf.pop();
                    }
                    let mut s = String::from_utf8_lossy(&buf).into_owned();
                    if !complete {
                        s.push_str("<partial line at EOF>");
                    }
                    if tx.send(Msg::Line(s)).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// Checks the first banner line: `info\tdaemonproxy version X.Y.Z<SUFFIX>
/// (git <8 hex>[+])`; returns the version string.
pub fn check_banner_first(line: &str) -> String {
    let rest =
        line.strip_prefix("info\tdaemonproxy version ").unwrap_or_else(|| panic!("banner line 1 {:?}", vis(line)));
    let (ver, git) = rest.split_once(" (git ").unwrap_or_else(|| panic!("banner line 1 {:?}", vis(line)));
    check_version(ver);
    let git = git.strip_suffix(')').unwrap_or_else(|| panic!("banner line 1 {:?}", vis(line)));
    let hex = git.strip_suffix('+').unwrap_or(git);
    assert!(
        hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "banner git id must be 8 hex digits: {:?}",
        vis(line)
    );
    ver.to_string()
}

/// Checks `MAJOR.MINOR.PATCH<SUFFIX>` (no spaces) and that it is ≥ 1.1.
pub fn check_version(ver: &str) {
    assert!(!ver.contains(' ') && !ver.contains('\t'), "version has spaces: {ver:?}");
    let mut parts = ver.splitn(3, '.');
    let major: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad version {ver:?}"));
    let minor: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad version {ver:?}"));
    let patch = parts.next().unwrap_or_else(|| panic!("bad version {ver:?}"));
    let digits: String = patch.chars().take_while(|c| c.is_ascii_digit()).collect();
    assert!(!digits.is_empty(), "bad patch level in version {ver:?}");
    assert!((major, minor) >= (1, 1), "version must be 1.1 or later: {ver:?}");
}

impl Dp {
    /// `daemonproxy -i ARGS` in a fresh temp dir; reads and checks the banner.
    pub fn interactive(args: &[&str]) -> Dp {
        Dp::start_in(TempDir::new("i"), args, false, &[])
    }

    /// `daemonproxy -i ARGS` that inherits extra descriptors (see
    /// `inherit`).
    pub fn interactive_inherit(args: &[&str], fds: &[(i32, i32)]) -> Dp {
        Dp::start_in(TempDir::new("ih"), args, false, fds)
    }

    /// Same, in a given directory.
    pub fn interactive_in(dir: TempDir, args: &[&str]) -> Dp {
        Dp::start_in(dir, args, false, &[])
    }

    /// `daemonproxy -i ARGS` whose stdin and stdout are one end of a unix
    /// stream socketpair (so `fd.take` can pass descriptors).
    pub fn interactive_socket(args: &[&str]) -> Dp {
        Dp::start_in(TempDir::new("is"), args, true, &[])
    }

    /// `WRAPPER... daemonproxy -i ARGS` in `dir` (see `command_under`), for
    /// instance as PID 1 of a namespace; `pid()` is then the wrapper's pid.
    pub fn interactive_under(wrapper: &[&str], dir: TempDir, args: &[&str]) -> Dp {
        Dp::start_under(wrapper, dir, args, false, &[])
    }

    fn start_in(dir: TempDir, args: &[&str], socket: bool, fds: &[(i32, i32)]) -> Dp {
        Dp::start_under(&[], dir, args, socket, fds)
    }

    /// `daemonproxy -i ARGS` in `dir`, with `setup` applied to the command
    /// before it starts (for instance a `pre_exec` hook that sets rlimits
    /// or drops privileges, or another stderr, which is then not collected).
    pub fn interactive_with(dir: TempDir, args: &[&str], setup: impl FnOnce(&mut Command)) -> Dp {
        Dp::start_setup(bin(), &[], dir, args, false, &[], setup)
    }

    /// `daemonproxy -i ARGS` in `dir` as `uid` with `RLIMIT_NPROC` =
    /// `nproc` (see `unprivileged`). The binary is copied into `dir` first:
    /// the build directory may be closed to other users (a clone under
    /// /root).
    pub fn interactive_as(dir: TempDir, args: &[&str], uid: u32, nproc: u64) -> Dp {
        let copy = dir.join("daemonproxy");
        fs::copy(bin(), &copy).expect("copy the binary for another uid");
        let path = dir.path().to_path_buf();
        let copy = copy.to_str().expect("a UTF-8 temp path").to_string();
        Dp::start_setup(&copy, &[], dir, args, false, &[], |c| unprivileged(c, &path, uid, nproc))
    }

    fn start_under(wrapper: &[&str], dir: TempDir, args: &[&str], socket: bool, fds: &[(i32, i32)]) -> Dp {
        Dp::start_setup(bin(), wrapper, dir, args, socket, fds, |_| {})
    }

    #[allow(clippy::too_many_arguments)]
    fn start_setup(
        bin: &str,
        wrapper: &[&str],
        dir: TempDir,
        args: &[&str],
        socket: bool,
        fds: &[(i32, i32)],
        setup: impl FnOnce(&mut Command),
    ) -> Dp {
        let mut all = vec!["-i"];
        all.extend_from_slice(args);
        let mut c = command_of(bin, wrapper, dir.path(), &all);
        if !fds.is_empty() {
            inherit(&mut c, fds);
        }
        c.stderr(Stdio::piped());
        setup(&mut c);
        let (tx, rx) = mpsc::channel();
        let (mut child, input) = if socket {
            let (ours, theirs) = UnixStream::pair().expect("socketpair");
            let theirs2 = theirs.try_clone().unwrap();
            c.stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
                .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs2)));
            let child = c.spawn().expect("spawn daemonproxy");
            drop(c); // closes our copies of the child's end
            line_reader(ours.try_clone().unwrap(), tx);
            (child, Input::Sock(ours))
        } else {
            c.stdin(Stdio::piped()).stdout(Stdio::piped());
            let mut child = c.spawn().expect("spawn daemonproxy");
            line_reader(child.stdout.take().unwrap(), tx);
            let stdin = child.stdin.take().unwrap();
            (child, Input::Pipe(stdin))
        };
        let pid = child.id() as i32;
        // `setup` may have sent stderr elsewhere: nothing to collect then.
        let err = child.stderr.take().map(Collector::spawn).unwrap_or_default();
        let mut dp = Dp {
            child,
            pid,
            input: Some(input),
            rx,
            pending: VecDeque::new(),
            eof: false,
            seen: Vec::new(),
            err,
            token: 0,
            dir,
            banner: Vec::new(),
        };
        for i in 0..6 {
            let l = dp
                .recv(T)
                .unwrap_or_else(|| panic!("no banner line {} from daemonproxy -i; stderr:\n{}", i + 1, dp.err.text()));
            dp.banner.push(l);
        }
        check_banner_first(&dp.banner[0]);
        for l in &dp.banner[1..5] {
            assert!(l.starts_with("info\t"), "banner line {:?} must start with info\\t", vis(l));
        }
        assert_eq!(dp.banner[5], BANNER_LAST, "last banner line");
        dp
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends one line (an LF is added).
    pub fn send(&mut self, line: &str) {
        let mut b = line.as_bytes().to_vec();
        b.push(b'\n');
        self.send_raw(&b);
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let r = match self.input.as_mut().expect("input already closed") {
            Input::Pipe(p) => p.write_all(bytes).and_then(|_| p.flush()),
            Input::Sock(s) => s.write_all(bytes),
        };
        if let Err(e) = r {
            panic!("writing to daemonproxy failed: {e}; stderr:\n{}", self.err.text());
        }
    }

    /// Sends `line` + LF with one descriptor attached as `SCM_RIGHTS`
    /// (socket mode only).
    pub fn send_with_fd(&mut self, line: &str, fd: i32) {
        let sock = match self.input.as_ref() {
            Some(Input::Sock(s)) => s.as_raw_fd(),
            _ => panic!("send_with_fd needs interactive_socket"),
        };
        let mut data = line.as_bytes().to_vec();
        data.push(b'\n');
        // SAFETY: we build a msghdr over local buffers that outlive the call.
        unsafe {
            let space = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as usize;
            let mut cbuf = vec![0u8; space];
            let mut iov = libc::iovec { iov_base: data.as_mut_ptr() as *mut libc::c_void, iov_len: data.len() };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = space as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
            std::ptr::copy_nonoverlapping(&fd as *const i32 as *const u8, libc::CMSG_DATA(cmsg), 4);
            let n = libc::sendmsg(sock, &msg, 0);
            assert_eq!(n, data.len() as isize, "sendmsg: {}", std::io::Error::last_os_error());
        }
    }

    /// Closes the controller input (EOF for the daemon).
    pub fn close_stdin(&mut self) {
        if let Some(Input::Sock(s)) = self.input.as_ref() {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        self.input = None;
    }

    /// Next stdout line, or None after `timeout` or at EOF.
    pub fn recv(&mut self, timeout: Duration) -> Option<String> {
        if let Some(l) = self.pending.pop_front() {
            return Some(l);
        }
        if self.eof {
            return None;
        }
        match self.rx.recv_timeout(timeout) {
            Ok(Msg::Line(l)) => {
                self.seen.push(l.clone());
                Some(l)
            }
            Ok(Msg::Eof) => {
                self.eof = true;
                None
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                self.eof = true;
                None
            }
        }
    }

    fn context(&self) -> String {
        let n = self.seen.len();
        let tail = &self.seen[n.saturating_sub(25)..];
        format!(
            "\n  last stdout lines:\n{}  stderr (tail):\n{}",
            vis_lines(tail),
            vis_lines(&{
                let e = self.err.lines();
                let k = e.len();
                e[k.saturating_sub(25)..].to_vec()
            })
        )
    }

    /// The next line must come within T and match `pat`.
    pub fn expect(&mut self, pat: &str) -> String {
        match self.recv(T) {
            Some(l) if matches(pat, &l) => l,
            Some(l) => panic!("expected {:?}, got {:?}{}", vis(pat), vis(&l), self.context()),
            None => panic!("expected {:?}, got nothing (eof={}){}", vis(pat), self.eof, self.context()),
        }
    }

    /// Lines must come in exactly this order.
    pub fn expect_seq(&mut self, pats: &[&str]) -> Vec<String> {
        pats.iter().map(|p| self.expect(p)).collect()
    }

    /// Consumes lines until one satisfies `pred` (within `timeout`); returns
    /// the lines consumed, the matching one last.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, mut pred: impl FnMut(&str) -> bool) -> Vec<String> {
        let end = Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Some(l) => {
                    let hit = pred(&l);
                    got.push(l);
                    if hit {
                        return got;
                    }
                }
                None => panic!(
                    "timed out ({timeout:?}) waiting for {what}; consumed:\n{}{}",
                    vis_lines(&got),
                    self.context()
                ),
            }
        }
    }

    /// Consumes lines until one matches the pattern; returns that line.
    pub fn wait_match(&mut self, pat: &str, timeout: Duration) -> String {
        let v = self.wait_for(&vis(pat), timeout, |l| matches(pat, l));
        v.last().unwrap().clone()
    }

    /// Puts lines back in front of the stream.
    pub fn unread(&mut self, lines: Vec<String>) {
        for l in lines.into_iter().rev() {
            self.pending.push_front(l);
        }
    }

    /// Sends `echo\tTOKEN` and returns every line received before TOKEN.
    pub fn sync(&mut self) -> Vec<String> {
        self.token += 1;
        let tok = format!("sync-token-{}", self.token);
        self.send(&format!("echo\t{tok}"));
        let mut v = self.wait_for(&tok, T, |l| l == tok);
        v.pop();
        v
    }

    /// Syncs repeatedly (every 50 ms) until a line matching `pat` has
    /// arrived; returns every line received meanwhile (sync tokens
    /// excluded). Used for `signal` lines, which reach a controller before
    /// its next command step.
    pub fn sync_until(&mut self, pat: &str, timeout: Duration) -> Vec<String> {
        let end = Instant::now() + timeout;
        let mut all = Vec::new();
        loop {
            let v = self.sync();
            let hit = v.iter().any(|l| matches(pat, l));
            all.extend(v);
            if hit {
                return all;
            }
            if Instant::now() >= end {
                panic!("no line {:?} within {timeout:?}; got:\n{}{}", vis(pat), vis_lines(&all), self.context());
            }
            thread::sleep(ms(50));
        }
    }

    /// How long one `echo` takes to come back (lines before it are
    /// dropped).
    pub fn rtt(&mut self) -> Duration {
        let t = Instant::now();
        self.sync();
        t.elapsed()
    }

    /// `sync()`, and the lines before the token must match `pats` exactly.
    pub fn sync_expect(&mut self, pats: &[&str]) -> Vec<String> {
        let v = self.sync();
        let ctx = self.context();
        assert_lines(&v, pats, &format!("lines before sync token{ctx}"));
        v
    }

    /// Like `sync_expect`, ignoring lines for which `ignore` is true (e.g.
    /// asynchronous `up`/`down` events); returns the ignored lines.
    pub fn sync_expect_ignoring(&mut self, pats: &[&str], ignore: impl Fn(&str) -> bool) -> Vec<String> {
        let v = self.sync();
        let (ign, keep): (Vec<String>, Vec<String>) = v.into_iter().partition(|l| ignore(l));
        let ctx = self.context();
        assert_lines(&keep, pats, &format!("lines before sync token{ctx}"));
        ign
    }

    /// Sends `line` and expects exactly `pats` before the next sync token.
    pub fn cmd(&mut self, line: &str, pats: &[&str]) -> Vec<String> {
        self.send(line);
        self.sync_expect(pats)
    }

    /// Sends `line` and expects exactly the docs/protocol.md §2.7 error for `msg`.
    pub fn cmd_err(&mut self, line: &str, msg: &str) {
        let e = err_for(msg, line);
        self.send(line);
        self.sync_expect(&[&e]);
    }

    /// Sends `statedump` and returns its lines (up to a sync token).
    pub fn statedump(&mut self) -> Vec<String> {
        self.send("statedump");
        self.sync()
    }

    /// Defines a service's args and consumes the broadcast.
    pub fn args(&mut self, name: &str, args: &str) {
        let l = format!("service.args\t{name}\t{args}");
        self.send(&l);
        self.expect(&l);
    }

    /// Defines a service's fds and consumes the broadcast (the handles must
    /// exist or warnings are expected by the caller instead).
    pub fn fds(&mut self, name: &str, fds: &str) {
        let l = format!("service.fds\t{name}\t{fds}");
        self.send(&l);
        self.expect(&l);
    }

    /// `service.start NAME`; consumes the `start` line and waits for `up`;
    /// returns the pid.
    pub fn start(&mut self, name: &str) -> i32 {
        self.send(&format!("service.start\t{name}"));
        self.expect(&format!("service.state\t{name}\tstart\t*\t-\t-\t-\t-\t-"));
        let l = self.wait_match(&format!("service.state\t{name}\tup\t*\t*\t-\t-\t0\t-"), T);
        field_i64(&l, 4) as i32
    }

    /// Waits for the `down` line of a service; returns it.
    pub fn wait_down(&mut self, name: &str, timeout: Duration) -> String {
        let p = format!("service.state\t{name}\tdown\t");
        let v = self.wait_for(&format!("{name} down"), timeout, |l| l.starts_with(&p));
        v.last().unwrap().clone()
    }

    /// Waits for the `up` line of a service; returns it.
    pub fn wait_up(&mut self, name: &str, timeout: Duration) -> String {
        let p = format!("service.state\t{name}\tup\t");
        let v = self.wait_for(&format!("{name} up"), timeout, |l| l.starts_with(&p));
        v.last().unwrap().clone()
    }

    /// Stderr lines so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.err.lines()
    }

    /// Waits until stderr has a line equal to `line`.
    pub fn wait_stderr(&self, line: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.err.lines().iter().any(|l| l == line))
    }

    /// Asserts that stderr gets a line equal to `line` within T.
    pub fn expect_stderr(&self, line: &str) {
        if !self.wait_stderr(line, T) {
            panic!("stderr never showed {:?}; stderr:\n{}", vis(line), vis_lines(&self.err.lines()));
        }
    }

    /// How many stderr lines equal `line`.
    pub fn stderr_count(&self, line: &str) -> usize {
        self.err.lines().iter().filter(|l| *l == line).count()
    }

    /// Waits for the daemon to exit (and for its stderr to be read: a
    /// loaded machine may run the reader thread late).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match wait_child(&mut self.child, timeout) {
            Some(st) => {
                self.err.wait_eof(secs(2));
                st
            }
            None => panic!("daemonproxy did not exit within {timeout:?}{}", self.context()),
        }
    }

    /// Whether the daemon is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Reads stdout to EOF (bounded by `timeout`), returns the lines.
    pub fn read_to_eof(&mut self, timeout: Duration) -> Vec<String> {
        let end = Instant::now() + timeout;
        let mut v = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("no EOF on stdout within {timeout:?}; read:\n{}", vis_lines(&v));
            }
            match self.recv(left) {
                Some(l) => v.push(l),
                None if self.eof => return v,
                None => {}
            }
        }
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: i32) {
        assert!(kill(self.pid, sig), "kill daemonproxy");
    }

    /// Closes input, waits for exit and returns (status, rest of stdout).
    pub fn finish(&mut self) -> (ExitStatus, Vec<String>) {
        self.close_stdin();
        let st = self.wait_exit(T);
        let rest = self.read_to_eof(T);
        (st, rest)
    }
}

impl Drop for Dp {
    fn drop(&mut self) {
        self.input = None;
        kill_group(self.pid);
        let _ = wait_child(&mut self.child, secs(5));
    }
}
