//! Controllers (docs/protocol.md §7, docs/protocol.md §3.10, docs/protocol.md §3.11, docs/protocol.md §3.15, docs/protocol.md §3.21; issue 3):
//! controller services that crash and resync, socket controllers with
//! flow control and overflow, `fd.take`, controller slots, peer-uid checks
//! and the control socket's life cycle — all with the real binary, real
//! children and real sockets.

mod util;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use util::*;

// ---------------------------------------------------------------------------
// A socket controller client

/// One connection to the control socket, read synchronously with timeouts
/// (so a test can stop reading to stall it).
struct Client {
    s: UnixStream,
    r: BufReader<UnixStream>,
    /// Bytes of a line not yet complete.
    part: Vec<u8>,
    eof: bool,
    token: usize,
    seen: Vec<String>,
}

impl Client {
    fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        let r = BufReader::with_capacity(1 << 16, s.try_clone().unwrap());
        Client { s, r, part: Vec::new(), eof: false, token: 0, seen: Vec::new() }
    }

    fn send(&mut self, line: &str) {
        let mut b = line.as_bytes().to_vec();
        b.push(b'\n');
        self.s.write_all(&b).unwrap_or_else(|e| panic!("write to control socket: {e}"));
    }

    /// Sends `line` + LF with one descriptor attached as `SCM_RIGHTS`.
    fn send_with_fd(&mut self, line: &str, fd: i32) {
        let mut data = line.as_bytes().to_vec();
        data.push(b'\n');
        // SAFETY: the msghdr points at local buffers that outlive the call.
        unsafe {
            let space = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as usize;
            let mut cbuf = vec![0u64; space.div_ceil(8)];
            let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
            std::ptr::copy_nonoverlapping((&raw const fd).cast::<u8>(), libc::CMSG_DATA(cmsg), 4);
            let n = libc::sendmsg(self.s.as_raw_fd(), &msg, 0);
            assert_eq!(n, data.len() as isize, "sendmsg: {}", std::io::Error::last_os_error());
        }
    }

    /// Next line, or None after `timeout` or at EOF (then `eof` is set).
    fn recv(&mut self, timeout: Duration) -> Option<String> {
        if self.eof {
            return None;
        }
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now()).max(ms(1));
            self.s.set_read_timeout(Some(left)).unwrap();
            match self.r.read_until(b'\n', &mut self.part) {
                Ok(0) => {
                    self.eof = true;
                    return None;
                }
                Ok(_) if self.part.last() == Some(&b'\n') => {
                    self.part.pop();
                    let l = String::from_utf8_lossy(&self.part).into_owned();
                    self.part.clear();
                    self.seen.push(l.clone());
                    return Some(l);
                }
                Ok(_) => {
                    // EOF right after a partial line
                    let l = format!("{}<partial line at EOF>", String::from_utf8_lossy(&self.part));
                    self.part.clear();
                    self.eof = true;
                    return Some(l);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() >= end {
                        return None;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    // ECONNRESET: the daemon closed with input unread
                    self.eof = true;
                    return None;
                }
            }
        }
    }

    fn tail(&self) -> String {
        let n = self.seen.len();
        self.seen[n.saturating_sub(20)..].iter().map(|l| format!("    {}\n", vis(l))).collect()
    }

    fn expect(&mut self, pat: &str) -> String {
        match self.recv(T) {
            Some(l) if matches(pat, &l) => l,
            Some(l) => panic!("client: expected {:?}, got {:?}\n  last lines:\n{}", vis(pat), vis(&l), self.tail()),
            None => panic!(
                "client: expected {:?}, got nothing (eof={})\n  last lines:\n{}",
                vis(pat),
                self.eof,
                self.tail()
            ),
        }
    }

    /// Consumes lines until one equals `want`; returns the lines before it.
    fn until(&mut self, want: &str, timeout: Duration) -> Vec<String> {
        let end = Instant::now() + timeout;
        let mut v = Vec::new();
        loop {
            match self.recv(end.saturating_duration_since(Instant::now())) {
                Some(l) if l == want => return v,
                Some(l) => v.push(l),
                None => panic!(
                    "client: no {:?} within {timeout:?} (eof={}); got {} lines, last:\n{}",
                    vis(want),
                    self.eof,
                    v.len(),
                    self.tail()
                ),
            }
        }
    }

    /// Consumes lines until one matches `pat`; returns the lines before it.
    fn wait_match(&mut self, pat: &str, timeout: Duration) -> Vec<String> {
        let end = Instant::now() + timeout;
        let mut v = Vec::new();
        loop {
            match self.recv(end.saturating_duration_since(Instant::now())) {
                Some(l) if matches(pat, &l) => return v,
                Some(l) => v.push(l),
                None => panic!("client: no {:?} within {timeout:?} (eof={}); got {v:?}", vis(pat), self.eof),
            }
        }
    }

    fn sync(&mut self) -> Vec<String> {
        self.token += 1;
        let tok = format!("client-sync-{}", self.token);
        self.send(&format!("echo\t{tok}"));
        self.until(&tok, T)
    }

    fn sync_expect(&mut self, pats: &[&str]) -> Vec<String> {
        let v = self.sync();
        assert_lines(&v, pats, "client lines before sync token");
        v
    }

    fn statedump(&mut self) -> Vec<String> {
        self.send("statedump");
        self.sync()
    }
}

