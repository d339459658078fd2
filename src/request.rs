//! One command line parsed into a request (docs/protocol.md §2, docs/protocol.md §3): the command
//! looked up, then every argument rule that needs neither the supervisor's
//! tables nor a syscall. [`crate::dispatch`] carries the request out.
//!
//! The protocol fixes the order of a command's checks, and a few checks
//! that need state come between argument checks (`service.signal` names a
//! missing service before it looks at the signal). Such arguments are kept
//! here as `Result`s; the dispatcher opens them only after its own checks,
//! so the error a controller sees is still the first the protocol names.
//!
//! This is the pure half of running a command: no I/O, no state, so the
//! fuzzer can drive it with arbitrary lines (`fuzz/fuzz_targets/command.rs`).

use crate::clock::Seconds;
use crate::command::{self, Args, Cmd, Name, NameKind, NotCommand};
use crate::fdops::{self, OpenSpec, PipeSpec, SocketSpec};
use crate::handle::Handles;
use crate::log::FILTER_NAMES;
use crate::query;
use crate::reply::Fail;
use crate::service::Triggers;
use crate::signame;

/// What a line is.
pub enum Parsed<'a> {
    /// A comment or a blank line (docs/protocol.md §2.2): nothing happens.
    Ignore,
    /// Field 0 (given) is not a command: `Unknown command: <FIELD0>`.
    Unknown(&'a [u8]),
    /// A command, with its request or the first argument error.
    Command(Result<Request<'a>, Fail<'a>>),
}

/// `service.start` WHEN (docs/protocol.md §3.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// `-`: cancel a pending start.
    Cancel,
    /// Absent: now.
    Now,
    /// A monotonic second (the grace check against now is the
    /// dispatcher's).
    At(Seconds),
}

/// A `log.filter` argument (docs/protocol.md §3.19).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterStep {
    /// Absent: only reply.
    Show,
    /// `+`: hide one level more.
    Raise,
    /// `-`: show one level more.
    Lower,
    /// A level name: its index in [`FILTER_NAMES`].
    Set(u8),
}

/// A command with its arguments checked as far as that can be done
/// without state. Borrowed parts point into the line.
#[allow(missing_docs)]
pub enum Request<'a> {
    /// The raw remainder (empty: nothing is sent back).
    Echo(&'a [u8]),
    Statedump,
    /// `debug.panic` (debug and `fault-injection` builds only).
    #[cfg(any(debug_assertions, feature = "fault-injection"))]
    DebugPanic,
    /// `service.tags` and `service.args`: the raw value.
    Tags {
        name: Name,
        value: &'a [u8],
    },
    Args {
        name: Name,
        value: &'a [u8],
    },
    /// The raw list; every entry passed the name rule.
    Fds {
        name: Name,
        list: &'a [u8],
    },
    /// `None` interval: keep the current one (`-`). `None` triggers:
    /// auto-up off.
    AutoUp {
        name: Name,
        interval: Option<Seconds>,
        triggers: Option<Triggers>,
    },
    Start {
        name: Name,
        when: Result<When, Fail<'a>>,
    },
    /// Checked after the service exists: the signal, then the flags
    /// (`Ok(true)`: `group`).
    Signal {
        name: Name,
        sig: Result<i32, Fail<'a>>,
        group: Result<bool, Fail<'a>>,
    },
    Delete {
        name: Name,
    },
    /// `service.stat\t*[\tFILTER...]`: validated filters.
    StatAll {
        filters: &'a [u8],
    },
    /// `service.stat\tNAME`.
    StatOne {
        name: Name,
    },
    /// `service.query[\tFILTER...]`: validated filters.
    Query {
        filters: &'a [u8],
    },
    /// `service.attach\tNAME\tPID`: PID in 1..2^31−1.
    Attach {
        name: Name,
        pid: i32,
    },
    SocketCreate {
        path: &'a [u8],
    },
    SocketDelete,
    FdPipe {
        read: Name,
        write: Name,
        spec: PipeSpec,
    },
    /// The flags are checked after the handle table's room.
    FdOpen {
        name: Name,
        spec: Result<OpenSpec, Fail<'a>>,
        path: &'a [u8],
    },
    /// The flags and address are checked after the handle table's room.
    FdSocket {
        name: Name,
        spec: Result<SocketSpec<'a>, Fail<'a>>,
    },
    /// The name is checked after a received descriptor is found.
    FdTake {
        name: Result<Name, Fail<'a>>,
    },
    FdDelete {
        name: Name,
    },
    Chdir {
        path: &'a [u8],
    },
    Exit,
    LogFilter(FilterStep),
    LogDest {
        name: Name,
    },
    ConnEventTimeout {
        reset: i64,
        close: i64,
    },
    SignalClear {
        sig: i32,
        count: u64,
    },
    TerminateExecArgs(&'a [u8]),
    /// `+` arms (`arm`), `-` disarms.
    TerminateGuard {
        arm: bool,
        code: i64,
    },
    /// The guard code as given, if it is an integer (needed only while a
    /// guard is armed).
    Terminate {
        code: i64,
        guard: Option<i64>,
    },
}

/// Longest `terminate.exec_args` value (docs/protocol.md §3.23).
pub const MAX_EXEC_ARGS: usize = 255;

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

fn int(f: Option<&[u8]>) -> Result<i64, Fail<'static>> {
    f.and_then(command::parse_int).ok_or(Fail::Msg("Expected integer"))
}

