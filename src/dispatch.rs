//! Running one command line (docs/protocol.md §3): [`crate::request`] parses it
//! and checks what needs no state; each request is then carried out here —
//! the checks that need the tables, in the order the protocol gives, then
//! the effects and their events. The extension commands (`service.stat`,
//! `service.query`, `service.attach`) are at the end.

use crate::clock::{Mono, SEC, Seconds};
use crate::command::Name;
use crate::controller::Dump;
use crate::fdops::{self, PipeSpec};
use crate::handle;
use crate::line::Line;
use crate::log::{Dest, FILTER_NAMES, Level};
use crate::reply::Fail;
use crate::request::{self, FilterStep, Parsed, Request, When};
use crate::service::{self, Field, State, Triggers};
use crate::supervisor::{End, Supervisor};
use crate::sys;
use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;

type Res<'a> = Result<(), Fail<'a>>;

/// How far back `service.start WHEN` may lie ([FIX F5]).
const START_GRACE: i64 = 100_000 * SEC;

impl Supervisor {
    /// Run one command line from controller `slot`.
    pub fn execute(&mut self, slot: usize, line: &[u8]) {
        let req = match request::parse(line) {
            Parsed::Ignore => return,
            Parsed::Unknown(name) => {
                let mut l = Line::new();
                l.s("error\tUnknown command: ").push(name);
                self.reply(slot, &l);
                let mut m = Line::new();
                m.s("controller[").int(slot as i64).s("] sent unknown command ").push(name);
                self.log.bytes(Level::Error, &[m.as_bytes()]);
                // A config typed with spaces for TABs: say so (the error
                // line above stays 1.1's, one per unknown command).
                if let Some(sp) = memchr::memchr(b' ', name)
                    && crate::command::Cmd::lookup(&name[..sp]).is_some()
                {
                    self.log.bytes(
                        Level::Warning,
                        &[
                            b"fields are separated by TAB characters, not spaces: \"",
                            &name[..sp],
                            b"\" needs a TAB after it",
                        ],
                    );
                }
                return;
            }
            Parsed::Command(req) => req,
        };
        if self.log.enabled(Level::Debug) {
            let mut m = Line::new();
            m.s("controller[").int(slot as i64).s("] command: \"").push(line).byte(b'"');
            self.log.bytes(Level::Debug, &[m.as_bytes()]);
        }
        if let Err(f) = req.and_then(|r| self.apply(slot, r)) {
            self.fail(slot, line, &f);
        }
    }

