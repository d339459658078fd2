//! Service commands and events (docs/protocol.md §3.3–3.9, docs/protocol.md §4.1, docs/protocol.md §5):
//! `service.tags/args/fds/auto_up/start/signal/delete`, every
//! `service.state` variant, exec failures and descriptor mapping.

mod util;
use util::*;

fn start_pat(name: &str) -> String {
    format!("service.state\t{name}\tstart\t*\t-\t-\t-\t-\t-")
}

fn up_pat(name: &str) -> String {
    format!("service.state\t{name}\tup\t*\t*\t-\t-\t0\t-")
}

#[test]
fn tags_set_clear_raw() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("service.tags\tfoo\tcolor=blue", &["service.tags\tfoo\tcolor=blue"]);
    dp.cmd("service.tags\tfoo", &["service.tags\tfoo\t"]);
    dp.cmd("service.tags\tfoo\t", &["service.tags\tfoo\t"]);
    dp.cmd("service.tags\tfoo\ta\t\tb c\t", &["service.tags\tfoo\ta\t\tb c\t"]);
    let dump = dp.statedump();
    assert_lines(
        &dump[dump.len() - 5..],
        &[
            "service.state\tfoo\tdown\t-\t-\t-\t-\t-\t-",
            "service.tags\tfoo\ta\t\tb c\t",
            "service.args\tfoo\t",
            "service.fds\tfoo\tnull\tnull\tnull",
            "service.auto_up\tfoo\t-",
        ],
        "statedump of a tags-only service",
    );
}

#[test]
fn args_set_clear() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("service.args\tfoo\t/bin/sleep\t1", &["service.args\tfoo\t/bin/sleep\t1"]);
    dp.cmd("service.args\tfoo\tsh\t-c\techo  a;\t\tx", &["service.args\tfoo\tsh\t-c\techo  a;\t\tx"]);
    dp.cmd("service.args\tfoo", &["service.args\tfoo\t"]);
    dp.cmd("service.args\tfoo\t", &["service.args\tfoo\t"]);
}

#[test]
fn fds_warnings_and_lists() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd(
        "service.fds\tfoo\tnull\tx.w\ty.w",
        &[
            "warning\tfd \"x.w\" is not yet defined",
            "warning\tfd \"y.w\" is not yet defined",
            "service.fds\tfoo\tnull\tx.w\ty.w",
        ],
    );
    // F11: no warning for "-"; constants and std handles exist
    dp.cmd("service.fds\tfoo\tnull\t-\tstderr", &["service.fds\tfoo\tnull\t-\tstderr"]);
    dp.cmd("service.fds\tfoo\t-\t-\t-", &["service.fds\tfoo\t-\t-\t-"]);
    dp.cmd("service.fds\tfoo\tstdin\tstdout\tstderr", &["service.fds\tfoo\tstdin\tstdout\tstderr"]);
    dp.cmd(
        "service.fds\tctl\tcontrol.event\tcontrol.cmd\tcontrol.socket",
        &["service.fds\tctl\tcontrol.event\tcontrol.cmd\tcontrol.socket"],
    );
    dp.cmd("fd.pipe\tx.r\tx.w", &["fd.state\tx.r\tpipe\tfrom\tx.w", "fd.state\tx.w\tpipe\tto\tx.r"]);
    dp.cmd("service.fds\tfoo\tnull\tx.w\tx.w", &["service.fds\tfoo\tnull\tx.w\tx.w"]);
    dp.cmd_err("service.fds\tfoo\tnull\tbad/name", "invalid fd name");
    dp.cmd_err(&format!("service.fds\tfoo\t{}", "n".repeat(32)), "invalid fd name");
    dp.cmd_err("service.fds\tfoo\tnull\tnu ll", "invalid fd name");
    // empty list
    dp.cmd("service.fds\tfoo", &["service.fds\tfoo\t"]);
    dp.cmd("service.fds\tbar\t", &["service.fds\tbar\t"]);
    dp.cmd("service.args\tbaz\ttrue", &["service.args\tbaz\ttrue"]);
    let dump = dp.statedump();
    for want in [
        "service.fds\tfoo\t",
        "service.fds\tbar\t",
        "service.fds\tbaz\tnull\tnull\tnull",
        "service.fds\tctl\tcontrol.event\tcontrol.cmd\tcontrol.socket",
    ] {
        assert!(dump.iter().any(|l| l == want), "statedump lacks {want:?}: {dump:#?}");
    }
}

