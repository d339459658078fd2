//! The log pipe acceptance test (issue 2, docs/protocol.md §6.3): a writer
//! service and a logger service joined by `fd.pipe log.r log.w`; 10,000
//! numbered lines pass while the writer is restarted 5 times and the
//! logger twice, none lost or duplicated.
//!
//! Why the test is sound: daemonproxy holds both pipe ends, so data in
//! the pipe survives any restart. The only loss or duplication could come
//! from the helpers themselves, so both stop only at a safe point: their
//! SIGTERM handler just sets a flag that is checked between whole units of
//! work. The writer writes line N (at most 6 bytes, so one atomic pipe
//! write) and only then records N in a counter file (write + rename); the
//! next run resumes at N+1. The logger writes every byte it has read
//! before it looks at the flag.

mod util;
use std::time::Instant;
use util::*;

const WRITER: &str = r#"use strict; use warnings;
my $stop = 0;
$SIG{TERM} = sub { $stop = 1 };
my $n = 0;
if (open(my $f, '<', 'count')) { my $l = <$f>; $n = $l + 0 if defined $l; close $f; }
while (!$stop && $n < 10000) {
    my $line = ($n + 1) . "\n";
    my $off = 0;
    while ($off < length $line) {
        my $w = syswrite(STDOUT, $line, length($line) - $off, $off);
        if (!defined $w) { next if $!{EINTR}; die "writer: write: $!"; }
        $off += $w;
    }
    $n++;
    open(my $f, '>', 'count.tmp') or die "writer: count.tmp: $!";
    print $f $n;
    close $f or die "writer: close: $!";
    rename('count.tmp', 'count') or die "writer: rename: $!";
    select(undef, undef, undef, 0.003) if $n % 10 == 0;
}
exit 0;
"#;

const LOGGER: &str = r#"use strict; use warnings;
my $stop = 0;
$SIG{TERM} = sub { $stop = 1 };
while (!$stop) {
    my $rin = ''; vec($rin, 0, 1) = 1;
    my $nfound = select(my $rout = $rin, undef, undef, 0.05);
    next if !defined $nfound || $nfound <= 0;
    my $buf;
    my $r = sysread(STDIN, $buf, 65536);
    if (!defined $r) { next if $!{EINTR} || $!{EAGAIN}; die "logger: read: $!"; }
    last if $r == 0;
    my $off = 0;
    while ($off < $r) {
        my $w = syswrite(STDOUT, $buf, $r - $off, $off);
        if (!defined $w) { next if $!{EINTR}; die "logger: write: $!"; }
        $off += $w;
    }
}
exit 0;
"#;

/// How many `up` lines of `svc` arrived so far.
fn ups(dp: &Dp, svc: &str) -> usize {
    let p = format!("service.state\t{svc}\tup\t");
    dp.seen.iter().filter(|l| l.starts_with(&p)).count()
}

fn count(dp: &Dp) -> u32 {
    dp.dir.read("count").trim().parse().unwrap_or(0)
}

#[test]
fn ten_thousand_lines_survive_restarts() {
    let dir = TempDir::new("logpipe");
    dir.write("writer.pl", WRITER);
    dir.write("logger.pl", LOGGER);
    let mut dp = Dp::interactive_in(dir, &[]);
    dp.cmd("fd.pipe\tlog.r\tlog.w", &["fd.state\tlog.r\tpipe\tfrom\tlog.w", "fd.state\tlog.w\tpipe\tto\tlog.r"]);
    dp.cmd("fd.open\tout\twrite,create,append\tout.txt", &["fd.state\tout\tfile\twrite,append,create\tout.txt"]);
    dp.args("logger", "perl\tlogger.pl");
    dp.fds("logger", "log.r\tout\tstderr");
    dp.args("writer", "perl\twriter.pl");
    dp.fds("writer", "null\tlog.w\tstderr");
    dp.send("service.auto_up\tlogger\t1\talways");
    dp.expect("service.state\tlogger\tstart\t*\t-\t-\t-\t-\t-");
    dp.expect("service.auto_up\tlogger\t1\talways");
    dp.send("service.auto_up\twriter\t1\talways");
    dp.wait_match("service.auto_up\twriter\t1\talways", T);
    // (threshold, service to restart)
    let plan = [
        (1200, "writer"),
        (2500, "logger"),
        (3300, "writer"),
        (4800, "writer"),
        (6000, "logger"),
        (6800, "writer"),
        (8200, "writer"),
    ];
    // both running
    let end = Instant::now() + T;
    while ups(&dp, "writer") == 0 || ups(&dp, "logger") == 0 {
        assert!(Instant::now() < end, "services did not come up; stderr:\n{}", dp.err.text());
        dp.recv(ms(100));
    }
    let start = Instant::now();
    for (threshold, svc) in plan {
        let reached = wait_until(secs(15), || count(&dp) >= threshold);
        assert!(reached, "writer stuck at {} before {threshold}; stderr:\n{}", count(&dp), dp.err.text());
        assert!(count(&dp) < 10000, "writer finished too early to restart {svc}");
        let n0 = ups(&dp, svc);
        dp.send(&format!("service.signal\t{svc}\tSIGTERM"));
        let down = format!("service.state\t{svc}\tdown\t");
        dp.wait_for(&format!("{svc} down"), T, |l| l.starts_with(&down));
        let upp = format!("service.state\t{svc}\tup\t");
        dp.wait_for(&format!("{svc} up again"), secs(4), |l| l.starts_with(&upp));
        assert_eq!(ups(&dp, svc), n0 + 1);
    }
    assert_eq!(ups(&dp, "writer"), 6, "writer started once and restarted 5 times");
    assert_eq!(ups(&dp, "logger"), 3, "logger started once and restarted twice");
    // all lines through
    let expected: String = (1..=10000).map(|i| format!("{i}\n")).collect();
    let done = wait_until(secs(20), || dp.dir.read("out.txt").len() >= expected.len());
    std::thread::sleep(ms(300));
    let out = dp.dir.read("out.txt");
    assert!(done, "only {} of {} bytes arrived; count {}", out.len(), expected.len(), count(&dp));
    if out != expected {
        let got: Vec<&str> = out.lines().collect();
        let mut seen = std::collections::HashMap::new();
        for l in &got {
            *seen.entry(*l).or_insert(0) += 1;
        }
        let missing: Vec<u32> =
            (1..=10000u32).filter(|i| !seen.contains_key(i.to_string().as_str())).take(20).collect();
        let dups: Vec<&&str> = seen.iter().filter(|(_, c)| **c > 1).map(|(l, _)| l).take(20).collect();
        panic!("output differs: {} lines, missing (first 20) {missing:?}, duplicated {dups:?}", got.len());
    }
    dp.send("service.auto_up\twriter\t-");
    dp.send("service.auto_up\tlogger\t-");
    assert!(start.elapsed() < secs(25));
}
