//! Services (docs/protocol.md §5): the table, each service's state machine, and
//! how a service is shown in events.
//!
//! Data structures: services live in a slot vector (indices stay valid until
//! delete); a vector of slot numbers sorted by name finds a name by binary
//! search (O(log n); the name order `statedump` needs; 8 bytes a service,
//! inserting moves the entries after it: at 10,000 services at most 80 kB
//! once per created service); a `HashMap` maps running pids to slots (O(1)
//! reaping); pending starts sit in an indexed binary heap ([`Timers`]), so
//! the next deadline is O(1) and scheduling or taking a start O(log n); and
//! for each counted signal a list names the services whose `auto_up`
//! triggers list it, so a signal's arrival visits only those.
//!
//! Every structure is sized when a service is created (configuration
//! time), or when `service.auto_up` sets a restart limit; starting,
//! reaping, attaching and restarting services never allocates.

use crate::clock::{Mono, SEC, Seconds};
use crate::command::Name;
use crate::figures::Sample;
use crate::line::Line;
use crate::signame;
use crate::timer::Timers;
use std::collections::HashMap;
use std::os::fd::OwnedFd;

/// A service's state (docs/protocol.md §5.1); `deleted` is not kept, the slot is freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not running, no start pending.
    Down,
    /// A start is pending at `start_at`.
    Start,
    /// A process exists.
    Up,
}

/// How the last process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `exit` with this status (0..255).
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Ended, status unknown: an attached process that is not our child
    /// (the kernel tells only its parent). Shown as `exit\t-`.
    Unknown,
}

impl Exit {
    /// Decode a `waitpid` status.
    pub fn from_status(status: i32) -> Exit {
        if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        }
    }

    /// Decode the `si_code` and `si_status` of a `waitid` siginfo.
    pub fn from_siginfo(code: i32, status: i32) -> Exit {
        match code {
            libc::CLD_EXITED => Exit::Code(status),
            libc::CLD_KILLED | libc::CLD_DUMPED => Exit::Signal(status),
            _ => Exit::Unknown,
        }
    }
}

/// Exponential restart backoff ([EXT E7]), set by trailing `KEY=VALUE`
/// words of `service.auto_up`: `max=SECONDS` (the cap; enables it),
/// `factor=F` (default 2) and `stable=SECONDS` (a run at least this long
/// resets the interval to MIN_INTERVAL; default: the cap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Cap of the interval, ns.
    pub max_ns: i64,
    /// Growth factor in thousandths (2000 = ×2).
    pub factor_milli: i64,
    /// Run length that counts as stable, ns.
    pub stable_ns: i64,
}

/// Restart limit (an extension in the style of [EXT E7]), set by the
/// trailing word `limit=N` or `limit=N/SECONDS` of `service.auto_up`: at
/// most N automatic restarts (within any SECONDS), then the service stays
/// down until `service.start` or a new `service.auto_up`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Most automatic restarts (1..=[`MAX_LIMIT`]).
    pub restarts: u32,
    /// The window; `None`: since the last manual start.
    pub window: Option<Seconds>,
}

/// Largest N of `limit=N[/SECONDS]` (each counts 8 bytes per service).
pub const MAX_LIMIT: u32 = 1000;

impl Limit {
    /// Parse the value of `limit=`: `N` or `N/SECONDS`.
    pub fn parse(v: &[u8]) -> Option<Limit> {
        let (n, w) = match memchr::memchr(b'/', v) {
            Some(p) => (&v[..p], Some(&v[p + 1..])),
            None => (v, None),
        };
        let n = crate::command::parse_int(n).filter(|n| (1..=i64::from(MAX_LIMIT)).contains(n))?;
        let window = match w {
            None => None,
            Some(w) => Some(Seconds::parse(w).filter(|s| s.ns > 0)?),
        };
        Some(Limit { restarts: n as u32, window })
    }
}

/// The times of recent automatic restarts, for [`Limit`]: a ring sized
/// when the limit is set (configuration time), so counting never
/// allocates.
#[derive(Debug, Default)]
pub struct Restarts {
    times: Box<[Mono]>,
    len: usize,
    next: usize,
    /// Restarts counted since the last reset (for a limit without window).
    count: u64,
}

impl Restarts {
    /// Size the ring for `limit` (or drop it) and forget every restart.
    pub fn configure(&mut self, limit: Option<Limit>) {
        let want = match limit {
            Some(Limit { window: Some(_), restarts }) => restarts as usize,
            _ => 0,
        };
        if self.times.len() != want {
            self.times = vec![Mono(0); want].into_boxed_slice();
        }
        self.clear();
    }

