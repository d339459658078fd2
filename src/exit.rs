//! Leaving daemonproxy (docs/protocol.md §8.4): the normal end, and the exec path
//! that every trappable exit goes through.

use crate::log::Log;
use crate::service::{Services, State};
use crate::{log, sys};
use std::ffi::CString;

/// Log `warning: service 'NAME' running as pid PID` for each `up` service.
pub fn log_running(log: &mut Log, services: Option<&Services>) {
    let Some(t) = services else { return };
    for i in t.iter_slots() {
        if let Some(s) = t.get(i)
            && s.state == State::Up
        {
            log!(log, Warning, "service '{}' running as pid {}", s.name, s.pid);
        }
    }
}

/// Try to exec the exit program with `DAEMONPROXY_EXITCODE` and
/// `DAEMONPROXY_ERROR` set. Returns only if there is none or it failed.
pub fn exec_on_exit(log: &mut Log, args: &[u8], code: i32, message: &str, services: Option<&Services>) {
    if args.is_empty() {
        return;
    }
    let argv: Vec<CString> =
        args.split(|&b| b == b'\t').map(|a| CString::new(a.to_vec()).unwrap_or_default()).collect();
    let Some(arg0) = argv.first() else { return };
    sys::set_env("DAEMONPROXY_EXITCODE", &code.to_string());
    sys::set_env("DAEMONPROXY_ERROR", message);
    let name = String::from_utf8_lossy(arg0.as_bytes()).into_owned();
    log!(log, Warning, "daemonproxy exec_on_exit to '{name}'");
    log_running(log, services);
    log.flush_final();
    sys::reset_signals();
    let e = sys::execvp(&argv);
    let mut eb = [0u8; 128];
    let text = String::from_utf8_lossy(sys::strerror(e, &mut eb)).into_owned();
    log!(log, Error, "Unable to exec \"{name}\": {text}");
}

/// The exec path (docs/protocol.md §8.4) for help, version, option and setup errors:
/// returns only when guarded (daemonproxy then keeps running).
pub fn exec_path(log: &mut Log, args: &[u8], code: i32, message: &str, guarded: bool, services: Option<&Services>) {
    exec_on_exit(log, args, code, message, services);
    if !message.is_empty() {
        if guarded {
            log!(log, Fatal, "(attempting to continue) {message}");
        } else {
            log!(log, Fatal, "{message}");
        }
    }
    if guarded {
        log.flush_final();
        return;
    }
    log_running(log, services);
    log.flush_final();
    std::process::exit(code);
}

/// The normal end (`terminate N`, end of `-i`).
///
/// `issuer` is the controller service that sent `terminate`, if one did:
/// after 1.1's `warning: service ... running as pid ...` (log matchers
/// and the smoke test of docs/protocol.md §11 expect it for every running
/// service), an info line says that this one is the controller that asked
/// to exit and ends on its own.
pub fn normal_end(log: &mut Log, args: &[u8], code: i32, services: &Services, issuer: Option<usize>) -> ! {
    if args.is_empty() {
        log!(log, Info, "daemonproxy exiting");
        log_running(log, Some(services));
        if let Some(s) = issuer.and_then(|i| services.get(i)).filter(|s| s.state == State::Up) {
            log!(log, Info, "service '{}' is the controller that sent terminate; it ends on its own", s.name);
        }
    } else {
        exec_on_exit(log, args, code, "terminated normally", Some(services));
    }
    log.flush_final();
    std::process::exit(code)
}
