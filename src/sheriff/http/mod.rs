//! The web side of `serve --http` (issue 18; man/daemonproxy-sheriff.1,
//! "HTTP"): the fleet page, `/metrics` and the JSON API, served by
//! tiny_http on threads of their own. The sheriff's loop never waits on
//! a browser:
//!
//! - the loop publishes a [`Snapshot`] (at most every 250 ms when
//!   something changed, else every second); HTTP threads read the latest
//!   one through a mutex held only to clone an `Arc`;
//! - anything that needs the loop (an action, a script, following output)
//!   is an [`Ask`] on a bounded queue ([`ASK_QUEUE`]) with a mio `Waker`;
//!   the answer comes back on a channel of its own, awaited at most
//!   [`REPLY_TIMEOUT`]; a full queue is answered 503;
//! - each event stream (`/api/events`, `/api/output`) is a thread fed by
//!   the loop through an [`Outlet`]: a channel of [`STREAM_BUFFER`]
//!   messages holding at most [`STREAM_BYTES`] of output not yet written
//!   to the client; the loop only ever `try_send`s, and a stream whose
//!   buffer is full is dropped (its client fell behind), never buffered
//!   without limit;
//! - at most [`MAX_STREAMS`] streams at once (more: 503), requests are
//!   served by [`WORKERS`] threads ([`WORK_QUEUE`] waiting at most), and
//!   every connection's socket has
//!   send and receive timeouts of [`SOCKET_TIMEOUT`] (set on the listening
//!   socket, which accepted sockets inherit: socket(7)), so an idle or
//!   stuck client holds tiny_http's thread for that long at most.
//!   tiny_http starts a thread per connection from a pool of its own;
//!   under a burst of new connections its pool can leave one queued
//!   behind busy ones until one ends, so in a flood of idle connections
//!   an answer can take up to [`SOCKET_TIMEOUT`]
//!   (tests/fleet/test_sheriff_http.py measures it).

pub mod auth;

use super::metrics;
use super::model::{Key, Verb};
use super::snapshot::{Snapshot, WebCounts};
use super::view::Filter;
use serde_json::{Value, json};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tiny_http::{Header, Method, Request, Response, Server};

/// Event streams open at once.
pub const MAX_STREAMS: usize = 32;
/// Messages waiting for one stream's client before it is dropped.
pub const STREAM_BUFFER: usize = 256;
/// Bytes of output waiting for one stream's client before it is dropped.
pub const STREAM_BYTES: usize = 1 << 20;
/// Requests waiting for the loop.
pub const ASK_QUEUE: usize = 64;
/// Requests waiting for a worker.
pub const WORK_QUEUE: usize = 64;
/// Threads serving requests (streams have threads of their own).
pub const WORKERS: usize = 4;
/// Send and receive timeout of every connection.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for the loop's answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request body read.
const MAX_BODY: u64 = 64 * 1024;
/// A comment line on an idle stream this often (a gone client shows).
const KEEPALIVE: Duration = Duration::from_secs(15);

const INDEX_HTML: &str = include_str!("index.html");
const LOGIN_HTML: &str = include_str!("login.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");

/// The headers every answer carries: no script but our own file, no
/// inline style or script, no framing, no sniffing.
const SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
         form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
];

/// `--http` and its companions.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Every request must carry it (required off loopback).
    pub token: Option<String>,
    /// Refuse every action (`--http-read-only`, `--observe`).
    pub read_only: bool,
}

/// Parse `[ADDR:]PORT` (ADDR an IPv4 address or `[IPv6]`; 127.0.0.1 if
/// left out).
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse::<SocketAddr>().map_err(|_| format!("--http {text:?}: expected [ADDR:]PORT"))
}

/// Is `addr` one that needs no token: 127.0.0.1 or ::1 exactly (any other
/// address, other loopback ones included, needs `--http-token-file`).
pub fn is_private(addr: &SocketAddr) -> bool {
    match addr.ip() {
        std::net::IpAddr::V4(a) => a == std::net::Ipv4Addr::LOCALHOST,
        std::net::IpAddr::V6(a) => a == std::net::Ipv6Addr::LOCALHOST,
    }
}

/// Which commands an action means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// As the CLI selects (name pattern, group, deputy, all).
    Filter(Filter),
    /// These commands, by (deputy, id).
    Keys(Vec<Key>),
}

