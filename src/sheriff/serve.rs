//! The long-running sheriff: the [`Engine`] on LCM, a configuration and
//! scripts, an optional embedded tcpq hub and lone-ranger deputy, and a
//! control socket through which the CLI verbs (`status`, `start`, `logs
//! -f`, `run`, ...) reach it.
//!
//! Control protocol: one request line per connection, TAB-separated; the
//! reply's first line is `ok` or `error\tMESSAGE`. `status` sends `row`
//! lines (see [`Row`]) and `end`; `deputies` the table text and `end`;
//! `act\tVERB\tFILTER...` `ok\tCHANGED\tSELECTED\tSKIPPED`;
//! `logs\tDEPUTY\tID\tLINES\tFOLLOW` the output itself (followed while
//! the connection lasts); `run\tSCRIPT[\ttimeout=SECONDS]` progress lines
//! and a last `done` or `failed\tWHY`; `id` `ok\tID\tactive|observer\tURL`
//! (docs/fleet.md §5.7).
//!
//! With `--http`, the web page, /metrics and the JSON API of
//! [`super::http`] run on threads of their own: this loop publishes a
//! [`super::snapshot::Snapshot`] to them and answers their [`Ask`]s.

use super::config::{self, Config};
use super::engine::{Engine, Settings};
use super::http::{self, Ask, Selection, Web};
use super::model::Verb;
use super::script::{Outcome, Run};
use super::snapshot::{self, ScriptView, SheriffView};
use super::view::{self, Filter, Row};
use crate::procman::CmdT;
use crate::procman::hub::Hub;
use crate::procman::tcpq::trusted_peer;
use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to do after the script given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterScript {
    /// Go on steering (the default).
    Continue,
    /// Exit (status 0, or 1 if a wait failed).
    Exit,
    /// Go on as an observer.
    Observe,
}

/// Options of `daemonproxy-sheriff serve`.
pub struct Options {
    /// Engine settings.
    pub settings: Settings,
    /// Configuration file.
    pub config: Option<PathBuf>,
    /// Script to run at start.
    pub script: Option<String>,
    /// After it.
    pub after_script: AfterScript,
    /// Give up waits after this long.
    pub script_timeout: Option<Duration>,
    /// The control socket.
    pub control: PathBuf,
    /// Run an embedded tcpq hub on this loopback port.
    pub hub_port: Option<u16>,
    /// Lone ranger: start a private daemonproxy and bridge (`--id
    /// localhost`) here, stopped with SIGTERM at exit.
    pub local: bool,
    /// Serve the web page, /metrics and the JSON API.
    pub http: Option<http::Config>,
}

/// Who started a script run and follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// The command line (`serve CONFIG SCRIPT`): `--on-script-complete`
    /// applies at its end.
    Startup,
    /// A control-socket client (`run`).
    Client(Token),
    /// The web page (`POST /api/run`): its steps show in the snapshot.
    Web,
}

const LCM: Token = Token(0);
const LISTEN: Token = Token(1);
const SIG: Token = Token(2);
const HUB: Token = Token(3);
const WAKE: Token = Token(4);
const CLIENT0: usize = 16;

/// Bytes a follower may fall behind before it is dropped.
const FOLLOW_LIMIT: usize = 8 << 20;
/// The web side's snapshot is rebuilt this soon after a change...
const SNAPSHOT_SOON: Duration = Duration::from_millis(250);
/// ...and this often in any case (uptimes, last heard).
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

enum Mode {
    /// Waiting for its request line.
    Request(Vec<u8>),
    /// `logs -f`: new output of this key goes to it; the position in the
    /// key's ring it has been sent up to.
    Follow((String, String), u64),
    /// Following a script run.
    Script,
    /// Reply written; close once flushed.
    Closing,
}

struct Client {
    sock: UnixStream,
    mode: Mode,
    out: Vec<u8>,
}

