//! The deputy's decisions (docs/fleet.md §4), without I/O.
//!
//! [`Deputy`] holds what the bridge knows: the services daemonproxy reports
//! (rebuilt from `statedump` at every sync) and, for each procman command,
//! its definition and run bookkeeping. Its methods take one input — a
//! daemonproxy event, an orders message, a tick of the clock — and queue
//! [`Action`]s that the driver (`bridge::run`) carries out: protocol lines
//! to send, a pty to hand over with `fd.take`, signals for descendants,
//! notices and info to publish. Everything a restarted bridge needs is in
//! the services' tags (see [`tags`]), so no process is touched by a restart.

use super::bounded::{Table, quote};
use super::exec;
use super::tags::{self, Def};
use crate::client::{Ended, Event, ServiceState, StateWord, split_error};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// How services the bridge did not create are treated (`--local`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalMode {
    /// Not reported.
    Hide,
    /// Reported (group `local`), orders about them ignored.
    Observe,
    /// Reported, and started or stopped as orders say.
    Control,
}

/// Settings of the deputy.
#[derive(Clone, Debug)]
pub struct Config {
    /// `deputy_id`.
    pub id: String,
    /// Report, never act.
    pub read_only: bool,
    /// Services not created by the bridge.
    pub local: LocalMode,
    /// Globs of `sheriff_id`s whose orders are obeyed (empty: all).
    pub allow_sheriff: Vec<String>,
    /// Globs of argv[0] that may be run (empty: all).
    pub allow_exec: Vec<String>,
    /// Orders older (or further ahead) than this are refused; `None`: no
    /// limit.
    pub max_order_age: Option<Duration>,
    /// The connection can pass descriptors (`fd.take`): output is captured
    /// through a pty.
    pub fd_passing: bool,
    /// Most output bytes per second and command before the excess is
    /// dropped.
    pub max_output_rate: usize,
}

/// One entry of an orders message.
#[derive(Clone, Debug, PartialEq)]
pub struct Order {
    /// The command as the sheriff defines it.
    pub def: Def,
    /// The run the sheriff wants (0: no opinion).
    pub desired_runid: i32,
    /// Stop it.
    pub force_quit: bool,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send this command line (no LF) to daemonproxy.
    Send(String),
    /// Open a pty, keep its master as command `id`'s output and send
    /// `fd.take\tHANDLE` with the slave attached.
    TakeFd {
        /// Command id.
        id: String,
        /// The handle name.
        handle: String,
    },
    /// Forget command `id`'s output pty.
    CloseOutput(String),
    /// Read what is left on command `id`'s pty before its exit is handled.
    DrainOutput(String),
    /// Send `sig` to every descendant of `root` (and record them in
    /// command `id` with [`Deputy::record_descendants`]).
    SignalTree {
        /// Command id.
        id: String,
        /// The service's pid.
        root: i32,
        /// Signal number.
        sig: i32,
    },
    /// SIGKILL those of these recorded descendants that still run with the
    /// same start time and have been orphaned.
    KillOrphans(Vec<(i32, u64)>),
    /// Publish `deputy_info_t` now.
    PublishInfo,
    /// A notice on `PM_OUTPUT` under this command id ("" = the deputy).
    Notice(String, String),
}

/// A command's state in daemonproxy, as last reported.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Last `service.state` (owned fields).
    pub state: Option<StateWord>,
    /// Its pid (running or last).
    pub pid: i32,
    /// How the last run ended.
    pub ended: Option<i32>,
    /// Raw tags.
    pub tags: Vec<u8>,
    /// Raw args.
    pub args: Vec<u8>,
    /// auto_up has `always`.
    pub auto_up: bool,
    /// The raw `service.auto_up` value (`INTERVAL\tTRIGGERS`, or `-`).
    pub auto_up_raw: Vec<u8>,
    /// Its fds name `control.socket`, `control.cmd` or `control.event`:
    /// a controller of daemonproxy (a bridge among them), never reported.
    pub controller: bool,
}

/// A stop under way (§4.7).
#[derive(Clone, Copy, Debug)]
pub struct Stop {
    /// The pid being stopped.
    pub pid: i32,
    /// When SIGKILL is (next) due.
    pub kill_at: Instant,
}

/// One procman command (owned, or a local service under `--local`).
#[derive(Clone, Debug)]
pub struct Command {
    /// Definition.
    pub def: Def,
    /// daemonproxy service name.
    pub svc: String,
    /// Output handle name.
    pub handle: String,
    /// Created by the bridge (else a local service).
    pub owned: bool,
    /// Running pid (0: none).
    pub pid: i32,
    /// The runid of the last start that happened.
    pub actual_runid: i32,
    /// A start was sent for this runid; `up` not yet seen.
    pub pending_runid: Option<i32>,
    /// When a pending start counts as failed.
    pub start_deadline: Option<Instant>,
    /// The sheriff's desired runid.
    pub desired: i32,
    /// Not force-quit.
    pub should_run: bool,
    /// Raw wait status of the last run.
    pub exit_code: i32,
    /// Remove once stopped.
    pub remove_requested: bool,
    /// Respawn delay, ms.
    pub backoff_ms: u64,
    /// The previous start.
    pub last_start: Option<Instant>,
    /// A respawn is due then.
    pub respawn_at: Option<Instant>,
    /// A stop under way.
    pub stop: Option<Stop>,
    /// Stop as soon as the pending start is up.
    pub stop_after_up: bool,
    /// Descendants signalled by the stop, with start times.
    pub descendants: Vec<(i32, u64)>,
    /// The output pty exists (this bridge handed it over).
    pub has_output: bool,
    /// Local services: the sheriffs (by [`Deputy::sheriff_key`]) whose
    /// last orders listed it.
    pub listed_by: Vec<u64>,
    /// Local services: the sheriffs that removed it (listed it, then left it
    /// out); it is not reported while one of them is the current sheriff.
    pub dismissed_by: Vec<u64>,
    /// Local services under `--local control`: the `service.auto_up` value
    /// a stop turned off, put back by the next start.
    pub saved_auto_up: Option<String>,
    /// CPU share and memory of the running process.
    pub cpu: f32,
    /// Virtual size, bytes.
    pub vsize: i64,
    /// Resident size, bytes.
    pub rss: i64,
}

/// One `cmd_status_t` as the deputy reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// Definition as held.
    pub def: Def,
    /// Pid (0 unless up).
    pub pid: i32,
    /// Actual runid.
    pub actual_runid: i32,
    /// Raw wait status of the last run.
    pub exit_code: i32,
    /// CPU share of the machine.
    pub cpu: f32,
    /// Bytes.
    pub vsize: i64,
    /// Bytes.
    pub rss: i64,
}

/// A command's fields that orders change: id, actual and desired runid,
/// should_run, remove_requested, a stop under way, a pending start.
type Snapshot = (String, i32, i32, bool, bool, bool, Option<i32>);

const MIN_BACKOFF: u64 = 10;
const MAX_BACKOFF: u64 = 1000;
const START_TIMEOUT: Duration = Duration::from_secs(2);
const NOTICE_EVERY: Duration = Duration::from_secs(30);
/// The most sheriffs a local service remembers as listing or dismissing it.
const MAX_LISTERS: usize = 16;
/// The most rate-limit keys of notices remembered; a new one in a full
/// table evicts the oldest.
pub const NOTICE_KEYS: usize = 256;
/// The most rate-limited notices in any one second, all keys together: a
/// flood of orders from ever new sender ids gives no more than this.
pub const NOTICE_BURST: u32 = 20;
/// The most sheriffs whose last orders time is remembered.
pub const MAX_SHERIFFS: usize = 256;
/// The longest notice text; longer ones are cut.
pub const MAX_NOTICE: usize = 1024;
/// The most commands a `deputy_info_t` carries (its array limit, §6.4),
/// local services included: orders for more are refused with a notice.
pub const MAX_REPORTED: usize = crate::procman::codec::MAX_COUNT;

/// Bytes command `d` takes in a `deputy_info_t`: its `cmd_status_t` (three
/// strings, each with a 4-byte length and a NUL; 6 bytes of `cmd_t`
/// scalars; 32 bytes of status).
pub fn status_size(d: &Def) -> usize {
    3 * 5 + d.id.len() + d.exec.len() + d.group.len() + 6 + 32
}

/// Bytes of a `deputy_info_t` of deputy `id` left for its commands: the
/// message limit less its header (fingerprint, utime, deputy id, load,
/// four memory figures, count) and a PMA1 trailer.
pub fn report_budget(id: &str) -> usize {
    crate::procman::codec::MAX_MESSAGE.saturating_sub(8 + 8 + 5 + id.len() + 4 + 32 + 4 + 48)
}

/// What the next report will hold: commands and their bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Load {
    count: usize,
    bytes: usize,
}
const FAILED_START: i32 = 0xff00;
/// The longest command line daemonproxy takes (its input buffer less the
/// LF); a longer one is refused whole.
const MAX_LINE: usize = crate::controller::IN_BUF - 1;

/// The deputy's state.
pub struct Deputy {
    /// Settings.
    pub cfg: Config,
    /// Every service daemonproxy reported, by name.
    pub services: BTreeMap<String, View>,
    /// Handles daemonproxy reported.
    pub handles: std::collections::BTreeSet<String>,
    /// Commands by id.
    pub cmds: BTreeMap<String, Command>,
    /// The service name → command id.
    by_svc: HashMap<String, String>,
    /// Actions for the driver.
    pub out: Vec<Action>,
    /// A statedump is being read: events build the view only.
    pub syncing: bool,
    /// Last accepted orders utime per sheriff (stamped with the local time
    /// seen), at most [`MAX_SHERIFFS`].
    last_orders: Table<i64>,
    /// When each rate-limited notice was last given, at most
    /// [`NOTICE_KEYS`].
    noticed: Table<()>,
    /// The current second of [`NOTICE_BURST`] and the notices given in it.
    notice_window: (Instant, u32),
    /// Rate-limited notices not given because of [`NOTICE_BURST`].
    pub notices_suppressed: u64,
    /// Answers given once (an order about a local service the deputy does
    /// not act on), at most [`NOTICE_KEYS`].
    answered: Table<()>,
    /// The sheriff whose orders were accepted last ([`Deputy::sheriff_key`]):
    /// the local services it removed are not reported.
    current_sheriff: Option<u64>,
    /// The bridge's own pid and its ancestors': a service running one of
    /// them is the bridge's own (or runs it) and is never reported.
    pub own_pids: Vec<i32>,
    /// Shutting down: orders are ignored.
    pub shutting_down: bool,
}

