//! Line framing of controller input (`Controller::feed`/`next_input`, the
//! same buffer and rules the loop reads into): an arbitrary byte stream
//! cut into arbitrary chunks must give exactly the lines, over-long-line
//! reports and final partial line that a plain split at LF predicts
//! (docs/protocol.md §2.1, docs/protocol.md §7.4: 1024-byte buffer, lines of 1023 bytes at most),
//! whatever the chunking, and never stall.

#![no_main]

use daemonproxy::controller::{Controller, IN_BUF, Input, Kind};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
enum Got {
    Line(Vec<u8>),
    TooLong(bool),
    Partial(Vec<u8>),
}

/// What a plain split predicts.
fn expected(stream: &[u8]) -> Vec<Got> {
    let mut out = Vec::new();
    let mut parts: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    let last = parts.pop().unwrap_or(b"");
    for l in parts {
        out.push(if l.len() >= IN_BUF { Got::TooLong(l[0] == b'#') } else { Got::Line(l.to_vec()) });
    }
    if last.len() >= IN_BUF {
        out.push(Got::TooLong(last[0] == b'#'));
    } else if !last.is_empty() {
        out.push(Got::Partial(last.to_vec()));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let (seed, stream) = match data {
        [a, b, rest @ ..] => (u32::from(*a) << 8 | u32::from(*b), rest),
        _ => return,
    };
    // Chunk sizes from a small generator: mostly small, sometimes large.
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    let mut next_chunk = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        if x & 7 == 0 { (x >> 8) as usize % 4096 + 1 } else { (x >> 8) as usize % 40 + 1 }
    };
    let mut c = Controller::new(0, Kind::Socket, None, None, None);
    c.eof = false;
    let mut out = [0u8; IN_BUF];
    let mut got = Vec::new();
    let mut at = 0;
    let mut steps = 0usize;
    loop {
        steps += 1;
        assert!(steps < 4 * stream.len() + 16, "framing does not make progress");
        if at < stream.len() {
            let n = next_chunk().min(stream.len() - at);
            at += c.feed(&stream[at..at + n]);
        } else {
            c.eof = true;
        }
        loop {
            match c.next_input(&mut out) {
                Input::Line(n) => got.push(Got::Line(out[..n].to_vec())),
                Input::TooLong(h) => got.push(Got::TooLong(h)),
                Input::Partial(n) => {
                    assert!(c.eof, "a partial line before the end of input");
                    got.push(Got::Partial(out[..n].to_vec()));
                }
                Input::Eof => {
                    assert_eq!(at, stream.len());
                    assert_eq!(got, expected(stream));
                    // The end stays the end.
                    assert_eq!(c.next_input(&mut out), Input::Eof);
                    return;
                }
                Input::Wait => break,
            }
        }
        assert!(!c.in_full(), "input buffer full and nothing to take from it");
    }
});
