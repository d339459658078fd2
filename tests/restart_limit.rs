//! Restart limits (extension, issue 9): the `limit=N[/SECONDS]` word of
//! `service.auto_up`, the `service.limit` event, and what resets the
//! count; and that a session using only 1.1 input sees no new line.

mod util;

use std::thread;
use util::*;

const NEW_EVENTS: [&str; 5] =
    ["service.stat", "service.stat.end", "service.match", "service.query.end", "service.limit"];

fn up_pat(name: &str) -> String {
    format!("service.state\t{name}\tup\t*\t*\t-\t-\t*\t-")
}

/// Reads lines until `service.limit` for `name`; returns how many times the
/// service came up meanwhile and the lines.
fn ups_until_limit(dp: &mut Dp, name: &str) -> (usize, Vec<String>) {
    let up = up_pat(name);
    let lim = format!("service.limit\t{name}\t");
    let lines = dp.wait_for("service.limit", secs(10), |l| l.starts_with(&lim));
    (lines.iter().filter(|l| matches(&up, l)).count(), lines)
}

#[test]
fn three_restarts_within_ten_seconds_then_down_until_started() {
    let mut dp = Dp::interactive(&[]);
    dp.args("crash", "sh\t-c\texit 5");
    dp.send("service.auto_up\tcrash\t0.05\talways\tlimit=3/10");
    // auto_up with `always` starts it at once: the first run and exactly 3
    // restarts, then the limit.
    let (ups, lines) = ups_until_limit(&mut dp, "crash");
    assert_eq!(ups, 4, "first start + 3 restarts:\n{lines:#?}");
    let n = lines.len();
    assert!(matches("service.state\tcrash\tdown\t*\t*\texit\t5\t*\t*", &lines[n - 2]), "{lines:#?}");
    let ts = field_i64(&lines[n - 1], 2);
    assert!((ts - mono()).abs() <= 1);
    assert!(matches("service.limit\tcrash\t*\t3\t10", &lines[n - 1]));
    // It stays down: no start within a while.
    thread::sleep(ms(400));
    let quiet = dp.sync();
    assert!(quiet.is_empty(), "lines after the limit: {quiet:?}");
    let dump = dp.statedump();
    assert!(dump.iter().any(|l| matches("service.state\tcrash\tdown\t*\t*\texit\t5\t*\t*", l)));
    assert!(dump.iter().any(|l| l == "service.auto_up\tcrash\t0.05\talways\tlimit=3/10"));
    assert!(!dump.iter().any(|l| l.starts_with("service.limit")), "statedump is 1.1 output");

    // `service.start` brings it back with a fresh count.
    dp.send("service.start\tcrash");
    dp.expect("service.state\tcrash\tstart\t*\t-\t-\t-\t-\t-");
    let (ups, lines) = ups_until_limit(&mut dp, "crash");
    assert_eq!(ups, 4, "manual start + 3 restarts:\n{lines:#?}");
    // A new auto_up resets the count as well (and starts it: `always`).
    dp.send("service.auto_up\tcrash\t0.05\talways\tlimit=2/10");
    let (ups, _) = ups_until_limit(&mut dp, "crash");
    assert_eq!(ups, 3);
    dp.cmd("service.auto_up\tcrash\t-", &["service.auto_up\tcrash\t-"]);
}

#[test]
fn restarts_spread_wider_than_the_window_go_on() {
    let mut dp = Dp::interactive(&[]);
    // One restart every 0.3 s, at most 2 within 0.5 s: never limited.
    dp.args("slow", "sh\t-c\texit 1");
    dp.send("service.auto_up\tslow\t0.3\talways\tlimit=2/0.5");
    let up = up_pat("slow");
    let mut ups = 0;
    let lines = dp.wait_for("6 runs", secs(10), |l| {
        ups += usize::from(matches(&up, l));
        ups == 6
    });
    assert!(!lines.iter().any(|l| l.starts_with("service.limit")), "{lines:#?}");
    dp.send("service.auto_up\tslow\t-");
    dp.sync_expect_ignoring(&["service.auto_up\tslow\t-"], |l| l.starts_with("service.state\tslow\t"));
}

#[test]
fn limit_without_window_and_with_signal_triggers() {
    let mut dp = Dp::interactive(&[]);
    dp.args("job", "sh\t-c\texit 0");
    dp.cmd("service.auto_up\tjob\t0.05\tSIGHUP\tlimit=1", &["service.auto_up\tjob\t0.05\tSIGHUP\tlimit=1"]);
    // The HUP stays pending, so each exit asks for a restart: one allowed.
    dp.signal(libc::SIGHUP);
    let (ups, lines) = ups_until_limit(&mut dp, "job");
    assert_eq!(ups, 2, "{lines:#?}");
    assert!(matches("service.limit\tjob\t*\t1\t-", lines.last().unwrap()));
    // Another HUP does not start it while limited.
    dp.signal(libc::SIGHUP);
    let got = dp.sync_until("signal\tSIGHUP\t*\t2", T);
    assert!(!got.iter().any(|l| l.contains("\tjob\tstart\t")), "{got:#?}");
    dp.cmd("signal.clear\tSIGHUP\t2", &[]);
}

#[test]
fn bad_limit_words() {
    let mut dp = Dp::interactive(&[]);
    for w in ["limit=0/10", "limit=1001", "limit=3/0", "limit=3/", "limit=/5", "limit=x", "limit=3/10s", "limit="] {
        dp.cmd_err(&format!("service.auto_up\tx\t1\talways\t{w}"), "unable to set auto_up triggers");
    }
}

#[test]
fn a_1_1_session_sees_no_new_line() {
    // Crash loops, backoff, signals, statedumps, errors: nothing but 1.1
    // input, so nothing but 1.1 lines.
    let mut dp = Dp::interactive(&[]);
    dp.args("nap", "sleep\t600");
    dp.cmd("service.tags\tnap\tuser=ann\tsession=s1", &["service.tags\tnap\tuser=ann\tsession=s1"]);
    dp.start("nap");
    dp.args("loop", "sh\t-c\texit 2");
    dp.send("service.auto_up\tloop\t0.02\talways\tmax=0.05");
    thread::sleep(ms(300));
    dp.send("service.auto_up\tloop\t-");
    dp.signal(libc::SIGUSR2);
    dp.sync_until("signal\tSIGUSR2\t*\t1", T);
    dp.statedump();
    dp.send("service.signal\tnap\tSIGTERM");
    dp.wait_down("nap", T);
    dp.send("service.stats\tnap");
    dp.sync();
    assert!(dp.seen.iter().any(|l| l.starts_with("error\tUnknown command: service.stats")));
    assert!(dp.seen.iter().filter(|l| l.starts_with("service.state\tloop\tup\t")).count() >= 2);
    for l in &dp.seen {
        let name = l.split('\t').next().unwrap();
        assert!(!NEW_EVENTS.contains(&name), "new line in a 1.1 session: {}", vis(l));
        assert!(!l.contains("\texit\t-\t"), "unknown exit status in a 1.1 session: {}", vis(l));
    }
}