impl Deputy {
    /// A deputy with nothing known yet. `--allow-exec` patterns get their
    /// directories resolved ([`exec::real_pattern`]).
    pub fn new(mut cfg: Config) -> Deputy {
        cfg.allow_exec = cfg.allow_exec.iter().map(|p| exec::real_pattern(p)).collect();
        Deputy {
            cfg,
            services: BTreeMap::new(),
            handles: Default::default(),
            cmds: BTreeMap::new(),
            by_svc: HashMap::new(),
            out: Vec::new(),
            syncing: false,
            last_orders: Table::new(MAX_SHERIFFS),
            noticed: Table::new(NOTICE_KEYS),
            notice_window: (Instant::now(), 0),
            notices_suppressed: 0,
            answered: Table::new(NOTICE_KEYS),
            current_sheriff: None,
            own_pids: Vec::new(),
            shutting_down: false,
        }
    }

    fn send(&mut self, line: String) {
        self.out.push(Action::Send(line));
    }

    fn notice(&mut self, id: &str, text: impl Into<String>) {
        let mut t = text.into();
        if t.len() > MAX_NOTICE {
            let mut cut = MAX_NOTICE - 4;
            while !t.is_char_boundary(cut) {
                cut -= 1;
            }
            t.truncate(cut);
            t.push_str("...");
        }
        if !t.ends_with('\n') {
            t.push('\n');
        }
        self.out.push(Action::Notice(id.to_string(), t));
    }

    /// A notice at most once per 30 s for `key` (its parts: a kind, then
    /// the ids it is about), and at most [`NOTICE_BURST`] of them a second
    /// in all.
    fn notice_limited(&mut self, key: &[&str], id: &str, text: impl Into<String>, now: Instant) {
        let key = self.noticed.key(key);
        if self.noticed.get(key).is_some_and(|&(t, _)| now.duration_since(t) < NOTICE_EVERY) || !self.burst_allows(now)
        {
            return;
        }
        self.noticed.insert(key, now, ());
        self.notice(id, text);
    }

    /// A notice given once for `key` (an answer that the same orders would
    /// only repeat), within [`NOTICE_BURST`] a second like the others; the
    /// table forgets the oldest answers first.
    fn notice_once(&mut self, key: &[&str], id: &str, text: impl Into<String>, now: Instant) {
        let key = self.answered.key(key);
        if self.answered.get(key).is_some() || !self.burst_allows(now) {
            return;
        }
        self.answered.insert(key, now, ());
        self.notice(id, text);
    }

    /// Count one more limited notice in this second's [`NOTICE_BURST`];
    /// false (and counted as suppressed) if the burst is spent.
    fn burst_allows(&mut self, now: Instant) -> bool {
        if now.duration_since(self.notice_window.0) >= Duration::from_secs(1) {
            self.notice_window = (now, 0);
        }
        if self.notice_window.1 >= NOTICE_BURST {
            self.notices_suppressed += 1;
            return false;
        }
        self.notice_window.1 += 1;
        true
    }

    /// The key that stands for sheriff `id` in [`Command::listed_by`] and
    /// [`Command::dismissed_by`].
    pub fn sheriff_key(&self, id: &str) -> u64 {
        self.last_orders.key(&[id])
    }

    /// A service the bridge did not create and never reports whatever
    /// `--local` says: a controller of daemonproxy (this bridge, another
    /// bridge, a shutdown controller), or a service running the bridge
    /// itself or one of its ancestors (docs/fleet.md §4.1).
    pub fn unreportable(&self, v: &View) -> bool {
        v.controller || (v.pid > 0 && self.own_pids.contains(&v.pid))
    }

    /// A definition whose `service.tags` line would not fit [`MAX_LINE`].
    fn refuse_long_definition(&mut self, id: &str, now: Instant) {
        let t = "command refused: definition too long for daemonproxy";
        self.notice_limited(&["long", id], id, t, now);
    }

    /// Orders from `sheriff_id` refused before they were read (a bad or
    /// replayed signature, a source outside `--allow-source`): a notice
    /// under the empty id, rate-limited like every refusal for each `kind`
    /// of reason and sender.
    pub fn refuse_orders(&mut self, sheriff_id: &str, kind: &str, why: &str, now: Instant) {
        let t = format!("orders from {} refused: {why}", quote(sheriff_id));
        self.notice_limited(&["refused", kind, sheriff_id], "", t, now);
    }

    // ----- daemonproxy's side ---------------------------------------------

    /// The line that starts a sync (a `statedump` then `echo TOKEN` must
    /// follow); events now only rebuild the view until [`Deputy::synced`].
    pub fn begin_sync(&mut self) {
        self.syncing = true;
        self.services.clear();
        self.handles.clear();
    }

    /// One event from daemonproxy.
    pub fn on_event(&mut self, ev: &Event<'_>, now: Instant) {
        // daemonproxy names only valid services and handles; a line that
        // does not is not one of its events, and a name in the view is one
        // the bridge may put in a command line.
        let name = match *ev {
            Event::State(s) => Some(s.name),
            Event::Tags(n, _) | Event::Args(n, _) | Event::AutoUp(n, _) | Event::Fd(n, _) | Event::Fds(n, _) => Some(n),
            _ => None,
        };
        if name.is_some_and(|n| !crate::command::valid_name(n)) {
            return;
        }
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match *ev {
            Event::State(s) => {
                let name = text(s.name);
                if s.state == StateWord::Deleted {
                    self.services.remove(&name);
                } else {
                    let v = self.services.entry(name.clone()).or_default();
                    v.state = Some(s.state);
                    v.pid = s.pid.unwrap_or(0);
                    v.ended = s.ended.map(|e| e.wait_status());
                }
                if !self.syncing {
                    self.on_state(&name, &s, now);
                }
            }
            Event::Tags(n, t) => self.services.entry(text(n)).or_default().tags = t.to_vec(),
            Event::Args(n, a) => self.services.entry(text(n)).or_default().args = a.to_vec(),
            Event::AutoUp(n, r) => {
                let v = self.services.entry(text(n)).or_default();
                v.auto_up = r.split(|&b| b == b'\t').any(|w| w == b"always");
                v.auto_up_raw = r.to_vec();
            }
            Event::Fds(n, f) => {
                let name = text(n);
                let ctl = f
                    .split(|&b| b == b'\t')
                    .any(|w| matches!(w, b"control.socket" | b"control.cmd" | b"control.event"));
                let v = self.services.entry(name.clone()).or_default();
                let changed = v.controller != ctl;
                v.controller = ctl;
                if changed && !self.syncing && !self.is_owned_svc(&name) {
                    self.refresh_locals();
                    self.out.push(Action::PublishInfo);
                }
            }
            Event::Fd(n, rest) => {
                if rest == b"deleted" {
                    self.handles.remove(&text(n));
                } else {
                    self.handles.insert(text(n));
                }
            }
            Event::Error(e) if !self.syncing => self.on_error(e, now),
            _ => {}
        }
    }

    /// The sync token came back: adopt what the view shows.
    pub fn synced(&mut self, now: Instant) {
        self.syncing = false;
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in &names {
            let v = &self.services[name];
            let Some((def, runid)) = tags::parse(&v.tags) else { continue };
            if tags::service_name(&def.id).ok().as_deref() != Some(name.as_str()) {
                continue; // tags copied onto another service: not ours to run
            }
            let (state, pid, ended) = (v.state, v.pid, v.ended);
            let id = def.id.clone();
            let c = self.cmds.entry(id.clone()).or_insert_with(|| new_command(def.clone(), name.clone(), true));
            c.def = def;
            c.actual_runid = runid;
            if c.desired == 0 {
                c.desired = runid;
            }
            self.by_svc.insert(name.clone(), id.clone());
            match state {
                Some(StateWord::Up) => {
                    let c = self.cmds.get_mut(&id).expect("inserted above");
                    c.pid = pid;
                    c.pending_runid = None;
                    c.start_deadline = None;
                }
                _ => {
                    // A run that ended while events were lost (overflow).
                    let was_running = self.cmds[&id].pid != 0;
                    if was_running {
                        let status = ended.unwrap_or(0);
                        self.exited(&id, status, now);
                    } else if let Some(c) = self.cmds.get_mut(&id) {
                        c.pid = 0;
                        if state == Some(StateWord::Down) && c.pending_runid.is_none() {
                            c.exit_code = ended.unwrap_or(c.exit_code);
                        }
                    }
                }
            }
        }
        // Commands whose service is gone (deleted meanwhile).
        let gone: Vec<String> =
            self.cmds.iter().filter(|(_, c)| !self.services.contains_key(&c.svc)).map(|(k, _)| k.clone()).collect();
        for id in gone {
            if let Some(c) = self.cmds.remove(&id) {
                self.by_svc.remove(&c.svc);
            }
        }
        self.refresh_locals();
        self.out.push(Action::PublishInfo);
    }

    /// Keep the local (not owned) services in `cmds` as the mode says:
    /// new ones added, their figures updated, vanished ones dropped.
    fn refresh_locals(&mut self) {
        let hide = self.cfg.local == LocalMode::Hide;
        let locals: Vec<(String, View)> = self
            .services
            .iter()
            .filter(|(n, v)| !hide && tags::parse(&v.tags).is_none() && !self.is_owned_svc(n) && !self.unreportable(v))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let keep: std::collections::HashSet<&String> = locals.iter().map(|(n, _)| n).collect();
        let stale: Vec<String> =
            self.cmds.iter().filter(|(k, c)| !c.owned && !keep.contains(k)).map(|(k, _)| k.clone()).collect();
        for id in stale {
            if let Some(c) = self.cmds.remove(&id) {
                self.by_svc.remove(&c.svc);
            }
        }
        for (name, v) in locals {
            let up = v.state == Some(StateWord::Up);
            if let Some(c) = self.cmds.get_mut(&name) {
                if !c.owned {
                    c.def.exec = String::from_utf8_lossy(&v.args).replace('\t', " ");
                    c.def.auto_respawn = v.auto_up;
                    c.pid = if up { v.pid } else { 0 };
                }
                continue; // an owned command with that id wins
            }
            let def = Def {
                id: name.clone(),
                exec: String::from_utf8_lossy(&v.args).replace('\t', " "),
                group: "local".into(),
                auto_respawn: v.auto_up,
                stop_signal: libc::SIGTERM,
                stop_time_allowed: 7.0,
            };
            let mut c = new_command(def, name.clone(), false);
            c.pid = if up { v.pid } else { 0 };
            c.exit_code = v.ended.unwrap_or(0);
            self.by_svc.insert(name.clone(), name.clone());
            self.cmds.insert(name, c);
        }
    }

