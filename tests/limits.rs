//! Resource exhaustion (issue 8): the real binary under real rlimits, set in
//! a pre-exec hook. RLIMIT_NOFILE of 32: `fd.open`, `fd.pipe`, `fd.socket`,
//! accepting a controller and starting a controller service fail with their
//! error lines and log messages, plain services still start, and freeing
//! handles makes everything work again — the connection that waited is
//! served. RLIMIT_NPROC reached (as an unprivileged uid: root is exempt): a
//! failed fork is a `start` rescheduled 3 s later, and auto-up gets its
//! service up once a process is gone; a fork bomb within the limit leaves
//! the daemon responsive, and once it is killed everything recovers.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use util::*;

const EMFILE: &str = "Too many open files";

/// Every line before the next sync token must match `pat` (a command that
/// can succeed or fail); returns whether it failed with `msg`.
fn ok_or_err(dp: &mut Dp, line: &str, ok: &[&str], msg: &str) -> bool {
    dp.send(line);
    let got = dp.sync();
    let e = err_for(msg, line);
    if got.len() == 1 && got[0] == e {
        return true;
    }
    assert_lines(&got, ok, line);
    false
}

#[test]
fn nofile_limit_of_32_fails_cleanly_and_recovers() {
    let dir = TempDir::new("nofile");
    let sock = dir.join("ctl.sock");
    let mut dp = Dp::interactive_with(dir, &["-S", "ctl.sock"], |c| nofile_limit(c, 32));
    let pid = dp.pid();

    // Pipes until the table is full.
    let mut pipes = 0;
    loop {
        let (r, w) = (format!("p{pipes}.r"), format!("p{pipes}.w"));
        let line = format!("fd.pipe\t{r}\t{w}");
        let ok = [format!("fd.state\t{r}\tpipe\tfrom\t{w}"), format!("fd.state\t{w}\tpipe\tto\t{r}")];
        let ok: Vec<&str> = ok.iter().map(String::as_str).collect();
        if ok_or_err(&mut dp, &line, &ok, &format!("pipe() failed: {EMFILE}")) {
            break;
        }
        pipes += 1;
        assert!(pipes < 32, "32 descriptors never ran out");
    }
    assert!(pipes >= 3, "only {pipes} pipes fitted under a limit of 32");
    // At most one descriptor left: take it with a file.
    for k in 0..3 {
        let line = format!("fd.open\tf{k}\twrite,create\tf{k}");
        let ok = format!("fd.state\tf{k}\tfile\twrite,create\tf{k}");
        if ok_or_err(&mut dp, &line, &[&ok], &format!("open failed: {EMFILE}")) {
            break;
        }
        assert!(k < 2, "a pipe failed but three files opened");
    }
    assert!(fd_count(pid) >= 31, "the daemon holds {} descriptors", fd_count(pid));

    // Every way to make a descriptor fails with its own error line.
    dp.cmd_err("fd.open\tx\twrite,create\tx", &format!("open failed: {EMFILE}"));
    dp.cmd_err("fd.socket\tx\tunix", &format!("socket: {EMFILE}"));
    dp.cmd_err("fd.socket\tx\ttcp,listen\t127.0.0.1:0", &format!("socket: {EMFILE}"));
    dp.cmd_err("fd.pipe\tx.r\tx.w", &format!("pipe() failed: {EMFILE}"));
    dp.cmd_err("fd.pipe\tx.r\tx.w\tunix", &format!("socketpair() failed: {EMFILE}"));

    // A connection to the control socket cannot be accepted: it waits.
    let mut client = UnixStream::connect(&sock).expect("connect (the backlog takes it)");
    client.write_all(b"echo\tserved\n").unwrap();
    client.set_read_timeout(Some(ms(300))).unwrap();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut l = String::new();
    assert!(reader.read_line(&mut l).is_err() || l.is_empty(), "served at the limit: {l:?}");
    assert!(
        wait_until(T, || dp.stderr_lines().iter().any(|l| l == &format!("error: accept: {EMFILE}"))),
        "no accept error logged; stderr:\n{}",
        dp.stderr_lines().join("\n")
    );

    // A controller service needs a socketpair: a failed fork, retried in
    // 3 s. A plain service needs no new descriptor and runs.
    dp.args("ctl", "sleep\t600");
    dp.fds("ctl", "control.cmd\tnull\tstderr");
    let t0 = mono();
    dp.send("service.start\tctl");
    dp.expect("service.state\tctl\tstart\t*\t-\t-\t-\t-\t-");
    let retry = dp.wait_match("service.state\tctl\tstart\t*\t-\t-\t-\t-\t-", T);
    assert!(field_i64(&retry, 3) >= t0 + 2, "retry not 3 s later: {retry:?}");
    dp.expect_stderr(&format!("error: fork failed: {EMFILE}"));
    dp.expect_stderr("info: will retry in 3 seconds");
    dp.args("plain", "sh\t-c\texit 4");
    dp.send("service.start\tplain");
    dp.expect("service.state\tplain\tstart\t*\t-\t-\t-\t-\t-");
    dp.wait_match("service.state\tplain\tdown\t*\t*\texit\t4\t*\t*", T);

    // Free the pipes: everything works again.
    for k in 0..pipes {
        dp.cmd(&format!("fd.delete\tp{k}.r"), &[&format!("fd.state\tp{k}.r\tdeleted")]);
        dp.cmd(&format!("fd.delete\tp{k}.w"), &[&format!("fd.state\tp{k}.w\tdeleted")]);
    }
    dp.cmd("fd.open\tx\twrite,create\tx", &["fd.state\tx\tfile\twrite,create\tx"]);
    dp.cmd("fd.socket\tsk\tunix", &["fd.state\tsk\tsocket\tunix,stream\t"]);
    dp.cmd("fd.pipe\ty.r\ty.w", &["fd.state\ty.r\tpipe\tfrom\ty.w", "fd.state\ty.w\tpipe\tto\ty.r"]);
    // The waiting connection is taken up without another one arriving.
    client.set_read_timeout(Some(T)).unwrap();
    l.clear();
    reader.read_line(&mut l).expect("the waiting controller is served once descriptors are free");
    assert_eq!(l, "served\n");
    // The controller service comes up at its retry.
    let up = dp.wait_match("service.state\tctl\tup\t*\t*\t-\t-\t0\t-", secs(6));
    assert!(field_i64(&up, 3) >= t0 + 3, "{up:?}");
    assert!(dp.running());
}

