//! The `daemonproxy` binary: flags and wiring only (docs/protocol.md §9.5
//! start-up order); everything else is in the library.

use daemonproxy::command::Name;
use daemonproxy::controller::Kind;
use daemonproxy::handle::{Handle, Handles};
use daemonproxy::line::Line;
use daemonproxy::log::{DEFAULT_FILTER, Log};
use daemonproxy::options::{self, Stop};
use daemonproxy::service::Services;
use daemonproxy::supervisor::{CodePages, DEFAULT_CONTROLLERS, End, Supervisor};
use daemonproxy::{exit, log, sys};
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// Descriptors ≥ 3 open at start-up (before daemonproxy opens its own).
fn inherited_fds() -> Vec<RawFd> {
    let mut fds: Vec<RawFd> = Vec::with_capacity(16);
    if list_fds(&mut fds).is_err() {
        fds.clear();
        fds.extend((3..1024).filter(|&fd| sys::fd_is_open(fd)));
    }
    // The directory's own descriptor is closed by now.
    fds.retain(|&fd| sys::fd_is_open(fd));
    fds.sort_unstable();
    fds
}

/// The descriptors ≥ 3 that /proc/self/fd lists (its own among them),
/// read into a buffer on the stack: `std::fs::read_dir` (glibc's opendir)
/// takes a 32 kB buffer from the heap, which start-up's later allocations
/// then split up, so that its pages stayed resident for good (issue 17).
fn list_fds(out: &mut Vec<RawFd>) -> Result<(), sys::Errno> {
    let dir = sys::open_cstr(b"/proc/self/fd\0", libc::O_RDONLY | libc::O_DIRECTORY)?;
    // u64 elements keep the buffer aligned for linux_dirent64.
    let mut buf = [0u64; 256];
    loop {
        let bytes = match sys::getdents64_aligned(dir.as_raw_fd(), &mut buf) {
            Ok([]) => return Ok(()),
            Ok(b) => b,
            Err(libc::EINTR) => continue,
            Err(e) => return Err(e),
        };
        let fds = sys::dirent_names(bytes).filter_map(|n| std::str::from_utf8(n).ok()?.parse::<RawFd>().ok());
        out.extend(fds.filter(|&fd| fd >= 3));
    }
}

fn open_null() -> std::io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    Ok(OwnedFd::from(f))
}

fn name(s: &str) -> Name {
    Name::from(s).unwrap_or_default()
}

/// Re-point a std handle to a `/dev/null` duplicate, keeping its flags
/// (docs/protocol.md §6.2: daemonproxy uses the original stream as a controller channel).
fn repoint_to_null(handles: &mut Handles, which: &str, null: RawFd) {
    let Some(old) = handles.get(which.as_bytes()) else {
        return;
    };
    let (flags, kind, desc) = (old.flags.clone(), old.kind, old.desc.clone());
    if let Some(owned) = sys::dup_cloexec(null, 3).ok().and_then(sys::own_fd) {
        let mut h = Handle::new(Some(owned), kind, &flags, &desc);
        h.flags = flags;
        handles.insert(name(which), h);
    }
}

/// Clamp `--fd-pool` and `--service-pool` to their ranges with the
/// warnings of docs/protocol.md §9.3. Returns (handle limit, service limit,
/// bytes of data per service).
fn pool_limits(opts: &options::Options, logger: &mut Log) -> (usize, usize, Option<usize>) {
    let mut fd_limit = usize::MAX;
    if let Some(p) = opts.fd_pool {
        if p.n < 7 {
            log!(logger, Warning, "At least 7 fd objects required; using minimum");
        } else if p.n > 1024 {
            log!(logger, Warning, "fd pool size exceeds max number of allowed file descriptors; limiting to 1024");
        }
        fd_limit = p.n.clamp(7, 1024) as usize;
        match p.m {
            Some(m) if m < 32 => log!(logger, Warning, "fd obj size increased to minimum of 32"),
            Some(m) if m > 4096 => log!(logger, Warning, "fd obj size limited to maximum of 4096"),
            _ => {}
        }
    }
    let (mut svc_limit, mut svc_bytes) = (usize::MAX, None);
    if let Some(p) = opts.service_pool {
        if p.n < 1 {
            log!(logger, Warning, "At least 1 service objects required; using minimum");
        } else if p.n > 65535 {
            log!(logger, Warning, "service pool size exceeds maximum; limiting to 65535");
        }
        svc_limit = p.n.clamp(1, 65535) as usize;
        let m = p.m.unwrap_or(512);
        if m < 64 {
            log!(logger, Warning, "service obj size increased to minimum of 64");
        }
        svc_bytes = Some(m.max(64).min(usize::MAX as u64) as usize);
    }
    (fd_limit, svc_limit, svc_bytes)
}

