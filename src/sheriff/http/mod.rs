//! The web side of `serve --http` (issue 18; man/daemonproxy-sheriff.1,
//! "HTTP"): the fleet page, `/metrics` and the JSON API, served by hyper
//! (HTTP/1.1) on one thread of its own running a single-threaded tokio
//! runtime. The sheriff's loop never waits on a browser:
//!
//! - the loop publishes a [`Snapshot`] while a page watches (at most
//!   every 250 ms when something changed, else every second); requests
//!   read the latest one through a mutex held only to clone an `Arc`, and
//!   one that finds it older than [`SNAPSHOT_AGE`] (no page open) asks
//!   the loop for a new one first ([`Ask::Fresh`]), so a sheriff nobody
//!   looks at copies nothing;
//! - anything that needs the loop (an action, a script, following output)
//!   is an [`Ask`] on a bounded queue ([`ASK_QUEUE`]) with a mio `Waker`;
//!   the answer comes back on a channel of its own, awaited at most
//!   [`REPLY_TIMEOUT`]; a full queue is answered 503;
//! - each event stream (`/api/events`, `/api/output`) is fed by the loop
//!   through an [`Outlet`]: a channel of [`STREAM_BUFFER`] messages
//!   holding at most [`STREAM_BYTES`] of output not yet written to the
//!   client; the loop only ever `try_send`s, and a stream whose buffer
//!   is full is dropped with its connection (its client fell behind),
//!   never buffered without limit;
//! - at most [`MAX_CONNECTIONS`] connections at once: one more is
//!   answered 503 and closed as it is accepted; at most [`MAX_STREAMS`]
//!   streams (more: 503). A connection has [`SOCKET_TIMEOUT`] to send a
//!   request head, and as long between requests (hyper's
//!   `header_read_timeout`), and is closed when a write of ours has not
//!   moved for that long ([`Watched`]): idle, slow or stuck clients hold
//!   a connection for that long at most, and no thread ever.

pub mod auth;

use super::metrics;
use super::model::{Key, Verb};
use super::snapshot::{Snapshot, WebCounts};
use super::view::Filter;
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Connections open at once (event streams included).
pub const MAX_CONNECTIONS: usize = 256;
/// Event streams open at once.
pub const MAX_STREAMS: usize = 32;
/// Messages waiting for one stream's client before it is dropped.
pub const STREAM_BUFFER: usize = 256;
/// Bytes of output waiting for one stream's client before it is dropped.
pub const STREAM_BYTES: usize = 1 << 20;
/// Requests waiting for the loop.
pub const ASK_QUEUE: usize = 64;
/// How long a connection may take to send a request head, stay idle
/// between requests, or leave a write of ours unread.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for the loop's answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How old a snapshot a request takes without asking for a new one.
pub const SNAPSHOT_AGE: Duration = Duration::from_secs(1);
/// The largest request body read.
const MAX_BODY: usize = 64 * 1024;
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

/// What a connection over [`MAX_CONNECTIONS`] is told before it is closed.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 22\r\n\
Connection: close\r\n\r\ntoo many connections\r\n";

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

/// Where the loop sends the answer to an [`Ask`].
pub struct Reply(oneshot::Sender<Answer>);

impl Reply {
    /// Answer; the request may have given up waiting.
    pub fn try_send(self, answer: Answer) -> Result<(), Answer> {
        self.0.send(answer)
    }
}

/// A reply channel's two ends.
fn reply() -> (Reply, oneshot::Receiver<Answer>) {
    let (tx, rx) = oneshot::channel();
    (Reply(tx), rx)
}

/// A request from the HTTP side to the loop.
pub enum Ask {
    /// Apply a verb.
    Act {
        /// The verb.
        verb: Verb,
        /// To what.
        selection: Selection,
        /// `{"changed","selected","skipped"}` or why not.
        reply: Reply,
    },
    /// Start a script of the configuration (its steps show in the
    /// snapshot's `script`).
    Run {
        /// Its name.
        script: String,
        /// `{}` once started, or why not.
        reply: Reply,
    },
    /// Send snapshots to `tx`, the current one first.
    Watch {
        /// The stream's channel.
        tx: Outlet<Arc<Snapshot>>,
    },
    /// Make a snapshot now unless one was made a moment ago; `{}` when
    /// it is published.
    Fresh {
        /// The answer.
        reply: Reply,
    },
    /// Send a command's kept output to `tx`, then what comes after.
    Follow {
        /// The command.
        key: Key,
        /// The stream's channel.
        tx: Outlet<Vec<u8>>,
        /// `{}` once following, or why not (no such command).
        reply: Reply,
    },
}

