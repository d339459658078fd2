//! `daemonproxy-sheriff`: steer a fleet of procman deputies (daemonproxy
//! bridges or stock deputies) from the command line. Flags and wiring
//! only; the work is in `daemonproxy::sheriff`. See daemonproxy-sheriff(1).

use daemonproxy::procman::Url;
use daemonproxy::procman::auth::{AuthMode, Key};
use daemonproxy::sheriff::config;
use daemonproxy::sheriff::engine::{Engine, Settings};
use daemonproxy::sheriff::http;
use daemonproxy::sheriff::json;
use daemonproxy::sheriff::model::Verb;
use daemonproxy::sheriff::serve::{self, AfterScript, Options, Sheriff};
use daemonproxy::sheriff::view::{self, Filter, Row};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const HELP: &str = "\
usage: daemonproxy-sheriff [OPTIONS] VERB [ARGS]
       daemonproxy-sheriff --help | --version

Run the sheriff:
  serve [CONFIG [SCRIPT]]  hold the desired state of every command and send
                           the orders; run SCRIPT first if given. The verbs
                           below reach it through its control socket.
Verbs (through a running sheriff, else once on LCM by themselves):
  status [--watch] [--deputy D] [--group G] [PATTERN]
  start|stop|restart (CMD|--group G|--all) [--deputy D]
                     [--wait running|stopped] [--timeout SECONDS]
                           (a wait gives up after --timeout, default 30 s)
  logs CMD [--deputy D] [-n N] [-f]
  deputies                 host load and memory, last heard
  flush                    forget commands that are stopped for good
  run SCRIPT [--config FILE]  (--config only when no sheriff is serving)
  import-json FILE         print a procman config made from a ProcMan JSON file
  check CONFIG             parse and validate a config (errors: FILE:LINE:COL)

Options (an option a verb cannot use is refused; --lcm-url and --control
are accepted by every verb):
  --lcm-url URL            udpm://GROUP:PORT?ttl=N, tcpq://HOST:PORT or
                           tcpq+unix:///PATH (a hub of root or this user)
                           (default $LCM_DEFAULT_URL, else
                           udpm://239.255.76.67:7667?ttl=0: this host only);
                           a verb sent to a serving sheriff checks that it
                           uses this URL
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
  --on-script-complete continue|exit|observe
                           what serve does after its SCRIPT (default
                           continue: it goes on steering)
  --script-timeout SECONDS give up a script wait after this long (serve,
                           and run, also through a serving sheriff)
  --auth off|sign|require  PMA1 message authentication (default off)
  --auth-key-file PATH     hex key, mode 0600 (repeatable)
  --trust-unsigned-deputy ID  accept unsigned info from ID under require
  --http [ADDR:]PORT       serve: the fleet page, /metrics and the JSON API
                           over HTTP (ADDR 127.0.0.1 if left out; any other
                           address needs --http-token-file)
  --http-token-file PATH   every HTTP request must carry the token in this
                           file (mode 0600; 16 to 256 of A-Z a-z 0-9 -._~+/=)
                           as \"Authorization: Bearer TOKEN\" or through the
                           page's login form
  --http-read-only         the page shows everything and refuses every
                           action (--observe implies it)
  -h, --help               this text
  -V, --version            the version

Long options also take --option=VALUE. A verb run without a sheriff is a
second sheriff on the wire while it runs (a few seconds): another sheriff
that sees its orders warns and, unless started with --no-demote, turns
observer. Run verbs through `serve`. Exit status: 0 done; 1 a failed wait
(script or --wait), or nothing answered (no sheriff serving and no deputy
heard); 2 a usage or configuration error, or orders that cannot be sent.
";

fn fail(msg: &str) -> ! {
    fail_with(2, msg)
}

fn fail_with(code: i32, msg: &str) -> ! {
    eprintln!("daemonproxy-sheriff: {msg}");
    std::process::exit(code);
}

/// Seconds from the command line (`what` names the option).
fn seconds(what: &str, v: &str) -> Duration {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=1e9).contains(&s) => Duration::from_secs_f64(s),
        _ => fail(&format!("{what} needs seconds, not {v:?}")),
    }
}