fn banner() -> [String; 6] {
    let git: String = options::GIT_HEAD.chars().take(8).collect();
    let plus = if options::GIT_DIRTY { "+" } else { "" };
    [
        format!("info\tdaemonproxy version {} (git {git}{plus})", options::VERSION),
        format!("info\t{}", options::COPYRIGHT),
        format!("info\t{}", options::LICENCE[0]),
        format!("info\t{}", options::LICENCE[1]),
        format!("info\t{}", options::LICENCE[2]),
        "info\tInteractive mode.  Use ^D or 'exit' to terminate.  See 'man daemonproxy' for command syntax.".into(),
    ]
}

fn main() {
    let Some((mut sup, restore)) = start() else { return };
    let End::Normal(code) = sup.run();
    if restore.stdin || restore.stdout {
        let _ = sys::set_nonblock(0, false);
    }
    if restore.stdout {
        let _ = sys::set_nonblock(1, false);
    }
    // [EXT E6]: the control socket path goes with a normal exit.
    if let Some(l) = &sup.listener {
        l.unlink();
    }
    let args = sup.exec_args.clone();
    exit::normal_end(&mut sup.log, &args, code, &sup.services, sup.terminator);
}

/// Which std descriptors start-up made non-blocking, to be restored at the
/// end.
struct Restore {
    stdin: bool,
    stdout: bool,
}