// ---------------------------------------------------------------------------
// Small helpers

/// Whether a unix socket bound to `path` is listening (`/proc/net/unix`,
/// flag `__SO_ACCEPTCON`): the path appears at bind(2), before listen(2),
/// and a connect in between is refused.
fn listening(path: &Path) -> bool {
    let t = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let p = path.to_str().unwrap();
    t.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() == 8 && f[7] == p && u32::from_str_radix(f[3], 16).is_ok_and(|fl| fl & 0x10000 != 0)
    })
}

/// Starts `daemonproxy -S ctl.sock ARGS` in a fresh directory and waits for
/// the socket; returns the process and the socket path.
fn socket_daemon(tag: &str, args: &[&str]) -> (Proc, PathBuf) {
    let dir = TempDir::new(tag);
    let sock = dir.join("ctl.sock");
    let mut all = vec!["-S", sock.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut p = Proc::start_in(dir, &all);
    if !wait_until(T, || listening(&sock)) {
        panic!("control socket never listened; running={}; stderr:\n{}", p.running(), p.err.text());
    }
    (p, sock)
}

fn wait_log(p: &Proc, line: &str) {
    if !wait_until(T, || p.err.lines().iter().any(|l| l == line)) {
        panic!("log never showed {:?}; log:\n{}", vis(line), p.err.text());
    }
}

/// A pipe (read end, write end), close-on-exec.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Reads from `fd` until `want` bytes arrived or `timeout` passed.
fn read_exact_timeout(fd: &OwnedFd, want: usize, timeout: Duration) -> Vec<u8> {
    let end = Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < want {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        if r <= 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        // SAFETY: reading into a local buffer of the given size.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        got.extend_from_slice(&buf[..n as usize]);
    }
    got
}

/// Statedump lines with the time-dependent fields (UPTIME, DOWNTIME) of
/// `service.state` lines blanked, for comparing dumps taken at different
/// moments.
fn masked(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let mut f: Vec<&str> = l.split('\t').collect();
            if f[0] == "service.state" && f.len() == 9 {
                f[7] = "#";
                f[8] = "#";
            }
            f.join("\t")
        })
        .collect()
}

/// What `/proc/PID/fd/N` points at, for N in 0..3.
fn fd_links(pid: i32) -> Vec<String> {
    (0..3)
        .map(|n| {
            std::fs::read_link(format!("/proc/{pid}/fd/{n}"))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|e| format!("<{e}>"))
        })
        .collect()
}

fn pid_of(dump: &[String], name: &str) -> i32 {
    let p = format!("service.state\t{name}\tup\t");
    let l = dump.iter().find(|l| l.starts_with(&p)).unwrap_or_else(|| panic!("{name} not up in dump {dump:#?}"));
    field_i64(l, 4) as i32
}

// ---------------------------------------------------------------------------
// 1. A controller service SIGKILLed mid-stream is restarted and resyncs

/// The controller records every line it reads in `out.<its pid>`; it is
/// slow on `pump` lines so that it is surely killed in the middle of them.
const CTL_SH: &str = "#!/bin/sh
printf 'statedump\\necho\\tdump-done\\n'
while IFS= read -r line; do
  printf '%s\\n' \"$line\" >> \"out.$$\"
  case \"$line\" in \"service.tags\tpump\t\"*) sleep 0.005 ;; esac
done
";

