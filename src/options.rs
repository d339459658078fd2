//! Command-line options (docs/protocol.md §9), parsed by hand left to right,
//! each option acting at once.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// The version daemonproxy reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Git commit the binary was built from (from build.rs).
pub const GIT_HEAD: &str = env!("DP_GIT_HEAD");
/// `+` for a build from a modified tree.
pub const GIT_DIRTY: bool = matches!(env!("DP_GIT_DIRTY").as_bytes(), b"1");
/// Build time, unix seconds.
pub const BUILD_TIME: &str = env!("DP_BUILD_TIME");
/// Build time, `YYYY-MM-DD hh:mm:ss`.
pub const BUILD_DATE: &str = env!("DP_BUILD_DATE");
/// Copyright line shown by `--version` and the `-i` banner.
pub const COPYRIGHT: &str = "Copyright (C) 2014-2026  the daemonproxy authors";
/// Licence lines shown by `--version` and the `-i` banner.
pub const LICENCE: [&str; 3] = [
    "Distributed under the MIT licence.  See LICENSE.",
    "This is free software: you are free to change and redistribute it.",
    "There is NO WARRANTY, to the extent permitted by law.",
];

/// `--help` text (docs/protocol.md §9.4), without the version line: daemonproxy 1.1's text
/// byte for byte, then the options added since under `extensions:`.
pub const HELP: &str = "options:
  -c --config       FILENAME  Read command stream from FILENAME at startup
  -i --interactive            Use STDIN+STDOUT as a controller communication pipe
  -S --socket       PATH      Listen on PATH for controller connections
  -D --daemonize              Fork into the background
     --exit-guard   INTEGER   Guard against accidental termination
  -E --exit-exec    TSV_ARGS  exec() args in any trappable exit scenario
     --fd-pool      N[xM]     Pre-allocate N named handles [of M bytes each]
     --service-pool N[xM]     Pre-allocate N services [of M bytes each]
  -M --mlockall               Call mlockall() after allocating structures
  -v --verbose                Enable another level of logging output
  -q --quiet                  Suppress another level of logging output
  -h --help                   Quick usage synopsis
     --version                Print complete version information
extensions:
     --controller-pool N      Allow N controllers at once (default 16)
     --socket-allow-uid UID   Also serve control socket peers of UID
     --socket-mode  MODE      Control socket file mode (default 0600)
     --socket-group GROUP     Control socket file group
     --subreaper              Adopt orphaned descendants (outside PID 1)
     --setpgid                Start each service in a process group of its own
  Long options also take their value as --option=VALUE.
";

/// A pool size `N[xM]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    /// Object count.
    pub n: u64,
    /// Bytes per object, if given.
    pub m: Option<u64>,
}

/// Parsed options.
#[derive(Debug, Default)]
pub struct Options {
    /// `-c FILE` (`-` = stdin).
    pub config: Option<OsString>,
    /// `-i`.
    pub interactive: bool,
    /// `-S PATH`.
    pub socket: Option<OsString>,
    /// `-D`.
    pub daemonize: bool,
    /// `--exit-guard` code (0: none).
    pub exit_guard: i64,
    /// `-E` TSV exec args (empty: none).
    pub exit_exec: Vec<u8>,
    /// `--fd-pool`.
    pub fd_pool: Option<Pool>,
    /// `--service-pool`.
    pub service_pool: Option<Pool>,
    /// `-M`.
    pub mlockall: bool,
    /// Net `-v` minus `-q` steps.
    pub verbosity: i32,
    /// `--controller-pool N` ([EXT E2]).
    pub controllers: Option<usize>,
    /// `--socket-allow-uid UID`, repeatable.
    pub socket_uids: Vec<u32>,
    /// `--socket-mode MODE` and `--socket-group GROUP`.
    pub socket_perm: crate::listener::Perm,
    /// `--subreaper`: become a child subreaper outside PID 1.
    pub subreaper: bool,
    /// `--setpgid`: every service leads a process group of its own.
    pub setpgid: bool,
}

/// Why parsing stopped before the main job.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// `--help`: print, exit 1.
    Help,
    /// `--version`: print, exit 1.
    Version,
    /// An option error: message, exit 2.
    Error(String),
}

fn arg_str(a: &OsStr) -> String {
    String::from_utf8_lossy(a.as_bytes()).into_owned()
}

