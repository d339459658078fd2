//! Hostile children (issue 8): services that close their stdout, that fill
//! a pipe and block in it, that become session leaders and leave orphans
//! behind. (A fork bomb within a process limit: tests/limits.rs.) The
//! daemon stays responsive, its state stays right, and everything it is
//! left with is reaped.

mod util;

use std::time::Duration;
use util::*;

/// Round trips of a few echoes, all under 10 ms but for one hiccup.
fn responsive(dp: &mut Dp, what: &str) {
    let mut v: Vec<Duration> = (0..20).map(|_| dp.rtt()).collect();
    v.sort();
    assert!(v[18] < ms(10) && v[19] < ms(100), "{what}: round trips {v:?}");
}

#[test]
fn a_controller_service_that_closes_its_stdout() {
    let mut dp = Dp::interactive(&[]);
    // Its only copy of the event socket is fd 1; it closes it at once and
    // lives on for a while.
    dp.args("c", "sh\t-c\texec >&-; sleep 1; exit 5");
    dp.fds("c", "null\tcontrol.event\tnull");
    dp.start("c");
    // Broadcasts now go to a controller whose peer is gone: the daemon
    // notices (EPIPE, no SIGPIPE death) and drops that controller.
    for k in 0..50 {
        dp.cmd(&format!("service.tags\tc\tround={k}"), &[&format!("service.tags\tc\tround={k}")]);
    }
    responsive(&mut dp, "after a controller's stdout closed");
    dp.wait_match("service.state\tc\tdown\t*\t*\texit\t5\t*\t*", secs(5));
    // The slot was freed: the same service runs again as a controller.
    dp.args("c", "sleep\t600");
    dp.fds("c", "null\tcontrol.event\tnull");
    dp.start("c");
    dp.send("service.signal\tc\tSIGTERM");
    dp.wait_match("service.state\tc\tdown\t*\t*\tsignal\tSIGTERM\t*\t*", T);
    assert!(dp.running());
}

#[test]
fn a_plain_service_that_closes_its_stdout_and_keeps_running() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("fd.pipe\tlog.r\tlog.w", &["fd.state\tlog.r\tpipe\tfrom\tlog.w", "fd.state\tlog.w\tpipe\tto\tlog.r"]);
    dp.args("w", "sh\t-c\techo one; exec >&-; sleep 0.5; echo two >&2; exit 7");
    dp.fds("w", "null\tlog.w\tlog.w");
    dp.start("w");
    responsive(&mut dp, "a service without stdout");
    dp.wait_match("service.state\tw\tdown\t*\t*\texit\t7\t*\t*", secs(5));
    // What it wrote before and after is in the pipe (the daemon holds both
    // ends: no EOF, no SIGPIPE for anyone).
    dp.args("r", "sh\t-c\thead -n 2 > got");
    dp.fds("r", "log.r\tnull\tnull");
    dp.start("r");
    dp.wait_match("service.state\tr\tdown\t*\t*\texit\t0\t*\t*", T);
    assert_eq!(dp.dir.read("got"), "one\ntwo\n");
}

#[test]
fn a_service_that_fills_a_pipe_and_blocks() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("fd.pipe\tout.r\tout.w", &["fd.state\tout.r\tpipe\tfrom\tout.w", "fd.state\tout.w\tpipe\tto\tout.r"]);
    dp.args("yes", "yes\tfilling");
    dp.fds("yes", "null\tout.w\tnull");
    dp.start("yes");
    // It fills the pipe at once and blocks in write(2); the daemon never
    // writes there and does not care.
    std::thread::sleep(ms(300));
    responsive(&mut dp, "a service blocked on a full pipe");
    let dump = dp.statedump();
    assert!(dump.iter().any(|l| matches("service.state\tyes\tup\t*\t*\t-\t-\t*\t-", l)), "{dump:?}");
    // A second writer blocks too; both go when signalled.
    dp.args("yes2", "yes\tmore");
    dp.fds("yes2", "null\tout.w\tnull");
    dp.start("yes2");
    responsive(&mut dp, "two services blocked on a full pipe");
    dp.send("service.signal\tyes\tSIGTERM");
    dp.send("service.signal\tyes2\tSIGKILL");
    let mut down = std::collections::BTreeSet::new();
    dp.wait_for("both writers down", T, |l| {
        if matches("service.state\t*\tdown\t*\t*\tsignal\t*\t*\t*", l) {
            down.insert(field(l, 1));
        }
        down.len() == 2
    });
    // The buffered data is still there for a reader.
    dp.args("r", "sh\t-c\thead -c 65536 | grep -c filling > n");
    dp.fds("r", "out.r\tnull\tnull");
    dp.start("r");
    dp.wait_match("service.state\tr\tdown\t*\t*\texit\t0\t*\t*", T);
    assert!(dp.dir.read("n").trim().parse::<u32>().unwrap_or(0) > 1000, "{:?}", dp.dir.read("n"));
}

#[test]
fn session_leaders_and_their_orphans_are_reaped() {
    let mut dp = Dp::interactive(&["--subreaper"]);
    let me = dp.pid();
    // A session leader with two children of its own.
    dp.args("leader", "setsid\tsh\t-c\tsleep 600 & sleep 600 & wait");
    let leader = dp.start("leader");
    assert!(wait_until(T, || children(leader).len() == 2), "the leader's children did not start");
    let kids = children(leader);
    // Only the leader is killed: its children become the daemon's.
    dp.send("service.signal\tleader\tSIGKILL");
    dp.wait_match(&format!("service.state\tleader\tdown\t*\t{leader}\tsignal\tSIGKILL\t*\t*"), T);
    assert!(wait_until(T, || kids.iter().all(|k| children(me).contains(k))), "orphans not adopted: {:?}", children(me));
    // A service that daemonizes (double fork into a new session) and
    // exits at once leaves one more.
    dp.args("daemon", "sh\t-c\tsetsid sleep 600 & exit 0");
    dp.start("daemon");
    dp.wait_match("service.state\tdaemon\tdown\t*\t*\texit\t0\t*\t*", T);
    assert!(wait_until(T, || children(me).len() == 3), "children of the daemon: {:?}", children(me));
    responsive(&mut dp, "with orphans adopted");
    // They die: reaped, logged, no zombie left, no event (not services).
    for k in children(me) {
        kill(k, libc::SIGKILL);
    }
    assert!(wait_until(T, || children(me).is_empty()), "zombies or orphans left: {:?}", children(me));
    assert!(
        wait_until(T, || dp.stderr_lines().iter().filter(|l| l.starts_with("info: reaped orphan pid ")).count() == 3),
        "stderr:\n{}",
        dp.stderr_lines().join("\n")
    );
    let after = dp.sync();
    assert!(after.is_empty(), "events for orphans: {after:?}");
    let dump = dp.statedump();
    assert!(dump.iter().any(|l| matches("service.state\tleader\tdown\t*\t*\tsignal\tSIGKILL\t*\t*", l)), "{dump:?}");
}
