//! The sheriff's view of the fleet and its decisions (docs/fleet.md
//! §5.2, §5.5), without I/O: deputies and their commands as reported, the
//! desired state the sheriff holds, the actions people and scripts take on
//! it, and the orders that follow from it.
//!
//! What the network reports is held within limits ([`MAX_DEPUTIES`],
//! [`MAX_DEPUTY_ID`], [`MAX_CMDS_PER_DEPUTY`], [`ORDERS_BUDGET`],
//! [`MAX_FLEET_BYTES`]): a deputy or an adopted command beyond them is
//! ignored and counted in [`Fleet::refused`]. A configuration's commands
//! are always held (`validate` in config.rs keeps each deputy's within one
//! orders message).

use crate::procman::codec::{MAX_COUNT, MAX_MESSAGE};
use crate::procman::{CmdDesired, CmdT, DeputyInfo, Orders};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The most deputies held; one first heard beyond it is ignored.
pub const MAX_DEPUTIES: usize = 1024;
/// The longest deputy id accepted, in bytes (a host name's length).
pub const MAX_DEPUTY_ID: usize = 255;
/// Bytes of an `orders_t` kept for all but its commands: fingerprint,
/// utime, deputy and sheriff ids, the count, a PMA1 trailer.
pub const ORDERS_HEADROOM: usize = 2048;
/// The most bytes of commands ([`desired_bytes`]) one deputy's orders
/// carry: what one message holds.
pub const ORDERS_BUDGET: usize = MAX_MESSAGE - ORDERS_HEADROOM;
/// The most commands per deputy: what one `orders_t` array holds.
pub const MAX_CMDS_PER_DEPUTY: usize = MAX_COUNT;
/// The most memory (as [`Fleet::bytes`] estimates it) the fleet's
/// commands may take before adoption from the network stops.
pub const MAX_FLEET_BYTES: usize = 16 << 20;

/// Bytes a command takes in an `orders_t` (its LCM encoding as a
/// `cmd_desired_t`: three strings of length + text + NUL, an int8, a
/// float, two booleans, an int32).
pub fn desired_bytes(c: &CmdT) -> usize {
    desired_len(&c.command_id, &c.exec_str, &c.group)
}

/// [`desired_bytes`] of a command with this id, exec and group.
pub fn desired_len(id: &str, exec: &str, group: &str) -> usize {
    id.len() + exec.len() + group.len() + 26
}

/// Memory a held command takes, estimated: its definition, its key (the
/// deputy id twice, the id again) and the fixed part.
fn cost(deputy: &str, c: &CmdT) -> usize {
    desired_bytes(c) + c.command_id.len() + 2 * deputy.len() + 256
}

/// Network input the fleet ignored for its limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refused {
    /// Messages from or about a deputy beyond [`MAX_DEPUTIES`] (or with an
    /// id over [`MAX_DEPUTY_ID`]).
    pub deputies: u64,
    /// Commands not adopted (or not updated) for a per-deputy or fleet limit.
    pub commands: u64,
}

/// A command's key: (deputy id, command id).
pub type Key = (String, String);

/// A deputy as last heard.
#[derive(Clone, Debug, PartialEq)]
pub struct Deputy {
    /// Its id.
    pub id: String,
    /// Local time of the last info accepted (`None`: never heard).
    pub heard: Option<Instant>,
    /// `utime` of that info.
    pub utime: i64,
    /// Host CPU load in [0,1]; -1 unknown.
    pub cpu_load: f32,
    /// Bytes.
    pub mem_total: i64,
    /// Bytes.
    pub mem_free: i64,
    /// Bytes.
    pub swap_total: i64,
    /// Bytes.
    pub swap_free: i64,
    /// Commands held for it.
    pub ncmds: usize,
    /// Their bytes in its orders ([`desired_bytes`]).
    pub orders_bytes: usize,
}