impl Client {
    fn flush(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            match self.sock.write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The lone ranger's private directory (made by `mkdtemp`: a fresh random
/// name, mode 0700, never one that existed before) holding its hub's
/// socket, the private daemonproxy's configuration and control socket;
/// and that daemonproxy once started. Dropping it stops the daemonproxy
/// and removes the directory.
struct Local {
    dp: Option<std::process::Child>,
    /// The write end of the private daemonproxy's standard input (`-i`),
    /// never written: when this process ends, even by SIGKILL, the end of
    /// input makes that daemonproxy exit through its exec-on-exit program,
    /// which kills its process group (its services with it).
    _life: Option<std::process::ChildStdin>,
    dir: PathBuf,
}

impl Local {
    /// Make the directory under `$TMPDIR` (else /tmp).
    fn new() -> io::Result<Local> {
        let template = std::env::temp_dir().join("daemonproxy-sheriff-local.XXXXXX");
        let dir = nix::unistd::mkdtemp(&template).map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        let local = Local { dp: None, _life: None, dir };
        // Its paths go into the private daemonproxy's configuration, one
        // TAB-separated line each.
        match local.dir.to_str() {
            Some(p) if !p.contains(|c: char| c.is_control()) => Ok(local),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "$TMPDIR holds a control character or is not UTF-8")),
        }
    }

