//! The event loop: one thread, one `mio::Poll`, and every table.
//!
//! Each pass (docs/protocol.md §2.5): take signal deliveries (and start the
//! services they trigger), reap every exited child, note the exits of
//! attached processes (their pidfds polled readable), fork the services
//! whose start is due, then give each controller its turn — flush output, tell it
//! of new signals, continue a paused statedump, read input and run at most
//! three commands. The poll timeout is the nearest deadline (a pending
//! start, a log retry, a controller timeout), or zero while work is waiting.

use crate::clock::{Mono, SEC};
use crate::command::Name;
use crate::controller::{self, Controller, Dump, IN_BUF, Input};
use crate::figures::{self, Clocks, Figures, Sample};
use crate::handle::{self, Handles};
use crate::line::Line;
use crate::listener::{self, Listener};
use crate::log::{Level, Log};
use crate::reply::{self, Fail};
use crate::service::{self, Exit, Services, State};
use crate::signal::{self, Signals};
use crate::spawn::{Source, Spawner};
use crate::sys::PidfdWait;
use crate::{log, query, sys};
use arrayvec::ArrayVec;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Token of the signal wake pipe.
const WAKE: Token = Token(0);
/// Token of the control socket listener.
pub const LISTENER: Token = Token(1);
/// Token of the deadline timerfd.
const DEADLINE: Token = Token(usize::MAX);
/// How long a failed `accept` waits before the next try (ns).
const ACCEPT_RETRY_NS: i64 = SEC / 4;
/// Default number of controller slots ([EXT E2]).
pub const DEFAULT_CONTROLLERS: usize = 16;

fn in_token(slot: usize) -> Token {
    Token(2 + 2 * slot)
}

fn out_token(slot: usize) -> Token {
    Token(3 + 2 * slot)
}

/// Most readiness events one poll returns (and attached exits noted per
/// turn).
const EVENTS: usize = 64;

/// Why the loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// `terminate N` or the end of an interactive session (code 0).
    Normal(i32),
}

/// Whether the program's code pages (and the stack start-up used) are to be
/// given back once start-up has settled (sys::rest_plan, sys::give_back;
/// docs/design.md, "Code at rest").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodePages {
    /// Nothing (more) to give back: `--mlockall`, tests driving the loop
    /// themselves, or done and logged.
    Keep,
    /// When the loop has had nothing to do for [`SETTLE`] since this time.
    Pending(Mono),
    /// Settled: given back just before the next wait, so that only what
    /// that wait and the rest of its turn touch comes back.
    Due,
    /// Done; the outcome is logged when the wait returns (logging before
    /// it would bring the log's code back), then `Keep`.
    Given(Result<sys::GivenBack, sys::Errno>),
}

/// How long the loop must be idle before start-up counts as over.
pub const SETTLE: i64 = SEC;

/// Everything daemonproxy knows.
pub struct Supervisor {
    poll: Poll,
    events: Events,
    wake_rx: mio::unix::pipe::Receiver,
    /// The services.
    pub services: Services,
    /// The named handles.
    pub handles: Handles,
    /// Controller slots (fixed count).
    pub ctls: Vec<Option<Box<Controller>>>,
    /// Preallocated controllers not in use (one per free slot). Boxed on
    /// purpose: a controller moves between here and `ctls` as a pointer,
    /// never reallocated or copied.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Controller>>,
    /// Counted signals.
    pub signals: Signals,
    /// The log.
    pub log: Log,
    /// Reusable spawn buffers.
    pub spawner: Spawner,
    /// Time of the current pass.
    pub now: Mono,
    /// Set by `terminate` (or the end of `-i`): the loop ends after this pass.
    pub end: Option<End>,
    /// Exec-on-exit arguments, TAB-separated (docs/protocol.md §8.4).
    pub exec_args: Vec<u8>,
    /// Terminate guard code (0: not armed).
    pub guard: i64,
    /// The `/dev/null` descriptor (for re-pointing std handles).
    pub null_fd: RawFd,
    /// The control socket, if one was created.
    pub listener: Option<Listener>,
    /// The listener polled readable and has not yet returned `EAGAIN`.
    listener_ready: bool,
    /// `No free controllers` was logged for the current wait.
    accept_warned: bool,
    /// `accept` failed for want of descriptors or memory: try again then
    /// (the waiting connection raises no new readiness edge).
    accept_retry: Option<Mono>,
    /// That failure was logged; quiet until an accept succeeds.
    accept_failed: bool,
    /// What the fatal-signal handler was last prepared with.
    fatal_prepared: Option<(Vec<u8>, bool, Option<RawFd>)>,
    /// Log orphans at info level (`--subreaper`), else at debug.
    pub report_orphans: bool,
    /// Uids besides root and our own whose control connections are accepted
    /// (`--socket-allow-uid`).
    pub socket_uids: Vec<u32>,
    /// The controller service that sent `terminate`, if one did.
    pub terminator: Option<usize>,
    /// Mode and group of the control socket's file (`--socket-mode`,
    /// `--socket-group`).
    pub socket_perm: listener::Perm,
    /// A timerfd armed at the next deadline: `epoll_wait` counts its
    /// timeout in whole milliseconds (rounded up), which would make every
    /// sub-second interval ([EXT E3]) up to 1 ms late. `None` if it could
    /// not be created; the millisecond timeout alone then applies.
    deadline_fd: Option<OwnedFd>,
    /// The deadline it is armed at.
    deadline_armed: Option<Mono>,
    /// Service slots whose pidfd polled readable (an attached process may
    /// have exited), handled in the next pass.
    attach_ready: ArrayVec<usize, EVENTS>,
    /// Clock tick and page size for `service.stat`.
    clocks: Clocks,
    /// The /proc we see is our pid namespace's (checked per `service.stat`).
    proc_ok: bool,
    /// Start-up's code pages: kept, to be given back, or given back.
    pub code_pages: CodePages,
}