/// Options that take a value; each also as `--option=VALUE`.
const VALUED: [&str; 10] = [
    "--http",
    "--http-token-file",
    "--lcm-url",
    "--control",
    "--tcpq-listen",
    "--on-script-complete",
    "--script-timeout",
    "--auth",
    "--auth-key-file",
    "--trust-unsigned-deputy",
];

/// The verbs, and the options each can use (besides --control). An
/// option given to a verb that cannot use it is refused rather than
/// ignored (issue 15 §3).
const VERBS: [(&str, &[&str]); 11] = [
    ("serve", &SERVE_OPTIONS),
    ("status", &["--lcm-url", "--observe", "--auth", "--auth-key-file", "--trust-unsigned-deputy"]),
    ("deputies", &["--lcm-url", "--observe", "--auth", "--auth-key-file", "--trust-unsigned-deputy"]),
    ("logs", &["--lcm-url", "--observe", "--auth", "--auth-key-file", "--trust-unsigned-deputy"]),
    ("start", &["--lcm-url", "--auth", "--auth-key-file", "--trust-unsigned-deputy"]),
    ("stop", &["--lcm-url", "--auth", "--auth-key-file", "--trust-unsigned-deputy"]),
    ("restart", &["--lcm-url", "--auth", "--auth-key-file", "--trust-unsigned-deputy"]),
    ("flush", &["--lcm-url"]),
    (
        "run",
        &[
            "--lcm-url",
            "--script-timeout",
            "--local",
            "--tcpq-listen",
            "--no-demote",
            "--auth",
            "--auth-key-file",
            "--trust-unsigned-deputy",
        ],
    ),
    // Where to reach a sheriff or the deputies is accepted by every verb
    // (an alias may carry it), though these two read a file only.
    ("import-json", &["--lcm-url"]),
    ("check", &["--lcm-url"]),
];

const SERVE_OPTIONS: [&str; 14] = [
    "--http",
    "--http-token-file",
    "--http-read-only",
    "--lcm-url",
    "--observe",
    "--local",
    "--tcpq-listen",
    "--no-demote",
    "--on-script-complete",
    "--script-timeout",
    "--auth",
    "--auth-key-file",
    "--trust-unsigned-deputy",
    "--control",
];

/// Options that shape a sheriff of the verb's own: a verb sent to a
/// serving sheriff cannot apply them (that one has its own).
const OWN_SHERIFF_ONLY: [&str; 6] =
    ["--local", "--tcpq-listen", "--no-demote", "--auth", "--auth-key-file", "--trust-unsigned-deputy"];

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
    http: Option<String>,
    http_token_file: Option<PathBuf>,
    http_read_only: bool,
    /// The options given, by their long names.
    given: Vec<&'static str>,
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

/// How long a verb run by itself listens before it acts: every deputy
/// reports every second (docs/fleet.md §4.3), so by then each has been
/// heard, not only the first to answer the discovery (docs/fleet.md §5.5).
const ONE_SHOT_LISTEN: Duration = Duration::from_millis(1200);
/// How long it goes on listening while no selected command is known.
const ONE_SHOT_MAX: Duration = Duration::from_secs(3);
/// How long `status` and `deputies` run by themselves listen.
const ONE_SHOT_STATUS: Duration = Duration::from_millis(1500);
/// `--wait` gives up after this long unless `--timeout` says otherwise.
const WAIT_DEFAULT: Duration = Duration::from_secs(30);

