//! The model test (issue 8): random sequences of valid and invalid commands
//! sent to the real binary (`-i`), each reply checked against a small model
//! of docs/protocol.md — services, handles, the log filter, the guard — written
//! here without looking at the daemon's code.
//!
//! After every batch of commands an `echo` token syncs; the lines before it
//! must be exactly what the model predicts (errors with their docs/protocol.md §2.7 suffix,
//! warnings, broadcasts, echoes, in order), apart from the asynchronous
//! `up`/`down` lines of services the test really started, which it learns
//! from. A `statedump` now and then, and one at the end, must equal the
//! model's state; at the end the daemon must still be running.
//!
//! Cases come from a fixed list of seeds: `DAEMONPROXY_MODEL_CASES` (default
//! 400, about 4 s; `make check` 10,000) cases of `DAEMONPROXY_MODEL_STEPS` (default 250)
//! commands. A failure names its seed and shows the last commands;
//! `DAEMONPROXY_MODEL_SEED=N` replays that one case.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use util::*;

/// A small PRNG (xorshift64*), so a seed replays the same case.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Run {
    /// Never ran, or its start was cancelled.
    Never,
    /// A start is pending at this second.
    Pending(i64),
    /// Started for real: `up`/`down` not seen yet.
    Busy,
    /// Ran and ended: the reason and value of its `down` line.
    Ended(String, String),
}

#[derive(Clone, Debug)]
struct Svc {
    tags: String,
    args: String,
    fds: Option<String>,
    /// Interval as the events show it.
    interval: String,
    /// Raw triggers, if auto-up is on.
    triggers: Option<String>,
    run: Run,
}

impl Svc {
    fn new() -> Svc {
        Svc {
            tags: String::new(),
            args: String::new(),
            fds: None,
            interval: "1".into(),
            triggers: None,
            run: Run::Never,
        }
    }
}

#[derive(Clone, Debug)]
enum Handle {
    /// A pipe end (or socketpair end): FLAGS, peer, identity.
    Pipe { flags: String, peer: Option<String>, id: u64 },
    /// Anything else: the rest of its `fd.state` line after the name.
    Other(String),
}

/// What the daemon should hold.
struct Model {
    svcs: BTreeMap<String, Svc>,
    handles: BTreeMap<String, Handle>,
    next_pipe: u64,
    filter: usize,
    guard: i64,
}

const FILTERS: [&str; 7] = ["none", "trace", "debug", "info", "warning", "error", "fatal"];
const CONSTANTS: [&str; 4] = ["control.cmd", "control.event", "control.socket", "null"];
const SERVICES: [&str; 6] = ["s0", "s1", "s2", "svc.a", "svc-b_9", "x"];
const HANDLES: [&str; 8] = ["h0", "h1", "h2", "p.r", "p.w", "stdin", "stderr", "f_1"];

