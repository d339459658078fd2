//! `daemonproxy-ctl`: poke a running daemonproxy from a shell through its
//! control socket (`-S PATH`), the way `sv` or `s6-svc` do for their
//! supervisors. It is an ordinary socket controller: it sends protocol
//! lines, reads the replies up to an `echo` of its own, and exits non-zero
//! when daemonproxy answered `error`.
//!
//! Blocking I/O with timeouts is fine here: this is a short-lived client,
//! not the supervisor's loop.

use daemonproxy::client::{Ended, Event, StateWord};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: daemonproxy-ctl [-S PATH] [-t SECONDS] VERB [ARG...]
  -S PATH       daemonproxy's control socket (default: $DAEMONPROXY_SOCKET)
  -t SECONDS    how long to wait for replies and for services to stop (default 10)
verbs:
  status [NAME...]         one line per service: NAME STATE PID UPTIME LAST-EXIT
  start NAME...            start services now
  stop NAME...             turn auto-up off, SIGTERM, wait until down (SIGKILL after -t)
  restart NAME...          SIGTERM, wait until down, start again
  signal NAME SIGNAL       send a signal (name or number)
  shutdown [CODE [GUARD]]  stop every service, last started first, then terminate CODE
  raw FIELD...             send one command, its fields joined by TABs; print the replies
  raw -                    send the lines of standard input
  -h, --help               this text;  -V, --version  the version";

/// A failure: message, exit status.
struct Fail(String, i32);

fn fail<T>(msg: impl Into<String>) -> Result<T, Fail> {
    Err(Fail(msg.into(), 1))
}

/// One connection to daemonproxy.
struct Conn {
    w: UnixStream,
    r: BufReader<UnixStream>,
    token: u64,
    timeout: Duration,
    /// Lines read while waiting for something else.
    line: Vec<u8>,
}

impl Conn {
    fn open(path: &str, timeout: Duration) -> Result<Conn, Fail> {
        let s = UnixStream::connect(path).or_else(|e| fail(format!("cannot connect to {path}: {e}")))?;
        // Talk only to daemonproxy running as root or as us: whoever bound
        // the path first would otherwise get our commands.
        let uid = daemonproxy::sys::peer_uid(std::os::fd::AsRawFd::as_raw_fd(&s));
        let me = daemonproxy::sys::geteuid();
        match uid {
            Some(0) => {}
            Some(u) if u == me => {}
            Some(u) => {
                return fail(format!("refusing to talk to {path}: it is served by uid {u}, not root or uid {me}"));
            }
            None => return fail(format!("{path}: cannot read the server's credentials")),
        }
        let r = BufReader::new(s.try_clone().or_else(|e| fail(format!("{path}: {e}")))?);
        Ok(Conn { w: s, r, token: 0, timeout, line: Vec::new() })
    }

    fn send(&mut self, line: &str) -> Result<(), Fail> {
        let mut b = line.as_bytes().to_vec();
        b.push(b'\n');
        self.w.write_all(&b).or_else(|e| fail(format!("daemonproxy closed the connection: {e}")))
    }

    /// The next line, waiting until `end`; `None` at the deadline.
    fn next(&mut self, end: Instant) -> Result<Option<String>, Fail> {
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let _ = self.r.get_ref().set_read_timeout(Some(left));
            match self.r.read_until(b'\n', &mut self.line) {
                Ok(0) => return fail("daemonproxy closed the connection"),
                Ok(_) if self.line.last() == Some(&b'\n') => {
                    self.line.pop();
                    let l = String::from_utf8_lossy(&self.line).into_owned();
                    self.line.clear();
                    return Ok(Some(l));
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(e) => return fail(format!("reading from daemonproxy: {e}")),
            }
        }
    }

    /// Send `echo TOKEN` and return the lines before it.
    fn sync(&mut self) -> Result<Vec<String>, Fail> {
        self.token += 1;
        let token = format!("daemonproxy-ctl-sync-{}-{}", std::process::id(), self.token);
        self.send(&format!("echo\t{token}"))?;
        let end = Instant::now() + self.timeout;
        let mut lines = Vec::new();
        loop {
            match self.next(end)? {
                Some(l) if l == token => return Ok(lines),
                Some(l) => lines.push(l),
                None => return fail("no answer from daemonproxy in time"),
            }
        }
    }