/// What an answer to an [`Ask`] is: JSON, or an error message.
pub type Answer = Result<Value, String>;

/// A request from an HTTP thread to the loop.
pub enum Ask {
    /// Apply a verb.
    Act {
        /// The verb.
        verb: Verb,
        /// To what.
        selection: Selection,
        /// `{"changed","selected","skipped"}` or why not.
        reply: SyncSender<Answer>,
    },
    /// Start a script of the configuration (its steps show in the
    /// snapshot's `script`).
    Run {
        /// Its name.
        script: String,
        /// `{}` once started, or why not.
        reply: SyncSender<Answer>,
    },
    /// Send snapshots to `tx`, the current one first.
    Watch {
        /// The stream's channel.
        tx: Outlet<Arc<Snapshot>>,
    },
    /// Send a command's kept output to `tx`, then what comes after.
    Follow {
        /// The command.
        key: Key,
        /// The stream's channel.
        tx: Outlet<Vec<u8>>,
        /// `{}` once following, or why not (no such command).
        reply: SyncSender<Answer>,
    },
}

/// The loop's end of one event stream: a bounded channel, and the
/// bytes sent on it that its thread has not yet written to the client.
pub struct Outlet<T> {
    tx: SyncSender<T>,
    pending: Arc<AtomicUsize>,
}

impl<T> Outlet<T> {
    /// Send `msg` (`bytes` long) unless the client is that far behind:
    /// false if the stream is to be dropped (counted in `dropped` when
    /// it fell behind, not when its client went away).
    fn offer(&self, msg: T, bytes: usize, dropped: &AtomicU64) -> bool {
        // Counted before the send: the thread subtracts after writing.
        if self.pending.fetch_add(bytes, Ordering::AcqRel) + bytes > STREAM_BYTES {
            self.pending.fetch_sub(bytes, Ordering::AcqRel);
            dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(e) => {
                self.pending.fetch_sub(bytes, Ordering::AcqRel);
                if let TrySendError::Full(_) = e {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                false
            }
        }
    }
}

/// A stream's two ends.
fn outlet<T>() -> (Outlet<T>, Receiver<T>, Arc<AtomicUsize>) {
    let (tx, rx) = sync_channel(STREAM_BUFFER);
    let pending = Arc::new(AtomicUsize::new(0));
    (Outlet { tx, pending: pending.clone() }, rx, pending)
}

struct Ctx {
    config: Config,
    snapshot: Mutex<Arc<Snapshot>>,
    asks: SyncSender<Ask>,
    waker: mio::Waker,
    streams: AtomicUsize,
    dropped: AtomicU64,
}

/// The loop's side: asks to take, streams to feed.
pub struct Web {
    ctx: Arc<Ctx>,
    asks: Receiver<Ask>,
    watchers: Vec<Outlet<Arc<Snapshot>>>,
    followers: Vec<(Key, u64, Outlet<Vec<u8>>)>,
}

fn error_text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Web {
    /// Bind `config.addr` and start the threads; `token` is the loop's
    /// mio token for the waker.
    pub fn start(config: Config, registry: &mio::Registry, token: mio::Token) -> Result<Web, String> {
        let listener = std::net::TcpListener::bind(config.addr).map_err(|e| format!("--http {}: {e}", config.addr))?;
        // Accepted sockets inherit these (socket(7): SO_RCVTIMEO, SO_SNDTIMEO).
        let tv = nix::sys::time::TimeVal::new(SOCKET_TIMEOUT.as_secs() as _, 0);
        nix::sys::socket::setsockopt(&listener, nix::sys::socket::sockopt::ReceiveTimeout, &tv).map_err(error_text)?;
        nix::sys::socket::setsockopt(&listener, nix::sys::socket::sockopt::SendTimeout, &tv).map_err(error_text)?;
        let (work, todo) = sync_channel::<Request>(WORK_QUEUE);
        let todo = Arc::new(Mutex::new(todo));
        let (tx, asks) = sync_channel(ASK_QUEUE);
        let waker = mio::Waker::new(registry, token).map_err(error_text)?;
        let ctx = Arc::new(Ctx {
            config,
            snapshot: Mutex::new(Arc::new(Snapshot::default())),
            asks: tx,
            waker,
            streams: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        });
        for n in 0..WORKERS {
            let (ctx, todo) = (ctx.clone(), todo.clone());
            std::thread::Builder::new()
                .name(format!("http-{n}"))
                .spawn(move || {
                    loop {
                        let next = todo.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(rq) = next else { return };
                        handle(&ctx, rq);
                    }
                })
                .map_err(error_text)?;
        }
        std::thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || accept(listener, work))
            .map_err(error_text)?;
        Ok(Web { ctx, asks, watchers: Vec::new(), followers: Vec::new() })
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.ctx.config.addr
    }