/// One command on one deputy.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    /// The definition the sheriff sends.
    pub cmd: CmdT,
    /// The deputy it runs on.
    pub deputy: String,
    /// Desired run (0: no opinion yet).
    pub desired_runid: i32,
    /// Keep it stopped.
    pub force_quit: bool,
    /// Leave it out of the orders; deleted once the deputy stops listing it.
    pub removing: bool,
    /// Reported pid; -1 until the deputy reports the command.
    pub pid: i32,
    /// Reported runid of the last start.
    pub actual_runid: i32,
    /// Reported raw wait status.
    pub exit_code: i32,
    /// Reported CPU share of the machine.
    pub cpu: f32,
    /// Bytes.
    pub vsize: i64,
    /// Bytes.
    pub rss: i64,
    /// The start of the current run on the deputy's clock (the `utime`
    /// of the first report that showed its pid), while it runs.
    pub start_utime: Option<i64>,
    /// The sheriff saw that start happen (an earlier report showed the
    /// command without this pid): [`Command::start_utime`] is the start,
    /// to within the deputy's report delay. Otherwise the run was already
    /// going when this sheriff first heard of it, and the start is only
    /// known to be earlier (docs/fleet.md §5.2).
    pub start_seen: bool,
    /// The raw wait status of the last run that ended, kept across later
    /// starts until the next exit (deputies report 0 from each start).
    pub last_exit: Option<i32>,
    /// The deputy said it will not act on orders about this command (a
    /// local service of a bridge, a read-only deputy): its notice.
    /// `--all`, groups and `everything` leave it alone, and its status is
    /// what the deputy reports (docs/fleet.md §5.2). Cleared when a report
    /// shows the deputy acting on it after all (a new pid or runid).
    pub refused: Option<String>,
    /// Runs seen (a new pid reported), the one already going when the
    /// command was first heard of included: restarts are this less one.
    pub runs: u64,
}

/// Status words of §5.2 (as the stock sheriff shows them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// No info about it yet.
    Unknown,
    /// A start was ordered, not yet running.
    Starting,
    /// A restart was ordered while running.
    Restarting,
    /// Running as desired.
    Running,
    /// A stop or removal was ordered, still running.
    Stopping,
    /// Removal ordered, stopped.
    Removing,
    /// Ended well (or stopped on purpose).
    StoppedOk,
    /// Ended badly.
    StoppedError,
}

impl Status {
    /// The text of §5.2.
    pub fn text(self) -> &'static str {
        match self {
            Status::Unknown => "Unknown",
            Status::Starting => "Starting (Command Sent)",
            Status::Restarting => "Restarting (Command Sent)",
            Status::Running => "Running",
            Status::Stopping => "Stopping (Command Sent)",
            Status::Removing => "Removing (Command Sent)",
            Status::StoppedOk => "Stopped (OK)",
            Status::StoppedError => "Stopped (Error)",
        }
    }

    /// Counts as stopped for `wait "stopped"`.
    pub fn is_stopped(self) -> bool {
        matches!(self, Status::StoppedOk | Status::StoppedError)
    }
}

impl Command {
    /// The status word (first match of §5.2's table). For a command its
    /// deputy will not act on, what the deputy reports: `Running` or
    /// stopped, never an order pending.
    pub fn status(&self) -> Status {
        if self.pid < 0 {
            return Status::Unknown;
        }
        if self.refused.is_some() {
            return match (self.pid > 0, self.exit_code) {
                (true, _) => Status::Running,
                (false, 0) => Status::StoppedOk,
                _ => Status::StoppedError,
            };
        }
        let same = self.desired_runid == self.actual_runid;
        match (same, self.pid > 0) {
            (false, false) if !self.force_quit => Status::Starting,
            (false, true) if !self.force_quit => Status::Restarting,
            (true, true) if !self.force_quit && !self.removing => Status::Running,
            (true, true) => Status::Stopping,
            (true, false) if self.removing => Status::Removing,
            (true, false) => {
                let killed = matches!(self.exit_code & 0x7f, 2 | 9 | 15) && self.exit_code & 0xff00 == 0;
                if self.exit_code == 0 || (self.force_quit && killed) {
                    Status::StoppedOk
                } else {
                    Status::StoppedError
                }
            }
            _ => Status::Unknown,
        }
    }

    /// Uptime of the current run, measured on the deputy's clock (its
    /// last report's `utime` less the start's, plus the time since that
    /// report arrived), so clocks that differ between hosts do not
    /// matter; and whether the start was seen ([`Command::start_seen`]:
    /// if not, the run is at least that old).
    pub fn uptime(&self, deputy: &Deputy, now: Instant) -> Option<(Duration, bool)> {
        let start = self.start_utime.filter(|_| self.pid > 0)?;
        let heard = deputy.heard?;
        let reported = Duration::from_micros(deputy.utime.saturating_sub(start).max(0) as u64);
        Some((reported + now.saturating_duration_since(heard), self.start_seen))
    }
}

/// What a person or a script does to a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// Start unless running.
    Start,
    /// Start a new run even while running.
    Restart,
    /// Stop.
    Stop,
    /// Stop and forget.
    Remove,
}

/// Deputy liveness by local receive time (as the stock GUI shows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Info within 2 s.
    Fresh,
    /// 2 to 5 s.
    Late,
    /// Over 5 s, or never.
    Lost,
}