    /// Forget every restart (a manual start).
    pub fn clear(&mut self) {
        (self.len, self.next, self.count) = (0, 0, 0);
    }

    /// May an automatic restart happen at `now`? If so it is counted.
    pub fn allow(&mut self, limit: Limit, now: Mono) -> bool {
        let Some(window) = limit.window else {
            if self.count >= u64::from(limit.restarts) {
                return false;
            }
            self.count += 1;
            return true;
        };
        let cap = self.times.len();
        if cap == 0 {
            return false;
        }
        if self.len < cap {
            self.times[(self.next + self.len) % cap] = now;
            self.len += 1;
            return true;
        }
        // Full: the oldest of the last N restarts must lie a window back.
        if now.0 - self.times[self.next].0 < window.ns {
            return false;
        }
        self.times[self.next] = now;
        self.next = (self.next + 1) % cap;
        true
    }
}

/// Parsed `auto_up` triggers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Triggers {
    /// The raw trigger text, shown in events.
    pub raw: Vec<u8>,
    /// `always` was listed.
    pub always: bool,
    /// Bit `n` set: signal `n` was listed.
    pub signals: u64,
    /// Restart backoff, if configured.
    pub backoff: Option<Backoff>,
    /// Restart limit, if configured.
    pub limit: Option<Limit>,
}

impl Triggers {
    /// Parse the raw remainder of `service.auto_up` after the interval.
    /// Parsing stops at the first empty word (docs/protocol.md §3.6). `None` for an unknown
    /// word (numbers are not accepted as trigger signals).
    pub fn parse(raw: &[u8]) -> Option<Triggers> {
        let mut t = Triggers { raw: raw.to_vec(), always: false, signals: 0, backoff: None, limit: None };
        let (mut max, mut factor, mut stable) = (None, 2000, None);
        for word in raw.split(|&b| b == b'\t') {
            if word.is_empty() {
                break;
            }
            if let Some(v) = word.strip_prefix(b"limit=") {
                t.limit = Some(Limit::parse(v)?);
            } else if let Some(p) = memchr::memchr(b'=', word) {
                let (key, val) = (&word[..p], Seconds::parse(&word[p + 1..])?);
                match key {
                    b"max" if val.ns > 0 => max = Some(val.ns),
                    b"stable" if val.ns > 0 => stable = Some(val.ns),
                    // A factor in (1, 1000], kept in thousandths.
                    b"factor" if val.ns > SEC && val.ns <= 1000 * SEC => factor = val.ns / 1_000_000,
                    _ => return None,
                }
            } else if word == b"always" {
                t.always = true;
            } else {
                let sig = signame::lookup_name(word)?;
                if !(1..64).contains(&sig) {
                    return None;
                }
                t.signals |= 1u64 << sig;
            }
        }
        match (max, stable) {
            (Some(max_ns), _) => {
                t.backoff = Some(Backoff { max_ns, factor_milli: factor, stable_ns: stable.unwrap_or(max_ns) })
            }
            (None, Some(_)) => return None,
            (None, None) if factor != 2000 => return None,
            _ => {}
        }
        Some(t)
    }

    /// Does this trigger list name signal `sig`?
    pub fn has_signal(&self, sig: i32) -> bool {
        (1..64).contains(&sig) && self.signals & (1u64 << sig) != 0
    }
}

/// The per-service values counted against `--service-pool NxM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `service.tags`.
    Tags,
    /// `service.args`.
    Args,
    /// `service.fds`.
    Fds,
    /// `service.auto_up` triggers.
    Triggers,
}

/// One service.
#[derive(Debug)]
pub struct Service {
    /// Its name.
    pub name: Name,
    /// Current state.
    pub state: State,
    /// When the pending start is due (state `Start`).
    pub start_at: Mono,
    /// The start was asked for at a fractional second ([EXT E3]): events
    /// show the fraction.
    pub start_frac: bool,
    /// Pid of the running or last process (0: none yet).
    pub pid: i32,
    /// When the running or last process was forked.
    pub up_at: Mono,
    /// When the last process was reaped.
    pub reap_at: Mono,
    /// How the last process ended; `None` if never run or forgotten.
    pub exit: Option<Exit>,
    /// Raw `service.tags` value.
    pub tags: Vec<u8>,
    /// Raw `service.args` value (TAB-separated argv).
    pub args: Vec<u8>,
    /// Raw `service.fds` value; `None` = never set (`null null null`).
    pub fds: Option<Vec<u8>>,
    /// MIN_INTERVAL for automatic restarts (default 1 s, [FIX F17]).
    pub interval: Seconds,
    /// Auto-up triggers; `None` = auto-up off.
    pub triggers: Option<Triggers>,
    /// The current restart interval under backoff (ns; starts at
    /// MIN_INTERVAL).
    pub backoff_ns: i64,
    /// The controller slot of a running controller service.
    pub controller: Option<usize>,
    /// The pidfd of an attached process (`service.attach`): up, but not
    /// our child.
    pub pidfd: Option<OwnedFd>,
    /// The previous `service.stat` CPU sample of the current process.
    pub sample: Option<Sample>,
    /// Recent automatic restarts, counted against the restart limit.
    pub restarts: Restarts,
    /// The restart limit stopped the service: auto-up leaves it down until
    /// `service.start` or `service.auto_up`.
    pub limited: bool,
}

