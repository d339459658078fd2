//! The bridge's I/O: one mio loop joining daemonproxy's protocol (a
//! control socket or an inherited controller socket), LCM, the output ptys
//! of the commands, and signals. It feeds [`Deputy`] and carries out the
//! [`Action`]s it queues (docs/fleet.md §4).

use super::bounded::quote;
use super::deputy::{Action, Config, Deputy, MAX_REPORTED, Order, Status};
use super::procfs::{self, HostCpu, Memory, ProcStat};
use super::tags::Def;
use crate::client::Event;
use crate::procman::auth::{self, AuthMode, Key, Signer, Verdict, Verifier};
use crate::procman::{
    CmdStatus, CmdT, DeputyInfo, Discovery, Lcm, Orders, Output, PM_DISCOVER, PM_INFO, PM_ORDERS, PM_OUTPUT, Url,
};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// How the bridge reaches daemonproxy.
#[derive(Clone, Debug)]
pub enum Connection {
    /// Connect to the control socket at this path.
    Socket(std::path::PathBuf),
    /// An inherited descriptor (a controller service's socket: read and
    /// write both on it).
    Fd(RawFd),
}

/// An IPv4 or IPv6 network (`--allow-source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub bits: u8,
}

impl Cidr {
    /// Parse `ADDR[/BITS]`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, b) = s.split_once('/').map_or((s, None), |(a, b)| (a, Some(b)));
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match b {
            Some(b) => b.parse().ok().filter(|&n| n <= max)?,
            None => max,
        };
        Some(Cidr { addr, bits })
    }

    /// Does the network contain `ip`?
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (a, b, width) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        if self.bits == 0 {
            return true;
        }
        let shift = width - u32::from(self.bits);
        a >> shift == b >> shift
    }
}

/// Everything the command line sets.
pub struct Options {
    /// The deputy's settings.
    pub deputy: Config,
    /// Where daemonproxy is.
    pub connection: Connection,
    /// LCM endpoint.
    pub url: Url,
    /// `--allow-source`.
    pub allow_source: Vec<Cidr>,
    /// `--auth`.
    pub auth: AuthMode,
    /// Keys (the first signs).
    pub keys: Vec<Key>,
    /// `--stop-on-exit`.
    pub stop_on_exit: bool,
    /// Log more.
    pub verbose: bool,
}

const SUP: Token = Token(0);
const LCM: Token = Token(1);
const SIG: Token = Token(2);
const PTY0: usize = 16;
/// The most LCM messages handled in one round of the loop: a flood of
/// them still leaves daemonproxy's events and the ptys their turn.
const LCM_PER_ROUND: usize = 64;
/// Pending output is published once it holds more than this many bytes
/// (§4.8) ...
const BATCH_BYTES: usize = 4096;
/// ... or this many command ids: a message then stays far below the
/// codec's limits whatever goes in it.
const BATCH_IDS: usize = 256;
/// Infos sent because something changed are at most this often (a burst
/// of changes gives one message, not one per change).
const INFO_COALESCE: Duration = Duration::from_millis(2);

/// A message to daemonproxy, with a descriptor to pass for `fd.take`.
struct Outgoing {
    line: Vec<u8>,
    fd: Option<OwnedFd>,
    handle: Option<String>,
}

/// The connection to daemonproxy.
struct Sup {
    fd: OwnedFd,
    can_pass: bool,
    inbuf: Vec<u8>,
    outq: VecDeque<Outgoing>,
    /// Bytes of the front message already written.
    front_done: usize,
    /// An `fd.take` daemonproxy has not yet confirmed (it queues at most
    /// two received descriptors per controller, so one at a time).
    take_inflight: Option<(String, Instant)>,
    eof: bool,
    peer_pid: i32,
}

