//! LCM URLs (docs/fleet.md §2.1): `udpm://GROUP:PORT?ttl=N[&recv_buf_size=B]` and
//! `tcpq://HOST:PORT`, their defaults, and the `LCM_DEFAULT_URL` fallback;
//! and this project's `tcpq+unix:///PATH`, tcpq framing over a Unix stream
//! socket (the lone ranger's private hub: only its own user and root can
//! reach it, and each end checks the other's uid; see tcpq.rs and hub.rs).

use std::fmt;
use std::net::Ipv4Addr;

/// The URL used when neither an option nor `LCM_DEFAULT_URL` gives one.
pub const DEFAULT_URL: &str = "udpm://239.255.76.67:7667?ttl=0";
/// The environment variable consulted when no URL is given.
pub const ENV_VAR: &str = "LCM_DEFAULT_URL";

const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 76, 67);
const DEFAULT_UDPM_PORT: u16 = 7667;
const DEFAULT_TCPQ_HOST: &str = "127.0.0.1";
const DEFAULT_TCPQ_PORT: u16 = 7700;

/// A parsed LCM URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Url {
    /// UDP multicast.
    Udpm {
        /// The multicast group (224.0.0.0/4).
        group: Ipv4Addr,
        /// The UDP port.
        port: u16,
        /// Multicast TTL: 0 keeps packets on the host.
        ttl: u8,
        /// Receive buffer size in bytes (`SO_RCVBUF`), if given.
        recv_buf_size: Option<usize>,
    },
    /// A TCP hub.
    Tcpq {
        /// The hub's host name or address.
        host: String,
        /// The hub's port.
        port: u16,
    },
    /// A tcpq hub on a Unix stream socket (not part of LCM: this project's
    /// own, for a hub that must not be open to other users).
    TcpqUnix {
        /// The socket's absolute path.
        path: String,
    },
}

/// Why a URL did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// Neither `udpm://`, `tcpq://` nor `tcpq+unix://`.
    Scheme(String),
    /// The address part is malformed or not a multicast group.
    Address(String),
    /// The port is not a number in 1..=65535.
    Port(String),
    /// An option is unknown or its value malformed (`tll=1` is a typo, not a default).
    Option(String),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::Scheme(s) => {
                write!(f, "unsupported LCM URL scheme in '{s}' (udpm://, tcpq:// or tcpq+unix:///PATH)")
            }
            UrlError::Address(s) => write!(f, "bad address '{s}' in LCM URL"),
            UrlError::Port(s) => write!(f, "bad port '{s}' in LCM URL"),
            UrlError::Option(s) => write!(f, "bad or unknown LCM URL option '{s}'"),
        }
    }
}

impl std::error::Error for UrlError {}

impl Url {
    /// Parses an LCM URL. Missing parts take the defaults: `udpm://` alone is
    /// the default group and port with ttl 0; `tcpq://` alone is 127.0.0.1:7700.
    /// `tcpq+unix://` takes an absolute path without options.
    pub fn parse(s: &str) -> Result<Url, UrlError> {
        if let Some(path) = s.strip_prefix("tcpq+unix://") {
            if !path.starts_with('/') || path.len() < 2 || path.contains(['?', '\0']) {
                return Err(UrlError::Address(path.to_string()));
            }
            Ok(Url::TcpqUnix { path: path.to_string() })
        } else if let Some(rest) = s.strip_prefix("udpm://") {
            parse_udpm(rest)
        } else if let Some(rest) = s.strip_prefix("tcpq://") {
            parse_tcpq(rest)
        } else {
            Err(UrlError::Scheme(s.to_string()))
        }
    }

    /// The URL from `arg` (an `--lcm-url` option) if given, else from
    /// `LCM_DEFAULT_URL` if set and non-empty, else [`DEFAULT_URL`].
    pub fn from_env_or(arg: Option<&str>) -> Result<Url, UrlError> {
        let env = std::env::var(ENV_VAR).ok();
        Url::choose(arg, env.as_deref())
    }

    /// [`Url::from_env_or`] with the environment's value passed in.
    pub fn choose(arg: Option<&str>, env: Option<&str>) -> Result<Url, UrlError> {
        Url::parse(arg.or(env.filter(|e| !e.is_empty())).unwrap_or(DEFAULT_URL))
    }
}

impl Default for Url {
    fn default() -> Self {
        Url::Udpm { group: DEFAULT_GROUP, port: DEFAULT_UDPM_PORT, ttl: 0, recv_buf_size: None }
    }
}

fn parse_port(s: &str, default: u16) -> Result<u16, UrlError> {
    if s.is_empty() {
        return Ok(default);
    }
    s.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| UrlError::Port(s.to_string()))
}

fn parse_udpm(rest: &str) -> Result<Url, UrlError> {
    let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (host, port) = addr.split_once(':').unwrap_or((addr, ""));
    let group = if host.is_empty() {
        DEFAULT_GROUP
    } else {
        host.parse::<Ipv4Addr>().ok().filter(Ipv4Addr::is_multicast).ok_or_else(|| UrlError::Address(host.into()))?
    };
    let port = parse_port(port, DEFAULT_UDPM_PORT)?;
    let (mut ttl, mut recv_buf_size) = (0u8, None);
    for opt in query.split('&').filter(|o| !o.is_empty()) {
        let bad = || UrlError::Option(opt.to_string());
        match opt.split_once('=').ok_or_else(bad)? {
            ("ttl", v) => ttl = v.parse().map_err(|_| bad())?,
            ("recv_buf_size", v) => recv_buf_size = Some(v.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?),
            _ => return Err(bad()),
        }
    }
    Ok(Url::Udpm { group, port, ttl, recv_buf_size })
}

