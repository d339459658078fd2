//! `daemonproxy-sheriff`: steer a fleet of procman deputies (daemonproxy
//! bridges or stock deputies) from the command line. Flags and wiring
//! only; the work is in `daemonproxy::sheriff`. See daemonproxy-sheriff(1).

use daemonproxy::procman::Url;
use daemonproxy::procman::auth::{AuthMode, Key};
use daemonproxy::sheriff::config;
use daemonproxy::sheriff::engine::{Engine, Settings};
use daemonproxy::sheriff::json;
use daemonproxy::sheriff::model::Verb;
use daemonproxy::sheriff::serve::{self, AfterScript, Options, Sheriff};
use daemonproxy::sheriff::view::{self, Filter, Row};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const HELP: &str = "\
usage: daemonproxy-sheriff [OPTIONS] VERB [ARGS]

Run the sheriff:
  serve [CONFIG [SCRIPT]]  hold the desired state of every command and send
                           the orders; run SCRIPT first if given. The verbs
                           below reach it through its control socket.
Verbs (through a running sheriff, else once on LCM by themselves):
  status [--watch] [--deputy D] [--group G] [PATTERN]
  start|stop|restart (CMD|--group G|--all) [--deputy D]
                     [--wait running|stopped] [--timeout SECONDS]
  logs CMD [--deputy D] [-n N] [-f]
  deputies                 host load and memory, last heard
  flush                    forget commands that are stopped for good
  run SCRIPT [--config FILE]
  import-json FILE         print a procman config made from a ProcMan JSON file
  check CONFIG             parse and validate a config (errors: FILE:LINE:COL)

Options:
  --lcm-url URL            udpm://GROUP:PORT?ttl=N, tcpq://HOST:PORT or
                           tcpq+unix:///PATH (a hub of root or this user)
                           (default $LCM_DEFAULT_URL, else
                           udpm://239.255.76.67:7667?ttl=0: this host only)
  --control PATH           the sheriff's control socket (default
                           $XDG_RUNTIME_DIR/daemonproxy-sheriff.sock if that
                           directory is ours and private, else
                           $TMPDIR/daemonproxy-sheriff-UID/sheriff.sock in a
                           private directory, refused if another user owns
                           it). Verbs talk only to a sheriff run by root
                           or by their own user.
  -o, --observe            send nothing; show what another sheriff orders
  -l, --local              lone ranger: start a daemonproxy and its bridge
                           (deputy id localhost) here and steer them, over
                           a hub on a Unix socket only this user can reach
  --tcpq-listen PORT       run a tcpq hub on 127.0.0.1:PORT and use it
                           (open to every local user)
  --no-demote              stay active when another sheriff is seen
  --on-script-complete exit|observe  (default exit)
  --script-timeout SECONDS give up a script wait after this long
  --auth off|sign|require  PMA1 message authentication (default off)
  --auth-key-file PATH     hex key, mode 0600 (repeatable)
  --trust-unsigned-deputy ID  accept unsigned info from ID under require
  -h, --help               this text

A verb run without a sheriff is a second sheriff on the wire while it runs
(a few seconds): another sheriff that sees its orders warns and, unless
started with --no-demote, turns observer. Run verbs through `serve`.
A failed wait (script or --wait) exits 1.
";

fn fail(msg: &str) -> ! {
    eprintln!("daemonproxy-sheriff: {msg}");
    std::process::exit(2);
}

struct Global {
    url: Option<String>,
    /// `--control`; else [`default_control`] when a verb needs it.
    control: Option<PathBuf>,
    observe: bool,
    local: bool,
    hub_port: Option<u16>,
    demote: bool,
    after: AfterScript,
    script_timeout: Option<Duration>,
    auth: AuthMode,
    keys: Vec<String>,
    trust: Vec<String>,
}