impl Service {
    fn new(name: Name) -> Service {
        Service {
            name,
            state: State::Down,
            start_at: Mono(0),
            start_frac: false,
            pid: 0,
            up_at: Mono(0),
            reap_at: Mono(0),
            exit: None,
            tags: Vec::new(),
            args: Vec::new(),
            fds: None,
            interval: Seconds::whole(1),
            triggers: None,
            backoff_ns: SEC,
            controller: None,
            pidfd: None,
            sample: None,
            restarts: Restarts::default(),
            limited: false,
        }
    }

    /// Is this an attached process (watched through a pidfd, not our
    /// child)?
    pub fn is_attached(&self) -> bool {
        self.pidfd.is_some()
    }

    /// Does any `service.fds` entry name a `control.*` handle?
    pub fn is_controller(&self) -> bool {
        self.fds.as_deref().is_some_and(|f| f.split(|&b| b == b'\t').any(crate::handle::is_control))
    }

    /// Is the first argument non-empty (docs/protocol.md §3.7 `no args configured`)?
    pub fn has_args(&self) -> bool {
        !self.args.is_empty() && self.args[0] != b'\t'
    }

    /// Bytes of per-service data as `--service-pool NxM` counts them:
    /// Σ len(key)+len(value)+2 over the keys that are set, with `field`
    /// replaced by `value` (unset fds cost nothing).
    pub fn data_cost(&self, field: Field, value: Option<&[u8]>) -> usize {
        let len = |v: &[u8]| (!v.is_empty()).then_some(v.len());
        let current = [
            (Field::Tags, 4, len(&self.tags)),
            (Field::Args, 4, len(&self.args)),
            (Field::Fds, 3, self.fds.as_deref().map(<[u8]>::len)),
            (Field::Triggers, 8, self.triggers.as_ref().map(|t| t.raw.len())),
        ];
        current
            .iter()
            .map(|&(f, key, cur)| {
                let v = if f == field { value.map(<[u8]>::len) } else { cur };
                v.map_or(0, |n| key + n + 2)
            })
            .sum()
    }

    /// Should auto-up start this service now, given the pending signal
    /// counts (indexed by signal number)?
    pub fn auto_wanted(&self, count_of: impl Fn(i32) -> u64) -> bool {
        match &self.triggers {
            _ if self.limited => false,
            None => false,
            Some(t) => t.always || (1..64).any(|s| t.has_signal(s) && count_of(s) > 0),
        }
    }

    /// Count an automatic restart at `now` against the restart limit; `false`
    /// if the limit forbids it (the service is then `limited`).
    pub fn restart_allowed(&mut self, now: Mono) -> bool {
        let Some(limit) = self.triggers.as_ref().and_then(|t| t.limit) else {
            return true;
        };
        let ok = self.restarts.allow(limit, now);
        self.limited = !ok;
        ok
    }

    /// A manual start (or new triggers): forget the restarts counted.
    pub fn reset_limit(&mut self) {
        self.restarts.clear();
        self.limited = false;
    }

    /// When an automatic restart after an exit may happen:
    /// max(now, last up + MIN_INTERVAL) ([FIX F7]). Under backoff ([EXT
    /// E7]) the interval is the current one, which this call then grows
    /// (a short run) or resets (a stable run).
    pub fn restart_time(&mut self, now: Mono) -> Mono {
        let Some(b) = self.triggers.as_ref().and_then(|t| t.backoff) else {
            return now.max(self.up_at.plus(self.interval.ns));
        };
        let ran = self.reap_at.0 - self.up_at.0;
        let cap = b.max_ns.max(self.interval.ns);
        if ran >= b.stable_ns || self.backoff_ns < self.interval.ns || self.backoff_ns > cap {
            self.backoff_ns = self.interval.ns;
        }
        let at = now.max(self.up_at.plus(self.backoff_ns));
        if ran < b.stable_ns {
            // Bounded by the cap before narrowing: a cap near i64::MAX times
            // a factor would not fit back.
            let grown = (i128::from(self.backoff_ns) * i128::from(b.factor_milli) / 1000).min(i128::from(cap));
            self.backoff_ns = (grown as i64).max(self.interval.ns);
        }
        at
    }
}