#[test]
fn auto_up_errors_and_display() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("service.tags\tfoo", &["service.tags\tfoo\t"]);
    dp.cmd_err("service.auto_up\tfoo\t0", "invalid interval");
    dp.cmd_err("service.auto_up\tfoo\t-3", "invalid interval");
    dp.cmd_err("service.auto_up\tfoo\t2147483648", "invalid interval");
    dp.cmd_err("service.auto_up\tfoo\tabc", "Expected integer");
    dp.cmd_err("service.auto_up\tfoo\t", "Expected integer");
    dp.cmd_err("service.auto_up\tfoo\t1\tBOGUS", "unable to set auto_up triggers");
    dp.cmd_err("service.auto_up\tfoo\t1\t1", "unable to set auto_up triggers");
    dp.cmd_err("service.auto_up\tfoo\t1\tSIGHUP\tnever", "unable to set auto_up triggers");
    // no triggers: disabled, interval stored
    dp.cmd("service.auto_up\tfoo\t5", &["service.auto_up\tfoo\t-"]);
    dp.cmd("service.auto_up\tfoo\t-\tSIGHUP", &["service.auto_up\tfoo\t5\tSIGHUP"]);
    dp.cmd("service.auto_up\tfoo\t3\tSIGHUP\tUSR1", &["service.auto_up\tfoo\t3\tSIGHUP\tUSR1"]);
    dp.cmd("service.auto_up\tfoo\t2147483647\tSIGUSR2", &["service.auto_up\tfoo\t2147483647\tSIGUSR2"]);
    // parsing stops at the first empty trigger; the raw text is shown
    dp.cmd("service.auto_up\tfoo\t3\tSIGHUP\t\tBOGUS", &["service.auto_up\tfoo\t3\tSIGHUP\t\tBOGUS"]);
    dp.cmd("service.auto_up\tfoo\t-", &["service.auto_up\tfoo\t-"]);
    // F17: a fresh service has the default interval 1
    dp.cmd("service.auto_up\tbar\t-\tSIGUSR2", &["service.auto_up\tbar\t1\tSIGUSR2"]);
    // auto_up creates the service
    dp.cmd("service.auto_up\tnew\t4", &["service.auto_up\tnew\t-"]);
    let dump = dp.statedump();
    assert!(dump.iter().any(|l| l == "service.auto_up\tbar\t1\tSIGUSR2"), "{dump:#?}");
    assert!(dump.iter().any(|l| l == "service.state\tnew\tdown\t-\t-\t-\t-\t-\t-"), "{dump:#?}");
}

#[test]
fn auto_up_always_starts_before_broadcast() {
    let mut dp = Dp::interactive(&[]);
    dp.args("foo", "sleep\t20");
    dp.send("service.auto_up\tfoo\t1\talways");
    dp.expect(&start_pat("foo"));
    dp.expect("service.auto_up\tfoo\t1\talways");
    dp.wait_match(&up_pat("foo"), T);
    dp.cmd("service.auto_up\tfoo\t-", &["service.auto_up\tfoo\t-"]);
    // already up: setting it again starts nothing
    dp.cmd("service.auto_up\tfoo\t1\talways", &["service.auto_up\tfoo\t1\talways"]);
}

#[test]
fn auto_up_always_moves_a_delayed_start_to_now() {
    let mut dp = Dp::interactive(&[]);
    dp.args("foo", "sleep\t20");
    let when = mono() + 500;
    dp.cmd(&format!("service.start\tfoo\t{when}"), &[&format!("service.state\tfoo\tstart\t{when}\t-\t-\t-\t-\t-")]);
    let now = mono();
    dp.send("service.auto_up\tfoo\t1\talways");
    let s = dp.expect(&start_pat("foo"));
    assert!(field_i64(&s, 3) <= now + 1, "start moved to now: {s:?}");
    dp.expect("service.auto_up\tfoo\t1\talways");
    dp.wait_match(&up_pat("foo"), T);
}