impl Supervisor {
    /// A supervisor with the given tables, no controllers yet, signal
    /// handlers installed.
    pub fn new(handles: Handles, services: Services, log: Log, slots: usize, null_fd: RawFd) -> std::io::Result<Self> {
        let poll = Poll::new()?;
        let (tx, mut rx) = mio::unix::pipe::new()?;
        poll.registry().register(&mut rx, WAKE, Interest::READABLE)?;
        let deadline_fd = sys::timerfd().ok().filter(|fd| {
            poll.registry().register(&mut SourceFd(&fd.as_raw_fd()), DEADLINE, Interest::READABLE).is_ok()
        });
        let tx = OwnedFd::from(tx);
        signal::install(&tx)?;
        drop(tx);
        let mut ctls = Vec::with_capacity(slots);
        ctls.resize_with(slots, || None);
        let spare = controller::Bufs::pool(slots)
            .enumerate()
            .map(|(k, bufs)| Box::new(Controller::new(k, controller::Kind::Config, None, None, None, bufs)))
            .collect();
        Ok(Supervisor {
            poll,
            events: Events::with_capacity(EVENTS),
            wake_rx: rx,
            services,
            handles,
            ctls,
            spare,
            signals: Signals::default(),
            log,
            spawner: Spawner::new(),
            now: Mono::now(),
            end: None,
            exec_args: Vec::new(),
            guard: 0,
            null_fd,
            listener: None,
            listener_ready: false,
            accept_warned: false,
            accept_retry: None,
            accept_failed: false,
            socket_uids: Vec::new(),
            socket_perm: listener::Perm::default(),
            terminator: None,
            fatal_prepared: None,
            report_orphans: false,
            deadline_fd,
            deadline_armed: None,
            attach_ready: ArrayVec::new(),
            clocks: Clocks::get(),
            proc_ok: false,
            code_pages: CodePages::Keep,
        })
    }

    /// The poll token of service slot `i`'s pidfd: after the controllers'
    /// (their count is fixed), one per service slot, so a slot's token
    /// never changes.
    fn service_token(&self, i: usize) -> Token {
        Token(2 + 2 * self.ctls.len() + i)
    }

    // ----- output -------------------------------------------------------

    /// Send a line to every controller with an output side (docs/protocol.md §2.5).
    pub fn broadcast(&mut self, line: &Line) {
        let now = self.now;
        for c in self.ctls.iter_mut().flatten() {
            c.send(line.as_bytes(), now);
        }
    }

    /// Send a line to one controller.
    pub fn reply(&mut self, c: usize, line: &Line) {
        let now = self.now;
        if let Some(Some(ctl)) = self.ctls.get_mut(c) {
            ctl.send(line.as_bytes(), now);
        }
    }

    /// Broadcast the `service.state` line of slot `i`.
    pub fn emit_state(&mut self, i: usize) {
        let Some(s) = self.services.get(i) else {
            return;
        };
        let mut l = Line::new();
        service::write_state(&mut l, s, self.now);
        self.broadcast(&l);
    }

    /// Broadcast `fd.state` for a handle.
    pub fn emit_fd(&mut self, name: &Name) {
        let Some(h) = self.handles.get(name.as_bytes()) else {
            return;
        };
        let mut l = Line::new();
        handle::write_state(&mut l, name, h);
        self.broadcast(&l);
    }

    /// Report a failed command to its issuer and the log (docs/protocol.md §2.7).
    pub fn fail(&mut self, c: usize, cmd: &[u8], f: &Fail<'_>) {
        let mut l = Line::new();
        reply::error_line(&mut l, f, cmd);
        self.reply(c, &l);
        if self.log.enabled(Level::Error) {
            let mut m = Line::new();
            m.s("controller[").int(c as i64).s("] command failed: ");
            reply::write_quoted_prefix(&mut m, cmd, 90, b'\'', b'\'');
            if self.log.is_tty() {
                // A person reads a terminal, next to the `error` reply:
                // one line. Files and pipes get 1.1's two (docs/protocol.md §10.3).
                m.s(" with error: '");
                f.write_to(&mut m);
                m.byte(b'\'');
                self.log.bytes(Level::Error, &[m.as_bytes()]);
                return;
            }
            self.log.bytes(Level::Error, &[m.as_bytes()]);
            m.clear();
            m.s("  with error: '");
            f.write_to(&mut m);
            m.byte(b'\'');
            self.log.bytes(Level::Error, &[m.as_bytes()]);
        }
    }

    /// Re-resolve the log destination after the handle table changed.
    pub fn refresh_log_fd(&mut self) {
        if let crate::log::Dest::Handle(n) = self.log.dest {
            let fd = self.handles.fd_of(n.as_bytes());
            self.log.set_fd(fd);
        }
    }

    // ----- services -----------------------------------------------------

    /// Put slot `i` in `start` at `at` and broadcast it.
    pub fn start_at(&mut self, i: usize, at: Mono) {
        self.services.schedule(i, at);
        self.emit_state(i);
    }

    /// Auto-up cases (1) and (2) of docs/protocol.md §5.2: start a down or pending service
    /// now if its triggers ask for it.
    pub fn auto_start_now(&mut self, i: usize) {
        let Some(s) = self.services.get(i) else {
            return;
        };
        if s.state != State::Up && s.auto_wanted(|sig| self.signals.count_of(sig)) {
            let now = self.now;
            self.start_at(i, now);
        }
    }

