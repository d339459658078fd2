//! `statedump` (docs/protocol.md §3.2): handles bytewise by name, then five
//! lines per service by name, then signals; with 100 services and 20
//! handles.

mod util;
use util::*;

const FRESH: [&str; 7] = [
    "fd.state\tcontrol.cmd\tspecial\twrite\tdaemonproxy command pipe",
    "fd.state\tcontrol.event\tspecial\tread\tdaemonproxy event stream",
    "fd.state\tcontrol.socket\tspecial\tread,write\tdaemonproxy control socket",
    "fd.state\tnull\tspecial\tread,write\t/dev/null",
    "fd.state\tstderr\tfile\twrite\tunknown",
    "fd.state\tstdin\tfile\tread\tunknown",
    "fd.state\tstdout\tfile\twrite\tunknown",
];

#[test]
fn fresh_daemon() {
    let mut dp = Dp::interactive(&[]);
    dp.send("statedump");
    dp.sync_expect(&FRESH);
    // arguments are ignored
    dp.send("statedump\tplease\tnow");
    dp.sync_expect(&FRESH);
}

#[test]
fn one_service_five_lines_in_order() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("service.args\tbar\ta\tb\tc", &["service.args\tbar\ta\tb\tc"]);
    let mut want: Vec<&str> = FRESH.to_vec();
    want.extend_from_slice(&[
        "service.state\tbar\tdown\t-\t-\t-\t-\t-\t-",
        "service.tags\tbar\t",
        "service.args\tbar\ta\tb\tc",
        "service.fds\tbar\tnull\tnull\tnull",
        "service.auto_up\tbar\t-",
    ]);
    dp.send("statedump");
    dp.sync_expect(&want);
}

/// A deterministic shuffle (LCG), so the creation order differs from the
/// sorted order.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let j = (seed >> 33) as usize % (i + 1);
        v.swap(i, j);
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    v
}