/// The control socket when `--control` is not given:
/// `$DAEMONPROXY_SHERIFF_CONTROL`, else in `$XDG_RUNTIME_DIR` if that is a
/// directory of ours that no one else can enter, else in the private
/// directory `$TMPDIR/daemonproxy-sheriff-UID` (made mode 0700 by `serve`,
/// when `create`). Never a path another user could have made first: an
/// existing directory of another owner, a symlink, or one open to others
/// is an error.
fn default_control(create: bool) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("DAEMONPROXY_SHERIFF_CONTROL") {
        return Ok(p.into());
    }
    let uid = daemonproxy::sys::geteuid();
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)
        && private_dir(&d, uid).is_ok()
    {
        return Ok(d.join("daemonproxy-sheriff.sock"));
    }
    let dir = std::env::temp_dir().join(format!("daemonproxy-sheriff-{uid}"));
    if create {
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
    }
    match private_dir(&dir, uid) {
        Ok(()) => Ok(dir.join("sheriff.sock")),
        // No directory, no sheriff: the verbs then act by themselves.
        Err(None) => Ok(dir.join("sheriff.sock")),
        Err(Some(why)) => {
            Err(format!("{}: {why}: refusing it (remove it, or give --control or XDG_RUNTIME_DIR)", dir.display()))
        }
    }
}

/// Ok if `dir` (not a symlink) is a directory owned by `uid` with no
/// access for group or others; `Err(None)` if it does not exist.
fn private_dir(dir: &std::path::Path, uid: u32) -> Result<(), Option<String>> {
    use std::os::unix::fs::MetadataExt;
    let m = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(None),
        Err(e) => return Err(Some(e.to_string())),
    };
    if !m.file_type().is_dir() {
        return Err(Some("not a directory".into()));
    }
    if m.uid() != uid {
        return Err(Some(format!("owned by uid {}, not {uid}", m.uid())));
    }
    if m.mode() & 0o077 != 0 {
        return Err(Some(format!("mode {:o}, open to others", m.mode() & 0o7777)));
    }
    Ok(())
}

impl Global {
    /// The control socket (see [`default_control`]); exits 2 if the
    /// default one is not safe to use.
    fn control(&self, create: bool) -> PathBuf {
        match &self.control {
            Some(p) => p.clone(),
            None => default_control(create).unwrap_or_else(|e| fail(&e)),
        }
    }

    /// Settings for `serve` (listening first, demoting on a conflict as
    /// told) or, with `one_shot`, for a verb run by itself (acting at once;
    /// it is the second sheriff on purpose).
    fn settings(&self, observer: bool, one_shot: bool) -> Settings {
        let url = Url::from_env_or(self.url.as_deref()).unwrap_or_else(|e| fail(&format!("LCM URL: {e}")));
        let keys: Vec<Key> = self
            .keys
            .iter()
            .map(|p| Key::load(std::path::Path::new(p)).unwrap_or_else(|e| fail(&format!("{p}: {e}"))))
            .collect();
        if self.auth != AuthMode::Off && keys.is_empty() {
            fail("--auth sign|require needs --auth-key-file");
        }
        Settings {
            url,
            observer,
            demote_on_conflict: self.demote && !one_shot,
            auth: self.auth,
            keys,
            trust_unsigned: self.trust.clone(),
            listen_first: if one_shot { Duration::ZERO } else { Duration::from_millis(1500) },
        }
    }
}