    fn on_signals(&mut self, arrived: u8) {
        for k in 0..signal::COUNTED.len() {
            if arrived & (1 << k) == 0 {
                continue;
            }
            // A new receipt starts every down or pending service listing it
            // (unless its restart limit holds it).
            for j in 0..self.services.triggered_by(k).len() {
                let Some(&i) = self.services.triggered_by(k).get(j) else { break };
                if self.services.get(i).is_some_and(|s| s.state != State::Up && !s.limited) {
                    let now = self.now;
                    self.start_at(i, now);
                }
            }
        }
    }

    fn reap(&mut self) {
        while let Some((pid, status)) = sys::reap_any() {
            let exit = Exit::from_status(status);
            let Some(i) = self.services.set_down(pid, exit, self.now) else {
                // An orphan (we are PID 1 or a subreaper): reaped, no event.
                let (how, v) = match exit {
                    Exit::Code(c) => ("exit", c),
                    Exit::Signal(s) => ("signal", s),
                    Exit::Unknown => ("exit", -1),
                };
                let level = if self.report_orphans { Level::Info } else { Level::Debug };
                self.log.msg(level, format_args!("reaped orphan pid {pid} ({how} {v})"));
                continue;
            };
            self.after_exit(i);
        }
    }

    /// Note the exits of attached processes whose pidfd polled readable.
    /// The kernel gives the status only if the process became our child
    /// (we are PID 1 or a subreaper and its parent died): `waitid` on the
    /// pidfd reaps it then; otherwise the status is unknown.
    fn reap_attached(&mut self) {
        while let Some(i) = self.attach_ready.pop() {
            let Some(fd) = self.services.get(i).and_then(|s| s.pidfd.as_ref()).map(AsRawFd::as_raw_fd) else {
                continue;
            };
            // A stale event (an earlier pidfd of this slot) is not readable.
            if !sys::readable_now(fd) {
                continue;
            }
            let exit = match sys::pidfd_wait(fd, false) {
                Ok(PidfdWait::Exited(code, status)) => Exit::from_siginfo(code, status),
                Ok(PidfdWait::Running) => continue,
                Ok(PidfdWait::NotChild) | Err(_) => Exit::Unknown,
            };
            if self.services.set_down_slot(i, exit, self.now) {
                self.after_exit(i);
            }
        }
    }

    /// Stop watching the pidfd of slot `i`, if it has one.
    fn unwatch(&mut self, i: usize) {
        if let Some(fd) = self.services.get_mut(i).and_then(|s| s.pidfd.take()) {
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
    }

    /// The process of slot `i` ended (already recorded as down): broadcast
    /// it, end an output-only controller, and restart it if auto-up says so
    /// and the restart limit allows.
    fn after_exit(&mut self, i: usize) {
        self.unwatch(i);
        self.emit_state(i);
        // An output-only controller (control.event alone) has no EOF to
        // wait for: it goes with its service ([FIX F23]).
        if let Some(slot) = self.services.get(i).and_then(|s| s.controller)
            && let Some(Some(c)) = self.ctls.get(slot)
            && c.in_fd.is_none()
        {
            self.end_controller(slot, true);
        }
        // Auto-up case (3): rate-limited restart after an exit.
        let now = self.now;
        let signals = &self.signals;
        let Some(s) = self.services.get_mut(i) else {
            return;
        };
        if !s.auto_wanted(|sig| signals.count_of(sig)) {
            return;
        }
        if s.restart_allowed(now) {
            let at = s.restart_time(now);
            self.start_at(i, at);
        } else {
            let mut l = Line::new();
            service::write_limit(&mut l, s, now);
            self.broadcast(&l);
        }
    }

    /// Put process `pid` (not our child) under watch as service `i`
    /// through `pidfd`; the caller checked that the service is not up.
    pub fn attach(&mut self, i: usize, pid: i32, pidfd: OwnedFd) -> Result<(), sys::Errno> {
        let token = self.service_token(i);
        let raw = pidfd.as_raw_fd();
        if let Err(e) = self.poll.registry().register(&mut SourceFd(&raw), token, Interest::READABLE) {
            return Err(e.raw_os_error().unwrap_or(libc::EINVAL));
        }
        self.services.cancel(i);
        self.services.set_up(i, pid, self.now);
        if let Some(s) = self.services.get_mut(i) {
            s.pidfd = Some(pidfd);
            s.reset_limit();
        }
        self.emit_state(i);
        Ok(())
    }

    fn fork_due(&mut self) {
        while let Some(i) = self.services.pop_due(self.now) {
            self.fork(i);
        }
    }

    fn retry_later(&mut self, i: usize) {
        log!(self.log, Info, "will retry in 3 seconds");
        let at = self.now.plus(service::RETRY_NS);
        self.start_at(i, at);
    }

    fn free_slot(&self) -> Option<usize> {
        self.ctls.iter().position(Option::is_none)
    }

    /// Fork service `i` (docs/protocol.md §5.3).
    fn fork(&mut self, i: usize) {
        let Some(s) = self.services.get(i) else {
            return;
        };
        if s.state != State::Start {
            return;
        }
        // A controller service gets a slot and a socketpair first (docs/protocol.md §7.3).
        let mut pair: Option<(OwnedFd, OwnedFd, usize, bool, bool)> = None;
        if s.is_controller() {
            let fds = s.fds.as_deref().unwrap_or(b"");
            let has = |n: &[u8]| fds.split(|&b| b == b'\t').any(|e| e == n);
            let (ev, cmd) = (has(b"control.event"), has(b"control.cmd"));
            let sock = has(b"control.socket");
            let Some(slot) = self.free_slot() else {
                // [FIX F2]: no free controller slot is a failed fork.
                log!(self.log, Error, "can't allocate controller object");
                self.retry_later(i);
                return;
            };
            use nix::sys::socket::{AddressFamily, Shutdown, SockFlag, SockType, shutdown, socketpair};
            match socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC) {
                Ok((ours, theirs)) => {
                    // Only control.event: no input side; only control.cmd: no
                    // output side.
                    let input = cmd || sock;
                    let output = ev || sock;
                    if !input {
                        let _ = shutdown(ours.as_raw_fd(), Shutdown::Read);
                        let _ = shutdown(theirs.as_raw_fd(), Shutdown::Write);
                    }
                    if !output {
                        let _ = shutdown(ours.as_raw_fd(), Shutdown::Write);
                        let _ = shutdown(theirs.as_raw_fd(), Shutdown::Read);
                    }
                    pair = Some((ours, theirs, slot, input, output));
                }
                Err(e) => {
                    let mut eb = [0u8; 128];
                    let t = sys::strerror(e as i32, &mut eb);
                    self.log.bytes(Level::Error, &[b"fork failed: ", t]);
                    self.retry_later(i);
                    return;
                }
            }
        }
        let Some(s) = self.services.get(i) else {
            return;
        };
        let sp = &mut self.spawner;
        sp.map.clear();
        sp.abort = false;
        // Whatever goes wrong is logged here, by us: the child never
        // writes (src/spawn.rs).
        let fds: &[u8] = s.fds.as_deref().unwrap_or(b"null\tnull\tnull");
        if !fds.is_empty() {
            for entry in fds.split(|&b| b == b'\t') {
                if entry.is_empty() {
                    log!(self.log, Warning, "ignoring zero-length file descriptor name");
                    continue;
                }
                if entry == b"-" {
                    sp.map.push(Source::Closed);
                } else if handle::is_control(entry) {
                    match &pair {
                        Some((_, theirs, ..)) => sp.map.push(Source::Fd(theirs.as_raw_fd())),
                        None => sp.map.push(Source::Closed),
                    }
                } else if let Some(fd) = self.handles.fd_of(entry) {
                    sp.map.push(Source::Fd(fd));
                } else {
                    if !sp.abort {
                        self.log.bytes(Level::Error, &[b"file descriptor \"", entry, b"\" does not exist"]);
                    }
                    sp.abort = true;
                    sp.map.push(Source::Closed);
                }
            }
        }
        sp.set_args(&s.args);
        match self.spawner.spawn() {
            Ok(child) => {
                let pid = child.pid;
                if let Some(e) = child.exec_errno {
                    let mut eb = [0u8; 128];
                    let t = sys::strerror(e, &mut eb);
                    self.log.bytes(Level::Error, &[self.spawner.exec_msg(), t]);
                }
                if let Some((ours, _theirs, slot, input, output)) = pair {
                    let fd = ours.as_raw_fd();
                    let _ = sys::set_nonblock(fd, true);
                    let mut c = self.fresh_controller(
                        slot,
                        controller::Kind::Service,
                        Some(ours),
                        input.then_some(fd),
                        output.then_some(fd),
                    );
                    c.service = Some(i);
                    self.install_controller(c);
                    if let Some(s) = self.services.get_mut(i) {
                        s.controller = Some(slot);
                    }
                }
                self.services.set_up(i, pid, self.now);
                self.emit_state(i);
            }
            Err(e) => {
                let mut eb = [0u8; 128];
                let t = sys::strerror(e, &mut eb);
                self.log.bytes(Level::Error, &[b"fork failed: ", t]);
                self.retry_later(i);
            }
        }
    }