#[test]
fn killed_controller_service_restarts_and_resyncs() {
    let mut dp = Dp::interactive(&[]);
    dp.dir.script("ctl.sh", CTL_SH);
    dp.cmd("fd.pipe\tp.r\tp.w", &["fd.state\tp.r\tpipe\tfrom\tp.w", "fd.state\tp.w\tpipe\tto\tp.r"]);
    dp.args("svc1", "sleep\t60");
    dp.fds("svc1", "null\tp.w\tp.w");
    dp.args("svc2", "cat");
    dp.fds("svc2", "p.r\tnull\tnull");
    dp.args("svc3", "sleep\t60");
    dp.args("idle", "true");
    let pids: Vec<i32> = ["svc1", "svc2", "svc3"].iter().map(|n| dp.start(n)).collect();
    dp.args("ctl", "sh\t./ctl.sh");
    dp.fds("ctl", "control.event\tcontrol.cmd\tstderr");
    dp.send("service.auto_up\tctl\t1\talways");
    dp.expect("service.state\tctl\tstart\t*\t-\t-\t-\t-\t-");
    dp.expect("service.auto_up\tctl\t1\talways");
    let up1 = dp.wait_up("ctl", T);
    let ctl1 = field_i64(&up1, 4) as i32;
    let out1 = format!("out.{ctl1}");
    assert!(
        wait_until(T, || dp.dir.read(&out1).lines().any(|l| l == "dump-done")),
        "first controller never finished its statedump; it read:\n{}",
        dp.dir.read(&out1)
    );
    let before = dp.statedump();
    let links: Vec<Vec<String>> = pids.iter().map(|&p| fd_links(p)).collect();
    for (i, &p) in pids.iter().enumerate() {
        assert_eq!(pid_of(&before, &format!("svc{}", i + 1)), p);
    }

    // a stream of 2000 broadcasts; the controller reads them slowly
    let n_pump = 2000;
    let mut burst = String::new();
    for i in 0..n_pump {
        burst.push_str(&format!("service.tags\tpump\t{i}\n"));
    }
    dp.send_raw(burst.as_bytes());
    let pumped = dp.sync();
    assert_eq!(pumped.len(), n_pump, "observer must see every pump event");
    let pump_lines = |text: &str| text.lines().filter(|l| l.starts_with("service.tags\tpump\t")).count();
    assert!(
        wait_until(T, || pump_lines(&dp.dir.read(&out1)) > 0),
        "the controller never read a pump line:\n{}",
        dp.dir.read(&out1)
    );
    assert!(kill(ctl1, libc::SIGKILL));
    let read_before_kill = pump_lines(&dp.dir.read(&out1));
    assert!(read_before_kill < n_pump, "controller was not killed mid-stream ({read_before_kill} of {n_pump} read)");

    // auto_up restarts it: down (SIGKILL), start, up with a new pid
    let down = dp.wait_down("ctl", T);
    assert!(matches(&format!("service.state\tctl\tdown\t*\t{ctl1}\tsignal\tSIGKILL\t*\t*"), &down), "{}", vis(&down));
    dp.expect("service.state\tctl\tstart\t*\t-\t-\t-\t-\t-");
    let up2 = dp.wait_up("ctl", T);
    let ctl2 = field_i64(&up2, 4) as i32;
    assert_ne!(ctl2, ctl1);
    let out2 = format!("out.{ctl2}");
    assert!(
        wait_until(T, || dp.dir.read(&out2).lines().any(|l| l == "dump-done")),
        "restarted controller never finished its statedump; it read:\n{}",
        dp.dir.read(&out2)
    );
    let after = dp.statedump();

    // the restarted controller's own `up` comes first, then its dump
    let got: Vec<String> = dp.dir.read(&out2).lines().map(str::to_string).collect();
    assert!(matches(&format!("service.state\tctl\tup\t*\t{ctl2}\t-\t-\t0\t-"), &got[0]), "first line {:?}", got[0]);
    let done = got.iter().position(|l| l == "dump-done").unwrap();
    assert_eq!(done + 1, got.len(), "nothing may follow dump-done: {got:#?}");
    assert_eq!(masked(&got[1..done]), masked(&after), "the restarted controller's statedump must equal the observer's");

    // every other service still runs, same pid, same handles
    for (i, &p) in pids.iter().enumerate() {
        let name = format!("svc{}", i + 1);
        assert_eq!(pid_of(&after, &name), p, "{name} pid changed");
        assert!(alive(p), "{name} died");
        assert_eq!(fd_links(p), links[i], "{name} descriptors changed");
    }
    let keep = |d: &[String]| -> Vec<String> {
        masked(d).into_iter().filter(|l| !l.starts_with("service.state\tctl\t") && field(l, 1) != "pump").collect()
    };
    assert_eq!(keep(&before), keep(&after), "handles and other services must be unchanged");
    assert!(dp.running(), "daemon died");
}

// ---------------------------------------------------------------------------
// 2. Two socket controllers, one stalled, 100,000 events

