//! The control socket (docs/protocol.md §3.10, docs/protocol.md §3.11, docs/protocol.md §7.2): a listening
//! `AF_UNIX` stream socket whose accepted connections become controllers.

use crate::sys;
use nix::sys::socket::{self as sock, AddressFamily, SockFlag, SockType, UnixAddr};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// Backlog of the control socket.
const BACKLOG: i32 = 2;

/// Who may open the control socket's file: the owner only by default
/// (mode 0600), or as `--socket-mode` and `--socket-group` say, so that a
/// uid allowed by `--socket-allow-uid` can reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    /// Permission bits of the socket file (at most 0777).
    pub mode: u32,
    /// Group the socket file is given, if not daemonproxy's own.
    pub gid: Option<u32>,
}

impl Default for Perm {
    fn default() -> Perm {
        Perm { mode: 0o600, gid: None }
    }
}

/// A bound, listening control socket.
pub struct Listener {
    /// The socket.
    pub fd: OwnedFd,
    /// The path it is bound to, as given.
    pub path: Vec<u8>,
    /// The directory the path named when it was bound (`O_PATH`), and the
    /// last component: unlinking goes through them, so a later `chdir`
    /// cannot make a relative path name another program's socket.
    dir: OwnedFd,
    name: Vec<u8>,
    /// Device and inode of the socket file we bound: only that file is
    /// ever unlinked, not one that replaced it.
    id: (u64, u64),
}

/// Why `socket.create` failed: the protocol has one message for all, the
/// log gets the detail.
#[derive(Debug)]
pub struct CreateError(pub String);

/// The directory part of `path` (`.` if none) and its last component.
fn split_path(path: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memrchr(b'/', path) {
        Some(0) => (b"/", &path[1..]),
        Some(p) => (&path[..p], &path[p + 1..]),
        None => (b".", path),
    }
}

/// `lstat` of `name` in `dir`.
fn stat_at(dir: &OwnedFd, name: &[u8]) -> nix::Result<nix::sys::stat::FileStat> {
    nix::sys::stat::fstatat(dir, OsStr::from_bytes(name), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
}

fn is_socket_of(st: &nix::sys::stat::FileStat, uid: u32) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFSOCK && st.st_uid == uid
}

/// Bind a new control socket at `path` with the permissions `perm`. A
/// euid-owned socket already there is removed first (`removed` is set);
/// anything else there is an error ([FIX F3]: a regular file is never
/// unlinked).
pub fn create(path: &[u8], perm: Perm, removed: &mut bool) -> Result<Listener, CreateError> {
    let err = |what: &str, e: nix::errno::Errno| CreateError(format!("{what}: {}", e.desc()));
    if path.is_empty() || path.len() >= 108 || path.contains(&0) {
        return Err(CreateError("invalid socket path".into()));
    }
    let addr = UnixAddr::new(OsStr::from_bytes(path)).map_err(|e| err("socket path", e))?;
    let (dir_path, name) = split_path(path);
    if name.is_empty() {
        return Err(CreateError("invalid socket path".into()));
    }
    use nix::fcntl::OFlag;
    let dir = nix::fcntl::open(
        OsStr::from_bytes(dir_path),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| err("directory", e))?;
    if let Ok(st) = stat_at(&dir, name) {
        if !is_socket_of(&st, sys::geteuid()) {
            return Err(CreateError("path exists and is not a socket owned by this user".into()));
        }
        nix::unistd::unlinkat(&dir, OsStr::from_bytes(name), nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(|e| err("unlink", e))?;
        *removed = true;
    }
    let fd =
        sock::socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
            .map_err(|e| err("socket", e))?;
    // Created with its final mode (0600 unless --socket-mode) by binding
    // under the matching umask: no window with another mode and no chmod
    // by path that a symlink could redirect. daemonproxy is
    // single-threaded, so the process-wide umask change is not seen by
    // anything else.
    use nix::sys::stat::{Mode, umask};
    let old = umask(Mode::from_bits_truncate(!perm.mode & 0o777));
    let bound = sock::bind(fd.as_raw_fd(), &addr);
    umask(old);
    bound.map_err(|e| err("bind", e))?;
    let st = stat_at(&dir, name).map_err(|e| err("stat", e))?;
    let listener = Listener { fd, path: path.to_vec(), dir, name: name.to_vec(), id: (st.st_dev, st.st_ino) };
    if let Some(gid) = perm.gid {
        // Not through a symlink: the file we just bound, by its name in
        // the directory we hold.
        let r = nix::unistd::fchownat(
            &listener.dir,
            OsStr::from_bytes(name),
            None,
            Some(nix::unistd::Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        );
        if let Err(e) = r {
            listener.unlink();
            return Err(err("chown", e));
        }
    }
    let bl = sock::Backlog::new(BACKLOG).unwrap_or(sock::Backlog::MAXCONN);
    if let Err(e) = sock::listen(&listener.fd, bl) {
        listener.unlink();
        return Err(err("listen", e));
    }
    Ok(listener)
}

impl Listener {
    /// Unlink the socket file we bound, if it is still there under the
    /// name it was bound with (whatever the current directory is now).
    pub fn unlink(&self) -> bool {
        match stat_at(&self.dir, &self.name) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFSOCK && (st.st_dev, st.st_ino) == self.id => {
                nix::unistd::unlinkat(&self.dir, OsStr::from_bytes(&self.name), nix::unistd::UnlinkatFlags::NoRemoveDir)
                    .is_ok()
            }
            _ => false,
        }
    }

    /// Accept one connection (non-blocking, close-on-exec), or `None` when
    /// the backlog is empty or accept failed.
    pub fn accept(&self) -> Result<Option<OwnedFd>, i32> {
        match sock::accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK) {
            // accept4 returned a fresh descriptor we now own.
            Ok(fd) => Ok(sys::own_fd(fd)),
            Err(nix::errno::Errno::EAGAIN) => Ok(None),
            Err(e) => Err(e as i32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_replace_a_regular_file() {
        // A fresh private directory (mkdtemp: random name, mode 0700).
        let dir = nix::unistd::mkdtemp(&std::env::temp_dir().join("dp-listener-XXXXXX")).unwrap();
        let file = dir.join("plain");
        std::fs::write(&file, b"data").unwrap();
        let mut removed = false;
        let perm = Perm::default();
        assert!(create(file.as_os_str().as_bytes(), perm, &mut removed).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"data");
        let sockp = dir.join("s");
        let l = create(sockp.as_os_str().as_bytes(), perm, &mut removed).unwrap();
        assert!(!removed);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&sockp).unwrap().permissions().mode() & 0o777, 0o600);
        drop(l);
        let l2 = create(sockp.as_os_str().as_bytes(), perm, &mut removed).unwrap();
        assert!(removed);
        assert!(l2.unlink());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