/// Parse a pool size (docs/protocol.md §9.3).
pub fn parse_pool(s: &[u8]) -> Option<Pool> {
    let bad = || None;
    let (n, m) = match memchr::memchr(b'x', s) {
        Some(p) => (&s[..p], Some(&s[p + 1..])),
        None => (s, None),
    };
    let num = |d: &[u8]| -> Option<u64> {
        if d.is_empty() || !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(d).ok()?.parse().ok()
    };
    let n = num(n)?;
    let m = match m {
        None => None,
        Some(m) => {
            let digits = m.iter().take_while(|c| c.is_ascii_digit()).count();
            let v = num(&m[..digits])?;
            let suffix = &m[digits..];
            let mult: u64 = match suffix {
                b"" | b"B" => 1,
                _ => {
                    let unit = suffix[0].to_ascii_uppercase();
                    let pow = match unit {
                        b'K' => 1,
                        b'M' => 2,
                        b'G' => 3,
                        b'T' => 4,
                        _ => return bad(),
                    };
                    let base: u64 = match &suffix[1..] {
                        b"" | b"iB" => 1024,
                        b"B" => 1000,
                        _ => return bad(),
                    };
                    base.pow(pow)
                }
            };
            Some(v.checked_mul(mult)?)
        }
    };
    Some(Pool { n, m })
}

/// Parse argv (without argv[0]). `pid1` applies the PID-1 defaults first.
/// On a stop, the options parsed so far are returned too (`-E` before
/// `--help` takes effect, docs/protocol.md §9.1).
pub fn parse(args: &[OsString], pid1: bool) -> (Options, Option<Stop>) {
    let mut o = Options::default();
    if pid1 {
        o.config = Some(OsString::from("/etc/daemonproxy.conf"));
        o.exit_guard = 1;
    }
    let r = parse_into(&mut o, args);
    (o, r.err())
}

fn parse_into(o: &mut Options, args: &[OsString]) -> Result<(), Stop> {
    let mut i = 0;
    let take = |i: &mut usize, what: &str| -> Result<OsString, Stop> {
        *i += 1;
        args.get(*i).cloned().ok_or_else(|| Stop::Error(format!("Missing argument for {what}")))
    };
    while i < args.len() {
        let a = args[i].as_bytes();
        if a == b"-" {
            i += 1;
            continue;
        }
        if let Some(long) = a.strip_prefix(b"--") {
            // `--option=VALUE` (an extension; 1.1 refused it): the value is
            // taken as if it were the next argument.
            let (long, inline) = match memchr::memchr(b'=', long) {
                Some(p) if p > 0 => (&long[..p], Some(OsString::from(OsStr::from_bytes(&long[p + 1..])))),
                _ => (long, None),
            };
            let what = format!("--{}", String::from_utf8_lossy(long));
            let takes_value = matches!(
                long,
                b"config"
                    | b"socket"
                    | b"exit-guard"
                    | b"exit-exec"
                    | b"fd-pool"
                    | b"service-pool"
                    | b"controller-pool"
                    | b"socket-allow-uid"
                    | b"socket-mode"
                    | b"socket-group"
            );
            if inline.is_some() && !takes_value {
                return Err(Stop::Error(format!("Option {what} takes no value")));
            }
            let take = |i: &mut usize, what: &str| -> Result<OsString, Stop> {
                match &inline {
                    Some(v) => Ok(v.clone()),
                    None => take(i, what),
                }
            };
            match long {
                b"config" => o.config = Some(config_arg(take(&mut i, &what)?)?),
                b"interactive" => o.interactive = true,
                b"socket" => o.socket = Some(take(&mut i, &what)?),
                b"daemonize" => o.daemonize = true,
                b"exit-guard" => o.exit_guard = guard_arg(&take(&mut i, &what)?)?,
                b"exit-exec" => o.exit_exec = exec_arg(&take(&mut i, &what)?)?,
                b"fd-pool" => o.fd_pool = Some(pool_arg(&take(&mut i, &what)?)?),
                b"service-pool" => o.service_pool = Some(pool_arg(&take(&mut i, &what)?)?),
                b"mlockall" => o.mlockall = true,
                b"subreaper" => o.subreaper = true,
                b"setpgid" => o.setpgid = true,
                b"controller-pool" => o.controllers = Some(count_arg(&take(&mut i, &what)?, "controller pool")?),
                b"socket-allow-uid" => {
                    let v = take(&mut i, &what)?;
                    let uid = count_arg(&v, "uid")?;
                    o.socket_uids.push(u32::try_from(uid).map_err(|_| Stop::Error("uid out of range".into()))?);
                }
                b"socket-mode" => o.socket_perm.mode = mode_arg(&take(&mut i, &what)?)?,
                b"socket-group" => o.socket_perm.gid = Some(group_arg(&take(&mut i, &what)?)?),
                b"verbose" => o.verbosity += 1,
                b"quiet" => o.verbosity -= 1,
                b"help" => return Err(Stop::Help),
                b"version" => return Err(Stop::Version),
                _ => return Err(Stop::Error(format!("Unknown option {what}  (see --help)"))),
            }
        } else if a.len() > 1 && a[0] == b'-' {
            for &c in &a[1..] {
                let what = format!("-{}", c as char);
                match c {
                    b'c' => o.config = Some(config_arg(take(&mut i, &what)?)?),
                    b'i' => o.interactive = true,
                    b'S' => o.socket = Some(take(&mut i, &what)?),
                    b'D' => o.daemonize = true,
                    b'E' => o.exit_exec = exec_arg(&take(&mut i, &what)?)?,
                    b'M' => o.mlockall = true,
                    b'v' => o.verbosity += 1,
                    b'q' => o.verbosity -= 1,
                    b'h' => return Err(Stop::Help),
                    _ => {
                        let shown = String::from_utf8_lossy(std::slice::from_ref(&c)).into_owned();
                        return Err(Stop::Error(format!("Unknown option -{shown}  (see --help)")));
                    }
                }
            }
        } else {
            return Err(Stop::Error(format!("Unexpected argument \"{}\"", arg_str(&args[i]))));
        }
        i += 1;
    }
    if !o.interactive && o.config.is_none() && o.socket.is_none() {
        return Err(Stop::Error("require -i or -c or -S".into()));
    }
    Ok(())
}