fn main() {
    let mut g = Global {
        url: None,
        control: None,
        observe: false,
        local: false,
        hub_port: None,
        demote: true,
        after: AfterScript::Exit,
        script_timeout: None,
        auth: AuthMode::Off,
        keys: Vec::new(),
        trust: Vec::new(),
    };
    let mut rest: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| fail(&format!("{a} needs a value (see --help)")));
        match a.as_str() {
            "--lcm-url" => g.url = Some(value()),
            "--control" => g.control = Some(value().into()),
            "-o" | "--observe" => g.observe = true,
            "-l" | "--local" => g.local = true,
            "--tcpq-listen" => {
                g.hub_port = Some(value().parse().unwrap_or_else(|_| fail("--tcpq-listen needs a port")))
            }
            "--no-demote" => g.demote = false,
            "--on-script-complete" => {
                g.after = match value().as_str() {
                    "exit" => AfterScript::Exit,
                    "observe" => AfterScript::Observe,
                    v => fail(&format!("--on-script-complete {v}: expected exit or observe")),
                }
            }
            "--script-timeout" => {
                let s: f64 = value().parse().unwrap_or_else(|_| fail("--script-timeout needs seconds"));
                g.script_timeout = Some(Duration::from_secs_f64(s.max(0.0)));
            }
            "--auth" => g.auth = value().parse().unwrap_or_else(|e| fail(&format!("--auth: {e}"))),
            "--auth-key-file" => g.keys.push(value()),
            "--trust-unsigned-deputy" => g.trust.push(value()),
            "-h" | "--help" => {
                print!("{HELP}");
                return;
            }
            _ => {
                rest.push(a);
                rest.extend(args.by_ref());
                break;
            }
        }
    }
    let verb = rest.first().cloned().unwrap_or_else(|| "serve".into());
    let known =
        ["serve", "status", "start", "stop", "restart", "logs", "deputies", "flush", "run", "import-json", "check"];
    let (verb, args) = if known.contains(&verb.as_str()) { (verb, rest[1..].to_vec()) } else { ("serve".into(), rest) };
    let code = match verb.as_str() {
        "serve" => serve_cmd(&g, &args),
        "status" => status_cmd(&g, &args),
        "start" | "stop" | "restart" => act_cmd(&g, &verb, &args),
        "logs" => logs_cmd(&g, &args),
        "deputies" => deputies_cmd(&g),
        "flush" => flush_cmd(&g),
        "run" => run_cmd(&g, &args),
        "import-json" => import_cmd(&args),
        _ => check_cmd(&args),
    };
    std::process::exit(code);
}

fn serve_cmd(g: &Global, args: &[String]) -> i32 {
    let cfg = args.first().map(PathBuf::from);
    run_sheriff(g, g.settings(g.observe, false), cfg, args.get(1).cloned(), g.after)
}

/// Run a sheriff until it ends; its exit status (2 if it cannot start).
fn run_sheriff(
    g: &Global,
    settings: Settings,
    config: Option<PathBuf>,
    script: Option<String>,
    after: AfterScript,
) -> i32 {
    let o = Options {
        settings,
        config,
        script,
        after_script: after,
        script_timeout: g.script_timeout,
        control: g.control(true),
        hub_port: g.hub_port,
        local: g.local,
    };
    match Sheriff::new(o) {
        Ok(mut s) => s.run(),
        Err(e) => {
            eprintln!("daemonproxy-sheriff: {e}");
            2
        }
    }
}

/// Parse `[--deputy D] [--group G] [--all] [PATTERN]` and the extra flags
/// a verb takes (returned as (flag, value) pairs).
fn parse_filter(args: &[String], extra: &[&str], switches: &[&str]) -> (Filter, Vec<(String, String)>) {
    let mut f = Filter::default();
    let mut more = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_else(|| fail(&format!("{a} needs a value")));
        match a.as_str() {
            "--deputy" => f.deputy = Some(value()),
            "--group" => f.group = Some(value()),
            "--all" => f.all = true,
            x if extra.contains(&x) => more.push((x.to_string(), value())),
            x if switches.contains(&x) => more.push((x.to_string(), String::new())),
            x if x.starts_with('-') && x.len() > 1 => fail(&format!("unknown option {x} (see --help)")),
            x => {
                if f.name.is_some() {
                    fail(&format!("unexpected argument {x}"));
                }
                f.name = Some(x.to_string());
            }
        }
    }
    (f, more)
}