/// The fleet as this sheriff sees it. Change `cmds` only through its
/// methods: they keep the counts the limits are checked against.
#[derive(Default)]
pub struct Fleet {
    /// Deputies by id.
    pub deputies: BTreeMap<String, Deputy>,
    /// Commands by (deputy, command id).
    pub cmds: BTreeMap<(String, String), Command>,
    /// Estimated memory of all commands held (compare [`MAX_FLEET_BYTES`]).
    pub bytes: usize,
    /// What was ignored for the limits.
    pub refused: Refused,
}

/// The most characters of a deputy's refusal kept with a command.
pub const MAX_REFUSAL: usize = 200;

/// Infos older than this are dropped (unless observing).
pub const MAX_INFO_AGE_US: i64 = 30_000_000;

fn bump(runid: i32) -> i32 {
    if (0..i32::MAX).contains(&runid) { runid + 1 } else { 1 }
}

impl Fleet {
    /// A command from a configuration (or `add`): desired 0, so loading
    /// a config never restarts anything (§5.2).
    pub fn define(&mut self, deputy: &str, cmd: CmdT) {
        self.deputies.entry(deputy.to_string()).or_insert_with(|| new_deputy(deputy));
        let key = (deputy.to_string(), cmd.command_id.clone());
        let old = self.cmds.get(&key).map(|c| c.cmd.clone());
        self.account(deputy, old.as_ref(), Some(&cmd));
        match self.cmds.get_mut(&key) {
            Some(c) => {
                c.cmd = cmd;
                c.removing = false;
            }
            None => {
                self.cmds.insert(key, new_command(deputy, cmd));
            }
        }
    }

    /// A deputy named by network input: the one held, or a new one within
    /// [`MAX_DEPUTIES`] and [`MAX_DEPUTY_ID`] (else counted, `None`).
    fn deputy_from_network(&mut self, id: &str) -> Option<&mut Deputy> {
        if !self.deputies.contains_key(id) {
            if id.len() > MAX_DEPUTY_ID || self.deputies.len() >= MAX_DEPUTIES {
                self.refused.deputies += 1;
                return None;
            }
            self.deputies.insert(id.to_string(), new_deputy(id));
        }
        self.deputies.get_mut(id)
    }

    /// Would replacing `old` (None: adding) by `new` on `deputy` stay
    /// within the limits? Counts a refusal if not.
    fn room(&mut self, deputy: &str, old: Option<&CmdT>, new: &CmdT) -> bool {
        let Some(d) = self.deputies.get(deputy) else { return false };
        let ncmds = d.ncmds + usize::from(old.is_none());
        let orders = (d.orders_bytes + desired_bytes(new)).saturating_sub(old.map_or(0, desired_bytes));
        let total = (self.bytes + cost(deputy, new)).saturating_sub(old.map_or(0, |o| cost(deputy, o)));
        let ok = ncmds <= MAX_CMDS_PER_DEPUTY && orders <= ORDERS_BUDGET && total <= MAX_FLEET_BYTES;
        if !ok {
            self.refused.commands += 1;
        }
        ok
    }

    /// Keep the counts: `old` (None: none) becomes `new` (None: removed).
    fn account(&mut self, deputy: &str, old: Option<&CmdT>, new: Option<&CmdT>) {
        let Some(d) = self.deputies.get_mut(deputy) else { return };
        if let Some(o) = old {
            d.ncmds = d.ncmds.saturating_sub(1);
            d.orders_bytes = d.orders_bytes.saturating_sub(desired_bytes(o));
            self.bytes = self.bytes.saturating_sub(cost(deputy, o));
        }
        if let Some(n) = new {
            d.ncmds += 1;
            d.orders_bytes += desired_bytes(n);
            self.bytes += cost(deputy, n);
        }
    }

    /// Forget a command.
    fn remove(&mut self, key: &Key) {
        if let Some(c) = self.cmds.remove(key) {
            self.account(&key.0, Some(&c.cmd), None);
        }
    }