/// Everything before the loop: options, the configuration's tables, the
/// supervisor (`None`: start-up failed and the exit program could not be
/// run). Never inlined, so that start-up's buffers live in a frame
/// that is gone while the loop runs: the stack under `main` then holds
/// only the loop's frames, and what start-up used below them is given back
/// once it has settled (docs/design.md, "Code at rest").
#[inline(never)]
fn start() -> Option<(Supervisor, Restore)> {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let pid1 = sys::getpid() == 1;
    let inherited = inherited_fds();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let (opts, stop) = options::parse(&args, pid1);
    let mut logger = Log::new();
    logger.filter = (i32::from(DEFAULT_FILTER) - opts.verbosity).clamp(0, 6) as u8;
    let guarded = opts.exit_guard != 0;
    match stop {
        Some(Stop::Help) | Some(Stop::Version) => {
            let text = if stop == Some(Stop::Help) { options::help_text() } else { options::version_text() };
            let mut out = std::io::stdout();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush(); // [FIX F22]
            exit::exec_path(&mut logger, &opts.exit_exec, 1, "", guarded, None);
        }
        Some(Stop::Error(msg)) => exit::exec_path(&mut logger, &opts.exit_exec, 2, &msg, guarded, None),
        None => {}
    }
    let setup_fail = |logger: &mut Log, msg: &str| {
        exit::exec_path(logger, &opts.exit_exec, 3, msg, guarded, None);
    };

    // /dev/null and the constant handles.
    let null = match open_null() {
        Ok(n) => n,
        Err(e) => {
            log!(logger, Error, "open(/dev/null): {e}");
            setup_fail(&mut logger, "Unable to open /dev/null");
            return None;
        }
    };
    let null_raw = null.as_raw_fd();
    let (fd_limit, svc_limit, svc_bytes) = pool_limits(&opts, &mut logger);
    let fd_obj = opts.fd_pool.map(|p| p.m.unwrap_or(96).clamp(32, 4096) as usize);
    let mut handles = Handles::new(null, fd_limit);
    handles.obj_size = fd_obj;

    // stdin, stdout, stderr: duplicates, so deleting a handle never closes
    // daemonproxy's own streams; a closed one becomes /dev/null.
    for (fd, n) in [(0, "stdin"), (1, "stdout"), (2, "stderr")] {
        if !sys::fd_is_open(fd) {
            let _ = sys::dup2(null_raw, fd);
        }
        if let Some(d) = sys::dup_cloexec(fd, 3).ok().and_then(sys::own_fd) {
            handles.insert(name(n), Handle::inherited(d));
        }
    }
    for fd in inherited {
        if fd == null_raw {
            continue;
        }
        if !handles.room_for(1) {
            exit::exec_path(
                &mut logger,
                &opts.exit_exec,
                2,
                "Not enough FD objects to register all open FDs",
                guarded,
                None,
            );
            break;
        }
        let _ = sys::set_cloexec(fd);
        // An inherited descriptor nobody else in this process owns.
        if let Some(owned) = sys::own_fd(fd) {
            handles.insert(name(&format!("fd_{fd}")), Handle::inherited(owned));
        }
    }

    let slots = opts.controllers.unwrap_or(DEFAULT_CONTROLLERS).clamp(2, 4096);
    if opts.controllers.is_some_and(|n| n < 2) {
        log!(logger, Warning, "At least 2 controllers required; using minimum");
    }
    let mut services = Services::new(svc_limit);
    services.data_limit = svc_bytes;
    if opts.service_pool.is_some() {
        services.reserve(svc_limit);
    }
    let mut sup = match Supervisor::new(handles, services, logger, slots, null_raw) {
        Ok(s) => s,
        Err(e) => {
            let mut l = Log::new();
            log!(l, Fatal, "signal setup: {e}");
            l.flush_final();
            std::process::exit(5);
        }
    };
    sup.exec_args = opts.exit_exec.clone();
    sup.guard = opts.exit_guard;
    sup.socket_uids = opts.socket_uids.clone();
    sup.socket_perm = opts.socket_perm;
    sup.spawner.new_group = opts.setpgid;
    sup.prepare_fatal();
    daemonproxy::fatal::install();
    daemonproxy::fatal::install_panic_hook();
    if pid1 {
        // Ctrl-Alt-Del becomes SIGINT to PID 1, counted like any other.
        if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
            log!(sup.log, Debug, "reboot(RB_DISABLE_CAD): {}", e.desc());
        }
    } else if opts.subreaper {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            log!(sup.log, Error, "prctl(PR_SET_CHILD_SUBREAPER): {}", e.desc());
        }
        sup.report_orphans = true;
    }

    if let Some(path) = &opts.socket
        && !sup.socket_create(path.as_bytes())
    {
        setup_fail(&mut sup.log, "Can't create controller socket");
    }
    let mut nonblock_restore = false;
    let mut stdin_nonblock_restore = false;
    if opts.interactive {
        let _ = sys::set_nonblock(0, true);
        let _ = sys::set_nonblock(1, true);
        nonblock_restore = true;
        repoint_to_null(&mut sup.handles, "stdin", null_raw);
        repoint_to_null(&mut sup.handles, "stdout", null_raw);
        if let Some(slot) = sup.add_controller(Kind::Interactive, None, Some(0), Some(1)) {
            let mut l = Line::new();
            for b in banner() {
                l.clear();
                l.s(&b);
                sup.reply(slot, &l);
            }
        }
    }
    if let Some(cfg) = &opts.config {
        if cfg.as_bytes() == b"-" {
            if opts.interactive {
                log!(sup.log, Error, "stdin not available");
                setup_fail(&mut sup.log, "Unable to process config file");
            } else {
                // A live stream (issue 15): each line runs as it arrives,
                // read without blocking like any controller's input; the
                // flag is taken off again at exit (the descriptor may be
                // shared with whoever started us).
                let _ = sys::set_nonblock(0, true);
                stdin_nonblock_restore = true;
                repoint_to_null(&mut sup.handles, "stdin", null_raw);
                sup.add_controller(Kind::Config, None, Some(0), None);
            }
        } else {
            match std::fs::File::open(cfg) {
                Ok(f) => {
                    // Opening a FIFO waits here, at start-up, for its first
                    // writer (as fopen did in 1.1); its lines are then read
                    // without blocking, each run as it arrives.
                    let fd = OwnedFd::from(f);
                    let raw = fd.as_raw_fd();
                    let _ = sys::set_nonblock(raw, true);
                    sup.add_controller(Kind::Config, Some(fd), Some(raw), None);
                }
                Err(e) => {
                    let text = e.raw_os_error().map_or_else(
                        || e.to_string(),
                        |n| {
                            let mut eb = [0u8; 128];
                            String::from_utf8_lossy(sys::strerror(n, &mut eb)).into_owned()
                        },
                    );
                    log!(sup.log, Error, "Failed to open config file \"{}\": {text}", cfg.to_string_lossy());
                    setup_fail(&mut sup.log, "Unable to process config file");
                }
            }
        }
    }
    if opts.mlockall {
        use nix::sys::mman::{MlockAllFlags, mlockall};
        if let Err(e) = mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE) {
            log!(sup.log, Error, "mlockall: {}", e.desc());
        }
    }
    if opts.daemonize {
        if opts.interactive || pid1 {
            log!(sup.log, Warning, "Ignoring --daemonize (see manual)");
        } else {
            daemonize(&mut sup, &opts, guarded);
        }
    }

    // With no controller and no control socket (a config file that could
    // not be read, say) nothing can ever tell daemonproxy what to do: end
    // now, with a clear message, rather than idle for ever — as process 1
    // of a container too, where the runtime then reports the failure. The
    // terminate guard protects against controllers, not against this.
    if sup.listener.is_none() && sup.ctls.iter().all(Option::is_none) {
        log!(sup.log, Fatal, "no controller and no control socket: nothing could ever give a command; exiting");
        exit::exec_path(&mut sup.log, &opts.exit_exec, 3, "Nothing to do", false, None);
    }

    // Once start-up has settled, its code need not stay resident (not
    // with --mlockall, which keeps everything).
    sup.code_pages = if opts.mlockall { CodePages::Keep } else { CodePages::Pending(sup.now) };
    Some((sup, Restore { stdin: stdin_nonblock_restore, stdout: nonblock_restore }))
}

