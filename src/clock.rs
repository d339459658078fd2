//! Monotonic time with sub-second precision (docs/protocol.md §2.4).
//!
//! Every time daemonproxy keeps is `CLOCK_MONOTONIC` in nanoseconds.
//! Printed timestamps are truncated whole seconds; printed durations are the
//! truncated difference of the precise values.

/// A point on the monotonic clock, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Mono(pub i64);

/// Nanoseconds in one second.
pub const SEC: i64 = 1_000_000_000;

impl Mono {
    /// The current monotonic time.
    pub fn now() -> Mono {
        // CLOCK_MONOTONIC always exists; the zero fallback is never taken.
        let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
        Mono(ts.tv_sec() * SEC + ts.tv_nsec())
    }

    /// Whole seconds, truncated (what events print).
    pub fn secs(self) -> i64 {
        self.0.div_euclid(SEC)
    }

    /// This time plus `ns` nanoseconds, saturating.
    pub fn plus(self, ns: i64) -> Mono {
        Mono(self.0.saturating_add(ns))
    }

    /// Whole seconds from `earlier` to `self`, truncated, never negative.
    pub fn secs_since(self, earlier: Mono) -> i64 {
        (self.0 - earlier.0).max(0) / SEC
    }
}

/// A duration or time of day written as seconds, possibly with a fraction
/// ([EXT E3]): `12`, `1.5`, `0.05`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seconds {
    /// Nanoseconds.
    pub ns: i64,
    /// Whether a fraction was written (events show one only then).
    pub frac: bool,
}

impl Seconds {
    /// Parse `DIGITS[.DIGITS]` (no sign). Fraction digits beyond nine are
    /// ignored. `None` for anything else.
    pub fn parse(s: &[u8]) -> Option<Seconds> {
        let (int, frac) = match memchr::memchr(b'.', s) {
            Some(p) => (&s[..p], Some(&s[p + 1..])),
            None => (s, None),
        };
        if int.is_empty() || !int.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut whole: i64 = 0;
        for &d in int {
            whole = whole.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
        }
        let mut ns = whole.checked_mul(SEC)?;
        if let Some(f) = frac {
            if f.is_empty() || !f.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let mut scale = SEC / 10;
            for &d in f.iter().take(9) {
                // The largest whole part leaves less than a second of room.
                ns = ns.checked_add(i64::from(d - b'0') * scale)?;
                scale /= 10;
            }
        }
        Some(Seconds { ns, frac: frac.is_some() })
    }

    /// Whole seconds only.
    pub fn whole(secs: i64) -> Seconds {
        Seconds { ns: secs.saturating_mul(SEC), frac: false }
    }

    /// Write the value as events show it: whole seconds, or with the
    /// shortest fraction that represents it when a fraction was given.
    pub fn write_to(self, out: &mut crate::line::Line) {
        out.int(self.ns / SEC);
        let rem = self.ns % SEC;
        if self.frac && rem != 0 {
            let mut digits = [0u8; 9];
            let mut r = rem;
            for d in digits.iter_mut().rev() {
                *d = b'0' + (r % 10) as u8;
                r /= 10;
            }
            let mut n = 9;
            while n > 1 && digits[n - 1] == b'0' {
                n -= 1;
            }
            out.byte(b'.');
            out.push(&digits[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::Line;

    #[test]
    fn parses_and_prints_seconds() {
        type Case<'a> = (&'a [u8], Option<(i64, &'a str)>);
        let cases: &[Case] = &[
            (b"1", Some((SEC, "1"))),
            (b"1.5", Some((SEC + SEC / 2, "1.5"))),
            (b"0.05", Some((SEC / 20, "0.05"))),
            (b"2.000", Some((2 * SEC, "2"))),
            (b"", None),
            (b"-1", None),
            (b"1.", None),
            (b".5", None),
            (b"1x", None),
            // The largest whole part plus a fraction overflowed (found while
            // writing the fuzz targets: a panic in debug builds, a wrapped
            // value in release).
            (b"9223372036.9", None),
            (b"9223372036.854775807", Some((i64::MAX, "9223372036.854775807"))),
        ];
        for (input, want) in cases {
            let got = Seconds::parse(input);
            match (got, want) {
                (Some(g), Some((ns, shown))) => {
                    assert_eq!(g.ns, *ns, "{:?}", input);
                    let mut l = Line::new();
                    g.write_to(&mut l);
                    assert_eq!(l.as_bytes(), shown.as_bytes());
                }
                (None, None) => {}
                _ => panic!("{:?}: got {:?}", String::from_utf8_lossy(input), got),
            }
        }
    }

    #[test]
    fn truncates_durations() {
        assert_eq!(Mono(5 * SEC - 1).secs_since(Mono(3 * SEC)), 1);
        assert_eq!(Mono(3 * SEC).secs_since(Mono(5 * SEC)), 0);
    }
}