    fn is_owned_svc(&self, svc: &str) -> bool {
        self.by_svc.get(svc).and_then(|id| self.cmds.get(id)).is_some_and(|c| c.owned)
    }

    fn on_state(&mut self, svc: &str, s: &ServiceState<'_>, now: Instant) {
        let Some(id) = self.by_svc.get(svc).cloned() else {
            // A service created meanwhile: maybe a local one.
            if self.services.get(svc).is_none_or(|v| tags::parse(&v.tags).is_none()) {
                self.refresh_locals();
                self.out.push(Action::PublishInfo);
            }
            return;
        };
        let Some(c) = self.cmds.get_mut(&id) else { return };
        match s.state {
            StateWord::Up => {
                let pid = s.pid.unwrap_or(0);
                c.pid = pid;
                if let Some(r) = c.pending_runid.take() {
                    c.actual_runid = r;
                }
                c.start_deadline = None;
                if !c.owned {
                    c.exit_code = 0;
                }
                let stop_now = c.stop_after_up;
                c.stop_after_up = false;
                if stop_now {
                    self.stop(&id, now);
                }
                self.out.push(Action::PublishInfo);
            }
            StateWord::Down => {
                if c.pid == 0 && s.ended.is_none() {
                    return; // a cancelled start or a plain listing
                }
                let status = s.ended.map_or(0, |e| e.wait_status());
                if matches!(s.ended, Some(Ended::Signal(_))) {
                    self.notice(&id, strsignal(status));
                }
                self.exited(&id, status, now);
            }
            StateWord::Deleted => {
                if let Some(c) = self.cmds.remove(&id) {
                    self.by_svc.remove(&c.svc);
                    if c.has_output {
                        self.out.push(Action::CloseOutput(id));
                    }
                }
                self.out.push(Action::PublishInfo);
            }
            StateWord::Start => {}
        }
    }

    /// An error reply: if it names one of our services, a start of it
    /// failed (§4.6).
    fn on_error(&mut self, e: &[u8], now: Instant) {
        let (msg, cmd) = split_error(e);
        let Some(cmd) = cmd else { return };
        let mut f = cmd.split(|&b| b == b'\t');
        let (verb, svc) = (f.next().unwrap_or(b""), f.next().unwrap_or(b""));
        let svc = String::from_utf8_lossy(svc).into_owned();
        let Some(id) = self.by_svc.get(&svc).cloned() else { return };
        let text = format!("daemonproxy: {}", String::from_utf8_lossy(msg));
        self.notice(&id, text);
        if matches!(verb, b"service.start" | b"service.args" | b"service.fds" | b"fd.take")
            && self.cmds.get(&id).is_some_and(|c| c.pending_runid.is_some())
        {
            self.start_failed(&id, now);
        }
    }

    fn start_failed(&mut self, id: &str, now: Instant) {
        let Some(c) = self.cmds.get_mut(id) else { return };
        let Some(r) = c.pending_runid.take() else { return };
        c.actual_runid = r;
        c.start_deadline = None;
        c.stop_after_up = false;
        self.exited(id, FAILED_START, now);
    }

    /// Handle the end of a run (§4.5).
    fn exited(&mut self, id: &str, status: i32, now: Instant) {
        self.out.push(Action::DrainOutput(id.to_string()));
        let Some(c) = self.cmds.get_mut(id) else { return };
        c.pid = 0;
        c.exit_code = status;
        c.cpu = 0.0;
        c.vsize = 0;
        c.rss = 0;
        c.stop = None;
        let recorded = std::mem::take(&mut c.descendants);
        if !recorded.is_empty() {
            self.out.push(Action::KillOrphans(recorded));
        }
        let c = &self.cmds[id];
        if c.remove_requested {
            self.remove(id);
        } else if c.owned && c.should_run && c.desired != 0 && c.desired != c.actual_runid {
            let r = c.desired;
            self.start(id, r, now);
        } else if c.owned && c.def.auto_respawn && c.should_run {
            let c = self.cmds.get_mut(id).expect("checked above");
            c.respawn_at = Some(now + Duration::from_millis(c.backoff_ms));
        }
        self.out.push(Action::PublishInfo);
    }

    /// Record the descendants a stop signalled (after a
    /// [`Action::SignalTree`]).
    pub fn record_descendants(&mut self, id: &str, list: Vec<(i32, u64)>) {
        if let Some(c) = self.cmds.get_mut(id) {
            for d in list {
                if !c.descendants.contains(&d) {
                    c.descendants.push(d);
                }
            }
        }
    }

    // ----- starting and stopping ----------------------------------------------

    fn start(&mut self, id: &str, runid: i32, now: Instant) {
        let Some(c) = self.cmds.get(id) else { return };
        if !c.owned {
            let svc = c.svc.clone();
            let c = self.cmds.get_mut(id).expect("checked above");
            c.pending_runid = Some(runid);
            c.start_deadline = Some(now + START_TIMEOUT);
            // Auto-up turned off by a stop goes back on; with `always` it
            // starts the service itself (docs/protocol.md §3.6).
            let restore = c.saved_auto_up.take();
            let starts = restore.as_ref().is_some_and(|r| r.split('\t').any(|w| w == "always"));
            if let Some(r) = restore {
                self.send(format!("service.auto_up\t{svc}\t{r}"));
            }
            if !starts {
                self.send(format!("service.start\t{svc}"));
            }
            return;
        }
        let mut split = match exec::split_env(c.def.exec.as_bytes()) {
            Ok(e) => e,
            Err(e) => return self.refuse_start(id, runid, &e.to_string(), now),
        };
        if !self.cfg.allow_exec.is_empty()
            && let Err(why) = self.judge_program(&mut split)
        {
            return self.refuse_start(id, runid, &why, now);
        }
        let args = String::from_utf8_lossy(&split.service_args()).into_owned();
        let fd_passing = self.cfg.fd_passing;
        let c = self.cmds.get_mut(id).expect("checked above");
        // Backoff is updated at every start (§4.5).
        let since = c.last_start.map(|t| now.duration_since(t).as_millis() as u64);
        c.backoff_ms = match since {
            Some(ms) if ms < 1000 => (c.backoff_ms * 2).min(MAX_BACKOFF),
            Some(ms) => (c.backoff_ms >> (ms / 1000).min(63)).max(MIN_BACKOFF),
            None => MIN_BACKOFF, // "never" counts as long ago
        };
        c.last_start = Some(now);
        c.exit_code = 0;
        c.pending_runid = Some(runid);
        c.start_deadline = Some(now + START_TIMEOUT);
        c.respawn_at = None;
        let (svc, handle) = (c.svc.clone(), c.handle.clone());
        let tags = tags::format(&c.def, runid);
        let take = fd_passing && !c.has_output;
        if take {
            c.has_output = true;
        }
        let lines = [format!("service.args\t{svc}\t{args}"), format!("service.tags\t{svc}\t{tags}")];
        if lines.iter().any(|l| l.len() > MAX_LINE) {
            return self.refuse_start(id, runid, "command line too long for daemonproxy", now);
        }
        if take {
            self.out.push(Action::TakeFd { id: id.to_string(), handle: handle.clone() });
        }
        let [a, t] = lines;
        self.send(a);
        if fd_passing {
            self.send(format!("service.fds\t{svc}\tnull\t{handle}\t{handle}"));
        } else {
            self.send(format!("service.fds\t{svc}\tnull\tnull\tnull"));
        }
        self.send(t);
        self.send(format!("service.start\t{svc}"));
    }