impl Sup {
    fn connect(c: &Connection) -> io::Result<Sup> {
        let fd: OwnedFd = match c {
            Connection::Socket(p) => {
                let s = std::os::unix::net::UnixStream::connect(p)?;
                // Talk only to a daemonproxy of root or our own user: whoever
                // bound the path first would otherwise get our commands.
                let me = crate::sys::geteuid();
                match crate::sys::peer_uid(s.as_raw_fd()) {
                    Some(u) if u == 0 || u == me => s.into(),
                    other => {
                        return Err(io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            format!(
                                "{}: served by uid {}, not root or uid {me}; refusing to send it commands",
                                p.display(),
                                other.map_or("unknown".into(), |u| u.to_string())
                            ),
                        ));
                    }
                }
            }
            Connection::Fd(n) => crate::sys::own_fd(*n)
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("descriptor {n} is not open")))?,
        };
        crate::sys::set_nonblock(fd.as_raw_fd(), true).map_err(io::Error::from_raw_os_error)?;
        let _ = crate::sys::set_cloexec(fd.as_raw_fd());
        let cred = nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::PeerCredentials).ok();
        Ok(Sup {
            can_pass: cred.is_some(),
            peer_pid: cred.map_or(0, |c| c.pid()),
            fd,
            inbuf: Vec::with_capacity(8192),
            outq: VecDeque::new(),
            front_done: 0,
            take_inflight: None,
            eof: false,
        })
    }

    fn queue(&mut self, line: &str) {
        let mut l = line.as_bytes().to_vec();
        l.push(b'\n');
        self.outq.push_back(Outgoing { line: l, fd: None, handle: None });
    }

    fn flush(&mut self) -> io::Result<()> {
        while let Some(front) = self.outq.front_mut() {
            if front.fd.is_some() && self.front_done == 0 {
                if self.take_inflight.is_some() {
                    return Ok(());
                }
                let raw = front.fd.as_ref().map(AsRawFd::as_raw_fd).unwrap_or(-1);
                let cmsg = [nix::sys::socket::ControlMessage::ScmRights(std::slice::from_ref(&raw))];
                let iov = [IoSlice::new(&front.line)];
                match nix::sys::socket::sendmsg::<()>(
                    self.fd.as_raw_fd(),
                    &iov,
                    &cmsg,
                    nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
                    None,
                ) {
                    Ok(n) => {
                        self.front_done = n;
                        front.fd = None; // sent: our copy of the slave closes
                        self.take_inflight = front.handle.take().map(|h| (h, Instant::now()));
                    }
                    Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                    Err(e) => return Err(io::Error::from(e)),
                }
            } else {
                let rest = &front.line[self.front_done..];
                // MSG_NOSIGNAL keeps SIGPIPE away.
                let r = match crate::sys::send_nosignal(self.fd.as_raw_fd(), rest) {
                    // Not a socket: a plain write.
                    Err(_) if !self.can_pass => crate::sys::write(self.fd.as_raw_fd(), rest),
                    r => r,
                };
                let n = match r {
                    Ok(n) => n,
                    Err(libc::EAGAIN) => return Ok(()),
                    Err(e) => return Err(io::Error::from_raw_os_error(e)),
                };
                self.front_done += n;
            }
            if self.front_done >= self.outq.front().map_or(0, |f| f.line.len()) {
                self.outq.pop_front();
                self.front_done = 0;
            }
        }
        Ok(())
    }

    /// Read what is there; complete lines go to `each`.
    fn read(&mut self, mut each: impl FnMut(&[u8])) -> io::Result<()> {
        let mut buf = [0u8; 16384];
        loop {
            match crate::sys::read(self.fd.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(libc::EAGAIN) => break,
                Err(libc::EINTR) => continue,
                Err(e) => return Err(io::Error::from_raw_os_error(e)),
            }
        }
        let mut start = 0;
        while let Some(p) = memchr::memchr(b'\n', &self.inbuf[start..]) {
            each(&self.inbuf[start..start + p]);
            start += p + 1;
        }
        self.inbuf.drain(..start);
        Ok(())
    }
}

/// A command's output pty (the bridge keeps the master).
struct Pty {
    master: OwnedFd,
    token: Token,
    /// A UTF-8 sequence cut by the end of the last read.
    partial: Vec<u8>,
    window: (Instant, usize),
    dropped: bool,
}

/// Pending `output_t` text, one entry per command id (§4.8).
#[derive(Default)]
struct Batch {
    ids: Vec<String>,
    text: Vec<String>,
    bytes: usize,
    last_publish: Option<Instant>,
}

impl Batch {
    fn push(&mut self, id: &str, text: &str) {
        let text = text.replace('\0', "");
        if text.is_empty() {
            return;
        }
        self.bytes += text.len();
        match self.ids.iter().position(|i| i == id) {
            Some(k) => self.text[k].push_str(&text),
            None => {
                self.bytes += id.len();
                self.ids.push(id.to_string());
                self.text.push(text);
            }
        }
    }

    /// Big enough to publish at once.
    fn full(&self) -> bool {
        self.bytes > BATCH_BYTES || self.ids.len() >= BATCH_IDS
    }

    fn due(&self, now: Instant) -> bool {
        !self.ids.is_empty()
            && (self.full() || self.last_publish.is_none_or(|t| now.duration_since(t) >= Duration::from_millis(10)))
    }
}

/// Split `bytes` (after `partial`) into the text that can be sent and the
/// incomplete UTF-8 sequence at its end, kept for the next read.
fn utf8_chunk(partial: &mut Vec<u8>, bytes: &[u8]) -> String {
    partial.extend_from_slice(bytes);
    let keep = match std::str::from_utf8(partial) {
        Ok(_) => 0,
        Err(e) if e.error_len().is_none() => partial.len() - e.valid_up_to(),
        Err(_) => 0,
    };
    let cut = partial.len() - keep;
    let text = String::from_utf8_lossy(&partial[..cut]).into_owned();
    partial.drain(..cut);
    text
}

