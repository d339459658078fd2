//! Nothing on the event loop's path can block (docs/nonblocking.md; issue
//! 14): each test tries one trick that would make a careless supervisor
//! wait for ever — a full log while a child fails, a fatal signal with the
//! console stopped, FIFOs and pipes without a peer, a socket whose backlog
//! is full — while a second controller on the control socket measures its
//! `echo` round trips the whole time; then the effect of the trick is
//! checked (the failed child is reported, the handle works, the error is
//! the right one).

mod util;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use util::*;

/// A round trip that never came back is recorded as this long.
const LOST: Duration = Duration::from_secs(2);

/// A second controller that sends `echo` every 5 ms and times each answer
/// until it is stopped.
struct Probe {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Vec<Duration>>,
}

impl Probe {
    fn start(sock: &Path) -> Probe {
        let s = UnixStream::connect(sock).unwrap_or_else(|e| panic!("connect {}: {e}", sock.display()));
        s.set_read_timeout(Some(LOST)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            let mut rtts = Vec::new();
            let mut n = 0u64;
            let mut line = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                n += 1;
                let token = format!("probe-{n}");
                let t = Instant::now();
                if w.write_all(format!("echo\t{token}\n").as_bytes()).is_err() {
                    rtts.push(LOST);
                    break;
                }
                loop {
                    line.clear();
                    match r.read_until(b'\n', &mut line) {
                        Ok(0) => {
                            rtts.push(LOST);
                            return rtts;
                        }
                        Ok(_) if line.strip_suffix(b"\n") == Some(token.as_bytes()) => {
                            rtts.push(t.elapsed());
                            break;
                        }
                        Ok(_) => {}
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                            rtts.push(LOST);
                            return rtts;
                        }
                        Err(_) => {
                            rtts.push(LOST);
                            return rtts;
                        }
                    }
                }
                if n == 1 {
                    let _ = tx.send(());
                }
                thread::sleep(ms(5));
            }
            rtts
        });
        // The first answer means the probe holds its controller slot.
        rx.recv_timeout(T).expect("the probe's first echo never came back");
        Probe { stop, thread }
    }

    fn finish(self) -> Vec<Duration> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("probe thread")
    }
}

/// `daemonproxy -i -S ctl.sock ARGS`, and the socket's path.
fn daemon(args: &[&str]) -> (Dp, PathBuf) {
    let mut all = vec!["-S", "ctl.sock"];
    all.extend_from_slice(args);
    let dp = Dp::interactive(&all);
    let sock = dp.dir.join("ctl.sock");
    (dp, sock)
}

/// Round trips while a trick is played: none over 100 ms (what a loop
/// that never blocks must give; a blocked one gives 2 s, the probe's
/// patience) and a median under 10 ms. Prints the figures.
fn assert_never_blocked(rtts: &[Duration], what: &str) {
    let mut v = rtts.to_vec();
    v.sort();
    let (med, p95, max) = (v[v.len() / 2], v[v.len() * 95 / 100], v[v.len() - 1]);
    println!("{what}: {} echo round trips, median {med:?}, p95 {p95:?}, max {max:?}", v.len());
    assert!(max < ms(100), "{what}: a round trip of {max:?} (median {med:?}, p95 {p95:?})");
    assert!(med < ms(10), "{what}: median round trip {med:?}");
}

/// Runs `attack` while a probe measures round trips for it and 300 ms
/// after; asserts they stayed short (see `assert_never_blocked`).
fn during(dp: &mut Dp, sock: &Path, what: &str, attack: impl FnOnce(&mut Dp)) {
    let probe = Probe::start(sock);
    thread::sleep(ms(50));
    attack(dp);
    thread::sleep(ms(300));
    let rtts = probe.finish();
    assert_never_blocked(&rtts, what);
}