/// Write `service.state\tNAME\t...` (always 9 fields, docs/protocol.md §4.1) as of `now`.
pub fn write_state(out: &mut Line, s: &Service, now: Mono) {
    out.s("service.state\t").s(&s.name).tab();
    match (s.state, s.exit) {
        (State::Start, _) => {
            out.s("start\t");
            if s.start_frac {
                Seconds { ns: s.start_at.0, frac: true }.write_to(out);
            } else {
                out.int(s.start_at.secs());
            }
            out.s("\t-\t-\t-\t-\t-");
        }
        (State::Up, _) => {
            out.s("up\t").int(s.up_at.secs()).tab().int(i64::from(s.pid));
            out.s("\t-\t-\t").int(now.secs_since(s.up_at)).s("\t-");
        }
        (State::Down, None) => {
            out.s("down\t-\t-\t-\t-\t-\t-");
        }
        (State::Down, Some(e)) => {
            out.s("down\t").int(s.reap_at.secs()).tab().int(i64::from(s.pid)).tab();
            match e {
                Exit::Code(c) => out.s("exit\t").int(i64::from(c)),
                Exit::Signal(n) => out.s("signal\tSIG").s(signame::name_of(n)),
                Exit::Unknown => out.s("exit\t-"),
            };
            out.tab().int(s.reap_at.secs_since(s.up_at)).tab().int(now.secs_since(s.reap_at));
        }
    }
}

/// Write `service.limit\tNAME\tTS\tN\tWINDOW` (an extension): the restart
/// limit left the service down at second TS; WINDOW is `-` without one.
pub fn write_limit(out: &mut Line, s: &Service, now: Mono) {
    let Some(limit) = s.triggers.as_ref().and_then(|t| t.limit) else {
        return;
    };
    out.s("service.limit\t").s(&s.name).tab().int(now.secs()).tab().int(i64::from(limit.restarts)).tab();
    match limit.window {
        Some(w) => w.write_to(out),
        None => {
            out.byte(b'-');
        }
    }
}

/// Write `service.match\tNAME\tSTATE\tPID\tTAGS` (an extension, one line per
/// service a `service.query` matched): STATE as in `service.state`, PID of
/// the running process or `-`, TAGS the raw `service.tags` value.
pub fn write_match(out: &mut Line, s: &Service) {
    out.s("service.match\t").s(&s.name).tab();
    match s.state {
        State::Up => out.s("up\t").int(i64::from(s.pid)),
        State::Down => out.s("down\t-"),
        State::Start => out.s("start\t-"),
    };
    out.tab().push(&s.tags);
}

/// How a service is matched by the filters of [`crate::query`].
pub fn subject(s: &Service) -> crate::query::Subject<'_> {
    use crate::query::{DOWN, LIMIT, START, UP};
    let state = match s.state {
        State::Up => UP,
        State::Start => START,
        State::Down if s.limited => DOWN | LIMIT,
        State::Down => DOWN,
    };
    crate::query::Subject { name: s.name.as_bytes(), tags: &s.tags, state }
}

/// Write `service.state\tNAME\tdeleted\t-\t-\t-\t-\t-\t-`.
pub fn write_deleted(out: &mut Line, name: &str) {
    out.s("service.state\t").s(name).s("\tdeleted\t-\t-\t-\t-\t-\t-");
}

/// Write `service.tags\tNAME\t<TAGS>`.
pub fn write_tags(out: &mut Line, s: &Service) {
    out.s("service.tags\t").s(&s.name).tab().push(&s.tags);
}

/// Write `service.args\tNAME\t<ARGS>`.
pub fn write_args(out: &mut Line, s: &Service) {
    out.s("service.args\t").s(&s.name).tab().push(&s.args);
}

/// Write `service.fds\tNAME\t<LIST>` (`null\tnull\tnull` if never set).
pub fn write_fds(out: &mut Line, s: &Service) {
    out.s("service.fds\t").s(&s.name).tab();
    match &s.fds {
        Some(f) => out.push(f),
        None => out.s("null\tnull\tnull"),
    };
}

/// Write `service.auto_up\tNAME\tINTERVAL\t<TRIGGERS>` or `...\t-`.
pub fn write_auto_up(out: &mut Line, s: &Service) {
    out.s("service.auto_up\t").s(&s.name).tab();
    match &s.triggers {
        Some(t) => {
            s.interval.write_to(out);
            out.tab().push(&t.raw);
        }
        None => {
            out.s("-");
        }
    }
}

