//! The descriptors behind `fd.pipe`, `fd.open` and `fd.socket` (§3.12–3.14):
//! flag parsing, the syscalls, and the FLAGS text `fd.state` shows.

use crate::command::comma_items;
use crate::handle::{Flags, Handle, Kind};
use crate::reply::Fail;
use crate::sys;
use nix::sys::socket::{self as sock, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, UnixAddr};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

fn push(f: &mut Flags, s: &[u8]) {
    let n = s.len().min(f.remaining_capacity());
    let _ = f.try_extend_from_slice(&s[..n]);
}

fn nb(fd: &OwnedFd, prefix: &'static str) -> Result<(), Fail<'static>> {
    sys::set_nonblock(fd.as_raw_fd(), true).map_err(|e| Fail::Errno(prefix, e))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Domain {
    Unix,
    Inet,
    Inet6,
}

impl Domain {
    fn word(self) -> &'static [u8] {
        match self {
            Domain::Unix => b"unix",
            Domain::Inet => b"inet",
            Domain::Inet6 => b"inet6",
        }
    }
    fn family(self) -> AddressFamily {
        match self {
            Domain::Unix => AddressFamily::Unix,
            Domain::Inet => AddressFamily::Inet,
            Domain::Inet6 => AddressFamily::Inet6,
        }
    }
}

fn type_word(t: SockType) -> &'static [u8] {
    match t {
        SockType::Datagram => b"dgram",
        SockType::SeqPacket => b"seqpacket",
        _ => b"stream",
    }
}

/// Apply one socket domain/type flag; `false` if `item` is not one.
fn socket_flag(item: &[u8], dom: &mut Domain, ty: &mut SockType) -> bool {
    match item {
        b"unix" => *dom = Domain::Unix,
        b"inet" => *dom = Domain::Inet,
        b"inet6" => *dom = Domain::Inet6,
        b"tcp" => (*dom, *ty) = (Domain::Inet, SockType::Stream),
        b"udp" => (*dom, *ty) = (Domain::Inet, SockType::Datagram),
        b"stream" => *ty = SockType::Stream,
        b"dgram" => *ty = SockType::Datagram,
        b"seqpacket" => *ty = SockType::SeqPacket,
        _ => return false,
    }
    true
}

/// `fd.pipe` flags, parsed.
pub struct PipeSpec {
    nonblock: bool,
    socket: Option<(Domain, SockType)>,
}

/// Parse the optional FLAGS of `fd.pipe` (empty items and `-` ignored).
pub fn parse_pipe_flags(flags: Option<&[u8]>) -> Result<PipeSpec, Fail<'_>> {
    let mut spec = PipeSpec { nonblock: false, socket: None };
    let (mut dom, mut ty, mut is_socket) = (Domain::Unix, SockType::Stream, false);
    for item in comma_items(flags.unwrap_or(b"")) {
        match item {
            b"-" => {}
            b"nonblock" => spec.nonblock = true,
            _ if socket_flag(item, &mut dom, &mut ty) => is_socket = true,
            _ => return Err(Fail::UnknownFlag(item)),
        }
    }
    if is_socket {
        spec.socket = Some((dom, ty));
    }
    Ok(spec)
}