/// Points the log at a pipe nobody reads, and fills it: `log.r` is held
/// by daemonproxy only, a service writes zeros into `log.w` until it
/// blocks.
fn log_to_full_pipe(dp: &mut Dp) {
    dp.cmd("fd.pipe\tlog.r\tlog.w", &["fd.state\tlog.r\tpipe\tfrom\tlog.w", "fd.state\tlog.w\tpipe\tto\tlog.r"]);
    dp.args("filler", "cat\t/dev/zero");
    dp.fds("filler", "null\tlog.w\tnull");
    dp.start("filler");
    thread::sleep(ms(200));
    dp.cmd("log.dest\tfd\tlog.w", &[]);
}

/// The down line of a service that failed before running its program: the
/// exit code 3 of a failed exec, or SIGABRT for a missing handle.
fn expect_failed(dp: &mut Dp, name: &str, how: &str) {
    let l = dp.wait_down(name, T);
    assert!(l.contains(how), "{name} must go down with {how:?}: {:?}", vis(&l));
}

#[test]
fn exec_failure_while_the_log_is_full() {
    let (mut dp, sock) = daemon(&[]);
    log_to_full_pipe(&mut dp);
    dp.args("bad", "/nonexistent/program");
    during(&mut dp, &sock, "a failed exec with a full log", |dp| {
        dp.send("service.start\tbad");
        expect_failed(dp, "bad", "\texit\t3\t");
    });
    // and again, many times over: nothing accumulates
    dp.send("service.auto_up\tbad\t0.05\talways");
    dp.sync_expect_ignoring(&["service.auto_up\tbad\t0.05\talways"], |l| l.starts_with("service.state\tbad\t"));
    during(&mut dp, &sock, "failed execs every 50 ms with a full log", |_| thread::sleep(ms(500)));
    assert!(dp.running());
}

/// A service `nofd` whose `service.fds` names a handle that does not exist.
fn define_nofd(dp: &mut Dp) {
    dp.args("nofd", "true");
    dp.cmd(
        "service.fds\tnofd\tnull\tno.such.handle\tnull",
        &["warning\tfd \"no.such.handle\" is not yet defined", "service.fds\tnofd\tnull\tno.such.handle\tnull"],
    );
}

#[test]
fn missing_handle_while_the_log_is_full() {
    let (mut dp, sock) = daemon(&[]);
    log_to_full_pipe(&mut dp);
    define_nofd(&mut dp);
    during(&mut dp, &sock, "a missing handle at exec time with a full log", |dp| {
        dp.send("service.start\tnofd");
        expect_failed(dp, "nofd", "\tsignal\tSIGABRT\t");
    });
}

/// Points the log at a terminal whose output is stopped with Ctrl-S
/// (`tcflow(TCOOFF)`), the way a console daemonproxy logs to can be stopped
/// by whoever sits at it: every write to it waits until output is resumed.
/// Returns the pty's two ends, which must stay open.
fn log_to_stopped_terminal(dp: &mut Dp) -> (OwnedFd, OwnedFd) {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let tty = std::fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd())).unwrap();
    let tty = tty.to_string_lossy();
    // SAFETY: a valid tty descriptor; TCOOFF suspends its output.
    assert_eq!(unsafe { libc::tcflow(pty.slave.as_raw_fd(), libc::TCOOFF) }, 0);
    dp.cmd(&format!("fd.open\ttty\twrite\t{tty}"), &[&format!("fd.state\ttty\tfile\twrite\t{tty}")]);
    dp.cmd("log.dest\tfd\ttty", &[]);
    (pty.master, pty.slave)
}

#[test]
fn failed_children_while_the_console_is_stopped() {
    let (mut dp, sock) = daemon(&[]);
    let _pty = log_to_stopped_terminal(&mut dp);
    dp.args("bad", "/nonexistent/program");
    define_nofd(&mut dp);
    during(&mut dp, &sock, "failed children with the console stopped", |dp| {
        dp.send("service.start\tbad");
        expect_failed(dp, "bad", "\texit\t3\t");
        dp.send("service.start\tnofd");
        expect_failed(dp, "nofd", "\tsignal\tSIGABRT\t");
    });
}