fn main() {
    let mut g = Global {
        url: None,
        control: None,
        observe: false,
        local: false,
        hub_port: None,
        demote: true,
        after: AfterScript::Continue,
        script_timeout: None,
        auth: AuthMode::Off,
        keys: Vec::new(),
        trust: Vec::new(),
        http: None,
        http_token_file: None,
        http_read_only: false,
        given: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    let mut verb = None;
    while let Some(arg) = args.next() {
        // --option=VALUE for the options that take a value.
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") && VALUED.contains(&n) => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| fail(&format!("{name} needs a value (see --help)")))
        };
        let canonical: &'static str = match name.as_str() {
            "--lcm-url" => {
                g.url = Some(value());
                "--lcm-url"
            }
            "--control" => {
                g.control = Some(value().into());
                "--control"
            }
            "-o" | "--observe" => {
                g.observe = true;
                "--observe"
            }
            "-l" | "--local" => {
                g.local = true;
                "--local"
            }
            "--tcpq-listen" => {
                g.hub_port = Some(value().parse().unwrap_or_else(|_| fail("--tcpq-listen needs a port")));
                "--tcpq-listen"
            }
            "--no-demote" => {
                g.demote = false;
                "--no-demote"
            }
            "--on-script-complete" => {
                g.after = match value().as_str() {
                    "continue" => AfterScript::Continue,
                    "exit" => AfterScript::Exit,
                    "observe" => AfterScript::Observe,
                    v => fail(&format!("--on-script-complete {v}: expected continue, exit or observe")),
                };
                "--on-script-complete"
            }
            "--script-timeout" => {
                g.script_timeout = Some(seconds("--script-timeout", &value()));
                "--script-timeout"
            }
            "--auth" => {
                g.auth = value().parse().unwrap_or_else(|e| fail(&format!("--auth: {e}")));
                "--auth"
            }
            "--auth-key-file" => {
                g.keys.push(value());
                "--auth-key-file"
            }
            "--trust-unsigned-deputy" => {
                g.trust.push(value());
                "--trust-unsigned-deputy"
            }
            "--http" => {
                g.http = Some(value());
                "--http"
            }
            "--http-token-file" => {
                g.http_token_file = Some(value().into());
                "--http-token-file"
            }
            "--http-read-only" => {
                g.http_read_only = true;
                "--http-read-only"
            }
            "-h" | "--help" => {
                print!("{HELP}");
                return;
            }
            "-V" | "--version" => {
                println!("daemonproxy-sheriff version {}", env!("CARGO_PKG_VERSION"));
                return;
            }
            a if a.starts_with('-') => fail(&format!("unknown option {a} (see --help)")),
            _ => {
                verb = Some(arg);
                break;
            }
        };
        g.given.push(canonical);
    }
    let Some(verb) = verb else {
        eprint!("daemonproxy-sheriff: name a verb\n{HELP}");
        std::process::exit(2);
    };
    let rest: Vec<String> = args.collect();
    let Some((_, usable)) = VERBS.iter().find(|(v, _)| *v == verb) else {
        fail(&format!("unknown verb {verb} (see --help)"))
    };
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        print!("{HELP}");
        return;
    }
    if let Some(o) = g.given.iter().find(|o| **o != "--control" && !usable.contains(o)) {
        let why = match *o {
            "--observe" if ["start", "stop", "restart", "flush", "run"].contains(&verb.as_str()) => {
                "an observer does not act".to_string()
            }
            _ if verb == "check" || verb == "import-json" => format!("{verb} reads a file only"),
            "--script-timeout" => "it applies to serve and run".into(),
            "--on-script-complete" => "it applies to serve CONFIG SCRIPT".into(),
            "--local" | "--tcpq-listen" | "--no-demote" => "it applies to serve (and run --config)".into(),
            "--http" | "--http-token-file" | "--http-read-only" => "it applies to serve".into(),
            _ if verb == "flush" => "flush goes through a serving sheriff, which has its own".into(),
            _ => "it applies to serve and to verbs run without one".into(),
        };
        fail(&format!("{o} has no effect on {verb}: {why}"));
    }
    let code = match verb.as_str() {
        "serve" => serve_cmd(&g, &rest),
        "status" => status_cmd(&g, &rest),
        "start" | "stop" | "restart" => act_cmd(&g, &verb, &rest),
        "logs" => logs_cmd(&g, &rest),
        "deputies" => deputies_cmd(&g, &rest),
        "flush" => flush_cmd(&g, &rest),
        "run" => run_cmd(&g, &rest),
        "import-json" => import_cmd(&rest),
        _ => check_cmd(&rest),
    };
    std::process::exit(code);
}

fn serve_cmd(g: &Global, args: &[String]) -> i32 {
    if let Some(a) = args.iter().find(|a| a.starts_with('-')) {
        fail(&format!("serve: unknown option {a} (options go before the verb; see --help)"));
    }
    if args.len() > 2 {
        fail("serve takes at most CONFIG and SCRIPT");
    }
    let cfg = args.first().map(PathBuf::from);
    if g.http.is_none() && (g.http_token_file.is_some() || g.http_read_only) {
        fail("--http-token-file and --http-read-only go with --http");
    }
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
        http: g.http.as_deref().map(|a| http_config(g, a)),
    };
    match Sheriff::new(o) {
        Ok(mut s) => s.run(),
        Err(e) => {
            eprintln!("daemonproxy-sheriff: {e}");
            2
        }
    }
}

