//! What more than one target checks: the message catalogue of docs/protocol.md
//! docs/protocol.md §2.8 and the shape of an error line (docs/protocol.md §2.7).

#![allow(dead_code)]

use daemonproxy::line::Line;
use daemonproxy::reply::{self, Fail};

/// Every fixed message a command's argument parsing may give (docs/protocol.md §2.8); a
/// text outside this list is a bug even if nothing crashes.
pub const PARSE_MESSAGES: &[&str] = &[
    "Expected service name",
    "Invalid service name",
    "Expected file descriptor name",
    "Invalid file descriptor name",
    "File descriptor cannot be altered",
    "Expected integer",
    "invalid fd name",
    "unable to set auto_up triggers",
    "invalid interval",
    "invalid timestamp",
    "Expected signal argument",
    "Invalid signal number",
    "Invalid signal argument",
    "missing argument",
    "Invalid options",
    "missing flags argument",
    "missing path argument",
    "unexpected argument after path",
    "unexpected argument after address",
    "pipe ends must have different names",
    "invalid listen queue length",
    "invalid address",
    "expected address argument",
    "Invalid loglevel argument",
    "Unknown logging type",
    "invalid timeout (must be 0..7FFFFFFF)",
    "reset timeout is greater than close timeout",
    "invalid count",
    "exec arguments exceed buffer size (255)",
    "expected + or -",
    "code cannot be 0",
    "invalid pid",
];

/// A flag or option word a `Fail` quotes: one item of a comma list in
/// `line` (an option may be the empty item).
fn check_item(item: &[u8], line: &[u8], may_be_empty: bool) {
    assert!(may_be_empty || !item.is_empty(), "empty flag quoted");
    assert!(!item.contains(&b',') && !item.contains(&b'\t'), "a quoted flag holds a separator: {item:?}");
    assert!(
        item.is_empty() || line.windows(item.len()).any(|w| w == item),
        "quoted flag {item:?} is not part of the line"
    );
}

/// A failure of argument parsing: a catalogue message or a quoted flag,
/// never an errno (parsing makes no syscall).
pub fn check_parse_failure(f: &Fail<'_>, line: &[u8]) {
    match *f {
        Fail::Msg(m) => assert!(PARSE_MESSAGES.contains(&m), "message not in the catalogue: {m:?}"),
        Fail::UnknownFlag(item) => check_item(item, line, false),
        Fail::UnknownOption(item) => check_item(item, line, true),
        Fail::InvalidFilter(f) => {
            assert!(!f.contains(&b'\t'), "a quoted filter holds a TAB: {f:?}");
            assert!(f.is_empty() || line.windows(f.len()).any(|w| w == f), "quoted filter {f:?} is not in the line");
        }
        Fail::Errno(..) | Fail::Kill { .. } => panic!("argument parsing reported a syscall failure: {f:?}"),
    }
    check_error_line(f, line);
}

/// The issuer's line: `error\t<MSG>, for command "<first 30 bytes>[...]"`,
/// read back by the client parser as the same message and prefix.
pub fn check_error_line(f: &Fail<'_>, line: &[u8]) {
    let mut msg = Line::new();
    f.write_to(&mut msg);
    let mut l = Line::new();
    reply::error_line(&mut l, f, line);
    let mut want = b"error\t".to_vec();
    want.extend_from_slice(msg.as_bytes());
    want.extend_from_slice(b", for command \"");
    want.extend_from_slice(&line[..line.len().min(30)]);
    if line.len() >= 30 {
        want.extend_from_slice(b"...");
    }
    want.push(b'"');
    assert_eq!(l.as_bytes(), &want[..], "error line");
    assert!(!l.as_bytes().contains(&b'\n'), "error line holds an LF");
    const MARK: &[u8] = b", for command \"";
    let prefix = &line[..line.len().min(30)];
    if prefix.windows(MARK.len()).any(|w| w == MARK) || prefix.ends_with(b"...") {
        return; // the client's split is ambiguous for such a prefix
    }
    match daemonproxy::client::Event::parse(l.as_bytes()) {
        daemonproxy::client::Event::Error(rest) => {
            let (m, q) = daemonproxy::client::split_error(rest);
            assert_eq!(m, msg.as_bytes(), "client read another message");
            assert_eq!(q, Some(prefix), "client read another command prefix");
        }
        _ => panic!("the client does not read an error line as an error"),
    }
}
