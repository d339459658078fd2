//! The command parser and every command's argument parsing
//! (`daemonproxy::request`), with arbitrary lines.
//!
//! Checks, besides not panicking: field 0 and the unknown/ignored decision
//! of docs/protocol.md §2.2; every error, including the ones the dispatcher reports later,
//! is a catalogue message or a quoted flag and makes a well-formed docs/protocol.md §2.7
//! error line the client reads back; accepted arguments obey their rules
//! (names, ranges, lengths).

#![no_main]

mod common;

use daemonproxy::command::{self, Args};
use daemonproxy::reply::Fail;
use daemonproxy::request::{self, FilterStep, Parsed, Request, When};
use libfuzzer_sys::fuzz_target;

fn name_ok(n: &command::Name) {
    assert!(command::valid_name(n.as_bytes()), "accepted name {n:?}");
}

fn deferred<T>(r: &Result<T, Fail<'_>>, line: &[u8]) {
    if let Err(f) = r {
        common::check_parse_failure(f, line);
    }
}

fn check_request(req: &Request<'_>, line: &[u8]) {
    match req {
        Request::Echo(text) => assert!(line.ends_with(text), "echo text is not the line's remainder"),
        Request::Tags { name, value } | Request::Args { name, value } => {
            name_ok(name);
            assert!(line.ends_with(value));
        }
        Request::Fds { name, list } => {
            name_ok(name);
            if !list.is_empty() {
                for e in list.split(|&b| b == b'\t') {
                    assert!(e.is_empty() || command::valid_name(e), "accepted fd entry {e:?}");
                }
            }
        }
        Request::AutoUp { name, interval, triggers } => {
            name_ok(name);
            if let Some(iv) = interval {
                assert!(iv.ns >= daemonproxy::clock::SEC / 100 && iv.ns < 0x8000_0000 * daemonproxy::clock::SEC);
            }
            if let Some(t) = triggers {
                assert!(t.always || t.signals != 0, "triggers that can never fire are kept");
                assert!(line.ends_with(&t.raw), "the raw triggers are not the line's remainder");
            }
        }
        Request::Start { name, when } => {
            name_ok(name);
            deferred(when, line);
            if let Ok(When::At(s)) = when {
                assert!(s.ns >= 0, "negative start time");
            }
        }
        Request::Signal { name, sig, group } => {
            name_ok(name);
            deferred(sig, line);
            deferred(group, line);
            if let Ok(s) = sig {
                assert!((0..=65535).contains(s));
            }
        }
        Request::Delete { name }
        | Request::FdDelete { name }
        | Request::LogDest { name }
        | Request::StatOne { name } => name_ok(name),
        Request::StatAll { filters } | Request::Query { filters } => {
            assert!(line.ends_with(filters), "filters are not the line's remainder");
        }
        Request::Attach { name, pid } => {
            name_ok(name);
            assert!(*pid >= 1);
        }
        Request::FdPipe { read, write, .. } => {
            name_ok(read);
            name_ok(write);
            assert_ne!(read, write);
        }
        Request::FdOpen { name, spec, .. } => {
            name_ok(name);
            deferred(spec, line);
        }
        Request::FdSocket { name, spec } => {
            name_ok(name);
            deferred(spec, line);
        }
        Request::FdTake { name } => {
            deferred(name, line);
            if let Ok(n) = name {
                name_ok(n);
            }
        }
        Request::LogFilter(FilterStep::Set(v)) => assert!(*v <= 6),
        Request::ConnEventTimeout { reset, close } => assert!(0 <= *reset && reset <= close && *close <= 0x7FFF_FFFF),
        Request::TerminateExecArgs(v) => assert!(v.len() <= request::MAX_EXEC_ARGS),
        Request::TerminateGuard { code, .. } => assert_ne!(*code, 0),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    // What the framing hands over: one line without its LF, at most 1023
    // bytes, one CR before the LF dropped ([EXT E1]).
    let line = data.split(|&b| b == b'\n').next().unwrap_or(b"");
    let line = &line[..line.len().min(1023)];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (field0, _) = Args::split(line);
    match request::parse(line) {
        Parsed::Ignore => {
            assert!(command::Cmd::lookup(field0).is_none());
            assert_eq!(command::classify_unknown(line), command::NotCommand::Ignore);
        }
        Parsed::Unknown(name) => {
            assert_eq!(name, field0);
            assert!(command::Cmd::lookup(field0).is_none());
            assert!(line.first() != Some(&b'#'));
        }
        Parsed::Command(r) => {
            assert!(command::Cmd::lookup(field0).is_some());
            match r {
                Ok(req) => check_request(&req, line),
                Err(f) => common::check_parse_failure(&f, line),
            }
        }
    }
});