    /// A path inside the directory, as text (checked UTF-8 by `new`).
    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// Write the private daemonproxy's configuration (a new file: `O_EXCL`,
    /// `O_NOFOLLOW`, mode 0600) and start it, with its bridge on `url`.
    fn start(&mut self, url: &crate::procman::Url) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let exe = std::env::current_exe()?;
        let bin = exe.parent().map(PathBuf::from).unwrap_or_default();
        let dp = bin.join("daemonproxy");
        let bridge = bin.join("daemonproxy-bridge");
        let conf = self.path("local.conf");
        let text = format!(
            "terminate.exec_args\t/bin/sh\t-c\tkill -KILL 0\n\
             service.args\tbridge\t{}\t--control-fd\t0\t--id\tlocalhost\t--lcm-url\t{url}\n\
             service.fds\tbridge\tcontrol.socket\tcontrol.socket\tstderr\n\
             service.auto_up\tbridge\t1\talways\n",
            bridge.display()
        );
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&conf)?
            .write_all(text.as_bytes())?;
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new(&dp)
            .process_group(0)
            .arg("-i")
            .arg("-c")
            .arg(&conf)
            .arg("-S")
            .arg(self.path("dp.sock"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()?;
        self._life = child.stdin.take();
        self.dp = Some(child);
        Ok(())
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        // The private daemonproxy leads its own process group, and its
        // services stay in it (daemonproxy never moves them): SIGTERM to
        // the group, then SIGKILL to what is left.
        if let Some(dp) = &mut self.dp {
            let pg = nix::unistd::Pid::from_raw(dp.id() as i32);
            let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGTERM);
            std::thread::sleep(Duration::from_millis(200));
            let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGKILL);
            let _ = dp.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The sheriff process.
pub struct Sheriff {
    engine: Engine,
    poll: Poll,
    listener: UnixListener,
    control: PathBuf,
    clients: HashMap<Token, Client>,
    next_client: usize,
    config: Config,
    run: Option<(Run, Owner)>,
    run_reported: usize,
    script_timeout: Option<Duration>,
    after_script: AfterScript,
    hub: Option<Hub>,
    /// The LCM URL in use (the hub's, if it runs one).
    url: String,
    _local: Option<Local>,
    sig_rx: std::os::unix::net::UnixStream,
    _sig_tx: std::os::unix::net::UnixStream,
    exit: Option<i32>,
    web: Option<Web>,
    /// Something the page shows changed since the last snapshot.
    web_dirty: bool,
    last_snapshot: Instant,
    /// The current or last script run, for the page.
    script_view: Option<ScriptView>,
}

fn log(msg: &str) {
    eprintln!("daemonproxy-sheriff: {msg}");
}

/// `CmdT` of a configured command.
pub fn cmd_t(c: &config::CmdDef) -> CmdT {
    CmdT {
        command_id: c.id.clone(),
        exec_str: c.exec.clone(),
        group: c.group.clone(),
        auto_respawn: c.auto_respawn,
        stop_signal: c.stop_signal.clamp(1, 64) as i8,
        stop_time_allowed: c.stop_time_allowed as f32,
    }
}

impl Sheriff {
    /// Set everything up: load the configuration (errors name the file,
    /// line and column), bind the control socket, start the hub and the
    /// lone ranger if asked.
    pub fn new(mut o: Options) -> Result<Sheriff, String> {
        // A socket that answers belongs to a sheriff that is serving: never
        // take it over (and say so if another user's process answers). A
        // stale socket (nobody listening) is replaced; anything else at the
        // path is left alone (binding then fails).
        if let Ok(s) = std::os::unix::net::UnixStream::connect(&o.control) {
            return Err(match trusted_peer(&s) {
                Ok(()) => format!("a sheriff is already serving on {}", o.control.display()),
                Err(e) => format!("{}: not ours, refusing it: {e}", o.control.display()),
            });
        }
        use std::os::unix::fs::FileTypeExt;
        if std::fs::symlink_metadata(&o.control).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(&o.control);
        }
        let mut cfg = Config { cmds: Vec::new(), scripts: Vec::new() };
        if let Some(p) = &o.config {
            if o.settings.observer {
                return Err("an observer takes no configuration".into());
            }
            cfg = config::load(p).map_err(|e| e.to_string())?;
            config::validate(&cfg, &p.display().to_string()).map_err(|e| e.to_string())?;
        }
        if o.local && o.settings.observer {
            return Err("an observer cannot be a lone ranger (-l)".into());
        }
        let poll = Poll::new().map_err(|e| e.to_string())?;
        let mut hub = None;
        let mut local = if o.local { Some(Local::new().map_err(|e| format!("lone ranger: {e}"))?) } else { None };
        // The lone ranger needs no multicast route: an embedded hub, on a
        // Unix socket in its private directory (other users can neither
        // reach it nor read what passes through it).
        let private_hub = match &local {
            Some(l) if o.hub_port.is_none() && o.settings.url == crate::procman::Url::default() => {
                Some(l.path("hub.sock"))
            }
            _ => None,
        };
        if private_hub.is_some() || o.hub_port.is_some() {
            let h = match (&private_hub, o.hub_port) {
                (Some(path), _) => Hub::bind_unix(path),
                (None, port) => Hub::bind_loopback(port.unwrap_or(0)),
            }
            .map_err(|e| format!("tcpq hub: {e}"))?;
            let url = h.url().map_err(|e| e.to_string())?;
            o.settings.url = crate::procman::Url::parse(&url).map_err(|e| e.to_string())?;
            poll.registry()
                .register(&mut SourceFd(&h.as_raw_fd()), HUB, Interest::READABLE)
                .map_err(|e| e.to_string())?;
            log(&format!("tcpq hub on {url}"));
            hub = Some(h);
        }
        let url = o.settings.url.clone();
        let mut engine = Engine::new(o.settings).map_err(|e| format!("LCM {url}: {e}"))?;
        poll.registry()
            .register(&mut engine.lcm, LCM, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| e.to_string())?;
        for c in &cfg.cmds {
            engine.fleet.define(&c.deputy, cmd_t(c));
        }
        // Bound under umask 0177: the socket is created mode 0600.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let listener = UnixListener::bind(&o.control);
        nix::sys::stat::umask(old);
        let mut listener = listener.map_err(|e| format!("control socket {}: {e}", o.control.display()))?;
        poll.registry().register(&mut listener, LISTEN, Interest::READABLE).map_err(|e| e.to_string())?;
        let (sig_rx, sig_tx) = std::os::unix::net::UnixStream::pair().map_err(|e| e.to_string())?;
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            signal_hook::low_level::pipe::register(s, sig_tx.try_clone().map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        sig_rx.set_nonblocking(true).map_err(|e| e.to_string())?;
        poll.registry()
            .register(&mut SourceFd(&sig_rx.as_raw_fd()), SIG, Interest::READABLE)
            .map_err(|e| e.to_string())?;
        let mut web = None;
        if let Some(h) = o.http {
            let w = Web::start(h, poll.registry(), WAKE)?;
            log(&format!("http on http://{}/{}", w.addr(), if w.read_only() { " (read-only)" } else { "" }));
            web = Some(w);
        }
        if let Some(l) = &mut local {
            l.start(&url).map_err(|e| format!("lone ranger: {e}"))?;
        }
        log(&format!("sheriff {} on {url}{}", engine.id, if engine.observer { " (observer)" } else { "" }));
        let mut s = Sheriff {
            engine,
            poll,
            listener,
            control: o.control,
            clients: HashMap::new(),
            next_client: CLIENT0,
            config: cfg,
            run: None,
            run_reported: 0,
            script_timeout: o.script_timeout,
            after_script: o.after_script,
            hub,
            url: url.to_string(),
            _local: local,
            sig_rx,
            _sig_tx: sig_tx,
            exit: None,
            web,
            web_dirty: true,
            last_snapshot: Instant::now(),
            script_view: None,
        };
        if let Some(name) = o.script {
            let r = Run::new(&s.config, &name, s.script_timeout)?;
            s.script_view = Some(ScriptView { name: r.name.clone(), steps: Vec::new(), outcome: "running".into() });
            s.run = Some((r, Owner::Startup));
        }
        Ok(s)
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut sock, _)) => {
                    let allowed = nix::sys::socket::getsockopt(&sock, nix::sys::socket::sockopt::PeerCredentials)
                        .is_ok_and(|c| c.uid() == 0 || c.uid() == crate::sys::geteuid());
                    if !allowed {
                        continue;
                    }
                    let t = Token(self.next_client);
                    self.next_client += 1;
                    if self.poll.registry().register(&mut sock, t, Interest::READABLE | Interest::WRITABLE).is_ok() {
                        self.clients.insert(t, Client { sock, mode: Mode::Request(Vec::new()), out: Vec::new() });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return,
            }
        }
    }

    fn on_client(&mut self, t: Token, now: Instant) {
        let Some(c) = self.clients.get_mut(&t) else { return };
        let mut buf = [0u8; 4096];
        let mut eof = false;
        loop {
            match c.sock.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    if let Mode::Request(r) = &mut c.mode {
                        r.extend_from_slice(&buf[..n]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        let line = match &mut c.mode {
            Mode::Request(r) => match memchr::memchr(b'\n', r) {
                Some(p) => Some(String::from_utf8_lossy(&r[..p]).into_owned()),
                None if r.len() > 65536 || eof => Some(String::new()),
                None => None,
            },
            _ => None,
        };
        if eof && !matches!(c.mode, Mode::Request(_)) {
            self.drop_client(t);
            return;
        }
        if let Some(l) = line {
            self.request(t, &l, now);
        }
        self.flush_client(t);
    }

    fn reply(&mut self, t: Token, text: &str, mode: Mode) {
        if let Some(c) = self.clients.get_mut(&t) {
            c.out.extend_from_slice(text.as_bytes());
            c.mode = mode;
        }
    }

    fn request(&mut self, t: Token, line: &str, now: Instant) {
        let f: Vec<&str> = line.split('\t').collect();
        let fleet = &self.engine.fleet;
        match f[0] {
            "status" => {
                let filter = Filter::from_fields(f[1..].iter().copied());
                let mut out = String::from("ok\n");
                for r in view::rows(fleet, &filter, now) {
                    out.push_str(&r.to_line());
                    out.push('\n');
                }
                out.push_str("end\n");
                self.reply(t, &out, Mode::Closing);
            }
            "deputies" => {
                let out = format!("ok\n{}end\n", view::deputies(fleet, now));
                self.reply(t, &out, Mode::Closing);
            }
            "act" => {
                let verb = match f.get(1).copied() {
                    Some("start") => Verb::Start,
                    Some("stop") => Verb::Stop,
                    Some("restart") => Verb::Restart,
                    Some("remove") => Verb::Remove,
                    _ => return self.reply(t, "error\tunknown verb\n", Mode::Closing),
                };
                let filter = Filter::from_fields(f[2..].iter().copied());
                match self.act(verb, &Selection::Filter(filter)) {
                    Ok((n, selected, skipped)) => {
                        self.reply(t, &format!("ok\t{n}\t{selected}\t{skipped}\n"), Mode::Closing)
                    }
                    Err(why) => self.reply(t, &format!("error\t{why}\n"), Mode::Closing),
                }
            }
            "flush" => {
                if self.engine.observer {
                    return self.reply(t, "error\tthis sheriff is an observer\n", Mode::Closing);
                }
                let n = self.engine.fleet.flush_dead();
                for d in self.engine.fleet.heard_deputies() {
                    self.engine.touch(&d);
                }
                self.reply(t, &format!("ok\t{n}\n"), Mode::Closing);
            }
            "logs" if f.len() >= 5 => {
                let key = (f[1].to_string(), f[2].to_string());
                let n: usize = f[3].parse().unwrap_or(10);
                let known = fleet.cmds.contains_key(&key) || self.engine.output.contains_key(&key);
                if !known {
                    return self.reply(t, "error\tno such command\n", Mode::Closing);
                }
                let mut out = b"ok\n".to_vec();
                let mut pos = 0;
                if let Some(r) = self.engine.output.get(&key) {
                    out.extend_from_slice(&r.tail_lines(n));
                    pos = r.total;
                }
                let follow = f[4] == "1";
                if let Some(c) = self.clients.get_mut(&t) {
                    c.out.extend_from_slice(&out);
                    c.mode = if follow { Mode::Follow(key, pos) } else { Mode::Closing };
                }
            }
            "run" if f.len() >= 2 => {
                if self.engine.observer {
                    return self.reply(t, "error\tthis sheriff is an observer\n", Mode::Closing);
                }
                // The client's --script-timeout, if it gave one, else ours.
                let mut timeout = self.script_timeout;
                for x in &f[2..] {
                    match x.strip_prefix("timeout=").map(str::parse::<f64>) {
                        Some(Ok(secs)) if secs.is_finite() && secs >= 0.0 => {
                            timeout = Some(Duration::from_secs_f64(secs.min(1e9)))
                        }
                        _ => return self.reply(t, &format!("error\tbad run option {x:?}\n"), Mode::Closing),
                    }
                }
                match self.start_run(f[1], timeout, Owner::Client(t)) {
                    Ok(()) => self.reply(t, "ok\n", Mode::Script),
                    Err(e) => self.reply(t, &format!("error\t{e}\n"), Mode::Closing),
                }
            }
            "id" => {
                let mode = if self.engine.observer { "observer" } else { "active" };
                let out = format!("ok\t{}\t{mode}\t{}\n", self.engine.id, self.url);
                self.reply(t, &out, Mode::Closing);
            }
            _ => self.reply(t, "error\tunknown request\n", Mode::Closing),
        }
    }

    /// Start script `name`, ending the one running (its client told).
    fn start_run(&mut self, name: &str, timeout: Option<Duration>, owner: Owner) -> Result<(), String> {
        let r = Run::new(&self.config, name, timeout)?;
        if let Some((old, Owner::Client(ot))) = self.run.take() {
            self.reply(ot, &format!("failed\taborted by a new script ({} was running)\n", old.name), Mode::Closing);
        }
        self.script_view = Some(ScriptView { name: r.name.clone(), steps: Vec::new(), outcome: "running".into() });
        self.run = Some((r, owner));
        self.run_reported = 0;
        self.web_dirty = true;
        Ok(())
    }

    /// Apply `verb` to a selection, for the control socket and the web
    /// page alike: (changed, selected, skipped), or why not.
    fn act(&mut self, verb: Verb, selection: &Selection) -> Result<(usize, usize, usize), String> {
        if self.engine.observer {
            return Err("this sheriff is an observer".into());
        }
        let fleet = &self.engine.fleet;
        let (keys, skipped) = match selection {
            Selection::Filter(filter) if filter.is_empty() => return Err("no command selected".into()),
            // Commands whose deputy said it will not act on them are
            // left out unless named by id (docs/fleet.md §5.2).
            Selection::Filter(filter) => filter.actionable(fleet),
            // Named one by one: as by id.
            Selection::Keys(keys) => (keys.iter().filter(|k| fleet.cmds.contains_key(*k)).cloned().collect(), 0),
        };
        if keys.is_empty() && skipped == 0 {
            return Err("no such command".into());
        }
        let n = self.engine.act(&keys, verb);
        self.web_dirty = true;
        // A verb whose orders cannot go out fails, not "ok".
        let deputies: std::collections::BTreeSet<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        if let Some(why) = deputies.iter().find_map(|d| self.engine.unsendable(d)) {
            return Err(why);
        }
        Ok((n, keys.len(), skipped))
    }

    /// Answer what the web side asks, and publish a new snapshot when one
    /// is due; when the next one is due.
    fn serve_web(&mut self, now: Instant) -> Option<Instant> {
        let mut web = self.web.take()?;
        while let Some(ask) = web.next_ask() {
            match ask {
                Ask::Act { verb, selection, reply } => {
                    let answer = self.act(verb, &selection).map(|(changed, selected, skipped)| {
                        serde_json::json!({"changed": changed, "selected": selected, "skipped": skipped})
                    });
                    let _ = reply.try_send(answer);
                }
                Ask::Run { script, reply } => {
                    let answer = if self.engine.observer {
                        Err("this sheriff is an observer".to_string())
                    } else {
                        self.start_run(&script, self.script_timeout, Owner::Web).map(|()| serde_json::json!({}))
                    };
                    let _ = reply.try_send(answer);
                }
                Ask::Watch { tx } => {
                    if self.web_dirty || now >= self.last_snapshot + SNAPSHOT_EVERY {
                        self.publish(&mut web, now);
                    }
                    web.watch(tx);
                }
                Ask::Fresh { reply } => {
                    // Several requests asking at once share one snapshot.
                    if now >= self.last_snapshot + SNAPSHOT_SOON {
                        self.publish(&mut web, now);
                    }
                    let _ = reply.try_send(Ok(serde_json::json!({})));
                }
                Ask::Follow { key, tx, reply } => {
                    let known = self.engine.fleet.cmds.contains_key(&key) || self.engine.output.contains_key(&key);
                    if !known {
                        let _ = reply.try_send(Err("no such command".into()));
                        continue;
                    }
                    let (kept, total) = self.engine.output.get(&key).map_or((Vec::new(), 0), |r| (r.since(0), r.total));
                    web.follow(key, kept, total, tx);
                    let _ = reply.try_send(Ok(serde_json::json!({})));
                }
            }
        }
        // Snapshots are made on a schedule only while a page watches;
        // otherwise when a request finds the last one too old (Ask::Fresh).
        if web.watching() && now >= self.next_snapshot() {
            self.publish(&mut web, now);
        }
        // Publishing drops the watchers that are gone: ask again.
        let next = web.watching().then(|| self.next_snapshot());
        self.web = Some(web);
        next
    }

    /// Copy the fleet into a new snapshot for the web side.
    fn publish(&mut self, web: &mut Web, now: Instant) {
        let sheriff = SheriffView {
            id: self.engine.id.clone(),
            mode: if self.engine.observer { "observer" } else { "active" }.into(),
            url: self.url.clone(),
            read_only: web.read_only() || self.engine.observer,
            scripts: self.config.scripts.iter().map(|s| s.name.clone()).collect(),
        };
        let snap = snapshot::build(&self.engine.fleet, now, sheriff, self.script_view.clone(), web.counts());
        web.publish(snap, now);
        self.last_snapshot = now;
        self.web_dirty = false;
    }

    /// When the web side's next snapshot is due.
    fn next_snapshot(&self) -> Instant {
        self.last_snapshot + if self.web_dirty { SNAPSHOT_SOON } else { SNAPSHOT_EVERY }
    }

    fn flush_client(&mut self, t: Token) {
        let Some(c) = self.clients.get_mut(&t) else { return };
        let bad = c.flush().is_err() || c.out.len() > FOLLOW_LIMIT;
        let done = matches!(c.mode, Mode::Closing) && c.out.is_empty();
        if bad || done {
            self.drop_client(t);
        }
    }

    fn drop_client(&mut self, t: Token) {
        if let Some(mut c) = self.clients.remove(&t) {
            let _ = self.poll.registry().deregister(&mut c.sock);
        }
    }

    fn feed_followers(&mut self) {
        let fresh = std::mem::take(&mut self.engine.fresh_output);
        if fresh.is_empty() {
            return;
        }
        let fresh: std::collections::HashSet<(String, String)> = fresh.into_iter().collect();
        if let Some(web) = &mut self.web {
            let output = &self.engine.output;
            web.feed(&fresh, |k, pos| output.get(k).map(|r| (r.since(pos), r.total)));
        }
        let tokens: Vec<Token> = self.clients.keys().copied().collect();
        for t in tokens {
            let Some(c) = self.clients.get_mut(&t) else { continue };
            if let Mode::Follow(k, pos) = &mut c.mode
                && fresh.contains(k)
                && let Some(ring) = self.engine.output.get(k)
            {
                c.out.extend_from_slice(&ring.since(*pos));
                *pos = ring.total;
            }
            self.flush_client(t);
        }
    }

    fn step_script(&mut self, now: Instant) -> Option<Instant> {
        self.run.as_ref()?;
        // A script acts only once the deputies' info has been heard: a start
        // ordered before the actual runid is known could collide with it.
        if let Some(t) = self.engine.listening(now) {
            return Some(t);
        }
        let (run, owner) = self.run.as_mut()?;
        // The script reads the fleet; the verbs it wants are applied after.
        let mut pending: Vec<(Vec<(String, String)>, Verb)> = Vec::new();
        let r = run.step(&self.engine.fleet, now, &mut |k, v| pending.push((k.to_vec(), v)));
        for (k, v) in pending {
            self.engine.act(&k, v);
        }
        let owner = *owner;
        let new: Vec<String> = run.progress[self.run_reported..].to_vec();
        self.run_reported = run.progress.len();
        for p in &new {
            log(&format!("script {}: {p}", run.name));
        }
        if let Some(v) = &mut self.script_view
            && !new.is_empty()
        {
            v.steps.extend(new.iter().cloned());
            self.web_dirty = true;
        }
        if let Owner::Client(t) = owner {
            let text: String = new.iter().map(|p| format!("step\t{p}\n")).collect();
            if let Some(c) = self.clients.get_mut(&t) {
                c.out.extend_from_slice(text.as_bytes());
            }
        }
        match r {
            Err(next) => next,
            Ok(outcome) => {
                let name = run.name.clone();
                self.run = None;
                let (line, code) = match &outcome {
                    Outcome::Done => ("done\n".to_string(), 0),
                    Outcome::Failed(why) => (format!("failed\t{why}\n"), 1),
                };
                log(&format!("script {name}: {}", line.trim_end().replace('\t', ": ")));
                if let Some(v) = &mut self.script_view {
                    v.outcome = line.trim_end().replace('\t', ": ");
                    self.web_dirty = true;
                }
                match owner {
                    Owner::Client(t) => {
                        self.reply(t, &line, Mode::Closing);
                        self.flush_client(t);
                    }
                    Owner::Web => {}
                    Owner::Startup => match self.after_script {
                        AfterScript::Continue => {}
                        AfterScript::Exit => self.exit = Some(code),
                        AfterScript::Observe => self.engine.observer = true,
                    },
                }
                None
            }
        }
    }

    /// Run until a signal (or the end of the start-up script, with
    /// `--on-script-complete exit`); the exit status.
    pub fn run(&mut self) -> i32 {
        let mut events = Events::with_capacity(256);
        let mut next_orders = Instant::now();
        let mut next_script: Option<Instant> = Some(Instant::now());
        let mut next_snapshot: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let mut wake = next_orders;
            if let Some(t) = next_script {
                wake = wake.min(t);
            }
            if let Some(t) = next_snapshot {
                wake = wake.min(t);
            }
            if let Some(t) = self.engine.lcm.next_deadline() {
                wake = wake.min(t);
            }
            let timeout = wake.saturating_duration_since(now).min(Duration::from_millis(500));
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                log(&format!("poll: {e}"));
                return 1;
            }
            let now = Instant::now();
            let mut ready = Vec::new();
            for ev in events.iter() {
                match ev.token() {
                    LCM => self.web_dirty = true,
                    WAKE => {}
                    LISTEN => self.accept(),
                    SIG => {
                        let mut b = [0u8; 16];
                        while crate::sys::read(self.sig_rx.as_raw_fd(), &mut b).is_ok_and(|n| n > 0) {}
                        log("signal: exiting");
                        return self.exit.unwrap_or(0);
                    }
                    HUB => {
                        if let Some(h) = &mut self.hub {
                            let _ = h.turn(Some(Duration::ZERO));
                        }
                    }
                    t => ready.push(t),
                }
            }
            if let Some(h) = &mut self.hub {
                let _ = h.turn(Some(Duration::ZERO));
            }
            self.engine.poll_lcm(now);
            for n in std::mem::take(&mut self.engine.notes) {
                log(&n);
            }
            for t in ready {
                self.on_client(t, now);
            }
            self.feed_followers();
            next_script = self.step_script(now);
            next_orders = self.engine.tick(now);
            next_snapshot = self.serve_web(now);
            if let Some(h) = &mut self.hub {
                let _ = h.turn(Some(Duration::ZERO));
            }
            let tokens: Vec<Token> = self.clients.keys().copied().collect();
            for t in tokens {
                self.flush_client(t);
            }
            if let Some(code) = self.exit {
                return code;
            }
        }
    }
}

impl Drop for Sheriff {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.control);
    }
}

/// Send one request to a running sheriff; the reply's lines. Nothing is
/// sent unless the process serving `control` is root or our own user
/// (`SO_PEERCRED`): otherwise, `PermissionDenied` naming its uid.
pub fn request(control: &std::path::Path, line: &str) -> io::Result<std::os::unix::net::UnixStream> {
    let mut s = std::os::unix::net::UnixStream::connect(control)?;
    trusted_peer(&s)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: not ours, refusing it: {e}", control.display())))?;
    s.write_all(line.as_bytes())?;
    s.write_all(b"\n")?;
    Ok(s)
}

/// Parse `status` reply lines into rows.
pub fn parse_rows(text: &str) -> Vec<Row> {
    text.lines().filter_map(Row::from_line).collect()
}