/// `--http ADDR` and its companions; a token is read from its file
/// (which only its owner may read) and required off 127.0.0.1 and ::1.
fn http_config(g: &Global, addr: &str) -> http::Config {
    let addr = http::parse_addr(addr).unwrap_or_else(|e| fail(&e));
    let token = g.http_token_file.as_ref().map(|p| {
        use std::os::unix::fs::MetadataExt;
        let what = |e: String| -> ! { fail(&format!("--http-token-file {}: {e}", p.display())) };
        let meta = std::fs::metadata(p).unwrap_or_else(|e| what(e.to_string()));
        if meta.mode() & 0o077 != 0 {
            what("group or others may read it (chmod 600)".into());
        }
        let text = std::fs::read_to_string(p).unwrap_or_else(|e| what(e.to_string()));
        http::auth::parse_token(&text).unwrap_or_else(|e| what(e))
    });
    if token.is_none() && !http::is_private(&addr) {
        fail(&format!("--http {addr}: an address other than 127.0.0.1 or [::1] needs --http-token-file"));
    }
    http::Config { addr, token, read_only: g.http_read_only || g.observe }
}

/// Split `--name=VALUE` for the verbs' options that take a value.
fn split_inline(args: &[String], valued: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for a in args {
        match a.split_once('=') {
            Some((n, v)) if valued.contains(&n) => {
                out.push(n.to_string());
                out.push(v.to_string());
            }
            _ => out.push(a.clone()),
        }
    }
    out
}