#[test]
fn auto_up_restarts_once_per_exit_rate_limited() {
    let mut dp = Dp::interactive(&[]);
    dp.args("flap", "true");
    dp.send("service.auto_up\tflap\t1\talways");
    dp.expect(&start_pat("flap"));
    dp.expect("service.auto_up\tflap\t1\talways");
    let mut ups = Vec::new();
    let mut times = Vec::new();
    // three cycles: up, down, start (exactly once, F8), up ...
    let l = dp.wait_match(&up_pat("flap"), T);
    times.push(std::time::Instant::now());
    ups.push(field_i64(&l, 3));
    for _ in 0..2 {
        dp.expect("service.state\tflap\tdown\t*\t*\texit\t0\t0\t0");
        dp.expect(&start_pat("flap"));
        let l = dp.expect(&up_pat("flap"));
        times.push(std::time::Instant::now());
        ups.push(field_i64(&l, 3));
    }
    dp.send("service.auto_up\tflap\t-");
    for w in ups.windows(2) {
        assert!(w[1] - w[0] >= 1, "restarts at least MIN_INTERVAL apart: {ups:?}");
    }
    for w in times.windows(2) {
        let d = w[1] - w[0];
        assert!(d >= ms(850) && d < secs(3), "restart interval ~1 s, got {d:?}");
    }
}

#[test]
fn auto_up_restart_immediate_after_long_run() {
    // F7: a service that ran at least MIN_INTERVAL restarts in the same pass
    let mut dp = Dp::interactive(&[]);
    dp.args("long", "sleep\t1.2");
    dp.send("service.auto_up\tlong\t1\talways");
    dp.expect(&start_pat("long"));
    dp.expect("service.auto_up\tlong\t1\talways");
    dp.wait_match(&up_pat("long"), T);
    dp.wait_match("service.state\tlong\tdown\t*\t*\texit\t0\t1\t0", T);
    let t0 = std::time::Instant::now();
    dp.expect(&start_pat("long"));
    dp.expect(&up_pat("long"));
    assert!(t0.elapsed() < ms(600), "restart after a long run must be immediate: {:?}", t0.elapsed());
    dp.send("service.auto_up\tlong\t-");
}

#[test]
fn start_errors() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd_err("service.start\tnope", "No such service");
    dp.cmd("service.tags\tfoo\tx", &["service.tags\tfoo\tx"]);
    dp.cmd_err("service.start\tfoo", "no args configured for service");
    dp.cmd("service.args\tfoo", &["service.args\tfoo\t"]);
    dp.cmd_err("service.start\tfoo", "no args configured for service");
    dp.cmd("service.args\tfoo\t\tsleep\t1", &["service.args\tfoo\t\tsleep\t1"]);
    dp.cmd_err("service.start\tfoo", "no args configured for service");
    // WHEN is checked before args
    dp.cmd_err("service.start\tfoo\tabc", "invalid timestamp");
    dp.cmd_err("service.start\tfoo\t-200000", "invalid timestamp");
    dp.cmd_err("service.start\tfoo\t12x", "invalid timestamp");
    dp.cmd_err("service.start\tfoo\t-", "no service.start pending");
    dp.args("foo", "sleep\t20");
    dp.cmd_err("service.start\tfoo\t-", "no service.start pending");
    dp.start("foo");
    dp.cmd_err("service.start\tfoo", "service is not startable");
}