/// The reply of a running sheriff, if one answers.
fn ask(g: &Global, line: &str) -> Option<String> {
    let mut s = connect(g, line)?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

/// A request sent to the running sheriff; `None` if none is there. Exits
/// 2 if the socket is served by another user, or is not ours to use.
fn connect(g: &Global, line: &str) -> Option<std::os::unix::net::UnixStream> {
    match serve::request(&g.control(false), line) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => fail(&e.to_string()),
        Err(_) => None,
    }
}

fn expect_ok(text: &str) -> &str {
    match text.split_once('\n') {
        Some(("ok", rest)) => rest,
        Some((l, _)) if l.starts_with("ok\t") => text,
        _ => {
            let msg = text.lines().next().unwrap_or("").strip_prefix("error\t").unwrap_or(text);
            fail(msg.trim())
        }
    }
}

/// A short-lived sheriff of our own (no `serve` running): waits for
/// deputies' info, up to `wait`.
fn one_shot(g: &Global, observer: bool, wait: Duration, until: impl Fn(&Engine) -> bool) -> Engine {
    let mut e = Engine::new(g.settings(observer, true)).unwrap_or_else(|e| fail(&format!("LCM: {e}")));
    let end = Instant::now() + wait;
    while Instant::now() < end && !until(&e) {
        daemonproxy::sys::wait_readable(e.lcm.fds().first().copied().unwrap_or(-1), 20);
        e.poll_lcm(Instant::now());
    }
    e
}