/// Parse `[--deputy D] [--group G] [--all] [PATTERN]` and the extra flags
/// a verb takes (returned as (flag, value) pairs).
fn parse_filter(args: &[String], extra: &[&str], switches: &[&str]) -> (Filter, Vec<(String, String)>) {
    let mut valued = vec!["--deputy", "--group"];
    valued.extend(extra.iter().filter(|x| x.starts_with("--")));
    let args = split_inline(args, &valued);
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

/// A sheriff that answered on the control socket.
struct Served {
    /// The socket.
    path: PathBuf,
    /// `active` or `observer`.
    mode: String,
}

/// Is a sheriff serving on the control socket? If not, why not (the
/// connection's error), for the messages of verbs that then run by
/// themselves. Exits 2 if the socket is served by another user, or is not
/// ours to use. A verb sent to it must not carry options it cannot apply:
/// those are refused here, and `--lcm-url` must be the URL it uses.
fn served(g: &Global) -> Result<Served, String> {
    let path = g.control(false);
    let mut s = match serve::request(&path, "id") {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => fail(&e.to_string()),
        Err(e) => return Err(format!("no sheriff is serving on {} ({e})", path.display())),
    };
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let f: Vec<&str> = text.lines().next().unwrap_or("").split('\t').collect();
    let ["ok", _id, mode, rest @ ..] = f.as_slice() else {
        fail_with(1, &format!("the sheriff on {} did not answer as one (reply {:?})", path.display(), text.trim_end()))
    };
    if let Some(o) = g.given.iter().find(|o| OWN_SHERIFF_ONLY.contains(o)) {
        fail(&format!(
            "{o}: a sheriff is serving on {} and the verb goes through it, with its settings; leave {o} out",
            path.display()
        ));
    }
    // A sheriff of an older build does not say its URL.
    if let (Some(mine), Some(url)) = (&g.url, rest.first()) {
        let mine = Url::parse(mine).map(|u| u.to_string()).unwrap_or_else(|e| fail(&format!("LCM URL: {e}")));
        if mine != *url {
            fail(&format!(
                "--lcm-url {mine}: the sheriff serving on {} uses {url}; leave --lcm-url out, or give the --control of a sheriff on {mine}",
                path.display()
            ));
        }
    }
    Ok(Served { path, mode: mode.to_string() })
}

/// The reply of the serving sheriff to one request; exits if it went away.
fn ask(s: &Served, line: &str) -> String {
    let mut c = connect(s, line);
    let mut text = String::new();
    if c.read_to_string(&mut text).is_err() || text.is_empty() {
        fail_with(1, &format!("the sheriff on {} went away", s.path.display()));
    }
    text
}

/// A request sent to the serving sheriff; exits if it went away.
fn connect(s: &Served, line: &str) -> std::os::unix::net::UnixStream {
    match serve::request(&s.path, line) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => fail(&e.to_string()),
        Err(e) => fail_with(1, &format!("the sheriff on {} went away ({e})", s.path.display())),
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

/// A short-lived sheriff of our own (no `serve` running, `why`): listens
/// to the deputies' reports until `until(engine, time listening)`, at
/// most `wait`. An LCM endpoint that cannot be opened ends the verb
/// (status 1) saying what was tried.
fn one_shot(
    g: &Global,
    why: &str,
    observer: bool,
    wait: Duration,
    until: impl Fn(&Engine, Duration) -> bool,
) -> Engine {
    let settings = g.settings(observer, true);
    let url = settings.url.to_string();
    let mut e = Engine::new(settings).unwrap_or_else(|e| {
        let hint = if e.raw_os_error() == Some(libc::ENODEV) && url.starts_with("udpm:") {
            " (no route for multicast here: ip route add 224.0.0.0/4 dev INTERFACE)"
        } else {
            ""
        };
        fail_with(1, &format!("{why}, and LCM {url} cannot be used to reach the deputies: {e}{hint}"))
    });
    let t0 = Instant::now();
    while t0.elapsed() < wait && !until(&e, t0.elapsed()) {
        daemonproxy::sys::wait_readable(e.lcm.fds().first().copied().unwrap_or(-1), 20);
        e.poll_lcm(Instant::now());
    }
    e
}

/// The deputies a one-shot heard.
fn heard(e: &Engine) -> usize {
    e.fleet.deputies.values().filter(|d| d.heard.is_some()).count()
}

fn status_cmd(g: &Global, args: &[String]) -> i32 {
    let (f, more) = parse_filter(args, &[], &["--watch"]);
    let watch = more.iter().any(|(k, _)| k == "--watch");
    let mut req = vec!["status".to_string()];
    req.extend(f.to_fields());
    let server = served(g);
    let mut engine = None;
    let mut note = String::new();
    loop {
        let rows: Vec<Row> = match &server {
            Ok(s) => serve::parse_rows(expect_ok(&ask(s, &req.join("\t")))),
            Err(why) => {
                if engine.is_none() {
                    // All deputies report every second: 1.5 s hears each.
                    let e = one_shot(g, why, true, ONE_SHOT_STATUS, |_, _| false);
                    let url = g.settings(true, true).url;
                    note = match heard(&e) {
                        0 => format!("{why}, and no deputy answered on {url} within 1.5 s"),
                        n => format!("{why}: the table is what {n} deputies reported on {url} (no desired state)"),
                    };
                    if heard(&e) == 0 && !watch {
                        fail_with(1, &note);
                    }
                    if !watch {
                        eprintln!("daemonproxy-sheriff: {note}");
                    }
                    engine = Some(e);
                }
                let Some(e) = engine.as_mut() else { return 1 };
                e.poll_lcm(Instant::now());
                view::rows(&e.fleet, &f, Instant::now())
            }
        };
        let table = view::table(&rows);
        if !watch {
            print!("{table}");
            return 0;
        }
        // Redrawn in place: cursor home, clear to the end (works over ssh).
        let extra = if note.is_empty() { String::new() } else { format!("\n{note}") };
        print!("\x1b[H\x1b[2J{}  ({} commands){extra}\n\n{table}", chrono_now(), rows.len());
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

/// Is a `--wait` for `w` met by these rows? Commands whose deputy said it
/// will not act on them are not waited for, unless the verb named one by
/// id: then the wait fails at once, with the deputy's word.
/// Returns whether it is met, and how many commands it did not wait for.
fn rows_met(rows: &[Row], sel: &Filter, w: &str) -> Result<(bool, usize), String> {
    let (mut ok, mut left) = (true, 0);
    for r in rows {
        if let Some(why) = &r.refused {
            if sel.name.as_deref() == Some(r.id.as_str()) {
                return Err(format!("{} on {}: the deputy will not act on it: {why}", r.id, r.deputy));
            }
            left += 1;
            continue;
        }
        let stopped = r.status.starts_with("Stopped");
        ok &= if w == "running" { r.status == "Running" || stopped } else { stopped };
    }
    Ok((ok, left))
}

/// Say which commands a met wait did not wait for.
fn met_note(left: usize) -> i32 {
    if left > 0 {
        eprintln!("{left} command(s) not waited for: their deputy said it will not act on them");
    }
    0
}

fn act_cmd(g: &Global, verb: &str, args: &[String]) -> i32 {
    let (f, more) = parse_filter(args, &["--wait", "--timeout"], &[]);
    if f.is_empty() {
        fail(&format!("{verb}: name a command, --group G or --all"));
    }
    let wait = more.iter().find(|(k, _)| k == "--wait").map(|(_, v)| v.clone());
    let timeout = more.iter().find(|(k, _)| k == "--timeout").map(|(_, v)| seconds("--timeout", v));
    if let Some(w) = &wait
        && w != "running"
        && w != "stopped"
    {
        fail("--wait takes running or stopped");
    }
    let mut req = vec!["act".to_string(), verb.to_string()];
    req.extend(f.to_fields());
    let why = match served(g) {
        Ok(s) => {
            let reply = ask(&s, &req.join("\t"));
            let r: Vec<&str> = expect_ok(&reply).trim_end().split('\t').collect();
            let (n, of, skipped) = (r.get(1).unwrap_or(&"0"), r.get(2).unwrap_or(&"0"), r.get(3).unwrap_or(&"0"));
            eprintln!("{verb}: {n} of {of} command(s) changed{}", skipped_note(skipped.parse().unwrap_or(0)));
            return match wait {
                Some(w) => wait_via_server(&s, &f, &w, timeout.unwrap_or(WAIT_DEFAULT)),
                None => 0,
            };
        }
        Err(why) => why,
    };
    // No sheriff serving: once, by ourselves (touching only what the
    // deputies report, removing nothing), after every deputy's report.
    let literal = f.deputy.as_deref().filter(|d| !d.contains(['*', '?', '[']));
    let mut e = one_shot(g, &why, false, ONE_SHOT_MAX, |e, t| {
        let known = !f.select(&e.fleet).is_empty();
        known
            && (t >= ONE_SHOT_LISTEN
                || literal.is_some_and(|d| e.fleet.deputies.get(d).is_some_and(|d| d.heard.is_some())))
    });
    let (keys, skipped) = f.actionable(&e.fleet);
    if keys.is_empty() && skipped == 0 {
        let url = g.settings(false, true).url;
        let heard = match heard(&e) {
            0 => format!("no deputy answered on {url} within 3 s"),
            n => format!("none of the {n} deputies heard on {url} within 3 s reported one"),
        };
        fail_with(1, &format!("no such command: {why}, and {heard}"));
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
    eprintln!("{verb}: {n} of {} command(s) changed{}", keys.len(), skipped_note(skipped));
    let end = Instant::now() + if wait.is_some() { timeout.unwrap_or(WAIT_DEFAULT) } else { Duration::from_secs(1) };
    let mut next = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next {
            next = e.tick(now).min(now + Duration::from_millis(300));
        }
        e.poll_lcm(now);
        if let Some(w) = wait.as_deref() {
            match rows_met(&view::rows(&e.fleet, &f, now), &f, w) {
                Ok((true, left)) => return met_note(left),
                Ok((false, _)) => {}
                Err(why) => {
                    e.tick(Instant::now());
                    fail_with(1, &format!("{verb}: {why}"));
                }
            }
        }
        if now >= end {
            return if let Some(w) = wait {
                eprintln!("{verb}: wait for {w} timed out");
                1
            } else {
                0
            };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn skipped_note(n: usize) -> String {
    if n == 0 { String::new() } else { format!("; {n} left alone: their deputy said it will not act on them") }
}

fn wait_via_server(s: &Served, f: &Filter, w: &str, timeout: Duration) -> i32 {
    let end = Instant::now() + timeout;
    let mut req = vec!["status".to_string()];
    req.extend(f.to_fields());
    loop {
        let rows = serve::parse_rows(expect_ok(&ask(s, &req.join("\t"))));
        match rows_met(&rows, f, w) {
            Ok((true, left)) => return met_note(left),
            Ok((false, _)) => {}
            Err(why) => fail_with(1, &why),
        }
        if Instant::now() >= end {
            eprintln!("wait for {w} timed out after {:.0} s", timeout.as_secs_f64());
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
    let server = served(g);
    // Which deputy: --deputy, or the one running a command of that name.
    let deputy = match (&f.deputy, &server) {
        (Some(d), _) => d.clone(),
        (None, Ok(s)) => {
            let rows = serve::parse_rows(expect_ok(&ask(s, &format!("status\tname={name}"))));
            match rows.as_slice() {
                [r] => r.deputy.clone(),
                [] => fail(&format!("no command {name}")),
                _ => fail(&format!("{name} runs on several deputies: add --deputy")),
            }
        }
        (None, Err(_)) => String::new(),
    };
    let line = format!("logs\t{deputy}\t{name}\t{n}\t{}", if follow { 1 } else { 0 });
    let why = match &server {
        Ok(s) => {
            let mut r = BufReader::new(connect(s, &line));
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
        Err(why) => why.clone(),
    };
    if !follow {
        fail_with(1, &format!("{why}: only logs -f works without one (serve keeps recent output)"));
    }
    let mut e = one_shot(g, &why, true, Duration::ZERO, |_, _| false);
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

fn no_args(verb: &str, args: &[String]) {
    if let Some(a) = args.first() {
        fail(&format!("{verb}: unexpected argument {a} (see --help)"));
    }
}

fn deputies_cmd(g: &Global, args: &[String]) -> i32 {
    no_args("deputies", args);
    match served(g) {
        Ok(s) => print!("{}", expect_ok(&ask(&s, "deputies")).trim_end_matches("end\n")),
        Err(why) => {
            let e = one_shot(g, &why, true, ONE_SHOT_STATUS, |_, _| false);
            let url = g.settings(true, true).url;
            if heard(&e) == 0 {
                fail_with(1, &format!("{why}, and no deputy answered on {url} within 1.5 s"));
            }
            eprintln!("daemonproxy-sheriff: {why}: {} deputies heard on {url}", heard(&e));
            print!("{}", view::deputies(&e.fleet, Instant::now()));
        }
    }
    0
}

fn flush_cmd(g: &Global, args: &[String]) -> i32 {
    no_args("flush", args);
    match served(g) {
        Ok(s) => {
            if s.mode == "observer" {
                fail("the sheriff serving is an observer: it does not act");
            }
            let t = ask(&s, "flush");
            let n = expect_ok(&t).split('\t').nth(1).unwrap_or("0").trim().to_string();
            eprintln!("flushed {n} command(s)");
            0
        }
        Err(why) => fail_with(1, &format!("flush needs a running sheriff (serve): {why}")),
    }
}

fn run_cmd(g: &Global, args: &[String]) -> i32 {
    let args = split_inline(args, &["--config"]);
    let (mut script, mut cfg) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => cfg = Some(it.next().cloned().unwrap_or_else(|| fail("--config needs a file"))),
            x if x.starts_with('-') => fail(&format!("run: unknown option {x} (see --help)")),
            x if script.is_some() => fail(&format!("run: unexpected argument {x}")),
            x => script = Some(x.to_string()),
        }
    }
    let Some(script) = script else { fail("run: name a script") };
    let why = match served(g) {
        Ok(s) => {
            if cfg.is_some() {
                fail(&format!(
                    "run --config: a sheriff is serving on {} and runs the scripts of its own configuration; \
                     leave --config out to run {script} there, or stop that sheriff first",
                    s.path.display()
                ));
            }
            let mut req = format!("run\t{script}");
            if let Some(t) = g.script_timeout {
                req.push_str(&format!("\ttimeout={}", t.as_secs_f64()));
            }
            let r = BufReader::new(connect(&s, &req));
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
        Err(why) => why,
    };
    let Some(cfg) = cfg else { fail(&format!("{why}: give --config FILE to run {script} with a sheriff of its own")) };
    // A sheriff of our own for the length of the script.
    run_sheriff(g, g.settings(false, false), Some(cfg.into()), Some(script), AfterScript::Exit)
}

fn import_cmd(args: &[String]) -> i32 {
    let [path] = args else { fail("import-json: name one file") };
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
    let [path] = args else { fail("check: name one config file") };
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
