//! Why a command failed, and how that is written on the wire (docs/protocol.md §2.7, docs/protocol.md §2.8).

use crate::command::Name;
use crate::line::Line;
use crate::sys::{self, Errno};

/// A command failure. Borrowed parts point into the command line.
#[derive(Debug, Clone, Copy)]
pub enum Fail<'a> {
    /// A fixed message.
    Msg(&'static str),
    /// A prefix followed by `strerror(errno)`, e.g. `open failed: `.
    Errno(&'static str, Errno),
    /// `unknown flag "<FLAG>"`.
    UnknownFlag(&'a [u8]),
    /// `unknown option "<FLAG>"`.
    UnknownOption(&'a [u8]),
    /// `invalid filter "<FILTER>"` (`service.query`, `service.stat *`).
    InvalidFilter(&'a [u8]),
    /// `can't kill <NAME> (pid|pgid <PID>): <strerror>`.
    Kill {
        /// Service name.
        name: Name,
        /// The pid signalled.
        pid: i32,
        /// Whether `killpg` was used.
        group: bool,
        /// The failure.
        err: Errno,
    },
}

impl From<&'static str> for Fail<'_> {
    fn from(m: &'static str) -> Self {
        Fail::Msg(m)
    }
}

impl Fail<'_> {
    /// Write the message text (without `error\t` and without the suffix).
    pub fn write_to(&self, out: &mut Line) {
        let mut eb = [0u8; 128];
        match *self {
            Fail::Msg(m) => {
                out.s(m);
            }
            Fail::Errno(prefix, e) => {
                out.s(prefix).push(sys::strerror(e, &mut eb));
            }
            Fail::UnknownFlag(f) => {
                out.s("unknown flag \"").push(f).byte(b'"');
            }
            Fail::UnknownOption(f) => {
                out.s("unknown option \"").push(f).byte(b'"');
            }
            Fail::InvalidFilter(f) => {
                out.s("invalid filter \"").push(f).byte(b'"');
            }
            Fail::Kill { name, pid, group, err } => {
                out.s("can't kill ").s(&name).s(if group { " (pgid " } else { " (pid " });
                out.int(i64::from(pid)).s("): ").push(sys::strerror(err, &mut eb));
            }
        }
    }
}

/// Append `"<first 30 bytes>[...]"` of the command line (docs/protocol.md §2.7).
pub fn write_quoted_prefix(out: &mut Line, cmd: &[u8], n: usize, open: u8, close: u8) {
    out.byte(open).push(&cmd[..cmd.len().min(n)]);
    if cmd.len() >= n && open == b'"' {
        out.s("...");
    }
    out.byte(close);
    if cmd.len() >= n && open == b'\'' {
        out.s("...");
    }
}

/// Build the issuer's error line: `error\t<MSG>, for command "<L30>"`.
pub fn error_line(out: &mut Line, fail: &Fail<'_>, cmd: &[u8]) {
    out.s("error\t");
    fail.write_to(out);
    out.s(", for command ");
    write_quoted_prefix(out, cmd, 30, b'"', b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(cmd: &[u8]) -> String {
        let mut l = Line::new();
        error_line(&mut l, &Fail::Msg("X"), cmd);
        String::from_utf8(l.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn suffix_truncation() {
        assert_eq!(err(&[b'a'; 29]), format!("error\tX, for command \"{}\"", "a".repeat(29)));
        assert_eq!(err(&[b'a'; 30]), format!("error\tX, for command \"{}...\"", "a".repeat(30)));
        assert_eq!(err(&[b'a'; 31]), format!("error\tX, for command \"{}...\"", "a".repeat(30)));
        let mut l = Line::new();
        write_quoted_prefix(&mut l, &[b'b'; 95], 90, b'\'', b'\'');
        assert_eq!(l.as_bytes(), format!("'{}'...", "b".repeat(90)).as_bytes());
    }

    #[test]
    fn errno_text_has_no_os_error_suffix() {
        let mut l = Line::new();
        Fail::Errno("open failed: ", libc::ENOENT).write_to(&mut l);
        assert_eq!(l.as_bytes(), b"open failed: No such file or directory");
    }
}
