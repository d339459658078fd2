//! Splitting a command line into fields, the command table, and the shared
//! argument rules of docs/protocol.md §2 (names, integers).
//!
//! Parsing borrows from the controller's input line; nothing is copied.

use arrayvec::ArrayString;

/// A service or handle name: 1–31 bytes of `A-Za-z0-9._-` (docs/protocol.md §2.3).
pub type Name = ArrayString<31>;

/// Every command of docs/protocol.md §3, and the extension commands
/// `service.stat`, `service.query` and `service.attach`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Cmd {
    Echo,
    Statedump,
    ServiceTags,
    ServiceArgs,
    ServiceFds,
    ServiceAutoUp,
    ServiceStart,
    ServiceSignal,
    ServiceDelete,
    ServiceStat,
    ServiceQuery,
    ServiceAttach,
    SocketCreate,
    SocketDelete,
    FdPipe,
    FdOpen,
    FdSocket,
    FdTake,
    FdDelete,
    Chdir,
    Exit,
    LogFilter,
    LogDest,
    ConnEventTimeout,
    SignalClear,
    TerminateExecArgs,
    TerminateGuard,
    Terminate,
    /// `debug.panic`: panics in the loop, so that tests can prove the
    /// panic → fatal exec path (docs/protocol.md §11). Debug builds and the
    /// `fault-injection` feature only; a release build has no such command.
    #[cfg(any(debug_assertions, feature = "fault-injection"))]
    DebugPanic,
}

const TABLE: &[(&[u8], Cmd)] = &[
    (b"echo", Cmd::Echo),
    (b"statedump", Cmd::Statedump),
    (b"service.tags", Cmd::ServiceTags),
    (b"service.args", Cmd::ServiceArgs),
    (b"service.fds", Cmd::ServiceFds),
    (b"service.auto_up", Cmd::ServiceAutoUp),
    (b"service.start", Cmd::ServiceStart),
    (b"service.signal", Cmd::ServiceSignal),
    (b"service.delete", Cmd::ServiceDelete),
    (b"service.stat", Cmd::ServiceStat),
    (b"service.query", Cmd::ServiceQuery),
    (b"service.attach", Cmd::ServiceAttach),
    (b"socket.create", Cmd::SocketCreate),
    (b"socket.delete", Cmd::SocketDelete),
    (b"fd.pipe", Cmd::FdPipe),
    (b"fd.open", Cmd::FdOpen),
    (b"fd.socket", Cmd::FdSocket),
    (b"fd.take", Cmd::FdTake),
    (b"fd.delete", Cmd::FdDelete),
    (b"chdir", Cmd::Chdir),
    (b"exit", Cmd::Exit),
    (b"log.filter", Cmd::LogFilter),
    (b"log.dest", Cmd::LogDest),
    (b"conn.event_timeout", Cmd::ConnEventTimeout),
    (b"signal.clear", Cmd::SignalClear),
    (b"terminate.exec_args", Cmd::TerminateExecArgs),
    (b"terminate.guard", Cmd::TerminateGuard),
    (b"terminate", Cmd::Terminate),
    #[cfg(any(debug_assertions, feature = "fault-injection"))]
    (b"debug.panic", Cmd::DebugPanic),
];

impl Cmd {
    /// Exact, case-sensitive lookup of field 0.
    pub fn lookup(name: &[u8]) -> Option<Cmd> {
        TABLE.iter().find(|(n, _)| *n == name).map(|&(_, c)| c)
    }
}

/// What to do with a line whose field 0 is not a command (docs/protocol.md §2.2).
#[derive(Debug, PartialEq, Eq)]
pub enum NotCommand {
    /// A comment or a blank line: ignored.
    Ignore,
    /// Anything else: `Unknown command: <FIELD0>`.
    Unknown,
}

/// Classify a line that is not a command.
pub fn classify_unknown(line: &[u8]) -> NotCommand {
    if line.first() == Some(&b'#') || line.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r' | 0)) {
        NotCommand::Ignore
    } else {
        NotCommand::Unknown
    }
}

/// A cursor over the TAB-separated fields after field 0.
///
/// Distinguishes a *missing* field (`cmd`) from an *empty* one (`cmd\t`).
#[derive(Clone, Copy)]
pub struct Args<'a> {
    line: &'a [u8],
    /// Start of the next field, or `None` when no TAB announced one.
    next: Option<usize>,
}

impl<'a> Args<'a> {
    /// Split `line` into field 0 and the argument cursor.
    pub fn split(line: &'a [u8]) -> (&'a [u8], Args<'a>) {
        match memchr::memchr(b'\t', line) {
            Some(p) => (&line[..p], Args { line, next: Some(p + 1) }),
            None => (line, Args { line, next: None }),
        }
    }

