//! `daemonproxy-poweroff`: the small power-off helper of protocol.md E8.
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

use std::time::{Duration, Instant};

const USAGE: &str = "usage: daemonproxy-poweroff [-t SECONDS] [halt|poweroff|reboot]";

fn reap_all() -> bool {
    loop {
        // SAFETY: waitpid with a null status pointer.
        let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if pid > 0 {
            continue;
        }
        // ECHILD: nothing left at all.
        return pid < 0;
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut grace = Duration::from_secs(2);
    let mut mode = "poweroff".to_string();
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
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let cmd = match mode.as_str() {
        "halt" => libc::RB_HALT_SYSTEM,
        "reboot" => libc::RB_AUTOBOOT,
        _ => libc::RB_POWER_OFF,
    };
    // SAFETY: getpid cannot fail.
    let pid1 = unsafe { libc::getpid() } == 1;
    if pid1 {
        // Everything else gets SIGTERM, then SIGKILL after the grace period.
        // SAFETY: kill(-1) from PID 1 signals every other process.
        unsafe { libc::kill(-1, libc::SIGTERM) };
        let end = Instant::now() + grace;
        while Instant::now() < end && !reap_all() {
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-1, libc::SIGKILL) };
        let end = Instant::now() + Duration::from_secs(1);
        while Instant::now() < end && !reap_all() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // SAFETY: sync and reboot take no pointers.
    unsafe { libc::sync() };
    // SAFETY: as above.
    let rc = unsafe { libc::reboot(cmd) };
    if rc != 0 {
        eprintln!("daemonproxy-poweroff: reboot({mode}): {}", std::io::Error::last_os_error());
        if pid1 {
            // PID 1 must not exit (the kernel would panic): wait forever.
            loop {
                // SAFETY: pause has no arguments.
                unsafe { libc::pause() };
            }
        }
        std::process::exit(1);
    }
}
