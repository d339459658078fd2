//! The controller's side of the protocol: parsing the event lines
//! daemonproxy sends (docs/protocol.md §4) into [`Event`]s, for programs that
//! drive daemonproxy (the sheriff bridge, tests).
//!
//! Fields are split with the same cursor the command parser uses
//! ([`crate::command::Args`]); an event borrows from its line.

use crate::command::{Args, parse_int};

/// `STATE` of a `service.state` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateWord {
    /// A start is pending.
    Start,
    /// A process runs.
    Up,
    /// Not running.
    Down,
    /// The service was deleted.
    Deleted,
}

/// How the last process of a `down` service ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended<'a> {
    /// `exit N`.
    Exit(i64),
    /// `signal SIGNAME` (the name as printed, `SIG` included).
    Signal(&'a [u8]),
}

/// A `service.state` event (docs/protocol.md §4.1); `-` fields are `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceState<'a> {
    /// The service.
    pub name: &'a [u8],
    /// Its state.
    pub state: StateWord,
    /// TS: the scheduled, fork or reap second.
    pub ts: Option<i64>,
    /// The running or last pid.
    pub pid: Option<i32>,
    /// How the last process ended (`down` after a run).
    pub ended: Option<Ended<'a>>,
    /// UPTIME in seconds.
    pub uptime: Option<i64>,
    /// DOWNTIME in seconds.
    pub downtime: Option<i64>,
}