/// The loop's end of one event stream: a bounded channel, and the
/// bytes sent on it that have not yet been handed to the client's
/// connection.
pub struct Outlet<T> {
    tx: mpsc::Sender<T>,
    pending: Arc<AtomicUsize>,
}

impl<T> Outlet<T> {
    /// Send `msg` (`bytes` long) unless the client is that far behind:
    /// false if the stream is to be dropped (counted in `dropped` when
    /// it fell behind, not when its client went away).
    fn offer(&self, msg: T, bytes: usize, dropped: &AtomicU64) -> bool {
        // Counted before the send: the stream subtracts once written.
        if self.pending.fetch_add(bytes, Ordering::AcqRel) + bytes > STREAM_BYTES {
            self.pending.fetch_sub(bytes, Ordering::AcqRel);
            dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(e) => {
                self.pending.fetch_sub(bytes, Ordering::AcqRel);
                if let mpsc::error::TrySendError::Full(_) = e {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                false
            }
        }
    }
}

/// A stream's two ends.
fn outlet<T>() -> (Outlet<T>, mpsc::Receiver<T>, Arc<AtomicUsize>) {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let pending = Arc::new(AtomicUsize::new(0));
    (Outlet { tx, pending: pending.clone() }, rx, pending)
}

struct Ctx {
    config: Config,
    /// The latest snapshot and when it was made (None: never).
    snapshot: Mutex<(Arc<Snapshot>, Option<Instant>)>,
    asks: SyncSender<Ask>,
    waker: mio::Waker,
    streams: AtomicUsize,
    dropped: AtomicU64,
    /// A permit for each connection open (at most [`MAX_CONNECTIONS`]).
    slots: Arc<Semaphore>,
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
    /// Bind `config.addr` and start the server's thread; `token` is the
    /// loop's mio token for the waker.
    pub fn start(config: Config, registry: &mio::Registry, token: mio::Token) -> Result<Web, String> {
        let listener = std::net::TcpListener::bind(config.addr).map_err(|e| format!("--http {}: {e}", config.addr))?;
        listener.set_nonblocking(true).map_err(error_text)?;
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build().map_err(error_text)?;
        let listener = {
            let _in = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(error_text)?
        };
        let (tx, asks) = sync_channel(ASK_QUEUE);
        let waker = mio::Waker::new(registry, token).map_err(error_text)?;
        let ctx = Arc::new(Ctx {
            config,
            snapshot: Mutex::new((Arc::new(Snapshot::default()), None)),
            asks: tx,
            waker,
            streams: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        });
        let server = ctx.clone();
        std::thread::Builder::new()
            .name("http".into())
            .spawn(move || runtime.block_on(accept(server, listener)))
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
            connections: MAX_CONNECTIONS - self.ctx.slots.available_permits(),
            streams: self.ctx.streams.load(Ordering::Relaxed),
            dropped: self.ctx.dropped.load(Ordering::Relaxed),
        }
    }

    /// The next request waiting, if any.
    pub fn next_ask(&mut self) -> Option<Ask> {
        self.asks.try_recv().ok()
    }

    /// Whether a page watches (an `/api/events` stream is open).
    pub fn watching(&self) -> bool {
        !self.watchers.is_empty()
    }

    /// Make `s`, made at `at`, the current snapshot and send it to every
    /// watcher.
    pub fn publish(&mut self, s: Snapshot, at: Instant) {
        let s = Arc::new(s);
        *self.ctx.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = (s.clone(), Some(at));
        let dropped = &self.ctx.dropped;
        self.watchers.retain(|tx| tx.offer(s.clone(), 0, dropped));
    }