#[test]
fn fatal_signal_while_the_log_is_full() {
    // Guarded, the fatal path logs and goes on; with an exit program that
    // cannot be run it writes three lines. None of them may wait.
    let (mut dp, sock) = daemon(&["--exit-guard", "7", "-E", "/nonexistent/exit-program"]);
    log_to_full_pipe(&mut dp);
    let pid = dp.pid();
    during(&mut dp, &sock, "SIGABRT with a full log", |_| {
        assert!(kill(pid, libc::SIGABRT));
    });
    assert!(dp.running(), "guarded daemonproxy must go on");
    dp.sync_expect_ignoring(&[], |_| true);
}

#[test]
fn fatal_signal_while_the_console_is_stopped() {
    let (mut dp, sock) = daemon(&["--exit-guard", "7"]);
    let _pty = log_to_stopped_terminal(&mut dp);
    let pid = dp.pid();
    during(&mut dp, &sock, "SIGSEGV with the console stopped", |_| {
        assert!(kill(pid, libc::SIGSEGV));
    });
    assert!(dp.running(), "guarded daemonproxy must go on");
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

#[test]
fn fifo_without_a_writer_opens_for_reading_at_once() {
    let (mut dp, sock) = daemon(&[]);
    let fifo = dp.dir.join("in.fifo");
    mkfifo(&fifo);
    during(&mut dp, &sock, "fd.open read of a FIFO without a writer", |dp| {
        dp.cmd("fd.open\tf\tread\tin.fifo", &["fd.state\tf\tfile\tread\tin.fifo"]);
    });
    // The handle is an ordinary blocking one (no O_NONBLOCK left on it): a
    // service reading it waits for data once a writer is there. (Before any
    // writer has opened the FIFO a reader gets end-of-file: fifo(7).)
    assert_eq!(handle_fd_flags(dp.pid(), &fifo) & libc::O_NONBLOCK, 0, "the handle must be blocking");
    let mut writer = std::fs::File::options().write(true).open(&fifo).unwrap();
    dp.cmd("fd.open\tout\twrite,create\tout.txt", &["fd.state\tout\tfile\twrite,create\tout.txt"]);
    dp.args("reader", "cat");
    dp.fds("reader", "f\tout\tnull");
    dp.start("reader");
    thread::sleep(ms(200));
    writer.write_all(b"through the fifo\n").unwrap();
    drop(writer);
    let l = dp.wait_down("reader", T);
    assert!(l.contains("\texit\t0\t"), "cat must read to the end and exit 0: {:?}", vis(&l));
    assert_eq!(dp.dir.read("out.txt"), "through the fifo\n");
}

#[test]
fn fifo_without_a_reader_fails_to_open_for_writing() {
    let (mut dp, sock) = daemon(&[]);
    mkfifo(&dp.dir.join("out.fifo"));
    during(&mut dp, &sock, "fd.open write of a FIFO without a reader", |dp| {
        dp.cmd_err("fd.open\tf\twrite\tout.fifo", "open failed: No such device or address");
    });
    // With a reader it opens, and it is not left non-blocking.
    let reader =
        std::fs::File::options().read(true).custom_flags(libc::O_NONBLOCK).open(dp.dir.join("out.fifo")).unwrap();
    dp.cmd("fd.open\tf\twrite\tout.fifo", &["fd.state\tf\tfile\twrite\tout.fifo"]);
    let fd = handle_fd_flags(dp.pid(), &dp.dir.join("out.fifo"));
    assert_eq!(fd & libc::O_NONBLOCK, 0, "the handle must be blocking unless nonblock was asked for");
    dp.cmd("fd.open\tg\twrite,nonblock\tout.fifo", &["fd.state\tg\tfile\twrite,nonblock\tout.fifo"]);
    drop(reader);
}

use std::os::unix::fs::OpenOptionsExt;

/// The file status flags of the descriptor of `pid` open on `path` (the
/// last one listed in /proc/PID/fd).
fn handle_fd_flags(pid: i32, path: &Path) -> i32 {
    let mut found = None;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        if std::fs::read_link(e.path()).ok().as_deref() == Some(path) {
            found = Some(e.file_name().to_string_lossy().into_owned());
        }
    }
    let fd = found.unwrap_or_else(|| panic!("{} is not open in {pid}", path.display()));
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
    let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap().trim();
    i32::from_str_radix(flags, 8).unwrap()
}