    /// Actions refused at the door (`--http-read-only`).
    pub fn read_only(&self) -> bool {
        self.ctx.config.read_only
    }

    /// The counters for the next snapshot.
    pub fn counts(&self) -> WebCounts {
        WebCounts {
            streams: self.ctx.streams.load(Ordering::Relaxed),
            dropped: self.ctx.dropped.load(Ordering::Relaxed),
        }
    }

    /// The next request waiting, if any.
    pub fn next_ask(&mut self) -> Option<Ask> {
        self.asks.try_recv().ok()
    }

    /// Make `s` the current snapshot and send it to every watcher.
    pub fn publish(&mut self, s: Snapshot) {
        let s = Arc::new(s);
        *self.ctx.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = s.clone();
        let dropped = &self.ctx.dropped;
        self.watchers.retain(|tx| tx.offer(s.clone(), 0, dropped));
    }

    /// A new watcher: the current snapshot, then each new one.
    pub fn watch(&mut self, tx: Outlet<Arc<Snapshot>>) {
        let s = self.ctx.snapshot.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if tx.offer(s, 0, &self.ctx.dropped) {
            self.watchers.push(tx);
        }
    }

    /// A new follower of `key`: `kept` (the ring's bytes) now, then what
    /// comes after position `total`.
    pub fn follow(&mut self, key: Key, kept: Vec<u8>, total: u64, tx: Outlet<Vec<u8>>) {
        let n = kept.len();
        if n == 0 || tx.offer(kept, n, &self.ctx.dropped) {
            self.followers.push((key, total, tx));
        }
    }

    /// Send new output to the followers of the keys in `fresh`; `since`
    /// gives a key's bytes after a position and its new total.
    pub fn feed(
        &mut self,
        fresh: &std::collections::HashSet<Key>,
        since: impl Fn(&Key, u64) -> Option<(Vec<u8>, u64)>,
    ) {
        let dropped = &self.ctx.dropped;
        self.followers.retain_mut(|(key, pos, tx)| {
            if !fresh.contains(key) {
                return true;
            }
            match since(key, *pos) {
                Some((bytes, total)) => {
                    *pos = total;
                    let n = bytes.len();
                    n == 0 || tx.offer(bytes, n, dropped)
                }
                None => true,
            }
        });
    }
}

/// Hand tiny_http's requests to the workers. tiny_http's accept thread
/// ends at the first error of accept(2), and the listening socket's
/// receive timeout makes one after [`SOCKET_TIMEOUT`] without a new
/// connection (EAGAIN): then a new server is started on the same socket,
/// while the old one's connections (kept alive) are still served by
/// [`forward`] on a thread of its own until they are all closed.
fn accept(listener: std::net::TcpListener, work: SyncSender<Request>) {
    loop {
        let server = match listener.try_clone().map(|l| Server::from_listener(l, None)) {
            Ok(Ok(s)) => s,
            _ => {
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        forward(&server, &work, None);
        // A connection that sends nothing for SOCKET_TIMEOUT is closed:
        // twice that without a request, and the old server has none left.
        let work = work.clone();
        let drain = std::thread::Builder::new()
            .name("http-drain".into())
            .spawn(move || forward(&server, &work, Some(2 * SOCKET_TIMEOUT)));
        drop(drain);
    }
}

/// Pass `server`'s requests to the workers (503 when [`WORK_QUEUE`] are
/// waiting) until its accept thread ends, or with `idle`, until none came
/// for that long.
fn forward(server: &Server, work: &SyncSender<Request>, idle: Option<Duration>) {
    loop {
        let next = match idle {
            None => server.recv().ok(),
            Some(t) => server.recv_timeout(t).ok().flatten(),
        };
        let Some(rq) = next else { return };
        if let Err(TrySendError::Full(rq)) = work.try_send(rq) {
            error_json(rq, 503, "too many requests waiting");
        }
    }
}

fn header<'a>(rq: &'a Request, name: &str) -> Option<&'a str> {
    rq.headers().iter().find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
}