fn signal(f: Option<&[u8]>) -> Result<i32, Fail<'static>> {
    signame::parse(f).map_err(|e| Fail::Msg(e.message()))
}

/// `service.query` / `service.stat *` filters, each checked.
fn filters(rest: Option<&[u8]>) -> Result<&[u8], Fail<'_>> {
    let f = rest.unwrap_or(b"");
    query::validate(f).map_err(Fail::InvalidFilter)?;
    Ok(f)
}

/// Parse one line (without its LF, and without the CR that [EXT E1] drops).
pub fn parse(line: &[u8]) -> Parsed<'_> {
    let (name, args) = Args::split(line);
    match Cmd::lookup(name) {
        Some(cmd) => Parsed::Command(request(cmd, args)),
        None if command::classify_unknown(line) == NotCommand::Unknown => Parsed::Unknown(name),
        None => Parsed::Ignore,
    }
}

/// The arguments of `cmd`, in the order docs/protocol.md §3 checks them.
pub fn request(cmd: Cmd, mut a: Args<'_>) -> Result<Request<'_>, Fail<'_>> {
    Ok(match cmd {
        Cmd::Echo => Request::Echo(a.rest().unwrap_or(b"")),
        Cmd::Statedump => Request::Statedump,
        Cmd::ServiceTags => Request::Tags { name: service_name(a.next_field())?, value: a.rest().unwrap_or(b"") },
        Cmd::ServiceArgs => Request::Args { name: service_name(a.next_field())?, value: a.rest().unwrap_or(b"") },
        Cmd::ServiceFds => {
            let name = service_name(a.next_field())?;
            let list = a.rest().unwrap_or(b"");
            // An empty entry passes (it is skipped at exec time).
            if !list.is_empty() && list.split(|&b| b == b'\t').any(|e| !e.is_empty() && !command::valid_name(e)) {
                return Err(Fail::Msg("invalid fd name"));
            }
            Request::Fds { name, list }
        }
        Cmd::ServiceAutoUp => auto_up(a)?,
        Cmd::ServiceStart => {
            let name = service_name(a.next_field())?;
            let when = match a.next_field() {
                Some(b"-") => Ok(When::Cancel),
                None => Ok(When::Now),
                Some(w) => Seconds::parse(w).map(When::At).ok_or(Fail::Msg("invalid timestamp")),
            };
            Request::Start { name, when }
        }
        Cmd::ServiceSignal => {
            let name = service_name(a.next_field())?;
            let sig = signal(a.next_field());
            // A comma list whose only member is `group`; an empty item is
            // an unknown option.
            let group = match a.next_field() {
                None => Ok(false),
                Some(flags) => match flags.split(|&b| b == b',').find(|f| *f != b"group") {
                    Some(bad) => Err(Fail::UnknownOption(bad)),
                    None => Ok(true),
                },
            };
            Request::Signal { name, sig, group }
        }
        Cmd::ServiceDelete => Request::Delete { name: service_name(a.next_field())? },
        // The extensions (man page, PROTOCOL EXTENSIONS).
        Cmd::ServiceStat => match a.next_field() {
            Some(b"*") => Request::StatAll { filters: filters(a.rest())? },
            f => Request::StatOne { name: service_name(f)? },
        },
        Cmd::ServiceQuery => Request::Query { filters: filters(a.rest())? },
        Cmd::ServiceAttach => {
            let name = service_name(a.next_field())?;
            let pid = int(a.next_field())?;
            let pid = i32::try_from(pid).ok().filter(|&p| p >= 1).ok_or(Fail::Msg("invalid pid"))?;
            Request::Attach { name, pid }
        }
        Cmd::SocketCreate => {
            let (Some(opts), Some(path)) = (a.next_field(), a.next_field()) else {
                return Err(Fail::Msg("missing argument"));
            };
            if !opts.is_empty() && opts != b"-" {
                return Err(Fail::Msg("Invalid options"));
            }
            Request::SocketCreate { path }
        }
        Cmd::SocketDelete => Request::SocketDelete,
        Cmd::FdPipe => {
            let read = mutable_handle_name(a.next_field())?;
            let write = mutable_handle_name(a.next_field())?;
            if read == write {
                return Err(Fail::Msg("pipe ends must have different names"));
            }
            Request::FdPipe { read, write, spec: fdops::parse_pipe_flags(a.next_field())? }
        }
        Cmd::FdOpen => {
            let name = mutable_handle_name(a.next_field())?;
            let flags = a.next_field().ok_or(Fail::Msg("missing flags argument"))?;
            let path = a.next_field().ok_or(Fail::Msg("missing path argument"))?;
            if a.has_more() {
                return Err(Fail::Msg("unexpected argument after path"));
            }
            Request::FdOpen { name, spec: fdops::parse_open_flags(flags), path }
        }
        Cmd::FdSocket => {
            let name = mutable_handle_name(a.next_field())?;
            let flags = a.next_field().ok_or(Fail::Msg("missing flags argument"))?;
            let addr = a.next_field();
            if a.has_more() {
                return Err(Fail::Msg("unexpected argument after address"));
            }
            Request::FdSocket { name, spec: fdops::parse_socket(flags, addr) }
        }
        Cmd::FdTake => Request::FdTake { name: mutable_handle_name(a.next_field()) },
        Cmd::FdDelete => Request::FdDelete { name: mutable_handle_name(a.next_field())? },
        Cmd::Chdir => {
            let path = a.next_field().ok_or(Fail::Msg("missing path argument"))?;
            if a.has_more() {
                return Err(Fail::Msg("unexpected argument after path"));
            }
            Request::Chdir { path }
        }
        Cmd::Exit => Request::Exit,
        #[cfg(any(debug_assertions, feature = "fault-injection"))]
        Cmd::DebugPanic => Request::DebugPanic,
        Cmd::LogFilter => Request::LogFilter(match a.next_field() {
            None => FilterStep::Show,
            Some(b"+") => FilterStep::Raise,
            Some(b"-") => FilterStep::Lower,
            Some(v) => FilterStep::Set(
                FILTER_NAMES.iter().position(|n| n.as_bytes() == v).ok_or(Fail::Msg("Invalid loglevel argument"))?
                    as u8,
            ),
        }),
        Cmd::LogDest => {
            let ty = a.next_field().ok_or(Fail::Msg("missing argument"))?;
            if ty != b"fd" {
                return Err(Fail::Msg("Unknown logging type"));
            }
            Request::LogDest { name: handle_name(a.next_field())? }
        }
        Cmd::ConnEventTimeout => {
            let mut t = [0i64; 2];
            for v in &mut t {
                *v = int(a.next_field())?;
                if !(0..=0x7FFF_FFFF).contains(v) {
                    return Err(Fail::Msg("invalid timeout (must be 0..7FFFFFFF)"));
                }
            }
            if t[0] > t[1] {
                return Err(Fail::Msg("reset timeout is greater than close timeout"));
            }
            Request::ConnEventTimeout { reset: t[0], close: t[1] }
        }
        Cmd::SignalClear => {
            let sig = signal(a.next_field())?;
            let n = int(a.next_field())?;
            // [FIX F19]: C added a negative count.
            let count = u64::try_from(n).map_err(|_| Fail::Msg("invalid count"))?;
            Request::SignalClear { sig, count }
        }
        Cmd::TerminateExecArgs => {
            let v = a.rest().unwrap_or(b"");
            if v.len() > MAX_EXEC_ARGS {
                return Err(Fail::Msg("exec arguments exceed buffer size (255)"));
            }
            Request::TerminateExecArgs(v)
        }
        Cmd::TerminateGuard => {
            let arm = match a.next_field() {
                Some(b"+") => true,
                Some(b"-") => false,
                _ => return Err(Fail::Msg("expected + or -")),
            };
            let code = int(a.next_field())?;
            if code == 0 {
                return Err(Fail::Msg("code cannot be 0"));
            }
            Request::TerminateGuard { arm, code }
        }
        Cmd::Terminate => {
            let code = int(a.next_field())?;
            Request::Terminate { code, guard: a.next_field().and_then(command::parse_int) }
        }
    })
}