    // ----- controllers --------------------------------------------------

    /// Put a controller in its slot and register its descriptors.
    pub fn install_controller(&mut self, mut c: Box<Controller>) {
        let slot = c.id;
        let reg = self.poll.registry();
        match (c.in_fd, c.out_fd) {
            (Some(i), Some(o)) if i == o => {
                let ok =
                    reg.register(&mut SourceFd(&i), in_token(slot), Interest::READABLE | Interest::WRITABLE).is_ok();
                c.in_polled = ok;
                c.out_polled = ok;
            }
            (i, o) => {
                if let Some(i) = i {
                    c.in_polled = reg.register(&mut SourceFd(&i), in_token(slot), Interest::READABLE).is_ok();
                }
                if let Some(o) = o {
                    c.out_polled = reg.register(&mut SourceFd(&o), out_token(slot), Interest::WRITABLE).is_ok();
                }
            }
        }
        // A new controller hears of every pending signal first (docs/protocol.md §7.1).
        c.signal_seen = 0;
        self.ctls[slot] = Some(c);
        self.deliver_signals(slot);
    }

    /// Close a controller and free its slot.
    pub fn remove_controller(&mut self, slot: usize) {
        let Some(Some(c)) = self.ctls.get_mut(slot).map(Option::take) else {
            return;
        };
        let reg = self.poll.registry();
        if c.in_polled
            && let Some(i) = c.in_fd
        {
            let _ = reg.deregister(&mut SourceFd(&i));
        }
        if c.out_polled
            && let Some(o) = c.out_fd
            && Some(o) != c.in_fd
        {
            let _ = reg.deregister(&mut SourceFd(&o));
        }
        if let Some(i) = c.service
            && let Some(s) = self.services.get_mut(i)
            && s.controller == Some(slot)
        {
            s.controller = None;
        }
        for fd in &c.taken {
            log!(self.log, Warning, "closing leftover ancillary file descriptor {}", fd.as_raw_fd());
        }
        // Resetting closes the descriptors it owns; the box goes back to the
        // preallocated spares.
        let mut c = c;
        c.reset(slot, controller::Kind::Config, None, None, None);
        self.spare.push(c);
    }