#[test]
fn start_future_reschedule_cancel() {
    let mut dp = Dp::interactive(&[]);
    dp.args("foo", "sleep\t20");
    let now = mono();
    let t1 = now + 100;
    let t2 = now + 200;
    dp.cmd(&format!("service.start\tfoo\t{t1}"), &[&format!("service.state\tfoo\tstart\t{t1}\t-\t-\t-\t-\t-")]);
    let dump = dp.statedump();
    assert!(
        dump.contains(&format!("service.state\tfoo\tstart\t{t1}\t-\t-\t-\t-\t-")),
        "pending start in statedump: {dump:#?}"
    );
    dp.cmd(&format!("service.start\tfoo\t{t2}"), &[&format!("service.state\tfoo\tstart\t{t2}\t-\t-\t-\t-\t-")]);
    dp.cmd("service.start\tfoo\t-", &["service.state\tfoo\tdown\t-\t-\t-\t-\t-\t-"]);
    dp.cmd_err("service.start\tfoo\t-", "no service.start pending");
    // nothing starts later
    std::thread::sleep(ms(300));
    dp.sync_expect(&[]);
}

#[test]
fn start_at_future_second_happens_then() {
    let mut dp = Dp::interactive(&[]);
    dp.args("foo", "sleep\t20");
    let t0 = std::time::Instant::now();
    let when = mono() + 2;
    dp.cmd(&format!("service.start\tfoo\t{when}"), &[&format!("service.state\tfoo\tstart\t{when}\t-\t-\t-\t-\t-")]);
    let up = dp.wait_match(&up_pat("foo"), secs(6));
    assert!(field_i64(&up, 3) >= when, "up at or after WHEN: {up:?} (when {when})");
    assert!(t0.elapsed() >= ms(900), "did not wait for WHEN: {:?}", t0.elapsed());
}

#[test]
fn start_in_the_past_starts_now() {
    // F5: any TS >= now-100000 is accepted; TS <= now starts at once
    let mut dp = Dp::interactive(&[]);
    dp.args("foo", "sleep\t20");
    let before = mono();
    dp.send(&format!("service.start\tfoo\t{}", before - 50));
    let l = dp.expect(&start_pat("foo"));
    let ts = field_i64(&l, 3);
    assert!(ts >= before && ts <= mono() + 1, "start TS is max(WHEN, now): {l:?}");
    dp.wait_match(&up_pat("foo"), T);
}

#[test]
fn start_default_now_then_up_then_exit() {
    let mut dp = Dp::interactive(&[]);
    dp.args("foo", "true");
    let before = mono();
    dp.send("service.start\tfoo");
    let s = dp.expect(&start_pat("foo"));
    let u = dp.wait_match(&up_pat("foo"), T);
    let d = dp.wait_match("service.state\tfoo\tdown\t*\t*\texit\t0\t0\t0", T);
    let (ts, tu, td) = (field_i64(&s, 3), field_i64(&u, 3), field_i64(&d, 3));
    assert!(before <= ts && ts <= tu && tu <= td && td <= mono(), "timestamps: {s:?} {u:?} {d:?}");
    assert_eq!(field(&u, 4), field(&d, 4), "same pid in up and down");
}

#[test]
fn signal_errors_in_check_order() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd_err("service.signal\tnope\tBOGUS\tbad", "No such service");
    dp.args("foo", "sleep\t20");
    dp.cmd_err("service.signal\tfoo\tBOGUS\tbad", "Invalid signal argument");
    dp.cmd_err("service.signal\tfoo\tSIGTERM\tbad", "unknown option \"bad\"");
    dp.cmd_err("service.signal\tfoo\tSIGTERM", "service is not running");
    dp.cmd_err("service.signal\tfoo\tSIGTERM\tgroup", "service is not running");
    // F6: unknown names are errors, not signal 0
    dp.cmd_err("service.signal\tfoo\t-1", "Invalid signal argument");
    dp.cmd_err("service.signal\tfoo\tSIG", "Invalid signal argument");
    dp.cmd_err("service.signal\tfoo\tSIGBOGUS", "Invalid signal argument");
    dp.cmd_err("service.signal\tfoo\tUNUSED", "Invalid signal argument");
    dp.cmd_err("service.signal\tfoo\t70000", "Invalid signal number");
    dp.cmd_err("service.signal\tfoo\t1x", "Invalid signal number");
    dp.cmd_err("service.signal\tfoo\t", "Expected signal argument");
    dp.start("foo");
    dp.cmd_err("service.signal\tfoo\tSIGTERM\tgroup,", "unknown option \"\"");
    dp.cmd_err("service.signal\tfoo\tSIGTERM\t", "unknown option \"\"");
    dp.cmd_err("service.signal\tfoo\tSIGTERM\tgroup,x", "unknown option \"x\"");
    // signal 0 checks and sends nothing
    dp.cmd("service.signal\tfoo\t0", &[]);
    dp.cmd("service.signal\tfoo\tSIGCONT", &[]);
    dp.send("service.signal\tfoo\tTERM");
    dp.wait_match("service.state\tfoo\tdown\t*\t*\tsignal\tSIGTERM\t0\t0", T);
}