fn respond(rq: Request, status: u16, ctype: &str, body: impl Into<Vec<u8>>, extra: &[(&str, &str)]) {
    let mut r = Response::from_data(body.into()).with_status_code(status);
    let ct = [("Content-Type", ctype)];
    for (k, v) in SECURITY_HEADERS.iter().chain(&ct).chain(extra) {
        if let Ok(h) = Header::from_bytes(k.as_bytes(), v.as_bytes()) {
            r.add_header(h);
        }
    }
    let _ = rq.respond(r);
}

fn respond_json(rq: Request, status: u16, v: &Value) {
    respond(rq, status, "application/json", v.to_string(), &[]);
}

fn error_json(rq: Request, status: u16, msg: &str) {
    respond_json(rq, status, &json!({ "error": msg }));
}

fn login_page(rq: Request, status: u16) {
    let www = [("WWW-Authenticate", "Bearer realm=\"daemonproxy-sheriff\"")];
    respond(rq, status, "text/html; charset=utf-8", LOGIN_HTML, if status == 401 { &www } else { &[] });
}

/// The query's value of `name`.
fn query(q: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn handle(ctx: &Arc<Ctx>, mut rq: Request) {
    let url = rq.url().to_string();
    let (path, q) = url.split_once('?').unwrap_or((&url, ""));
    let host = header(&rq, "Host");
    let get = *rq.method() == Method::Get || *rq.method() == Method::Head;
    let post = *rq.method() == Method::Post;
    match &ctx.config.token {
        None if !auth::host_allowed(host, ctx.config.addr.port()) => {
            return error_json(rq, 403, "unknown Host (served for 127.0.0.1 and localhost only)");
        }
        None => {}
        Some(token) => {
            if post && path == "/login" {
                return login(rq, token);
            }
            if !auth::admitted(token, header(&rq, "Authorization"), header(&rq, "Cookie")) {
                return if path.starts_with("/api/") || path == "/metrics" {
                    let www = [("WWW-Authenticate", "Bearer realm=\"daemonproxy-sheriff\"")];
                    respond(rq, 401, "application/json", json!({"error": "token required"}).to_string(), &www)
                } else {
                    login_page(rq, 401)
                };
            }
        }
    }
    let snapshot = || ctx.snapshot.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match path {
        "/" | "/deputies" if get => respond(rq, 200, "text/html; charset=utf-8", INDEX_HTML, &[]),
        "/app.js" if get => respond(rq, 200, "text/javascript; charset=utf-8", APP_JS, &[]),
        "/style.css" if get => respond(rq, 200, "text/css; charset=utf-8", STYLE_CSS, &[]),
        "/login" if get => login_page(rq, 200),
        "/api/status" if get => respond(rq, 200, "application/json", snapshot().json(), &[]),
        "/api/deputies" if get => respond_json(rq, 200, &snapshot().deputies_json()),
        "/metrics" if get => {
            respond(rq, 200, "text/plain; version=0.0.4; charset=utf-8", metrics::render(&snapshot()), &[])
        }
        "/api/events" if get => events(ctx, rq),
        "/api/output" if get => output(ctx, rq, q),
        "/api/action" | "/api/run" if post => {
            if !auth::same_origin(host, header(&rq, "Origin"), header(&rq, "Referer"))
                || header(&rq, auth::ACTION_HEADER).is_none()
            {
                return error_json(rq, 403, "cross-origin request refused");
            }
            if ctx.config.read_only {
                return error_json(rq, 403, "read-only: actions are refused");
            }
            let mut body = Vec::new();
            if rq.as_reader().take(MAX_BODY).read_to_end(&mut body).is_err() {
                return error_json(rq, 400, "cannot read the request");
            }
            let v: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return error_json(rq, 400, &format!("bad JSON: {e}")),
            };
            let (tx, rx) = sync_channel(1);
            let ask = if path == "/api/action" {
                match parse_action(&v) {
                    Ok((verb, selection)) => Ask::Act { verb, selection, reply: tx },
                    Err(e) => return error_json(rq, 400, &e),
                }
            } else {
                match v.get("script").and_then(Value::as_str) {
                    Some(s) => Ask::Run { script: s.to_string(), reply: tx },
                    None => return error_json(rq, 400, "name a script"),
                }
            };
            match ask_loop(ctx, ask, &rx) {
                Ok(v) => respond_json(rq, 200, &v),
                Err((status, why)) => error_json(rq, status, &why),
            }
        }
        "/" | "/deputies" | "/app.js" | "/style.css" | "/login" | "/api/status" | "/api/deputies" | "/metrics"
        | "/api/events" | "/api/output" | "/api/action" | "/api/run" => error_json(rq, 405, "method not allowed"),
        _ => error_json(rq, 404, "not found"),
    }
}

