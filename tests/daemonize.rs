//! `-D` (docs/protocol.md §9.2, [FIX F4]): the parent prints the child's pid
//! without a newline and exits 0; the child runs on in its own session with
//! its original std streams replaced by `/dev/null`, serving the control
//! socket.

mod util;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use util::*;

/// Kills the daemonized child's process group if the test ends early.
struct Reaper(i32);

impl Drop for Reaper {
    fn drop(&mut self) {
        if self.0 > 1 && alive(self.0) {
            // SAFETY: the process group (= session) of the daemon we started.
            unsafe { libc::killpg(self.0, libc::SIGKILL) };
        }
    }
}

/// Field `n` (1-based, as in proc(5)) of `/proc/PID/stat`.
fn stat_field(pid: i32, n: usize) -> i64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // fields after the command name, which ends at the last ')'
    let rest = &s[s.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(n - 3).unwrap().parse().unwrap()
}

#[test]
fn daemonize_prints_pid_and_detaches() {
    let dir = TempDir::new("dmn");
    dir.write("conf", "service.tags\tmarker\tfrom-conf\n");
    let sock = dir.join("ctl.sock");
    let sock_s = sock.to_str().unwrap().to_string();
    let mut p = Proc::start_in(dir, &["-D", "-S", &sock_s, "-c", "conf"]);
    let st = p.wait_exit(T);
    assert!(p.out.wait_eof(T), "stdout must reach EOF: the child must not keep the original stdout");
    let out = p.out.text();
    let child: i32 = out.parse().unwrap_or_else(|_| panic!("stdout must be just the pid, no newline: {out:?}"));
    let _reaper = Reaper(child);
    assert_eq!(st.code(), Some(0), "parent exit status; stderr:\n{}", p.err.text());
    assert!(p.err.wait_eof(T), "stderr must reach EOF: the child must not keep the original stderr");
    assert_ne!(child, p.pid());
    assert!(alive(child), "daemonized child is gone; stderr:\n{}", p.err.text());

    // its own session (and process group), std fds on /dev/null
    assert_eq!(stat_field(child, 6), child as i64, "session id of the child");
    assert_eq!(stat_field(child, 5), child as i64, "process group of the child");
    for fd in 0..3 {
        let l = std::fs::read_link(format!("/proc/{child}/fd/{fd}")).unwrap();
        assert_eq!(l.to_str(), Some("/dev/null"), "fd {fd} of the child");
    }

    // it serves the socket, ran the config, and ends on `terminate 0`
    let mut s = UnixStream::connect(&sock).expect("connect to daemonized control socket");
    s.set_read_timeout(Some(T)).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    s.write_all(b"statedump\necho\tdump-done\n").unwrap();
    let mut dump = Vec::new();
    loop {
        let mut l = String::new();
        let n = r.read_line(&mut l).expect("read from daemonized controller");
        assert!(n > 0 && l.ends_with('\n'), "EOF before dump-done; got {dump:?}");
        l.pop();
        if l == "dump-done" {
            break;
        }
        dump.push(l);
    }
    assert!(dump.iter().any(|l| l == "service.tags\tmarker\tfrom-conf"), "config not run: {dump:?}");
    for h in ["stdin", "stdout", "stderr"] {
        assert!(dump.iter().any(|l| l.starts_with(&format!("fd.state\t{h}\t"))), "no {h} handle: {dump:?}");
    }
    s.write_all(b"terminate\t0\n").unwrap();
    assert!(wait_until(T, || !alive(child)), "daemonized child did not terminate");
}

#[test]
fn daemonize_is_ignored_with_interactive() {
    let mut dp = Dp::interactive(&["-D"]);
    dp.expect_stderr("warning: Ignoring --daemonize (see manual)");
    dp.sync_expect(&[]);
    assert!(dp.running(), "-D with -i must stay in the foreground");
    let (st, rest) = dp.finish();
    assert_eq!(st.code(), Some(0));
    assert!(rest.is_empty(), "{rest:?}");
}