    /// Carry out a parsed request: the checks that need state, then the
    /// effects and their events.
    fn apply<'a>(&mut self, slot: usize, req: Request<'a>) -> Res<'a> {
        match req {
            Request::Echo(text) => {
                if !text.is_empty() {
                    let mut l = Line::new();
                    l.push(text);
                    self.reply(slot, &l);
                }
                Ok(())
            }
            Request::Statedump => {
                if let Some(Some(c)) = self.ctls.get_mut(slot)
                    && c.has_output()
                {
                    c.dump = Some(Dump::Handles(None));
                }
                Ok(())
            }
            Request::Tags { name, value } => self.set_text(name, Field::Tags, value),
            Request::Args { name, value } => self.set_text(name, Field::Args, value),
            Request::Fds { name, list } => self.cmd_service_fds(slot, name, list),
            Request::AutoUp { name, interval, triggers } => self.cmd_auto_up(name, interval, triggers),
            Request::Start { name, when } => self.cmd_service_start(name, when),
            Request::Signal { name, sig, group } => self.cmd_service_signal(name, sig, group),
            Request::StatAll { filters } => {
                self.start_listing(slot, Dump::Stat(None, 0), filters);
                Ok(())
            }
            Request::StatOne { name } => {
                let i = self.services.find(&name).ok_or(Fail::Msg("No such service"))?;
                if self.services.get(i).is_none_or(|s| s.state != State::Up) {
                    return Err(Fail::Msg("service is not running"));
                }
                self.stat_one(slot, i);
                Ok(())
            }
            Request::Query { filters } => {
                self.start_listing(slot, Dump::Query(None, 0), filters);
                Ok(())
            }
            Request::Attach { name, pid } => self.cmd_service_attach(name, pid),
            Request::Delete { name } => {
                let i = self.services.find(&name).ok_or(Fail::Msg("No such service"))?;
                if self.services.get(i).is_some_and(|s| s.state == State::Up) {
                    return Err(Fail::Msg("service is running"));
                }
                self.services.delete(i);
                let mut l = Line::new();
                service::write_deleted(&mut l, &name);
                self.broadcast(&l);
                Ok(())
            }
            Request::SocketCreate { path } => {
                if !self.socket_create(path) {
                    return Err(Fail::Msg("Failed to create control socket"));
                }
                Ok(())
            }
            Request::SocketDelete => {
                self.socket_delete();
                Ok(())
            }
            Request::FdTake { name } => {
                let Some(Some(c)) = self.ctls.get_mut(slot) else {
                    return Ok(());
                };
                if c.taken.is_empty() {
                    return Err(Fail::Msg("No ancillary file descriptor received"));
                }
                // Taken off the queue first: on a bad name it is closed.
                let fd = c.taken.remove(0);
                let name = name?;
                if !self.handles.room_for(1) {
                    return Err(Fail::Msg("Unable to allocate new file descriptor object"));
                }
                self.define_handle(name, handle::Handle::inherited(fd));
                Ok(())
            }
            Request::FdPipe { read, write, spec } => self.cmd_fd_pipe(read, write, &spec),
            Request::FdOpen { name, spec, path } => {
                if !self.handles.room_for(1) {
                    return Err(Fail::Msg("Unable to allocate new file descriptor object"));
                }
                let h = fdops::open_file(&spec?, path)?;
                self.define_handle(name, h);
                Ok(())
            }
            Request::FdSocket { name, spec } => {
                if !self.handles.room_for(1) {
                    return Err(Fail::Msg("Unable to allocate new file descriptor object"));
                }
                let h = fdops::make_socket(&spec?)?;
                self.define_handle(name, h);
                Ok(())
            }
            Request::FdDelete { name } => {
                let old = self.handles.remove(&name).ok_or(Fail::Msg("No such file descriptor"))?;
                drop(old);
                self.refresh_log_fd();
                let mut l = Line::new();
                handle::write_deleted(&mut l, &name);
                self.broadcast(&l);
                Ok(())
            }
            Request::Chdir { path } => {
                nix::unistd::chdir(OsStr::from_bytes(path)).map_err(|e| Fail::Errno("chdir failed: ", e as i32))
            }
            #[cfg(any(debug_assertions, feature = "fault-injection"))]
            Request::DebugPanic => panic!("debug.panic from controller {slot}"),
            Request::Exit => {
                if let Some(Some(c)) = self.ctls.get_mut(slot) {
                    c.drop_input();
                    c.closing = true;
                }
                Ok(())
            }
            Request::LogFilter(step) => {
                let f = self.log.filter;
                self.log.filter = match step {
                    FilterStep::Show => f,
                    FilterStep::Raise => (f + 1).min(6),
                    FilterStep::Lower => f.saturating_sub(1),
                    FilterStep::Set(v) => v,
                };
                let mut l = Line::new();
                l.s("log.filter\t").s(FILTER_NAMES[usize::from(self.log.filter)]);
                self.reply(slot, &l);
                Ok(())
            }
            Request::LogDest { name } => {
                if self.handles.get(name.as_bytes()).is_none() {
                    let mut l = Line::new();
                    l.s("warning\tfd \"").s(&name).s("\" does not exist");
                    self.reply(slot, &l);
                }
                self.log.dest = Dest::Handle(name);
                self.log.set_fd(None);
                self.refresh_log_fd();
                self.log.flush_now(self.now);
                Ok(())
            }
            Request::ConnEventTimeout { reset, close } => {
                if let Some(Some(c)) = self.ctls.get_mut(slot) {
                    c.reset_timeout = reset;
                    c.close_timeout = close;
                }
                Ok(())
            }
            Request::SignalClear { sig, count } => {
                self.signals.clear(sig, count);
                Ok(())
            }
            Request::TerminateExecArgs(v) => {
                self.exec_args.clear();
                self.exec_args.extend_from_slice(v);
                // The fatal-signal handler must know before the next reply.
                self.prepare_fatal();
                Ok(())
            }
            Request::TerminateGuard { arm, code } => {
                match (arm, self.guard) {
                    (true, 0) => self.guard = code,
                    (true, _) => return Err(Fail::Msg("terminate guard code is already set")),
                    (false, 0) => return Err(Fail::Msg("terminate guard was not set")),
                    (false, g) if g != code => return Err(Fail::Msg("incorrect guard code")),
                    (false, _) => self.guard = 0,
                }
                self.prepare_fatal();
                Ok(())
            }
            Request::Terminate { code, guard } => {
                if self.guard != 0 {
                    let g = guard.ok_or(Fail::Msg("terminate guard code required"))?;
                    if g != self.guard {
                        return Err(Fail::Msg("incorrect terminate guard code"));
                    }
                    if self.exec_args.is_empty() {
                        return Err(Fail::Msg("cannot exit, and exec-on-exit is not configured"));
                    }
                }
                self.end = Some(End::Normal((code & 255) as i32));
                self.terminator = self.ctls.get(slot).and_then(|c| c.as_ref()).and_then(|c| c.service);
                Ok(())
            }
        }
    }

    /// `service.tags` / `service.args`: creates the service, stores the raw
    /// value (absent or empty clears) and broadcasts it.
    fn set_text<'a>(&mut self, name: Name, field: Field, value: &'a [u8]) -> Res<'a> {
        let i = self.services.find_or_create(&name)?;
        let msg = if field == Field::Tags { "unable to set tags" } else { "unable to set argv" };
        if !self.services.fits(i, field, (!value.is_empty()).then_some(value)) {
            return Err(Fail::Msg(msg));
        }
        let Some(s) = self.services.get_mut(i) else {
            return Ok(());
        };
        let mut l = Line::new();
        if field == Field::Tags {
            s.tags.clear();
            s.tags.extend_from_slice(value);
            service::write_tags(&mut l, s);
        } else {
            s.args.clear();
            s.args.extend_from_slice(value);
            service::write_args(&mut l, s);
        }
        self.broadcast(&l);
        Ok(())
    }

    /// Store a new handle under `name` (closing any old one after) and
    /// broadcast it.
    fn define_handle(&mut self, name: Name, h: handle::Handle) {
        let old = self.handles.insert(name, h);
        drop(old);
        self.refresh_log_fd();
        self.emit_fd(&name);
    }

    fn cmd_service_fds<'a>(&mut self, slot: usize, name: Name, list: &'a [u8]) -> Res<'a> {
        let entries = || list.split(|&b| b == b'\t').filter(|_| !list.is_empty());
        let i = self.services.find_or_create(&name)?;
        if !self.services.fits(i, Field::Fds, Some(list)) {
            return Err(Fail::Msg("unable to set file descriptors"));
        }
        for (k, e) in entries().enumerate() {
            // [FIX F10] TAB form; [FIX F11] no warning for `-`; one warning
            // per distinct name.
            if !e.is_empty() && e != b"-" && self.handles.get(e).is_none() && !entries().take(k).any(|p| p == e) {
                let mut l = Line::new();
                l.s("warning\tfd \"").push(e).s("\" is not yet defined");
                self.reply(slot, &l);
            }
        }
        let Some(s) = self.services.get_mut(i) else {
            return Ok(());
        };
        let mut v = s.fds.take().unwrap_or_default();
        v.clear();
        v.extend_from_slice(list);
        s.fds = Some(v);
        let mut l = Line::new();
        service::write_fds(&mut l, s);
        self.broadcast(&l);
        Ok(())
    }

    fn cmd_auto_up<'a>(&mut self, name: Name, interval: Option<Seconds>, triggers: Option<Triggers>) -> Res<'a> {
        let i = self.services.find_or_create(&name)?;
        if !self.services.fits(i, Field::Triggers, triggers.as_ref().map(|t| &t.raw[..])) {
            return Err(Fail::Msg("unable to set auto_up triggers"));
        }
        let Some(s) = self.services.get_mut(i) else {
            return Ok(());
        };
        if let Some(iv) = interval {
            s.interval = iv;
        }
        // New triggers start a new count (and size its ring now, at
        // configuration time).
        s.restarts.configure(triggers.as_ref().and_then(|t| t.limit));
        s.limited = false;
        s.triggers = triggers;
        s.backoff_ns = s.interval.ns;
        self.services.index_triggers(i);
        self.auto_start_now(i);
        let Some(s) = self.services.get(i) else {
            return Ok(());
        };
        let mut l = Line::new();
        service::write_auto_up(&mut l, s);
        self.broadcast(&l);
        Ok(())
    }

    fn cmd_service_start<'a>(&mut self, name: Name, when: Result<When, Fail<'a>>) -> Res<'a> {
        let i = self.services.find(&name).ok_or(Fail::Msg("No such service"))?;
        let now = self.now;
        let (when, frac) = match when? {
            When::Cancel => {
                if self.services.get(i).is_none_or(|s| s.state != State::Start) {
                    return Err(Fail::Msg("no service.start pending"));
                }
                self.services.cancel(i);
                self.emit_state(i);
                return Ok(());
            }
            When::Now => (now, false),
            When::At(s) => {
                let t = Mono(s.ns);
                if t.0 < now.0.saturating_sub(START_GRACE) {
                    return Err(Fail::Msg("invalid timestamp"));
                }
                (t.max(now), s.frac && t > now)
            }
        };
        let Some(s) = self.services.get(i) else {
            return Ok(());
        };
        if !s.has_args() {
            return Err(Fail::Msg("no args configured for service"));
        }
        if s.state == State::Up {
            return Err(Fail::Msg("service is not startable"));
        }
        self.services.schedule(i, when);
        if let Some(s) = self.services.get_mut(i) {
            s.start_frac = frac;
            // A manual start resets the restart limit's count.
            s.reset_limit();
        }
        self.emit_state(i);
        Ok(())
    }

    fn cmd_service_signal<'a>(
        &mut self,
        name: Name,
        sig: Result<i32, Fail<'a>>,
        group: Result<bool, Fail<'a>>,
    ) -> Res<'a> {
        let i = self.services.find(&name).ok_or(Fail::Msg("No such service"))?;
        let (sig, group) = (sig?, group?);
        let Some(s) = self.services.get(i) else {
            return Ok(());
        };
        if s.state != State::Up {
            return Err(Fail::Msg("service is not running"));
        }
        let pid = s.pid;
        if let Some(fd) = s.pidfd.as_ref().map(AsRawFd::as_raw_fd) {
            // An attached process is not our child, so its number could be
            // reused once it has gone: signal it through its pidfd. A group
            // is signalled only while the leader (whose id names it) lives.
            let r = match group {
                false => sys::pidfd_send_signal(fd, sig),
                true if sys::readable_now(fd) => Err(libc::ESRCH),
                // The group leader is alive (above).
                true => sys::kill(pid, sig, true),
            };
            return r.map_err(|err| Fail::Kill { name, pid, group, err });
        }
        // A pid we forked and have not reaped: it cannot have been reused.
        sys::kill(pid, sig, group).map_err(|err| Fail::Kill { name, pid, group, err })
    }

    /// `service.attach\tNAME\tPID` (an extension): watch a process we did
    /// not start through `pidfd_open(2)`. Creates the service.
    fn cmd_service_attach<'a>(&mut self, name: Name, pid: i32) -> Res<'a> {
        if self.services.find(&name).and_then(|i| self.services.get(i)).is_some_and(|s| s.state == State::Up) {
            return Err(Fail::Msg("service is running"));
        }
        if pid == sys::getpid() {
            return Err(Fail::Msg("process is daemonproxy"));
        }
        // Watching init or an ancestor would let a controller that signals
        // every service (a shutdown script) signal them.
        if pid == 1 {
            return Err(Fail::Msg("process is process 1"));
        }
        if is_ancestor(pid) {
            return Err(Fail::Msg("process is an ancestor of daemonproxy"));
        }
        let pidfd = sys::pidfd_open(pid).map_err(|e| match e {
            libc::ESRCH => Fail::Msg("No such process"),
            e => Fail::Errno("pidfd_open failed: ", e),
        })?;
        // Our children are reaped with waitpid: never watched twice. The
        // pidfd pins the process, so these checks cannot race a reuse.
        match sys::pidfd_wait(pidfd.as_raw_fd(), true) {
            Ok(sys::PidfdWait::NotChild) => {}
            Ok(_) => return Err(Fail::Msg("process is a child of daemonproxy")),
            Err(e) => return Err(Fail::Errno("waitid failed: ", e)),
        }
        if sys::readable_now(pidfd.as_raw_fd()) {
            return Err(Fail::Msg("No such process"));
        }
        if self.services.by_pid(pid).is_some() {
            return Err(Fail::Msg("process is already attached"));
        }
        let i = self.services.find_or_create(&name)?;
        self.attach(i, pid, pidfd).map_err(|e| Fail::Errno("can't watch process: ", e))
    }

    fn cmd_fd_pipe<'a>(&mut self, r: Name, w: Name, spec: &PipeSpec) -> Res<'a> {
        if !self.handles.room_for(2) {
            return Err(Fail::Msg("failed to create pipe"));
        }
        let (mut hr, mut hw) = fdops::make_pipe(spec)?;
        let id = self.handles.new_pipe_id();
        (hr.peer, hr.pipe_id) = (Some(w), id);
        (hw.peer, hw.pipe_id) = (Some(r), id);
        let old_r = self.handles.insert(r, hr);
        let old_w = self.handles.insert(w, hw);
        drop((old_r, old_w));
        self.refresh_log_fd();
        self.emit_fd(&r);
        self.emit_fd(&w);
        Ok(())
    }
}

/// Is `pid` daemonproxy's parent, or that parent's parent, and so on
/// (read from /proc; at most 64 steps)?
fn is_ancestor(pid: i32) -> bool {
    let mut p = nix::unistd::getppid().as_raw();
    for _ in 0..64 {
        if p <= 0 {
            return false;
        }
        if p == pid {
            return true;
        }
        match crate::figures::read_stat(p) {
            Ok(st) => p = st.ppid,
            Err(_) => return false,
        }
    }
    false
}