/// One line from daemonproxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// `service.state`.
    State(ServiceState<'a>),
    /// `service.tags NAME VALUE` (raw value).
    Tags(&'a [u8], &'a [u8]),
    /// `service.args NAME VALUE`.
    Args(&'a [u8], &'a [u8]),
    /// `service.fds NAME VALUE`.
    Fds(&'a [u8], &'a [u8]),
    /// `service.auto_up NAME REST` (`-` or `INTERVAL\tTRIGGERS`).
    AutoUp(&'a [u8], &'a [u8]),
    /// `fd.state NAME REST` (`deleted`, or `TYPE\tFLAGS\tDESCRIPTION`).
    Fd(&'a [u8], &'a [u8]),
    /// `signal SIGNAME TS COUNT`.
    Signal(&'a [u8], i64, i64),
    /// `overflow`: output was lost; send `statedump`.
    Overflow,
    /// `error\tMESSAGE` (the whole remainder).
    Error(&'a [u8]),
    /// `warning\tMESSAGE`.
    Warning(&'a [u8]),
    /// `info\tTEXT` (the `-i` banner).
    Info(&'a [u8]),
    /// Anything else: an `echo` reply, `log.filter`, or an event this
    /// client does not know (to be ignored, docs/protocol.md §1.3).
    Other(&'a [u8]),
}

fn opt_int(f: Option<&[u8]>) -> Option<i64> {
    f.and_then(parse_int)
}

impl<'a> Event<'a> {
    /// Parse one line (without its LF). Never fails: what does not parse
    /// as a known event is [`Event::Other`].
    pub fn parse(line: &'a [u8]) -> Event<'a> {
        Self::known(line).unwrap_or(Event::Other(line))
    }

    fn known(line: &'a [u8]) -> Option<Event<'a>> {
        let (head, mut a) = Args::split(line);
        let ev = match head {
            b"service.state" => {
                let name = a.next_field()?;
                let state = match a.next_field()? {
                    b"start" => StateWord::Start,
                    b"up" => StateWord::Up,
                    b"down" => StateWord::Down,
                    b"deleted" => StateWord::Deleted,
                    _ => return None,
                };
                let ts = opt_int(a.next_field());
                let pid = opt_int(a.next_field()).and_then(|p| i32::try_from(p).ok());
                let reason = a.next_field();
                let value = a.next_field();
                let ended = match (reason, value) {
                    (Some(b"exit"), Some(v)) => parse_int(v).map(Ended::Exit),
                    (Some(b"signal"), Some(v)) => Some(Ended::Signal(v)),
                    _ => None,
                };
                let uptime = opt_int(a.next_field());
                let downtime = opt_int(a.next_field());
                Event::State(ServiceState { name, state, ts, pid, ended, uptime, downtime })
            }
            b"service.tags" => Event::Tags(a.next_field()?, a.rest().unwrap_or(b"")),
            b"service.args" => Event::Args(a.next_field()?, a.rest().unwrap_or(b"")),
            b"service.fds" => Event::Fds(a.next_field()?, a.rest().unwrap_or(b"")),
            b"service.auto_up" => Event::AutoUp(a.next_field()?, a.rest().unwrap_or(b"")),
            b"fd.state" => Event::Fd(a.next_field()?, a.rest().unwrap_or(b"")),
            b"signal" => Event::Signal(a.next_field()?, parse_int(a.next_field()?)?, parse_int(a.next_field()?)?),
            b"overflow" if !a.has_more() => Event::Overflow,
            b"error" => Event::Error(a.rest()?),
            b"warning" => Event::Warning(a.rest()?),
            b"info" => Event::Info(a.rest()?),
            _ => return None,
        };
        Some(ev)
    }
}

impl Ended<'_> {
    /// The raw wait(2) status this ending stands for: `exit N` is
    /// `(N & 0xff) << 8`, a signal its number (names of docs/protocol.md §2.6;
    /// `SIG-?` and unknown names give 0).
    pub fn wait_status(&self) -> i32 {
        match *self {
            Ended::Exit(n) => ((n & 0xff) as i32) << 8,
            Ended::Signal(name) => {
                let bare = name.strip_prefix(b"SIG").unwrap_or(name);
                crate::signame::lookup_name(bare).unwrap_or(0)
            }
        }
    }
}

/// The message of an error line without its `, for command "..."` suffix,
/// and the quoted command prefix (at most 30 bytes, docs/protocol.md §2.7), if
/// the line has one.
pub fn split_error(rest: &[u8]) -> (&[u8], Option<&[u8]>) {
    const MARK: &[u8] = b", for command \"";
    match memchr::memmem::rfind(rest, MARK) {
        Some(p) => {
            let quoted = &rest[p + MARK.len()..];
            let quoted = quoted.strip_suffix(b"\"").unwrap_or(quoted);
            let quoted = quoted.strip_suffix(b"...").unwrap_or(quoted);
            (&rest[..p], Some(quoted))
        }
        None => (rest, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_state_rows() {
        let up = Event::parse(b"service.state\tfoo\tup\t196\t8018\t-\t-\t0\t-");
        assert_eq!(
            up,
            Event::State(ServiceState {
                name: b"foo",
                state: StateWord::Up,
                ts: Some(196),
                pid: Some(8018),
                ended: None,
                uptime: Some(0),
                downtime: None
            })
        );
        let Event::State(d) = Event::parse(b"service.state\tfoo\tdown\t194\t7827\texit\t3\t0\t0") else {
            panic!("not a state")
        };
        assert_eq!(d.ended, Some(Ended::Exit(3)));
        assert_eq!(d.ended.map(|e| e.wait_status()), Some(768));
        let Event::State(k) = Event::parse(b"service.state\tfoo\tdown\t196\t8012\tsignal\tSIGQUIT\t0\t0") else {
            panic!("not a state")
        };
        assert_eq!(k.ended, Some(Ended::Signal(b"SIGQUIT")));
        assert_eq!(k.ended.map(|e| e.wait_status()), Some(3));
        let Event::State(g) = Event::parse(b"service.state\tfoo\tdeleted\t-\t-\t-\t-\t-\t-") else {
            panic!("not a state")
        };
        assert_eq!((g.state, g.ts, g.pid, g.ended), (StateWord::Deleted, None, None, None));
        assert_eq!(Event::parse(b"service.state\tfoo\tweird\t-"), Event::Other(b"service.state\tfoo\tweird\t-"));
    }

    #[test]
    fn other_events() {
        assert_eq!(Event::parse(b"service.tags\tfoo\t"), Event::Tags(b"foo", b""));
        assert_eq!(Event::parse(b"service.args\tfoo\ta\tb"), Event::Args(b"foo", b"a\tb"));
        assert_eq!(Event::parse(b"fd.state\tx\tdeleted"), Event::Fd(b"x", b"deleted"));
        assert_eq!(Event::parse(b"signal\tSIGHUP\t203\t1"), Event::Signal(b"SIGHUP", 203, 1));
        assert_eq!(Event::parse(b"overflow"), Event::Overflow);
        assert_eq!(Event::parse(b"dump-done"), Event::Other(b"dump-done"));
        assert_eq!(
            Event::parse(b"warning\tfd \"x\" is not yet defined"),
            Event::Warning(b"fd \"x\" is not yet defined")
        );
        let Event::Error(e) = Event::parse(b"error\tservice is not startable, for command \"service.start\tpm.x\"")
        else {
            panic!("not an error")
        };
        assert_eq!(split_error(e), (&b"service is not startable"[..], Some(&b"service.start\tpm.x"[..])));
        let long = b"no args configured for service, for command \"service.start\tpm.abcdefghijklmnopq...\"";
        assert_eq!(split_error(long).1, Some(&b"service.start\tpm.abcdefghijklmnopq"[..]));
        assert_eq!(split_error(b"line too long"), (&b"line too long"[..], None));
    }
}