fn valid_name(n: &str) -> bool {
    (1..=31).contains(&n.len()) && n.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// The docs/protocol.md §2.3 name errors, or `None` for a valid name.
fn name_error(n: Option<&str>, what: &str) -> Option<String> {
    match n {
        None | Some("") => Some(format!("Expected {what} name")),
        Some(n) if !valid_name(n) => Some(format!("Invalid {what} name")),
        _ => None,
    }
}

/// `service.state` pattern of a service as a statedump shows it.
fn state_pat(name: &str, s: &Svc) -> String {
    match &s.run {
        Run::Never => format!("service.state\t{name}\tdown\t-\t-\t-\t-\t-\t-"),
        Run::Pending(ts) => format!("service.state\t{name}\tstart\t{ts}\t-\t-\t-\t-\t-"),
        Run::Busy => unreachable!("busy services are waited for before a dump"),
        Run::Ended(how, v) => format!("service.state\t{name}\tdown\t*\t*\t{how}\t{v}\t*\t*"),
    }
}

impl Model {
    fn handle_line(&self, name: &str) -> String {
        match &self.handles[name] {
            Handle::Pipe { flags, peer, .. } => {
                format!("fd.state\t{name}\tpipe\t{flags}\t{}", peer.as_deref().unwrap_or("?"))
            }
            Handle::Other(rest) => format!("fd.state\t{name}\t{rest}"),
        }
    }

    /// docs/protocol.md §6.3: the other end of a replaced or deleted pipe end
    /// shows peer `?`.
    fn forget(&mut self, name: &str) {
        if let Some(Handle::Pipe { peer: Some(p), id, .. }) = self.handles.remove(name)
            && let Some(Handle::Pipe { peer: pp, id: pid, .. }) = self.handles.get_mut(&p)
            && *pid == id
            && pp.as_deref() == Some(name)
        {
            *pp = None;
        }
    }

    fn dump(&self) -> Vec<String> {
        let mut v: Vec<String> = self.handles.keys().map(|n| self.handle_line(n)).collect();
        for (n, s) in &self.svcs {
            v.push(state_pat(n, s));
            v.push(format!("service.tags\t{n}\t{}", s.tags));
            v.push(format!("service.args\t{n}\t{}", s.args));
            v.push(format!("service.fds\t{n}\t{}", s.fds.as_deref().unwrap_or("null\tnull\tnull")));
            v.push(match &s.triggers {
                Some(t) => format!("service.auto_up\t{n}\t{}\t{t}", s.interval),
                None => format!("service.auto_up\t{n}\t-"),
            });
        }
        v
    }

    fn busy(&self) -> Vec<String> {
        self.svcs.iter().filter(|(_, s)| s.run == Run::Busy).map(|(n, _)| n.clone()).collect()
    }
}

/// One generated command: the bytes sent (without LF) and the patterns of
/// the lines it must produce.
struct Step {
    line: Vec<u8>,
    expect: Vec<String>,
}

fn err(msg: &str, line: &str) -> Vec<String> {
    vec![err_for(msg, line)]
}

/// Random printable text without TAB or LF (spaces allowed).
fn text(r: &mut Rng, max: usize) -> String {
    let n = r.below(max + 1);
    (0..n).map(|_| (b' ' + r.below(95) as u8) as char).collect()
}

fn service_name(r: &mut Rng, m: &Model) -> String {
    loop {
        let n = match r.below(20) {
            0 => "bad name".to_string(),
            1 => "a".repeat(32),
            2 => String::new(),
            3 => "a".repeat(31),
            _ => r.pick(&SERVICES).to_string(),
        };
        // Commands never name a service that runs: its state is not known.
        if m.svcs.get(&n).is_none_or(|s| s.run != Run::Busy) {
            return n;
        }
    }
}

fn handle_name(r: &mut Rng) -> String {
    match r.below(20) {
        0 => "bad/name".to_string(),
        1 => String::new(),
        2 => r.pick(&CONSTANTS).to_string(),
        _ => r.pick(&HANDLES).to_string(),
    }
}

/// `service.tags` / `service.args`.
fn gen_text_field(r: &mut Rng, m: &mut Model, which: &str) -> Step {
    let name = service_name(r, m);
    let value = match r.below(6) {
        0 => None,
        1 => Some(String::new()),
        2 if which == "args" => {
            Some(r.pick(&["true", "sh\t-c\texit 3", "/nonexistent/prog", "sleep\t0.01"]).to_string())
        }
        // Random args never name a real program: a start only fails to exec.
        _ if which == "args" => Some(format!("/nonexistent/{}\t{}", text(r, 12), text(r, 8))),
        _ => Some(format!("{}\t{}", text(r, 12), text(r, 8))),
    };
    let line = match &value {
        None => format!("service.{which}\t{name}"),
        Some(v) => format!("service.{which}\t{name}\t{v}"),
    };
    if let Some(e) = name_error(Some(&name), "service") {
        return Step { expect: err(&e, &line), line: line.into_bytes() };
    }
    let v = value.unwrap_or_default();
    let s = m.svcs.entry(name.clone()).or_insert_with(Svc::new);
    if which == "tags" {
        s.tags = v.clone();
    } else {
        s.args = v.clone();
    }
    Step { expect: vec![format!("service.{which}\t{name}\t{v}")], line: line.into_bytes() }
}

fn gen_fds(r: &mut Rng, m: &mut Model) -> Step {
    let name = service_name(r, m);
    let n = r.below(5);
    let entries: Vec<String> = (0..n)
        .map(|_| match r.below(10) {
            0 => "-".to_string(),
            1 => "bad entry".to_string(),
            2 => String::new(),
            3 => "control.event".to_string(),
            _ => handle_name(r),
        })
        .collect();
    let list = entries.join("\t");
    let bare = n == 0 && r.chance(50);
    let line = if bare { format!("service.fds\t{name}") } else { format!("service.fds\t{name}\t{list}") };
    if let Some(e) = name_error(Some(&name), "service") {
        return Step { expect: err(&e, &line), line: line.into_bytes() };
    }
    let listed: Vec<&str> = if list.is_empty() { vec![] } else { list.split('\t').collect() };
    if listed.iter().any(|e| !e.is_empty() && !valid_name(e)) {
        return Step { expect: err("invalid fd name", &line), line: line.into_bytes() };
    }
    let mut expect = Vec::new();
    let mut warned = BTreeSet::new();
    for e in &listed {
        if !e.is_empty() && *e != "-" && !m.handles.contains_key(*e) && warned.insert(*e) {
            expect.push(format!("warning\tfd \"{e}\" is not yet defined"));
        }
    }
    m.svcs.entry(name.clone()).or_insert_with(Svc::new).fds = Some(list.clone());
    expect.push(format!("service.fds\t{name}\t{list}"));
    Step { expect, line: line.into_bytes() }
}

fn gen_auto_up(r: &mut Rng, m: &mut Model) -> Step {
    let name = service_name(r, m);
    // (text, shown, error)
    let ivs: [(&str, Option<&str>, Option<&str>); 10] = [
        ("9223372036.9", None, Some("Expected integer")),
        ("1", Some("1"), None),
        ("5", Some("5"), None),
        ("0.5", Some("0.5"), None),
        ("0.250", Some("0.25"), None),
        ("-", None, None),
        ("0", None, Some("invalid interval")),
        ("2147483648", None, Some("invalid interval")),
        ("0.001", None, Some("invalid interval")),
        ("x1", None, Some("Expected integer")),
    ];
    let (iv, shown, iv_err) = ivs[r.below(ivs.len())];
    // (raw, kept, error): only signal triggers, never sent, so never fired.
    let trs: [(Option<&str>, bool, bool); 7] = [
        (None, false, false),
        (Some("HUP"), true, false),
        (Some("HUP\tsigterm"), true, false),
        (Some("USR1\t\tBOGUS"), true, false),
        (Some(""), false, false),
        (Some("BOGUS"), false, true),
        (Some("2"), false, true),
    ];
    let (tr, kept, tr_err) = trs[r.below(trs.len())];
    let line = match tr {
        None => format!("service.auto_up\t{name}\t{iv}"),
        Some(t) => format!("service.auto_up\t{name}\t{iv}\t{t}"),
    };
    if let Some(e) = name_error(Some(&name), "service") {
        return Step { expect: err(&e, &line), line: line.into_bytes() };
    }
    if let Some(e) = iv_err {
        return Step { expect: err(e, &line), line: line.into_bytes() };
    }
    if tr_err {
        return Step { expect: err("unable to set auto_up triggers", &line), line: line.into_bytes() };
    }
    let s = m.svcs.entry(name.clone()).or_insert_with(Svc::new);
    if let Some(v) = shown {
        s.interval = v.to_string();
    }
    s.triggers = if kept { tr.map(str::to_string) } else { None };
    let shown = match &s.triggers {
        Some(t) => format!("service.auto_up\t{name}\t{}\t{t}", s.interval),
        None => format!("service.auto_up\t{name}\t-"),
    };
    Step { expect: vec![shown], line: line.into_bytes() }
}

fn gen_start(r: &mut Rng, m: &mut Model) -> Step {
    let name = service_name(r, m);
    let future = mono() + 50_000 + r.below(1000) as i64;
    let when = match r.below(7) {
        0 | 1 => None,
        // This overflowed (a panic in a debug build), found while writing
        // the fuzz targets.
        6 => Some("9223372036.9".to_string()),
        2 => Some(future.to_string()),
        3 => Some("-".to_string()),
        4 => Some("soon".to_string()),
        _ => Some(format!("{future}.5x")),
    };
    let line = match &when {
        None => format!("service.start\t{name}"),
        Some(w) => format!("service.start\t{name}\t{w}"),
    };
    let fail = |e: &str| Step { expect: err(e, &line), line: line.clone().into_bytes() };
    if let Some(e) = name_error(Some(&name), "service") {
        return fail(&e);
    }
    let Some(s) = m.svcs.get_mut(&name) else { return fail("No such service") };
    let at = match when.as_deref() {
        Some("-") => {
            if !matches!(s.run, Run::Pending(_)) {
                return fail("no service.start pending");
            }
            s.run = Run::Never;
            return Step { expect: vec![state_pat(&name, s)], line: line.into_bytes() };
        }
        None => None,
        Some(w) => match w.parse::<i64>() {
            Ok(t) => Some(t),
            Err(_) => return fail("invalid timestamp"),
        },
    };
    if s.args.split('\t').next().is_none_or(str::is_empty) {
        return fail("no args configured for service");
    }
    match at {
        Some(t) => {
            s.run = Run::Pending(t);
            Step { expect: vec![state_pat(&name, s)], line: line.into_bytes() }
        }
        None => {
            s.run = Run::Busy;
            Step { expect: vec![format!("service.state\t{name}\tstart\t*\t-\t-\t-\t-\t-")], line: line.into_bytes() }
        }
    }
}

fn gen_signal(r: &mut Rng, m: &mut Model) -> Step {
    let name = service_name(r, m);
    let sig = r.pick(&["SIGTERM", "HUP", "0", "term", "", "BOGUS", "99999", "9x"]);
    let flags = r.pick(&["", "group", "grp", "group,", "-"]);
    let has_flags = !flags.is_empty() || r.chance(50);
    let line = if has_flags {
        format!("service.signal\t{name}\t{sig}\t{flags}")
    } else {
        format!("service.signal\t{name}\t{sig}")
    };
    let bad_flag = flags.split(',').find(|f| *f != "group").filter(|_| has_flags);
    let e = if let Some(e) = name_error(Some(&name), "service") {
        e
    } else if !m.svcs.contains_key(&name) {
        "No such service".into()
    } else if sig.is_empty() {
        "Expected signal argument".into()
    } else if sig.starts_with(|c: char| c.is_ascii_digit()) && sig.parse::<u32>().map_or(true, |n| n > 65535) {
        "Invalid signal number".into()
    } else if sig == "BOGUS" {
        "Invalid signal argument".into()
    } else if let Some(bad) = bad_flag {
        format!("unknown option \"{bad}\"")
    } else {
        "service is not running".into()
    };
    Step { expect: err(&e, &line), line: line.into_bytes() }
}

fn gen_delete(r: &mut Rng, m: &mut Model) -> Step {
    let name = service_name(r, m);
    let line = format!("service.delete\t{name}");
    if let Some(e) = name_error(Some(&name), "service") {
        return Step { expect: err(&e, &line), line: line.into_bytes() };
    }
    if m.svcs.remove(&name).is_none() {
        return Step { expect: err("No such service", &line), line: line.into_bytes() };
    }
    Step { expect: vec![format!("service.state\t{name}\tdeleted\t-\t-\t-\t-\t-\t-")], line: line.into_bytes() }
}

/// A handle name error of docs/protocol.md §2.3 and docs/protocol.md §6.1 for a name that is to be defined.
fn mutable_error(n: &str) -> Option<String> {
    name_error(Some(n), "file descriptor")
        .or_else(|| CONSTANTS.contains(&n).then(|| "File descriptor cannot be altered".to_string()))
}

fn gen_pipe(r: &mut Rng, m: &mut Model) -> Step {
    let (a, b) = (handle_name(r), if r.chance(10) { "same".to_string() } else { handle_name(r) });
    let a = if b == "same" { "h9".to_string() } else { a };
    let b = if b == "same" { "h9".to_string() } else { b };
    // (flags, read-end FLAGS, write-end FLAGS, error)
    let fl: [(&str, &str, &str, Option<&str>); 6] = [
        ("", "from", "to", None),
        ("nonblock", "nonblock,from", "nonblock,to", None),
        ("unix,dgram", "unix,dgram,to", "unix,dgram,to", None),
        ("-,seqpacket", "unix,seqpacket,to", "unix,seqpacket,to", None),
        ("bogus", "", "", Some("unknown flag \"bogus\"")),
        ("tcp", "", "", Some("socketpair() failed: Operation not supported")),
    ];
    let (flags, fr, fw, ferr) = fl[r.below(fl.len())];
    let line = if flags.is_empty() { format!("fd.pipe\t{a}\t{b}") } else { format!("fd.pipe\t{a}\t{b}\t{flags}") };
    let fail = |e: &str| Step { expect: err(e, &line), line: line.clone().into_bytes() };
    if let Some(e) = mutable_error(&a).or_else(|| mutable_error(&b)) {
        return fail(&e);
    }
    if a == b {
        return fail("pipe ends must have different names");
    }
    if let Some(e) = ferr {
        return fail(e);
    }
    m.next_pipe += 1;
    let id = m.next_pipe;
    m.forget(&a);
    m.handles.insert(a.clone(), Handle::Pipe { flags: fr.into(), peer: Some(b.clone()), id });
    m.forget(&b);
    m.handles.insert(b.clone(), Handle::Pipe { flags: fw.into(), peer: Some(a.clone()), id });
    Step { expect: vec![m.handle_line(&a), m.handle_line(&b)], line: line.into_bytes() }
}

fn gen_open(r: &mut Rng, m: &mut Model) -> Step {
    let name = handle_name(r);
    // (flags, FLAGS shown; empty: refused)
    let fl: [(&str, &str); 5] = [
        ("write,create", "write,create"),
        ("read", "read"),
        ("create,,read,write,trunc", "read,write,create,trunc"),
        ("append,write,nonblock", "write,append,nonblock"),
        ("bogus,read", ""),
    ];
    let (flags, shown) = fl[r.below(fl.len())];
    // f1 and f2 exist; `missing` never does (it is never created).
    let path = if flags.contains("create") { r.pick(&["f1", "f2"]) } else { r.pick(&["f1", "f2", "missing"]) };
    let line = format!("fd.open\t{name}\t{flags}\t{path}");
    let fail = |e: &str| Step { expect: err(e, &line), line: line.clone().into_bytes() };
    if let Some(e) = mutable_error(&name) {
        return fail(&e);
    }
    if shown.is_empty() {
        return fail("unknown flag \"bogus\"");
    }
    if path == "missing" {
        return fail("open failed: No such file or directory");
    }
    m.forget(&name);
    m.handles.insert(name.clone(), Handle::Other(format!("file\t{shown}\t{path}")));
    Step { expect: vec![m.handle_line(&name)], line: line.into_bytes() }
}

fn gen_socket(r: &mut Rng, m: &mut Model) -> Step {
    let name = handle_name(r);
    // (flags, addr, FLAGS shown, error)
    let fl: [(&str, Option<&str>, &str, Option<&str>); 6] = [
        ("unix", None, "unix,stream", None),
        ("inet6,stream", None, "inet6,stream", None),
        ("udp,nonblock", None, "inet,dgram,nonblock", None),
        ("bind", None, "", Some("expected address argument")),
        ("tcp", Some("1.2.3.4:70000"), "", Some("invalid address")),
        ("listen=0", Some("x.sock"), "", Some("invalid listen queue length")),
    ];
    let (flags, addr, shown, ferr) = fl[r.below(fl.len())];
    let line = match addr {
        None => format!("fd.socket\t{name}\t{flags}"),
        Some(a) => format!("fd.socket\t{name}\t{flags}\t{a}"),
    };
    if let Some(e) = mutable_error(&name).or(ferr.map(str::to_string)) {
        return Step { expect: err(&e, &line), line: line.into_bytes() };
    }
    m.forget(&name);
    m.handles.insert(name.clone(), Handle::Other(format!("socket\t{shown}\t")));
    Step { expect: vec![m.handle_line(&name)], line: line.into_bytes() }
}

fn gen_fd_delete(r: &mut Rng, m: &mut Model) -> Step {
    let name = handle_name(r);
    let line = format!("fd.delete\t{name}");
    if let Some(e) = mutable_error(&name) {
        return Step { expect: err(&e, &line), line: line.into_bytes() };
    }
    if !m.handles.contains_key(&name) {
        return Step { expect: err("No such file descriptor", &line), line: line.into_bytes() };
    }
    m.forget(&name);
    Step { expect: vec![format!("fd.state\t{name}\tdeleted")], line: line.into_bytes() }
}

fn gen_misc(r: &mut Rng, m: &mut Model) -> Step {
    let s = |line: &str, expect: Vec<String>| Step { line: line.as_bytes().to_vec(), expect };
    match r.below(16) {
        0 => {
            let t = format!("{}\t\t{}", text(r, 20), text(r, 5));
            let line = format!("echo\t{t}");
            s(&line, vec![t])
        }
        1 => s(r.pick(&["echo", "echo\t"]), vec![]),
        2 => {
            let (arg, next) = match r.below(5) {
                0 => (None, m.filter),
                1 => (Some("+".to_string()), (m.filter + 1).min(6)),
                2 => (Some("-".to_string()), m.filter.saturating_sub(1)),
                3 => {
                    let k = r.below(7);
                    (Some(FILTERS[k].to_string()), k)
                }
                _ => (Some("loud".to_string()), usize::MAX),
            };
            let line = arg.as_ref().map_or("log.filter".to_string(), |a| format!("log.filter\t{a}"));
            if next == usize::MAX {
                return s(&line, err("Invalid loglevel argument", &line));
            }
            m.filter = next;
            s(&line, vec![format!("log.filter\t{}", FILTERS[next])])
        }
        3 => {
            // Never short timeouts: a statedump may block the output for a
            // moment, and a close timeout of 0 would end the session.
            let (a, b) = (r.pick(&["15", "-1", "x", "2147483648", "40"]), r.pick(&["30", "10", "2147483647", "y"]));
            let line = format!("conn.event_timeout\t{a}\t{b}");
            let e = match (a.parse::<i64>(), b.parse::<i64>()) {
                (Err(_), _) => Some("Expected integer"),
                (Ok(x), _) if !(0..=0x7fff_ffff).contains(&x) => Some("invalid timeout (must be 0..7FFFFFFF)"),
                (_, Err(_)) => Some("Expected integer"),
                (Ok(x), Ok(y)) if x > y => Some("reset timeout is greater than close timeout"),
                _ => None,
            };
            s(&line, e.map_or(vec![], |e| err(e, &line)))
        }
        4 => {
            let (sig, n) = (r.pick(&["HUP", "SIGUSR2", "", "BOGUS"]), r.pick(&["1", "0", "-5", "x"]));
            let line = format!("signal.clear\t{sig}\t{n}");
            let e = if sig.is_empty() {
                Some("Expected signal argument")
            } else if sig == "BOGUS" {
                Some("Invalid signal argument")
            } else if n == "x" {
                Some("Expected integer")
            } else if n.starts_with('-') {
                Some("invalid count")
            } else {
                None
            };
            s(&line, e.map_or(vec![], |e| err(e, &line)))
        }
        5 => {
            let (op, code) = (r.pick(&["+", "-", "*"]), r.pick(&["77", "78", "0", "x"]));
            let line = format!("terminate.guard\t{op}\t{code}");
            let code_v = code.parse::<i64>();
            let e = match (op, code_v) {
                ("*", _) => Some("expected + or -"),
                (_, Err(_)) => Some("Expected integer"),
                (_, Ok(0)) => Some("code cannot be 0"),
                ("+", Ok(_)) if m.guard != 0 => Some("terminate guard code is already set"),
                ("+", Ok(c)) => {
                    m.guard = c;
                    None
                }
                (_, Ok(_)) if m.guard == 0 => Some("terminate guard was not set"),
                (_, Ok(c)) if c != m.guard => Some("incorrect guard code"),
                _ => {
                    m.guard = 0;
                    None
                }
            };
            s(&line, e.map_or(vec![], |e| err(e, &line)))
        }
        6 => {
            // `terminate` only while guarded, and so that it is refused:
            // the model test must not end the daemon.
            if m.guard == 0 {
                return s("echo\tno-terminate", vec!["no-terminate".into()]);
            }
            let g = r.pick(&["", "1", "x", "right"]);
            let line = match g {
                "" => "terminate\t0".to_string(),
                "right" => format!("terminate\t3\t{}", m.guard),
                g => format!("terminate\t0\t{g}"),
            };
            let e = match g {
                "" | "x" => "terminate guard code required",
                "right" => "cannot exit, and exec-on-exit is not configured",
                _ if m.guard == 1 => "cannot exit, and exec-on-exit is not configured",
                _ => "incorrect terminate guard code",
            };
            s(&line, err(e, &line))
        }
        7 => {
            let line = format!("terminate.exec_args\t{}", "a".repeat(250 + r.below(10)));
            if line.len() - "terminate.exec_args\t".len() >= 256 {
                return s(&line, err("exec arguments exceed buffer size (255)", &line));
            }
            // Accepted, then cleared again so `terminate` stays refused.
            Step { line: format!("{line}\nterminate.exec_args").into_bytes(), expect: vec![] }
        }
        8 => {
            let line = r.pick(&["chdir\t.", "chdir\tnope", "chdir", "chdir\t.\tx", "chdir\t"]);
            let e = match line {
                "chdir\t." => None,
                "chdir" => Some("missing path argument"),
                "chdir\t.\tx" => Some("unexpected argument after path"),
                _ => Some("chdir failed: No such file or directory"),
            };
            s(line, e.map_or(vec![], |e| err(e, line)))
        }
        9 => {
            let line = r.pick(&["socket.create", "socket.create\tx\tp.sock", "socket.create\t-"]);
            let e = if line.contains("\tx\t") { "Invalid options" } else { "missing argument" };
            s(line, err(e, line))
        }
        10 => {
            let (line, reply) = match r.below(4) {
                0 => ("log.dest", err("missing argument", "log.dest")),
                1 => ("log.dest\tfile\tx", err("Unknown logging type", "log.dest\tfile\tx")),
                2 => ("log.dest\tfd", err("Expected file descriptor name", "log.dest\tfd")),
                // A constant: it never goes away (the log is not this test's).
                _ => ("log.dest\tfd\tnull", vec![]),
            };
            s(line, reply)
        }
        11 => {
            // Not a command: comments and blanks are silent, the rest
            // `Unknown command: <FIELD0>` (no suffix).
            let line = match r.below(5) {
                0 => format!("#{}", text(r, 30)),
                1 => " \t \r".to_string(),
                2 => String::new(),
                3 => format!(" echo\t{}", text(r, 5)),
                _ => format!("{}\tx", text(r, 10).replace(' ', "")),
            };
            let f0 = line.split('\t').next().unwrap_or("");
            let known = [
                "echo",
                "statedump",
                "service.tags",
                "service.args",
                "service.fds",
                "service.auto_up",
                "service.start",
                "service.signal",
                "service.delete",
                "socket.create",
                "socket.delete",
                "fd.pipe",
                "fd.open",
                "fd.socket",
                "fd.take",
                "fd.delete",
                "chdir",
                "exit",
                "log.filter",
                "log.dest",
                "conn.event_timeout",
                "signal.clear",
                "terminate.exec_args",
                "terminate.guard",
                "terminate",
            ];
            if known.contains(&f0) {
                return s("echo\tknown", vec!["known".into()]);
            }
            let silent = line.starts_with('#') || line.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r' | 0));
            s(&line, if silent { vec![] } else { vec![format!("error\tUnknown command: {f0}")] })
        }
        12 => {
            // Over the 1023-byte limit: refused without running (docs/protocol.md §2.1).
            let n = 1024 + r.below(3000);
            if r.chance(30) {
                let line = format!("#{}", "c".repeat(n));
                return s(&line, vec![]);
            }
            let line = format!("echo\t{}", "x".repeat(n));
            s(&line, vec!["error\tline too long".into()])
        }
        13 => {
            // Binary garbage: bytes other than LF.
            let n = 1 + r.below(40);
            let bytes: Vec<u8> = (0..n).map(|_| r.below(255) as u8 + 1).filter(|&b| b != b'\n').collect();
            let f0 = bytes.split(|&b| b == b'\t').next().unwrap_or(b"");
            let silent = bytes.first() == Some(&b'#') || bytes.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r' | 0));
            // A CR at the very end is dropped ([EXT E1]).
            let f0 = if !bytes[f0.len()..].contains(&b'\t') { f0.strip_suffix(b"\r").unwrap_or(f0) } else { f0 };
            let known = std::str::from_utf8(f0).is_ok_and(|f| {
                f.starts_with("echo") || f.starts_with("exit") || f.starts_with("chdir") || f == "statedump"
            });
            if known {
                return s("echo\tknown", vec!["known".into()]);
            }
            let expect =
                if silent { vec![] } else { vec![format!("error\tUnknown command: {}", String::from_utf8_lossy(f0))] };
            Step { line: bytes, expect }
        }
        14 => {
            // CRLF: one CR before the LF is dropped ([EXT E1]).
            let t = text(r, 10).replace(' ', "_");
            let line = format!("echo\t{t}\r");
            s(&line, if t.is_empty() { vec![] } else { vec![t] })
        }
        _ => s("fd.take\th0", err("No ancillary file descriptor received", "fd.take\th0")),
    }
}

fn generate(r: &mut Rng, m: &mut Model) -> Step {
    match r.below(14) {
        0 => gen_text_field(r, m, "tags"),
        1 | 2 => gen_text_field(r, m, "args"),
        3 => gen_fds(r, m),
        4 => gen_auto_up(r, m),
        5 | 6 => gen_start(r, m),
        7 => gen_signal(r, m),
        8 => gen_delete(r, m),
        9 => gen_pipe(r, m),
        10 => gen_open(r, m),
        11 => gen_socket(r, m),
        12 => gen_fd_delete(r, m),
        _ => gen_misc(r, m),
    }
}

/// A line every controller may receive: a known event or reply layout.
fn well_formed(l: &str) -> bool {
    let f: Vec<&str> = l.split('\t').collect();
    match f[0] {
        "service.state" => f.len() == 9,
        "service.tags" | "service.args" | "service.fds" | "service.auto_up" => f.len() >= 3,
        "fd.state" => f.len() == 5 || (f.len() == 3 && f[2] == "deleted"),
        "error" => {
            let rest = &l["error\t".len()..];
            rest == "line too long" || rest.starts_with("Unknown command: ") || rest.contains(", for command \"")
        }
        "warning" | "log.filter" => f.len() == 2,
        _ => true, // echo text
    }
}

/// What one case covered, for the summary line.
#[derive(Default, Clone, Copy)]
struct Tally {
    lines: usize,
    errors: usize,
    dumps: usize,
    runs: usize,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        (self.lines, self.errors, self.dumps, self.runs) =
            (self.lines + o.lines, self.errors + o.errors, self.dumps + o.dumps, self.runs + o.runs);
    }
}

