//! The LCM payload encoding (docs/fleet.md §2.4): big-endian scalars, length-prefixed
//! NUL-terminated strings, arrays without prefix, nested structs inlined
//! without their fingerprint, and the limits of docs/fleet.md §6.4 that keep hostile
//! input from costing more than it carries.
//!
//! [`Reader`] and [`Writer`] are the primitives; [`Message`] is what every
//! type in [`super::types`] implements, giving `encode` (fingerprint first)
//! and `decode` (which reports how many bytes the message took and ignores
//! the rest, so the auth trailer of §6.3 can follow).

use std::fmt;

use super::schema::StructDef;

/// The longest string accepted or produced, in bytes without the NUL (§6.4).
pub const MAX_STRING: usize = 64 * 1024;
/// The largest array count accepted or produced (§6.4: `ncmds` ≤ 10000).
pub const MAX_COUNT: usize = 10_000;
/// The largest encoded message accepted or produced (§6.4).
pub const MAX_MESSAGE: usize = 1024 * 1024;

/// Why bytes did not decode as the expected type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The message ended inside the named member.
    Truncated {
        /// The member being read.
        field: &'static str,
    },
    /// The leading eight bytes are not this type's fingerprint.
    Fingerprint {
        /// The type's fingerprint.
        expected: u64,
        /// What the message carried.
        found: u64,
    },
    /// An array count is negative or larger than [`MAX_COUNT`].
    Count {
        /// The array member.
        field: &'static str,
        /// The count the message gave.
        value: i64,
    },
    /// A string's length prefix is below 1 or above [`MAX_STRING`] + 1.
    StringLength {
        /// The string member.
        field: &'static str,
        /// The length the message gave (including the NUL).
        value: i64,
    },
    /// A string lacks its final NUL, holds another NUL, or is not UTF-8.
    StringBytes {
        /// The string member.
        field: &'static str,
    },
    /// A table names a length member that does not exist (a bug in a table).
    Schema {
        /// The array member.
        field: &'static str,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { field } => write!(f, "message ends inside {field}"),
            DecodeError::Fingerprint { expected, found } => {
                write!(f, "fingerprint {found:#018x} is not the expected {expected:#018x}")
            }
            DecodeError::Count { field, value } => write!(f, "count {value} for {field} is out of range"),
            DecodeError::StringLength { field, value } => {
                write!(f, "string length {value} for {field} is out of range")
            }
            DecodeError::StringBytes { field } => write!(f, "{field} is not a NUL-terminated UTF-8 string"),
            DecodeError::Schema { field } => write!(f, "no length member for {field}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a value could not be encoded within the wire's and §6.4's limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// A string is longer than [`MAX_STRING`] or contains a NUL byte.
    String {
        /// The string member.
        field: &'static str,
    },
    /// An array has more than [`MAX_COUNT`] elements (or more than its
    /// count member's type can hold).
    Count {
        /// The array member.
        field: &'static str,
    },
    /// Parallel arrays sharing one count member differ in length.
    CountMismatch {
        /// The array member.
        field: &'static str,
    },
    /// The encoded message would exceed [`MAX_MESSAGE`].
    TooLarge {
        /// Its size in bytes.
        size: usize,
    },
    /// A [`super::value::Value`] does not have the shape its table gives.
    Schema {
        /// The member.
        field: &'static str,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::String { field } => {
                write!(f, "{field} is longer than {MAX_STRING} bytes or contains a NUL byte")
            }
            EncodeError::Count { field } => write!(f, "{field} has more than {MAX_COUNT} elements"),
            EncodeError::CountMismatch { field } => write!(f, "{field} differs in length from its parallel array"),
            EncodeError::TooLarge { size } => write!(f, "message of {size} bytes exceeds {MAX_MESSAGE}"),
            EncodeError::Schema { field } => write!(f, "value does not fit the type table at {field}"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Reads big-endian LCM values from a byte slice, never past its end.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.bytes(field, N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(bytes);
        Ok(a)
    }

    fn bytes(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated { field });
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Reads the leading fingerprint and checks it against `expected`.
    pub fn fingerprint(&mut self, expected: u64) -> Result<(), DecodeError> {
        let found = u64::from_be_bytes(self.take("fingerprint")?);
        if found == expected { Ok(()) } else { Err(DecodeError::Fingerprint { expected, found }) }
    }

    /// Reads an `int8_t`.
    pub fn i8(&mut self, field: &'static str) -> Result<i8, DecodeError> {
        Ok(i8::from_be_bytes(self.take(field)?))
    }

    /// Reads a `byte`.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.take(field)?))
    }

    /// Reads an `int16_t`.
    pub fn i16(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.take(field)?))
    }

    /// Reads an `int32_t`.
    pub fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.take(field)?))
    }

    /// Reads an `int64_t`.
    pub fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.take(field)?))
    }

    /// Reads a `float`.
    pub fn f32(&mut self, field: &'static str) -> Result<f32, DecodeError> {
        Ok(f32::from_be_bytes(self.take(field)?))
    }

    /// Reads a `double`.
    pub fn f64(&mut self, field: &'static str) -> Result<f64, DecodeError> {
        Ok(f64::from_be_bytes(self.take(field)?))
    }

    /// Reads a `boolean`: any non-zero byte is true.
    pub fn boolean(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        Ok(self.u8(field)? != 0)
    }

    /// Reads a `string`: an `int32_t` length including the NUL, the UTF-8
    /// bytes, the NUL. Refuses lengths outside 1..=[`MAX_STRING`]+1, a
    /// missing or embedded NUL, and invalid UTF-8.
    pub fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = self.i32(field)?;
        if len < 1 || len as usize > MAX_STRING + 1 {
            return Err(DecodeError::StringLength { field, value: len.into() });
        }
        let bytes = self.bytes(field, len as usize)?;
        let (nul, text) = bytes.split_last().ok_or(DecodeError::StringBytes { field })?;
        if *nul != 0 || text.contains(&0) {
            return Err(DecodeError::StringBytes { field });
        }
        std::str::from_utf8(text).map(str::to_owned).map_err(|_| DecodeError::StringBytes { field })
    }

    /// Checks an array count read earlier: not negative, at most [`MAX_COUNT`].
    pub fn check_count(&self, field: &'static str, value: i64) -> Result<usize, DecodeError> {
        usize::try_from(value).ok().filter(|n| *n <= MAX_COUNT).ok_or(DecodeError::Count { field, value })
    }

    /// Reads `n` elements with `elem`, allocating no more than the input can hold.
    pub fn array<T>(
        &mut self,
        n: usize,
        mut elem: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let mut v = Vec::with_capacity(n.min(self.remaining()));
        for _ in 0..n {
            v.push(elem(self)?);
        }
        Ok(v)
    }
}

