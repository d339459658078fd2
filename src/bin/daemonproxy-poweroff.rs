//! `daemonproxy-poweroff`: the small power-off helper of docs/protocol.md E8.
//!
//! Meant as daemonproxy's exit program on an image that boots straight into
//! daemonproxy: once the controller has stopped the services it runs
//! `terminate.exec_args daemonproxy-poweroff poweroff` and `terminate 0`, and
//! daemonproxy execs this program in place (still PID 1). It asks whatever
//! is left to stop (SIGTERM, then SIGKILL after a grace period, reaping all
//! the while), syncs the file systems and calls `reboot(2)`.
//!
//! Inside a PID namespace `reboot(2)` ends the namespace instead: its init
//! is killed with SIGINT for halt/power-off and SIGHUP for restart
//! (reboot(2), "Behavior inside PID namespaces").
//!
//! It refuses to act unless it is process 1, or daemonproxy's exit program
//! (`DAEMONPROXY_EXITCODE` set) whose parent is process 1 (daemonproxy
//! under a container's init), or `--force` is given: run by hand on a
//! host, a typo must not power the machine off.

use std::time::{Duration, Instant};

const USAGE: &str = "usage: daemonproxy-poweroff [--force] [-t SECONDS] [halt|poweroff|reboot]";

use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Reap what has exited; true once no child is left at all (ECHILD).
fn reap_all() -> bool {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return false,
            Ok(_) => continue,
            Err(_) => return true,
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut grace = Duration::from_secs(2);
    let mut mode = "poweroff".to_string();
    let mut force = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "-t" => match args.next().and_then(|v| v.parse::<f64>().ok()) {
                Some(s) if (0.0..3600.0).contains(&s) => grace = Duration::from_secs_f64(s),
                _ => {
                    eprintln!("{USAGE}");
                    std::process::exit(2);
                }
            },
            "halt" | "poweroff" | "reboot" => mode = a,
            "-f" | "--force" => force = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            "-V" | "--version" => {
                println!("daemonproxy-poweroff version {}", env!("CARGO_PKG_VERSION"));
                return;
            }
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let cmd = match mode.as_str() {
        "halt" => RebootMode::RB_HALT_SYSTEM,
        "reboot" => RebootMode::RB_AUTOBOOT,
        _ => RebootMode::RB_POWER_OFF,
    };
    let pid1 = nix::unistd::getpid().as_raw() == 1;
    let exit_program = std::env::var_os("DAEMONPROXY_EXITCODE").is_some() && nix::unistd::getppid().as_raw() == 1;
    if !(pid1 || exit_program || force) {
        eprintln!(
            "daemonproxy-poweroff: refusing to {mode} this machine: not process 1, nor daemonproxy's exit \
             program under process 1 (give --force to {mode} it anyway)"
        );
        std::process::exit(2);
    }
    if pid1 {
        // Everything else gets SIGTERM, then SIGKILL after the grace period.
        // kill(-1) from PID 1 signals every other process.
        let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
        let end = Instant::now() + grace;
        while Instant::now() < end && !reap_all() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        let end = Instant::now() + Duration::from_secs(1);
        while Instant::now() < end && !reap_all() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    nix::unistd::sync();
    // reboot(2) returns only if it failed.
    let Err(e) = reboot(cmd);
    eprintln!("daemonproxy-poweroff: reboot({mode}): {}", e.desc());
    if pid1 {
        // PID 1 must not exit (the kernel would panic): wait forever.
        loop {
            nix::unistd::pause();
        }
    }
    std::process::exit(1);
}