    /// An info from a deputy. `observer`: accept any age (log replays).
    /// Returns false if it was dropped.
    pub fn on_info(&mut self, info: &DeputyInfo, now_wall_us: i64, now: Instant, observer: bool) -> bool {
        let Some(d) = self.deputy_from_network(&info.deputy_id) else { return false };
        if !observer && now_wall_us - info.utime > MAX_INFO_AGE_US {
            return false;
        }
        if d.heard.is_some() && info.utime < d.utime {
            return false;
        }
        d.heard = Some(now);
        d.utime = info.utime;
        d.cpu_load = info.cpu_load;
        d.mem_total = info.phys_mem_total_bytes;
        d.mem_free = info.phys_mem_free_bytes;
        d.swap_total = info.swap_total_bytes;
        d.swap_free = info.swap_free_bytes;
        let mut reported = std::collections::HashSet::new();
        for s in &info.cmds {
            let key = (info.deputy_id.clone(), s.cmd.command_id.clone());
            if !self.cmds.contains_key(&key) {
                if !self.room(&info.deputy_id, None, &s.cmd) {
                    continue;
                }
                // Adoption: what runs is what is desired.
                let mut c = new_command(&info.deputy_id, s.cmd.clone());
                c.desired_runid = s.actual_runid;
                self.account(&info.deputy_id, None, Some(&s.cmd));
                self.cmds.insert(key.clone(), c);
            }
            reported.insert(s.cmd.command_id.clone());
            let Some(c) = self.cmds.get_mut(&key) else { continue };
            // A refusal holds until the deputy is seen acting on the
            // command after all (a new run or a stop).
            if c.refused.is_some() && c.pid >= 0 && (s.pid != c.pid || s.actual_runid != c.actual_runid) {
                c.refused = None;
            }
            if s.pid > 0 {
                if c.pid != s.pid {
                    c.runs += 1;
                }
                if c.pid != s.pid || c.start_utime.is_none() {
                    // A report before this one showed the command without
                    // this pid: the run started since (the bridge reports
                    // at once after a start, docs/fleet.md §4.3).
                    c.start_seen = c.pid >= 0;
                    c.start_utime = Some(info.utime);
                }
            } else {
                c.start_utime = None;
                // A run ended: keep its status, unless a start is pending
                // (the deputy reports exit 0 from the start on, §4.6).
                // (Desired 0 is no opinion yet: adoption follows below.)
                let desired = if c.desired_runid == 0 { s.actual_runid } else { c.desired_runid };
                let pending = s.exit_code == 0 && desired != s.actual_runid && !c.force_quit;
                let news = c.pid > 0 || c.last_exit.is_none() || s.exit_code != 0 || s.actual_runid != c.actual_runid;
                if s.actual_runid != 0 && news && !pending {
                    c.last_exit = Some(s.exit_code);
                }
            }
            c.pid = s.pid;
            c.actual_runid = s.actual_runid;
            c.exit_code = s.exit_code;
            c.cpu = s.cpu_usage;
            c.vsize = s.mem_vsize_bytes;
            c.rss = s.mem_rss_bytes;
            if c.desired_runid == 0 && c.actual_runid != 0 && !c.force_quit {
                c.desired_runid = c.actual_runid;
            }
            // One-shot protection: a finished run-once command stays done.
            if c.pid == 0 && c.actual_runid == c.desired_runid && !c.cmd.auto_respawn && !c.force_quit {
                c.force_quit = true;
            }
        }
        let dep = info.deputy_id.clone();
        let gone: Vec<Key> = self
            .cmds
            .iter()
            .filter(|((d, id), c)| d == &dep && c.removing && !reported.contains(id))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            self.remove(k);
        }
        for ((d, id), c) in self.cmds.iter_mut() {
            if d == &dep && !reported.contains(id) && c.pid > 0 {
                c.pid = 0; // no longer listed: not running there
                c.start_utime = None;
            }
        }
        true
    }

    /// The deputy said it will not act on orders about `key` (`why`, its
    /// notice): the desired state goes back to what the deputy reports, so
    /// the status words stay true and no order keeps asking for what will
    /// not happen; `--all`, groups and `everything` leave it alone from
    /// then on (docs/fleet.md §5.2). True if the command is held.
    pub fn refuse(&mut self, key: &Key, why: &str) -> bool {
        let Some(c) = self.cmds.get_mut(key) else { return false };
        c.refused = Some(why.chars().filter(|ch| !ch.is_control()).take(MAX_REFUSAL).collect());
        if c.pid >= 0 {
            c.desired_runid = c.actual_runid;
            c.force_quit = c.pid == 0;
        }
        c.removing = false;
        true
    }

    /// [`Fleet::refuse`] for every command of `deputy` (it refuses every
    /// order of this sheriff: read-only, not allowed, unsigned).
    pub fn refuse_deputy(&mut self, deputy: &str, why: &str) {
        let keys: Vec<Key> = self.cmds.keys().filter(|k| k.0 == deputy).cloned().collect();
        for k in &keys {
            self.refuse(k, why);
        }
    }

    /// Observer mode: another sheriff's orders say what is desired.
    pub fn on_foreign_orders(&mut self, o: &Orders) {
        if self.deputy_from_network(&o.deputy_id).is_none() {
            return;
        }
        let mut listed = std::collections::HashSet::new();
        for cd in &o.cmds {
            listed.insert(cd.cmd.command_id.clone());
            let key = (o.deputy_id.clone(), cd.cmd.command_id.clone());
            let old = self.cmds.get(&key).map(|c| c.cmd.clone());
            if old.as_ref() != Some(&cd.cmd) {
                if !self.room(&o.deputy_id, old.as_ref(), &cd.cmd) {
                    continue;
                }
                self.account(&o.deputy_id, old.as_ref(), Some(&cd.cmd));
            }
            let c = self.cmds.entry(key).or_insert_with(|| new_command(&o.deputy_id, cd.cmd.clone()));
            c.cmd = cd.cmd.clone();
            c.desired_runid = cd.desired_runid;
            c.force_quit = cd.force_quit;
            c.removing = false;
        }
        for ((d, id), c) in self.cmds.iter_mut() {
            if d == &o.deputy_id && !listed.contains(id) {
                c.removing = true;
            }
        }
    }

    /// Apply `verb` to one command; true if the desired state changed.
    pub fn act(&mut self, key: &(String, String), verb: Verb) -> bool {
        let heard = self.deputies.get(&key.0).is_some_and(|d| d.heard.is_some());
        let Some(c) = self.cmds.get_mut(key) else { return false };
        let before = (c.desired_runid, c.force_quit, c.removing);
        match verb {
            Verb::Start => {
                if c.pid <= 0 || c.force_quit {
                    c.desired_runid = bump(c.desired_runid.max(c.actual_runid));
                    c.force_quit = false;
                }
            }
            Verb::Restart => {
                c.desired_runid = bump(c.desired_runid.max(c.actual_runid));
                c.force_quit = false;
            }
            Verb::Stop => c.force_quit = true,
            Verb::Remove => {
                if !heard {
                    self.remove(key);
                    return true;
                }
                c.removing = true;
            }
        }
        let c = &self.cmds[key];
        before != (c.desired_runid, c.force_quit, c.removing)
    }

    /// The orders for one deputy: every command not being removed.
    pub fn orders_for(&self, deputy: &str, sheriff_id: &str, utime: i64) -> Orders {
        let cmds = self
            .cmds
            .iter()
            .filter(|((d, _), c)| d == deputy && !c.removing)
            .map(|(_, c)| CmdDesired { cmd: c.cmd.clone(), desired_runid: c.desired_runid, force_quit: c.force_quit })
            .collect();
        Orders { utime, deputy_id: deputy.to_string(), sheriff_id: sheriff_id.to_string(), cmds }
    }

    /// Deputies orders go to: those heard from (never one known only from
    /// a configuration, §5.1).
    pub fn heard_deputies(&self) -> Vec<String> {
        self.deputies.values().filter(|d| d.heard.is_some()).map(|d| d.id.clone()).collect()
    }

    /// A deputy's liveness now.
    pub fn liveness(&self, deputy: &str, now: Instant) -> Liveness {
        match self.deputies.get(deputy).and_then(|d| d.heard) {
            Some(t) if now.duration_since(t) <= Duration::from_secs(2) => Liveness::Fresh,
            Some(t) if now.duration_since(t) <= Duration::from_secs(5) => Liveness::Late,
            _ => Liveness::Lost,
        }
    }

    /// `flush`: forget commands that are stopped and not desired to run
    /// (finished one-shots, stopped commands), sending removal orders for
    /// them. Returns how many.
    pub fn flush_dead(&mut self) -> usize {
        let dead: Vec<(String, String)> =
            self.cmds.iter().filter(|(_, c)| c.status().is_stopped() && c.force_quit).map(|(k, _)| k.clone()).collect();
        for k in &dead {
            self.act(k, Verb::Remove);
        }
        dead.len()
    }
}