    /// Send lines, then sync; an `error` reply is a failure.
    fn commands(&mut self, lines: &[String]) -> Result<Vec<String>, Fail> {
        for l in lines {
            self.send(l)?;
        }
        let got = self.sync()?;
        if let Some(e) = got.iter().find(|l| l.starts_with("error\t")) {
            return Err(Fail(format!("daemonproxy: {}", &e[6..]), 1));
        }
        Ok(got)
    }
}

/// What `status` shows of one service.
struct Svc {
    name: String,
    state: StateWord,
    ts: Option<i64>,
    pid: Option<i32>,
    ended: Option<String>,
}

fn services(c: &mut Conn) -> Result<Vec<Svc>, Fail> {
    c.send("statedump")?;
    let lines = c.sync()?;
    let mut out: Vec<Svc> = Vec::new();
    for l in &lines {
        if let Event::State(s) = Event::parse(l.as_bytes()) {
            let name = String::from_utf8_lossy(s.name).into_owned();
            let ended = s.ended.map(|e| match e {
                Ended::Exit(n) => format!("exit {n}"),
                Ended::Signal(sig) => format!("signal {}", String::from_utf8_lossy(sig)),
            });
            let svc = Svc { name, state: s.state, ts: s.ts, pid: s.pid, ended };
            match out.iter_mut().find(|o| o.name == svc.name) {
                Some(o) => *o = svc,
                None => out.push(svc),
            }
        }
    }
    Ok(out)
}

fn state_word(s: StateWord) -> &'static str {
    match s {
        StateWord::Start => "start",
        StateWord::Up => "up",
        StateWord::Down => "down",
        StateWord::Deleted => "deleted",
    }
}

/// Whole seconds of CLOCK_MONOTONIC: the clock daemonproxy's TS fields use.
fn mono_now() -> i64 {
    daemonproxy::clock::Mono::now().secs()
}

fn status(c: &mut Conn, names: &[String]) -> Result<(), Fail> {
    let all = services(c)?;
    for n in names {
        if !all.iter().any(|s| &s.name == n) {
            return fail(format!("no such service: {n}"));
        }
    }
    let now = mono_now();
    let mut out = String::from("NAME\tSTATE\tPID\tUPTIME\tLAST-EXIT\n");
    for s in all.iter().filter(|s| names.is_empty() || names.contains(&s.name)) {
        let pid = s.pid.map_or("-".to_string(), |p| p.to_string());
        let up = match (s.state, s.ts) {
            (StateWord::Up, Some(t)) => format!("{}s", (now - t).max(0)),
            _ => "-".into(),
        };
        let pid = if s.state == StateWord::Up { pid } else { "-".into() };
        let last = s.ended.clone().unwrap_or_else(|| "-".into());
        out += &format!("{}\t{}\t{pid}\t{up}\t{last}\n", s.name, state_word(s.state));
    }
    print!("{}", align(&out));
    Ok(())
}

