//! `service.stat` (extension, issue 9): live figures of running services,
//! checked against what the test itself reads from /proc for a busy and an
//! idle child; errors; the `*` listing with filters and its end line.

mod util;

use std::fs;
use std::thread;
use std::time::Instant;
use util::*;

/// What the test reads from /proc/PID/stat itself: (state, cpu ticks,
/// threads, start ticks).
fn proc_stat(pid: i32) -> (String, i64, i64, i64) {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    let rest: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split_whitespace().collect();
    let n = |i: usize| rest[i].parse::<i64>().unwrap();
    (rest[0].to_string(), n(11) + n(12), n(17), n(19))
}

fn clk_tck() -> i64 {
    // SAFETY: sysconf has no side effects.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }
}

fn boottime() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// One `service.stat NAME` with the test's own /proc readings just before
/// and after it: (the line's fields, ticks before, ticks after, mid time).
struct Sample {
    f: Vec<String>,
    before: i64,
    after: i64,
    at: f64,
}

fn sample(dp: &mut Dp, name: &str, pid: i32) -> Sample {
    let t0 = mono_f64();
    let before = proc_stat(pid).1;
    dp.send(&format!("service.stat\t{name}"));
    let l = dp.wait_match(&format!("service.stat\t{name}\t{pid}\t*\t*\t*\t*\t*\t*\t*\t*"), T);
    let after = proc_stat(pid).1;
    let t1 = mono_f64();
    Sample { f: l.split('\t').map(str::to_string).collect(), before, after, at: (t0 + t1) / 2.0 }
}

fn num(s: &Sample, i: usize) -> i64 {
    s.f[i].parse().unwrap_or_else(|_| panic!("field {i} of {:?} is not a number", s.f))
}

/// Checks every figure of a sample against /proc.
fn check_against_proc(s: &Sample, pid: i32, threads: i64) {
    let tck = clk_tck();
    let (state, _, thr, start_ticks) = proc_stat(pid);
    assert_eq!(s.f[3], state, "kernel state letter: {:?}", s.f);
    // Start and uptime on the monotonic clock, whole seconds (±1 for the
    // truncation on either side).
    let start = mono_f64() - (boottime() - start_ticks as f64 / tck as f64);
    assert!((num(s, 4) as f64 - start).abs() <= 1.0, "START {} vs /proc {start:.2}", s.f[4]);
    assert!((num(s, 5) as f64 - (s.at - start)).abs() <= 1.0, "UPTIME {} vs {:.2}", s.f[5], s.at - start);
    // CPU time: what /proc showed just before and just after.
    let cpu = num(s, 6);
    assert!(
        s.before * 1000 / tck <= cpu && cpu <= s.after * 1000 / tck,
        "CPU_MS {cpu} outside /proc's {}..{}",
        s.before * 1000 / tck,
        s.after * 1000 / tck
    );
    let rss = num(s, 8);
    let want = status_kb(pid, "VmRSS") as i64;
    assert!((rss - want).abs() * 10 <= want, "RSS_KB {rss} vs VmRSS {want}");
    assert_eq!(num(s, 9), thr, "threads");
    assert_eq!(num(s, 9), threads, "threads of the child");
    assert_eq!(num(s, 10), fd_count(pid) as i64, "open fds");
}

#[test]
fn busy_and_idle_children_match_proc() {
    let mut dp = Dp::interactive(&[]);
    dp.args("busy", "sh\t-c\twhile :; do :; done");
    // Idle: four threads, five descriptors.
    dp.args(
        "idle",
        "python3\t-c\timport threading, time; [threading.Thread(target=time.sleep, args=(600,), daemon=True).start() for _ in range(3)]; time.sleep(600)",
    );
    dp.fds("idle", "null\tnull\tnull\tnull\tnull");
    let busy = dp.start("busy");
    let idle = dp.start("idle");
    // Until python has started its threads.
    assert!(wait_until(secs(10), || proc_stat(idle).2 == 4), "python child never had 4 threads");
    thread::sleep(ms(500));

    let b1 = sample(&mut dp, "busy", busy);
    let i1 = sample(&mut dp, "idle", idle);
    thread::sleep(ms(1200));
    let b2 = sample(&mut dp, "busy", busy);
    let i2 = sample(&mut dp, "idle", idle);
    for (s, pid, threads) in [(&b1, busy, 1), (&b2, busy, 1), (&i1, idle, 4), (&i2, idle, 4)] {
        check_against_proc(s, pid, threads);
    }
    assert_eq!(b2.f[3], "R", "a busy loop is runnable");
    assert_eq!(i2.f[3], "S", "an idle child sleeps");

    // CPU share since the previous sample, against the test's own figures
    // over (nearly) the same interval.
    let tck = clk_tck() as f64;
    let mid = |s: &Sample| (s.before + s.after) as f64 / 2.0;
    let want = (mid(&b2) - mid(&b1)) / tck / (b2.at - b1.at) * 1000.0;
    let got = num(&b2, 7) as f64;
    assert!(want > 100.0, "the busy child hardly ran ({want:.0} permille): machine overloaded?");
    assert!((got - want).abs() <= want * 0.1 + 20.0, "busy CPU_PERMILLE {got} vs /proc {want:.0}");
    assert!(num(&i2, 7) <= 10, "idle CPU_PERMILLE {}", i2.f[7]);
    dp.send("service.signal\tbusy\tSIGKILL");
    dp.send("service.signal\tidle\tSIGKILL");
    // Both go down, in either order.
    let mut down = 0;
    dp.wait_for("both down", T, |l| {
        down += usize::from(matches("service.state\t*\tdown\t*\t*\tsignal\tSIGKILL\t*\t*", l));
        down == 2
    });
}