/// Appends big-endian LCM values to a buffer.
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    /// Writes one whole message: `fingerprint`, then whatever `body` writes.
    /// On any error, or if the message would exceed [`MAX_MESSAGE`], `out`
    /// is left as it was.
    pub fn message(
        out: &'a mut Vec<u8>,
        fingerprint: u64,
        body: impl FnOnce(&mut Writer<'_>) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        let start = out.len();
        let mut w = Writer { out };
        w.out.extend_from_slice(&fingerprint.to_be_bytes());
        let result = body(&mut w).and_then(|()| {
            let size = w.out.len() - start;
            if size > MAX_MESSAGE { Err(EncodeError::TooLarge { size }) } else { Ok(()) }
        });
        if result.is_err() {
            w.out.truncate(start);
        }
        result
    }

    /// Writes an `int8_t`.
    pub fn i8(&mut self, v: i8) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes a `byte`.
    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }

    /// Writes an `int16_t`.
    pub fn i16(&mut self, v: i16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes an `int32_t`.
    pub fn i32(&mut self, v: i32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes an `int64_t`.
    pub fn i64(&mut self, v: i64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes a `float`.
    pub fn f32(&mut self, v: f32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes a `double`.
    pub fn f64(&mut self, v: f64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes a `boolean` as 0 or 1.
    pub fn boolean(&mut self, v: bool) {
        self.out.push(u8::from(v));
    }

    /// Writes a `string`; refuses one over [`MAX_STRING`] bytes or with a NUL.
    pub fn string(&mut self, field: &'static str, s: &str) -> Result<(), EncodeError> {
        if s.len() > MAX_STRING || s.as_bytes().contains(&0) {
            return Err(EncodeError::String { field });
        }
        self.i32(s.len() as i32 + 1);
        self.out.extend_from_slice(s.as_bytes());
        self.out.push(0);
        Ok(())
    }

    /// Checks an array length against [`MAX_COUNT`] before its count is written.
    pub fn check_count(&self, field: &'static str, n: usize) -> Result<(), EncodeError> {
        if n > MAX_COUNT { Err(EncodeError::Count { field }) } else { Ok(()) }
    }
}

/// An LCM type: its table, fingerprint and codec. Every struct in
/// [`super::types`] implements it, and also offers `encode`/`decode` as
/// inherent methods so callers need not import this trait.
pub trait Message: Sized {
    /// The type's table.
    const DEF: &'static StructDef;
    /// The type's fingerprint, computed from [`Self::DEF`].
    const FINGERPRINT: u64;

    /// Writes the members, without the fingerprint (the nested form).
    fn encode_members(&self, w: &mut Writer<'_>) -> Result<(), EncodeError>;

    /// Reads the members, without the fingerprint (the nested form).
    fn decode_members(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// Appends the encoded message (fingerprint first) to `out`; on error
    /// `out` is left as it was.
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        Writer::message(out, Self::FINGERPRINT, |w| self.encode_members(w))
    }

    /// Decodes a message from the start of `data`; returns it and the number
    /// of bytes it took. Bytes after it are ignored, as stock decoders do.
    fn decode(data: &[u8]) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(data);
        r.fingerprint(Self::FINGERPRINT)?;
        let m = Self::decode_members(&mut r)?;
        Ok((m, r.position()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_encoding() {
        let mut out = Vec::new();
        Writer::message(&mut out, 0, |w| w.string("s", "")).unwrap();
        assert_eq!(out[8..], [0, 0, 0, 1, 0]);
        let mut r = Reader::new(&out[8..]);
        assert_eq!(r.string("s").unwrap(), "");
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn hostile_strings_are_refused() {
        let cases: [(&[u8], DecodeError); 7] = [
            (&[0, 0, 0, 0], DecodeError::StringLength { field: "s", value: 0 }),
            (&[0xff, 0xff, 0xff, 0xff], DecodeError::StringLength { field: "s", value: -1 }),
            (&[0, 1, 0, 2], DecodeError::StringLength { field: "s", value: 65538 }),
            (&[0, 0, 0, 3, b'a', b'b'], DecodeError::Truncated { field: "s" }),
            (&[0, 0, 0, 2, b'a', b'b'], DecodeError::StringBytes { field: "s" }),
            (&[0, 0, 0, 3, b'a', 0, 0], DecodeError::StringBytes { field: "s" }),
            (&[0, 0, 0, 2, 0xff, 0], DecodeError::StringBytes { field: "s" }),
        ];
        for (bytes, want) in cases {
            assert_eq!(Reader::new(bytes).string("s"), Err(want), "{bytes:02x?}");
        }
    }

    #[test]
    fn longest_string_both_ways() {
        let s = "x".repeat(MAX_STRING);
        let mut out = Vec::new();
        Writer::message(&mut out, 0, |w| w.string("s", &s)).unwrap();
        assert_eq!(Reader::new(&out[8..]).string("s").unwrap(), s);
        let long = "x".repeat(MAX_STRING + 1);
        assert_eq!(Writer::message(&mut out, 0, |w| w.string("s", &long)), Err(EncodeError::String { field: "s" }));
        assert_eq!(Writer::message(&mut out, 0, |w| w.string("s", "a\0b")), Err(EncodeError::String { field: "s" }));
    }

    #[test]
    fn counts_are_bounded() {
        let r = Reader::new(&[]);
        assert_eq!(r.check_count("n", 10_000), Ok(10_000));
        assert_eq!(r.check_count("n", 10_001), Err(DecodeError::Count { field: "n", value: 10_001 }));
        assert_eq!(r.check_count("n", -1), Err(DecodeError::Count { field: "n", value: -1 }));
    }

    #[test]
    fn oversized_message_leaves_buffer_alone() {
        let mut out = b"keep".to_vec();
        let big = "y".repeat(MAX_STRING);
        let r = Writer::message(&mut out, 1, |w| (0..17).try_for_each(|_| w.string("s", &big)));
        assert!(matches!(r, Err(EncodeError::TooLarge { .. })), "{r:?}");
        assert_eq!(out, b"keep");
    }

    #[test]
    fn scalars_are_big_endian() {
        let mut out = Vec::new();
        Writer::message(&mut out, 0x0102030405060708, |w| {
            w.i16(-2);
            w.f32(7.0);
            w.boolean(true);
            Ok(())
        })
        .unwrap();
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 0xff, 0xfe, 0x40, 0xe0, 0, 0, 1]);
        let mut r = Reader::new(&out);
        assert_eq!(r.fingerprint(0x0102030405060708), Ok(()));
        assert_eq!(r.i16("a"), Ok(-2));
        assert_eq!(r.f32("b"), Ok(7.0));
        assert_eq!(Reader::new(&[2]).boolean("c"), Ok(true), "any non-zero byte is true");
        assert_eq!(Reader::new(&[0; 7]).fingerprint(0), Err(DecodeError::Truncated { field: "fingerprint" }));
    }
}