/// Send `ask` to the loop and wait for its answer: the JSON, or an HTTP
/// status and why.
fn ask_loop(ctx: &Ctx, ask: Ask, rx: &Receiver<Answer>) -> Result<Value, (u16, String)> {
    match ctx.asks.try_send(ask) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return Err((503, "the sheriff is busy; try again".into())),
        Err(TrySendError::Disconnected(_)) => return Err((503, "the sheriff is stopping".into())),
    }
    let _ = ctx.waker.wake();
    match rx.recv_timeout(REPLY_TIMEOUT) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(why)) if why.contains("observer") => Err((403, why)),
        Ok(Err(why)) => Err((409, why)),
        Err(_) => Err((504, "no answer from the sheriff".into())),
    }
}

/// `{"verb": "start"|"stop"|"restart", ...}` with one selector: `"all":
/// true`, `"commands": [[DEPUTY, ID], ...]`, or any of `"name"` (fnmatch
/// pattern), `"group"`, `"deputy"`.
fn parse_action(v: &Value) -> Result<(Verb, Selection), String> {
    let verb = match v.get("verb").and_then(Value::as_str) {
        Some("start") => Verb::Start,
        Some("stop") => Verb::Stop,
        Some("restart") => Verb::Restart,
        _ => return Err("verb must be start, stop or restart".into()),
    };
    if let Some(list) = v.get("commands") {
        let keys: Option<Vec<Key>> = list.as_array().and_then(|a| {
            a.iter()
                .map(|k| match k.as_array().map(Vec::as_slice) {
                    Some([Value::String(d), Value::String(i)]) => Some((d.clone(), i.clone())),
                    _ => None,
                })
                .collect()
        });
        return match keys {
            Some(k) if !k.is_empty() => Ok((verb, Selection::Keys(k))),
            _ => Err("commands must be a list of [deputy, id] pairs".into()),
        };
    }
    let text = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from);
    let f = Filter { name: text("name"), group: text("group"), deputy: text("deputy"), all: v["all"] == true };
    if f.is_empty() {
        return Err("select commands: all, commands, name, group or deputy".into());
    }
    Ok((verb, Selection::Filter(f)))
}

fn login(mut rq: Request, token: &str) {
    if !auth::same_origin(header(&rq, "Host"), header(&rq, "Origin"), header(&rq, "Referer")) {
        return error_json(rq, 403, "cross-origin request refused");
    }
    let mut body = Vec::new();
    let _ = rq.as_reader().take(MAX_BODY).read_to_end(&mut body);
    let given = form_urlencoded::parse(&body).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned());
    if !given.is_some_and(|g| auth::same(g.as_bytes(), token.as_bytes())) {
        return login_page(rq, 401);
    }
    let cookie = format!("{}={token}; Path=/; HttpOnly; SameSite=Strict", auth::COOKIE);
    respond(rq, 303, "text/plain", "logged in\n", &[("Location", "/"), ("Set-Cookie", &cookie)]);
}