/// `-D` (docs/protocol.md §9.2): the parent prints the child's pid without a newline and
/// exits 0; the child points the std descriptors that still hold the
/// original streams at /dev/null ([FIX F4]) and starts a new session.
fn daemonize(sup: &mut Supervisor, opts: &options::Options, guarded: bool) {
    sup.log.flush_final();
    let pid = match sys::fork() {
        Ok(pid) => pid,
        Err(e) => {
            let mut eb = [0u8; 128];
            log!(sup.log, Error, "fork: {}", String::from_utf8_lossy(sys::strerror(e, &mut eb)));
            -1
        }
    };
    if pid < 0 {
        exit::exec_path(&mut sup.log, &opts.exit_exec, 3, "Unable to daemonize", guarded, None);
        return;
    }
    if pid > 0 {
        let mut out = std::io::stdout();
        let _ = write!(out, "{pid}");
        let _ = out.flush();
        // _exit skips destructors that would touch shared state.
        sys::exit_now(0);
    }
    let config_stdin = opts.config.as_deref().is_some_and(|c| c.as_bytes() == b"-");
    for (fd, n) in [(0, "stdin"), (1, "stdout"), (2, "stderr")] {
        if fd == 0 && config_stdin {
            continue; // fd 0 is the config stream
        }
        let _ = sys::dup2(sup.null_fd, fd);
        repoint_to_null(&mut sup.handles, n, sup.null_fd);
    }
    if let Err(e) = nix::unistd::setsid() {
        log!(sup.log, Error, "setsid: {}", e.desc());
        exit::exec_path(&mut sup.log, &opts.exit_exec, 3, "Unable to daemonize", guarded, None);
    }
}