#[test]
fn stalled_socket_controller_overflows_without_memory_growth() {
    const N: usize = 100_000;
    let (p, sock) = socket_daemon("two", &[]);
    let pid = p.pid();
    let mut a = Client::connect(&sock);
    a.sync_expect(&[]);
    let mut b = Client::connect(&sock);
    b.sync_expect(&[]);
    // the service exists before the run so the table does not grow
    a.send("service.tags\tsvc\tstart");
    a.expect("service.tags\tsvc\tstart");
    b.expect("service.tags\tsvc\tstart");
    // b stops reading from here on

    let rss0 = status_kb(pid, "VmRSS");
    let hwm0 = status_kb(pid, "VmHWM");
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    && let Some(l) = s.lines().find(|l| l.starts_with("VmRSS:"))
                    && let Some(v) = l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok())
                {
                    peak.fetch_max(v, Ordering::SeqCst);
                }
                thread::sleep(ms(5));
            }
        })
    };
    let start = Instant::now();
    let mut w = a.s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let mut buf = String::with_capacity(N * 24);
        for i in 0..N {
            buf.push_str(&format!("service.tags\tsvc\t{i}\n"));
        }
        buf.push_str("echo\tall-sent\n");
        w.write_all(buf.as_bytes()).expect("write commands");
    });
    // the reading controller gets every event, in order, and nothing else
    let end = Instant::now() + secs(25);
    for i in 0..N {
        let want = format!("service.tags\tsvc\t{i}");
        match a.recv(end.saturating_duration_since(Instant::now())) {
            Some(l) if l == want => {}
            other => panic!("reading controller: event {i}: expected {:?}, got {other:?}", vis(&want)),
        }
    }
    a.expect("all-sent");
    writer.join().unwrap();
    let took = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let rss1 = status_kb(pid, "VmRSS");
    let hwm1 = status_kb(pid, "VmHWM");
    let peak = peak.load(Ordering::SeqCst).max(rss1);
    assert!(
        peak < rss0 + 2048 && hwm1 < hwm0.max(rss0) + 2048,
        "daemon memory grew: VmRSS {rss0} kB -> peak {peak} kB (now {rss1}), VmHWM {hwm0} -> {hwm1} kB"
    );

    // the stalled controller: whole lines (a prefix of the stream), then
    // `overflow`, then a correct statedump
    let mut k = 0;
    loop {
        let l = b.recv(T).unwrap_or_else(|| panic!("stalled controller: nothing after {k} events (eof={})", b.eof));
        if l == "overflow" {
            break;
        }
        assert_eq!(l, format!("service.tags\tsvc\t{k}"), "stalled controller: line {k} is not the next whole event");
        k += 1;
    }
    assert!(k > 0 && k < N, "stalled controller got {k} events before overflow");
    let db = b.statedump();
    let da = a.statedump();
    assert!(da.contains(&format!("service.tags\tsvc\t{}", N - 1)), "reading controller's dump: {da:#?}");
    assert_eq!(db, da, "statedump after overflow must match the reading controller's view");
    assert!(took < secs(25), "100,000 events took {took:?}");
    drop(p);
}

// ---------------------------------------------------------------------------
// 3. fd.take over a socket controller

#[test]
fn fd_take_passes_a_pipe_end_a_service_writes_into() {
    let (p, sock) = socket_daemon("take", &[]);
    let mut c = Client::connect(&sock);
    let (r, w) = pipe();
    c.send_with_fd("fd.take\ttaken", w.as_raw_fd());
    drop(w);
    c.sync_expect(&["fd.state\ttaken\tfile\twrite\tunknown"]);
    c.send("fd.take\tagain");
    c.sync_expect(&[&err_for("No ancillary file descriptor received", "fd.take\tagain")]);
    c.send("service.args\tsvc\tsh\t-c\techo hello through taken; echo to stderr too >&2");
    c.expect("service.args\tsvc\tsh\t-c\techo hello through taken; echo to stderr too >&2");
    c.send("service.fds\tsvc\tnull\ttaken\ttaken");
    c.expect("service.fds\tsvc\tnull\ttaken\ttaken");
    c.send("service.start\tsvc");
    c.expect("service.state\tsvc\tstart\t*\t-\t-\t-\t-\t-");
    c.expect("service.state\tsvc\tup\t*\t*\t-\t-\t0\t-");
    c.expect("service.state\tsvc\tdown\t*\t*\texit\t0\t*\t*");
    let want = b"hello through taken\nto stderr too\n";
    let got = read_exact_timeout(&r, want.len(), T);
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
    // the daemon holds the write end: no EOF, nothing more
    assert!(read_exact_timeout(&r, 1, ms(200)).is_empty());
    c.send("fd.delete\ttaken");
    c.sync_expect(&["fd.state\ttaken\tdeleted"]);
    assert!(read_exact_timeout(&r, 1, T).is_empty(), "EOF once the daemon closed its copy");
    drop(p);
}

#[test]
fn fd_take_queue_limit_bad_name_and_leftovers() {
    let (p, sock) = socket_daemon("takeq", &[]);
    let mut c = Client::connect(&sock);
    // three descriptors with ordinary lines: the queue holds two
    let ends: Vec<(OwnedFd, OwnedFd)> = (0..3).map(|_| pipe()).collect();
    for (i, (_, w)) in ends.iter().enumerate() {
        c.send_with_fd(&format!("echo\tsent-{i}"), w.as_raw_fd());
    }
    let readers: Vec<OwnedFd> = ends.into_iter().map(|(r, _)| r).collect();
    c.sync_expect(&["sent-0", "sent-1", "sent-2"]);
    wait_log_prefix(&p, "error: No room for ancillary file descriptor ", 1);
    // the third was closed by the daemon: EOF on its read end
    assert!(read_exact_timeout(&readers[2], 1, T).is_empty());
    assert!(writers_closed(&readers[2]), "third descriptor must be closed");
    // a bad name consumes (and closes) the oldest
    c.send("fd.take\tbad name");
    c.sync_expect(&[&err_for("Invalid file descriptor name", "fd.take\tbad name")]);
    assert!(writers_closed(&readers[0]), "descriptor taken with a bad name must be closed");
    assert!(!writers_closed(&readers[1]), "second descriptor still queued");
    // the leftover is closed when the controller goes
    drop(c);
    wait_log_prefix(&p, "warning: closing leftover ancillary file descriptor ", 1);
    assert!(wait_until(T, || writers_closed(&readers[1])), "leftover descriptor must be closed");
    drop(p);
}