    /// A controller from the preallocated spares (never allocates once
    /// start-up is over: there is one spare per slot).
    fn fresh_controller(
        &mut self,
        slot: usize,
        kind: controller::Kind,
        owned: Option<OwnedFd>,
        in_fd: Option<RawFd>,
        out_fd: Option<RawFd>,
    ) -> Box<Controller> {
        match self.spare.pop() {
            Some(mut b) => {
                b.reset(slot, kind, owned, in_fd, out_fd);
                b
            }
            None => Box::new(Controller::new(slot, kind, owned, in_fd, out_fd, controller::Bufs::single())),
        }
    }

    /// Allocate a controller slot (for `-i`, `-c`, sockets).
    pub fn add_controller(
        &mut self,
        kind: controller::Kind,
        owned: Option<OwnedFd>,
        in_fd: Option<RawFd>,
        out_fd: Option<RawFd>,
    ) -> Option<usize> {
        let slot = self.free_slot()?;
        let c = self.fresh_controller(slot, kind, owned, in_fd, out_fd);
        self.install_controller(c);
        Some(slot)
    }

    fn deliver_signals(&mut self, slot: usize) {
        let Some(Some(c)) = self.ctls.get_mut(slot) else {
            return;
        };
        let latest = self.signals.latest();
        if c.signal_seen >= latest {
            return;
        }
        let mut idx = [0usize; 6];
        let n = self.signals.newer_than(c.signal_seen, &mut idx);
        c.signal_seen = latest;
        let mut l = Line::new();
        for &k in &idx[..n] {
            l.clear();
            self.signals.write_event(&mut l, k);
            c.send(l.as_bytes(), self.now);
        }
    }

    /// Continue a statedump; returns whether it finished.
    fn continue_dump(&mut self, slot: usize) -> bool {
        let Some(Some(c)) = self.ctls.get_mut(slot) else {
            return true;
        };
        let Some(mut d) = c.dump else { return true };
        let mut l = Line::new();
        loop {
            l.clear();
            // A listing's end line, and a stat sample to keep once its line
            // went out.
            let mut finished = false;
            let mut sampled: Option<(usize, Sample)> = None;
            let next = match d {
                Dump::Handles(after) => match self.handles.next_after(after.as_ref()) {
                    Some((name, h)) => {
                        handle::write_state(&mut l, name, h);
                        Dump::Handles(Some(*name))
                    }
                    None => {
                        d = Dump::Services(None, 0, 0);
                        continue;
                    }
                },
                Dump::Services(after, part, hint) => {
                    let slot_i = if part == 0 {
                        self.services.next_after(after.as_ref())
                    } else {
                        after.and_then(|n| self.services.find_at(&n, hint))
                    };
                    let Some((i, s)) = slot_i.and_then(|i| Some((i, self.services.get(i)?))) else {
                        if part == 0 {
                            d = Dump::Signals(0);
                        } else {
                            // Deleted while paused: go on with the next name.
                            d = Dump::Services(after, 0, 0);
                        }
                        continue;
                    };
                    match part {
                        0 => service::write_state(&mut l, s, self.now),
                        1 => service::write_tags(&mut l, s),
                        2 => service::write_args(&mut l, s),
                        3 => service::write_fds(&mut l, s),
                        _ => service::write_auto_up(&mut l, s),
                    }
                    Dump::Services(Some(s.name), if part >= 4 { 0 } else { part + 1 }, i)
                }
                Dump::Signals(k) => {
                    let mut idx = [0usize; 6];
                    let n = self.signals.newer_than(0, &mut idx);
                    if usize::from(k) >= n {
                        c.dump = None;
                        c.signal_seen = self.signals.latest();
                        return true;
                    }
                    self.signals.write_event(&mut l, idx[usize::from(k)]);
                    Dump::Signals(k + 1)
                }
                Dump::Stat(after, n) | Dump::Query(after, n) => {
                    let stat = matches!(d, Dump::Stat(..));
                    // The next service by name that the filters match (for
                    // `service.stat *`: that is up).
                    let mut at = self.services.next_after(after.as_ref());
                    let found = loop {
                        let Some(s) = at.and_then(|i| self.services.get(i)) else { break None };
                        if (!stat || s.state == State::Up) && query::matches(c.filters(), &service::subject(s)) {
                            break at;
                        }
                        at = self.services.next_after(Some(&s.name));
                    };
                    match found.and_then(|i| Some((i, self.services.get(i)?))) {
                        None => {
                            l.s(if stat { "service.stat.end\t" } else { "service.query.end\t" }).int(i64::from(n));
                            finished = true;
                            d
                        }
                        Some((i, s)) if stat => {
                            let f = Figures::read(s.pid, s.sample, &self.clocks, self.proc_ok);
                            f.write_line(&mut l, &s.name, &self.clocks);
                            sampled = f.sample().map(|x| (i, x));
                            Dump::Stat(Some(s.name), n + 1)
                        }
                        Some((_, s)) => {
                            service::write_match(&mut l, s);
                            Dump::Query(Some(s.name), n + 1)
                        }
                    }
                }
            };
            if !c.try_send(l.as_bytes()) {
                // Make room (output is otherwise written only when the loop
                // is about to sleep), then pause if it still does not fit.
                c.flush(self.now);
                if !c.try_send(l.as_bytes()) {
                    c.dump = Some(d);
                    return false;
                }
            }
            if let Some((i, x)) = sampled
                && let Some(s) = self.services.get_mut(i)
            {
                s.sample = Some(x);
            }
            if finished {
                c.dump = None;
                return true;
            }
            d = next;
        }
    }

    /// Start a listing (`service.stat *`, `service.query`) for controller
    /// `slot` with the (validated) `filters`; it runs like a statedump.
    pub fn start_listing(&mut self, slot: usize, dump: Dump, filters: &[u8]) {
        if matches!(dump, Dump::Stat(..)) {
            self.proc_ok = figures::proc_is_ours();
        }
        if let Some(Some(c)) = self.ctls.get_mut(slot)
            && c.has_output()
        {
            c.set_filters(filters);
            c.dump = Some(dump);
        }
    }