#[test]
fn stopped_child_shows_t() {
    let mut dp = Dp::interactive(&[]);
    dp.args("nap", "sleep\t600");
    let pid = dp.start("nap");
    dp.cmd("service.signal\tnap\tSIGSTOP", &[]);
    assert!(wait_until(T, || proc_stat(pid).0 == "T"), "never stopped");
    dp.send("service.stat\tnap");
    dp.expect(&format!("service.stat\tnap\t{pid}\tT\t*\t*\t*\t*\t*\t1\t3"));
    dp.send("service.signal\tnap\tSIGKILL");
    dp.wait_down("nap", T);
}

#[test]
fn errors_and_the_star_listing() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd_err("service.stat", "Expected service name");
    dp.cmd_err("service.stat\t", "Expected service name");
    dp.cmd_err("service.stat\tnope", "No such service");
    dp.args("down1", "true");
    dp.cmd_err("service.stat\tdown1", "service is not running");
    dp.cmd_err("service.stat\t*\tcolor=blue", "invalid filter \"color=blue\"");
    dp.cmd_err("service.stat\t*\tname=a\tstate=gone", "invalid filter \"state=gone\"");
    // Nothing up yet: just the end line.
    dp.cmd("service.stat\t*", &["service.stat.end\t0"]);
    dp.args("b", "sleep\t600");
    dp.args("a", "sleep\t600");
    dp.cmd("service.tags\ta\tgroup=x", &["service.tags\ta\tgroup=x"]);
    let pb = dp.start("b");
    let pa = dp.start("a");
    thread::sleep(ms(100));
    let t = Instant::now();
    dp.cmd(
        "service.stat\t*",
        &[
            &format!("service.stat\ta\t{pa}\tS\t*\t*\t*\t*\t*\t1\t3"),
            &format!("service.stat\tb\t{pb}\tS\t*\t*\t*\t*\t*\t1\t3"),
            "service.stat.end\t2",
        ],
    );
    assert!(t.elapsed() < secs(2));
    dp.cmd(
        "service.stat\t*\ttag=group=x",
        &[&format!("service.stat\ta\t{pa}\tS\t*\t*\t*\t*\t*\t1\t3"), "service.stat.end\t1"],
    );
    dp.cmd("service.stat\t*\tname=z*", &["service.stat.end\t0"]);
    // The single form answers with no end line; surplus fields are ignored.
    dp.cmd("service.stat\tb\textra", &[&format!("service.stat\tb\t{pb}\tS\t*\t*\t*\t*\t*\t1\t3")]);
    for n in ["a", "b"] {
        dp.send(&format!("service.signal\t{n}\tSIGKILL"));
        dp.wait_down(n, T);
    }
    dp.cmd_err("service.stat\ta", "service is not running");
    dp.cmd("service.stat\t*", &["service.stat.end\t0"]);
}

#[test]
fn many_running_services_are_listed_in_full() {
    // More lines than the 2 KiB output buffer: the listing pauses and
    // resumes like a statedump.
    let mut dp = Dp::interactive(&[]);
    let mut cmds = String::new();
    for k in 0..60 {
        cmds.push_str(&format!("service.args\ts{k:02}\tsleep\t600\nservice.start\ts{k:02}\n"));
    }
    dp.send_raw(cmds.as_bytes());
    let mut up = 0;
    dp.wait_for("60 up", secs(20), |l| {
        up += usize::from(matches("service.state\t*\tup\t*\t*\t-\t-\t0\t-", l));
        up == 60
    });
    dp.send("service.stat\t*");
    let got = dp.wait_for("stat end", T, |l| l.starts_with("service.stat.end\t"));
    assert_eq!(got.last().unwrap(), "service.stat.end\t60");
    let names: Vec<String> = got.iter().filter(|l| l.starts_with("service.stat\t")).map(|l| field(l, 1)).collect();
    let want: Vec<String> = (0..60).map(|k| format!("s{k:02}")).collect();
    assert_eq!(names, want);
    let mut kill = String::new();
    for k in 0..60 {
        kill.push_str(&format!("service.signal\ts{k:02}\tSIGKILL\n"));
    }
    dp.send_raw(kill.as_bytes());
}
