//! Named handles (docs/protocol.md §6): the table of named file descriptors that
//! services are started with, and how each one is shown in `fd.state`.
//!
//! The table is a `BTreeMap` keyed by name: lookup is O(log n) and the
//! bytewise name order that `statedump` needs comes for free; a dump resumes
//! after the last name it wrote with a range query.

use crate::command::Name;
use crate::line::Line;
use crate::sys;
use arrayvec::ArrayVec;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// The `fd.state` TYPE field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `null` and the `control.*` names.
    Special,
    /// A file (opened, inherited or taken).
    File,
    /// One end of a pipe or socketpair.
    Pipe,
    /// A socket made by `fd.socket` or inherited.
    Socket,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Special => "special",
            Kind::File => "file",
            Kind::Pipe => "pipe",
            Kind::Socket => "socket",
        }
    }
}

/// The FLAGS field, kept as text (at most a few dozen bytes).
pub type Flags = ArrayVec<u8, 64>;

/// One named handle.
pub struct Handle {
    /// The descriptor; `None` for the `control.*` names, which stand for the
    /// per-start controller socket (docs/protocol.md §7.3).
    pub fd: Option<OwnedFd>,
    /// TYPE.
    pub kind: Kind,
    /// FLAGS text.
    pub flags: Flags,
    /// DESCRIPTION (path, address, fixed text). Unused for pipes.
    pub desc: Vec<u8>,
    /// For a pipe end: the other end's name and the pipe's identity, or
    /// `None` once that end was replaced or deleted (shown as `?`).
    pub peer: Option<Name>,
    /// Identity of the pipe this end belongs to (0 for non-pipes).
    pub pipe_id: u64,
}

impl Handle {
    /// A handle of the given kind with no peer.
    pub fn new(fd: Option<OwnedFd>, kind: Kind, flags: &[u8], desc: &[u8]) -> Handle {
        let mut f = Flags::new();
        let n = flags.len().min(f.capacity());
        let _ = f.try_extend_from_slice(&flags[..n]);
        Handle { fd, kind, flags: f, desc: desc.to_vec(), peer: None, pipe_id: 0 }
    }

