//! The descriptors behind `fd.pipe`, `fd.open` and `fd.socket` (docs/protocol.md §3.12–3.14):
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
#[derive(Clone, Copy)]
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

impl PipeSpec {
    /// The FLAGS text `fd.state` shows for one end (docs/protocol.md §4.2): a plain pipe's
    /// `[nonblock,]from` / `[nonblock,]to`, a socketpair's
    /// `DOMAIN,TYPE,[nonblock,]to` on both ends.
    pub fn flags_text(&self, read_end: bool) -> Flags {
        let mut f = Flags::new();
        if let Some((dom, ty)) = self.socket {
            push(&mut f, dom.word());
            push(&mut f, b",");
            push(&mut f, type_word(ty));
            push(&mut f, b",");
        }
        if self.nonblock {
            push(&mut f, b"nonblock,");
        }
        push(&mut f, if read_end && self.socket.is_none() { b"from" } else { b"to" });
        f
    }
}

/// Make the pipe or socketpair; returns the (read, write) handles, without
/// peers filled in.
pub fn make_pipe(spec: &PipeSpec) -> Result<(Handle, Handle), Fail<'static>> {
    let (r, w) = match spec.socket {
        None => {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Fail::Errno("pipe() failed: ", e as i32))?
        }
        Some((dom, ty)) => sock::socketpair(dom.family(), ty, None, SockFlag::SOCK_CLOEXEC)
            .map_err(|e| Fail::Errno("socketpair() failed: ", e as i32))?,
    };
    if spec.nonblock {
        nb(&r, "fcntl(O_NONBLOCK) failed: ")?;
        nb(&w, "fcntl(O_NONBLOCK) failed: ")?;
    }
    Ok((
        Handle::new(Some(r), Kind::Pipe, &spec.flags_text(true), b""),
        Handle::new(Some(w), Kind::Pipe, &spec.flags_text(false), b""),
    ))
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

/// `fd.open` flags, parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenSpec {
    read: bool,
    write: bool,
    append: bool,
    create: bool,
    trunc: bool,
    nonblock: bool,
    mkdir: bool,
}

/// Parse the FLAGS of `fd.open` (empty items ignored, `-` unknown).
pub fn parse_open_flags(flags: &[u8]) -> Result<OpenSpec, Fail<'_>> {
    let mut s = OpenSpec::default();
    for item in comma_items(flags) {
        let on = match item {
            b"read" => &mut s.read,
            b"write" => &mut s.write,
            b"append" => &mut s.append,
            b"create" => &mut s.create,
            b"trunc" => &mut s.trunc,
            b"nonblock" => &mut s.nonblock,
            b"mkdir" => &mut s.mkdir,
            _ => return Err(Fail::UnknownFlag(item)),
        };
        *on = true;
    }
    Ok(s)
}

impl OpenSpec {
    /// The `open(2)` flags: `write` alone is write-only, `read,write`
    /// read-write, anything else read-only; `O_NOCTTY` always.
    pub fn oflag(&self) -> nix::fcntl::OFlag {
        use nix::fcntl::OFlag;
        let mut of = OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        of |= match (self.read, self.write) {
            (true, true) => OFlag::O_RDWR,
            (false, true) => OFlag::O_WRONLY,
            _ => OFlag::O_RDONLY,
        };
        for (on, flag) in [
            (self.append, OFlag::O_APPEND),
            (self.create, OFlag::O_CREAT),
            (self.trunc, OFlag::O_TRUNC),
            (self.nonblock, OFlag::O_NONBLOCK),
        ] {
            if on {
                of |= flag;
            }
        }
        of
    }

    /// The FLAGS text `fd.state` shows (docs/protocol.md §4.2): the access mode, then the
    /// other flags in a fixed order.
    pub fn flags_text(&self) -> Flags {
        let mut f = Flags::new();
        push(
            &mut f,
            match (self.read, self.write) {
                (true, true) => b"read,write",
                (false, true) => b"write",
                _ => b"read",
            },
        );
        for (on, word) in [
            (self.append, &b",append"[..]),
            (self.create, b",create"),
            (self.trunc, b",trunc"),
            (self.nonblock, b",nonblock"),
            (self.mkdir, b",mkdir"),
        ] {
            if on {
                push(&mut f, word);
            }
        }
        f
    }
}

/// `fd.open`: open PATH as `spec` asks, describe the result.
///
/// The open itself never blocks the loop: it is always made with
/// `O_NONBLOCK` (a FIFO without a writer opens for reading at once, one
/// without a reader fails to open for writing with `ENXIO`, a serial line
/// does not wait for its carrier; fifo(7), open(2)), which is cleared
/// afterwards unless `nonblock` was asked for (docs/nonblocking.md).
pub fn open_file(spec: &OpenSpec, path: &[u8]) -> Result<Handle, Fail<'static>> {
    if spec.mkdir {
        mkdir_parents(path);
    }
    let of = spec.oflag() | nix::fcntl::OFlag::O_NONBLOCK;
    let fd = nix::fcntl::open(OsStr::from_bytes(path), of, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| Fail::Errno("open failed: ", e as i32))?;
    if !spec.nonblock {
        sys::set_nonblock(fd.as_raw_fd(), false).map_err(|e| Fail::Errno("open failed: ", e))?;
    }
    Ok(Handle::new(Some(fd), Kind::File, &spec.flags_text(), path))
}