    /// The `service.stat` line of one running service, for the issuer.
    pub fn stat_one(&mut self, slot: usize, i: usize) {
        let proc_ok = figures::proc_is_ours();
        let Some(s) = self.services.get_mut(i) else {
            return;
        };
        let f = Figures::read(s.pid, s.sample, &self.clocks, proc_ok);
        if let Some(x) = f.sample() {
            s.sample = Some(x);
        }
        let mut l = Line::new();
        f.write_line(&mut l, &s.name, &self.clocks);
        self.reply(slot, &l);
    }

    /// One controller's turn in a pass.
    fn controller_step(&mut self, slot: usize) {
        let now = self.now;
        let Some(Some(c)) = self.ctls.get_mut(slot) else {
            return;
        };
        // Output is written when space runs short here, and otherwise once
        // before the loop sleeps (see `turn`), so a busy controller costs one
        // write per buffer, not per command.
        if c.out_pending() >= controller::OUT_BUF / 2 && (c.writable || !c.out_polled) {
            c.flush(now);
        }
        // Input is read when no complete line is waiting, and also while
        // output is blocked, so that a full input buffer can force overflow
        // (docs/protocol.md §7.4). Reading pauses only when the buffer is full.
        if !c.closing && !c.eof && (c.readable || !c.in_polled) && (!c.has_line() || c.blocked_since.is_some()) {
            c.fill(&mut self.log);
        }
        if let Some(t) = c.blocked_since {
            let secs = now.secs_since(t);
            if secs >= c.close_timeout {
                log!(self.log, Error, "controller {slot} blocked pipe for {secs} seconds, closing connection");
                return self.end_controller(slot, false);
            }
            if secs >= c.reset_timeout {
                if !c.warned {
                    c.warned = true;
                    log!(self.log, Warning, "controller {slot} blocked pipe for {secs} seconds");
                }
                // Blocked output and a full input buffer: drop output so the
                // controller's commands can proceed (docs/protocol.md §7.4).
                if c.in_full() {
                    c.overflow = true;
                }
            }
        }
        if c.broken && c.kind != controller::Kind::Config {
            return self.end_controller(slot, false);
        }
        let closing = c.closing;
        if closing {
            if c.out_pending() == 0 || !c.has_output() {
                self.end_controller(slot, true);
            }
            return;
        }
        self.deliver_signals(slot);
        if !self.continue_dump(slot) {
            return;
        }
        let mut line = [0u8; IN_BUF];
        let mut ran = 0;
        while ran < controller::COMMANDS_PER_PASS {
            let Some(Some(c)) = self.ctls.get_mut(slot) else {
                return;
            };
            if c.closing || c.dump.is_some() || !c.can_run() {
                break;
            }
            if !c.eof && (c.readable || !c.in_polled) && !c.has_line() {
                c.fill(&mut self.log);
            }
            match c.next_input(&mut line) {
                Input::Line(n) => {
                    ran += 1;
                    // [EXT E1]: one CR before the LF is dropped.
                    let n = if n > 0 && line[n - 1] == b'\r' { n - 1 } else { n };
                    self.execute(slot, &line[..n]);
                    if !self.continue_dump(slot) {
                        break;
                    }
                }
                Input::TooLong(hash) => {
                    ran += 1;
                    if !hash {
                        let mut l = Line::new();
                        l.s("error\tline too long");
                        self.reply(slot, &l);
                        log!(self.log, Error, "controller[{slot}] command exceeds buffer size");
                    }
                }
                Input::Partial(n) => {
                    let kind = c.kind;
                    if kind == controller::Kind::Config {
                        log!(self.log, Warning, "Command ends with EOF... processing anyway");
                        let n = if n > 0 && line[n - 1] == b'\r' { n - 1 } else { n };
                        self.execute(slot, &line[..n]);
                    } else {
                        log!(self.log, Warning, "Command ends with EOF... ignored");
                    }
                    ran += 1;
                }
                Input::Eof if c.in_fd.is_none() => break, // output-only: [FIX F23]
                Input::Eof => {
                    self.end_controller(slot, true);
                    return;
                }
                Input::Wait => break,
            }
        }
    }

    /// A controller's input ended (EOF, `exit`, or a fatal output problem).
    /// With `graceful`, pending output is flushed first.
    pub fn end_controller(&mut self, slot: usize, graceful: bool) {
        let Some(Some(c)) = self.ctls.get_mut(slot) else {
            return;
        };
        if graceful && c.has_output() && c.out_pending() > 0 {
            c.flush(self.now);
            if c.out_pending() > 0 && c.blocked_since.is_some_and(|t| self.now.secs_since(t) < c.close_timeout) {
                c.closing = true;
                c.drop_input();
                return;
            }
        }
        let kind = c.kind;
        self.remove_controller(slot);
        if kind == controller::Kind::Interactive {
            log!(self.log, Info, "interactive session ended");
            if self.guard != 0 {
                log!(self.log, Warning, "interactive session ended, but not exiting due to terminate-guard");
            } else if self.end.is_none() {
                self.end = Some(End::Normal(0));
            }
        }
    }

    // ----- the loop -----------------------------------------------------