/// Make the pipe or socketpair; returns the (read, write) handles, without
/// peers filled in.
pub fn make_pipe(spec: &PipeSpec) -> Result<(Handle, Handle), Fail<'static>> {
    match spec.socket {
        None => {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| Fail::Errno("pipe() failed: ", e as i32))?;
            let mut fr = Flags::new();
            let mut fw = Flags::new();
            if spec.nonblock {
                nb(&r, "fcntl(O_NONBLOCK) failed: ")?;
                nb(&w, "fcntl(O_NONBLOCK) failed: ")?;
                push(&mut fr, b"nonblock,");
                push(&mut fw, b"nonblock,");
            }
            push(&mut fr, b"from");
            push(&mut fw, b"to");
            Ok((Handle::new(Some(r), Kind::Pipe, &fr, b""), Handle::new(Some(w), Kind::Pipe, &fw, b"")))
        }
        Some((dom, ty)) => {
            let (a, b) = sock::socketpair(dom.family(), ty, None, SockFlag::SOCK_CLOEXEC)
                .map_err(|e| Fail::Errno("socketpair() failed: ", e as i32))?;
            let mut f = Flags::new();
            push(&mut f, dom.word());
            push(&mut f, b",");
            push(&mut f, type_word(ty));
            push(&mut f, b",");
            if spec.nonblock {
                nb(&a, "fcntl(O_NONBLOCK) failed: ")?;
                nb(&b, "fcntl(O_NONBLOCK) failed: ")?;
                push(&mut f, b"nonblock,");
            }
            push(&mut f, b"to");
            Ok((Handle::new(Some(a), Kind::Pipe, &f, b""), Handle::new(Some(b), Kind::Pipe, &f, b"")))
        }
    }
}

/// Create the missing parent directories of `path` (mode 0700), ignoring
/// failures, as the `mkdir` flag asks.
fn mkdir_parents(path: &[u8]) {
    for (i, &c) in path.iter().enumerate() {
        if c == b'/' && i > 0 {
            let _ = nix::unistd::mkdir(OsStr::from_bytes(&path[..i]), nix::sys::stat::Mode::from_bits_truncate(0o700));
        }
    }
}

/// `fd.open`: parse FLAGS, open PATH, describe the result.
pub fn open_file<'a>(flags: &'a [u8], path: &[u8]) -> Result<Handle, Fail<'a>> {
    let (mut read, mut write, mut append, mut create, mut trunc, mut nonblock, mut mkdir) =
        (false, false, false, false, false, false, false);
    for item in comma_items(flags) {
        match item {
            b"read" => read = true,
            b"write" => write = true,
            b"append" => append = true,
            b"create" => create = true,
            b"trunc" => trunc = true,
            b"nonblock" => nonblock = true,
            b"mkdir" => mkdir = true,
            _ => return Err(Fail::UnknownFlag(item)),
        }
    }
    use nix::fcntl::OFlag;
    let mut of = OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let mut f = Flags::new();
    match (read, write) {
        (true, true) => {
            of |= OFlag::O_RDWR;
            push(&mut f, b"read,write");
        }
        (false, true) => {
            of |= OFlag::O_WRONLY;
            push(&mut f, b"write");
        }
        _ => push(&mut f, b"read"),
    }
    for (on, flag, word) in [
        (append, OFlag::O_APPEND, &b",append"[..]),
        (create, OFlag::O_CREAT, b",create"),
        (trunc, OFlag::O_TRUNC, b",trunc"),
        (nonblock, OFlag::O_NONBLOCK, b",nonblock"),
        (mkdir, OFlag::empty(), b",mkdir"),
    ] {
        if on {
            of |= flag;
            push(&mut f, word);
        }
    }
    if mkdir {
        mkdir_parents(path);
    }
    let fd = nix::fcntl::open(OsStr::from_bytes(path), of, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| Fail::Errno("open failed: ", e as i32))?;
    Ok(Handle::new(Some(fd), Kind::File, &f, path))
}

/// A parsed `fd.socket` address.
enum Addr {
    Unix(UnixAddr),
    Inet(SockaddrIn),
    Inet6(SockaddrIn6),
}

fn parse_port(p: &[u8]) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = p.iter().fold(0u32, |a, &d| a * 10 + u32::from(d - b'0'));
    u16::try_from(v).ok() // [FIX F21]: > 65535 is refused, not wrapped
}

