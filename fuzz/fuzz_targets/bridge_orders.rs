//! The bridge's handling of hostile orders (docs/fleet.md §4, §6): a
//! deputy fed arbitrary command definitions (ids, exec strings with
//! `NAME=VALUE` and `$VAR`, groups, signals, stop times), arbitrary orders
//! sequences, daemonproxy events about its services and raw event lines,
//! with time passing. Whatever it decides, every line it sends daemonproxy
//! must be one daemonproxy accepts as syntax: no LF, at most 1023 bytes, a
//! known command whose arguments all parse. Its tags read back as the
//! definition they were written from. Its notices are short, under short
//! ids, and its report fits a message.

#![no_main]

use daemonproxy::bridge::deputy::{Action, Config, Deputy, LocalMode, MAX_NOTICE, MAX_REPORTED, Order};
use daemonproxy::bridge::tags::{self, Def};
use daemonproxy::client::Event;
use daemonproxy::request::{self, Parsed, Request};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

const WALL: i64 = 1_800_000_000_000_000;

fn deferred_ok<T>(r: &Result<T, daemonproxy::reply::Fail<'_>>, line: &str) {
    assert!(r.is_ok(), "the bridge sent a line daemonproxy refuses: {line:?}");
}

fn check_line(line: &str) {
    assert!(!line.contains('\n'), "a sent line holds an LF: {line:?}");
    assert!(
        line.len() <= 1023,
        "a sent line is too long: {} bytes: {:?}...",
        line.len(),
        &line[..line.floor_char_boundary(80)]
    );
    match request::parse(line.as_bytes()) {
        Parsed::Command(Ok(req)) => match &req {
            Request::Start { when, .. } => deferred_ok(when, line),
            Request::Signal { sig, group, .. } => {
                deferred_ok(sig, line);
                deferred_ok(group, line);
            }
            Request::FdOpen { spec, .. } => deferred_ok(spec, line),
            Request::FdSocket { spec, .. } => deferred_ok(spec, line),
            Request::FdTake { name } => deferred_ok(name, line),
            Request::Tags { value, .. } => {
                // What the bridge writes, it can read back.
                if let Some((def, _)) = tags::parse(value) {
                    assert!(!def.id.is_empty());
                }
            }
            _ => {}
        },
        Parsed::Command(Err(f)) => panic!("the bridge sent a malformed line {line:?}: {f:?}"),
        _ => panic!("the bridge sent a line that is no command: {line:?}"),
    }
}

fn check(actions: Vec<Action>) {
    for a in actions {
        match a {
            Action::Send(l) => check_line(&l),
            Action::TakeFd { handle, .. } => check_line(&format!("fd.take\t{handle}")),
            // Notices are bounded whatever the sender wrote (issue 14).
            Action::Notice(id, text) => {
                assert!(text.len() <= MAX_NOTICE + 1, "a notice of {} bytes", text.len());
                assert!(id.len() <= 255, "a notice under an id of {} bytes", id.len());
            }
            _ => {}
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fuzz_target!(|data: &[u8]| {
    let Some((&cfg_byte, data)) = data.split_first() else { return };
    let cfg = Config {
        id: "d1".into(),
        read_only: cfg_byte & 1 != 0,
        local: [LocalMode::Hide, LocalMode::Observe, LocalMode::Control][usize::from(cfg_byte >> 1 & 3) % 3],
        allow_sheriff: if cfg_byte & 8 != 0 { vec!["s:*".into()] } else { vec![] },
        allow_exec: if cfg_byte & 16 != 0 { vec!["/bin/*".into(), "sleep".into()] } else { vec![] },
        max_order_age: Some(Duration::from_secs(60)),
        fd_passing: cfg_byte & 32 != 0,
        max_output_rate: 1 << 16,
    };
    let mut d = Deputy::new(cfg);
    d.begin_sync();
    let t0 = Instant::now();
    let mut ms = 0u64;
    d.synced(t0);
    check(d.take_actions());
    let mut pending: Vec<Order> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    let mut utime = WALL;
    // At most 32 records and 8 commands an orders message: each message is
    // reconciled in full, so longer inputs cost more than they find.
    for rec in data.split(|&b| b == 0xff).take(32) {
        let Some((&kind, rest)) = rec.split_first() else { continue };
        let mut f = rest.split(|&b| b == 0xfe);
        let mut field = || f.next().unwrap_or(b"");
        let now = t0 + Duration::from_millis(ms);
        match kind % 5 {
            0 => {
                let (id, exec, group, p) = (text(field()), text(field()), text(field()), field());
                let p = |i: usize| p.get(i).copied().unwrap_or(0);
                let def = Def {
                    id: id.clone(),
                    exec,
                    group,
                    auto_respawn: p(0) & 1 != 0,
                    stop_signal: i32::from(p(1) as i8),
                    stop_time_allowed: f32::from(p(2)) / 16.0 - 1.0,
                };
                // The tags the bridge keeps read back as the definition.
                let line = tags::format(&def, i32::from(p(3)));
                if !def.id.is_empty() {
                    let (back, runid) = tags::parse(line.as_bytes()).expect("tags read back");
                    assert_eq!((back.id.as_str(), runid), (def.id.as_str(), i32::from(p(3))));
                    assert_eq!((back.exec.as_str(), back.group.as_str()), (def.exec.as_str(), def.group.as_str()));
                }
                if pending.len() < 8 {
                    pending.push(Order { def, desired_runid: i32::from(p(4) % 4), force_quit: p(0) & 2 != 0 });
                    ids.push(id);
                }
            }
            1 => {
                let sheriff = match field() {
                    b"" => "s:1:1".to_string(),
                    s => text(s),
                };
                utime += 1000 + i64::from(rest.first().copied().unwrap_or(0)) * 1_000_000;
                d.on_orders(
                    "d1",
                    &sheriff,
                    utime,
                    &pending,
                    kind & 8 != 0,
                    kind & 16 != 0,
                    WALL + ms as i64 * 1000,
                    now,
                );
                if kind & 32 != 0 {
                    pending.clear();
                }
            }
            2 => {
                // An event about a known command's service.
                let p = field();
                let p = |i: usize| p.get(i).copied().unwrap_or(0);
                let Some(id) = ids.get(usize::from(p(0)) % ids.len().max(1)) else { continue };
                let Ok(svc) = tags::service_name(id) else { continue };
                let pid = 1000 + u32::from(p(2));
                let line = match p(1) % 5 {
                    0 => format!("service.state\t{svc}\tstart\t{}\t-\t-\t-\t-\t-", ms / 1000),
                    1 => format!("service.state\t{svc}\tup\t{}\t{pid}\t-\t-\t0\t-", ms / 1000),
                    2 => format!("service.state\t{svc}\tdown\t{}\t{pid}\texit\t{}\t1\t0", ms / 1000, p(3)),
                    3 => format!("service.state\t{svc}\tdown\t{}\t{pid}\tsignal\tSIGKILL\t1\t0", ms / 1000),
                    _ => format!("service.state\t{svc}\tdeleted\t-\t-\t-\t-\t-\t-"),
                };
                d.on_event(&Event::parse(line.as_bytes()), now);
            }
            3 => d.on_event(&Event::parse(field()), now),
            _ => {
                ms += u64::from(rest.first().copied().unwrap_or(1)) * 50;
                d.tick(t0 + Duration::from_millis(ms));
            }
        }
        check(d.take_actions());
    }
    assert!(d.report().0.len() <= MAX_REPORTED);
    d.stop_all(t0 + Duration::from_millis(ms + 1));
    check(d.take_actions());
});