    /// A new watcher: the current snapshot, then each new one.
    pub fn watch(&mut self, tx: Outlet<Arc<Snapshot>>) {
        let s = self.ctx.snapshot.lock().unwrap_or_else(|e| e.into_inner()).0.clone();
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

/// Accept connections for as long as the process runs: each one within
/// [`MAX_CONNECTIONS`] is served by a task of its own, one over it is
/// answered 503 and closed at once.
async fn accept(ctx: Arc<Ctx>, listener: tokio::net::TcpListener) {
    loop {
        let sock = match listener.accept().await {
            Ok((sock, _)) => sock,
            Err(e) => {
                // EMFILE and the like: they pass; do not spin meanwhile.
                eprintln!("daemonproxy-sheriff: --http: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match ctx.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(connection(ctx.clone(), sock, permit));
            }
            Err(_) => {
                // Non-blocking: what does not fit in the socket's buffer
                // (nothing does not) is not waited for.
                let _ = sock.try_write(TOO_MANY);
            }
        }
    }
}

/// Since when a write of ours has waited for the client to read (None:
/// no write waits), so that [`connection`] can end a client that stopped
/// reading.
#[derive(Default)]
struct Stall(Mutex<Option<Instant>>);

impl Stall {
    /// A write returned: still waiting (`pending`), or done.
    fn note(&self, pending: bool) {
        let mut since = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match (pending, *since) {
            (false, _) => *since = None,
            (true, None) => *since = Some(Instant::now()),
            (true, Some(_)) => {}
        }
    }

    /// Whether a write has waited longer than `limit`.
    fn longer_than(&self, limit: Duration) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|t| t.elapsed() > limit)
    }
}

/// A connection's socket, noting its writes' waits in a [`Stall`].
struct Watched {
    sock: tokio::net::TcpStream,
    stall: Arc<Stall>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.sock).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.sock).poll_write(cx, buf);
        self.stall.note(r.is_pending());
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.sock).poll_write_vectored(cx, bufs);
        self.stall.note(r.is_pending());
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.sock.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.sock).poll_flush(cx);
        self.stall.note(r.is_pending());
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.sock).poll_shutdown(cx)
    }
}

/// Serve one connection until it closes, its stream is dropped (`kill`),
/// or a write has waited [`SOCKET_TIMEOUT`] for the client to read.
async fn connection(ctx: Arc<Ctx>, sock: tokio::net::TcpStream, _slot: OwnedSemaphorePermit) {
    let stall = Arc::new(Stall::default());
    let io = Watched { sock, stall: stall.clone() };
    let kill = Arc::new(Notify::new());
    let service = {
        let kill = kill.clone();
        hyper::service::service_fn(move |rq| {
            let (ctx, kill) = (ctx.clone(), kill.clone());
            async move { Ok::<_, Infallible>(handle(&ctx, &kill, rq).await) }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(SOCKET_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut conn => return,
            _ = kill.notified() => return,
            _ = tick.tick() => if stall.longer_than(SOCKET_TIMEOUT) {
                return;
            }
        }
    }
}

/// Every answer's body: a whole one, or an event stream.
type Out = BoxBody<Bytes, Infallible>;

fn respond(status: u16, ctype: &str, body: impl Into<Bytes>, extra: &[(&str, &str)]) -> Response<Out> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    add_headers(&mut r, &[("Content-Type", ctype)], extra);
    r
}

fn add_headers(r: &mut Response<Out>, a: &[(&str, &str)], b: &[(&str, &str)]) {
    let h = r.headers_mut();
    for (k, v) in SECURITY_HEADERS.iter().chain(a).chain(b) {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            h.append(k, v);
        }
    }
}

fn respond_json(status: u16, v: &Value) -> Response<Out> {
    respond(status, "application/json", v.to_string(), &[])
}

fn error_json(status: u16, msg: &str) -> Response<Out> {
    respond_json(status, &json!({ "error": msg }))
}

fn login_page(status: u16) -> Response<Out> {
    let www = [("WWW-Authenticate", "Bearer realm=\"daemonproxy-sheriff\"")];
    respond(status, "text/html; charset=utf-8", LOGIN_HTML, if status == 401 { &www } else { &[] })
}

/// The query's value of `name`.
fn query(q: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// A request header as text (None if absent or not visible ASCII).
fn header(rq: &Request<Incoming>, name: &str) -> Option<String> {
    rq.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from)
}

/// The body, up to [`MAX_BODY`] bytes (None: longer, or unreadable).
async fn body(rq: Request<Incoming>) -> Option<Bytes> {
    Limited::new(rq.into_body(), MAX_BODY).collect().await.ok().map(|c| c.to_bytes())
}

