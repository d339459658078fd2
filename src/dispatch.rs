//! Running one command line (protocol.md §3): the table of command name →
//! handler, each handler checking its arguments in the order the protocol
//! gives and asking the supervisor for the effects and events. The
//! extension commands (`service.stat`, `service.query`, `service.attach`)
//! are at the end.

use crate::clock::{Mono, SEC, Seconds};
use crate::command::{self, Args, Cmd, Name, NameKind, NotCommand};
use crate::controller::Dump;
use crate::fdops;
use crate::handle::{self, Handles};
use crate::line::Line;
use crate::log::{Dest, FILTER_NAMES, Level};
use crate::query;
use crate::reply::Fail;
use crate::service::{self, Field, State, Triggers};
use crate::signame;
use crate::supervisor::{End, Supervisor};
use crate::sys;
use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;

type Res<'a> = Result<(), Fail<'a>>;

/// How far back `service.start WHEN` may lie ([FIX F5]).
const START_GRACE: i64 = 100_000 * SEC;

fn service_name(f: Option<&[u8]>) -> Result<Name, Fail<'static>> {
    command::parse_name(f, NameKind::Service).map_err(Fail::Msg)
}

fn handle_name(f: Option<&[u8]>) -> Result<Name, Fail<'static>> {
    command::parse_name(f, NameKind::Handle).map_err(Fail::Msg)
}

/// A handle name that may be (re)defined: not a constant.
fn mutable_handle_name(f: Option<&[u8]>) -> Result<Name, Fail<'static>> {
    let n = handle_name(f)?;
    if Handles::is_constant(&n) {
        return Err(Fail::Msg("File descriptor cannot be altered"));
    }
    Ok(n)
}

impl Supervisor {
    /// Run one command line from controller `slot`.
    pub fn execute(&mut self, slot: usize, line: &[u8]) {
        let (name, args) = Args::split(line);
        let Some(cmd) = Cmd::lookup(name) else {
            if command::classify_unknown(line) == NotCommand::Unknown {
                let mut l = Line::new();
                l.s("error\tUnknown command: ").push(name);
                self.reply(slot, &l);
                let mut m = Line::new();
                m.s("controller[").int(slot as i64).s("] sent unknown command ").push(name);
                self.log.bytes(Level::Error, &[m.as_bytes()]);
            }
            return;
        };
        if self.log.enabled(Level::Debug) {
            let mut m = Line::new();
            m.s("controller[").int(slot as i64).s("] command: \"").push(line).byte(b'"');
            self.log.bytes(Level::Debug, &[m.as_bytes()]);
        }
        if let Err(f) = self.run_cmd(slot, cmd, args) {
            self.fail(slot, line, &f);
        }
    }