struct Case {
    tally: Tally,
    dp: Dp,
    model: Model,
    log: Vec<String>,
    seed: u64,
}

impl Case {
    fn fail(&self, what: &str) -> ! {
        let keep = if std::env::var("DAEMONPROXY_MODEL_SEED").is_ok() { usize::MAX } else { 30 };
        let tail = &self.log[self.log.len().saturating_sub(keep)..];
        panic!("model test seed {}: {what}\n  last commands:\n    {}", self.seed, tail.join("\n    "))
    }

    /// Consume lines up to the next sync token; returns them without the
    /// asynchronous lines of busy services, which update the model.
    fn collect(&mut self) -> Vec<String> {
        let lines = self.dp.sync();
        let mut kept = Vec::new();
        for l in lines {
            if !well_formed(&l) {
                self.fail(&format!("malformed line {:?}", vis(&l)));
            }
            let f: Vec<&str> = l.split('\t').collect();
            // Any other up/down line (a dump's row, a cancelled start's
            // `down` with no pid) is compared with the model like every
            // line: the model's state is that after the whole batch, and a
            // service started later in it is busy already.
            if f[0] == "service.state"
                && f.len() == 9
                && (f[2] == "up" || (f[2] == "down" && f[4] != "-"))
                && let Some(s) = self.model.svcs.get_mut(f[1])
                && s.run == Run::Busy
            {
                if f[2] == "down" {
                    s.run = Run::Ended(f[5].to_string(), f[6].to_string());
                    self.tally.runs += 1;
                }
                continue;
            }
            self.tally.lines += 1;
            self.tally.errors += usize::from(l.starts_with("error\t"));
            kept.push(l);
        }
        kept
    }