async fn handle(ctx: &Arc<Ctx>, kill: &Arc<Notify>, rq: Request<Incoming>) -> Response<Out> {
    let path = rq.uri().path().to_string();
    let q = rq.uri().query().unwrap_or("").to_string();
    let host = header(&rq, "Host");
    let get = rq.method() == Method::GET || rq.method() == Method::HEAD;
    let post = rq.method() == Method::POST;
    match &ctx.config.token {
        None if !auth::host_allowed(host.as_deref(), ctx.config.addr.port()) => {
            return error_json(403, "unknown Host (served for 127.0.0.1 and localhost only)");
        }
        None => {}
        Some(token) => {
            if post && path == "/login" {
                return login(rq, token).await;
            }
            if !auth::admitted(token, header(&rq, "Authorization").as_deref(), header(&rq, "Cookie").as_deref()) {
                return if path.starts_with("/api/") || path == "/metrics" {
                    let www = [("WWW-Authenticate", "Bearer realm=\"daemonproxy-sheriff\"")];
                    respond(401, "application/json", json!({"error": "token required"}).to_string(), &www)
                } else {
                    login_page(401)
                };
            }
        }
    }
    match path.as_str() {
        "/" | "/deputies" if get => respond(200, "text/html; charset=utf-8", INDEX_HTML, &[]),
        "/app.js" if get => respond(200, "text/javascript; charset=utf-8", APP_JS, &[]),
        "/style.css" if get => respond(200, "text/css; charset=utf-8", STYLE_CSS, &[]),
        "/login" if get => login_page(200),
        "/api/status" if get => respond(200, "application/json", current(ctx).await.json().to_string(), &[]),
        "/api/deputies" if get => respond_json(200, &current(ctx).await.deputies_json()),
        "/metrics" if get => {
            respond(200, "text/plain; version=0.0.4; charset=utf-8", metrics::render(&*current(ctx).await), &[])
        }
        "/api/events" if get => events(ctx, kill),
        "/api/output" if get => output(ctx, kill, &q).await,
        "/api/action" | "/api/run" if post => {
            if !auth::same_origin(host.as_deref(), header(&rq, "Origin").as_deref(), header(&rq, "Referer").as_deref())
                || header(&rq, auth::ACTION_HEADER).is_none()
            {
                return error_json(403, "cross-origin request refused");
            }
            if ctx.config.read_only {
                return error_json(403, "read-only: actions are refused");
            }
            let Some(body) = body(rq).await else { return error_json(400, "cannot read the request") };
            let v: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return error_json(400, &format!("bad JSON: {e}")),
            };
            let (tx, rx) = reply();
            let ask = if path == "/api/action" {
                match parse_action(&v) {
                    Ok((verb, selection)) => Ask::Act { verb, selection, reply: tx },
                    Err(e) => return error_json(400, &e),
                }
            } else {
                match v.get("script").and_then(Value::as_str) {
                    Some(s) => Ask::Run { script: s.to_string(), reply: tx },
                    None => return error_json(400, "name a script"),
                }
            };
            match ask_loop(ctx, ask, rx).await {
                Ok(v) => respond_json(200, &v),
                Err((status, why)) => error_json(status, &why),
            }
        }
        "/" | "/deputies" | "/app.js" | "/style.css" | "/login" | "/api/status" | "/api/deputies" | "/metrics"
        | "/api/events" | "/api/output" | "/api/action" | "/api/run" => error_json(405, "method not allowed"),
        _ => error_json(404, "not found"),
    }
}

/// The latest snapshot, made anew first if it is older than
/// [`SNAPSHOT_AGE`] (the loop makes them on a schedule only while a page
/// watches). If the loop cannot answer in time, the one there is.
async fn current(ctx: &Ctx) -> Arc<Snapshot> {
    let latest = || ctx.snapshot.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (s, at) = latest();
    if at.is_some_and(|t| t.elapsed() <= SNAPSHOT_AGE) {
        return s;
    }
    let (tx, rx) = reply();
    match ask_loop(ctx, Ask::Fresh { reply: tx }, rx).await {
        Ok(_) => latest().0,
        Err(_) => s,
    }
}

fn send_ask(ctx: &Ctx, ask: Ask) -> Result<(), (u16, String)> {
    match ctx.asks.try_send(ask) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return Err((503, "the sheriff is busy; try again".into())),
        Err(TrySendError::Disconnected(_)) => return Err((503, "the sheriff is stopping".into())),
    }
    let _ = ctx.waker.wake();
    Ok(())
}

/// Send `ask` to the loop and wait for its answer: the JSON, or an HTTP
/// status and why.
async fn ask_loop(ctx: &Ctx, ask: Ask, rx: oneshot::Receiver<Answer>) -> Result<Value, (u16, String)> {
    send_ask(ctx, ask)?;
    match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(why))) if why.contains("observer") => Err((403, why)),
        Ok(Ok(Err(why))) => Err((409, why)),
        _ => Err((504, "no answer from the sheriff".into())),
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