/// Whether every write end of the pipe whose read end is `r` is closed
/// (poll reports POLLHUP).
fn writers_closed(r: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd { fd: r.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n == 1 && pfd.revents & libc::POLLHUP != 0
}

fn wait_log_prefix(p: &Proc, prefix: &str, count: usize) {
    let n = || p.err.lines().iter().filter(|l| l.starts_with(prefix)).count();
    if !wait_until(T, || n() >= count) {
        panic!("log never showed {count} x {:?}; log:\n{}", vis(prefix), p.err.text());
    }
    thread::sleep(ms(100));
    assert_eq!(n(), count, "log lines starting with {:?}:\n{}", vis(prefix), p.err.text());
}

// ---------------------------------------------------------------------------
// 4. Controller slots

#[test]
fn third_connection_waits_and_controller_service_gets_retry() {
    let (mut p, sock) = socket_daemon("pool", &["--controller-pool", "2"]);
    let mut c1 = Client::connect(&sock);
    c1.sync_expect(&[]);
    let mut c2 = Client::connect(&sock);
    c2.sync_expect(&[]);
    // the third waits in the backlog
    let mut c3 = Client::connect(&sock);
    c3.send("echo\tthird");
    wait_log(&p, "warning: No free controllers to accept socket connection");
    assert_eq!(c3.recv(ms(300)), None, "third connection must not be served while both slots are taken");
    assert!(!c3.eof, "third connection must wait, not be closed");
    // ... and is served when one leaves
    drop(c1);
    assert_eq!(c3.recv(secs(6)).as_deref(), Some("third"), "third connection not served after a slot was freed");

    // a controller service while both slots are taken: F2
    c2.send("service.args\tctl\tsleep\t30");
    c2.expect("service.args\tctl\tsleep\t30");
    c2.send("service.fds\tctl\tcontrol.event\tcontrol.cmd\tstderr");
    c2.expect("service.fds\tctl\tcontrol.event\tcontrol.cmd\tstderr");
    c2.send("service.start\tctl");
    let s0 = c2.expect("service.state\tctl\tstart\t*\t-\t-\t-\t-\t-");
    let s1 = c2.expect("service.state\tctl\tstart\t*\t-\t-\t-\t-\t-");
    let (t0, t1) = (field_i64(&s0, 3), field_i64(&s1, 3));
    assert!((3..=4).contains(&(t1 - t0)), "retry start must be now+3: {t0} -> {t1}");
    c3.expect("service.args\tctl\tsleep\t30");
    c3.expect("service.fds\tctl\tcontrol.event\tcontrol.cmd\tstderr");
    c3.expect(&s0);
    c3.expect(&s1);
    wait_log(&p, "info: will retry in 3 seconds");
    let log = p.err.lines();
    let e = log.iter().position(|l| l == "error: can't allocate controller object");
    let i = log.iter().position(|l| l == "info: will retry in 3 seconds");
    assert!(matches!((e, i), (Some(e), Some(i)) if e < i), "F2 log lines missing or out of order:\n{}", p.err.text());
    // the daemon lives on
    c2.sync_expect(&[]);
    c3.sync_expect(&[]);
    assert!(p.running());
    assert!(log.iter().all(|l| !l.starts_with("fatal")), "log:\n{}", p.err.text());
    // once a slot is free, the retry forks it
    drop(c3);
    let skipped = c2.wait_match("service.state\tctl\tup\t*\t*\t-\t-\t0\t-", secs(6));
    assert!(skipped.is_empty(), "nothing but `up` expected before it: {skipped:?}");
    drop(p);
}

// ---------------------------------------------------------------------------
// 5. Peer uid

const PERL_CLIENT: &str = r#"
use IO::Socket::UNIX;
$SIG{PIPE} = 'IGNORE';
my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $ARGV[0]) or die "connect: $!\n";
$s->autoflush(1);
print $s "echo\tok\n";
alarm 5;
my $l = <$s>;
print defined $l ? $l : "EOF\n";
"#;