/// Sends on LCM failing since `since` (§4.3): logged once when it begins
/// and once when a send works again, never per message.
struct SendFailure {
    since: Instant,
    lost: u64,
}

/// The bridge's own pid and its ancestors' (from /proc), so that the
/// service running it is never reported (§4.1).
fn own_pids() -> Vec<i32> {
    let mut list = vec![crate::sys::getpid()];
    while list.len() < 64 {
        match list.last().and_then(|&p| ProcStat::read(p)) {
            Some(s) if s.ppid > 1 && !list.contains(&s.ppid) => list.push(s.ppid),
            _ => break,
        }
    }
    list
}

/// Discovery at start-up (§4.2).
struct Discovering {
    nonce: i64,
    started: Instant,
    last_sent: Option<Instant>,
}

/// The bridge.
pub struct Bridge {
    opts: Options,
    deputy: Deputy,
    poll: Poll,
    sup: Sup,
    lcm: Lcm,
    signer: Option<Signer>,
    verifier: Verifier,
    ptys: HashMap<String, Pty>,
    tokens: HashMap<Token, String>,
    next_token: usize,
    batch: Batch,
    discovering: Option<Discovering>,
    sync_token: Option<String>,
    next_info: Instant,
    info_wanted: bool,
    discovery_replies: VecDeque<Instant>,
    host_prev: Option<HostCpu>,
    host_now: Option<HostCpu>,
    memory: Memory,
    load: f32,
    last_info: Option<Instant>,
    proc_prev: HashMap<i32, (u64, u64)>,
    stopping: Option<Instant>,
    exit_code: Option<i32>,
    /// Commands the last info left out (see [`Deputy::report`]).
    unreported: usize,
    /// Sends failing, if they are (logged once per episode).
    send_failure: Option<SendFailure>,
    _sig_tx: std::os::unix::net::UnixStream,
    sig_rx: std::os::unix::net::UnixStream,
}

fn log(msg: &str) {
    eprintln!("daemonproxy-bridge: {msg}");
}

fn random_u64() -> u64 {
    crate::sys::random_u64().unwrap_or_else(|| auth::now_us() as u64 ^ u64::from(std::process::id()).rotate_left(32))
}

fn cmd_t(d: &Def) -> CmdT {
    CmdT {
        command_id: d.id.clone(),
        exec_str: d.exec.clone(),
        group: d.group.clone(),
        auto_respawn: d.auto_respawn,
        stop_signal: d.stop_signal.clamp(i32::from(i8::MIN), i32::from(i8::MAX)) as i8,
        stop_time_allowed: d.stop_time_allowed,
    }
}

fn def_of(c: &CmdT) -> Def {
    Def {
        id: c.command_id.clone(),
        exec: c.exec_str.clone(),
        group: c.group.clone(),
        auto_respawn: c.auto_respawn,
        stop_signal: i32::from(c.stop_signal),
        stop_time_allowed: c.stop_time_allowed,
    }
}