fn new_deputy(id: &str) -> Deputy {
    Deputy {
        id: id.to_string(),
        heard: None,
        utime: 0,
        cpu_load: -1.0,
        mem_total: 0,
        mem_free: 0,
        swap_total: 0,
        swap_free: 0,
        ncmds: 0,
        orders_bytes: 0,
    }
}

fn new_command(deputy: &str, cmd: CmdT) -> Command {
    Command {
        cmd,
        deputy: deputy.to_string(),
        desired_runid: 0,
        force_quit: false,
        removing: false,
        pid: -1,
        actual_runid: 0,
        exit_code: 0,
        cpu: 0.0,
        vsize: 0,
        rss: 0,
        start_utime: None,
        start_seen: false,
        last_exit: None,
        refused: None,
        runs: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procman::CmdStatus;

    fn cmd_t(id: &str, respawn: bool) -> CmdT {
        CmdT {
            command_id: id.into(),
            exec_str: "sleep 9".into(),
            group: "g".into(),
            auto_respawn: respawn,
            stop_signal: 15,
            stop_time_allowed: 7.0,
        }
    }

    fn info(utime: i64, cmds: &[(&str, i32, i32, i32)]) -> DeputyInfo {
        DeputyInfo {
            utime,
            deputy_id: "d".into(),
            cpu_load: 0.5,
            phys_mem_total_bytes: 100,
            phys_mem_free_bytes: 50,
            swap_total_bytes: 0,
            swap_free_bytes: 0,
            cmds: cmds
                .iter()
                .map(|&(id, pid, runid, exit)| CmdStatus {
                    cmd: cmd_t(id, id.starts_with('r')),
                    pid,
                    actual_runid: runid,
                    exit_code: exit,
                    cpu_usage: 0.0,
                    mem_vsize_bytes: 0,
                    mem_rss_bytes: 0,
                })
                .collect(),
        }
    }

    const NOW: i64 = 1_800_000_000_000_000;

    fn key(id: &str) -> (String, String) {
        ("d".into(), id.into())
    }

    #[test]
    fn adoption_and_one_shot_protection() {
        let mut f = Fleet::default();
        let t = Instant::now();
        assert!(f.on_info(&info(NOW, &[("run", 10, 4, 0), ("done", 0, 2, 0), ("rsp", 0, 3, 256)]), NOW, t, false));
        let run = &f.cmds[&key("run")];
        assert_eq!((run.desired_runid, run.force_quit, run.status()), (4, false, Status::Running));
        let done = &f.cmds[&key("done")];
        assert_eq!((done.desired_runid, done.force_quit, done.status()), (2, true, Status::StoppedOk));
        let rsp = &f.cmds[&key("rsp")];
        assert_eq!((rsp.force_quit, rsp.status()), (false, Status::StoppedError), "respawning: not protected");
        // stale and out-of-order infos are dropped
        assert!(!f.on_info(&info(NOW - 31_000_000, &[]), NOW, t, false));
        assert!(!f.on_info(&info(NOW - 1, &[]), NOW, t, false));
        // an observer takes infos of any age (log replays)
        let mut obs = Fleet::default();
        assert!(obs.on_info(&info(NOW - 3_600_000_000, &[("run", 10, 4, 0)]), NOW, t, true));
        assert_eq!(obs.cmds[&key("run")].pid, 10);
    }

    #[test]
    fn verbs_and_status_words() {
        let mut f = Fleet::default();
        let t = Instant::now();
        f.define("d", cmd_t("x", false));
        assert_eq!(f.cmds[&key("x")].status(), Status::Unknown);
        assert!(f.heard_deputies().is_empty(), "never ordered before it is heard from");
        // removing a command of a deputy never heard from deletes it at once
        f.define("d", cmd_t("y", false));
        assert!(f.act(&key("y"), Verb::Remove));
        assert!(!f.cmds.contains_key(&key("y")));
        f.on_info(&info(NOW, &[("x", 0, 0, 0)]), NOW, t, false);
        // desired 0, actual 0, pid 0: one-shot protection applies
        assert!(f.cmds[&key("x")].force_quit);
        assert!(f.act(&key("x"), Verb::Start));
        let c = &f.cmds[&key("x")];
        assert_eq!((c.desired_runid, c.force_quit, c.status()), (1, false, Status::Starting));
        f.on_info(&info(NOW + 1, &[("x", 7, 1, 0)]), NOW, t, false);
        assert_eq!(f.cmds[&key("x")].status(), Status::Running);
        assert!(!f.act(&key("x"), Verb::Start), "start while running does nothing");
        assert!(f.act(&key("x"), Verb::Restart));
        assert_eq!(f.cmds[&key("x")].status(), Status::Restarting);
        f.on_info(&info(NOW + 2, &[("x", 8, 2, 0)]), NOW, t, false);
        assert!(f.act(&key("x"), Verb::Stop));
        assert_eq!(f.cmds[&key("x")].status(), Status::Stopping);
        f.on_info(&info(NOW + 3, &[("x", 0, 2, 15)]), NOW, t, false);
        assert_eq!(f.cmds[&key("x")].status(), Status::StoppedOk, "killed by its stop signal on purpose");
        let o = f.orders_for("d", "s", NOW);
        assert_eq!((o.cmds.len(), o.cmds[0].desired_runid, o.cmds[0].force_quit), (1, 2, true));
        assert!(f.act(&key("x"), Verb::Remove));
        assert_eq!(f.cmds[&key("x")].status(), Status::Removing);
        assert!(f.orders_for("d", "s", NOW).cmds.is_empty());
        f.on_info(&info(NOW + 4, &[]), NOW, t, false);
        assert!(f.cmds.is_empty(), "deleted once no longer reported");
        // an error exit
        f.on_info(&info(NOW + 5, &[("e", 0, 1, 768)]), NOW, t, false);
        assert_eq!(f.cmds[&key("e")].status(), Status::StoppedError);
        assert_eq!(f.flush_dead(), 1);
        assert!(f.cmds[&key("e")].removing);
        // the runid wraps to 1
        assert_eq!(bump(i32::MAX), 1);
    }

    #[test]
    fn uptime_on_the_deputys_clock_and_last_exit() {
        let mut f = Fleet::default();
        let t = Instant::now();
        let up = |f: &Fleet, now| f.cmds[&key("x")].uptime(&f.deputies["d"], now).map(|(d, s)| (d.as_secs(), s));
        f.on_info(&info(NOW, &[("x", 0, 0, 0)]), NOW, t, false);
        assert_eq!((up(&f, t), f.cmds[&key("x")].last_exit), (None, None), "never ran");
        f.act(&key("x"), Verb::Start);
        // the start is seen: from the report that first shows the pid, on
        // the deputy's clock (its utime), plus the time since that report
        f.on_info(&info(NOW + 1_000_000, &[("x", 7, 1, 0)]), NOW, t, false);
        f.on_info(&info(NOW + 4_000_000, &[("x", 7, 1, 0)]), NOW, t, false);
        assert_eq!(up(&f, t + Duration::from_secs(2)), Some((5, true)));
        f.on_info(&info(NOW + 5_000_000, &[("x", 0, 1, 3 << 8)]), NOW, t, false);
        assert_eq!((up(&f, t), f.cmds[&key("x")].last_exit), (None, Some(768)));
        // a new run: the deputy reports exit 0 from the start on; the last
        // exit is kept until the next one
        f.act(&key("x"), Verb::Start);
        f.on_info(&info(NOW + 6_000_000, &[("x", 0, 1, 0)]), NOW, t, false);
        f.on_info(&info(NOW + 7_000_000, &[("x", 8, 2, 0)]), NOW, t, false);
        assert_eq!(f.cmds[&key("x")].last_exit, Some(768));
        f.on_info(&info(NOW + 8_000_000, &[("x", 0, 2, 0)]), NOW, t, false);
        assert_eq!(f.cmds[&key("x")].last_exit, Some(0), "a clean exit is an exit");
        // a run going before this sheriff heard of it: at least that old
        let mut g = Fleet::default();
        g.on_info(&info(NOW, &[("x", 9, 4, 0)]), NOW, t, false);
        assert_eq!(up(&g, t + Duration::from_secs(3)), Some((3, false)));
        assert_eq!(g.cmds[&key("x")].last_exit, None);
        let mut g = Fleet::default();
        g.define("d", cmd_t("x", false));
        g.on_info(&info(NOW, &[("x", 0, 4, 0)]), NOW, t, false);
        assert_eq!(g.cmds[&key("x")].last_exit, Some(0), "a stopped command's last run is known at once");
    }

    #[test]
    fn commands_the_deputy_will_not_act_on() {
        let mut f = Fleet::default();
        let t = Instant::now();
        f.on_info(&info(NOW, &[("local", 5, 0, 0), ("x", 6, 1, 0)]), NOW, t, false);
        let all = crate::sheriff::view::Filter { all: true, ..Default::default() };
        f.act(&key("local"), Verb::Stop);
        assert_eq!(f.cmds[&key("local")].status(), Status::Stopping);
        assert!(f.refuse(&key("local"), "local is not a procman command of this deputy; orders about it are ignored"));
        assert!(!f.refuse(&key("nobody"), "x"));
        let c = &f.cmds[&key("local")];
        assert_eq!((c.status(), c.force_quit, c.desired_runid), (Status::Running, false, 0), "back to what runs");
        assert_eq!(all.actionable(&f), (vec![key("x")], 1), "--all leaves it alone");
        let named = crate::sheriff::view::Filter { name: Some("local".into()), ..Default::default() };
        assert_eq!(named.actionable(&f), (vec![key("local")], 0), "named, it is ordered");
        assert!(f.act(&key("local"), Verb::Stop));
        assert_eq!(f.cmds[&key("local")].status(), Status::Running, "its status is what the deputy reports");
        f.on_info(&info(NOW + 1, &[("local", 5, 0, 0), ("x", 6, 1, 0)]), NOW, t, false);
        assert!(f.cmds[&key("local")].refused.is_some());
        // seen acting on it after all: the mark goes
        f.on_info(&info(NOW + 2, &[("local", 0, 0, 15), ("x", 6, 1, 0)]), NOW, t, false);
        assert!(f.cmds[&key("local")].refused.is_none());
        // a deputy refusing every order of this sheriff
        f.refuse_deputy("d", "deputy d is read-only; orders ignored");
        assert_eq!(all.actionable(&f).1, 2);
    }

    #[test]
    fn observer_rebuilds_desired_state() {
        let mut f = Fleet::default();
        let mut o = Orders { utime: NOW, deputy_id: "d".into(), sheriff_id: "other".into(), cmds: vec![] };
        o.cmds.push(CmdDesired { cmd: cmd_t("a", false), desired_runid: 3, force_quit: false });
        o.cmds.push(CmdDesired { cmd: cmd_t("b", false), desired_runid: 1, force_quit: true });
        f.on_foreign_orders(&o);
        assert_eq!(f.cmds[&key("a")].desired_runid, 3);
        assert!(f.cmds[&key("b")].force_quit);
        o.cmds.remove(1);
        f.on_foreign_orders(&o);
        assert!(f.cmds[&key("b")].removing);
        assert!(!f.cmds[&key("a")].removing);
    }

    #[test]
    fn liveness() {
        let mut f = Fleet::default();
        let t = Instant::now();
        f.on_info(&info(NOW, &[]), NOW, t, false);
        assert_eq!(f.liveness("d", t + Duration::from_secs(1)), Liveness::Fresh);
        assert_eq!(f.liveness("d", t + Duration::from_secs(3)), Liveness::Late);
        assert_eq!(f.liveness("d", t + Duration::from_secs(6)), Liveness::Lost);
        assert_eq!(f.liveness("nobody", t), Liveness::Lost);
    }

    #[test]
    fn desired_bytes_is_the_encoded_size() {
        let one = |c: CmdT| Orders {
            utime: 1,
            deputy_id: "d".into(),
            sheriff_id: "s".into(),
            cmds: vec![CmdDesired { cmd: c, desired_runid: 1, force_quit: false }],
        };
        let empty = Orders { cmds: vec![], ..one(cmd_t("x", false)) }.to_bytes().unwrap().len();
        let c = CmdT { exec_str: "e".repeat(1000), ..cmd_t("some-id", true) };
        let size = one(c.clone()).to_bytes().unwrap().len();
        assert_eq!(size - empty, desired_bytes(&c));
    }

    #[test]
    fn network_input_is_held_within_limits() {
        let mut f = Fleet::default();
        let t = Instant::now();
        // deputies: an over-long id, then more than MAX_DEPUTIES
        let mut i = info(NOW, &[]);
        i.deputy_id = "d".repeat(MAX_DEPUTY_ID + 1);
        assert!(!f.on_info(&i, NOW, t, false));
        for n in 0..MAX_DEPUTIES + 10 {
            i.deputy_id = format!("dep{n}");
            f.on_info(&i, NOW, t, false);
        }
        assert_eq!(f.deputies.len(), MAX_DEPUTIES);
        assert_eq!(f.refused.deputies, 11);
        let o = Orders { utime: NOW, deputy_id: "foreign".into(), sheriff_id: "s".into(), cmds: vec![] };
        f.on_foreign_orders(&o);
        assert!(!f.deputies.contains_key("foreign"));
        // adopted commands: a deputy's orders must stay within one message
        let mut f = Fleet::default();
        let big = |id: &str| CmdStatus {
            cmd: CmdT { exec_str: "x".repeat(60_000), ..cmd_t(id, false) },
            pid: 5,
            actual_runid: 1,
            exit_code: 0,
            cpu_usage: 0.0,
            mem_vsize_bytes: 0,
            mem_rss_bytes: 0,
        };
        for round in 0..4 {
            let mut i = info(NOW + round, &[]);
            i.cmds = (0..10).map(|n| big(&format!("r{round}-{n}"))).collect();
            f.on_info(&i, NOW, t, false);
        }
        let d = &f.deputies["d"];
        assert_eq!(d.ncmds, f.cmds.len());
        assert!(d.orders_bytes <= ORDERS_BUDGET && f.cmds.len() == ORDERS_BUDGET / (60_000 + 32), "{}", f.cmds.len());
        assert_eq!(f.refused.commands, 40 - f.cmds.len() as u64);
        assert!(f.orders_for("d", "s", NOW).to_bytes().is_ok(), "its orders still go out");
        // removal gives the room back
        let keys: Vec<Key> = f.cmds.keys().cloned().collect();
        for k in &keys {
            f.act(k, Verb::Remove);
        }
        f.on_info(&info(NOW + 9, &[]), NOW, t, false);
        assert_eq!((f.cmds.len(), f.deputies["d"].ncmds, f.deputies["d"].orders_bytes, f.bytes), (0, 0, 0, 0));
    }
}