/// Runs the perl client as `nobody`; returns what it printed.
fn connect_as_nobody(sock: &Path) -> String {
    let dir = sock.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = Command::new("perl")
        .arg("-e")
        .arg(PERL_CLIENT)
        .arg(sock)
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run perl as nobody");
    assert!(out.status.success(), "perl client failed: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn connection_from_other_uid_is_refused() {
    let (mut p, sock) = socket_daemon("uid", &[]);
    assert_eq!(connect_as_nobody(&sock), "EOF\n", "a connection from uid 65534 must be closed unserved");
    wait_log(&p, "warning: refused control connection from uid 65534");
    // the daemon goes on and root is served
    let mut c = Client::connect(&sock);
    c.sync_expect(&[]);
    assert!(p.running());
}

#[test]
fn socket_allow_uid_accepts_that_uid() {
    let (mut p, sock) = socket_daemon("uidok", &["--socket-allow-uid", "65534"]);
    assert_eq!(connect_as_nobody(&sock), "ok\n");
    assert!(p.err.lines().iter().all(|l| !l.contains("refused")), "log:\n{}", p.err.text());
    assert!(p.running());
}

// ---------------------------------------------------------------------------
// 6. socket.create / socket.delete

fn mode_of(p: &Path) -> (bool, u32) {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.file_type().is_socket(), m.permissions().mode() & 0o7777)
}

#[test]
fn socket_create_and_delete() {
    let mut dp = Dp::interactive(&[]);
    let d = dp.dir.path().to_path_buf();
    // F3: a regular file is never replaced
    dp.dir.write("plain", "precious data\n");
    dp.cmd_err("socket.create\t-\tplain", "Failed to create control socket");
    assert_eq!(dp.dir.read("plain"), "precious data\n");
    // nor a directory
    std::fs::create_dir(d.join("adir")).unwrap();
    dp.cmd_err("socket.create\t-\tadir", "Failed to create control socket");
    assert!(d.join("adir").is_dir());
    // nor a socket owned by another uid
    drop(UnixListener::bind(d.join("theirs.sock")).unwrap());
    std::os::unix::fs::lchown(d.join("theirs.sock"), Some(65534), Some(65534)).unwrap();
    dp.cmd_err("socket.create\t-\ttheirs.sock", "Failed to create control socket");
    assert_eq!(std::fs::symlink_metadata(d.join("theirs.sock")).unwrap().uid(), 65534);
    // argument errors
    dp.cmd_err("socket.create\t-", "missing argument");
    dp.cmd_err("socket.create\tx\ts.sock", "Invalid options");
    dp.cmd_err("socket.create\t-\t", "Failed to create control socket");

    // a stale socket of ours is replaced; the new one is mode 0600
    drop(UnixListener::bind(d.join("stale.sock")).unwrap());
    assert!(UnixStream::connect(d.join("stale.sock")).is_err(), "stale socket must refuse connections");
    dp.cmd("socket.create\t-\tstale.sock", &[]);
    dp.expect_stderr(&format!("info: Unlinked control socket {}", "stale.sock"));
    assert_eq!(mode_of(&d.join("stale.sock")), (true, 0o600));
    let mut c = Client::connect(&d.join("stale.sock"));
    c.sync_expect(&[]);

    // a new socket.create closes the old one and unlinks its path
    dp.cmd("socket.create\t-\tnew.sock", &[]);
    assert_eq!(mode_of(&d.join("new.sock")), (true, 0o600));
    assert!(!d.join("stale.sock").exists(), "old control socket path must be unlinked");
    // logged once for the stale file, once for closing the old socket
    assert!(wait_until(T, || dp.stderr_count("info: Unlinked control socket stale.sock") == 2), "log:\n{}", {
        dp.stderr_lines().join("\n")
    });
    // accepted connections stay
    c.sync_expect(&[]);
    let mut c2 = Client::connect(&d.join("new.sock"));
    c2.sync_expect(&[]);

    // socket.delete unlinks; connections stay; a second delete is a no-op
    dp.cmd("socket.delete", &[]);
    assert!(!d.join("new.sock").exists(), "socket.delete must unlink the path");
    assert!(UnixStream::connect(d.join("new.sock")).is_err());
    c2.sync_expect(&[]);
    dp.cmd("socket.delete\tignored", &[]);
    assert!(dp.running());
}