/// A parsed `fd.socket` address.
#[derive(Debug)]
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

/// `fd.socket` flags and address, parsed.
pub struct SocketSpec<'a> {
    dom: Domain,
    ty: SockType,
    nonblock: bool,
    mkdir: bool,
    /// Bound: `bind`, `listen` or an ADDRSPEC was given.
    binding: bool,
    listen: Option<i32>,
    /// ADDRSPEC as given (empty if none).
    text: &'a [u8],
    addr: Option<Addr>,
}

/// Parse the FLAGS and optional ADDRSPEC of `fd.socket` (docs/protocol.md §3.14), in the
/// order their errors are reported: flags, a missing address, the address.
pub fn parse_socket<'a>(flags: &'a [u8], addr: Option<&'a [u8]>) -> Result<SocketSpec<'a>, Fail<'a>> {
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
    let text: &[u8] = match addr {
        Some(a) => a,
        None if binding => return Err(Fail::Msg("expected address argument")),
        None => b"",
    };
    let addr = match addr {
        Some(a) => Some(parse_addr(dom, a).ok_or(Fail::Msg("invalid address"))?),
        None => None,
    };
    Ok(SocketSpec { dom, ty, nonblock, mkdir, binding, listen, text, addr })
}

impl SocketSpec<'_> {
    /// The FLAGS text `fd.state` shows (docs/protocol.md §4.2): `DOMAIN,TYPE`, then
    /// `,bind` `,listen=N` `,mkdir` `,nonblock`.
    pub fn flags_text(&self) -> Flags {
        let mut f = Flags::new();
        push(&mut f, self.dom.word());
        push(&mut f, b",");
        push(&mut f, type_word(self.ty));
        if self.binding {
            push(&mut f, b",bind");
        }
        if let Some(n) = self.listen {
            let mut l = crate::line::Line::new();
            l.s(",listen=").int(i64::from(n));
            push(&mut f, l.as_bytes());
        }
        if self.mkdir {
            push(&mut f, b",mkdir");
        }
        if self.nonblock {
            push(&mut f, b",nonblock");
        }
        f
    }
}

/// `fd.socket`: make (and maybe bind and listen on) the socket `spec`
/// describes. A failure names the step (`bind: Address already in use`).
pub fn make_socket(spec: &SocketSpec<'_>) -> Result<Handle, Fail<'static>> {
    if spec.dom == Domain::Unix && spec.mkdir && spec.addr.is_some() {
        mkdir_parents(spec.text);
    }
    let fd = sock::socket(spec.dom.family(), spec.ty, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| Fail::Errno("socket: ", e as i32))?;
    if let Some(a) = &spec.addr {
        sock::setsockopt(&fd, sock::sockopt::ReuseAddr, &true).map_err(|e| Fail::Errno("setsockopt: ", e as i32))?;
        bind_addr(&fd, a, spec.text).map_err(|e| Fail::Errno("bind: ", e))?;
        if let Some(n) = spec.listen {
            let bl = sock::Backlog::new(n).unwrap_or(sock::Backlog::MAXCONN);
            sock::listen(&fd, bl).map_err(|e| Fail::Errno("listen: ", e as i32))?;
        }
    }
    if spec.nonblock {
        sys::set_nonblock(fd.as_raw_fd(), true).map_err(|e| Fail::Errno("fcntl(O_NONBLOCK): ", e))?;
    }
    Ok(Handle::new(Some(fd), Kind::Socket, &spec.flags_text(), spec.text))
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
///
/// The probe's connect is non-blocking: a live socket whose backlog is full
/// answers `EAGAIN` at once (unix(7)) instead of making the loop wait for
/// room — which could be forever when that socket is our own control socket.
pub fn stale_socket(path: &[u8], addr: &UnixAddr) -> bool {
    let Ok(st) = nix::sys::stat::lstat(OsStr::from_bytes(path)) else {
        return false;
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK || st.st_uid != sys::geteuid() {
        return false;
    }
    let Ok(probe) =
        sock::socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
    else {
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
        assert!(matches!(parse_socket(b"bind", None), Err(Fail::Msg("expected address argument"))));
        assert!(matches!(parse_socket(b"tcp", Some(b"1.2.3.4:70000")), Err(Fail::Msg("invalid address"))));
        assert!(matches!(parse_socket(b"listen=0", Some(b"x")), Err(Fail::Msg("invalid listen queue length"))));
        let h = make_socket(&parse_socket(b"inet6,stream", None).ok().unwrap()).ok().unwrap();
        assert_eq!((flags(&h), &h.desc[..]), (&b"inet6,stream"[..], &b""[..]));
        let h = make_socket(&parse_socket(b"tcp,listen=11", Some(b"127.0.0.1:0")).ok().unwrap()).ok().unwrap();
        assert_eq!(flags(&h), b"inet,stream,bind,listen=11");
        assert!(parse_addr(Domain::Inet6, b"[::1]:80").is_some());
        assert!(parse_addr(Domain::Inet6, b"*:80").is_some());
        assert!(parse_addr(Domain::Inet6, b"::1").is_none());
    }
}