/// `service.auto_up\tNAME\tMIN_INTERVAL[\tTRIGGER...]` (docs/protocol.md §3.6, [EXT E3],
/// [EXT E7]).
fn auto_up(mut a: Args<'_>) -> Result<Request<'_>, Fail<'_>> {
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
        if s.ns < crate::clock::SEC / 100 || s.ns >= 0x8000_0000 * crate::clock::SEC {
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
    Ok(Request::AutoUp { name, interval, triggers })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &[u8]) -> String {
        match parse(line) {
            Parsed::Command(Err(f)) => {
                let mut l = crate::line::Line::new();
                f.write_to(&mut l);
                String::from_utf8_lossy(l.as_bytes()).into_owned()
            }
            Parsed::Command(Ok(_)) => "ok".into(),
            Parsed::Ignore => "ignore".into(),
            Parsed::Unknown(n) => format!("unknown {}", String::from_utf8_lossy(n)),
        }
    }

    #[test]
    fn lines_and_errors() {
        assert_eq!(err(b"# x"), "ignore");
        assert_eq!(err(b" echo"), "unknown  echo");
        assert_eq!(err(b"echo"), "ok");
        assert_eq!(err(b"service.tags"), "Expected service name");
        assert_eq!(err(b"service.fds\tx\tnull\t\ta b"), "invalid fd name");
        assert_eq!(err(b"fd.pipe\ta\ta"), "pipe ends must have different names");
        assert_eq!(err(b"fd.open\tnull\tread\t/x"), "File descriptor cannot be altered");
        assert_eq!(err(b"signal.clear\tHUP\t-1"), "invalid count");
        assert_eq!(err(b"terminate.guard\t+\t0"), "code cannot be 0");
        assert_eq!(
            err(&[b"terminate.exec_args\t".as_slice(), &[b'a'; 256]].concat()),
            "exec arguments exceed buffer size (255)"
        );
        assert_eq!(err(&[b"terminate.exec_args\t".as_slice(), &[b'a'; 255]].concat()), "ok");
    }

    #[test]
    fn deferred_checks_keep_their_errors() {
        let Parsed::Command(Ok(Request::Signal { sig, group, .. })) = parse(b"service.signal\tx\tBOGUS\tnope") else {
            panic!("service.signal must parse up to the service check");
        };
        assert!(matches!(sig, Err(Fail::Msg("Invalid signal argument"))));
        assert!(matches!(group, Err(Fail::UnknownOption(b"nope"))));
        let Parsed::Command(Ok(Request::FdOpen { spec, .. })) = parse(b"fd.open\tf\tbogus\t/p") else {
            panic!("fd.open must parse up to the room check");
        };
        assert!(matches!(spec, Err(Fail::UnknownFlag(b"bogus"))));
        assert!(matches!(parse(b"fd.take\tnull"), Parsed::Command(Ok(Request::FdTake { name: Err(_) }))));
        let Parsed::Command(Ok(Request::Start { when, .. })) = parse(b"service.start\tx\t1.x") else {
            panic!("service.start must parse up to the service check");
        };
        assert!(matches!(when, Err(Fail::Msg("invalid timestamp"))));
    }
}