impl Bridge {
    /// Connect everything; errors are for the caller to report (exit 1).
    pub fn new(opts: Options) -> io::Result<Bridge> {
        let poll = Poll::new()?;
        let mut sup = Sup::connect(&opts.connection)?;
        poll.registry().register(&mut SourceFd(&sup.fd.as_raw_fd()), SUP, Interest::READABLE | Interest::WRITABLE)?;
        let mut lcm = Lcm::new(&opts.url)?;
        poll.registry().register(&mut lcm, LCM, Interest::READABLE | Interest::WRITABLE)?;
        let (sig_rx, sig_tx) = std::os::unix::net::UnixStream::pair()?;
        sig_rx.set_nonblocking(true)?;
        sig_tx.set_nonblocking(true)?;
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            signal_hook::low_level::pipe::register(s, sig_tx.try_clone()?)?;
        }
        poll.registry().register(&mut SourceFd(&sig_rx.as_raw_fd()), SIG, Interest::READABLE)?;
        let mut deputy_cfg = opts.deputy.clone();
        deputy_cfg.fd_passing = sup.can_pass;
        if !sup.can_pass {
            log("the connection to daemonproxy cannot pass descriptors: command output is not captured");
        }
        let signer = if opts.auth.signs() { opts.keys.first().cloned().map(Signer::new) } else { None };
        let verifier = Verifier::new(opts.keys.iter().cloned()).map_err(|e| io::Error::other(e.to_string()))?;
        let token = format!("bridge-sync-{:016x}", random_u64());
        let mut deputy = Deputy::new(deputy_cfg);
        deputy.own_pids = own_pids();
        deputy.begin_sync();
        sup.queue("statedump");
        sup.queue(&format!("echo\t{token}"));
        let now = Instant::now();
        let nonce = (random_u64() >> 1).max(1) as i64;
        Ok(Bridge {
            opts,
            deputy,
            poll,
            sup,
            lcm,
            signer,
            verifier,
            ptys: HashMap::new(),
            tokens: HashMap::new(),
            next_token: PTY0,
            batch: Batch::default(),
            discovering: Some(Discovering { nonce, started: now, last_sent: None }),
            sync_token: Some(token),
            next_info: now,
            info_wanted: false,
            discovery_replies: VecDeque::new(),
            host_prev: None,
            host_now: HostCpu::read(),
            memory: Memory::read(),
            load: -1.0,
            last_info: None,
            proc_prev: HashMap::new(),
            stopping: None,
            exit_code: None,
            unreported: 0,
            send_failure: None,
            _sig_tx: sig_tx,
            sig_rx,
        })
    }

    // ----- LCM out ------------------------------------------------------

    fn publish(&mut self, channel: &str, mut data: Vec<u8>) {
        if let Some(s) = &mut self.signer {
            let t = s.sign(channel, &data);
            data.extend_from_slice(&t);
        }
        match self.lcm.publish(channel, &data) {
            Ok(()) => {
                if let Some(f) = self.send_failure.take() {
                    log(&format!(
                        "sending on LCM works again after {:.1} s ({} message(s) lost)",
                        f.since.elapsed().as_secs_f64(),
                        f.lost
                    ));
                }
            }
            // A full socket buffer or tcpq queue loses one message, which
            // the next periodic one heals: not an episode.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if self.opts.verbose {
                    log(&format!("publish {channel}: {e}"));
                }
            }
            Err(e) => match &mut self.send_failure {
                Some(f) => f.lost += 1,
                None => {
                    log(&format!(
                        "cannot send on LCM ({channel}: {e}): sheriffs will see this deputy as lost until sending \
                         works again; over udpm, check the route for 224.0.0.0/4 (docs/fleet.md §2.1)"
                    ));
                    self.send_failure = Some(SendFailure { since: Instant::now(), lost: 1 });
                }
            },
        }
    }

    fn publish_discovery(&mut self, nonce: i64) {
        let d = Discovery { utime: auth::now_us(), transmitter_id: self.opts.deputy.id.clone(), nonce };
        if let Ok(b) = d.to_bytes() {
            self.publish(PM_DISCOVER, b);
        }
    }

    /// Publish `deputy_info_t`: the periodic one (and a discovery reply)
    /// refreshes the figures of §4.9 first; one sent because something
    /// changed reuses the last figures, so a burst of starts does not read
    /// /proc for every command again and again.
    fn publish_info(&mut self, now: Instant) {
        self.refresh_figures();
        self.send_info(now);
    }

    fn refresh_figures(&mut self) {
        self.host_prev = self.host_now;
        self.host_now = HostCpu::read();
        let (prev, cur) = (self.host_prev.unwrap_or_default(), self.host_now.unwrap_or_default());
        let load = match (self.host_prev, self.host_now) {
            (Some(p), Some(c)) => c.load_since(&p).unwrap_or(-1.0),
            _ => -1.0,
        };
        let mut seen = HashMap::new();
        for c in self.deputy.cmds.values_mut() {
            if c.pid == 0 {
                continue;
            }
            match ProcStat::read(c.pid) {
                Some(s) => {
                    c.cpu = match self.proc_prev.get(&c.pid) {
                        Some(&(pcpu, _)) => procfs::cpu_share(pcpu, s.cpu, &prev, &cur),
                        None => 0.0, // a pid's first sample
                    };
                    c.vsize = s.vsize;
                    c.rss = s.rss;
                    seen.insert(c.pid, (s.cpu, cur.total));
                }
                None => {
                    c.cpu = 0.0;
                }
            }
        }
        self.proc_prev = seen;
        self.memory = Memory::read();
        self.load = load;
    }

    fn send_info(&mut self, now: Instant) {
        let (m, load) = (self.memory, self.load);
        let (list, left_out) = self.deputy.report();
        if left_out != self.unreported {
            self.unreported = left_out;
            if left_out > 0 {
                log(&format!("{left_out} command(s) not reported: a report carries at most {MAX_REPORTED} (1 MiB)"));
            }
        }
        let cmds: Vec<CmdStatus> = list.iter().map(status_of).collect();
        let info = DeputyInfo {
            utime: auth::now_us(),
            deputy_id: self.opts.deputy.id.clone(),
            cpu_load: load,
            phys_mem_total_bytes: m.total,
            phys_mem_free_bytes: m.free,
            swap_total_bytes: m.swap_total,
            swap_free_bytes: m.swap_free,
            cmds,
        };
        match info.to_bytes() {
            Ok(b) => self.publish(PM_INFO, b),
            Err(e) => log(&format!("info not sent: {e}")),
        }
        self.next_info = now + Duration::from_secs(1);
        self.info_wanted = false;
        self.last_info = Some(now);
    }

    /// Queue output text (or a notice) of command `id`, publishing at once
    /// if the batch is full.
    fn emit(&mut self, id: &str, text: &str, now: Instant) {
        self.batch.push(id, text);
        if self.batch.full() {
            self.publish_output(now);
        }
    }

    fn publish_output(&mut self, now: Instant) {
        if self.batch.ids.is_empty() {
            return;
        }
        let b = std::mem::take(&mut self.batch);
        self.batch.last_publish = Some(now);
        let output = |ids: Vec<String>, text: Vec<String>| Output {
            utime: auth::now_us(),
            deputy_id: self.opts.deputy.id.clone(),
            command_ids: ids,
            text,
        };
        // Batches are bounded (BATCH_BYTES, BATCH_IDS, and every entry by
        // the pty reads or the notice length), so this fits; should one
        // entry still not encode, it alone is lost, not its batch.
        let whole = output(b.ids, b.text);
        let messages = match whole.to_bytes() {
            Ok(bytes) => vec![bytes],
            Err(_) => whole
                .command_ids
                .into_iter()
                .zip(whole.text)
                .filter_map(|(id, t)| match output(vec![id.clone()], vec![t]).to_bytes() {
                    Ok(bytes) => Some(bytes),
                    Err(e) => {
                        log(&format!("output of {} not sent: {e}", quote(&id)));
                        None
                    }
                })
                .collect(),
        };
        for m in messages {
            self.publish(PM_OUTPUT, m);
        }
    }

    // ----- actions ------------------------------------------------------

    fn carry_out(&mut self, now: Instant) {
        for a in self.deputy.take_actions() {
            match a {
                Action::Send(l) => self.sup.queue(&l),
                Action::TakeFd { id, handle } => self.take_fd(&id, &handle),
                Action::CloseOutput(id) => self.close_pty(&id),
                Action::DrainOutput(id) => self.drain(&id, now),
                Action::SignalTree { id, root, sig } => {
                    let procs = procfs::all_processes();
                    let list = procfs::descendants(root, &procs);
                    for &(pid, _) in &list {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::try_from(sig).ok(),
                        );
                    }
                    self.deputy.record_descendants(&id, list);
                }
                Action::KillOrphans(list) => {
                    for (pid, start) in list {
                        if let Some(s) = ProcStat::read(pid)
                            && s.start_time == start
                            && (s.ppid == 1 || s.ppid == self.sup.peer_pid)
                        {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                }
                Action::PublishInfo => self.info_wanted = true,
                Action::Notice(id, text) => self.emit(&id, &text, now),
            }
        }
    }

    fn take_fd(&mut self, id: &str, handle: &str) {
        let pty = match nix::pty::openpty(None, None) {
            Ok(p) => p,
            Err(e) => {
                self.emit(id, &format!("no output capture: openpty: {e}\n"), Instant::now());
                return;
            }
        };
        if let Ok(mut t) = nix::sys::termios::tcgetattr(&pty.slave) {
            // Lines end in \n, not \r\n (§4.6).
            t.output_flags.remove(nix::sys::termios::OutputFlags::OPOST);
            t.local_flags.remove(nix::sys::termios::LocalFlags::ECHO);
            let _ = nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t);
        }
        let _ = crate::sys::set_nonblock(pty.master.as_raw_fd(), true);
        let _ = crate::sys::set_cloexec(pty.master.as_raw_fd());
        let _ = crate::sys::set_cloexec(pty.slave.as_raw_fd());
        self.close_pty(id);
        let token = Token(self.next_token);
        self.next_token += 1;
        if let Err(e) = self.poll.registry().register(&mut SourceFd(&pty.master.as_raw_fd()), token, Interest::READABLE)
        {
            self.emit(id, &format!("no output capture: {e}\n"), Instant::now());
            return;
        }
        self.tokens.insert(token, id.to_string());
        self.ptys.insert(
            id.to_string(),
            Pty { master: pty.master, token, partial: Vec::new(), window: (Instant::now(), 0), dropped: false },
        );
        let mut line = format!("fd.take\t{handle}").into_bytes();
        line.push(b'\n');
        self.sup.outq.push_back(Outgoing { line, fd: Some(pty.slave), handle: Some(handle.to_string()) });
    }

    fn close_pty(&mut self, id: &str) {
        if let Some(p) = self.ptys.remove(id) {
            let _ = self.poll.registry().deregister(&mut SourceFd(&p.master.as_raw_fd()));
            self.tokens.remove(&p.token);
        }
    }

    /// Read a command's pty until it would block, publishing whenever
    /// more than 4096 bytes are pending.
    fn drain(&mut self, id: &str, now: Instant) {
        loop {
            let (text, notice, more, lost) = self.read_pty(id, now);
            if let Some(n) = notice {
                self.emit(id, n, now);
            }
            self.emit(id, &text, now);
            if lost {
                // EIO: no slave is open any more (daemonproxy closed the
                // handle); the next start hands over a new pty.
                self.close_pty(id);
                if let Some(c) = self.deputy.cmds.get_mut(id) {
                    c.has_output = false;
                }
            }
            if !more {
                return;
            }
        }
    }

    /// Up to 16 reads of 1023 bytes (§4.8) from a pty: the text, a notice
    /// if the rate limit started dropping, whether more may be waiting, and
    /// whether the pty is gone.
    fn read_pty(&mut self, id: &str, now: Instant) -> (String, Option<&'static str>, bool, bool) {
        let rate = self.opts.deputy.max_output_rate;
        let Some(p) = self.ptys.get_mut(id) else { return (String::new(), None, false, false) };
        let mut text = String::new();
        let mut notice = None;
        let mut buf = [0u8; 1023];
        for _ in 0..16 {
            match crate::sys::read(p.master.as_raw_fd(), &mut buf) {
                Ok(0) => return (text, notice, false, false),
                Ok(n) => {
                    if now.duration_since(p.window.0) >= Duration::from_secs(1) {
                        p.window = (now, 0);
                        p.dropped = false;
                    }
                    p.window.1 += n;
                    if p.window.1 > rate {
                        if !p.dropped {
                            p.dropped = true;
                            notice = Some("\n[output over --max-output-rate dropped]\n");
                        }
                        continue;
                    }
                    text.push_str(&utf8_chunk(&mut p.partial, &buf[..n]));
                }
                Err(libc::EAGAIN) => return (text, notice, false, false),
                Err(libc::EINTR) => {}
                Err(_) => return (text, notice, false, true),
            }
        }
        (text, notice, true, false)
    }

    // ----- inputs -------------------------------------------------------

    fn on_sup_line(&mut self, line: &[u8], now: Instant) {
        let ev = Event::parse(line);
        if let Event::Other(t) = ev
            && self.sync_token.as_deref().is_some_and(|k| k.as_bytes() == t)
        {
            self.sync_token = None;
            self.deputy.synced(now);
            if self.opts.verbose {
                log(&format!("synced: {} commands", self.deputy.cmds.len()));
            }
            return;
        }
        if ev == Event::Overflow {
            log("daemonproxy dropped events (overflow): syncing again");
            self.resync();
            return;
        }
        if let Event::Fd(h, _) = ev
            && self.sup.take_inflight.as_ref().is_some_and(|(t, _)| t.as_bytes() == h)
        {
            self.sup.take_inflight = None;
        }
        if let Event::Error(e) = ev
            && memchr::memmem::find(e, b"for command \"fd.take").is_some()
        {
            self.sup.take_inflight = None;
        }
        self.deputy.on_event(&ev, now);
    }

    fn resync(&mut self) {
        let token = format!("bridge-sync-{:016x}", random_u64());
        self.deputy.begin_sync();
        self.sup.queue("statedump");
        self.sup.queue(&format!("echo\t{token}"));
        self.sync_token = Some(token);
    }

    fn on_lcm(&mut self, r: crate::procman::Received, now: Instant) {
        let id = self.opts.deputy.id.clone();
        match r.channel.as_str() {
            PM_DISCOVER => {
                let Ok((d, v)) = self.verifier.check::<Discovery>(PM_DISCOVER, &r.data) else { return };
                if let Some(disc) = &self.discovering {
                    if d.transmitter_id == id && d.nonce != disc.nonce {
                        self.conflict(&v, "a discovery carrying our deputy id");
                    }
                    return;
                }
                if !self.opts.auth.admits(&v) {
                    return;
                }
                // Answer with info at once, at most 10 per second.
                while self.discovery_replies.front().is_some_and(|&t| now.duration_since(t) > Duration::from_secs(1)) {
                    self.discovery_replies.pop_front();
                }
                if self.discovery_replies.len() < 10 {
                    self.discovery_replies.push_back(now);
                    self.publish_info(now);
                }
            }
            PM_INFO => {
                if self.discovering.is_none() {
                    return;
                }
                let Ok((i, v)) = self.verifier.check::<DeputyInfo>(PM_INFO, &r.data) else { return };
                if i.deputy_id == id {
                    self.conflict(&v, "info from another deputy with our id");
                }
            }
            PM_ORDERS => {
                let Ok((o, v)) = self.verifier.check::<Orders>(PM_ORDERS, &r.data) else { return };
                if o.deputy_id != id {
                    return;
                }
                if v.is_rejection() {
                    let kind = match v {
                        Verdict::UnknownKey { .. } => "key",
                        Verdict::BadMac => "mac",
                        Verdict::Replayed { .. } => "replayed",
                        _ => "stale",
                    };
                    return self.deputy.refuse_orders(&o.sheriff_id, kind, &v.to_string(), now);
                }
                if !self.opts.allow_source.is_empty()
                    && !r.source.is_some_and(|s: SocketAddr| self.opts.allow_source.iter().any(|c| c.contains(s.ip())))
                {
                    let why = "source not in --allow-source";
                    return self.deputy.refuse_orders(&o.sheriff_id, "source", why, now);
                }
                let list: Vec<Order> = o
                    .cmds
                    .iter()
                    .map(|c| Order { def: def_of(&c.cmd), desired_runid: c.desired_runid, force_quit: c.force_quit })
                    .collect();
                let signed = matches!(v, Verdict::Valid { .. });
                let require = self.opts.auth == AuthMode::Require;
                self.deputy.on_orders(
                    &o.deputy_id,
                    &o.sheriff_id,
                    o.utime,
                    &list,
                    signed,
                    require,
                    auth::now_us(),
                    now,
                );
            }
            _ => {}
        }
    }

    fn conflict(&mut self, v: &Verdict, what: &str) {
        if self.opts.auth == AuthMode::Require && !matches!(v, Verdict::Valid { .. }) {
            log(&format!("warning: {what} ({v}); not signed, so ignored"));
            return;
        }
        log(&format!("deputy id {:?} is already taken: {what}", self.opts.deputy.id));
        self.exit_code = Some(2);
    }

    fn discovery_step(&mut self, now: Instant) {
        let Some(d) = &self.discovering else { return };
        let since = now.duration_since(d.started);
        if since >= Duration::from_millis(600) {
            self.discovering = None;
            self.lcm.unsubscribe(PM_INFO);
            if let Err(e) = self.lcm.subscribe(PM_ORDERS) {
                log(&format!("subscribe {PM_ORDERS}: {e}"));
            }
            self.publish_info(now);
            return;
        }
        let nonce = d.nonce;
        let due = since < Duration::from_millis(500)
            && d.last_sent.is_none_or(|t| now.duration_since(t) >= Duration::from_millis(200));
        if due {
            self.publish_discovery(nonce);
            if let Some(d) = &mut self.discovering {
                d.last_sent = Some(now);
            }
        }
    }

    fn next_wakeup(&self, now: Instant, deputy_due: Option<Instant>) -> Duration {
        let mut t = self.next_info;
        let mut at = |x: Instant| t = t.min(x);
        if let Some(x) = deputy_due {
            at(x);
        }
        if let Some(d) = &self.discovering {
            at(d.last_sent.map_or(now, |s| s + Duration::from_millis(200)).min(d.started + Duration::from_millis(600)));
        }
        if !self.batch.ids.is_empty() {
            at(self.batch.last_publish.map_or(now, |p| p + Duration::from_millis(10)));
        }
        if let Some(x) = self.lcm.next_deadline() {
            at(x);
        }
        if let Some((_, since)) = &self.sup.take_inflight {
            at(*since + Duration::from_secs(2));
        }
        if let Some(s) = self.stopping {
            at(s);
        }
        if self.info_wanted {
            at(self.last_info.map_or(now, |t| t + INFO_COALESCE));
        }
        t.saturating_duration_since(now).max(Duration::from_micros(100)).min(Duration::from_secs(1))
    }

    /// Run until a signal, a conflict, or the end of the daemonproxy
    /// connection; the exit code of §4.10.
    pub fn run(&mut self) -> i32 {
        log(&format!("deputy {:?} on {}", self.opts.deputy.id, self.lcm.url()));
        for ch in [PM_DISCOVER, PM_INFO] {
            if let Err(e) = self.lcm.subscribe(ch) {
                log(&format!("subscribe {ch}: {e}"));
                return 1;
            }
        }
        let mut events = Events::with_capacity(256);
        let mut deputy_due = None;
        let mut lcm_more = false;
        loop {
            let now = Instant::now();
            self.discovery_step(now);
            if let Some(code) = self.exit_code {
                return code;
            }
            let wait = if lcm_more { Duration::ZERO } else { self.next_wakeup(now, deputy_due) };
            if let Err(e) = self.poll.poll(&mut events, Some(wait))
                && e.kind() != io::ErrorKind::Interrupted
            {
                log(&format!("poll: {e}"));
                return 1;
            }
            let now = Instant::now();
            let mut sup_ready = false;
            let mut pty_ready = Vec::new();
            let mut signalled = false;
            for ev in events.iter() {
                match ev.token() {
                    SUP => sup_ready = true,
                    LCM => {}
                    SIG => signalled = true,
                    t => {
                        if let Some(id) = self.tokens.get(&t) {
                            pty_ready.push(id.clone());
                        }
                    }
                }
            }
            if signalled {
                let mut b = [0u8; 64];
                while crate::sys::read(self.sig_rx.as_raw_fd(), &mut b).is_ok_and(|n| n > 0) {}
                if !self.opts.stop_on_exit {
                    log("signal: exiting; the services keep running");
                    self.publish_output(now);
                    return 0;
                }
                if self.stopping.is_none() {
                    log("signal: stopping the commands, then exiting (--stop-on-exit)");
                    self.deputy.shutting_down = true;
                    self.deputy.stop_all(now);
                    let longest = self.deputy.cmds.values().map(|c| c.def.stop_ms()).max().unwrap_or(0);
                    let wait = Duration::from_millis(longest.clamp(1000, 10_000) + 200);
                    self.stopping = Some(now + wait);
                }
            }
            if sup_ready || !self.sup.inbuf.is_empty() {
                let mut lines = Vec::new();
                if let Err(e) = self.sup.read(|l| lines.push(l.to_vec())) {
                    log(&format!("reading from daemonproxy: {e}"));
                    return 1;
                }
                for l in lines {
                    self.on_sup_line(&l, now);
                }
                if self.sup.eof {
                    log("daemonproxy closed the connection");
                    self.publish_output(now);
                    return if self.stopping.is_some() { 0 } else { 1 };
                }
            }
            let mut lcm_seen = 0;
            while lcm_seen < LCM_PER_ROUND
                && let Some(r) = self.lcm.recv()
            {
                lcm_seen += 1;
                self.on_lcm(r, now);
            }
            // More may be waiting: the next round polls without sleeping
            // (readiness is edge-triggered, so it would not be told again).
            lcm_more = lcm_seen == LCM_PER_ROUND;
            for id in pty_ready {
                self.drain(&id, now);
            }
            if self.sup.take_inflight.as_ref().is_some_and(|(_, t)| now.duration_since(*t) >= Duration::from_secs(2)) {
                self.sup.take_inflight = None;
            }
            // The deputy's timers are scanned when one is due or after an
            // input that may have set one, not on every pty read.
            let touched = sup_ready || signalled || lcm_seen > 0;
            if touched || deputy_due.is_some_and(|d| now >= d) {
                deputy_due = self.deputy.tick(now);
            }
            self.carry_out(now);
            if let Err(e) = self.sup.flush() {
                log(&format!("writing to daemonproxy: {e}"));
                return 1;
            }
            if self.discovering.is_none() {
                if now >= self.next_info {
                    self.publish_info(now);
                } else if self.info_wanted && self.last_info.is_none_or(|t| now >= t + INFO_COALESCE) {
                    self.send_info(now);
                }
            }
            if self.batch.due(now) {
                self.publish_output(now);
            }
            let _ = self.lcm.flush();
            if let Some(s) = self.stopping
                && (self.deputy.running().next().is_none() || now >= s)
            {
                self.publish_info(now);
                self.publish_output(now);
                let _ = self.lcm.flush();
                return 0;
            }
        }
    }
}