#[test]
fn signal_names_and_numbers_in_events() {
    let mut dp = Dp::interactive(&[]);
    dp.args("s", "sleep\t20");
    for (arg, shown) in [
        ("SIGKILL", "SIGKILL"),
        ("9", "SIGKILL"),
        ("QUIT", "SIGQUIT"),
        ("29", "SIGIO"),
        ("SIGPOLL", "SIGIO"),
        ("30", "SIGPWR"),
        ("SIGUSR2", "SIGUSR2"),
        ("35", "SIG-?"),
    ] {
        let pid = dp.start("s");
        dp.send(&format!("service.signal\ts\t{arg}"));
        dp.wait_match(&format!("service.state\ts\tdown\t*\t{pid}\tsignal\t{shown}\t0\t0"), T);
    }
}

#[test]
fn signal_lower_case_names_e4() {
    // E4 (announced as implemented): lower-case names are accepted,
    // events still print the docs/protocol.md §2.6 names
    let mut dp = Dp::interactive(&[]);
    dp.args("s", "sleep\t20");
    let pid = dp.start("s");
    dp.send("service.signal\ts\tsigterm");
    dp.wait_match(&format!("service.state\ts\tdown\t*\t{pid}\tsignal\tSIGTERM\t0\t0"), T);
    let pid = dp.start("s");
    dp.send("service.signal\ts\tusr1");
    dp.wait_match(&format!("service.state\ts\tdown\t*\t{pid}\tsignal\tSIGUSR1\t0\t0"), T);
}

fn read_pid(dir: &TempDir, name: &str) -> i32 {
    let mut v = 0;
    assert!(
        wait_until(T, || {
            v = dir.read(name).trim().parse().unwrap_or(0);
            v > 0
        }),
        "{name} never written"
    );
    v
}

#[test]
fn signal_group_reaches_grandchildren() {
    let mut dp = Dp::interactive(&[]);
    let script = "sleep 20 & echo $! > g1.tmp; mv g1.tmp g1; sleep 20 & echo $! > g2.tmp; mv g2.tmp g2; wait";
    dp.args("g", &format!("setsid\tsh\t-c\t{script}"));
    let pid = dp.start("g");
    let g1 = read_pid(&dp.dir, "g1");
    let g2 = read_pid(&dp.dir, "g2");
    assert!(alive(g1) && alive(g2));
    dp.send("service.signal\tg\tSIGTERM\tgroup");
    dp.wait_match(&format!("service.state\tg\tdown\t*\t{pid}\tsignal\tSIGTERM\t*\t0"), T);
    let gone = wait_until(secs(3), || !alive(g1) && !alive(g2));
    if !gone {
        // SAFETY: the group was created by our own service
        unsafe { libc::killpg(pid, libc::SIGKILL) };
    }
    assert!(gone, "grandchildren {g1} {g2} must die with killpg");
}

#[test]
fn signal_without_group_reaches_only_the_service() {
    let mut dp = Dp::interactive(&[]);
    let script = "sleep 20 & echo $! > h1.tmp; mv h1.tmp h1; wait";
    dp.args("h", &format!("setsid\tsh\t-c\t{script}"));
    let pid = dp.start("h");
    let h1 = read_pid(&dp.dir, "h1");
    dp.send("service.signal\th\tSIGTERM");
    dp.wait_match(&format!("service.state\th\tdown\t*\t{pid}\tsignal\tSIGTERM\t*\t0"), T);
    std::thread::sleep(ms(200));
    let survived = alive(h1);
    // SAFETY: the group was created by our own service
    unsafe { libc::killpg(pid, libc::SIGKILL) };
    assert!(survived, "without group only the service itself is signalled");
}

