//! `service.query` (extension, issue 9): services selected by name
//! pattern, tag and state among 1,000, in one round trip; filter errors;
//! listings go to the issuer only.

mod util;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use util::*;

const N: usize = 1000;

fn tags(k: usize) -> String {
    format!("user=u{}\tsession=s{}\tgroup=g{}", k % 7, k % 13, k % 3)
}

/// 1,000 services `j000`..`j999` with tags; the first 10 running.
fn thousand() -> Dp {
    let mut dp = Dp::interactive(&[]);
    let mut cmds = String::new();
    for k in 0..N {
        let _ = writeln!(cmds, "service.tags\tj{k:03}\t{}", tags(k));
    }
    for k in 0..10 {
        let _ = writeln!(cmds, "service.args\tj{k:03}\tsleep\t600\nservice.start\tj{k:03}");
    }
    dp.send_raw(cmds.as_bytes());
    let mut up = 0;
    dp.wait_for("10 up", secs(20), |l| {
        up += usize::from(matches("service.state\t*\tup\t*\t*\t-\t-\t0\t-", l));
        up == 10
    });
    dp.sync();
    dp
}

/// Runs a query; returns the matched names (checking each line's layout
/// and the end line's count).
fn run_query(dp: &mut Dp, filters: &str) -> BTreeSet<String> {
    let cmd = if filters.is_empty() { "service.query".to_string() } else { format!("service.query\t{filters}") };
    dp.send(&cmd);
    let lines = dp.sync();
    let (end, matches_): (Vec<&String>, Vec<&String>) =
        lines.iter().partition(|l| l.starts_with("service.query.end\t"));
    assert_eq!(end.len(), 1, "one end line for {cmd:?}: {lines:#?}");
    assert_eq!(end[0], &format!("service.query.end\t{}", matches_.len()));
    let mut names = BTreeSet::new();
    let mut prev = String::new();
    for l in matches_ {
        let f: Vec<&str> = l.splitn(5, '\t').collect();
        assert_eq!(f[0], "service.match", "{l:?}");
        assert!(f[1] > prev.as_str(), "matches in name order");
        prev = f[1].to_string();
        let k: usize = f[1][1..].parse().unwrap();
        assert_eq!(f[4], tags(k), "TAGS field");
        match f[2] {
            "up" => assert!(f[3].parse::<i32>().is_ok() && k < 10),
            "down" => assert!(f[3] == "-" && k >= 10),
            other => panic!("state {other}"),
        }
        names.insert(f[1].to_string());
    }
    names
}

fn expected(pred: impl Fn(usize) -> bool) -> BTreeSet<String> {
    (0..N).filter(|&k| pred(k)).map(|k| format!("j{k:03}")).collect()
}

#[test]
fn queries_among_a_thousand() {
    let mut dp = thousand();
    assert_eq!(run_query(&mut dp, "tag=session=s5"), expected(|k| k % 13 == 5));
    assert_eq!(run_query(&mut dp, "tag=session=s5\ttag=user=u2"), expected(|k| k % 13 == 5 && k % 7 == 2));
    assert_eq!(
        run_query(&mut dp, "tag=group=g1\tname=j1?7"),
        expected(|k| k % 3 == 1 && (100..200).contains(&k) && k % 10 == 7)
    );
    assert_eq!(run_query(&mut dp, "state=up"), expected(|k| k < 10));
    assert_eq!(run_query(&mut dp, "state=up\ttag=group=g0"), expected(|k| k < 10 && k % 3 == 0));
    assert_eq!(run_query(&mut dp, "state=down,start"), expected(|k| k >= 10));
    assert_eq!(run_query(&mut dp, "tag=session=s1*"), expected(|k| [1, 10, 11, 12].contains(&(k % 13))));
    assert_eq!(run_query(&mut dp, ""), expected(|_| true));
    assert_eq!(run_query(&mut dp, "\t"), expected(|_| true));
    assert!(run_query(&mut dp, "tag=session=s99").is_empty());
    assert!(run_query(&mut dp, "state=limit").is_empty());
    assert!(run_query(&mut dp, "state=start").is_empty());
    let t = std::time::Instant::now();
    for _ in 0..20 {
        run_query(&mut dp, "tag=user=u3");
    }
    assert!(t.elapsed() < secs(10), "20 queries over 1,000 services took {:?}", t.elapsed());
    let mut kill = String::new();
    for k in 0..10 {
        let _ = writeln!(kill, "service.signal\tj{k:03}\tSIGKILL");
    }
    dp.send_raw(kill.as_bytes());
}

#[test]
fn query_states_and_errors() {
    let mut dp = Dp::interactive(&[]);
    dp.args("later", "true");
    dp.cmd("service.start\tlater\t99999999", &["service.state\tlater\tstart\t99999999\t-\t-\t-\t-\t-"]);
    dp.args("crash", "false");
    dp.send("service.auto_up\tcrash\t0.02\talways\tlimit=1");
    dp.wait_match("service.limit\tcrash\t*\t1\t-", T);
    dp.cmd("service.query\tstate=start", &["service.match\tlater\tstart\t-\t", "service.query.end\t1"]);
    dp.cmd("service.query\tstate=limit", &["service.match\tcrash\tdown\t-\t", "service.query.end\t1"]);
    dp.cmd("service.query\tstate=down", &["service.match\tcrash\tdown\t-\t", "service.query.end\t1"]);
    dp.cmd("service.query\tname=\\*", &["service.query.end\t0"]);
    for bad in ["bogus", "name", "tag=", "state=", "state=up,sleeping", "Name=x", "tag"] {
        dp.cmd_err(&format!("service.query\tname=*\t{bad}"), &format!("invalid filter \"{bad}\""));
    }
    dp.cmd("service.start\tlater\t-", &["service.state\tlater\tdown\t-\t-\t-\t-\t-\t-"]);
}

#[test]
fn listings_reach_only_the_issuer() {
    // An observer controller (events only, like a 1.1 client that never
    // sends a command) logs what it receives.
    let mut dp = Dp::interactive(&[]);
    dp.args("obs", "sh\t-c\texec cat > observer.log");
    dp.fds("obs", "control.event\tnull\tstderr");
    dp.start("obs");
    dp.args("nap", "sleep\t600");
    let pid = dp.start("nap");
    dp.cmd(
        "service.query",
        &[&format!("service.match\tnap\tup\t{pid}\t"), "service.match\tobs\tup\t*\t", "service.query.end\t2"],
    );
    dp.send("service.stat\tnap");
    dp.send("service.stat\t*");
    dp.send("service.query\tbad");
    let got = dp.sync();
    assert_eq!(got.len(), 5, "{got:#?}");
    dp.send("service.signal\tnap\tSIGKILL");
    dp.wait_down("nap", T);
    dp.cmd("echo\tdone-marker", &["done-marker"]);
    assert!(wait_until(T, || dp.dir.read("observer.log").contains("service.state\tnap\tdown\t")));
    let log = dp.dir.read("observer.log");
    for l in log.lines() {
        let name = l.split('\t').next().unwrap();
        assert!(["service.state", "service.args"].contains(&name), "the observer got {}", vis(l));
    }
}