fn status_cmd(g: &Global, args: &[String]) -> i32 {
    let (f, more) = parse_filter(args, &[], &["--watch"]);
    let watch = more.iter().any(|(k, _)| k == "--watch");
    let mut req = vec!["status".to_string()];
    req.extend(f.to_fields());
    let via_server = ask(g, &req.join("\t")).is_some();
    let mut engine = None;
    loop {
        let rows: Vec<Row> = if via_server {
            match ask(g, &req.join("\t")) {
                Some(t) => serve::parse_rows(expect_ok(&t)),
                None => fail("the sheriff went away"),
            }
        } else {
            // All deputies report every second: 1.5 s sees each of them.
            let e = engine.get_or_insert_with(|| one_shot(g, true, Duration::from_millis(1500), |_| false));
            e.poll_lcm(Instant::now());
            view::rows(&e.fleet, &f, Instant::now())
        };
        let table = view::table(&rows);
        if !watch {
            print!("{table}");
            return 0;
        }
        // Redrawn in place: cursor home, clear to the end (works over ssh).
        print!("\x1b[H\x1b[2J{}  ({} commands)\n\n{table}", chrono_now(), rows.len());
        let _ = std::io::stdout().flush();
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(500) {
            if let Some(e) = engine.as_mut() {
                e.poll_lcm(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn chrono_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{:02}:{:02}:{:02} UTC", (secs / 3600) % 24, (secs / 60) % 60, secs % 60)
}

fn act_cmd(g: &Global, verb: &str, args: &[String]) -> i32 {
    let (f, more) = parse_filter(args, &["--wait", "--timeout"], &[]);
    if f.is_empty() {
        fail(&format!("{verb}: name a command, --group G or --all"));
    }
    let wait = more.iter().find(|(k, _)| k == "--wait").map(|(_, v)| v.clone());
    let timeout = more
        .iter()
        .find(|(k, _)| k == "--timeout")
        .map(|(_, v)| Duration::from_secs_f64(v.parse().unwrap_or_else(|_| fail("--timeout needs seconds"))));
    if let Some(w) = &wait
        && w != "running"
        && w != "stopped"
    {
        fail("--wait takes running or stopped");
    }
    let mut req = vec!["act".to_string(), verb.to_string()];
    req.extend(f.to_fields());
    if let Some(reply) = ask(g, &req.join("\t")) {
        let r = expect_ok(&reply);
        let n = r.split('\t').nth(2).unwrap_or("0").trim().to_string();
        eprintln!("{verb}: {n} command(s)");
        return match wait {
            Some(w) => wait_via_server(g, &f, &w, timeout),
            None => 0,
        };
    }
    // No sheriff running: once, by ourselves (touching only what the
    // deputies report, removing nothing).
    let mut e = one_shot(g, false, Duration::from_secs(3), |e| !f.select(&e.fleet).is_empty());
    let keys = f.select(&e.fleet);
    if keys.is_empty() {
        fail("no such command (no deputy reported one within 3 s)");
    }
    let v = match verb {
        "start" => Verb::Start,
        "stop" => Verb::Stop,
        _ => Verb::Restart,
    };
    let n = e.act(&keys, v);
    if let Some(why) = keys.iter().find_map(|k| e.unsendable(&k.0)) {
        fail(&why);
    }
    eprintln!("{verb}: {n} of {} command(s) changed", keys.len());
    let end = Instant::now() + timeout.unwrap_or(Duration::from_secs(if wait.is_some() { 30 } else { 1 }));
    let mut next = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next {
            next = e.tick(now).min(now + Duration::from_millis(300));
        }
        e.poll_lcm(now);
        let done = match wait.as_deref() {
            None => now + Duration::from_millis(400) >= end.min(now + Duration::from_secs(30)) && next > now,
            Some(w) => waits_met(&e.fleet, &f, w),
        };
        if done && wait.is_some() {
            return 0;
        }
        if now >= end {
            return if wait.is_some() {
                eprintln!("{verb}: wait for {} timed out", wait.unwrap_or_default());
                1
            } else {
                0
            };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn waits_met(f: &daemonproxy::sheriff::model::Fleet, sel: &Filter, w: &str) -> bool {
    sel.select(f).iter().all(|k| {
        let s = f.cmds[k].status();
        if w == "running" {
            s == daemonproxy::sheriff::model::Status::Running || s.is_stopped()
        } else {
            s.is_stopped()
        }
    })
}

fn wait_via_server(g: &Global, f: &Filter, w: &str, timeout: Option<Duration>) -> i32 {
    let end = timeout.map(|t| Instant::now() + t);
    let mut req = vec!["status".to_string()];
    req.extend(f.to_fields());
    loop {
        let rows = match ask(g, &req.join("\t")) {
            Some(t) => serve::parse_rows(expect_ok(&t)),
            None => fail("the sheriff went away"),
        };
        let ok = rows.iter().all(|r| {
            let stopped = r.status.starts_with("Stopped");
            if w == "running" { r.status == "Running" || stopped } else { stopped }
        });
        if ok {
            return 0;
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            eprintln!("wait for {w} timed out");
            return 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn logs_cmd(g: &Global, args: &[String]) -> i32 {
    let (f, more) = parse_filter(args, &["-n"], &["-f"]);
    let Some(name) = f.name.clone() else { fail("logs: name a command") };
    let n: usize = more.iter().find(|(k, _)| k == "-n").map_or(10, |(_, v)| v.parse().unwrap_or_else(|_| fail("-n N")));
    let follow = more.iter().any(|(k, _)| k == "-f");
    // Which deputy: --deputy, or the one running a command of that name.
    let deputy = match &f.deputy {
        Some(d) => d.clone(),
        None => {
            let rows = match ask(g, &format!("status\tname={name}")) {
                Some(t) => serve::parse_rows(expect_ok(&t)),
                None => Vec::new(),
            };
            match rows.as_slice() {
                [r] => r.deputy.clone(),
                [] if rows.is_empty() && ask(g, "id").is_none() => String::new(),
                [] => fail(&format!("no command {name}")),
                _ => fail(&format!("{name} runs on several deputies: add --deputy")),
            }
        }
    };
    let line = format!("logs\t{deputy}\t{name}\t{n}\t{}", if follow { 1 } else { 0 });
    if let Some(s) = connect(g, &line) {
        let mut r = BufReader::new(s);
        let mut first = String::new();
        if r.read_line(&mut first).is_err() || first.trim_end() != "ok" {
            fail(first.trim_end().strip_prefix("error\t").unwrap_or("no reply"));
        }
        // Plain reads and writes, not io::copy: that would splice(2) from
        // the socket into a stdout pipe, and while splice waits for the
        // socket it holds the pipe's lock, so even a non-blocking reader
        // of the pipe hangs.
        let mut out = std::io::stdout().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return 0,
                Ok(n) => {
                    if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                        return 0;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return 1,
            }
        }
    }
    if !follow {
        fail("no sheriff running (serve keeps recent output); only -f works without it");
    }
    let mut e = one_shot(g, true, Duration::ZERO, |_| false);
    let mut out = std::io::stdout().lock();
    loop {
        daemonproxy::sys::wait_readable(e.lcm.fds().first().copied().unwrap_or(-1), 200);
        e.poll_lcm(Instant::now());
        for k in std::mem::take(&mut e.fresh_output) {
            if k.1 == name && (deputy.is_empty() || k.0 == deputy) {
                let data = e.output.take(&k);
                if out.write_all(&data).and_then(|_| out.flush()).is_err() {
                    return 0;
                }
            }
        }
    }
}

fn deputies_cmd(g: &Global) -> i32 {
    match ask(g, "deputies") {
        Some(t) => print!("{}", expect_ok(&t).trim_end_matches("end\n")),
        None => {
            let e = one_shot(g, true, Duration::from_millis(1500), |_| false);
            print!("{}", view::deputies(&e.fleet, Instant::now()));
        }
    }
    0
}

fn flush_cmd(g: &Global) -> i32 {
    match ask(g, "flush") {
        Some(t) => {
            let n = expect_ok(&t).split('\t').nth(1).unwrap_or("0").trim().to_string();
            eprintln!("flushed {n} command(s)");
            0
        }
        None => fail("flush needs a running sheriff (serve)"),
    }
}

fn run_cmd(g: &Global, args: &[String]) -> i32 {
    let (mut script, mut cfg) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => cfg = Some(it.next().cloned().unwrap_or_else(|| fail("--config needs a file"))),
            x => script = Some(x.to_string()),
        }
    }
    let Some(script) = script else { fail("run: name a script") };
    if cfg.is_none()
        && let Some(s) = connect(g, &format!("run\t{script}"))
    {
        let r = BufReader::new(s);
        let mut code = 1;
        for (i, l) in r.lines().map_while(Result::ok).enumerate() {
            if i == 0 {
                if l != "ok" {
                    fail(l.strip_prefix("error\t").unwrap_or(&l));
                }
                continue;
            }
            if let Some(p) = l.strip_prefix("step\t") {
                eprintln!("{p}");
            } else if l == "done" {
                code = 0;
            } else if let Some(why) = l.strip_prefix("failed\t") {
                eprintln!("failed: {why}");
                code = 1;
            }
        }
        return code;
    }
    let Some(cfg) = cfg else { fail("no sheriff running: give --config FILE") };
    // A sheriff of our own for the length of the script.
    run_sheriff(g, g.settings(false, false), Some(cfg.into()), Some(script), AfterScript::Exit)
}

fn import_cmd(args: &[String]) -> i32 {
    let Some(path) = args.first() else { fail("import-json: name a file") };
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
    match json::import(&text, path) {
        Ok((cfg, warnings)) => {
            for w in warnings {
                eprintln!("warning: {w}");
            }
            print!("{}", config::save(&cfg));
            0
        }
        Err(e) => {
            eprintln!("{e}");
            2
        }
    }
}

fn check_cmd(args: &[String]) -> i32 {
    let Some(path) = args.first() else { fail("check: name a config file") };
    match config::load(std::path::Path::new(path)).and_then(|c| config::validate(&c, path).map(|_| c)) {
        Ok(c) => {
            eprintln!("{path}: {} commands, {} scripts", c.cmds.len(), c.scripts.len());
            0
        }
        Err(e) => {
            eprintln!("{e}");
            2
        }
    }
}