#[test]
fn delete_rules() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd_err("service.delete\tnope", "No such service");
    // never started
    dp.args("a", "true");
    dp.cmd("service.delete\ta", &["service.state\ta\tdeleted\t-\t-\t-\t-\t-\t-"]);
    dp.cmd_err("service.delete\ta", "No such service");
    // up: refused
    dp.args("b", "sleep\t20");
    let pid = dp.start("b");
    dp.cmd_err("service.delete\tb", "service is running");
    // F15: down after running: allowed
    dp.send("service.signal\tb\tSIGKILL");
    dp.wait_match(&format!("service.state\tb\tdown\t*\t{pid}\tsignal\tSIGKILL\t0\t0"), T);
    dp.cmd("service.delete\tb", &["service.state\tb\tdeleted\t-\t-\t-\t-\t-\t-"]);
    // the name is free at once and the new service is fresh
    dp.cmd("service.tags\tb\tnew", &["service.tags\tb\tnew"]);
    let dump = dp.statedump();
    assert_lines(
        &dump[dump.len() - 5..],
        &[
            "service.state\tb\tdown\t-\t-\t-\t-\t-\t-",
            "service.tags\tb\tnew",
            "service.args\tb\t",
            "service.fds\tb\tnull\tnull\tnull",
            "service.auto_up\tb\t-",
        ],
        "recreated service",
    );
    // a pending start is dropped
    dp.args("c", "sleep\t20");
    let when = mono() + 1;
    dp.cmd(&format!("service.start\tc\t{when}"), &[&format!("service.state\tc\tstart\t{when}\t-\t-\t-\t-\t-")]);
    dp.cmd("service.delete\tc", &["service.state\tc\tdeleted\t-\t-\t-\t-\t-\t-"]);
    std::thread::sleep(ms(2100));
    dp.sync_expect(&[]);
    let dump = dp.statedump();
    assert!(!dump.iter().any(|l| l.starts_with("service.state\tc\t")), "deleted service gone: {dump:#?}");
}

#[test]
fn state_variants() {
    let mut dp = Dp::interactive(&[]);
    // never started
    dp.args("e", "sh\t-c\texit 7");
    let dump = dp.statedump();
    assert!(dump.contains(&"service.state\te\tdown\t-\t-\t-\t-\t-\t-".to_string()), "{dump:#?}");
    // exited with a code
    let pid = dp.start("e");
    let d = dp.wait_match(&format!("service.state\te\tdown\t*\t{pid}\texit\t7\t0\t0"), T);
    let reap = field_i64(&d, 3);
    // up, with a growing uptime in statedump
    dp.args("u", "sleep\t20");
    let upid = dp.start("u");
    std::thread::sleep(ms(1200));
    let dump = dp.statedump();
    let u = dump
        .iter()
        .find(|l| l.starts_with("service.state\tu\t"))
        .unwrap_or_else(|| panic!("no state for u: {dump:#?}"))
        .clone();
    assert!(matches(&format!("service.state\tu\tup\t*\t{upid}\t-\t-\t*\t-"), &u), "{u:?}");
    assert!(field_i64(&u, 7) >= 1, "uptime grows: {u:?}");
    // exited service shows its downtime in statedump
    let e = dump.iter().find(|l| l.starts_with("service.state\te\t")).unwrap().clone();
    assert!(matches(&format!("service.state\te\tdown\t{reap}\t{pid}\texit\t7\t0\t*"), &e), "{e:?}");
    assert!(field_i64(&e, 8) >= 1, "downtime grows: {e:?}");
    // killed by a signal, uptime at reap
    dp.send("service.signal\tu\tSIGKILL");
    let k = dp.wait_match(&format!("service.state\tu\tdown\t*\t{upid}\tsignal\tSIGKILL\t*\t0"), T);
    assert!(field_i64(&k, 7) >= 1, "uptime = reap - up: {k:?}");
    // deleted
    dp.cmd("service.delete\tu", &["service.state\tu\tdeleted\t-\t-\t-\t-\t-\t-"]);
}