    fn check_dump(&mut self) {
        let end = Instant::now() + Duration::from_secs(10);
        while !self.model.busy().is_empty() {
            if Instant::now() > end {
                self.fail(&format!("services never ended: {:?}", self.model.busy()));
            }
            std::thread::sleep(Duration::from_millis(5));
            let extra = self.collect();
            if !extra.is_empty() {
                self.fail(&format!("unexpected lines while waiting: {extra:?}"));
            }
        }
        self.dp.send("statedump");
        let got = self.collect();
        self.tally.dumps += 1;
        let want = self.model.dump();
        self.compare("statedump", &want, &got);
    }

    /// The daemon's lines must match the model's patterns one for one.
    fn compare(&self, what: &str, want: &[String], got: &[String]) {
        let ok = got.len() == want.len() && got.iter().zip(want).all(|(g, w)| matches(w, g));
        if !ok {
            self.fail(&format!(
                "{what} differs from the model\n  model:\n    {}\n  daemon:\n    {}",
                want.iter().map(|s| vis(s)).collect::<Vec<_>>().join("\n    "),
                got.iter().map(|s| vis(s)).collect::<Vec<_>>().join("\n    ")
            ));
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn run_case(seed: u64, steps: usize) -> Tally {
    let dir = TempDir::new("model");
    dir.write("f1", "");
    dir.write("f2", "");
    let mut dp = Dp::interactive_in(dir, &[]);
    dp.send("statedump");
    let initial = dp.sync();
    let mut handles = BTreeMap::new();
    for l in &initial {
        let f: Vec<&str> = l.splitn(3, '\t').collect();
        assert_eq!(f[0], "fd.state", "initial dump: {l:?}");
        handles.insert(f[1].to_string(), Handle::Other(f[2].to_string()));
    }
    let model = Model { svcs: BTreeMap::new(), handles, next_pipe: 0, filter: 2, guard: 0 };
    let mut c = Case { tally: Tally::default(), dp, model, log: Vec::new(), seed };
    let mut r = Rng::new(seed);
    let mut done = 0;
    while done < steps {
        let batch = 1 + r.below(6);
        let mut want: Vec<String> = Vec::new();
        let mut bytes = Vec::new();
        for _ in 0..batch {
            let st = generate(&mut r, &mut c.model);
            c.log.push(vis(&String::from_utf8_lossy(&st.line)));
            bytes.extend_from_slice(&st.line);
            bytes.push(b'\n');
            want.extend(st.expect);
        }
        done += batch;
        c.dp.send_raw(&bytes);
        let got = c.collect();
        c.compare("the replies", &want, &got);
        if r.chance(8) {
            c.check_dump();
        }
    }
    c.check_dump();
    if !c.dp.running() {
        c.fail("the daemon is gone");
    }
    c.tally
}

#[test]
fn random_command_sequences_match_the_model() {
    let steps = env_usize("DAEMONPROXY_MODEL_STEPS", 250);
    // DAEMONPROXY_MODEL_SEED replays one case (the number a failure names).
    if let Ok(seed) = std::env::var("DAEMONPROXY_MODEL_SEED") {
        run_case(seed.parse().expect("a seed number"), steps);
        return;
    }
    let cases = env_usize("DAEMONPROXY_MODEL_CASES", 400);
    let t0 = Instant::now();
    // Four threads of cases: each case is one daemon and one controller.
    let threads: Vec<_> = (0..4u64)
        .map(|k| {
            std::thread::spawn(move || {
                let (mut seed, mut t) = (k, Tally::default());
                while (seed as usize) < cases {
                    t += run_case(seed, steps);
                    seed += 4;
                }
                t
            })
        })
        .collect();
    let mut all = Tally::default();
    for t in threads {
        match t.join() {
            Ok(t) => all += t,
            Err(e) => std::panic::resume_unwind(e),
        }
    }
    println!(
        "{cases} cases of {steps} commands in {:?}: {} lines checked ({} errors), {} statedumps, {} services run",
        t0.elapsed(),
        all.lines,
        all.errors,
        all.dumps,
        all.runs
    );
    assert!(all.dumps > cases && all.runs > cases && all.errors > cases, "the cases cover too little");
}
