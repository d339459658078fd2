//! Signals sent to the daemon (docs/protocol.md §8.1, docs/protocol.md §8.2, docs/protocol.md §5.2, docs/protocol.md §3.22):
//! counted signals become `signal` events with rising counts and never
//! terminate daemonproxy; triggers start services; `signal.clear`.

mod util;
use util::*;

const COUNTED: [(i32, &str); 6] = [
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGUSR2, "SIGUSR2"),
];

fn is_signal_line(l: &str) -> bool {
    l.starts_with("signal\t")
}

#[test]
fn counted_signals_are_evented_and_survived() {
    let mut dp = Dp::interactive(&[]);
    let t0 = mono();
    for (sig, name) in COUNTED {
        dp.signal(sig);
        let got = dp.sync_until(&format!("signal\t{name}\t*\t1"), T);
        let sigs: Vec<&String> = got.iter().filter(|l| is_signal_line(l)).collect();
        assert_eq!(sigs.len(), 1, "one signal line per arrival: {got:?}");
        let ts = field_i64(sigs[0], 2);
        assert!(ts >= t0 && ts <= mono(), "receipt time is a monotonic second: {:?}", sigs[0]);
        assert!(dp.running(), "daemonproxy must survive {name}");
    }
    // rising counts on each new arrival; nothing repeated in between
    for n in 2..=4 {
        dp.signal(libc::SIGHUP);
        let got = dp.sync_until(&format!("signal\tSIGHUP\t*\t{n}"), T);
        assert_eq!(got.iter().filter(|l| is_signal_line(l)).count(), 1, "{got:?}");
    }
    dp.sync_expect(&[]);
    dp.cmd("echo\talive", &["alive"]);
    let (st, _) = dp.finish();
    assert_eq!(st.code(), Some(0));
}

#[test]
fn every_delivery_counts() {
    // F18: deliveries between two loop passes are all counted
    let mut dp = Dp::interactive(&[]);
    for _ in 0..3 {
        dp.signal(libc::SIGUSR1);
        std::thread::sleep(ms(60));
    }
    dp.sync_until("signal\tSIGUSR1\t*\t3", T);
}

#[test]
fn wake_only_signals_give_no_event() {
    let mut dp = Dp::interactive(&[]);
    for sig in [libc::SIGCHLD, libc::SIGALRM, libc::SIGPIPE] {
        dp.signal(sig);
    }
    std::thread::sleep(ms(200));
    dp.sync_expect(&[]);
    assert!(dp.running());
    dp.send("statedump");
    let dump = dp.sync();
    assert!(!dump.iter().any(|l| is_signal_line(l)), "{dump:#?}");
}

#[test]
fn fatal_signal_exits_4() {
    let mut dp = Dp::interactive(&[]);
    dp.signal(libc::SIGILL);
    let st = dp.wait_exit(T);
    assert_eq!(st.code(), Some(4), "fatal signal: {}", describe(&st));
    dp.expect_stderr("fatal: Received signal SIGILL (4)");
}

/// A panic in the loop (provoked with `debug.panic`, a command of debug
/// and `fault-injection` builds) takes the fatal path: exit status 4 and the
/// panic's message on one line.
#[test]
fn panic_exits_4_with_its_message() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("echo\tbefore", &["before"]);
    dp.send("debug.panic");
    let st = dp.wait_exit(T);
    assert_eq!(st.code(), Some(4), "after a panic: {}", describe(&st));
    let lines = dp.stderr_lines();
    let seen = |l: &String| {
        l.starts_with("fatal: Rust panic: panicked at src/dispatch.rs:")
            && l.ends_with(": debug.panic from controller 0")
    };
    assert!(lines.iter().any(seen), "no panic message in {lines:#?}");
}