fn config_arg(v: OsString) -> Result<OsString, Stop> {
    if v.as_bytes() != b"-" && std::fs::metadata(&v).is_err() {
        return Err(Stop::Error(format!("Cannot stat configfile \"{}\"", arg_str(&v))));
    }
    Ok(v)
}

fn guard_arg(v: &OsStr) -> Result<i64, Stop> {
    crate::command::parse_int(v.as_bytes()).ok_or_else(|| Stop::Error("Terminate guard must be an integer".into()))
}

fn exec_arg(v: &OsStr) -> Result<Vec<u8>, Stop> {
    if v.len() >= 256 {
        return Err(Stop::Error("exec-on-exit arguments exceed buffer size".into()));
    }
    Ok(v.as_bytes().to_vec())
}

fn count_arg(v: &OsStr, what: &str) -> Result<usize, Stop> {
    let b = v.as_bytes();
    if b.is_empty() || b.len() > 9 || !b.iter().all(u8::is_ascii_digit) {
        return Err(Stop::Error(format!("Expected a number for {what}")));
    }
    Ok(b.iter().fold(0usize, |a, &d| a * 10 + usize::from(d - b'0')))
}

/// An octal permission mode of at most 0777 (`660`, `0660`).
fn mode_arg(v: &OsStr) -> Result<u32, Stop> {
    let b = v.as_bytes();
    let bad = || Stop::Error("Expected an octal mode of at most 0777 for --socket-mode".into());
    if b.is_empty() || b.len() > 4 || !b.iter().all(|c| (b'0'..=b'7').contains(c)) {
        return Err(bad());
    }
    let m = b.iter().fold(0u32, |a, &d| a * 8 + u32::from(d - b'0'));
    if m > 0o777 { Err(bad()) } else { Ok(m) }
}

/// A group name or number.
fn group_arg(v: &OsStr) -> Result<u32, Stop> {
    let b = v.as_bytes();
    if !b.is_empty() && b.len() <= 10 && b.iter().all(u8::is_ascii_digit) {
        return u32::try_from(count_arg(v, "group").unwrap_or(usize::MAX))
            .map_err(|_| Stop::Error("gid out of range".into()));
    }
    match nix::unistd::Group::from_name(&arg_str(v)) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => Err(Stop::Error(format!("Unknown group \"{}\"", arg_str(v)))),
    }
}

fn pool_arg(v: &OsStr) -> Result<Pool, Stop> {
    parse_pool(v.as_bytes()).ok_or_else(|| {
        Stop::Error("Expected 'N' or 'NxM' where N and M are integers and M has an optional size suffix".into())
    })
}

