//! Signal names and numbers as the protocol spells them (docs/protocol.md §2.6).

/// The names daemonproxy 1.1 knows, in its order: events print `SIG` plus
/// the first name listed for a number.
const NAMES: &[(&str, i32)] = &[
    ("ABRT", libc::SIGABRT),
    ("ALRM", libc::SIGALRM),
    ("BUS", libc::SIGBUS),
    ("CHLD", libc::SIGCHLD),
    ("CLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("FPE", libc::SIGFPE),
    ("HUP", libc::SIGHUP),
    ("ILL", libc::SIGILL),
    ("INT", libc::SIGINT),
    ("IO", libc::SIGIO),
    ("IOT", libc::SIGIOT),
    ("KILL", libc::SIGKILL),
    ("PIPE", libc::SIGPIPE),
    ("POLL", libc::SIGPOLL),
    ("PROF", libc::SIGPROF),
    ("PWR", libc::SIGPWR),
    ("QUIT", libc::SIGQUIT),
    ("SEGV", libc::SIGSEGV),
    ("STKFLT", libc::SIGSTKFLT),
    ("STOP", libc::SIGSTOP),
    ("SYS", libc::SIGSYS),
    ("TERM", libc::SIGTERM),
    ("TRAP", libc::SIGTRAP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("VTALRM", libc::SIGVTALRM),
    ("WINCH", libc::SIGWINCH),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
];

/// Why a signal argument was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalError {
    /// Absent or empty field.
    Expected,
    /// Starts with a digit but is not a whole number 0..65535.
    BadNumber,
    /// Not a known name ([FIX F6]: C silently used signal 0).
    Unknown,
}

impl SignalError {
    /// The protocol's message text.
    pub fn message(self) -> &'static str {
        match self {
            SignalError::Expected => "Expected signal argument",
            SignalError::BadNumber => "Invalid signal number",
            SignalError::Unknown => "Invalid signal argument",
        }
    }
}

/// Parse a signal argument: `SIGNAME`, `NAME` or a number.
///
/// [EXT E4]: names also match case-insensitively, and `RTMIN`, `RTMAX`,
/// `RTMIN+N`, `RTMAX-N` name the real-time signals.
pub fn parse(field: Option<&[u8]>) -> Result<i32, SignalError> {
    let f = match field {
        None | Some(b"") => return Err(SignalError::Expected),
        Some(f) => f,
    };
    if f[0].is_ascii_digit() {
        if f.len() > 5 || !f.iter().all(u8::is_ascii_digit) {
            return Err(SignalError::BadNumber);
        }
        let n = f.iter().fold(0i32, |a, &d| a * 10 + i32::from(d - b'0'));
        return if n <= 65535 { Ok(n) } else { Err(SignalError::BadNumber) };
    }
    lookup_name(f).ok_or(SignalError::Unknown)
}

/// Look up a signal by name only (no numbers), as `auto_up` triggers want.
pub fn lookup_name(f: &[u8]) -> Option<i32> {
    let name = if f.len() > 3 && f[..3].eq_ignore_ascii_case(b"SIG") { &f[3..] } else { f };
    if let Some(&(_, n)) = NAMES.iter().find(|(s, _)| s.as_bytes().eq_ignore_ascii_case(name)) {
        return Some(n);
    }
    realtime(name)
}

fn realtime(name: &[u8]) -> Option<i32> {
    if name.len() < 5 {
        return None;
    }
    let (base, rest) = name.split_at(5);
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let start = if base.eq_ignore_ascii_case(b"RTMIN") {
        min
    } else if base.eq_ignore_ascii_case(b"RTMAX") {
        max
    } else {
        return None;
    };
    let n = match rest {
        [] => start,
        [sign @ (b'+' | b'-'), digits @ ..]
            if !digits.is_empty() && digits.len() <= 2 && digits.iter().all(u8::is_ascii_digit) =>
        {
            let k = digits.iter().fold(0i32, |a, &d| a * 10 + i32::from(d - b'0'));
            if *sign == b'+' { start + k } else { start - k }
        }
        _ => return None,
    };
    (min..=max).contains(&n).then_some(n)
}

/// The name events print for `sig`, without the `SIG` prefix: the first
/// name in the table, or `-?` for a number without one.
pub fn name_of(sig: i32) -> &'static str {
    NAMES.iter().find(|&&(_, n)| n == sig).map_or("-?", |&(s, _)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_numbers() {
        assert_eq!(parse(Some(b"SIGTERM")), Ok(15));
        assert_eq!(parse(Some(b"TERM")), Ok(15));
        assert_eq!(parse(Some(b"sigterm")), Ok(15));
        assert_eq!(parse(Some(b"9")), Ok(9));
        assert_eq!(parse(Some(b"0")), Ok(0));
        assert_eq!(parse(Some(b"65535")), Ok(65535));
        assert_eq!(parse(Some(b"65536")), Err(SignalError::BadNumber));
        assert_eq!(parse(Some(b"9x")), Err(SignalError::BadNumber));
        assert_eq!(parse(Some(b"BOGUS")), Err(SignalError::Unknown));
        assert_eq!(parse(Some(b"-1")), Err(SignalError::Unknown));
        assert_eq!(parse(Some(b"SIG")), Err(SignalError::Unknown));
        assert_eq!(parse(Some(b"")), Err(SignalError::Expected));
        assert_eq!(parse(None), Err(SignalError::Expected));
        assert_eq!(parse(Some(b"RTMIN+3")), Ok(libc::SIGRTMIN() + 3));
        assert_eq!(parse(Some(b"SIGRTMAX-1")), Ok(libc::SIGRTMAX() - 1));
        assert_eq!(parse(Some(b"RTMIN+99")), Err(SignalError::Unknown));
    }

    #[test]
    fn prints_first_name() {
        assert_eq!(name_of(6), "ABRT");
        assert_eq!(name_of(17), "CHLD");
        assert_eq!(name_of(29), "IO");
        assert_eq!(name_of(0), "-?");
        assert_eq!(name_of(libc::SIGRTMIN()), "-?");
    }
}