/// Services the table has room for before it first grows.
pub const RESERVED: usize = 256;

/// The service table.
pub struct Services {
    slots: Vec<Option<Service>>,
    free: Vec<usize>,
    /// The slots of every service, sorted by name: a name is found by
    /// binary search, comparing with the names in `slots`. Eight bytes a
    /// service, where a map keyed by the name itself took about sixty
    /// (issue 17, per-service footprint).
    by_name: Vec<usize>,
    by_pid: HashMap<i32, usize>,
    starts: Timers,
    /// Per counted signal (index into `signal::COUNTED`): the slots whose
    /// triggers list it.
    triggered_by: [Vec<usize>; 6],
    /// Most services allowed (`--service-pool N`).
    pub limit: usize,
    /// Bytes of tags, args, fds and triggers allowed per service
    /// (`--service-pool NxM`, [FIX F1]); `None`: no limit.
    pub data_limit: Option<usize>,
}

impl Services {
    /// An empty table, with room reserved for the first
    /// [`RESERVED`] services (address space only: a page becomes resident
    /// when a service is stored in it), so a typical configuration never
    /// regrows a table and leaves no freed copies behind.
    pub fn new(limit: usize) -> Services {
        let mut t = Services {
            slots: Vec::new(),
            free: Vec::new(),
            by_name: Vec::new(),
            by_pid: HashMap::new(),
            starts: Timers::default(),
            triggered_by: Default::default(),
            limit,
            data_limit: None,
        };
        t.reserve(RESERVED.min(limit));
        t
    }

    /// Reserve room for `n` services in every run-time structure at once
    /// (`--service-pool N`), so creating them later does not grow them.
    pub fn reserve(&mut self, n: usize) {
        self.slots.reserve(n);
        self.free.reserve(n);
        self.by_name.reserve(n);
        self.by_pid.reserve(n);
        self.starts.reserve_slots(n);
        for list in &mut self.triggered_by {
            list.reserve(n);
        }
    }

    /// The name of the service in slot `i` (empty if none).
    fn name_at(&self, i: usize) -> &str {
        self.get(i).map_or("", |s| s.name.as_str())
    }

    /// Where `name` is or would go in `by_name`.
    fn place(&self, name: &str) -> Result<usize, usize> {
        self.by_name.binary_search_by(|&i| self.name_at(i).cmp(name))
    }

    /// The slot of a service by name.
    pub fn find(&self, name: &Name) -> Option<usize> {
        self.place(name.as_str()).ok().map(|p| self.by_name[p])
    }

    /// The slot of a service by name, trying slot `hint` first (where it
    /// was a moment ago).
    pub fn find_at(&self, name: &Name, hint: usize) -> Option<usize> {
        match self.get(hint) {
            Some(s) if s.name == *name => Some(hint),
            _ => self.find(name),
        }
    }