    /// `--allow-exec` (§4.6): refuse assignments of [`exec::DANGEROUS_ENV`]
    /// and a program whose real file no pattern allows; on success argv[0]
    /// becomes the absolute path judged, so daemonproxy runs that file and
    /// no other that a lookup of its own might find.
    fn judge_program(&self, split: &mut exec::Exec) -> Result<(), String> {
        if let Some((n, _)) = split.env.iter().find(|(n, _)| exec::dangerous_env(n)) {
            return Err(format!("assigning {n} is refused under --allow-exec"));
        }
        let word = &split.argv[0];
        let path = std::env::var_os("PATH");
        let program =
            exec::resolve(word, path.as_ref().map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())))?;
        if !split.env.is_empty() && program.run.as_os_str().as_encoded_bytes().contains(&b'=') {
            // env(1) would take it for one more assignment
            return Err(format!("program path {} contains '='", quote(&program.run.to_string_lossy())));
        }
        if !exec::allowed(&self.cfg.allow_exec, word, &program) {
            return Err(format!(
                "program {} ({}) is not allowed (--allow-exec)",
                quote(&String::from_utf8_lossy(word)),
                quote(&program.real.to_string_lossy())
            ));
        }
        split.argv[0] = std::os::unix::ffi::OsStrExt::as_bytes(program.run.as_os_str()).to_vec();
        Ok(())
    }

    fn refuse_start(&mut self, id: &str, runid: i32, why: &str, now: Instant) {
        self.notice(id, format!("not started: {why}"));
        if let Some(c) = self.cmds.get_mut(id) {
            c.pending_runid = Some(runid);
        }
        // Like a failed exec: the runid is taken, the run counts as ended,
        // so the sheriff does not retry forever (§4.6).
        if let Some(c) = self.cmds.get_mut(id) {
            c.respawn_at = None;
            c.should_run = c.should_run && !c.def.auto_respawn;
        }
        self.start_failed(id, now);
    }

    /// Stop command `id` (§4.7). `should_run` is the caller's: false for
    /// a force-quit, still true for a restart, which the exit completes
    /// (§4.5).
    fn stop(&mut self, id: &str, now: Instant) {
        let Some(c) = self.cmds.get_mut(id) else { return };
        c.respawn_at = None;
        if c.pending_runid.is_some() {
            c.stop_after_up = true;
            return;
        }
        if c.pid == 0 || c.stop.is_some() {
            return;
        }
        let (svc, pid, sig) = (c.svc.clone(), c.pid, c.def.stop_sig());
        c.stop = Some(Stop { pid, kill_at: now + Duration::from_millis(c.def.stop_ms()) });
        self.send(format!("service.signal\t{svc}\t{sig}"));
        self.out.push(Action::SignalTree { id: id.to_string(), root: pid, sig });
    }

    fn remove(&mut self, id: &str) {
        let Some(c) = self.cmds.remove(id) else { return };
        self.by_svc.remove(&c.svc);
        if !c.owned {
            return;
        }
        self.send(format!("service.delete\t{}", c.svc));
        if self.handles.contains(&c.handle) {
            self.send(format!("fd.delete\t{}", c.handle));
        }
        if c.has_output {
            self.out.push(Action::CloseOutput(id.to_string()));
        }
        self.out.push(Action::PublishInfo);
    }

    /// Timers: stop escalation, respawns, start timeouts. Returns the next
    /// time something is due.
    pub fn tick(&mut self, now: Instant) -> Option<Instant> {
        let due = |t: Option<Instant>| t.is_some_and(|t| now >= t);
        let ids: Vec<String> = self
            .cmds
            .iter()
            .filter(|(_, c)| due(c.stop.map(|s| s.kill_at)) || due(c.start_deadline) || due(c.respawn_at))
            .map(|(k, _)| k.clone())
            .collect();
        for id in &ids {
            let Some(c) = self.cmds.get_mut(id) else { continue };
            if let Some(st) = c.stop
                && now >= st.kill_at
            {
                if c.pid == st.pid && c.pid != 0 {
                    let (svc, pid) = (c.svc.clone(), c.pid);
                    c.stop = Some(Stop { pid, kill_at: now + Duration::from_secs(1) });
                    self.send(format!("service.signal\t{svc}\tSIGKILL"));
                    self.out.push(Action::SignalTree { id: id.clone(), root: pid, sig: libc::SIGKILL });
                } else {
                    c.stop = None;
                }
            }
            let Some(c) = self.cmds.get_mut(id) else { continue };
            if c.start_deadline.is_some_and(|t| now >= t) {
                self.notice(id, "no up from daemonproxy within 2 seconds; start failed");
                self.start_failed(id, now);
            }
            let Some(c) = self.cmds.get(id) else { continue };
            if c.respawn_at.is_some_and(|t| now >= t) && c.pid == 0 && c.pending_runid.is_none() {
                let r = c.actual_runid;
                self.start(id, r, now);
            }
        }
        self.cmds.values().flat_map(|c| [c.stop.map(|s| s.kill_at), c.start_deadline, c.respawn_at]).flatten().min()
    }

    // ----- orders -------------------------------------------------------------

    /// An orders message addressed to anyone (§4.4). `signed`: it carried a
    /// valid authentication trailer; `require_signed`: unsigned orders are
    /// refused. `now_wall_us`: the local wall clock.
    #[allow(clippy::too_many_arguments)]
    pub fn on_orders(
        &mut self,
        deputy_id: &str,
        sheriff_id: &str,
        utime: i64,
        orders: &[Order],
        signed: bool,
        require_signed: bool,
        now_wall_us: i64,
        now: Instant,
    ) {
        if self.shutting_down || deputy_id != self.cfg.id || self.syncing {
            return;
        }
        if require_signed && !signed {
            let t = format!("unsigned orders from {} ignored", quote(sheriff_id));
            return self.notice_limited(&["unsigned", sheriff_id], "", t, now);
        }
        if self.cfg.read_only {
            let t = format!("deputy {} is read-only; orders ignored", self.cfg.id);
            return self.notice_limited(&["ro", sheriff_id], "", t, now);
        }
        if !self.cfg.allow_sheriff.is_empty()
            && !self.cfg.allow_sheriff.iter().any(|g| crate::sys::fnmatch(g, sheriff_id.as_bytes()))
        {
            let t = format!("orders from sheriff {} ignored (not in --allow-sheriff)", quote(sheriff_id));
            return self.notice_limited(&["sheriff", sheriff_id], "", t, now);
        }
        if let Some(max) = self.cfg.max_order_age {
            let max_us = max.as_micros() as i64;
            let age_us = now_wall_us - utime;
            if age_us > max_us || -age_us > max_us {
                let secs = age_us / 1_000_000;
                for o in orders {
                    let t = format!(
                        "ignoring stale orders (utime {secs} seconds ago). You may want to check the system clocks!"
                    );
                    // Under the command's id if it could be one (as the
                    // stock deputy does), else under the deputy's.
                    let id = if tags::service_name(&o.def.id).is_ok() { o.def.id.as_str() } else { "" };
                    self.notice_limited(&["stale", sheriff_id, &o.def.id], id, t, now);
                }
                return;
            }
            self.last_orders.retain(|seen, _| now.duration_since(seen) <= max);
        }
        let sheriff = self.last_orders.key(&[sheriff_id]);
        if self.last_orders.get(sheriff).is_some_and(|&(_, u)| utime <= u) {
            return; // an older or repeated message: dropped silently
        }
        self.last_orders.insert(sheriff, now, utime);

        let before = self.snapshot();
        let mut listed = std::collections::HashSet::new();
        for o in orders {
            listed.insert(o.def.id.as_str());
        }
        // The report after these orders: local services and the listed
        // commands that exist; those created below are added one by one,
        // and refused once a report could not carry them.
        let mut load = Load::default();
        for c in self.cmds.values().filter(|c| !c.owned || listed.contains(c.def.id.as_str())) {
            load.count += 1;
            load.bytes += status_size(&c.def);
        }
        let mut full = (0, None);
        for o in orders {
            if !self.apply(o, (sheriff_id, sheriff), &mut load, now) {
                full.0 += 1;
                full.1.get_or_insert(o.def.id.as_str());
            }
        }
        if let (n, Some(first)) = full {
            let t = format!(
                "{n} command(s) refused, {} first: a deputy reports at most {MAX_REPORTED} commands in one \
                 message of at most 1 MiB (local services included)",
                quote(first)
            );
            self.notice_limited(&["full"], "", t, now);
        }
        // A local service this sheriff listed and now leaves out was removed
        // by it: no longer reported while it is the current sheriff (a stock
        // sheriff forgets a removed command only when a report leaves it
        // out). The service itself is never touched.
        let mut reported_changed = self.current_sheriff != Some(sheriff);
        for c in self.cmds.values_mut().filter(|c| !c.owned && !listed.contains(c.def.id.as_str())) {
            if let Some(i) = c.listed_by.iter().position(|&k| k == sheriff) {
                c.listed_by.remove(i);
                remember(&mut c.dismissed_by, sheriff);
                reported_changed = true;
            }
        }
        self.current_sheriff = Some(sheriff);
        if reported_changed {
            self.out.push(Action::PublishInfo);
        }
        // Removal of owned commands no longer listed.
        let absent: Vec<String> =
            self.cmds.iter().filter(|(k, c)| c.owned && !listed.contains(k.as_str())).map(|(k, _)| k.clone()).collect();
        for id in absent {
            let c = &self.cmds[&id];
            if c.pid != 0 || c.pending_runid.is_some() {
                self.cmds.get_mut(&id).expect("listed above").remove_requested = true;
                self.stop(&id, now);
            } else {
                self.remove(&id);
            }
        }
        if self.snapshot() != before {
            self.out.push(Action::PublishInfo);
        }
    }

    /// What orders can change, to tell whether they did.
    fn snapshot(&self) -> Vec<Snapshot> {
        self.cmds
            .iter()
            .map(|(k, c)| {
                (
                    k.clone(),
                    c.actual_runid,
                    c.desired,
                    c.should_run,
                    c.remove_requested,
                    c.stop.is_some(),
                    c.pending_runid,
                )
            })
            .collect()
    }

    /// One order; false if a report could not carry the command it would
    /// create or the definition it would grow to (`load`: see
    /// [`MAX_REPORTED`]), so it was refused.
    fn apply(&mut self, o: &Order, sheriff: (&str, u64), load: &mut Load, now: Instant) -> bool {
        let id = &o.def.id;
        let budget = report_budget(&self.cfg.id);
        if let Some(c) = self.cmds.get(id)
            && !c.owned
        {
            self.apply_local(o, sheriff, now);
            return true;
        }
        // An order in group `local` naming a service the deputy does not
        // report (its own, a controller, or any under --local hide): a
        // sheriff that adopted it from an earlier report. Creating a
        // command of that id would run a copy of it (a second bridge).
        if o.def.group == "local"
            && !self.cmds.contains_key(id)
            && self.services.get(id).is_some_and(|v| tags::parse(&v.tags).is_none())
        {
            let t = format!(
                "{} is a service of this daemonproxy that this deputy does not report; orders about it are ignored",
                quote(id)
            );
            self.notice_once(&["unreported", sheriff.0, id], id, t, now);
            return true;
        }
        let size = status_size(&o.def);
        if !self.cmds.contains_key(id) {
            if load.count >= MAX_REPORTED || load.bytes + size > budget {
                return false;
            }
            if !self.create(&o.def, now) {
                return true;
            }
            *load = Load { count: load.count + 1, bytes: load.bytes + size };
        }
        let mut accepted = true;
        let c = self.cmds.get_mut(id).expect("created above");
        let (svc, runid) = (c.svc.clone(), c.pending_runid.unwrap_or(c.actual_runid));
        let grown = (load.bytes - status_size(&c.def).min(load.bytes)) + size;
        // A new definition is adopted only if its tags fit a command line:
        // daemonproxy would refuse a longer one, and the tags it keeps (what
        // a restarted bridge resumes from) would no longer match ours. And
        // only if the report can still carry it.
        let retag = (c.def != o.def).then(|| format!("service.tags\t{svc}\t{}", tags::format(&o.def, runid)));
        match retag {
            Some(line) if line.len() > MAX_LINE => self.refuse_long_definition(id, now),
            Some(_) if grown > budget => accepted = false, // the old definition is kept
            Some(line) => {
                c.def = o.def.clone();
                load.bytes = grown;
                self.send(line);
            }
            None => {}
        }
        let c = self.cmds.get_mut(id).expect("created above");
        c.should_run = !o.force_quit;
        c.desired = o.desired_runid;
        let c = &self.cmds[id];
        let running = c.pid != 0 || c.pending_runid.is_some();
        let effective = c.pending_runid.unwrap_or(c.actual_runid);
        if !running && o.desired_runid != 0 && c.actual_runid != o.desired_runid && c.should_run {
            self.start(id, o.desired_runid, now);
        } else if running && (!c.should_run || (o.desired_runid != effective && o.desired_runid != 0)) {
            self.stop(id, now);
        } else if o.desired_runid != 0 && !running {
            let c = self.cmds.get_mut(id).expect("exists");
            c.actual_runid = o.desired_runid;
            if !c.should_run {
                c.respawn_at = None;
            }
        } else if o.desired_runid != 0 {
            let c = self.cmds.get_mut(id).expect("exists");
            if c.pending_runid.is_none() {
                c.actual_runid = o.desired_runid;
            }
        }
        if self.cmds.get(id).is_some_and(|c| !c.should_run) {
            self.cmds.get_mut(id).expect("exists").respawn_at = None;
        }
        accepted
    }

    /// An order about a local service (§4.1). Under `observe` nothing is
    /// done: a start or restart has its runid adopted, so the sheriff shows
    /// what is true (`Running` for a running service, `Stopped` for a
    /// stopped one), and an order that asked for a change is answered once
    /// per sheriff, service and order, not again while it is repeated.
    /// Under `control` it is started or stopped; a stop also turns its
    /// auto-up off (else daemonproxy would start it again at once), and the
    /// next start puts it back.
    fn apply_local(&mut self, o: &Order, sheriff: (&str, u64), now: Instant) {
        let id = o.def.id.clone();
        let control = self.cfg.local == LocalMode::Control;
        let c = self.cmds.get_mut(&id).expect("caller checked");
        remember(&mut c.listed_by, sheriff.1);
        c.dismissed_by.retain(|&k| k != sheriff.1);
        if !control {
            let running = c.pid != 0;
            let change = if o.force_quit { running } else { o.desired_runid != 0 && o.desired_runid != c.actual_runid };
            c.desired = o.desired_runid;
            if o.desired_runid != 0 {
                c.actual_runid = o.desired_runid;
            }
            if change {
                let t = format!("{} is not a procman command of this deputy; orders about it are ignored", quote(&id));
                let (runid, quit) = (o.desired_runid.to_string(), if o.force_quit { "stop" } else { "start" });
                self.notice_once(&["local", sheriff.0, &id, quit, &runid], &id, t, now);
            }
            return;
        }
        c.should_run = !o.force_quit;
        c.desired = o.desired_runid;
        let running = c.pid != 0 || c.pending_runid.is_some();
        if !c.should_run && c.saved_auto_up.is_none() {
            let raw = self.services.get(&c.svc).filter(|v| v.auto_up).map(|v| String::from_utf8_lossy(&v.auto_up_raw));
            if let Some(raw) = raw {
                c.saved_auto_up = Some(raw.into_owned());
                let svc = c.svc.clone();
                self.send(format!("service.auto_up\t{svc}\t-"));
            }
        }
        let c = self.cmds.get_mut(&id).expect("caller checked");
        if !running && c.should_run && o.desired_runid != 0 && o.desired_runid != c.actual_runid {
            self.start(&id, o.desired_runid, now);
        } else if running && !c.should_run {
            self.stop(&id, now);
        } else if o.desired_runid != 0 && c.pending_runid.is_none() {
            c.actual_runid = o.desired_runid;
        }
    }

    /// Create command `def` (§4.4 5.1); false (with a notice) if refused.
    fn create(&mut self, def: &Def, now: Instant) -> bool {
        let svc = match tags::service_name(&def.id) {
            Ok(s) => s,
            Err(e) => {
                let t = format!("command {} refused: {e}", quote(&def.id));
                self.notice_limited(&["id", &def.id], "", t, now);
                return false;
            }
        };
        if let Some(v) = self.services.get(&svc) {
            let ours = tags::parse(&v.tags).is_some_and(|(d, _)| d.id == def.id);
            if !ours {
                let t = format!("command {} refused: service {svc} exists and is not this command's", quote(&def.id));
                self.notice_limited(&["clash", &def.id], &def.id, t, now);
                return false;
            }
        }
        let c = new_command(def.clone(), svc.clone(), true);
        let t = tags::format(def, 0);
        let line = format!("service.tags\t{svc}\t{t}");
        if line.len() > MAX_LINE {
            self.refuse_long_definition(&def.id, now);
            return false;
        }
        if let Ok(mut e) = exec::split_env(def.exec.as_bytes())
            && (self.cfg.allow_exec.is_empty() || self.judge_program(&mut e).is_ok())
        {
            let a = format!("service.args\t{svc}\t{}", String::from_utf8_lossy(&e.service_args()));
            if a.len() <= MAX_LINE {
                self.send(a);
            }
        }
        self.send(line);
        self.by_svc.insert(svc, def.id.clone());
        self.cmds.insert(def.id.clone(), c);
        true
    }

    // ----- reporting ----------------------------------------------------------

    /// The commands as `deputy_info_t` lists them (§4.3).
    pub fn statuses(&self) -> Vec<Status> {
        self.cmds.values().filter(|c| self.reported(c)).map(status).collect()
    }

    /// Not a local service the current sheriff removed.
    fn reported(&self, c: &Command) -> bool {
        c.owned || self.current_sheriff.is_none_or(|s| !c.dismissed_by.contains(&s))
    }

    /// The commands a `deputy_info_t` carries: [`Deputy::statuses`] up to
    /// [`MAX_REPORTED`] and [`report_budget`] (orders never make more, but
    /// local services can appear later): owned commands first, then local
    /// services, then commands being removed. Also how many were left out.
    pub fn report(&self) -> (Vec<Status>, usize) {
        let budget = report_budget(&self.cfg.id);
        let rank = |c: &Command| if c.remove_requested { 2 } else { u8::from(!c.owned) };
        let (mut list, mut bytes, mut left_out) = (Vec::new(), 0, 0);
        for r in 0..3 {
            for c in self.cmds.values().filter(|c| rank(c) == r && self.reported(c)) {
                let size = status_size(&c.def);
                if list.len() < MAX_REPORTED && bytes + size <= budget {
                    bytes += size;
                    list.push(status(c));
                } else {
                    left_out += 1;
                }
            }
        }
        (list, left_out)
    }

    /// Take the queued actions.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    /// Owned commands that are running or starting (for `--stop-on-exit`).
    pub fn running(&self) -> impl Iterator<Item = &Command> {
        self.cmds.values().filter(|c| c.owned && (c.pid != 0 || c.pending_runid.is_some()))
    }

    /// Stop every owned command (`--stop-on-exit`).
    pub fn stop_all(&mut self, now: Instant) {
        let ids: Vec<String> = self.cmds.iter().filter(|(_, c)| c.owned).map(|(k, _)| k.clone()).collect();
        for id in ids {
            if let Some(c) = self.cmds.get_mut(&id) {
                c.should_run = false;
            }
            self.stop(&id, now);
        }
    }
}