#[test]
fn signal_clear() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("signal.clear\tSIGUSR2\t1", &[]);
    dp.cmd_err("signal.clear\tSIGHUP\t-5", "invalid count");
    dp.cmd_err("signal.clear\tSIGHUP\tx", "Expected integer");
    dp.cmd_err("signal.clear\tBOGUS\t1", "Invalid signal argument");
    dp.cmd_err("signal.clear\t-1\t1", "Invalid signal argument");
    dp.cmd_err("signal.clear\t99999\t1", "Invalid signal number");
    dp.signal(libc::SIGHUP);
    dp.sync_until("signal\tSIGHUP\t*\t1", T);
    dp.signal(libc::SIGHUP);
    dp.sync_until("signal\tSIGHUP\t*\t2", T);
    dp.cmd("signal.clear\tSIGHUP\t1", &[]);
    dp.send("statedump");
    let dump = dp.sync();
    let s: Vec<&String> = dump.iter().filter(|l| is_signal_line(l)).collect();
    assert_eq!(s.len(), 1, "{dump:#?}");
    assert!(matches("signal\tSIGHUP\t*\t1", s[0]), "{dump:#?}");
    // numbers and names without SIG work too; the floor is 0
    dp.cmd("signal.clear\t1\t5", &[]);
    dp.send("statedump");
    let dump = dp.sync();
    assert!(!dump.iter().any(|l| is_signal_line(l)), "cleared: {dump:#?}");
    dp.signal(libc::SIGHUP);
    dp.sync_until("signal\tSIGHUP\t*\t1", T);
    dp.cmd("signal.clear\tHUP\t1", &[]);
    dp.send("statedump");
    let dump = dp.sync();
    assert!(!dump.iter().any(|l| is_signal_line(l)), "cleared: {dump:#?}");
}

#[test]
fn trigger_signal_starts_a_service() {
    let mut dp = Dp::interactive(&[]);
    dp.args("trig", "sh\t-c\techo ran >> trig.out");
    dp.cmd("service.auto_up\ttrig\t1\tSIGUSR1", &["service.auto_up\ttrig\t1\tSIGUSR1"]);
    std::thread::sleep(ms(200));
    dp.sync_expect(&[]);
    dp.signal(libc::SIGUSR1);
    let got = dp.sync_until("signal\tSIGUSR1\t*\t1", T);
    let i_start = got.iter().position(|l| matches("service.state\ttrig\tstart\t*\t-\t-\t-\t-\t-", l));
    let i_sig = got.iter().position(|l| matches("signal\tSIGUSR1\t*\t1", l)).unwrap();
    let i_start = i_start.unwrap_or_else(|| panic!("no start before the signal line: {got:?}"));
    assert!(i_start < i_sig, "services start before controllers hear of the signal: {got:?}");
    dp.unread(got.clone());
    dp.wait_match("service.state\ttrig\tdown\t*\t*\texit\t0\t0\t0", T);
    // the count is still > 0: it runs again after MIN_INTERVAL
    dp.wait_match("service.state\ttrig\tup\t*\t*\t-\t-\t0\t-", secs(3));
    // once cleared, at most the start already pending when the command ran
    // happens; after that the service stays down
    dp.send("signal.clear\tSIGUSR1\t1");
    std::thread::sleep(ms(2500));
    dp.sync();
    let runs = dp.dir.read("trig.out").lines().count();
    std::thread::sleep(ms(1500));
    let lines = dp.sync();
    assert!(
        !lines.iter().any(|l| l.starts_with("service.state\ttrig\tstart") || l.starts_with("service.state\ttrig\tup")),
        "no restart after signal.clear: {lines:?}"
    );
    assert_eq!(dp.dir.read("trig.out").lines().count(), runs);
    assert!((2..=3).contains(&runs), "ran twice, or three times if a start was pending: {runs}");
}

#[test]
fn auto_up_with_pending_signal_starts_at_once() {
    let mut dp = Dp::interactive(&[]);
    dp.signal(libc::SIGHUP);
    dp.sync_until("signal\tSIGHUP\t*\t1", T);
    dp.args("t2", "sleep\t20");
    dp.send("service.auto_up\tt2\t1\tSIGHUP");
    dp.expect("service.state\tt2\tstart\t*\t-\t-\t-\t-\t-");
    dp.expect("service.auto_up\tt2\t1\tSIGHUP");
    dp.wait_match("service.state\tt2\tup\t*\t*\t-\t-\t0\t-", T);
}

#[test]
fn trigger_moves_a_delayed_start_to_now() {
    let mut dp = Dp::interactive(&[]);
    dp.args("d", "sleep\t20");
    let when = mono() + 500;
    dp.cmd(&format!("service.start\td\t{when}"), &[&format!("service.state\td\tstart\t{when}\t-\t-\t-\t-\t-")]);
    dp.cmd("service.auto_up\td\t1\tSIGUSR2", &["service.auto_up\td\t1\tSIGUSR2"]);
    dp.signal(libc::SIGUSR2);
    let got = dp.sync_until("signal\tSIGUSR2\t*\t1", T);
    dp.unread(got);
    let up = dp.wait_up("d", T);
    assert!(field_i64(&up, 3) < when, "started now, not at {when}: {up:?}");
}