#[test]
fn socket_delete_after_chdir_unlinks_only_its_own_socket() {
    // Issue 14 #12: a relative control socket path is remembered by the
    // directory it was bound in, not re-read against a later cwd.
    let mut dp = Dp::interactive(&[]);
    let d = dp.dir.path().to_path_buf();
    for sub in ["a", "b", "c"] {
        std::fs::create_dir(d.join(sub)).unwrap();
    }
    let theirs = UnixListener::bind(d.join("b/ctl.sock")).unwrap();
    dp.cmd("chdir\ta", &[]);
    dp.cmd("socket.create\t-\tctl.sock", &[]);
    assert!(d.join("a/ctl.sock").exists());
    dp.cmd("chdir\t../b", &[]);
    dp.cmd("socket.delete", &[]);
    assert!(!d.join("a/ctl.sock").exists(), "its own socket (a/ctl.sock) must be unlinked");
    assert!(d.join("b/ctl.sock").exists(), "another program's socket (b/ctl.sock) must stay");
    drop(UnixStream::connect(d.join("b/ctl.sock")).expect("theirs still listens"));
    // Our socket replaced by someone else's (same uid, same path): not ours
    // any more, so neither socket.delete nor the exit removes it.
    dp.cmd("chdir\t../c", &[]);
    dp.cmd("socket.create\t-\tctl.sock", &[]);
    std::fs::remove_file(d.join("c/ctl.sock")).unwrap();
    let replaced = UnixListener::bind(d.join("c/ctl.sock")).unwrap();
    dp.cmd("chdir\t..", &[]);
    dp.cmd("socket.delete", &[]);
    assert!(d.join("c/ctl.sock").exists(), "a socket that replaced ours must stay");
    // And at a normal exit ([EXT E6]), after another chdir.
    dp.cmd("socket.create\t-\ta/ctl2.sock", &[]);
    dp.cmd("chdir\tb", &[]);
    let (st, _) = dp.finish();
    assert_eq!(st.code(), Some(0));
    assert!(!d.join("a/ctl2.sock").exists(), "the exit unlinks its own socket");
    assert!(d.join("b/ctl.sock").exists() && d.join("c/ctl.sock").exists());
    drop((theirs, replaced));
}

/// Runs the perl client as `nobody` on a socket the daemon made
/// reachable itself (no chmod by the test); returns what it printed.
fn connect_as(uid: u32, sock: &Path) -> String {
    let out = Command::new("perl")
        .arg("-e")
        .arg(PERL_CLIENT)
        .arg(sock)
        .current_dir("/")
        .uid(uid)
        .gid(65534)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run perl as another uid");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() { text } else { format!("failed: {}", String::from_utf8_lossy(&out.stderr).trim()) }
}

#[test]
fn socket_mode_and_group_let_an_allowed_uid_in() {
    // Issue 14 #13: --socket-allow-uid alone leaves the socket 0600, so the
    // uid cannot even connect; --socket-mode and --socket-group make it
    // reachable, and SO_PEERCRED still decides who is served.
    let dir = TempDir::new("sockperm");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.join("ctl.sock");
    let s = sock.to_str().unwrap().to_string();
    let p = Proc::start_in(dir, &["-S", &s, "--socket-allow-uid", "65534"]);
    assert!(wait_until(T, || listening(&sock)), "no socket; stderr:\n{}", p.err.text());
    assert_eq!(mode_of(&sock), (true, 0o600));
    assert!(connect_as(65534, &sock).contains("Permission denied"), "0600 keeps uid 65534 out");
    drop(p);

    let dir = TempDir::new("sockperm2");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.join("ctl.sock");
    let s = sock.to_str().unwrap().to_string();
    let args = ["-S", &s, "--socket-allow-uid", "65534", "--socket-mode", "0660", "--socket-group", "65534"];
    let mut p = Proc::start_in(dir, &args);
    assert!(wait_until(T, || listening(&sock)), "no socket; stderr:\n{}", p.err.text());
    let m = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!((mode_of(&sock), m.gid()), ((true, 0o660), 65534));
    assert_eq!(connect_as(65534, &sock), "ok\n", "the allowed uid is served");
    // Another uid in the group reaches the socket but is not served.
    assert_eq!(connect_as(65533, &sock), "EOF\n");
    wait_log(&p, "warning: refused control connection from uid 65533");
    assert!(p.running());
    // socket.create from a controller gets the same mode and group.
    let mut c = Client::connect(&sock);
    c.send("socket.create\t-\tctl2.sock");
    c.sync_expect(&[]);
    let sock2 = sock.with_file_name("ctl2.sock");
    assert_eq!((mode_of(&sock2), std::fs::symlink_metadata(&sock2).unwrap().gid()), ((true, 0o660), 65534));
    assert_eq!(connect_as(65534, &sock2), "ok\n");
}

#[test]
fn dash_s_socket_is_mode_0600() {
    let (p, sock) = socket_daemon("mode", &[]);
    assert_eq!(mode_of(&sock), (true, 0o600));
    drop(p);
}

// ---------------------------------------------------------------------------
// 7. conn.event_timeout closes a stalled connection