#[test]
fn hundred_services_twenty_handles_in_order() {
    let mut dp = Dp::interactive(&[]);
    // 100 service names exercising bytewise order: '-' < '.' < digits <
    // upper < '_' < lower, a prefix before its extensions
    let mut names: Vec<String> = [
        "a", "a-", "a.", "a0", "aA", "aa", "ab", "a.b", "a-b", "A", "Z", "z", "0", "9z", "-", ".", "--", "..", "A-",
        "_", "a_", "_z", "b",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for i in 0..77 {
        names.push(format!("svc{}", i * 5 % 77));
    }
    assert_eq!(names.len(), 100);
    shuffle(&mut names, 42);
    // 20 handles: 10 pipes, names interleaving with the std handles
    let mut pipes: Vec<(String, String)> = Vec::new();
    for (i, base) in ["log", "nul", "std", "stdz", "c", "control", "n", "Log", "x9", "_"].iter().enumerate() {
        let base = if *base == "_" { "z.last".to_string() } else { base.to_string() };
        pipes.push((format!("{base}.r{i}"), format!("{base}.w{i}")));
    }
    // a burst of commands, checked against the broadcasts
    let mut burst = String::new();
    let mut echoes = Vec::new();
    let mut svc_lines: Vec<(String, Vec<String>)> = Vec::new();
    let mut running = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let mut lines = Vec::new();
        let args = if i % 20 == 3 {
            running.push(n.clone());
            "sleep\t20".to_string()
        } else {
            format!("prog-{n}\targ\t{i}")
        };
        burst.push_str(&format!("service.args\t{n}\t{args}\n"));
        echoes.push(format!("service.args\t{n}\t{args}"));
        let state = if i % 20 == 3 {
            format!("service.state\t{n}\tup\t*\t*\t-\t-\t*\t-")
        } else {
            format!("service.state\t{n}\tdown\t-\t-\t-\t-\t-\t-")
        };
        lines.push(state);
        let tags = if i % 3 == 0 { format!("k={i}\tx") } else { String::new() };
        if i % 3 == 0 {
            burst.push_str(&format!("service.tags\t{n}\t{tags}\n"));
            echoes.push(format!("service.tags\t{n}\t{tags}"));
        }
        lines.push(format!("service.tags\t{n}\t{tags}"));
        lines.push(format!("service.args\t{n}\t{args}"));
        if i % 4 == 1 {
            burst.push_str(&format!("service.fds\t{n}\tnull\tstderr\tstderr\n"));
            echoes.push(format!("service.fds\t{n}\tnull\tstderr\tstderr"));
            lines.push(format!("service.fds\t{n}\tnull\tstderr\tstderr"));
        } else {
            lines.push(format!("service.fds\t{n}\tnull\tnull\tnull"));
        }
        if i % 5 == 2 {
            burst.push_str(&format!("service.auto_up\t{n}\t7\tSIGUSR2\tSIGHUP\n"));
            echoes.push(format!("service.auto_up\t{n}\t7\tSIGUSR2\tSIGHUP"));
            lines.push(format!("service.auto_up\t{n}\t7\tSIGUSR2\tSIGHUP"));
        } else {
            lines.push(format!("service.auto_up\t{n}\t-"));
        }
        svc_lines.push((n.clone(), lines));
    }
    let mut fd_lines: Vec<(String, String)> = FRESH.iter().map(|l| (field(l, 1), l.to_string())).collect();
    for (r, w) in &pipes {
        burst.push_str(&format!("fd.pipe\t{r}\t{w}\n"));
        echoes.push(format!("fd.state\t{r}\tpipe\tfrom\t{w}"));
        echoes.push(format!("fd.state\t{w}\tpipe\tto\t{r}"));
        fd_lines.push((r.clone(), format!("fd.state\t{r}\tpipe\tfrom\t{w}")));
        fd_lines.push((w.clone(), format!("fd.state\t{w}\tpipe\tto\t{r}")));
    }
    assert_eq!(fd_lines.len(), 27);
    dp.send_raw(burst.as_bytes());
    let echo_refs: Vec<&str> = echoes.iter().map(|s| s.as_str()).collect();
    dp.sync_expect(&echo_refs);
    for n in &running {
        dp.start(n);
    }
    // the expected dump
    fd_lines.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    svc_lines.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut want: Vec<String> = fd_lines.into_iter().map(|(_, l)| l).collect();
    for (_, l) in svc_lines {
        want.extend(l);
    }
    assert_eq!(want.len(), 27 + 500);
    let want_refs: Vec<&str> = want.iter().map(|s| s.as_str()).collect();
    dp.send("statedump");
    dp.sync_expect(&want_refs);
    // a sanity check of the sort helper against a few known pairs
    let s = sorted(vec!["a.".into(), "a-".into(), "a".into(), "A".into(), "a0".into()]);
    assert_eq!(s, vec!["A", "a", "a-", "a.", "a0"]);
}

#[test]
fn signals_come_last_oldest_first() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("service.args\tsvc\ttrue", &["service.args\tsvc\ttrue"]);
    dp.signal(libc::SIGUSR2);
    dp.sync_until("signal\tSIGUSR2\t*\t1", T);
    dp.signal(libc::SIGHUP);
    dp.sync_until("signal\tSIGHUP\t*\t1", T);
    dp.signal(libc::SIGUSR2);
    dp.sync_until("signal\tSIGUSR2\t*\t2", T);
    let mut want: Vec<&str> = FRESH.to_vec();
    want.extend_from_slice(&[
        "service.state\tsvc\tdown\t-\t-\t-\t-\t-\t-",
        "service.tags\tsvc\t",
        "service.args\tsvc\ttrue",
        "service.fds\tsvc\tnull\tnull\tnull",
        "service.auto_up\tsvc\t-",
        "signal\tSIGHUP\t*\t1",
        "signal\tSIGUSR2\t*\t2",
    ]);
    dp.send("statedump");
    let got = dp.sync_expect(&want);
    let ts: Vec<i64> = got[got.len() - 2..].iter().map(|l| field_i64(l, 2)).collect();
    assert!(ts[0] <= ts[1] && ts[1] <= mono(), "receipt times: {got:?}");
    // cleared signals leave the dump
    dp.cmd("signal.clear\tSIGHUP\t1", &[]);
    dp.send("statedump");
    let got = dp.sync();
    assert_eq!(got.last().map(|l| field(l, 1)), Some("SIGUSR2".to_string()), "{got:#?}");
    assert!(!got.iter().any(|l| l.starts_with("signal\tSIGHUP")), "{got:#?}");
}