/// Lay TAB-separated rows out in columns two spaces apart.
fn align(text: &str) -> String {
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let mut width = Vec::new();
    for r in &rows {
        for (i, f) in r.iter().enumerate() {
            if width.len() <= i {
                width.push(0);
            }
            width[i] = width[i].max(f.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let n = r.len();
        for (i, f) in r.into_iter().enumerate() {
            out += f;
            if i + 1 < n {
                out += &" ".repeat(width[i] - f.chars().count() + 2);
            }
        }
        out.push('\n');
    }
    out
}

/// A process being ended: the service's name and the pid it had.
type Target = (String, Option<i32>);

/// The targets' service names, space-separated.
fn names(targets: &[Target]) -> String {
    targets.iter().map(|t| t.0.as_str()).collect::<Vec<_>>().join(" ")
}

/// Whether the line `l` says that `t`'s process has ended: the service is
/// down or deleted, or runs another process (an auto-up service may be
/// back before we look).
fn ended(t: &Target, l: &str) -> bool {
    match Event::parse(l.as_bytes()) {
        Event::State(s) if String::from_utf8_lossy(s.name) == t.0 => {
            matches!(s.state, StateWord::Down | StateWord::Deleted)
                || (s.state == StateWord::Up && t.1.is_some() && s.pid != t.1)
        }
        _ => false,
    }
}

/// Wait until the process of each target has ended; `seen` holds lines
/// already read (the replies to the signal commands, where a fast exit's
/// event may be). Returns the targets whose process still runs at the
/// deadline.
fn wait_down(c: &mut Conn, targets: &[Target], seen: &[String], end: Instant) -> Result<Vec<Target>, Fail> {
    let mut left: Vec<Target> = targets.to_vec();
    left.retain(|t| !seen.iter().any(|l| ended(t, l)));
    // The current states: some may have ended already.
    if !left.is_empty() {
        c.send("statedump")?;
        let lines = c.sync()?;
        left.retain(|t| !lines.iter().any(|l| ended(t, l)));
    }
    while !left.is_empty() {
        let Some(l) = c.next(end)? else { break };
        left.retain(|t| !ended(t, &l));
    }
    Ok(left)
}

/// SIGTERM to each of `names` that is up, wait until they are down, and
/// SIGKILL those still up after the timeout.
fn end_processes(c: &mut Conn, all: &[Svc], up: &[String]) -> Result<(), Fail> {
    let targets: Vec<Target> =
        up.iter().map(|n| (n.clone(), all.iter().find(|s| &s.name == n).and_then(|s| s.pid))).collect();
    let terms: Vec<String> = up.iter().map(|n| format!("service.signal\t{n}\tSIGTERM")).collect();
    let seen = c.commands(&terms)?;
    let left = wait_down(c, &targets, &seen, Instant::now() + c.timeout)?;
    if !left.is_empty() {
        eprintln!("daemonproxy-ctl: still up after {:?}, sending SIGKILL: {}", c.timeout, names(&left));
        let kills: Vec<String> = left.iter().map(|t| format!("service.signal\t{}\tSIGKILL", t.0)).collect();
        let seen = c.commands(&kills).unwrap_or_default();
        let stuck = wait_down(c, &left, &seen, Instant::now() + c.timeout)?;
        if !stuck.is_empty() {
            return fail(format!("still up: {}", names(&stuck)));
        }
    }
    Ok(())
}

/// The services of `names` (each must exist) that are in `state`.
fn in_state(all: &[Svc], names: &[String], state: StateWord) -> Result<Vec<String>, Fail> {
    let mut out = Vec::new();
    for n in names {
        let Some(s) = all.iter().find(|s| &s.name == n) else {
            return fail(format!("no such service: {n}"));
        };
        if s.state == state {
            out.push(n.clone());
        }
    }
    Ok(out)
}

/// Stop `names` for good: auto-up off, pending starts cancelled, SIGTERM
/// (SIGKILL for those still up after the timeout).
fn stop(c: &mut Conn, names: &[String]) -> Result<(), Fail> {
    let all = services(c)?;
    let up = in_state(&all, names, StateWord::Up)?;
    let pending = in_state(&all, names, StateWord::Start)?;
    let mut lines: Vec<String> = names.iter().map(|n| format!("service.auto_up\t{n}\t-")).collect();
    lines.extend(pending.iter().map(|n| format!("service.start\t{n}\t-")));
    c.commands(&lines)?;
    end_processes(c, &all, &up)
}

/// End the processes of `names` and start them again (auto-up unchanged).
fn restart(c: &mut Conn, names: &[String]) -> Result<(), Fail> {
    let all = services(c)?;
    let up = in_state(&all, names, StateWord::Up)?;
    end_processes(c, &all, &up)?;
    // An auto-up service may be on its way back already: start only what
    // is down now ("service is not startable" otherwise).
    let now = services(c)?;
    let down = in_state(&now, names, StateWord::Down)?;
    let starts: Vec<String> = down.iter().map(|n| format!("service.start\t{n}")).collect();
    c.commands(&starts)?;
    Ok(())
}

/// Stop everything, last started first, then `terminate`.
fn shutdown(c: &mut Conn, code: &str, guard: Option<&str>) -> Result<(), Fail> {
    let mut all = services(c)?;
    all.sort_by(|a, b| b.ts.cmp(&a.ts).then(b.name.cmp(&a.name)));
    let names: Vec<String> = all.iter().filter(|s| s.state != StateWord::Deleted).map(|s| s.name.clone()).collect();
    // Auto-up off everywhere first, so nothing is restarted meanwhile.
    let lines: Vec<String> = names.iter().map(|n| format!("service.auto_up\t{n}\t-")).collect();
    c.commands(&lines)?;
    for n in &names {
        stop(c, std::slice::from_ref(n))?;
    }
    let line = match guard {
        Some(g) => format!("terminate\t{code}\t{g}"),
        None => format!("terminate\t{code}"),
    };
    c.send(&line)?;
    // daemonproxy closes the connection as it exits; an error comes first
    // if it refused (a guard code is needed, say).
    let end = Instant::now() + c.timeout;
    loop {
        match c.next(end) {
            Ok(Some(l)) if l.starts_with("error\t") => return fail(format!("daemonproxy: {}", &l[6..])),
            Ok(Some(_)) => {}
            Ok(None) => return fail("daemonproxy did not exit in time"),
            Err(_) => return Ok(()),
        }
    }
}

fn raw(c: &mut Conn, args: &[String]) -> Result<(), Fail> {
    let lines: Vec<String> = if args == ["-"] {
        std::io::stdin().lock().lines().map_while(Result::ok).filter(|l| !l.is_empty()).collect()
    } else {
        vec![args.join("\t")]
    };
    for l in &lines {
        c.send(l)?;
    }
    let got = c.sync()?;
    for l in &got {
        println!("{l}");
    }
    if got.iter().any(|l| l.starts_with("error\t")) {
        return Err(Fail(String::new(), 1));
    }
    Ok(())
}

fn run(args: &[String]) -> Result<(), Fail> {
    let mut path = std::env::var("DAEMONPROXY_SOCKET").ok();
    let mut timeout = Duration::from_secs(10);
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            "-V" | "--version" => {
                println!("daemonproxy-ctl version {}", env!("CARGO_PKG_VERSION"));
                return Ok(());
            }
            "-S" | "--socket" => {
                i += 1;
                path = Some(args.get(i).cloned().ok_or(Fail("-S needs a path".into(), 2))?);
            }
            "-t" | "--timeout" => {
                i += 1;
                let v = args.get(i).and_then(|v| v.parse::<f64>().ok()).filter(|v| *v > 0.0 && *v < 86400.0);
                timeout = Duration::from_secs_f64(v.ok_or(Fail("-t needs a number of seconds".into(), 2))?);
            }
            a if a.starts_with('-') && a != "-" => return Err(Fail(format!("unknown option {a}\n{USAGE}"), 2)),
            _ => break,
        }
        i += 1;
    }
    let Some(verb) = args.get(i) else {
        return Err(Fail(USAGE.into(), 2));
    };
    let rest = &args[i + 1..];
    let need = |ok: bool| if ok { Ok(()) } else { Err(Fail(format!("{verb}: wrong arguments\n{USAGE}"), 2)) };
    match verb.as_str() {
        "status" | "start" | "stop" | "restart" | "signal" | "shutdown" | "raw" => {}
        _ => return Err(Fail(format!("unknown verb {verb}\n{USAGE}"), 2)),
    }
    match verb.as_str() {
        "start" | "stop" | "restart" | "raw" => need(!rest.is_empty())?,
        "signal" => need(rest.len() == 2)?,
        "shutdown" => need(rest.len() <= 2)?,
        _ => {}
    }
    let Some(path) = path else {
        return Err(Fail("no control socket: give -S PATH or set DAEMONPROXY_SOCKET".into(), 2));
    };
    let mut c = Conn::open(&path, timeout)?;
    match verb.as_str() {
        "status" => status(&mut c, rest),
        "start" => {
            let lines: Vec<String> = rest.iter().map(|n| format!("service.start\t{n}")).collect();
            c.commands(&lines).map(|_| ())
        }
        "stop" => stop(&mut c, rest),
        "restart" => restart(&mut c, rest),
        "signal" => c.commands(&[format!("service.signal\t{}\t{}", rest[0], rest[1])]).map(|_| ()),
        "shutdown" => shutdown(&mut c, rest.first().map_or("0", String::as_str), rest.get(1).map(String::as_str)),
        _ => raw(&mut c, rest),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(Fail(msg, code)) = run(&args) {
        if !msg.is_empty() {
            eprintln!("daemonproxy-ctl: {msg}");
        }
        std::process::exit(code);
    }
}