/// `sleep 600` as a service; returns its pid.
fn sleeper(dp: &mut Dp, name: &str) -> i32 {
    dp.args(name, "sleep\t600");
    dp.start(name)
}

#[test]
fn nproc_limit_failed_fork_is_retried_by_auto_up() {
    let dir = TempDir::new("nproc");
    let uid = fresh_uid();
    // The daemon and two children.
    let mut dp = Dp::interactive_as(dir, &["--subreaper"], uid, 3);
    sleeper(&mut dp, "s1");
    sleeper(&mut dp, "s2");
    dp.args("s3", "sleep\t600");
    let t0 = mono();
    dp.send("service.auto_up\ts3\t1\talways");
    dp.expect_seq(&["service.state\ts3\tstart\t*\t-\t-\t-\t-\t-", "service.auto_up\ts3\t1\talways"]);
    let retry = dp.wait_match("service.state\ts3\tstart\t*\t-\t-\t-\t-\t-", T);
    assert!(field_i64(&retry, 3) >= t0 + 2, "{retry:?}");
    dp.expect_stderr("error: fork failed: Resource temporarily unavailable");
    dp.expect_stderr("info: will retry in 3 seconds");
    // It keeps failing, every 3 s, while the limit holds.
    let again = dp.wait_match("service.state\ts3\tstart\t*\t-\t-\t-\t-\t-", secs(6));
    assert!(field_i64(&again, 3) >= field_i64(&retry, 3) + 2, "{again:?}");
    let rtt = dp.rtt();
    assert!(rtt < ms(100), "echo took {rtt:?} at the process limit");
    // One process gone: the next retry starts it.
    dp.send("service.signal\ts1\tSIGKILL");
    dp.wait_match("service.state\ts1\tdown\t*\t*\tsignal\tSIGKILL\t*\t*", T);
    dp.wait_match("service.state\ts3\tup\t*\t*\t-\t-\t0\t-", secs(7));
    assert!(dp.running());
}

#[test]
fn fork_bomb_within_a_process_limit() {
    let dir = TempDir::new("bomb");
    let uid = fresh_uid();
    let mut dp = Dp::interactive_as(dir, &["--subreaper"], uid, 24);
    // Every process forks as long as it can; a failed fork waits a second
    // and tries again, so the limit stays taken. One process group.
    let bomb = "for (1..60) { my $p = fork; sleep 1 unless defined $p } sleep 600";
    dp.args("bomb", &format!("setsid\tperl\t-e\t{bomb}"));
    let pid = dp.start("bomb");
    let count = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/status"))
                    .is_ok_and(|s| s.contains(&format!("\nUid:\t{uid}\t")))
            })
            .count()
    };
    assert!(wait_until(T, || count() >= 24), "the bomb never reached the limit ({} processes)", count());
    // The daemon stays responsive while it holds the limit.
    let rtts: Vec<Duration> = (0..20).map(|_| dp.rtt()).collect();
    let worst = *rtts.iter().max().unwrap();
    assert!(worst < ms(100), "echo round trips {rtts:?}");
    // Its own starts fail and are retried.
    dp.args("job", "sh\t-c\texit 0");
    dp.send("service.start\tjob");
    dp.expect("service.state\tjob\tstart\t*\t-\t-\t-\t-\t-");
    dp.wait_match("service.state\tjob\tstart\t*\t-\t-\t-\t-\t-", T);
    dp.expect_stderr("error: fork failed: Resource temporarily unavailable");
    // Killing the bomb's group ends it all; the orphans are reaped
    // (--subreaper) and the retried start runs.
    let t = Instant::now();
    dp.send("service.signal\tbomb\tSIGKILL\tgroup");
    dp.wait_match(&format!("service.state\tbomb\tdown\t*\t{pid}\tsignal\tSIGKILL\t*\t*"), T);
    assert!(wait_until(T, || count() == 1), "{} processes left after the bomb", count());
    dp.wait_match("service.state\tjob\tdown\t*\t*\texit\t0\t*\t*", secs(8));
    assert!(t.elapsed() < secs(8));
    assert!(dp.running());
}