/// Command `c` as `deputy_info_t` lists it (§4.3).
fn status(c: &Command) -> Status {
    let up = c.pid != 0;
    Status {
        def: c.def.clone(),
        pid: c.pid,
        actual_runid: c.actual_runid,
        exit_code: c.exit_code,
        cpu: if up { c.cpu } else { 0.0 },
        vsize: if up { c.vsize } else { 0 },
        rss: if up { c.rss } else { 0 },
    }
}

fn new_command(def: Def, svc: String, owned: bool) -> Command {
    let handle = tags::output_handle(&svc);
    Command {
        def,
        svc,
        handle,
        owned,
        pid: 0,
        actual_runid: 0,
        pending_runid: None,
        start_deadline: None,
        desired: 0,
        should_run: true,
        exit_code: 0,
        remove_requested: false,
        backoff_ms: MIN_BACKOFF,
        last_start: None,
        respawn_at: None,
        stop: None,
        stop_after_up: false,
        descendants: Vec::new(),
        has_output: false,
        listed_by: Vec::new(),
        dismissed_by: Vec::new(),
        saved_auto_up: None,
        cpu: 0.0,
        vsize: 0,
        rss: 0,
    }
}

/// Add `key` to `list`, forgetting the oldest beyond [`MAX_LISTERS`].
fn remember(list: &mut Vec<u64>, key: u64) {
    if !list.contains(&key) {
        if list.len() >= MAX_LISTERS {
            list.remove(0);
        }
        list.push(key);
    }
}