fn status_of(s: &Status) -> CmdStatus {
    CmdStatus {
        cmd: cmd_t(&s.def),
        pid: s.pid,
        actual_runid: s.actual_runid,
        exit_code: s.exit_code,
        cpu_usage: s.cpu,
        mem_vsize_bytes: s.vsize,
        mem_rss_bytes: s.rss,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains("127.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("fd00::/8").unwrap().contains("fd12::1".parse().unwrap()));
        assert_eq!(Cidr::parse("1.2.3.4/33"), None);
        assert_eq!(Cidr::parse("x"), None);
    }

    #[test]
    fn utf8_chunks_keep_cut_sequences() {
        let mut p = Vec::new();
        let s = "é".as_bytes();
        assert_eq!(utf8_chunk(&mut p, &[b'a', s[0]]), "a");
        assert_eq!(p, vec![s[0]]);
        assert_eq!(utf8_chunk(&mut p, &[s[1], b'\n']), "é\n");
        assert!(p.is_empty());
        assert_eq!(utf8_chunk(&mut p, &[0xff, b'x']), "\u{fffd}x");
    }

    #[test]
    fn batch_one_entry_per_id() {
        let mut b = Batch::default();
        b.push("a", "1\n");
        b.push("", "notice\n");
        b.push("a", "2\0\n");
        assert_eq!(b.ids, ["a", ""]);
        assert_eq!(b.text, ["1\n2\n", "notice\n"]);
        let now = Instant::now();
        assert!(b.due(now));
        b.last_publish = Some(now);
        assert!(!b.due(now));
        b.push("c", &"x".repeat(5000));
        assert!(b.due(now));
        // full at 256 ids even if every text is short (issue 14: a batch
        // of many notices failed to encode and was lost whole)
        let mut b = Batch::default();
        for i in 0..BATCH_IDS {
            assert!(!b.full(), "{i}");
            b.push(&format!("c{i}"), "n\n");
        }
        assert!(b.full());
    }
}