    /// One pass of the loop.
    pub fn pass(&mut self) {
        self.now = Mono::now();
        let arrived = self.signals.collect(self.now);
        if arrived != 0 {
            self.on_signals(arrived);
        }
        // SIGCHLD sets a flag; reaping loops waitpid until nothing is left,
        // so passes without it skip the syscall.
        if signal::take_child_exited() {
            self.reap();
        }
        self.reap_attached();
        self.fork_due();
        self.accept();
        for slot in 0..self.ctls.len() {
            if self.ctls[slot].is_some() {
                self.controller_step(slot);
            }
        }
        self.log.flush(self.now);
        self.prepare_fatal();
    }

    /// Keep the fatal-signal handler's prepared exec data current.
    pub fn prepare_fatal(&mut self) {
        let want = (self.exec_args.as_slice(), self.guard != 0, self.log.fd());
        if let Some((a, g, f)) = &self.fatal_prepared
            && (a.as_slice(), *g, *f) == want
        {
            return;
        }
        crate::fatal::prepare(want.0, want.1, want.2);
        self.fatal_prepared = Some((self.exec_args.clone(), want.1, want.2));
    }

    /// After a caught panic: the fatal exec path; returns only if guarded.
    fn on_panic(&mut self) {
        let msg = crate::fatal::take_panic_message();
        let args = self.exec_args.clone();
        crate::exit::exec_path(
            &mut self.log,
            &args,
            crate::fatal::FATAL_CODE,
            &msg,
            self.guard != 0,
            Some(&self.services),
        );
    }

    // ----- the control socket -------------------------------------------

    /// Replace the control socket with a new one at `path` (docs/protocol.md §3.10).
    pub fn socket_create(&mut self, path: &[u8]) -> bool {
        self.socket_delete();
        let mut removed = false;
        let r = listener::create(path, self.socket_perm, &mut removed);
        let shown = String::from_utf8_lossy(path).into_owned();
        if removed {
            log!(self.log, Info, "Unlinked control socket {shown}");
        }
        match r {
            Ok(l) => {
                let fd = l.fd.as_raw_fd();
                if let Err(e) = self.poll.registry().register(&mut SourceFd(&fd), LISTENER, Interest::READABLE) {
                    log!(self.log, Error, "register control socket: {e}");
                    l.unlink();
                    return false;
                }
                self.listener = Some(l);
                self.listener_ready = true;
                true
            }
            Err(e) => {
                log!(self.log, Error, "control socket {shown}: {}", e.0);
                false
            }
        }
    }