/// The `--version` text.
pub fn version_text() -> String {
    let mut s = format!("daemonproxy version {VERSION}\n");
    s += &format!(" build timestamp: {BUILD_TIME} ({BUILD_DATE})\n");
    s += &format!(" git HEAD: {GIT_HEAD}{}\n", if GIT_DIRTY { " (dirty)" } else { "" });
    s += COPYRIGHT;
    s += "\n";
    for l in LICENCE {
        s += l;
        s += "\n";
    }
    s
}

/// The `--help` text.
pub fn help_text() -> String {
    format!("daemonproxy version {VERSION}\n{HELP}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> (Options, Option<Stop>) {
        let v: Vec<OsString> = a.iter().map(OsString::from).collect();
        parse(&v, false)
    }

    #[test]
    fn options() {
        assert_eq!(p(&[]).1, Some(Stop::Error("require -i or -c or -S".into())));
        assert_eq!(p(&["-i"]).1, None);
        assert_eq!(p(&["-ivvq"]).0.verbosity, 1);
        assert_eq!(p(&["--bogus"]).1, Some(Stop::Error("Unknown option --bogus  (see --help)".into())));
        assert_eq!(p(&["--"]).1, Some(Stop::Error("Unknown option --  (see --help)".into())));
        assert_eq!(p(&["-x"]).1, Some(Stop::Error("Unknown option -x  (see --help)".into())));
        assert_eq!(p(&["-i", "x"]).1, Some(Stop::Error("Unexpected argument \"x\"".into())));
        assert_eq!(p(&["-ic"]).1, Some(Stop::Error("Missing argument for -c".into())));
        assert_eq!(p(&["--config"]).1, Some(Stop::Error("Missing argument for --config".into())));
        assert_eq!(p(&["-ic", "-"]).0.config, Some(OsString::from("-")));
        assert_eq!(
            p(&["-c", "/nonexistent/x"]).1,
            Some(Stop::Error("Cannot stat configfile \"/nonexistent/x\"".into()))
        );
        let (o, s) = p(&["-E", "a\tb", "--help"]);
        assert_eq!((o.exit_exec, s), (b"a\tb".to_vec(), Some(Stop::Help)));
        assert_eq!(p(&["-", "-i"]).1, None);
        assert_eq!(p(&["--exit-guard", "x", "-i"]).1, Some(Stop::Error("Terminate guard must be an integer".into())));
        let v: Vec<OsString> = vec![];
        let (o, s) = parse(&v, true);
        assert_eq!((o.exit_guard, s), (1, None));
        let (o, s) = p(&["-i", "--controller-pool", "4", "--socket-allow-uid", "1000", "--socket-allow-uid", "7"]);
        assert_eq!((o.controllers, o.socket_uids, s), (Some(4), vec![1000, 7], None));
        assert!(matches!(p(&["-i", "--controller-pool", "x"]).1, Some(Stop::Error(_))));
        let (o, s) = p(&["-i", "--socket-mode", "0660", "--socket-group", "0"]);
        assert_eq!((o.socket_perm, s), (crate::listener::Perm { mode: 0o660, gid: Some(0) }, None));
        assert_eq!(p(&["-i", "--socket-mode", "666"]).0.socket_perm.mode, 0o666);
        assert_eq!(p(&["-i"]).0.socket_perm.mode, 0o600);
        for bad in ["1777", "0800", "", "rw", "77777"] {
            assert!(matches!(p(&["-i", "--socket-mode", bad]).1, Some(Stop::Error(_))), "{bad}");
        }
        assert_eq!(p(&["-i", "--socket-group", "root"]).0.socket_perm.gid, Some(0));
        assert!(matches!(p(&["-i", "--socket-group", "no-such-group-x"]).1, Some(Stop::Error(_))));
    }

    #[test]
    fn pools() {
        assert_eq!(parse_pool(b"10"), Some(Pool { n: 10, m: None }));
        assert_eq!(parse_pool(b"10x2K"), Some(Pool { n: 10, m: Some(2048) }));
        assert_eq!(parse_pool(b"10x2kB"), Some(Pool { n: 10, m: Some(2000) }));
        assert_eq!(parse_pool(b"10x1MiB"), Some(Pool { n: 10, m: Some(1 << 20) }));
        assert_eq!(parse_pool(b"10x64B"), Some(Pool { n: 10, m: Some(64) }));
        assert_eq!(parse_pool(b"10x1kb"), None);
        assert_eq!(parse_pool(b"x1"), None);
        assert_eq!(parse_pool(b"1y"), None);
    }
}