    /// The raw descriptor, if the handle has one.
    pub fn raw(&self) -> Option<RawFd> {
        self.fd.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Describe a descriptor daemonproxy did not open itself (inherited at
    /// start-up or received with `fd.take`): docs/protocol.md §4.2 "inherited" rows.
    pub fn inherited(fd: OwnedFd) -> Handle {
        let raw = fd.as_raw_fd();
        let fl = sys::get_fl(raw).unwrap_or(0);
        let mut flags = Flags::new();
        let push = |f: &mut Flags, s: &[u8]| {
            let _ = f.try_extend_from_slice(s);
        };
        if sys::is_socket(raw) {
            let dom: &[u8] = match sys::socket_family(raw) {
                Some(libc::AF_INET) => b"inet",
                Some(libc::AF_INET6) => b"inet6",
                _ => b"unix",
            };
            let ty: &[u8] = match sys::sockopt_int(raw, libc::SO_TYPE) {
                Ok(libc::SOCK_DGRAM) => b"dgram",
                Ok(libc::SOCK_SEQPACKET) => b"seqpacket",
                _ => b"stream",
            };
            push(&mut flags, dom);
            push(&mut flags, b",");
            push(&mut flags, ty);
            if fl & libc::O_NONBLOCK != 0 {
                push(&mut flags, b",nonblock");
            }
            return Handle {
                fd: Some(fd),
                kind: Kind::Socket,
                flags,
                desc: b"unknown".to_vec(),
                peer: None,
                pipe_id: 0,
            };
        }
        push(
            &mut flags,
            match fl & libc::O_ACCMODE {
                libc::O_WRONLY => b"write",
                libc::O_RDWR => b"read,write",
                _ => b"read",
            },
        );
        if fl & libc::O_APPEND != 0 {
            push(&mut flags, b",append");
        }
        if fl & libc::O_NONBLOCK != 0 {
            push(&mut flags, b",nonblock");
        }
        Handle { fd: Some(fd), kind: Kind::File, flags, desc: b"unknown".to_vec(), peer: None, pipe_id: 0 }
    }
}

/// Names that can never be replaced or deleted (docs/protocol.md §6.1).
pub const CONSTANTS: [&str; 4] = ["control.cmd", "control.event", "control.socket", "null"];

/// Is `name` one of the `control.*` names?
pub fn is_control(name: &[u8]) -> bool {
    matches!(name, b"control.cmd" | b"control.event" | b"control.socket")
}

/// The handle table.
pub struct Handles {
    map: BTreeMap<Name, Handle>,
    next_pipe_id: u64,
    /// Most handles allowed (`--fd-pool N`), counting constants.
    pub limit: usize,
    /// Bytes per handle object (`--fd-pool NxM`): descriptions longer than
    /// about M+31−len(NAME) are cut and end in `...` (docs/protocol.md §9.3).
    pub obj_size: Option<usize>,
}

impl Handles {
    /// A table holding the four constants; `null` is given its descriptor.
    pub fn new(null: OwnedFd, limit: usize) -> Handles {
        let mut map = BTreeMap::new();
        let mk = |s: &str| Name::from(s).unwrap_or_default();
        map.insert(mk("null"), Handle::new(Some(null), Kind::Special, b"read,write", b"/dev/null"));
        map.insert(mk("control.cmd"), Handle::new(None, Kind::Special, b"write", b"daemonproxy command pipe"));
        map.insert(mk("control.event"), Handle::new(None, Kind::Special, b"read", b"daemonproxy event stream"));
        map.insert(
            mk("control.socket"),
            Handle::new(None, Kind::Special, b"read,write", b"daemonproxy control socket"),
        );
        Handles { map, next_pipe_id: 1, limit, obj_size: None }
    }

    /// Look up a handle.
    pub fn get(&self, name: &[u8]) -> Option<&Handle> {
        let n = crate::command::name_from(name)?;
        self.map.get(&n)
    }

    /// The descriptor behind a name, if it has one.
    pub fn fd_of(&self, name: &[u8]) -> Option<RawFd> {
        self.get(name).and_then(Handle::raw)
    }

    /// Is `name` a constant?
    pub fn is_constant(name: &str) -> bool {
        CONSTANTS.contains(&name)
    }

    /// Whether `n` more handles fit within the limit (replacements count as
    /// new, as in C: with a full pool even a replacement fails).
    pub fn room_for(&self, n: usize) -> bool {
        self.map.len() + n <= self.limit
    }

    /// Number of handles.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty (it never is: constants).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A fresh pipe identity.
    pub fn new_pipe_id(&mut self) -> u64 {
        self.next_pipe_id += 1;
        self.next_pipe_id
    }

    /// Add or replace a handle. The old one (if any) is unlinked from its pipe
    /// peer and returned for the caller to drop (closing its descriptor).
    pub fn insert(&mut self, name: Name, mut h: Handle) -> Option<Handle> {
        if let Some(m) = self.obj_size {
            let max = (m + 31).saturating_sub(name.len()).max(3);
            if h.desc.len() > max {
                h.desc.truncate(max - 3);
                h.desc.extend_from_slice(b"...");
            }
        }
        let old = self.map.insert(name, h);
        if let Some(o) = &old {
            self.orphan_peer(&name, o);
        }
        old
    }

    /// Remove a handle, unlinking its pipe peer.
    pub fn remove(&mut self, name: &Name) -> Option<Handle> {
        let old = self.map.remove(name)?;
        self.orphan_peer(name, &old);
        Some(old)
    }

    /// The other end of `old` (named `name`) now shows peer `?` (docs/protocol.md §6.3).
    fn orphan_peer(&mut self, name: &Name, old: &Handle) {
        if old.kind != Kind::Pipe {
            return;
        }
        if let Some(p) = old.peer
            && let Some(ph) = self.map.get_mut(&p)
            && ph.pipe_id == old.pipe_id
            && ph.peer == Some(*name)
        {
            ph.peer = None;
        }
    }

    /// The first handle whose name sorts after `after` (or the first of all).
    pub fn next_after(&self, after: Option<&Name>) -> Option<(&Name, &Handle)> {
        match after {
            None => self.map.iter().next(),
            Some(a) => self.map.range((Bound::Excluded(*a), Bound::Unbounded)).next(),
        }
    }

    /// Iterate all handles in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&Name, &Handle)> {
        self.map.iter()
    }
}

/// Write `fd.state\tNAME\tTYPE\tFLAGS\tDESC`.
pub fn write_state(out: &mut Line, name: &str, h: &Handle) {
    out.s("fd.state\t").s(name).tab().s(h.kind.word()).tab().push(&h.flags).tab();
    if h.kind == Kind::Pipe {
        match &h.peer {
            Some(p) => out.s(p),
            None => out.s("?"),
        };
    } else {
        out.push(&h.desc);
    }
}

/// Write `fd.state\tNAME\tdeleted`.
pub fn write_deleted(out: &mut Line, name: &str) {
    out.s("fd.state\t").s(name).s("\tdeleted");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devnull() -> OwnedFd {
        let f = std::fs::File::open("/dev/null").unwrap();
        OwnedFd::from(f)
    }

    #[test]
    fn constants_and_peers() {
        let mut t = Handles::new(devnull(), 100);
        let names: Vec<_> = t.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, ["control.cmd", "control.event", "control.socket", "null"]);
        let id = t.new_pipe_id();
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut hr = Handle::new(Some(r), Kind::Pipe, b"from", b"");
        hr.peer = Some(Name::from("b").unwrap());
        hr.pipe_id = id;
        let mut hw = Handle::new(Some(w), Kind::Pipe, b"to", b"");
        hw.peer = Some(Name::from("a").unwrap());
        hw.pipe_id = id;
        t.insert(Name::from("a").unwrap(), hr);
        t.insert(Name::from("b").unwrap(), hw);
        let mut l = Line::new();
        write_state(&mut l, "b", t.get(b"b").unwrap());
        assert_eq!(l.as_bytes(), b"fd.state\tb\tpipe\tto\ta");
        t.remove(&Name::from("a").unwrap());
        l.clear();
        write_state(&mut l, "b", t.get(b"b").unwrap());
        assert_eq!(l.as_bytes(), b"fd.state\tb\tpipe\tto\t?");
        let after = Name::from("b").unwrap();
        assert_eq!(t.next_after(Some(&after)).map(|(n, _)| n.as_str()), Some("control.cmd"));
        let fd = nix::unistd::dup(std::io::stdin()).unwrap();
        let h = Handle::inherited(fd);
        assert!(matches!(h.kind, Kind::File | Kind::Socket));
    }
}