async fn login(rq: Request<Incoming>, token: &str) -> Response<Out> {
    if !auth::same_origin(
        header(&rq, "Host").as_deref(),
        header(&rq, "Origin").as_deref(),
        header(&rq, "Referer").as_deref(),
    ) {
        return error_json(403, "cross-origin request refused");
    }
    let body = body(rq).await.unwrap_or_default();
    let given = form_urlencoded::parse(&body).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned());
    if !given.is_some_and(|g| auth::same(g.as_bytes(), token.as_bytes())) {
        return login_page(401);
    }
    let cookie = format!("{}={token}; Path=/; HttpOnly; SameSite=Strict", auth::COOKIE);
    respond(303, "text/plain", "logged in\n", &[("Location", "/"), ("Set-Cookie", &cookie)])
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

fn events(ctx: &Arc<Ctx>, kill: &Arc<Notify>) -> Response<Out> {
    let Some(slot) = stream_slot(ctx) else { return error_json(503, "too many streams") };
    let (tx, rx, pending) = outlet::<Arc<Snapshot>>();
    if let Err((status, why)) = send_ask(ctx, Ask::Watch { tx }) {
        return error_json(status, &why);
    }
    stream(slot, rx, pending, kill, |s: Arc<Snapshot>| (format!("event: snapshot\ndata: {}\n\n", s.json()), 0))
}

async fn output(ctx: &Arc<Ctx>, kill: &Arc<Notify>, q: &str) -> Response<Out> {
    let (Some(deputy), Some(id)) = (query(q, "deputy"), query(q, "id")) else {
        return error_json(400, "deputy and id are required");
    };
    let Some(slot) = stream_slot(ctx) else { return error_json(503, "too many streams") };
    let (tx, rx, pending) = outlet::<Vec<u8>>();
    let (rtx, rrx) = reply();
    if let Err((status, why)) = ask_loop(ctx, Ask::Follow { key: (deputy, id), tx, reply: rtx }, rrx).await {
        return error_json(if status == 409 { 404 } else { status }, &why);
    }
    stream(slot, rx, pending, kill, |b: Vec<u8>| {
        (format!("event: output\ndata: {}\n\n", Value::String(String::from_utf8_lossy(&b).into_owned())), b.len())
    })
}

/// An event stream (text/event-stream): each message `rx` brings, as
/// `encode` makes it (with the bytes it counted in `pending`, given back
/// once handed to the connection), and a comment line after
/// [`KEEPALIVE`] without one. When the loop drops its sender (the client
/// fell behind, or the sheriff stops) the stream ends and `kill` ends its
/// connection.
fn stream<T: Send + 'static>(
    slot: Slot,
    rx: mpsc::Receiver<T>,
    pending: Arc<AtomicUsize>,
    kill: &Arc<Notify>,
    encode: impl Fn(T) -> (String, usize) + Send + Sync + Unpin + 'static,
) -> Response<Out> {
    let body = Events {
        _slot: slot,
        rx,
        pending,
        encode,
        keepalive: Box::pin(tokio::time::sleep(KEEPALIVE)),
        kill: kill.clone(),
    };
    let mut r = Response::new(BoxBody::new(body));
    add_headers(&mut r, &[("Content-Type", "text/event-stream")], &[]);
    r
}

struct Events<T, F> {
    _slot: Slot,
    rx: mpsc::Receiver<T>,
    pending: Arc<AtomicUsize>,
    encode: F,
    keepalive: Pin<Box<tokio::time::Sleep>>,
    kill: Arc<Notify>,
}

impl<T, F: Fn(T) -> (String, usize) + Unpin> Body for Events<T, F> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let text = match this.rx.poll_recv(cx) {
            Poll::Ready(Some(m)) => {
                let (text, counted) = (this.encode)(m);
                this.pending.fetch_sub(counted, Ordering::AcqRel);
                text
            }
            Poll::Ready(None) => {
                this.kill.notify_one();
                return Poll::Ready(None);
            }
            Poll::Pending => match this.keepalive.as_mut().poll(cx) {
                Poll::Ready(()) => ": keepalive\n\n".into(),
                Poll::Pending => return Poll::Pending,
            },
        };
        let next = tokio::time::Instant::now() + KEEPALIVE;
        this.keepalive.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(text)))))
    }
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