fn parse_tcpq(rest: &str) -> Result<Url, UrlError> {
    if rest.contains(['?', '/']) {
        return Err(UrlError::Option(rest.to_string()));
    }
    // An IPv6 literal is written in brackets: tcpq://[::1]:7700.
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner.split_once(']').ok_or_else(|| UrlError::Address(rest.to_string()))?;
        let port =
            if after.is_empty() { "" } else { after.strip_prefix(':').ok_or_else(|| UrlError::Port(after.into()))? };
        (host, port)
    } else {
        let (host, port) = rest.split_once(':').unwrap_or((rest, ""));
        if port.contains(':') {
            return Err(UrlError::Address(rest.to_string()));
        }
        (host, port)
    };
    let host = if host.is_empty() { DEFAULT_TCPQ_HOST } else { host };
    Ok(Url::Tcpq { host: host.to_string(), port: parse_port(port, DEFAULT_TCPQ_PORT)? })
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Url::Udpm { group, port, ttl, recv_buf_size } => {
                write!(f, "udpm://{group}:{port}?ttl={ttl}")?;
                match recv_buf_size {
                    Some(b) => write!(f, "&recv_buf_size={b}"),
                    None => Ok(()),
                }
            }
            Url::Tcpq { host, port } if host.parse::<std::net::Ipv6Addr>().is_ok() => {
                write!(f, "tcpq://[{host}]:{port}")
            }
            Url::Tcpq { host, port } => write!(f, "tcpq://{host}:{port}"),
            Url::TcpqUnix { path } => write!(f, "tcpq+unix://{path}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udpm(group: [u8; 4], port: u16, ttl: u8, recv_buf_size: Option<usize>) -> Url {
        Url::Udpm { group: group.into(), port, ttl, recv_buf_size }
    }

    #[test]
    fn udpm_forms() {
        assert_eq!(Url::parse(DEFAULT_URL), Ok(Url::default()));
        assert_eq!(Url::parse("udpm://"), Ok(Url::default()));
        assert_eq!(Url::parse("udpm://239.1.2.3:9000?ttl=1"), Ok(udpm([239, 1, 2, 3], 9000, 1, None)));
        assert_eq!(
            Url::parse("udpm://239.1.2.3:9000?ttl=2&recv_buf_size=4194304"),
            Ok(udpm([239, 1, 2, 3], 9000, 2, Some(4194304)))
        );
        assert_eq!(Url::parse("udpm://239.1.2.3"), Ok(udpm([239, 1, 2, 3], 7667, 0, None)));
    }

    #[test]
    fn udpm_errors() {
        assert_eq!(Url::parse("udpm://10.0.0.1:7667"), Err(UrlError::Address("10.0.0.1".into())));
        assert_eq!(Url::parse("udpm://239.1.2.3:0"), Err(UrlError::Port("0".into())));
        assert_eq!(Url::parse("udpm://239.1.2.3:70000"), Err(UrlError::Port("70000".into())));
        assert_eq!(Url::parse("udpm://239.1.2.3:7667?tll=1"), Err(UrlError::Option("tll=1".into())));
        assert_eq!(Url::parse("udpm://239.1.2.3:7667?ttl=256"), Err(UrlError::Option("ttl=256".into())));
        assert_eq!(Url::parse("udpm://239.1.2.3:7667?ttl"), Err(UrlError::Option("ttl".into())));
        assert_eq!(Url::parse("http://x"), Err(UrlError::Scheme("http://x".into())));
    }

    #[test]
    fn tcpq_forms() {
        let tcpq = |h: &str, port| Url::Tcpq { host: h.into(), port };
        assert_eq!(Url::parse("tcpq://"), Ok(tcpq("127.0.0.1", 7700)));
        assert_eq!(Url::parse("tcpq://hub.example:7800"), Ok(tcpq("hub.example", 7800)));
        assert_eq!(Url::parse("tcpq://[::1]:7701"), Ok(tcpq("::1", 7701)));
        assert_eq!(Url::parse("tcpq://127.0.0.1:x"), Err(UrlError::Port("x".into())));
        assert_eq!(Url::parse("tcpq://::1:7701"), Err(UrlError::Address("::1:7701".into())));
        assert_eq!(Url::parse("tcpq+unix:///tmp/d/hub.sock"), Ok(Url::TcpqUnix { path: "/tmp/d/hub.sock".into() }));
        for bad in ["tcpq+unix://", "tcpq+unix://hub.sock", "tcpq+unix:///", "tcpq+unix:///h?x=1"] {
            assert!(matches!(Url::parse(bad), Err(UrlError::Address(_))), "{bad}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "udpm://239.255.76.67:7667?ttl=0",
            "udpm://239.0.0.9:1?ttl=1&recv_buf_size=8",
            "tcpq://h:1",
            "tcpq://[::1]:2",
            "tcpq+unix:///run/x/hub.sock",
        ] {
            let u = Url::parse(s).unwrap();
            assert_eq!(u.to_string(), s);
            assert_eq!(Url::parse(&u.to_string()), Ok(u));
        }
    }

    #[test]
    fn argument_then_environment_then_default() {
        let tcpq = Url::Tcpq { host: "127.0.0.1".into(), port: 7700 };
        assert_eq!(Url::choose(Some("tcpq://"), Some("udpm://")), Ok(tcpq.clone()));
        assert_eq!(Url::choose(None, Some("tcpq://")), Ok(tcpq));
        assert_eq!(Url::choose(None, Some("")), Ok(Url::default()));
        assert_eq!(Url::choose(None, None), Ok(Url::default()));
        assert!(Url::choose(None, Some("bogus")).is_err(), "a bad environment value is an error, not ignored");
    }
}
