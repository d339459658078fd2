//! The field parsers that commands share: integers (docs/protocol.md §2.3, against the
//! standard library), names, signal arguments (docs/protocol.md §2.6, E4), seconds (E3),
//! `auto_up` triggers with backoff words (E7), and `--fd-pool` /
//! `--service-pool` values (docs/protocol.md §9.3).

#![no_main]

use daemonproxy::clock::Seconds;
use daemonproxy::command::{self, NameKind};
use daemonproxy::line::Line;
use daemonproxy::service::Triggers;
use daemonproxy::{options, signame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, f)) = data.split_first() else { return };
    match which % 6 {
        0 => {
            // Signed 64-bit decimal filling the field, no '+'.
            let want = if f.first() == Some(&b'+') {
                None
            } else {
                std::str::from_utf8(f).ok().and_then(|s| s.parse::<i64>().ok())
            };
            assert_eq!(command::parse_int(f), want, "{f:?}");
        }
        1 => {
            let ok = (1..=31).contains(&f.len())
                && f.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-');
            assert_eq!(command::valid_name(f), ok);
            match command::parse_name(Some(f), NameKind::Service) {
                Ok(n) => assert!(ok && n.as_bytes() == f),
                Err(m) => {
                    assert!(!ok);
                    assert_eq!(m, if f.is_empty() { "Expected service name" } else { "Invalid service name" });
                }
            }
        }
        2 => match signame::parse(Some(f)) {
            Ok(n) => {
                assert!((0..=65535).contains(&n));
                let name = signame::name_of(n);
                if name != "-?" {
                    assert_eq!(signame::parse(Some(name.as_bytes())), Ok(n), "{name} does not name {n}");
                    assert_eq!(signame::lookup_name(format!("SIG{name}").as_bytes()), Some(n));
                }
            }
            Err(e) => assert!(!e.message().is_empty()),
        },
        3 => {
            if let Some(s) = Seconds::parse(f) {
                assert!(s.ns >= 0);
                assert_eq!(s.frac, f.contains(&b'.'));
                let mut l = Line::new();
                s.write_to(&mut l);
                let back = Seconds::parse(l.as_bytes()).expect("printed seconds parse");
                assert_eq!(back.ns, s.ns, "{:?} printed as {:?}", f, l.as_bytes());
            }
        }
        4 => {
            if let Some(t) = Triggers::parse(f) {
                assert_eq!(t.raw, f);
                for sig in 0..64 {
                    if t.has_signal(sig) {
                        assert!(sig >= 1);
                    }
                }
                if let Some(b) = t.backoff {
                    assert!(b.max_ns > 0 && b.stable_ns > 0);
                    // A factor just above 1 may round down to 1.000 (no growth).
                    assert!(b.factor_milli >= 1000 && b.factor_milli <= 1_000_000);
                }
            }
        }
        _ => {
            if let Some(p) = options::parse_pool(f) {
                assert!(f.first().is_some_and(u8::is_ascii_digit));
                let _ = p.m;
            }
        }
    }
});