fn parse_addr(dom: Domain, spec: &[u8]) -> Option<Addr> {
    match dom {
        Domain::Unix => {
            if spec.is_empty() || spec.len() >= 108 || spec.contains(&0) {
                return None;
            }
            UnixAddr::new(OsStr::from_bytes(spec)).ok().map(Addr::Unix)
        }
        Domain::Inet => {
            let (host, port) = match memchr::memrchr(b':', spec) {
                Some(p) => (&spec[..p], parse_port(&spec[p + 1..])?),
                None => (spec, 0),
            };
            let ip = if host == b"*" {
                std::net::Ipv4Addr::UNSPECIFIED
            } else {
                std::str::from_utf8(host).ok()?.parse().ok()?
            };
            Some(Addr::Inet(SockaddrIn::from(std::net::SocketAddrV4::new(ip, port))))
        }
        Domain::Inet6 => {
            // [EXT E5]: `[ADDR]:PORT`, `[ADDR]`, `*:PORT`, `*`.
            let (host, port) = if let Some(rest) = spec.strip_prefix(b"[") {
                let close = memchr::memchr(b']', rest)?;
                let port = match &rest[close + 1..] {
                    [] => 0,
                    [b':', p @ ..] => parse_port(p)?,
                    _ => return None,
                };
                (std::str::from_utf8(&rest[..close]).ok()?.parse().ok()?, port)
            } else {
                let port = match spec {
                    b"*" => 0,
                    [b'*', b':', p @ ..] => parse_port(p)?,
                    _ => return None,
                };
                (std::net::Ipv6Addr::UNSPECIFIED, port)
            };
            Some(Addr::Inet6(SockaddrIn6::from(std::net::SocketAddrV6::new(host, port, 0, 0))))
        }
    }
}

/// `fd.socket`: parse FLAGS and ADDRSPEC, make (and maybe bind) the socket.
pub fn make_socket<'a>(flags: &'a [u8], addr: Option<&[u8]>) -> Result<Handle, Fail<'a>> {
    let (mut dom, mut ty) = (Domain::Unix, SockType::Stream);
    let (mut nonblock, mut mkdir, mut bind, mut listen) = (false, false, false, None::<i32>);
    for item in comma_items(flags) {
        let (key, val) = match memchr::memchr(b'=', item) {
            Some(p) => (&item[..p], Some(&item[p + 1..])),
            None => (item, None),
        };
        match (key, val) {
            (b"nonblock", None) => nonblock = true,
            (b"mkdir", None) => mkdir = true,
            (b"bind", None) => bind = true,
            (b"listen", None) => listen = Some(32),
            (b"listen", Some(v)) => match crate::command::parse_int(v) {
                Some(n @ 1..=65535) => listen = Some(n as i32),
                _ => return Err(Fail::Msg("invalid listen queue length")),
            },
            (_, None) if socket_flag(key, &mut dom, &mut ty) => {}
            _ => return Err(Fail::UnknownFlag(item)),
        }
    }
    let binding = bind || listen.is_some() || addr.is_some();
    let addr_text: &[u8] = match addr {
        Some(a) => a,
        None if binding => return Err(Fail::Msg("expected address argument")),
        None => b"",
    };
    let parsed = if addr.is_some() {
        if dom == Domain::Unix && mkdir {
            mkdir_parents(addr_text);
        }
        Some(parse_addr(dom, addr_text).ok_or(Fail::Msg("invalid address"))?)
    } else {
        None
    };
    let fd =
        sock::socket(dom.family(), ty, SockFlag::SOCK_CLOEXEC, None).map_err(|e| Fail::Errno("socket: ", e as i32))?;
    if let Some(a) = &parsed {
        sock::setsockopt(&fd, sock::sockopt::ReuseAddr, &true).map_err(|e| Fail::Errno("setsockopt: ", e as i32))?;
        bind_addr(&fd, a, addr_text).map_err(|e| Fail::Errno("bind: ", e))?;
        if let Some(n) = listen {
            let bl = sock::Backlog::new(n).unwrap_or(sock::Backlog::MAXCONN);
            sock::listen(&fd, bl).map_err(|e| Fail::Errno("listen: ", e as i32))?;
        }
    }
    if nonblock {
        sys::set_nonblock(fd.as_raw_fd(), true).map_err(|e| Fail::Errno("fcntl(O_NONBLOCK): ", e))?;
    }
    let mut f = Flags::new();
    push(&mut f, dom.word());
    push(&mut f, b",");
    push(&mut f, type_word(ty));
    if binding {
        push(&mut f, b",bind");
    }
    if let Some(n) = listen {
        let mut l = crate::line::Line::new();
        l.s(",listen=").int(i64::from(n));
        push(&mut f, l.as_bytes());
    }
    if mkdir {
        push(&mut f, b",mkdir");
    }
    if nonblock {
        push(&mut f, b",nonblock");
    }
    Ok(Handle::new(Some(fd), Kind::Socket, &f, addr_text))
}