#[test]
fn failed_children_and_a_fatal_signal_while_a_datagram_log_is_full() {
    // The log on a unix datagram socketpair whose other end nobody reads:
    // writes wait for room in the peer's receive queue, a limit counted in
    // datagrams as well as bytes (unix(7)), not a pipe's buffer.
    let (mut dp, sock) = daemon(&["--exit-guard", "7"]);
    dp.cmd(
        "fd.pipe\tdg.r\tdg.w\tunix,dgram",
        &["fd.state\tdg.r\tpipe\tunix,dgram,to\tdg.w", "fd.state\tdg.w\tpipe\tunix,dgram,to\tdg.r"],
    );
    dp.args("filler", "sh\t-c\twhile :; do echo fill; done");
    dp.fds("filler", "null\tdg.w\tnull");
    dp.start("filler");
    thread::sleep(ms(200));
    dp.cmd("log.dest\tfd\tdg.w", &[]);
    dp.args("bad", "/nonexistent/program");
    let pid = dp.pid();
    during(&mut dp, &sock, "failed exec and SIGBUS with a full datagram log", |dp| {
        dp.send("service.start\tbad");
        expect_failed(dp, "bad", "\texit\t3\t");
        assert!(kill(pid, libc::SIGBUS));
    });
    assert!(dp.running(), "guarded daemonproxy must go on");
}

/// Fills the backlog of the listening socket at `path` with non-blocking
/// connections until one would block; returns them (they must stay open).
fn fill_backlog(path: &Path) -> Vec<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    let addr = UnixAddr::new(path).unwrap();
    let mut held = Vec::new();
    for _ in 0..100 {
        let s = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)
            .unwrap();
        match connect(s.as_raw_fd(), &addr) {
            Ok(()) => held.push(s),
            Err(nix::errno::Errno::EAGAIN) => return held,
            Err(e) => panic!("connect {}: {e}", path.display()),
        }
    }
    panic!("the backlog of {} never filled", path.display());
}

#[test]
fn binding_over_a_live_socket_with_a_full_backlog() {
    // Every controller slot taken (the -i controller and the probe), so
    // daemonproxy's own control socket keeps new connections in its
    // backlog; filled, a blocking connect to it would wait for ever — and
    // only daemonproxy itself could make room.
    let (mut dp, sock) = daemon(&["--controller-pool", "2"]);
    let probe = Probe::start(&sock);
    let held = fill_backlog(&sock);
    assert!(!held.is_empty());
    thread::sleep(ms(50));
    dp.cmd_err("fd.socket\tx\tunix,bind\tctl.sock", "bind: Address already in use");
    // A live listener of someone else's (our uid), backlog full too.
    let other = dp.dir.join("other.sock");
    let l = std::os::unix::net::UnixListener::bind(&other).unwrap();
    // SAFETY: listen(2) on our own socket; a backlog of 0 fills at once.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
    let held2 = fill_backlog(&other);
    dp.cmd_err("fd.socket\ty\tunix,listen\tother.sock", "bind: Address already in use");
    thread::sleep(ms(300));
    let rtts = probe.finish();
    assert_never_blocked(&rtts, "fd.socket over live sockets with full backlogs");
    assert!(other.exists() && sock.exists(), "a live socket is never removed");
    drop((held, held2, l));
}
