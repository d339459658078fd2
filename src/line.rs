//! A fixed-size line builder: how every event, reply and log message is
//! put together without allocating.

use arrayvec::ArrayVec;

/// Longest line daemonproxy ever builds. Inputs are at most 1023 bytes, so
/// every event (a name plus a raw value from one input line) fits; anything
/// longer is cut rather than grown.
pub const LINE_CAP: usize = 4096;

/// One output line under construction (no LF; the sender adds it).
#[derive(Clone)]
pub struct Line {
    buf: ArrayVec<u8, LINE_CAP>,
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl Line {
    /// An empty line.
    pub fn new() -> Line {
        Line { buf: ArrayVec::new() }
    }

    /// Forget the contents.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Append bytes, cutting at capacity.
    pub fn push(&mut self, b: &[u8]) -> &mut Self {
        let room = self.buf.remaining_capacity().min(b.len());
        // Cannot fail: room is within the remaining capacity.
        let _ = self.buf.try_extend_from_slice(&b[..room]);
        self
    }

    /// Append a string.
    pub fn s(&mut self, s: &str) -> &mut Self {
        self.push(s.as_bytes())
    }

    /// Append one byte.
    pub fn byte(&mut self, b: u8) -> &mut Self {
        let _ = self.buf.try_push(b);
        self
    }

    /// Append a TAB.
    pub fn tab(&mut self) -> &mut Self {
        self.byte(b'\t')
    }

    /// Append a decimal integer.
    pub fn int(&mut self, v: i64) -> &mut Self {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        let neg = v < 0;
        let mut u = v.unsigned_abs();
        loop {
            i -= 1;
            tmp[i] = b'0' + (u % 10) as u8;
            u /= 10;
            if u == 0 {
                break;
            }
        }
        if neg {
            self.byte(b'-');
        }
        self.push(&tmp[i..])
    }

    /// The bytes so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

impl std::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_cuts() {
        let mut l = Line::new();
        l.s("a").tab().int(-42).tab().int(0);
        assert_eq!(l.as_bytes(), b"a\t-42\t0");
        let big = [b'x'; LINE_CAP + 10];
        l.push(&big);
        assert_eq!(l.len(), LINE_CAP);
        l.int(i64::MIN);
        assert_eq!(l.len(), LINE_CAP);
        let mut m = Line::new();
        m.int(i64::MIN);
        assert_eq!(m.as_bytes(), b"-9223372036854775808");
    }
}
