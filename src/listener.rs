//! The control socket (protocol.md §3.10, §3.11, §7.2): a listening
//! `AF_UNIX` stream socket whose accepted connections become controllers.

use crate::sys;
use nix::sys::socket::{self as sock, AddressFamily, SockFlag, SockType, UnixAddr};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// Backlog of the control socket.
const BACKLOG: i32 = 2;

/// A bound, listening control socket.
pub struct Listener {
    /// The socket.
    pub fd: OwnedFd,
    /// The path it is bound to, as given.
    pub path: Vec<u8>,
}

/// Why `socket.create` failed: the protocol has one message for all, the
/// log gets the detail.
#[derive(Debug)]
pub struct CreateError(pub String);

/// Is `path` a socket owned by our euid (the only thing we ever unlink)?
pub fn own_socket(path: &[u8]) -> bool {
    match nix::sys::stat::lstat(OsStr::from_bytes(path)) {
        Ok(st) => st.st_mode & libc::S_IFMT == libc::S_IFSOCK && st.st_uid == sys::geteuid(),
        Err(_) => false,
    }
}

/// Whether anything exists at `path`.
fn exists(path: &[u8]) -> bool {
    nix::sys::stat::lstat(OsStr::from_bytes(path)).is_ok()
}

/// Bind a new control socket at `path`. A euid-owned socket already there
/// is removed first (`removed` is set); anything else there is an error
/// ([FIX F3]: a regular file is never unlinked).
pub fn create(path: &[u8], removed: &mut bool) -> Result<Listener, CreateError> {
    let err = |what: &str, e: nix::errno::Errno| CreateError(format!("{what}: {}", e.desc()));
    if path.is_empty() || path.len() >= 108 || path.contains(&0) {
        return Err(CreateError("invalid socket path".into()));
    }
    let addr = UnixAddr::new(OsStr::from_bytes(path)).map_err(|e| err("socket path", e))?;
    if exists(path) {
        if !own_socket(path) {
            return Err(CreateError("path exists and is not a socket owned by this user".into()));
        }
        nix::unistd::unlink(OsStr::from_bytes(path)).map_err(|e| err("unlink", e))?;
        *removed = true;
    }
    let fd =
        sock::socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
            .map_err(|e| err("socket", e))?;
    // Created mode 0600 (owner read/write; issue 3) by binding under a
    // umask of 0177: no window with another mode and no chmod by path that
    // a symlink could redirect. daemonproxy is single-threaded, so the
    // process-wide umask change is not seen by anything else.
    // SAFETY: umask cannot fail.
    let old = unsafe { libc::umask(0o177) };
    let bound = sock::bind(fd.as_raw_fd(), &addr);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    bound.map_err(|e| err("bind", e))?;
    let bl = sock::Backlog::new(BACKLOG).unwrap_or(sock::Backlog::MAXCONN);
    sock::listen(&fd, bl).map_err(|e| err("listen", e))?;
    Ok(Listener { fd, path: path.to_vec() })
}

impl Listener {
    /// Unlink the path if it is still our socket.
    pub fn unlink(&self) -> bool {
        if own_socket(&self.path) {
            return nix::unistd::unlink(OsStr::from_bytes(&self.path)).is_ok();
        }
        false
    }

    /// Accept one connection (non-blocking, close-on-exec), or `None` when
    /// the backlog is empty or accept failed.
    pub fn accept(&self) -> Result<Option<OwnedFd>, i32> {
        match sock::accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK) {
            // SAFETY: accept4 returned a fresh descriptor we now own.
            Ok(fd) => Ok(Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })),
            Err(nix::errno::Errno::EAGAIN) => Ok(None),
            Err(e) => Err(e as i32),
        }
    }
}

/// The uid of the process at the other end of a unix socket.
pub fn peer_uid(fd: RawFd) -> Option<u32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid out parameters of the given size.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, (&raw mut cred).cast(), &mut len) };
    (rc == 0).then_some(cred.uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_replace_a_regular_file() {
        let dir = std::env::temp_dir().join(format!("dp-listener-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("plain");
        std::fs::write(&file, b"data").unwrap();
        let mut removed = false;
        assert!(create(file.as_os_str().as_bytes(), &mut removed).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"data");
        let sockp = dir.join("s");
        let l = create(sockp.as_os_str().as_bytes(), &mut removed).unwrap();
        assert!(!removed);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&sockp).unwrap().permissions().mode() & 0o777, 0o600);
        drop(l);
        let l2 = create(sockp.as_os_str().as_bytes(), &mut removed).unwrap();
        assert!(removed);
        assert!(l2.unlink());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
