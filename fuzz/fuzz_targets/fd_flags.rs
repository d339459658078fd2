//! The handle flag parsers of `fd.pipe`, `fd.open` and `fd.socket`
//! (docs/protocol.md §3.12–3.14, docs/protocol.md §4.2), with their addresses: a refused list
//! quotes one of its own items; an accepted one describes itself with the
//! FLAGS text `fd.state` shows, and that text, read back as flags, gives
//! the same description (a fixed point), uncut.

#![no_main]

use daemonproxy::fdops;
use daemonproxy::reply::Fail;
use libfuzzer_sys::fuzz_target;

const WORDS: &[&[u8]] = &[
    b"read",
    b"write",
    b"append",
    b"create",
    b"trunc",
    b"nonblock",
    b"mkdir",
    b"unix",
    b"inet",
    b"inet6",
    b"stream",
    b"dgram",
    b"seqpacket",
    b"bind",
    b"from",
    b"to",
];

/// Every item of a FLAGS text is a known word (or `listen=N`), and the text
/// was not cut at the handle's capacity.
fn words_known(text: &[u8]) {
    assert!(text.len() < 64, "FLAGS text reached its capacity: {text:?}");
    for w in text.split(|&b| b == b',') {
        let listen = w.strip_prefix(b"listen=").is_some_and(|n| daemonproxy::command::parse_int(n).is_some());
        assert!(WORDS.contains(&w) || listen, "unknown word {w:?} in FLAGS text {text:?}");
    }
}

fn refused(f: &Fail<'_>, flags: &[u8]) {
    if let Fail::UnknownFlag(item) = f {
        assert!(!item.is_empty() && !item.contains(&b','));
        assert!(flags.split(|&b| b == b',').any(|i| i == *item), "quoted flag {item:?} is not an item of {flags:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    // FLAGS, then an optional ADDRSPEC after a TAB.
    let (flags, addr) = match rest.iter().position(|&b| b == b'\t') {
        Some(p) => (&rest[..p], Some(&rest[p + 1..])),
        None => (rest, None),
    };
    match which % 3 {
        0 => match fdops::parse_pipe_flags(Some(flags)) {
            Ok(spec) => {
                let (r, w) = (spec.flags_text(true), spec.flags_text(false));
                words_known(&r);
                words_known(&w);
                // Without the end's own word, the text is flags again.
                let again = r.strip_suffix(b"from").or_else(|| r.strip_suffix(b"to")).expect("end word");
                let back = fdops::parse_pipe_flags(Some(again)).expect("FLAGS text parses");
                assert_eq!(back.flags_text(true), r);
                assert_eq!(back.flags_text(false), w);
            }
            Err(f) => refused(&f, flags),
        },
        1 => match fdops::parse_open_flags(flags) {
            Ok(spec) => {
                let t = spec.flags_text();
                words_known(&t);
                let back = fdops::parse_open_flags(&t).expect("FLAGS text parses");
                assert_eq!(back.flags_text(), t);
                assert_eq!(back.oflag(), spec.oflag());
            }
            Err(f) => refused(&f, flags),
        },
        _ => match fdops::parse_socket(flags, addr) {
            Ok(spec) => {
                let t = spec.flags_text();
                words_known(&t);
                let back = fdops::parse_socket(&t, addr).expect("FLAGS text parses");
                assert_eq!(back.flags_text(), t);
            }
            Err(f) => {
                refused(&f, flags);
                if let Fail::Msg(m) = f {
                    assert!(
                        ["invalid listen queue length", "invalid address", "expected address argument"].contains(&m),
                        "{m}"
                    );
                }
            }
        },
    }
});