/// The C library's description of a signal (`Terminated`) for a wait
/// status that is a signal number.
pub fn strsignal(sig: i32) -> String {
    crate::sys::strsignal(sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            id: "d1".into(),
            read_only: false,
            local: LocalMode::Observe,
            allow_sheriff: vec![],
            allow_exec: vec![],
            max_order_age: Some(Duration::from_secs(60)),
            fd_passing: true,
            max_output_rate: 1 << 20,
        }
    }

    fn def(id: &str, exec: &str, respawn: bool) -> Def {
        Def {
            id: id.into(),
            exec: exec.into(),
            group: "g".into(),
            auto_respawn: respawn,
            stop_signal: 15,
            stop_time_allowed: 2.0,
        }
    }

    struct T {
        d: Deputy,
        t0: Instant,
        utime: i64,
    }

    const WALL: i64 = 1_800_000_000_000_000;

    impl T {
        fn new(c: Config) -> T {
            let mut d = Deputy::new(c);
            d.begin_sync();
            let t0 = Instant::now();
            d.synced(t0);
            d.take_actions();
            T { d, t0, utime: WALL }
        }
        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }
        fn orders(&mut self, ms: u64, list: &[(Def, i32, bool)]) -> Vec<Action> {
            self.utime += 1000;
            let o: Vec<Order> =
                list.iter().map(|(d, r, q)| Order { def: d.clone(), desired_runid: *r, force_quit: *q }).collect();
            let now = self.at(ms);
            self.d.on_orders("d1", "s:1:1", self.utime, &o, false, false, self.utime, now);
            self.d.take_actions()
        }
        /// A deputy that synced with these services (event lines).
        fn with(c: Config, lines: &[&str]) -> T {
            let mut d = Deputy::new(c);
            d.own_pids = vec![4000, 3999];
            d.begin_sync();
            let t0 = Instant::now();
            for l in lines {
                d.on_event(&Event::parse(l.as_bytes()), t0);
            }
            d.synced(t0);
            d.take_actions();
            T { d, t0, utime: WALL }
        }
        fn orders_from(&mut self, sheriff: &str, ms: u64, list: &[(Def, i32, bool)]) -> Vec<Action> {
            self.utime += 1000;
            let o: Vec<Order> =
                list.iter().map(|(d, r, q)| Order { def: d.clone(), desired_runid: *r, force_quit: *q }).collect();
            let now = self.at(ms);
            self.d.on_orders("d1", sheriff, self.utime, &o, false, false, self.utime, now);
            self.d.take_actions()
        }
        fn ids(&self) -> Vec<String> {
            self.d.report().0.into_iter().map(|s| s.def.id).collect()
        }
        fn event(&mut self, ms: u64, line: &str) -> Vec<Action> {
            let now = self.at(ms);
            self.d.on_event(&Event::parse(line.as_bytes()), now);
            self.d.take_actions()
        }
        fn tick(&mut self, ms: u64) -> Vec<Action> {
            let now = self.at(ms);
            self.d.tick(now);
            self.d.take_actions()
        }
        fn status(&self, id: &str) -> Status {
            self.d.statuses().into_iter().find(|s| s.def.id == id).expect("listed")
        }
    }

    fn sends(a: &[Action]) -> Vec<String> {
        a.iter()
            .filter_map(|x| match x {
                Action::Send(l) => Some(l.split('\t').take(2).collect::<Vec<_>>().join(" ")),
                Action::TakeFd { handle, .. } => Some(format!("fd.take {handle}")),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn create_start_up_stop_escalate() {
        let mut t = T::new(cfg());
        let x = def("x", "sleep 100", false);
        let a = t.orders(0, &[(x.clone(), 1, false)]);
        assert_eq!(
            sends(&a),
            [
                "service.args pm.x",
                "service.tags pm.x",
                "fd.take pm.x.out",
                "service.args pm.x",
                "service.fds pm.x",
                "service.tags pm.x",
                "service.start pm.x"
            ]
        );
        assert!(a.contains(&Action::Send("service.fds\tpm.x\tnull\tpm.x.out\tpm.x.out".into())));
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::Send(l) if l.starts_with("service.tags\tpm.x\tprocman\tid=x\trunid=1\t")))
        );
        assert!(a.contains(&Action::PublishInfo));
        // never report a start early
        assert_eq!((t.status("x").pid, t.status("x").actual_runid), (0, 0));
        // the same orders again change nothing
        assert!(sends(&t.orders(100, &[(x.clone(), 1, false)])).is_empty());
        let a = t.event(150, "service.state\tpm.x\tup\t5\t4242\t-\t-\t0\t-");
        assert!(a.contains(&Action::PublishInfo));
        assert_eq!((t.status("x").pid, t.status("x").actual_runid), (4242, 1));
        // stop: soft signal as a number, descendants too, SIGKILL on a local timer
        let a = t.orders(200, &[(x.clone(), 1, true)]);
        assert!(a.contains(&Action::Send("service.signal\tpm.x\t15".into())));
        assert!(a.contains(&Action::SignalTree { id: "x".into(), root: 4242, sig: 15 }));
        assert!(sends(&t.tick(2100)).is_empty());
        let a = t.tick(2201);
        assert!(a.contains(&Action::Send("service.signal\tpm.x\tSIGKILL".into())), "{a:?}");
        assert!(a.contains(&Action::SignalTree { id: "x".into(), root: 4242, sig: 9 }));
        t.d.record_descendants("x", vec![(4300, 77)]);
        let a = t.event(2300, "service.state\tpm.x\tdown\t7\t4242\tsignal\tSIGKILL\t2\t0");
        assert!(a.contains(&Action::DrainOutput("x".into())));
        assert!(a.contains(&Action::KillOrphans(vec![(4300, 77)])));
        assert!(a.contains(&Action::Notice("x".into(), "Killed\n".into())));
        assert!(sends(&a).is_empty(), "a stopped command is not restarted: {a:?}");
        let s = t.status("x");
        assert_eq!((s.pid, s.actual_runid, s.exit_code), (0, 1, 9));
    }

    /// Found by fuzzing (fuzz/fuzz_targets/bridge_orders.rs): a new
    /// definition whose tags do not fit a command line was sent anyway, so
    /// daemonproxy refused it and kept tags that no longer matched.
    #[test]
    fn redefinition_too_long_for_a_command_line_is_refused() {
        let mut t = T::new(cfg());
        let x = def("x", "sleep 100", false);
        t.orders(0, &[(x.clone(), 0, false)]);
        let long = def("x", &format!("sleep {}", "1".repeat(1100)), false);
        let a = t.orders(10, &[(long, 0, false)]);
        assert!(a.iter().all(|x| !matches!(x, Action::Send(l) if l.len() > MAX_LINE)), "{a:?}");
        assert!(
            a.iter().any(|x| matches!(x, Action::Notice(_, n) if n.contains("definition too long"))),
            "no notice: {a:?}"
        );
        assert_eq!(t.status("x").def, x, "the old definition is kept");
        let y = def("x", "sleep 200", false);
        let a = t.orders(20, &[(y.clone(), 0, false)]);
        assert!(a.iter().any(|x| matches!(x, Action::Send(l) if l.starts_with("service.tags\tpm.x\t"))));
        assert_eq!(t.status("x").def, y, "a definition that fits is adopted");
    }

    /// Found by fuzzing: an event line naming an invalid service (not one
    /// daemonproxy sends) made a local command whose start line was
    /// malformed (`service.start\t`).
    #[test]
    fn events_with_invalid_names_are_ignored() {
        let mut c = cfg();
        c.local = LocalMode::Control;
        let mut t = T::new(c);
        t.event(0, "service.state\t\tdown\t-\t-\t-\t-\t-\t-");
        t.event(0, "service.args\tbad name\tsleep\t1");
        assert!(t.d.services.is_empty(), "{:?}", t.d.services.keys().collect::<Vec<_>>());
        t.event(0, "service.args\tok\tsleep\t1");
        assert!(t.d.services.contains_key("ok"));
    }

    #[test]
    fn restart_exit_code_and_adoption() {
        let mut t = T::new(cfg());
        let x = def("x", "sh -c 'exit 3'", false);
        t.orders(0, &[(x.clone(), 1, false)]);
        t.event(10, "service.state\tpm.x\tup\t5\t100\t-\t-\t0\t-");
        // restart while running: stop, then start with the new runid on down
        let a = t.orders(20, &[(x.clone(), 2, false)]);
        assert!(a.contains(&Action::Send("service.signal\tpm.x\t15".into())));
        let a = t.event(30, "service.state\tpm.x\tdown\t5\t100\texit\t3\t0\t0");
        assert!(a.contains(&Action::Send("service.start\tpm.x".into())), "{a:?}");
        assert!(!a.iter().any(|x| matches!(x, Action::TakeFd { .. })), "the pty is kept");
        assert_eq!(t.status("x").exit_code, 0, "0 at each start");
        t.event(40, "service.state\tpm.x\tup\t5\t101\t-\t-\t0\t-");
        t.event(50, "service.state\tpm.x\tdown\t5\t101\texit\t3\t0\t0");
        let s = t.status("x");
        assert_eq!((s.pid, s.actual_runid, s.exit_code), (0, 2, 768));
        // desired 0 = no opinion: nothing starts, the runid stays
        assert!(sends(&t.orders(60, &[(x.clone(), 0, false)])).is_empty());
        assert_eq!(t.status("x").actual_runid, 2);
        // a stopped command with another desired runid and force_quit adopts it
        assert!(sends(&t.orders(70, &[(x.clone(), 5, true)])).is_empty());
        assert_eq!(t.status("x").actual_runid, 5);
    }

    #[test]
    fn respawn_backoff_doubles_and_failed_start() {
        let mut t = T::new(cfg());
        let x = def("x", "false", true);
        t.orders(0, &[(x.clone(), 1, false)]);
        let mut at = 0;
        let mut waits = Vec::new();
        for pid in 100..105 {
            t.event(at + 1, &format!("service.state\tpm.x\tup\t5\t{pid}\t-\t-\t0\t-"));
            t.event(at + 2, &format!("service.state\tpm.x\tdown\t5\t{pid}\texit\t1\t0\t0"));
            let due = t.d.cmds["x"].respawn_at.expect("respawn scheduled");
            let wait = due.duration_since(t.at(at + 2)).as_millis() as u64;
            waits.push(wait);
            assert!(sends(&t.tick(at + 2 + wait - 1)).is_empty());
            at += 2 + wait;
            let a = t.tick(at);
            assert!(a.contains(&Action::Send("service.start\tpm.x".into())));
            assert!(a.iter().any(|x| matches!(x, Action::Send(l) if l.contains("\trunid=1\t"))), "same runid");
        }
        assert_eq!(waits, [10, 20, 40, 80, 160]);
        // no up within 2 s: the start failed (exit code 0xff00), counted as an exit
        let a = t.tick(at + 2001);
        assert!(a.iter().any(|x| matches!(x, Action::Notice(id, _) if id == "x")));
        assert_eq!(t.status("x").exit_code, 0xff00);
        assert!(t.d.cmds["x"].respawn_at.is_some());
    }

    #[test]
    fn removal_waits_for_the_stop() {
        let mut t = T::new(cfg());
        let (x, y) = (def("x", "sleep 9", false), def("y", "true", false));
        t.orders(0, &[(x.clone(), 1, false), (y.clone(), 0, false)]);
        t.event(5, "fd.state\tpm.x.out\tfile\tread,write\tunknown");
        t.event(10, "service.state\tpm.x\tup\t5\t100\t-\t-\t0\t-");
        let a = t.orders(20, &[]);
        assert!(a.contains(&Action::Send("service.delete\tpm.y".into())), "a stopped one goes at once: {a:?}");
        assert!(a.contains(&Action::Send("service.signal\tpm.x\t15".into())));
        assert!(t.d.cmds.contains_key("x"), "listed until it stopped");
        let a = t.event(30, "service.state\tpm.x\tdown\t5\t100\tsignal\tSIGTERM\t0\t0");
        assert_eq!(sends(&a), ["service.delete pm.x", "fd.delete pm.x.out"]);
        assert!(a.contains(&Action::CloseOutput("x".into())));
        assert!(t.d.statuses().is_empty());
    }

    #[test]
    fn gates_age_and_order() {
        let mut t = T::new(cfg());
        let x = def("x", "sleep 1", false);
        let o = [Order { def: x.clone(), desired_runid: 1, force_quit: false }];
        // 61 s old, and 61 s ahead
        for (s, u) in [("s1", WALL - 61_000_000), ("s2", WALL + 61_000_000)] {
            t.d.on_orders("d1", s, u, &o, false, false, WALL, t.at(0));
            let a = t.d.take_actions();
            assert!(
                matches!(&a[..], [Action::Notice(id, m)] if id == "x" && m.contains("ignoring stale orders")),
                "{a:?}"
            );
        }
        // someone else's orders
        t.d.on_orders("d2", "s", WALL, &o, false, false, WALL, t.at(0));
        assert!(t.d.take_actions().is_empty());
        // unsigned under require
        t.d.on_orders("d1", "s", WALL, &o, false, true, WALL, t.at(0));
        assert!(matches!(&t.d.take_actions()[..], [Action::Notice(id, _)] if id.is_empty()));
        // accepted, then an older one is dropped silently
        t.d.on_orders("d1", "s", WALL, &o, true, true, WALL, t.at(0));
        assert!(!sends(&t.d.take_actions()).is_empty());
        let stop = [Order { def: x.clone(), desired_runid: 1, force_quit: true }];
        t.d.on_orders("d1", "s", WALL - 1, &stop, true, true, WALL, t.at(1));
        assert!(t.d.take_actions().is_empty());
        assert!(t.d.cmds["x"].should_run);
    }

    #[test]
    fn read_only_allow_lists() {
        let mut c = cfg();
        c.read_only = true;
        let mut t = T::new(c);
        let a = t.orders(0, &[(def("x", "sleep 1", false), 1, false)]);
        assert!(matches!(&a[..], [Action::Notice(_, m)] if m == "deputy d1 is read-only; orders ignored\n"));
        assert!(t.orders(10, &[(def("x", "sleep 1", false), 1, false)]).is_empty(), "once per 30 s");
        assert!(t.d.cmds.is_empty());

        let mut c = cfg();
        c.allow_sheriff = vec!["other:*".into()];
        let mut t = T::new(c);
        let a = t.orders(0, &[(def("x", "sleep 1", false), 1, false)]);
        assert!(sends(&a).is_empty() && !a.is_empty());

        let mut c = cfg();
        c.allow_exec = vec!["/nonexistent-dir/*".into(), "sleep".into()];
        let mut t = T::new(c);
        let a = t.orders(0, &[(def("ok", "sleep 1", false), 1, false), (def("no", "rm -rf x", false), 1, false)]);
        assert!(a.contains(&Action::Send("service.start\tpm.ok".into())));
        assert!(!a.contains(&Action::Send("service.start\tpm.no".into())));
        assert!(a.iter().any(|x| matches!(x, Action::Notice(id, m) if id == "no" && m.contains("not allowed"))));
        assert_eq!(t.status("no").exit_code, 0xff00);
        // the allowed program is sent as the absolute path that was judged
        let args = a.iter().find_map(|x| match x {
            Action::Send(l) if l.starts_with("service.args\tpm.ok\t") => Some(l.clone()),
            _ => None,
        });
        let args = args.expect("args sent");
        assert!(args.starts_with("service.args\tpm.ok\t/") && args.ends_with("/sleep\t1"), "{args}");
        let a = t.orders(10, &[(def("ld", "LD_PRELOAD=x.so sleep 1", false), 1, false)]);
        assert!(a.iter().any(|x| matches!(x, Action::Notice(id, m) if id == "ld" && m.contains("LD_"))));
        // issue 14 #6: a PATH of the sender's choosing is refused too
        let a = t.orders(20, &[(def("path", "PATH=/tmp/evil:/usr/bin sleep 1", false), 1, false)]);
        assert!(!a.contains(&Action::Send("service.start\tpm.path".into())), "{a:?}");
        assert!(a.iter().any(|x| matches!(x, Action::Notice(id, m) if id == "path" && m.contains("PATH"))));
    }

    /// Issue 14 #4: refused orders from ever new sheriff ids (64 KiB each)
    /// grew the notice table without bound and quoted the ids whole.
    #[test]
    fn refusal_notices_are_bounded() {
        for gate in ["unsigned", "read-only", "sheriff", "stale", "signature"] {
            let mut c = cfg();
            c.read_only = gate == "read-only";
            c.allow_sheriff = if gate == "sheriff" { vec!["legit:*".into()] } else { vec![] };
            let mut t = T::new(c);
            let mut notices = 0;
            for i in 0..2000u64 {
                let sheriff = format!("s{i}:{}", "x".repeat(60_000));
                let long_id = format!("c{i}:{}", "y".repeat(60_000));
                let o = [Order { def: def(&long_id, "true", false), desired_runid: 1, force_quit: false }];
                let now = t.at(i); // 2 s in all: two windows of NOTICE_BURST
                let utime = if gate == "stale" { WALL - 120_000_000 } else { WALL };
                match gate {
                    "signature" => t.d.refuse_orders(&sheriff, "mac", "bad signature", now),
                    _ => t.d.on_orders("d1", &sheriff, utime, &o, false, gate == "unsigned", WALL, now),
                }
                for a in t.d.take_actions() {
                    let Action::Notice(id, m) = a else { panic!("{gate}: {a:?}") };
                    assert!(id.is_empty(), "{gate}: a notice under a 60 KB id");
                    assert!(m.len() <= 200, "{gate}: {} bytes: {}", m.len(), &m[..100]);
                    notices += 1;
                }
                assert!(t.d.noticed.len() <= NOTICE_KEYS && t.d.last_orders.len() <= MAX_SHERIFFS, "{gate}");
            }
            assert!((2..=2 * NOTICE_BURST as usize).contains(&notices), "{gate}: {notices} notices");
            assert!(t.d.cmds.is_empty(), "{gate}");
        }
    }

    /// Issue 14 #10: 10,000 ordered commands and one local service made a
    /// report that could not be sent, and the deputy fell silent.
    #[test]
    fn no_more_commands_than_a_report_carries() {
        let mut d = Deputy::new(cfg());
        let now = Instant::now();
        d.begin_sync();
        d.on_event(&Event::parse(b"service.state\tbridge\tup\t5\t300\t-\t-\t9\t-"), now);
        d.synced(now);
        d.take_actions();
        let o: Vec<Order> = (0..MAX_REPORTED + 5)
            .map(|i| Order { def: def(&format!("c{i:05}"), "true", false), desired_runid: 0, force_quit: false })
            .collect();
        d.on_orders("d1", "s", WALL, &o, false, false, WALL, now);
        let a = d.take_actions();
        let (list, left_out) = d.report();
        assert_eq!((list.len(), left_out, d.cmds.len()), (MAX_REPORTED, 0, MAX_REPORTED));
        assert!(
            a.iter().any(|x| matches!(x, Action::Notice(id, m) if id.is_empty() && m.starts_with("6 command(s) refused, c09999 first"))),
            "{:?}",
            a.iter().filter(|x| matches!(x, Action::Notice(..))).collect::<Vec<_>>()
        );
        // bytes too: definitions that add up to more than a message
        let mut d = Deputy::new(cfg());
        d.begin_sync();
        d.synced(now);
        let exec = format!("sleep {}", "1".repeat(900));
        let o: Vec<Order> = (0..2000)
            .map(|i| Order { def: def(&format!("c{i:04}"), &exec, false), desired_runid: 0, force_quit: false })
            .collect();
        d.on_orders("d1", "s", WALL, &o, false, false, WALL, now);
        let bytes: usize = d.report().0.iter().map(|s| status_size(&s.def)).sum();
        assert!(d.cmds.len() < 2000 && bytes <= report_budget("d1"), "{} commands, {bytes} bytes", d.cmds.len());
        assert!(report_budget("d1") - bytes < status_size(&o[0].def), "filled up to the last that fits");
    }

    /// daemonproxy's services as a statedump shows them: the bridge (a
    /// controller service), another controller, a service running the
    /// bridge's parent (pid 3999, see `T::with`), and two ordinary ones.
    const LOCALS: &[&str] = &[
        "service.state\tbridge\tup\t5\t4000\t-\t-\t9\t-",
        "service.fds\tbridge\tcontrol.socket\tcontrol.socket\tstderr",
        "service.auto_up\tbridge\t1\talways",
        "service.state\tshutdown\tup\t5\t302\t-\t-\t9\t-",
        "service.fds\tshutdown\tcontrol.event\tcontrol.cmd\tstderr",
        "service.state\twrapper\tup\t5\t3999\t-\t-\t9\t-",
        "service.fds\twrapper\tnull\tnull\tstderr",
        "service.state\tweb\tup\t5\t301\t-\t-\t9\t-",
        "service.args\tweb\tsleep\t60",
        "service.fds\tweb\tnull\tnull\tstderr",
        "service.auto_up\tweb\t1\talways",
        "service.state\tjob\tdown\t5\t303\texit\t0\t9\t9",
        "service.args\tjob\ttrue",
    ];

    /// A deputy under `--local mode` that synced with [`LOCALS`].
    fn in_mode(mode: LocalMode) -> T {
        let mut c = cfg();
        c.local = mode;
        T::with(c, LOCALS)
    }

    fn local(id: &str) -> Def {
        Def { group: "local".into(), stop_signal: 15, stop_time_allowed: 7.0, ..def(id, "x", false) }
    }

    /// Issue 15 §2: the bridge reported its own controller service, a stock
    /// sheriff adopted it and ordered it stopped with everything else;
    /// under --local control the bridge then stopped itself, again and
    /// again. Controllers and the service running the bridge are never
    /// reported, and a stale order about one creates nothing.
    #[test]
    fn own_service_and_controllers_are_never_reported() {
        for mode in [LocalMode::Observe, LocalMode::Control] {
            let mut t = in_mode(mode);
            assert_eq!(t.ids(), ["job", "web"], "{mode:?}");
            // A sheriff that adopted them from an older bridge orders them stopped.
            let all: Vec<(Def, i32, bool)> =
                ["bridge", "shutdown", "wrapper"].iter().map(|i| (local(i), 0, true)).collect();
            for k in 0..3 {
                let a = t.orders(k * 1000, &all);
                assert!(sends(&a).is_empty(), "{mode:?}: {a:?}");
                let n = a.iter().filter(|x| matches!(x, Action::Notice(..))).count();
                assert_eq!(n, if k == 0 { 3 } else { 0 }, "{mode:?}: answered once: {a:?}");
            }
            assert_eq!(t.ids(), ["job", "web"], "{mode:?}");
            // A controller made later is dropped from the report.
            t.event(5000, "service.fds\tweb\tcontrol.socket\tcontrol.socket\tstderr");
            assert_eq!(t.ids(), ["job"], "{mode:?}");
        }
        let mut t = in_mode(LocalMode::Hide);
        assert!(t.ids().is_empty());
        // Under hide too, an order in group local about a service that exists
        // does not start a copy of it as a procman command.
        let a = t.orders(0, &[(local("web"), 1, false)]);
        assert!(sends(&a).is_empty(), "{a:?}");
        // A procman command of that id in another group is created as ever.
        let a = t.orders(10, &[(def("web", "sleep 1", false), 1, false)]);
        assert!(a.contains(&Action::Send("service.start\tpm.web".into())), "{a:?}");
    }

    /// Issue 15 §2: the notice about an order the deputy does not obey was
    /// repeated every 30 s for as long as the sheriff kept sending it.
    #[test]
    fn orders_about_a_local_service_are_answered_once() {
        let mut t = in_mode(LocalMode::Observe);
        let notices = |a: &[Action]| a.iter().filter(|x| matches!(x, Action::Notice(id, _) if id == "web")).count();
        let mut n = 0;
        for k in 0..5 {
            n += notices(&t.orders(k * 31_000, &[(local("web"), 0, true)]));
        }
        assert_eq!(n, 1, "a stop repeated for two minutes is answered once");
        // Another order (a start) is answered, once too.
        let mut m = 0;
        for k in 5..8 {
            m += notices(&t.orders(k * 31_000, &[(local("web"), 1, false)]));
        }
        assert_eq!(m, 1);
        // Another sheriff gets its own answer.
        assert_eq!(notices(&t.orders_from("other:1:1", 300_000, &[(local("web"), 0, true)])), 1);
        // An order that asks nothing (an adoption, a stop of a stopped one) gets none.
        assert_eq!(notices(&t.orders(301_000, &[(local("job"), 0, false), (local("job"), 0, true)])), 0);
    }

    /// Issue 16 #14b: after a stop, a start of the running local services
    /// left them "Restarting (Command Sent)" in every sheriff: their runid
    /// was always reported 0. A start's runid is adopted, so a stock
    /// sheriff shows Running for a running service and Stopped for a
    /// stopped one.
    #[test]
    fn a_local_service_reports_the_runid_ordered() {
        for mode in [LocalMode::Observe, LocalMode::Control] {
            let mut t = in_mode(mode);
            t.orders(0, &[(local("web"), 0, false), (local("job"), 0, false)]);
            t.orders(1000, &[(local("web"), 0, true), (local("job"), 0, true)]);
            let a = t.orders(2000, &[(local("web"), 1, false), (local("job"), 1, false)]);
            if mode == LocalMode::Control {
                t.event(2100, "service.state\tweb\tdown\t5\t301\tsignal\tSIGTERM\t9\t9");
                t.event(2200, "service.state\tweb\tup\t5\t305\t-\t-\t9\t-");
                t.event(2300, "service.state\tjob\tup\t5\t306\t-\t-\t9\t-");
                assert!(a.contains(&Action::Send("service.start\tjob".into())), "{a:?}");
            }
            let (w, j) = (t.status("web"), t.status("job"));
            assert!(w.pid > 0 && w.actual_runid == 1, "{mode:?}: web {w:?}");
            assert_eq!(j.actual_runid, 1, "{mode:?}: job {j:?}");
            assert_eq!(j.pid > 0, mode == LocalMode::Control, "{mode:?}: job {j:?}");
        }
    }

    /// Issue 15 §2: a local service removed in a stock sheriff stayed
    /// "Stopping" or "Removing" there for ever, since the deputy kept
    /// reporting it (a stock sheriff forgets a removed command when a
    /// report leaves it out), and nothing could be loaded while it was
    /// listed. Leaving it out of the orders after listing it removes it
    /// from the reports while that sheriff is the current one.
    #[test]
    fn a_removed_local_service_is_no_longer_reported_to_that_sheriff() {
        for mode in [LocalMode::Observe, LocalMode::Control] {
            let mut t = in_mode(mode);
            t.orders(0, &[(local("web"), 0, false), (local("job"), 0, false)]);
            assert_eq!(t.ids(), ["job", "web"]);
            let a = t.orders(1000, &[(local("job"), 0, false)]);
            assert!(a.contains(&Action::PublishInfo), "{a:?}");
            assert!(sends(&a).is_empty(), "the service is not touched: {a:?}");
            assert_eq!(t.ids(), ["job"], "{mode:?}");
            t.orders(2000, &[]);
            assert!(t.ids().is_empty(), "{mode:?}");
            assert!(t.orders(3000, &[]).iter().all(|x| !matches!(x, Action::Send(_) | Action::Notice(..))));
            // A new sheriff sees them (and may adopt them); the one that
            // removed them no longer does when it orders again.
            t.orders_from("fresh:2:2", 4000, &[]);
            assert_eq!(t.ids(), ["job", "web"], "{mode:?}");
            t.orders(5000, &[]);
            assert!(t.ids().is_empty(), "{mode:?}");
            // Listed again by it (a sheriff that adds it back): reported again.
            t.orders(6000, &[(local("web"), 0, false)]);
            assert_eq!(t.ids(), ["web"], "{mode:?}");
        }
    }

    /// A stop under --local control of a service with auto-up `always`
    /// was undone by daemonproxy at once, and the next orders stopped it
    /// again: a new pid every second. The stop turns auto-up off, the next
    /// start puts it back (which starts the service).
    #[test]
    fn control_stops_a_local_service_for_good() {
        let mut t = in_mode(LocalMode::Control);
        t.orders(0, &[(local("web"), 0, false)]);
        let a = t.orders(1000, &[(local("web"), 0, true)]);
        let lines: Vec<&str> =
            a.iter().filter_map(|x| if let Action::Send(l) = x { Some(l.as_str()) } else { None }).collect();
        assert_eq!(lines, ["service.auto_up\tweb\t-", "service.signal\tweb\t15"]);
        t.event(1010, "service.auto_up\tweb\t1");
        t.event(1100, "service.state\tweb\tdown\t5\t301\tsignal\tSIGTERM\t9\t9");
        assert!(sends(&t.orders(2000, &[(local("web"), 0, true)])).is_empty(), "stopped stays stopped");
        let a = t.orders(3000, &[(local("web"), 1, false)]);
        let lines: Vec<&str> =
            a.iter().filter_map(|x| if let Action::Send(l) = x { Some(l.as_str()) } else { None }).collect();
        assert_eq!(lines, ["service.auto_up\tweb\t1\talways"], "auto-up back on starts it");
        t.event(3100, "service.state\tweb\tup\t5\t310\t-\t-\t9\t-");
        let w = t.status("web");
        assert_eq!((w.pid, w.actual_runid), (310, 1));
        // job has no auto-up: a plain signal, and a plain start.
        let a = t.orders(4000, &[(local("web"), 1, false), (local("job"), 1, false)]);
        assert_eq!(sends(&a), ["service.start job"]);
    }

    #[test]
    fn resync_from_tags_and_locals() {
        let mut d = Deputy::new(cfg());
        let now = Instant::now();
        d.begin_sync();
        let x = def("x", "sleep 100", true);
        for line in [
            "service.state\tpm.x\tup\t5\t300\t-\t-\t9\t-".to_string(),
            format!("service.tags\tpm.x\t{}", tags::format(&x, 7)),
            "service.state\tweb\tup\t5\t301\t-\t-\t9\t-".into(),
            "service.tags\tweb\t".into(),
            "service.args\tweb\tnginx\t-g\tdaemon off;".into(),
            "service.auto_up\tweb\t1\talways".into(),
        ] {
            d.on_event(&Event::parse(line.as_bytes()), now);
        }
        assert!(d.cmds.is_empty(), "nothing adopted before the sync ends");
        d.synced(now);
        let st = d.statuses();
        assert_eq!(st.len(), 2);
        let px = st.iter().find(|s| s.def.id == "x").unwrap();
        assert_eq!((px.pid, px.actual_runid, &px.def), (300, 7, &x));
        let pw = st.iter().find(|s| s.def.id == "web").unwrap();
        assert_eq!(
            (pw.pid, pw.actual_runid, pw.def.group.as_str(), pw.def.exec.as_str()),
            (300 + 1, 0, "local", "nginx -g daemon off;")
        );
        assert!(d.take_actions().iter().all(|a| !matches!(a, Action::Send(_))), "a resync sends no command");
        // orders about a local service are not obeyed under observe
        let o = [
            Order { def: x.clone(), desired_runid: 7, force_quit: false },
            Order { def: def("web", "x", false), desired_runid: 1, force_quit: true },
        ];
        d.on_orders("d1", "s", WALL, &o, false, false, WALL, now);
        let a = d.take_actions();
        let notices: Vec<&Action> = a.iter().filter(|x| matches!(x, Action::Notice(..))).collect();
        assert!(matches!(&notices[..], [Action::Notice(id, _)] if id == "web"), "{a:?}");
        assert!(sends(&a).is_empty(), "{a:?}");
        assert!(d.cmds.contains_key("web") && d.cmds.contains_key("x"), "no removal of others' services");
    }
}