    /// The next field, or `None` if absent.
    pub fn next_field(&mut self) -> Option<&'a [u8]> {
        let start = self.next?;
        let rest = &self.line[start..];
        match memchr::memchr(b'\t', rest) {
            Some(p) => {
                self.next = Some(start + p + 1);
                Some(&rest[..p])
            }
            None => {
                self.next = None;
                Some(rest)
            }
        }
    }

    /// The raw remainder (TABs included), or `None` if absent.
    pub fn rest(&mut self) -> Option<&'a [u8]> {
        let start = self.next.take()?;
        Some(&self.line[start..])
    }

    /// Whether another field follows.
    pub fn has_more(&self) -> bool {
        self.next.is_some()
    }
}

/// Which kind of name a field holds (they differ only in messages).
#[derive(Clone, Copy)]
pub enum NameKind {
    /// A service name.
    Service,
    /// A handle (file descriptor) name.
    Handle,
}

/// Does `b` obey the name rule of docs/protocol.md §2.3?
pub fn valid_name(b: &[u8]) -> bool {
    (1..=31).contains(&b.len()) && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Parse a name field with the errors of docs/protocol.md §2.3.
pub fn parse_name(field: Option<&[u8]>, kind: NameKind) -> Result<Name, &'static str> {
    let f = match field {
        None | Some(b"") => {
            return Err(match kind {
                NameKind::Service => "Expected service name",
                NameKind::Handle => "Expected file descriptor name",
            });
        }
        Some(f) => f,
    };
    if !valid_name(f) {
        return Err(match kind {
            NameKind::Service => "Invalid service name",
            NameKind::Handle => "Invalid file descriptor name",
        });
    }
    // valid_name checked ASCII and length ≤ 31.
    let s = std::str::from_utf8(f).map_err(|_| "Invalid file descriptor name")?;
    Name::from(s).map_err(|_| "Invalid file descriptor name")
}

/// Make a `Name` from bytes already known to be valid.
pub fn name_from(b: &[u8]) -> Option<Name> {
    if !valid_name(b) {
        return None;
    }
    Name::from(std::str::from_utf8(b).ok()?).ok()
}

/// Parse a signed 64-bit decimal integer filling the whole field (docs/protocol.md §2.3).
pub fn parse_int(field: &[u8]) -> Option<i64> {
    let (neg, digits) = match field {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, field),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        let d = i64::from(d - b'0');
        v = v.checked_mul(10)?;
        v = if neg { v.checked_sub(d)? } else { v.checked_add(d)? };
    }
    Some(v)
}

/// Iterate the items of a comma list, skipping empty ones.
pub fn comma_items(field: &[u8]) -> impl Iterator<Item = &[u8]> {
    field.split(|&b| b == b',').filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_missing_and_empty() {
        let (c, mut a) = Args::split(b"cmd");
        assert_eq!(c, b"cmd");
        assert_eq!(a.next_field(), None);
        let (_, mut a) = Args::split(b"cmd\t");
        assert_eq!(a.next_field(), Some(&b""[..]));
        assert_eq!(a.next_field(), None);
        let (_, mut a) = Args::split(b"echo\ta\t\tb");
        assert_eq!(a.rest(), Some(&b"a\t\tb"[..]));
        let (_, mut a) = Args::split(b"x\tn\t1\talways\tHUP");
        assert_eq!(a.next_field(), Some(&b"n"[..]));
        assert_eq!(a.next_field(), Some(&b"1"[..]));
        assert_eq!(a.rest(), Some(&b"always\tHUP"[..]));
        assert_eq!(a.rest(), None);
    }

    #[test]
    fn names() {
        assert!(parse_name(Some(b"foo.bar-1_x"), NameKind::Service).is_ok());
        assert_eq!(parse_name(Some(&[b'a'; 31]), NameKind::Service).map(|n| n.len()), Ok(31));
        assert_eq!(parse_name(Some(&[b'a'; 32]), NameKind::Service), Err("Invalid service name"));
        assert_eq!(parse_name(Some(b""), NameKind::Handle), Err("Expected file descriptor name"));
        assert_eq!(parse_name(None, NameKind::Service), Err("Expected service name"));
        assert_eq!(parse_name(Some(b"a\x01"), NameKind::Handle), Err("Invalid file descriptor name"));
        assert_eq!(parse_name(Some(b"a b"), NameKind::Service), Err("Invalid service name"));
    }

    #[test]
    fn ints() {
        assert_eq!(parse_int(b"0"), Some(0));
        assert_eq!(parse_int(b"-5"), Some(-5));
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_int(b"9223372036854775808"), None);
        assert_eq!(parse_int(b"+1"), None);
        assert_eq!(parse_int(b" 1"), None);
        assert_eq!(parse_int(b"-"), None);
        assert_eq!(parse_int(b""), None);
    }

    #[test]
    fn unknown_lines() {
        assert_eq!(classify_unknown(b"# comment"), NotCommand::Ignore);
        assert_eq!(classify_unknown(b" \t\r\0"), NotCommand::Ignore);
        assert_eq!(classify_unknown(b""), NotCommand::Ignore);
        assert_eq!(classify_unknown(b" echo"), NotCommand::Unknown);
        assert_eq!(Cmd::lookup(b"terminate"), Some(Cmd::Terminate));
        assert_eq!(Cmd::lookup(b"Echo"), None);
    }
}