    /// The slot of a service, created `down` if missing.
    pub fn find_or_create(&mut self, name: &Name) -> Result<usize, &'static str> {
        let at = match self.place(name.as_str()) {
            Ok(p) => return Ok(self.by_name[p]),
            Err(at) => at,
        };
        if self.by_name.len() >= self.limit {
            return Err("Unable to allocate new service");
        }
        let svc = Service::new(*name);
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(svc);
                i
            }
            None => {
                self.slots.push(Some(svc));
                self.slots.len() - 1
            }
        };
        self.by_name.insert(at, i);
        // Size the run-time structures now, so the loop never grows them.
        self.starts.reserve_slots(self.slots.len());
        self.by_pid.reserve(self.by_name.len().saturating_sub(self.by_pid.len()));
        Ok(i)
    }

    /// Whether slot `i` may hold `value` in `field` within the data limit.
    pub fn fits(&self, i: usize, field: Field, value: Option<&[u8]>) -> bool {
        match (self.data_limit, self.get(i)) {
            (Some(m), Some(s)) => s.data_cost(field, value) <= m,
            _ => true,
        }
    }

    /// The service in slot `i`.
    pub fn get(&self, i: usize) -> Option<&Service> {
        self.slots.get(i).and_then(Option::as_ref)
    }

    /// The service in slot `i`, mutably.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Service> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    /// Forget a (not running) service.
    pub fn delete(&mut self, i: usize) -> Option<Service> {
        // Out of the name index first: it reads the name from the slot.
        let name = self.get(i)?.name;
        if let Ok(p) = self.place(name.as_str()) {
            self.by_name.remove(p);
        }
        let s = self.slots.get_mut(i)?.take()?;
        self.starts.remove(i);
        for list in &mut self.triggered_by {
            list.retain(|&x| x != i);
        }
        self.free.push(i);
        Some(s)
    }

    /// Put a service in `start` at `at` (rescheduling a pending start).
    pub fn schedule(&mut self, i: usize, at: Mono) {
        let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        s.state = State::Start;
        s.start_at = at;
        s.start_frac = false;
        self.starts.set(i, at);
    }

    /// Drop a pending start (state becomes `down` with no exit data).
    pub fn cancel(&mut self, i: usize) {
        let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if s.state == State::Start {
            self.starts.remove(i);
            s.state = State::Down;
            s.exit = None;
        }
    }

    /// The earliest pending start.
    pub fn next_start(&self) -> Option<Mono> {
        self.starts.first().map(|(t, _)| t)
    }

    /// Take one start that is due at `now`, leaving the service in `Start`
    /// for the caller to fork (or reschedule).
    pub fn pop_due(&mut self, now: Mono) -> Option<usize> {
        self.starts.pop_due(now)
    }

    /// Record that slot `i` is up as `pid`.
    pub fn set_up(&mut self, i: usize, pid: i32, now: Mono) {
        if let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) {
            s.state = State::Up;
            s.pid = pid;
            s.up_at = now;
            s.sample = None;
            self.by_pid.insert(pid, i);
        }
    }

    /// The slot whose running process (child or attached) is `pid`.
    pub fn by_pid(&self, pid: i32) -> Option<usize> {
        self.by_pid.get(&pid).copied()
    }

    /// Record the exit of slot `i`'s process, found by slot (an attached
    /// process whose pidfd became readable). The pid entry is dropped only
    /// if it is still this slot's. `false` if the service was not up.
    pub fn set_down_slot(&mut self, i: usize, exit: Exit, now: Mono) -> bool {
        let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return false;
        };
        if s.state != State::Up {
            return false;
        }
        if self.by_pid.get(&s.pid) == Some(&i) {
            self.by_pid.remove(&s.pid);
        }
        s.state = State::Down;
        s.exit = Some(exit);
        s.reap_at = now;
        true
    }

    /// Record an exit; returns the slot if `pid` was a service.
    pub fn set_down(&mut self, pid: i32, exit: Exit, now: Mono) -> Option<usize> {
        let i = self.by_pid.remove(&pid)?;
        let s = self.slots.get_mut(i)?.as_mut()?;
        s.state = State::Down;
        s.exit = Some(exit);
        s.reap_at = now;
        Some(i)
    }

    /// Record which counted signals slot `i`'s triggers list (after
    /// `service.auto_up` changed them).
    pub fn index_triggers(&mut self, i: usize) {
        let t = self.get(i).and_then(|s| s.triggers.clone());
        for (k, list) in self.triggered_by.iter_mut().enumerate() {
            let listed = t.as_ref().is_some_and(|t| t.has_signal(crate::signal::COUNTED[k]));
            let at = list.iter().position(|&x| x == i);
            match (listed, at) {
                (true, None) => list.push(i),
                (false, Some(p)) => {
                    list.swap_remove(p);
                }
                _ => {}
            }
        }
    }

    /// The slots whose triggers list counted signal `k`.
    pub fn triggered_by(&self, k: usize) -> &[usize] {
        self.triggered_by.get(k).map_or(&[], Vec::as_slice)
    }

    /// The first service whose name sorts after `after` (or the first).
    pub fn next_after(&self, after: Option<&Name>) -> Option<usize> {
        let from = match after {
            None => 0,
            Some(a) => self.by_name.partition_point(|&i| self.name_at(i) <= a.as_str()),
        };
        self.by_name.get(from).copied()
    }

    /// Slots of every service, in name order.
    pub fn iter_slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.by_name.iter().copied()
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are no services.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Default time before retrying a failed fork (docs/protocol.md §5.1).
pub const RETRY_NS: i64 = 3 * SEC;

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl Fn(&mut Line)) -> String {
        let mut l = Line::new();
        f(&mut l);
        String::from_utf8(l.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn state_lines() {
        let mut t = Services::new(10);
        let i = t.find_or_create(&Name::from("foo").unwrap()).unwrap();
        let now = Mono(200 * SEC);
        assert_eq!(text(|l| write_state(l, t.get(i).unwrap(), now)), "service.state\tfoo\tdown\t-\t-\t-\t-\t-\t-");
        t.schedule(i, Mono(199 * SEC));
        assert_eq!(text(|l| write_state(l, t.get(i).unwrap(), now)), "service.state\tfoo\tstart\t199\t-\t-\t-\t-\t-");
        assert_eq!(t.pop_due(now), Some(i));
        t.set_up(i, 42, Mono(196 * SEC));
        assert_eq!(text(|l| write_state(l, t.get(i).unwrap(), now)), "service.state\tfoo\tup\t196\t42\t-\t-\t4\t-");
        t.set_down(42, Exit::Signal(libc::SIGQUIT), Mono(198 * SEC + 5));
        assert_eq!(
            text(|l| write_state(l, t.get(i).unwrap(), now)),
            "service.state\tfoo\tdown\t198\t42\tsignal\tSIGQUIT\t2\t1"
        );
        assert_eq!(t.get_mut(i).unwrap().restart_time(now), now);
        assert_eq!(text(|l| write_auto_up(l, t.get(i).unwrap())), "service.auto_up\tfoo\t-");
        assert_eq!(text(|l| write_fds(l, t.get(i).unwrap())), "service.fds\tfoo\tnull\tnull\tnull");
        t.delete(i);
        assert!(t.find(&Name::from("foo").unwrap()).is_none());
    }

    #[test]
    fn triggers() {
        let t = Triggers::parse(b"always\tSIGHUP\t\tjunk").unwrap();
        assert!(t.always && t.has_signal(libc::SIGHUP));
        assert!(Triggers::parse(b"1").is_none());
        assert!(Triggers::parse(b"BOGUS").is_none());
        assert!(Triggers::parse(b"USR1").unwrap().has_signal(libc::SIGUSR1));
    }

    #[test]
    fn backoff_grows_and_resets() {
        let tr = Triggers::parse(b"always\tmax=0.08\tstable=1").unwrap();
        assert_eq!(tr.backoff, Some(Backoff { max_ns: SEC * 8 / 100, factor_milli: 2000, stable_ns: SEC }));
        assert!(Triggers::parse(b"always\tstable=1").is_none());
        assert!(Triggers::parse(b"always\tfactor=1").is_none());
        assert!(Triggers::parse(b"always\tbogus=1").is_none());
        let mut s = Service::new(Name::from("x").unwrap());
        s.interval = Seconds::parse(b"0.01").unwrap();
        s.triggers = Some(tr);
        let mut gaps = Vec::new();
        let mut now = Mono(100 * SEC);
        for _ in 0..6 {
            s.up_at = now;
            s.reap_at = now.plus(SEC / 1000);
            let at = s.restart_time(s.reap_at);
            gaps.push((at.0 - s.up_at.0) / 1_000_000);
            now = at;
        }
        assert_eq!(gaps, [10, 20, 40, 80, 80, 80]);
        // A stable run resets to MIN_INTERVAL.
        s.up_at = now;
        s.reap_at = now.plus(2 * SEC);
        assert_eq!(s.restart_time(s.reap_at), s.reap_at);
        s.up_at = s.reap_at;
        s.reap_at = s.up_at.plus(SEC / 1000);
        assert_eq!(s.restart_time(s.reap_at).0 - s.up_at.0, SEC / 100);
    }

    #[test]
    fn restart_limit_in_a_window() {
        let t = Triggers::parse(b"always\tlimit=3/10\tmax=1").unwrap();
        assert_eq!(t.limit, Some(Limit { restarts: 3, window: Some(Seconds::whole(10)) }));
        assert!(t.backoff.is_some());
        assert_eq!(Triggers::parse(b"always\tlimit=2").unwrap().limit, Some(Limit { restarts: 2, window: None }));
        for bad in ["limit=0/10", "limit=1001", "limit=3/0", "limit=3/", "limit=x", "limit=-1"] {
            assert!(Triggers::parse(format!("always\t{bad}").as_bytes()).is_none(), "{bad}");
        }
        let mut s = Service::new(Name::from("x").unwrap());
        s.triggers = Some(t);
        s.restarts.configure(s.triggers.as_ref().and_then(|t| t.limit));
        let at = |secs: i64| Mono(secs * SEC);
        // Three restarts within 10 s, the fourth refused ...
        assert!(s.restart_allowed(at(100)) && s.restart_allowed(at(101)) && s.restart_allowed(at(102)));
        assert!(!s.restart_allowed(at(109)) && s.limited);
        assert!(!s.auto_wanted(|_| 0));
        // ... allowed again once the oldest lies 10 s back, and after a
        // manual start.
        s.reset_limit();
        assert!(s.auto_wanted(|_| 0));
        assert!(s.restart_allowed(at(110)) && s.restart_allowed(at(111)) && s.restart_allowed(at(112)));
        assert!(!s.restart_allowed(at(119)));
        assert!(s.restart_allowed(at(120)) && !s.limited);
        assert_eq!(text(|l| write_limit(l, &s, at(120))), "service.limit\tx\t120\t3\t10");
    }

    #[test]
    fn restart_limit_without_window() {
        let mut s = Service::new(Name::from("y").unwrap());
        s.triggers = Triggers::parse(b"always\tlimit=2");
        s.restarts.configure(s.triggers.as_ref().and_then(|t| t.limit));
        assert!(s.restart_allowed(Mono(0)) && s.restart_allowed(Mono(1000 * SEC)));
        assert!(!s.restart_allowed(Mono(100_000 * SEC)));
        assert_eq!(text(|l| write_limit(l, &s, Mono(5 * SEC))), "service.limit\ty\t5\t2\t-");
    }

    #[test]
    fn attached_exit_and_match_lines() {
        let mut t = Services::new(10);
        let i = t.find_or_create(&Name::from("ext").unwrap()).unwrap();
        t.set_up(i, 77, Mono(10 * SEC));
        assert_eq!(t.by_pid(77), Some(i));
        t.get_mut(i).unwrap().tags = b"user=ann\tsession=s1".to_vec();
        assert_eq!(text(|l| write_match(l, t.get(i).unwrap())), "service.match\text\tup\t77\tuser=ann\tsession=s1");
        assert!(t.set_down_slot(i, Exit::Unknown, Mono(12 * SEC)));
        assert!(!t.set_down_slot(i, Exit::Unknown, Mono(12 * SEC)));
        assert_eq!(t.by_pid(77), None);
        assert_eq!(
            text(|l| write_state(l, t.get(i).unwrap(), Mono(13 * SEC))),
            "service.state\text\tdown\t12\t77\texit\t-\t2\t1"
        );
        assert_eq!(Exit::from_siginfo(libc::CLD_KILLED, 9), Exit::Signal(9));
        assert_eq!(Exit::from_siginfo(libc::CLD_EXITED, 4), Exit::Code(4));
        assert_eq!(text(|l| write_match(l, t.get(i).unwrap())), "service.match\text\tdown\t-\tuser=ann\tsession=s1");
    }

    #[test]
    fn limit() {
        let mut t = Services::new(1);
        t.find_or_create(&Name::from("a").unwrap()).unwrap();
        assert_eq!(t.find_or_create(&Name::from("b").unwrap()), Err("Unable to allocate new service"));
    }

    #[test]
    fn names_are_found_and_listed_in_order() {
        let n = |s: &str| Name::from(s).unwrap();
        let mut t = Services::new(100);
        let names = ["m", "b", "zz", "a", "q", "c", "y"];
        let slots: Vec<usize> = names.iter().map(|x| t.find_or_create(&n(x)).unwrap()).collect();
        assert_eq!(t.find_or_create(&n("q")), Ok(slots[4]), "an existing name keeps its slot");
        let order = |t: &Services| t.iter_slots().map(|i| t.get(i).unwrap().name.to_string()).collect::<Vec<_>>();
        assert_eq!(order(&t), ["a", "b", "c", "m", "q", "y", "zz"]);
        for (x, &i) in names.iter().zip(&slots) {
            assert_eq!(t.find(&n(x)), Some(i));
        }
        assert_eq!(t.find(&n("d")), None);
        let next = |t: &Services, after: Option<&str>| {
            t.next_after(after.map(n).as_ref()).map(|i| t.get(i).unwrap().name.to_string())
        };
        assert_eq!(next(&t, None).as_deref(), Some("a"));
        assert_eq!(next(&t, Some("c")).as_deref(), Some("m"));
        assert_eq!(next(&t, Some("d")).as_deref(), Some("m"), "after a name that is not there");
        assert_eq!(next(&t, Some("zz")), None);
        // delete from the middle: the slot is reused, the order kept
        let m = t.find(&n("m")).unwrap();
        assert!(t.delete(m).is_some());
        assert_eq!(t.find(&n("m")), None);
        assert_eq!(t.find_at(&n("q"), m), Some(slots[4]), "a stale hint falls back to the name");
        assert_eq!(t.find_at(&n("q"), slots[4]), Some(slots[4]));
        let e = t.find_or_create(&n("e")).unwrap();
        assert_eq!(e, m, "the freed slot is taken again");
        assert_eq!(t.find_at(&n("m"), e), None, "the slot now holds another name");
        assert_eq!(order(&t), ["a", "b", "c", "e", "q", "y", "zz"]);
        assert_eq!(t.len(), 7);
    }
}