#[test]
fn event_timeout_closes_stalled_connection() {
    let dir = TempDir::new("evto");
    let sock = dir.join("ctl.sock");
    let mut dp = Dp::interactive_in(dir, &["-S", sock.to_str().unwrap()]);
    let mut b = Client::connect(&sock);
    b.send("conn.event_timeout\t1\t2");
    b.sync_expect(&[]);
    // b (controller 1) stops reading; fill its socket with ~400 kB
    let tag = "t".repeat(990);
    let mut burst = String::new();
    for i in 0..400 {
        burst.push_str(&format!("service.tags\tbig\t{i:03}{tag}\n"));
    }
    dp.send_raw(burst.as_bytes());
    let got = dp.sync();
    assert_eq!(got.len(), 400, "the interactive controller is not slowed by the stalled one");
    let stalled = Instant::now();
    let closing = |l: &String| {
        l.strip_prefix("error: controller 1 blocked pipe for ")
            .and_then(|r| r.strip_suffix(" seconds, closing connection"))
            .and_then(|s| s.parse::<u64>().ok())
    };
    assert!(wait_until(secs(6), || dp.stderr_lines().iter().any(|l| closing(l).is_some())), "no close: {:?}", {
        dp.stderr_lines()
    });
    let waited = stalled.elapsed();
    let log = dp.stderr_lines();
    let s = log.iter().find_map(closing).unwrap();
    assert!((2..=3).contains(&s), "closed after {s} seconds");
    assert!(waited < secs(4), "closed only after {waited:?}");
    let warn: Vec<&String> = log.iter().filter(|l| l.starts_with("warning: controller 1 blocked pipe for ")).collect();
    assert_eq!(warn.len(), 1, "one RESET warning per episode (F13): {warn:?}");
    assert!(
        matches!(
            warn[0].as_str(),
            "warning: controller 1 blocked pipe for 1 seconds" | "warning: controller 1 blocked pipe for 2 seconds"
        ),
        "{warn:?}"
    );
    // b reads whole lines and then EOF
    let mut n = 0;
    while let Some(l) = b.recv(T) {
        assert!(
            l.starts_with("service.tags\tbig\t") && l.len() == "service.tags\tbig\t".len() + 3 + 990,
            "partial line {:?}",
            vis(&l)
        );
        n += 1;
    }
    assert!(b.eof, "connection must be closed");
    assert!(n < 400, "a closed connection cannot have got everything ({n})");
    // the daemon goes on, the slot is free again
    dp.sync_expect(&[]);
    let mut c = Client::connect(&sock);
    c.sync_expect(&[]);
    assert!(dp.running());
}

// ---------------------------------------------------------------------------
// 8. F23: a control.event-only service keeps its event stream

#[test]
fn command_only_controller_service_runs_commands() {
    let mut dp = Dp::interactive(&[]);
    dp.args("cmd", "sh\t-c\tprintf 'service.tags\\tfromcmd\\tx\\nbogus\\n'; exec sleep 30");
    dp.fds("cmd", "null\tcontrol.cmd\tstderr");
    dp.start("cmd");
    dp.expect("service.tags\tfromcmd\tx");
    // its error reply goes nowhere (no output side), the log has it
    dp.expect_stderr("error: controller[1] sent unknown command bogus");
    dp.sync_expect(&[]);
}

#[test]
fn event_only_controller_service_stays_open() {
    let mut dp = Dp::interactive(&["--controller-pool", "2"]);
    dp.cmd("fd.open\tevlog\twrite,create,trunc\tev.log", &["fd.state\tevlog\tfile\twrite,create,trunc\tev.log"]);
    dp.args("ev", "cat");
    dp.fds("ev", "control.event\tevlog\tstderr");
    let pid = dp.start("ev");
    dp.cmd("service.tags\tmark\tone", &["service.tags\tmark\tone"]);
    assert!(wait_until(T, || dp.dir.read("ev.log").lines().count() == 2), "ev.log: {:?}", dp.dir.read("ev.log"));
    thread::sleep(ms(1200));
    // still up (cat did not see EOF), still receiving
    dp.sync_expect(&[]);
    assert!(alive(pid));
    dp.cmd("service.tags\tmark\ttwo", &["service.tags\tmark\ttwo"]);
    assert!(wait_until(T, || dp.dir.read("ev.log").lines().count() == 3), "ev.log: {:?}", dp.dir.read("ev.log"));
    dp.send("service.signal\tev\tSIGTERM");
    let down = dp.wait_down("ev", T);
    assert!(matches(&format!("service.state\tev\tdown\t*\t{pid}\tsignal\tSIGTERM\t*\t*"), &down), "{}", vis(&down));
    let text = dp.dir.read("ev.log");
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert_lines(
        &lines,
        &[
            &format!("service.state\tev\tup\t*\t{pid}\t-\t-\t0\t-"),
            "service.tags\tmark\tone",
            "service.tags\tmark\ttwo",
        ],
        "events read by the control.event-only service",
    );
    // its slot went with it: with 2 slots (one is -i) it can start again
    let pid2 = dp.start("ev");
    assert_ne!(pid2, pid);
    dp.sync_expect(&[]);
    assert!(!dp.stderr_lines().iter().any(|l| l.contains("can't allocate controller object")));
    dp.send("service.signal\tev\tSIGKILL");
    dp.wait_down("ev", T);
}