/// Take a stream slot; `None` if all [`MAX_STREAMS`] are in use.
fn stream_slot(ctx: &Arc<Ctx>) -> Option<Slot> {
    if ctx.streams.fetch_add(1, Ordering::AcqRel) >= MAX_STREAMS {
        ctx.streams.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    Some(Slot(ctx.clone()))
}

struct Slot(Arc<Ctx>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

fn events(ctx: &Arc<Ctx>, rq: Request) {
    let Some(slot) = stream_slot(ctx) else { return error_json(rq, 503, "too many streams") };
    let (tx, rx, pending) = outlet::<Arc<Snapshot>>();
    if let Err((status, why)) = send_ask(ctx, Ask::Watch { tx }) {
        return error_json(rq, status, &why);
    }
    spawn_stream(rq, slot, rx, pending, |s: Arc<Snapshot>| (format!("event: snapshot\ndata: {}\n\n", s.json()), 0));
}

fn output(ctx: &Arc<Ctx>, rq: Request, q: &str) {
    let (Some(deputy), Some(id)) = (query(q, "deputy"), query(q, "id")) else {
        return error_json(rq, 400, "deputy and id are required");
    };
    let Some(slot) = stream_slot(ctx) else { return error_json(rq, 503, "too many streams") };
    let (tx, rx, pending) = outlet::<Vec<u8>>();
    let (rtx, rrx) = sync_channel(1);
    if let Err((status, why)) = ask_loop(ctx, Ask::Follow { key: (deputy, id), tx, reply: rtx }, &rrx) {
        return error_json(rq, if status == 409 { 404 } else { status }, &why);
    }
    spawn_stream(rq, slot, rx, pending, |b: Vec<u8>| {
        (format!("event: output\ndata: {}\n\n", Value::String(String::from_utf8_lossy(&b).into_owned())), b.len())
    });
}

fn send_ask(ctx: &Ctx, ask: Ask) -> Result<(), (u16, String)> {
    ctx.asks.try_send(ask).map_err(|_| (503, "the sheriff is busy; try again".to_string()))?;
    let _ = ctx.waker.wake();
    Ok(())
}

/// Answer `rq` with an event stream (text/event-stream) on a thread of
/// its own, writing each message `rx` brings as `encode` makes it (with
/// the bytes it counted in `pending`, given back once written); it
/// ends when the loop drops its sender or a write fails (the client is
/// gone, or stuck for [`SOCKET_TIMEOUT`]).
fn spawn_stream<T: Send + 'static>(
    rq: Request,
    slot: Slot,
    rx: Receiver<T>,
    pending: Arc<AtomicUsize>,
    encode: impl Fn(T) -> (String, usize) + Send + 'static,
) {
    let spawned = std::thread::Builder::new().name("http-stream".into()).spawn(move || {
        let _slot = slot;
        // tiny_http's Response would send the body in 8 kB chunks: the
        // head is written here and each event flushed at once. The
        // connection closes at the end of the stream.
        let mut w = rq.into_writer();
        let mut head = String::from("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n");
        for (k, v) in SECURITY_HEADERS {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut send = |text: &str| -> io::Result<()> {
            w.write_all(text.as_bytes())?;
            w.flush()
        };
        if send(&head).is_err() {
            return;
        }
        loop {
            let (text, counted) = match rx.recv_timeout(KEEPALIVE) {
                Ok(m) => encode(m),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => (": keepalive\n\n".into(), 0),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            };
            if send(&text).is_err() {
                return;
            }
            pending.fetch_sub(counted, Ordering::AcqRel);
        }
    });
    // The thread could not start: the request, moved into the closure, is
    // dropped with it, which closes the connection.
    drop(spawned);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_actions_parse() {
        assert_eq!(parse_addr("8080").unwrap(), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(parse_addr("0.0.0.0:80").unwrap(), "0.0.0.0:80".parse().unwrap());
        assert_eq!(parse_addr("[::1]:80").unwrap(), "[::1]:80".parse().unwrap());
        assert!(parse_addr("localhost:80").is_err());
        assert!(is_private(&parse_addr("9").unwrap()));
        assert!(is_private(&parse_addr("[::1]:9").unwrap()));
        assert!(!is_private(&parse_addr("127.0.0.2:9").unwrap()));
        assert!(!is_private(&parse_addr("0.0.0.0:9").unwrap()));
        let (v, s) = parse_action(&json!({"verb": "start", "group": "g"})).unwrap();
        assert_eq!(v, Verb::Start);
        assert_eq!(s, Selection::Filter(Filter { group: Some("g".into()), ..Filter::default() }));
        let (_, s) = parse_action(&json!({"verb": "stop", "commands": [["d", "x"]]})).unwrap();
        assert_eq!(s, Selection::Keys(vec![("d".into(), "x".into())]));
        assert!(parse_action(&json!({"verb": "remove", "all": true})).is_err());
        assert!(parse_action(&json!({"verb": "stop"})).is_err(), "a verb needs a selection");
        assert!(parse_action(&json!({"verb": "stop", "commands": []})).is_err());
        assert!(parse_action(&json!({"verb": "stop", "commands": [["d"]]})).is_err());
    }
}