fn bind_addr(fd: &OwnedFd, a: &Addr, text: &[u8]) -> Result<(), i32> {
    let raw = fd.as_raw_fd();
    let r = match a {
        Addr::Unix(u) => sock::bind(raw, u),
        Addr::Inet(i) => sock::bind(raw, i),
        Addr::Inet6(i) => sock::bind(raw, i),
    };
    match (r, a) {
        (Ok(()), _) => Ok(()),
        (Err(nix::errno::Errno::EADDRINUSE), Addr::Unix(u)) if stale_socket(text, u) => {
            // [FIX F12]: a euid-owned socket nobody listens on is removed.
            let _ = nix::unistd::unlink(OsStr::from_bytes(text));
            sock::bind(raw, u).map_err(|e| e as i32)
        }
        (Err(e), _) => Err(e as i32),
    }
}

/// Is `path` a socket owned by our euid that refuses connections?
pub fn stale_socket(path: &[u8], addr: &UnixAddr) -> bool {
    let Ok(st) = nix::sys::stat::lstat(OsStr::from_bytes(path)) else {
        return false;
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK || st.st_uid != sys::geteuid() {
        return false;
    }
    let Ok(probe) = sock::socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None) else {
        return false;
    };
    matches!(sock::connect(probe.as_raw_fd(), addr), Err(nix::errno::Errno::ECONNREFUSED))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(h: &Handle) -> &[u8] {
        &h.flags
    }

    #[test]
    fn pipe_flags() {
        let s = parse_pipe_flags(Some(b"unix,dgram")).ok().unwrap();
        let (a, _) = make_pipe(&s).ok().unwrap();
        assert_eq!(flags(&a), b"unix,dgram,to");
        let s = parse_pipe_flags(Some(b",-,nonblock")).ok().unwrap();
        let (a, b) = make_pipe(&s).ok().unwrap();
        assert_eq!((flags(&a), flags(&b)), (&b"nonblock,from"[..], &b"nonblock,to"[..]));
        assert!(matches!(parse_pipe_flags(Some(b"bogus")), Err(Fail::UnknownFlag(b"bogus"))));
        let s = parse_pipe_flags(Some(b"tcp")).ok().unwrap();
        let mut l = crate::line::Line::new();
        make_pipe(&s).err().unwrap().write_to(&mut l);
        assert_eq!(l.as_bytes(), b"socketpair() failed: Operation not supported");
    }

    #[test]
    fn socket_addresses() {
        assert!(matches!(make_socket(b"bind", None), Err(Fail::Msg("expected address argument"))));
        assert!(matches!(make_socket(b"tcp", Some(b"1.2.3.4:70000")), Err(Fail::Msg("invalid address"))));
        assert!(matches!(make_socket(b"listen=0", Some(b"x")), Err(Fail::Msg("invalid listen queue length"))));
        let h = make_socket(b"inet6,stream", None).ok().unwrap();
        assert_eq!((flags(&h), &h.desc[..]), (&b"inet6,stream"[..], &b""[..]));
        let h = make_socket(b"tcp,listen=11", Some(b"127.0.0.1:0")).ok().unwrap();
        assert_eq!(flags(&h), b"inet,stream,bind,listen=11");
        assert!(parse_addr(Domain::Inet6, b"[::1]:80").is_some());
        assert!(parse_addr(Domain::Inet6, b"*:80").is_some());
        assert!(parse_addr(Domain::Inet6, b"::1").is_none());
    }
}