    /// Close the control socket and unlink its path (docs/protocol.md §3.11).
    pub fn socket_delete(&mut self) {
        if let Some(l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut SourceFd(&l.fd.as_raw_fd()));
            if l.unlink() {
                log!(self.log, Info, "Unlinked control socket {}", String::from_utf8_lossy(&l.path));
            }
        }
        self.listener_ready = false;
        self.accept_retry = None;
    }

    /// Accept waiting connections while controller slots are free.
    fn accept(&mut self) {
        if self.accept_retry.is_some_and(|t| t <= self.now) {
            self.accept_retry = None;
            self.listener_ready = self.listener.is_some();
        }
        while self.listener_ready {
            let Some(l) = &self.listener else { return };
            if self.free_slot().is_none() {
                if !self.accept_warned {
                    log!(self.log, Warning, "No free controllers to accept socket connection");
                    self.accept_warned = true;
                }
                return;
            }
            match l.accept() {
                Ok(Some(fd)) => {
                    let raw = fd.as_raw_fd();
                    let uid = sys::peer_uid(raw);
                    let me = sys::geteuid();
                    let allowed = uid.is_some_and(|u| u == 0 || u == me || self.socket_uids.contains(&u));
                    if !allowed {
                        log!(self.log, Warning, "refused control connection from uid {}", uid.map_or(-1, i64::from));
                        continue;
                    }
                    self.accept_warned = false;
                    self.accept_failed = false;
                    self.add_controller(controller::Kind::Socket, Some(fd), Some(raw), Some(raw));
                }
                Ok(None) => self.listener_ready = false,
                // The connection went before we took it: take the next.
                Err(libc::ECONNABORTED | libc::EINTR | libc::EPROTO) => {}
                Err(e) => {
                    if !self.accept_failed {
                        let mut eb = [0u8; 128];
                        let t = sys::strerror(e, &mut eb);
                        self.log.bytes(Level::Error, &[b"accept: ", t]);
                        self.accept_failed = true;
                    }
                    self.listener_ready = false;
                    // Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS,
                    // ENOMEM) passes when handles are freed; the connection
                    // stays in the backlog until then.
                    self.accept_retry = Some(self.now.plus(ACCEPT_RETRY_NS));
                }
            }
        }
    }

    /// How long the loop may sleep, and until when exactly.
    fn timeout(&self) -> Option<(Duration, Mono)> {
        let now = Mono::now();
        let mut due: Option<Mono> = self.services.next_start();
        let mut earliest = |t: Mono| {
            due = Some(due.map_or(t, |d| d.min(t)));
        };
        if let Some(t) = self.log.deadline(now) {
            earliest(t);
        }
        if self.listener_ready && self.ctls.iter().any(Option::is_none) {
            earliest(now);
        }
        if let Some(t) = self.accept_retry {
            earliest(t);
        }
        if let CodePages::Pending(since) = self.code_pages {
            earliest(since.plus(SETTLE));
        }
        for c in self.ctls.iter().flatten() {
            let can_cmd = !c.closing && c.can_run();
            if c.dump.is_some() && c.out_free() > 0 && c.writable {
                earliest(now);
            }
            if can_cmd && c.dump.is_none() && (c.input_ready() || (!c.in_polled && !c.eof) || (c.readable && !c.eof)) {
                earliest(now);
            }
            if c.closing && (c.out_pending() == 0 || !c.has_output()) {
                earliest(now);
            }
            if let Some(t) = c.blocked_since {
                let step = if c.warned { c.close_timeout } else { c.reset_timeout };
                earliest(t.plus(step.saturating_mul(SEC)));
            }
        }
        due.map(|d| (Duration::from_nanos((d.0 - now.0).max(0) as u64), d))
    }

    /// Arm the deadline timerfd at `at` unless it already is.
    fn arm_deadline(&mut self, at: Mono) {
        if self.deadline_armed == Some(at) {
            return;
        }
        if let Some(fd) = &self.deadline_fd
            && sys::timerfd_at(fd.as_raw_fd(), at.0).is_ok()
        {
            self.deadline_armed = Some(at);
        }
    }

    /// Run until `terminate` (or the end of `-i`).
    pub fn run(&mut self) -> End {
        loop {
            if let Some(end) = self.turn(None) {
                return end;
            }
        }
    }

    /// After a wait: log what was given back before it; with code pages
    /// pending, note activity (a busy turn, or any readiness but the
    /// deadline timer's own, which this wait may have armed), or mark them
    /// due once the loop has been idle for [`SETTLE`].
    fn settle(&mut self, busy: bool) {
        if let CodePages::Given(r) = self.code_pages {
            self.code_pages = CodePages::Keep;
            match r {
                Ok(g) => log!(
                    self.log,
                    Debug,
                    "start-up settled: {} kB of code pages and {} kB of stack given back",
                    g.code / 1024,
                    (g.stack + g.spare) / 1024
                ),
                Err(e) => log!(self.log, Debug, "start-up settled: nothing given back (errno {e})"),
            }
        }
        let CodePages::Pending(since) = self.code_pages else { return };
        let now = Mono::now();
        if busy || self.events.iter().any(|e| e.token() != DEADLINE) {
            self.code_pages = CodePages::Pending(now);
        } else if now >= since.plus(SETTLE) {
            self.code_pages = CodePages::Due;
        }
    }

    /// One turn of the loop: a pass, then one wait for readiness of at most
    /// the computed timeout (and at most `max_wait`, if given). Returns the
    /// end once `terminate` (or the end of `-i`) asked for it.
    pub fn turn(&mut self, max_wait: Option<Duration>) -> Option<End> {
        // PID 1 must never die: a panic takes the fatal exec path and, with
        // the guard armed, the loop goes on.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.pass())).is_err() {
            self.on_panic();
        }
        if let Some(end) = self.end {
            self.final_flush();
            return Some(end);
        }
        // Before sleeping, every controller's output goes out. While busy
        // (timeout zero), a controller with more commands waiting
        // accumulates up to half a buffer first; one that waits for its
        // answer gets it now, however busy others keep the loop (a flood
        // on one connection must not delay an `echo` on another). Writing
        // can make a controller runnable again, so the timeout is computed
        // anew after any flush.
        let mut timeout = self.timeout();
        let busy = timeout.is_some_and(|t| t.0 == Duration::ZERO);
        let now = self.now;
        let mut flushed = false;
        for c in self.ctls.iter_mut().flatten() {
            if c.out_pending() > 0
                && (c.writable || !c.out_polled)
                && (!busy || c.out_pending() >= controller::OUT_BUF / 2 || !c.input_ready())
            {
                c.flush(now);
                flushed = true;
            }
        }
        if flushed && !busy {
            timeout = self.timeout();
        }
        // A sleep that ends at a deadline is cut short by the timerfd at
        // the exact nanosecond; the rounded-up poll timeout stays as a
        // fallback.
        if let Some((d, at)) = timeout
            && d > Duration::ZERO
        {
            self.arm_deadline(at);
        }
        let mut timeout = timeout.map(|t| t.0);
        if let Some(m) = max_wait {
            timeout = Some(timeout.map_or(m, |t| t.min(m)));
        }
        if self.code_pages == CodePages::Due {
            let given = sys::rest_plan().map(|mut plan| {
                self.spawner.rest(&mut plan);
                sys::give_back(&plan)
            });
            self.code_pages = CodePages::Given(given);
        }
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            // EINTR is retried here, and only here: the next turn polls again.
            Err(e) if e.kind() == ErrorKind::Interrupted => return None,
            Err(e) => {
                let mut eb = [0u8; 128];
                let t = sys::strerror(e.raw_os_error().unwrap_or(0), &mut eb);
                self.log.bytes(Level::Error, &[b"poll: ", t]);
                std::thread::sleep(Duration::from_millis(10));
                return None;
            }
        }
        self.settle(busy);
        for ev in self.events.iter() {
            let t = ev.token();
            if t == WAKE {
                let mut buf = [0u8; 64];
                while let Ok(n) = sys::read(self.wake_rx.as_raw_fd(), &mut buf) {
                    if n == 0 {
                        break;
                    }
                }
                continue;
            }
            if t == LISTENER {
                self.listener_ready = true;
                continue;
            }
            if t == DEADLINE {
                if let Some(fd) = &self.deadline_fd {
                    let mut buf = [0u8; 8];
                    let _ = sys::read(fd.as_raw_fd(), &mut buf);
                }
                self.deadline_armed = None;
                continue;
            }
            let svc_base = 2 + 2 * self.ctls.len();
            if t.0 >= svc_base {
                let i = t.0 - svc_base;
                if !self.attach_ready.contains(&i) {
                    let _ = self.attach_ready.try_push(i);
                }
                continue;
            }
            let slot = (t.0 - 2) / 2;
            if let Some(Some(c)) = self.ctls.get_mut(slot) {
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    c.readable = true;
                }
                if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                    c.writable = true;
                }
            }
        }
        None
    }

    /// One last non-blocking flush of every controller's output (docs/protocol.md §3.25).
    fn final_flush(&mut self) {
        let now = self.now;
        for c in self.ctls.iter_mut().flatten() {
            c.flush(now);
        }
    }
}