#[test]
fn exec_of_missing_program_exits_3() {
    let dir = TempDir::new("exec");
    dir.write("not-executable", "#!/bin/sh\nexit 0\n");
    let mut dp = Dp::interactive_in(dir, &[]);
    for (name, args) in
        [("abs", "/nonexistent/program"), ("path", "no-such-program-daemonproxy-test"), ("noexec", "./not-executable")]
    {
        dp.args(name, args);
        let pid = dp.start(name);
        dp.wait_match(&format!("service.state\t{name}\tdown\t*\t{pid}\texit\t3\t0\t0"), T);
    }
}

#[test]
fn undefined_handle_at_exec_aborts() {
    let mut dp = Dp::interactive(&[]);
    dp.args("u", "sleep\t20");
    dp.cmd(
        "service.fds\tu\tnull\tnope\tnull",
        &["warning\tfd \"nope\" is not yet defined", "service.fds\tu\tnull\tnope\tnull"],
    );
    let pid = dp.start("u");
    dp.wait_match(&format!("service.state\tu\tdown\t*\t{pid}\tsignal\tSIGABRT\t0\t0"), T);
    dp.expect_stderr("error: file descriptor \"nope\" does not exist");
    // the handle appears later: now it works
    dp.cmd("fd.open\tnope\twrite\t/dev/null", &["fd.state\tnope\tfile\twrite\t/dev/null"]);
    let pid = dp.start("u");
    dp.send("service.signal\tu\tKILL");
    dp.wait_match(&format!("service.state\tu\tdown\t*\t{pid}\tsignal\tSIGKILL\t0\t0"), T);
}

/// A service script that lists its open descriptors 0..63 into FILE.
fn fd_lister(file: &str) -> String {
    format!(
        "sh\t-c\tr=; i=0; while [ $i -lt 64 ]; do [ -e /proc/self/fd/$i ] && r=\"$r $i\"; i=$((i+1)); done; echo \"[$r ]\" > {file}"
    )
}

#[test]
fn descriptor_mapping() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("fd.pipe\tp.r\tp.w", &["fd.state\tp.r\tpipe\tfrom\tp.w", "fd.state\tp.w\tpipe\tto\tp.r"]);
    dp.cmd("fd.open\tf\twrite,create\tf.txt", &["fd.state\tf\tfile\twrite,create\tf.txt"]);
    let cases = [
        ("never", None, "[ 0 1 2 ]"),
        ("four", Some("null\t-\tf\tp.w"), "[ 0 2 3 ]"),
        ("none", Some(""), "[ ]"),
        ("five", Some("p.r\tp.w\tf\tnull\tnull"), "[ 0 1 2 3 4 ]"),
    ];
    for (name, fds, want) in cases {
        let out = format!("{name}.out");
        dp.args(name, &fd_lister(&out));
        if let Some(f) = fds {
            dp.fds(name, f);
        }
        let pid = dp.start(name);
        dp.wait_match(&format!("service.state\t{name}\tdown\t*\t{pid}\texit\t0\t0\t0"), T);
        assert_eq!(dp.dir.read(&out).trim_end(), want, "descriptors of service {name} (fds {fds:?})");
    }
    // an empty entry takes no slot: later entries move down (docs/protocol.md §5.3)
    dp.args("gap", &fd_lister("gap.out"));
    dp.send("service.fds\tgap\tnull\t\tf");
    let got = dp.sync();
    let (warn, rest): (Vec<String>, Vec<String>) = got.into_iter().partition(|l| l.starts_with("warning\t"));
    assert_eq!(rest, vec!["service.fds\tgap\tnull\t\tf".to_string()]);
    assert!(warn.iter().all(|w| w == "warning\tfd \"\" is not yet defined"), "{warn:?}");
    let pid = dp.start("gap");
    dp.wait_match(&format!("service.state\tgap\tdown\t*\t{pid}\texit\t0\t0\t0"), T);
    assert_eq!(dp.dir.read("gap.out").trim_end(), "[ 0 1 ]");
    dp.expect_stderr("warning: ignoring zero-length file descriptor name");
    // slot 1 of "four" is closed, slot 2 is the file: check the data path
    dp.args("w", "sh\t-c\techo to-file >&2; echo to-pipe >&3");
    dp.fds("w", "null\t-\tf\tp.w");
    let pid = dp.start("w");
    dp.wait_match(&format!("service.state\tw\tdown\t*\t{pid}\texit\t0\t0\t0"), T);
    assert_eq!(dp.dir.read("f.txt"), "to-file\n");
    // the pipe keeps the data for a later reader
    dp.args("r", "sh\t-c\thead -n 1 > r.out");
    dp.fds("r", "p.r\tnull\tnull");
    let pid = dp.start("r");
    dp.wait_match(&format!("service.state\tr\tdown\t*\t{pid}\texit\t0\t0\t0"), T);
    assert_eq!(dp.dir.read("r.out"), "to-pipe\n");
}