    fn run_cmd<'a>(&mut self, slot: usize, cmd: Cmd, mut a: Args<'a>) -> Res<'a> {
        match cmd {
            Cmd::Echo => {
                if let Some(text) = a.rest().filter(|t| !t.is_empty()) {
                    let mut l = Line::new();
                    l.push(text);
                    self.reply(slot, &l);
                }
                Ok(())
            }
            Cmd::Statedump => {
                if let Some(Some(c)) = self.ctls.get_mut(slot)
                    && c.has_output()
                {
                    c.dump = Some(Dump::Handles(None));
                }
                Ok(())
            }
            Cmd::ServiceTags | Cmd::ServiceArgs => {
                let name = service_name(a.next_field())?;
                let value = a.rest().unwrap_or(b"");
                let i = self.services.find_or_create(&name)?;
                let (field, msg) = if cmd == Cmd::ServiceTags {
                    (Field::Tags, "unable to set tags")
                } else {
                    (Field::Args, "unable to set argv")
                };
                if !self.services.fits(i, field, (!value.is_empty()).then_some(value)) {
                    return Err(Fail::Msg(msg));
                }
                let Some(s) = self.services.get_mut(i) else {
                    return Ok(());
                };
                let mut l = Line::new();
                if cmd == Cmd::ServiceTags {
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
            Cmd::ServiceFds => self.cmd_service_fds(slot, a),
            Cmd::ServiceAutoUp => self.cmd_auto_up(a),
            Cmd::ServiceStart => self.cmd_service_start(a),
            Cmd::ServiceSignal => self.cmd_service_signal(a),
            Cmd::ServiceStat => self.cmd_service_stat(slot, a),
            Cmd::ServiceQuery => {
                let filters = a.rest().unwrap_or(b"");
                query::validate(filters).map_err(Fail::InvalidFilter)?;
                self.start_listing(slot, Dump::Query(None, 0), filters);
                Ok(())
            }
            Cmd::ServiceAttach => self.cmd_service_attach(a),
            Cmd::ServiceDelete => {
                let name = service_name(a.next_field())?;
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
            Cmd::SocketCreate => {
                let (opts, path) = (a.next_field(), a.next_field());
                let (Some(opts), Some(path)) = (opts, path) else {
                    return Err(Fail::Msg("missing argument"));
                };
                if !opts.is_empty() && opts != b"-" {
                    return Err(Fail::Msg("Invalid options"));
                }
                if !self.socket_create(path) {
                    return Err(Fail::Msg("Failed to create control socket"));
                }
                Ok(())
            }
            Cmd::SocketDelete => {
                self.socket_delete();
                Ok(())
            }
            Cmd::FdTake => {
                let Some(Some(c)) = self.ctls.get_mut(slot) else {
                    return Ok(());
                };
                if c.taken.is_empty() {
                    return Err(Fail::Msg("No ancillary file descriptor received"));
                }
                let fd = c.taken.remove(0);
                let name = mutable_handle_name(a.next_field())?;
                if !self.handles.room_for(1) {
                    return Err(Fail::Msg("Unable to allocate new file descriptor object"));
                }
                self.define_handle(name, handle::Handle::inherited(fd));
                Ok(())
            }
            Cmd::FdPipe => self.cmd_fd_pipe(a),
            Cmd::FdOpen => {
                let name = mutable_handle_name(a.next_field())?;
                let flags = a.next_field().ok_or(Fail::Msg("missing flags argument"))?;
                let path = a.next_field().ok_or(Fail::Msg("missing path argument"))?;
                if a.has_more() {
                    return Err(Fail::Msg("unexpected argument after path"));
                }
                if !self.handles.room_for(1) {
                    return Err(Fail::Msg("Unable to allocate new file descriptor object"));
                }
                let h = fdops::open_file(flags, path)?;
                self.define_handle(name, h);
                Ok(())
            }
            Cmd::FdSocket => {
                let name = mutable_handle_name(a.next_field())?;
                let flags = a.next_field().ok_or(Fail::Msg("missing flags argument"))?;
                let addr = a.next_field();
                if a.has_more() {
                    return Err(Fail::Msg("unexpected argument after address"));
                }
                if !self.handles.room_for(1) {
                    return Err(Fail::Msg("Unable to allocate new file descriptor object"));
                }
                let h = fdops::make_socket(flags, addr)?;
                self.define_handle(name, h);
                Ok(())
            }
            Cmd::FdDelete => {
                let name = mutable_handle_name(a.next_field())?;
                let old = self.handles.remove(&name).ok_or(Fail::Msg("No such file descriptor"))?;
                drop(old);
                self.refresh_log_fd();
                let mut l = Line::new();
                handle::write_deleted(&mut l, &name);
                self.broadcast(&l);
                Ok(())
            }
            Cmd::Chdir => {
                let path = a.next_field().ok_or(Fail::Msg("missing path argument"))?;
                if a.has_more() {
                    return Err(Fail::Msg("unexpected argument after path"));
                }
                nix::unistd::chdir(OsStr::from_bytes(path)).map_err(|e| Fail::Errno("chdir failed: ", e as i32))
            }
            Cmd::Exit => {
                if let Some(Some(c)) = self.ctls.get_mut(slot) {
                    c.drop_input();
                    c.closing = true;
                }
                Ok(())
            }
            Cmd::LogFilter => {
                let f = self.log.filter;
                self.log.filter = match a.next_field() {
                    None => f,
                    Some(b"+") => (f + 1).min(6),
                    Some(b"-") => f.saturating_sub(1),
                    Some(v) => FILTER_NAMES
                        .iter()
                        .position(|n| n.as_bytes() == v)
                        .ok_or(Fail::Msg("Invalid loglevel argument"))? as u8,
                };
                let mut l = Line::new();
                l.s("log.filter\t").s(FILTER_NAMES[usize::from(self.log.filter)]);
                self.reply(slot, &l);
                Ok(())
            }
            Cmd::LogDest => {
                let ty = a.next_field().ok_or(Fail::Msg("missing argument"))?;
                if ty != b"fd" {
                    return Err(Fail::Msg("Unknown logging type"));
                }
                let name = handle_name(a.next_field())?;
                if self.handles.get(name.as_bytes()).is_none() {
                    let mut l = Line::new();
                    l.s("warning\tfd \"").s(&name).s("\" does not exist");
                    self.reply(slot, &l);
                }
                self.log.dest = Dest::Handle(name);
                self.log.set_fd(None);
                self.refresh_log_fd();
                Ok(())
            }
            Cmd::ConnEventTimeout => {
                let mut t = [0i64; 2];
                for v in &mut t {
                    let f = a.next_field().ok_or(Fail::Msg("Expected integer"))?;
                    *v = command::parse_int(f).ok_or(Fail::Msg("Expected integer"))?;
                    if !(0..=0x7FFF_FFFF).contains(v) {
                        return Err(Fail::Msg("invalid timeout (must be 0..7FFFFFFF)"));
                    }
                }
                if t[0] > t[1] {
                    return Err(Fail::Msg("reset timeout is greater than close timeout"));
                }
                if let Some(Some(c)) = self.ctls.get_mut(slot) {
                    c.reset_timeout = t[0];
                    c.close_timeout = t[1];
                }
                Ok(())
            }
            Cmd::SignalClear => {
                let sig = signame::parse(a.next_field()).map_err(|e| Fail::Msg(e.message()))?;
                let n = a.next_field().and_then(command::parse_int).ok_or(Fail::Msg("Expected integer"))?;
                if n < 0 {
                    return Err(Fail::Msg("invalid count"));
                }
                self.signals.clear(sig, n as u64);
                Ok(())
            }
            Cmd::TerminateExecArgs => {
                let v = a.rest().unwrap_or(b"");
                if v.len() >= 256 {
                    return Err(Fail::Msg("exec arguments exceed buffer size (255)"));
                }
                self.exec_args.clear();
                self.exec_args.extend_from_slice(v);
                // The fatal-signal handler must know before the next reply.
                self.prepare_fatal();
                Ok(())
            }
            Cmd::TerminateGuard => {
                let op = a.next_field();
                if op != Some(b"+") && op != Some(b"-") {
                    return Err(Fail::Msg("expected + or -"));
                }
                let code = a.next_field().and_then(command::parse_int).ok_or(Fail::Msg("Expected integer"))?;
                if code == 0 {
                    return Err(Fail::Msg("code cannot be 0"));
                }
                match (op, self.guard) {
                    (Some(b"+"), 0) => self.guard = code,
                    (Some(b"+"), _) => {
                        return Err(Fail::Msg("terminate guard code is already set"));
                    }
                    (_, 0) => return Err(Fail::Msg("terminate guard was not set")),
                    (_, g) if g != code => return Err(Fail::Msg("incorrect guard code")),
                    _ => self.guard = 0,
                }
                self.prepare_fatal();
                Ok(())
            }
            Cmd::Terminate => {
                let code = a.next_field().and_then(command::parse_int).ok_or(Fail::Msg("Expected integer"))?;
                if self.guard != 0 {
                    let g = a
                        .next_field()
                        .and_then(command::parse_int)
                        .ok_or(Fail::Msg("terminate guard code required"))?;
                    if g != self.guard {
                        return Err(Fail::Msg("incorrect terminate guard code"));
                    }
                    if self.exec_args.is_empty() {
                        return Err(Fail::Msg("cannot exit, and exec-on-exit is not configured"));
                    }
                }
                self.end = Some(End::Normal((code & 255) as i32));
                Ok(())
            }
        }
    }

    /// Store a new handle under `name` (closing any old one after) and
    /// broadcast it.
    fn define_handle(&mut self, name: Name, h: handle::Handle) {
        let old = self.handles.insert(name, h);
        drop(old);
        self.refresh_log_fd();
        self.emit_fd(&name);
    }

    fn cmd_service_fds<'a>(&mut self, slot: usize, mut a: Args<'a>) -> Res<'a> {
        let name = service_name(a.next_field())?;
        let list = a.rest().unwrap_or(b"");
        let entries = || list.split(|&b| b == b'\t').filter(|_| !list.is_empty());
        if entries().any(|e| !e.is_empty() && !command::valid_name(e)) {
            return Err(Fail::Msg("invalid fd name"));
        }
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

    fn cmd_auto_up<'a>(&mut self, mut a: Args<'a>) -> Res<'a> {
        let name = service_name(a.next_field())?;
        let iv = a.next_field().ok_or(Fail::Msg("Expected integer"))?;
        let interval = if iv == b"-" {
            None
        } else if let Some(n) = command::parse_int(iv) {
            if !(1..=0x7FFF_FFFF).contains(&n) {
                return Err(Fail::Msg("invalid interval"));
            }
            Some(Seconds::whole(n))
        } else {
            // [EXT E3]: fractional seconds, down to 0.01.
            let s = Seconds::parse(iv).ok_or(Fail::Msg("Expected integer"))?;
            if s.ns < SEC / 100 || s.ns >= 0x8000_0000 * SEC {
                return Err(Fail::Msg("invalid interval"));
            }
            Some(s)
        };
        let triggers = match a.rest() {
            None => None,
            Some(raw) => {
                let t = Triggers::parse(raw).ok_or(Fail::Msg("unable to set auto_up triggers"))?;
                (t.always || t.signals != 0).then_some(t)
            }
        };
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

    fn cmd_service_start<'a>(&mut self, mut a: Args<'a>) -> Res<'a> {
        let name = service_name(a.next_field())?;
        let i = self.services.find(&name).ok_or(Fail::Msg("No such service"))?;
        let now = self.now;
        let mut frac = false;
        let when = match a.next_field() {
            Some(b"-") => {
                if self.services.get(i).is_none_or(|s| s.state != State::Start) {
                    return Err(Fail::Msg("no service.start pending"));
                }
                self.services.cancel(i);
                self.emit_state(i);
                return Ok(());
            }
            None => now,
            Some(w) => {
                let s = Seconds::parse(w).ok_or(Fail::Msg("invalid timestamp"))?;
                let t = Mono(s.ns);
                if t.0 < now.0 - START_GRACE {
                    return Err(Fail::Msg("invalid timestamp"));
                }
                frac = s.frac && t > now;
                t.max(now)
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

    fn cmd_service_signal<'a>(&mut self, mut a: Args<'a>) -> Res<'a> {
        let name = service_name(a.next_field())?;
        let i = self.services.find(&name).ok_or(Fail::Msg("No such service"))?;
        let sig = signame::parse(a.next_field()).map_err(|e| Fail::Msg(e.message()))?;
        let mut group = false;
        if let Some(flags) = a.next_field() {
            for f in flags.split(|&b| b == b',') {
                if f != b"group" {
                    return Err(Fail::UnknownOption(f));
                }
                group = true;
            }
        }
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
                // SAFETY: plain killpg; the group leader is alive (above).
                true => sys::cerr(unsafe { libc::killpg(pid, sig) }).map(|_| ()),
            };
            return r.map_err(|err| Fail::Kill { name, pid, group, err });
        }
        // SAFETY: plain kill/killpg on a pid we forked and have not reaped.
        let rc = unsafe { if group { libc::killpg(pid, sig) } else { libc::kill(pid, sig) } };
        if rc != 0 {
            return Err(Fail::Kill { name, pid, group, err: crate::sys::errno() });
        }
        Ok(())
    }

    /// `service.stat\tNAME` or `service.stat\t*[\tFILTER...]` (an extension).
    fn cmd_service_stat<'a>(&mut self, slot: usize, mut a: Args<'a>) -> Res<'a> {
        let f = a.next_field();
        if f == Some(b"*") {
            let filters = a.rest().unwrap_or(b"");
            query::validate(filters).map_err(Fail::InvalidFilter)?;
            self.start_listing(slot, Dump::Stat(None, 0), filters);
            return Ok(());
        }
        let name = service_name(f)?;
        let i = self.services.find(&name).ok_or(Fail::Msg("No such service"))?;
        if self.services.get(i).is_none_or(|s| s.state != State::Up) {
            return Err(Fail::Msg("service is not running"));
        }
        self.stat_one(slot, i);
        Ok(())
    }

    /// `service.attach\tNAME\tPID` (an extension): watch a process we did
    /// not start through `pidfd_open(2)`. Creates the service.
    fn cmd_service_attach<'a>(&mut self, mut a: Args<'a>) -> Res<'a> {
        let name = service_name(a.next_field())?;
        let pid = a.next_field().and_then(command::parse_int).ok_or(Fail::Msg("Expected integer"))?;
        if !(1..=i64::from(i32::MAX)).contains(&pid) {
            return Err(Fail::Msg("invalid pid"));
        }
        let pid = pid as i32;
        if self.services.find(&name).and_then(|i| self.services.get(i)).is_some_and(|s| s.state == State::Up) {
            return Err(Fail::Msg("service is running"));
        }
        if pid == sys::getpid() {
            return Err(Fail::Msg("process is daemonproxy"));
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

    fn cmd_fd_pipe<'a>(&mut self, mut a: Args<'a>) -> Res<'a> {
        let r = mutable_handle_name(a.next_field())?;
        let w = mutable_handle_name(a.next_field())?;
        if r == w {
            return Err(Fail::Msg("pipe ends must have different names"));
        }
        let spec = fdops::parse_pipe_flags(a.next_field())?;
        if !self.handles.room_for(2) {
            return Err(Fail::Msg("failed to create pipe"));
        }
        let (mut hr, mut hw) = fdops::make_pipe(&spec)?;
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