#[test]
fn service_environment_umask_and_signals() {
    // docs/protocol.md §5.3: umask 077 inherited, default signal dispositions, empty mask
    let mut dp = Dp::interactive(&[]);
    dp.args("env", "sh\t-c\tumask > umask.out; grep -E '^Sig(Blk|Ign)' /proc/self/status > sig.out");
    let pid = dp.start("env");
    dp.wait_match(&format!("service.state\tenv\tdown\t*\t{pid}\texit\t0\t0\t0"), T);
    assert_eq!(dp.dir.read("umask.out").trim(), "0077");
    let sig = dp.dir.read("sig.out");
    assert!(sig.contains("SigBlk:\t0000000000000000"), "signal mask must be empty: {sig}");
    // no signal that daemonproxy handles may stay ignored in the child
    // (SIGPIPE included); others may be inherited from the test runner
    let ign = sig
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:\t"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap_or_else(|| panic!("no SigIgn line: {sig}"));
    let handled = [1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 17];
    for n in handled {
        assert_eq!(ign & (1u64 << (n - 1)), 0, "signal {n} is ignored in the child: {sig}");
    }
}

/// The process group of `pid` (field 5 of /proc/PID/stat).
fn pgid_of(pid: i32) -> i32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    s[s.rfind(')').unwrap() + 2..].split(' ').nth(2).unwrap().parse().unwrap()
}

#[test]
fn setpgid_gives_each_service_its_own_process_group() {
    // Issue 16 #5: with --setpgid a terminal's Ctrl-C (a signal to
    // daemonproxy's group) no longer reaches the services; without it they
    // share daemonproxy's group as in 1.1.
    let mut dp = Dp::interactive(&["--setpgid"]);
    dp.args("s", "sh\t-c\tsleep 600 & wait");
    let pid = dp.start("s");
    assert_eq!(pgid_of(pid), pid, "the service leads its own group");
    assert_ne!(pgid_of(pid), pgid_of(dp.pid()));
    // A signal to daemonproxy's group leaves it alone.
    assert!(kill(-pgid_of(dp.pid()), libc::SIGUSR2));
    dp.expect("signal\tSIGUSR2\t*\t1");
    std::thread::sleep(ms(200));
    assert!(alive(pid), "the service must not get the group's signal");
    // service.signal ... group reaches the child's whole group (sleep too).
    // (its `down` may come before a sync token would: wait for it alone)
    dp.send("service.signal\ts\tSIGTERM\tgroup");
    let l = dp.wait_down("s", T);
    assert!(l.contains("\tsignal\tSIGTERM\t"), "{l}");

    let mut dp = Dp::interactive(&[]);
    dp.args("s", "sleep\t600");
    let pid = dp.start("s");
    assert_eq!(pgid_of(pid), pgid_of(dp.pid()), "without --setpgid: daemonproxy's group");
}
