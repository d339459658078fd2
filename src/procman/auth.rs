//! Message authentication (docs/fleet.md §6.3): the 48-byte "PMA1" trailer that
//! follows an encoded message in the same datagram or frame, which stock
//! decoders ignore.
//!
//! ```text
//! u32 magic "PMA1" | u32 key_id = SHA-256(key)[0..4] | u64 counter | u8[32] mac
//! mac = HMAC-SHA256(key, "PMA1" || u8 len(channel) || channel || message || trailer[0..16])
//! ```
//!
//! [`Key`] loads a key file (hex, at least 32 bytes, mode 0600 or
//! stricter); [`Signer`] makes trailers with a strictly increasing counter
//! that starts at the wall clock in µs; [`Verifier`] runs the five ordered
//! checks and says which one failed ([`Verdict`]); [`AuthMode`] is the
//! `--auth off|sign|require` option.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::codec::DecodeError;
use super::types::Sent;

/// The trailer's magic ("PMA1").
pub const MAGIC: u32 = 0x504d_4131;
/// The trailer's length.
pub const TRAILER_LEN: usize = 48;
/// The shortest key accepted, in bytes (after hex decoding).
pub const MIN_KEY_LEN: usize = 32;
/// The most keys a verifier holds (the current one and the next, for rotation).
pub const MAX_KEYS: usize = 2;
/// How far a signed message's `utime` may be from local time, in µs.
pub const MAX_SKEW_US: i64 = 60_000_000;
/// Counter entries kept per verifier; beyond it the oldest is forgotten.
pub const MAX_SENDERS: usize = 4096;

const MAX_KEY_FILE: u64 = 64 * 1024;

type HmacSha256 = Hmac<Sha256>;

/// The wall clock in µs since the epoch (0 if the clock is before it).
pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// `--auth off|sign|require`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// No signing, no checking: stock behaviour.
    #[default]
    Off,
    /// Sign everything sent; accept unsigned messages; reject signed ones
    /// that fail verification.
    Sign,
    /// Sign everything sent; accept only valid signed messages (callers
    /// make the exceptions the spec allows, e.g. `--trust-unsigned-deputy`).
    Require,
}

impl AuthMode {
    /// Whether a message with this verdict is acted upon.
    pub fn admits(self, v: &Verdict) -> bool {
        match self {
            AuthMode::Off => true,
            AuthMode::Sign => matches!(v, Verdict::Unsigned | Verdict::Valid { .. }),
            AuthMode::Require => matches!(v, Verdict::Valid { .. }),
        }
    }

    /// Whether messages sent are signed.
    pub fn signs(self) -> bool {
        self != AuthMode::Off
    }
}

impl std::str::FromStr for AuthMode {
    type Err = AuthModeError;
    fn from_str(s: &str) -> Result<AuthMode, AuthModeError> {
        match s {
            "off" => Ok(AuthMode::Off),
            "sign" => Ok(AuthMode::Sign),
            "require" => Ok(AuthMode::Require),
            _ => Err(AuthModeError(s.to_string())),
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMode::Off => "off",
            AuthMode::Sign => "sign",
            AuthMode::Require => "require",
        })
    }
}

/// An `--auth` value that is not `off`, `sign` or `require`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthModeError(pub String);

impl fmt::Display for AuthModeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad --auth mode '{}' (off, sign or require)", self.0)
    }
}

impl std::error::Error for AuthModeError {}

/// Why a key could not be had.
#[derive(Debug)]
pub enum KeyError {
    /// The file could not be opened or read.
    Io(std::io::Error),
    /// The file is not a regular file, or larger than a key file can be.
    NotAKeyFile,
    /// The file's mode lets group or others access it.
    Mode(u32),
    /// The text is not hex (whitespace is allowed between digits).
    Hex,
    /// The key is shorter than [`MIN_KEY_LEN`] bytes.
    TooShort(usize),
    /// More than [`MAX_KEYS`] keys given to one verifier.
    TooMany,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Io(e) => write!(f, "cannot read key file: {e}"),
            KeyError::NotAKeyFile => f.write_str("key file is not a small regular file"),
            KeyError::Mode(m) => write!(
                f,
                "key file has mode {:04o}; it must not be accessible to group or others (chmod 600)",
                m & 0o7777
            ),
            KeyError::Hex => f.write_str("key file is not hex-encoded"),
            KeyError::TooShort(n) => write!(f, "key is {n} bytes; at least {MIN_KEY_LEN} are needed"),
            KeyError::TooMany => write!(f, "at most {MAX_KEYS} keys may be loaded"),
        }
    }
}

impl std::error::Error for KeyError {}

/// A shared secret and its id.
#[derive(Clone)]
pub struct Key {
    id: [u8; 4],
    /// HMAC state keyed once; each MAC starts from a clone of it.
    keyed: HmacSha256,
    len: usize,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", hex(&self.id))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Key {
    /// A key from raw bytes (at least [`MIN_KEY_LEN`]).
    pub fn from_bytes(secret: &[u8]) -> Result<Key, KeyError> {
        if secret.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort(secret.len()));
        }
        let digest = Sha256::digest(secret);
        let mut id = [0u8; 4];
        id.copy_from_slice(&digest[..4]);
        let keyed = <HmacSha256 as KeyInit>::new_from_slice(secret).map_err(|_| KeyError::TooShort(secret.len()))?;
        Ok(Key { id, keyed, len: secret.len() })
    }

    /// A key from hex text; ASCII whitespace between digits is ignored.
    pub fn from_hex(text: &str) -> Result<Key, KeyError> {
        let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return Err(KeyError::Hex);
        }
        let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8).ok_or(KeyError::Hex);
        let bytes = digits.chunks(2).map(|p| Ok(nibble(p[0])? << 4 | nibble(p[1])?)).collect::<Result<Vec<u8>, _>>()?;
        Key::from_bytes(&bytes)
    }

    /// Loads a key file: hex text, a regular file whose mode gives group and
    /// others no access (checked on the opened file, so no race).
    pub fn load(path: &Path) -> Result<Key, KeyError> {
        let mut f = File::open(path).map_err(KeyError::Io)?;
        let meta = f.metadata().map_err(KeyError::Io)?;
        if !meta.is_file() || meta.size() > MAX_KEY_FILE {
            return Err(KeyError::NotAKeyFile);
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Mode(mode));
        }
        let mut text = String::new();
        f.read_to_string(&mut text).map_err(|_| KeyError::Hex)?;
        Key::from_hex(&text)
    }

    /// The key's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a key has at least [`MIN_KEY_LEN`] bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The key's id: the first four bytes of SHA-256 of the key.
    pub fn id(&self) -> [u8; 4] {
        self.id
    }

    /// HMAC-SHA256 over the trailer's scope, ready to finalize or verify.
    fn mac(&self, channel: &str, message: &[u8], head: &[u8; 16]) -> HmacSha256 {
        let mut m = self.keyed.clone();
        m.update(b"PMA1");
        // LCM channels are at most 63 bytes; a longer one (never sent)
        // still hashes unambiguously enough not to verify by accident.
        m.update(&[channel.len().min(255) as u8]);
        m.update(channel.as_bytes());
        m.update(message);
        m.update(head);
        m
    }
}

/// Makes trailers for one sender.
#[derive(Debug)]
pub struct Signer {
    key: Key,
    counter: u64,
}

impl Signer {
    /// A signer using `key`; its counter starts at the wall clock in µs.
    pub fn new(key: Key) -> Signer {
        Signer { key, counter: 0 }
    }

    /// The key's id.
    pub fn key_id(&self) -> [u8; 4] {
        self.key.id
    }

    /// The trailer for `message` (the encoded bytes) sent on `channel`.
    pub fn sign(&mut self, channel: &str, message: &[u8]) -> [u8; TRAILER_LEN] {
        self.sign_at(channel, message, now_us())
    }

    /// [`Signer::sign`] with the wall clock given: the counter becomes
    /// `max(previous + 1, now_us)`, so it always increases and a restarted
    /// sender starts above its previous life.
    pub fn sign_at(&mut self, channel: &str, message: &[u8], now_us: i64) -> [u8; TRAILER_LEN] {
        self.counter = self.counter.saturating_add(1).max(now_us.max(0) as u64);
        let mut t = [0u8; TRAILER_LEN];
        t[..4].copy_from_slice(&MAGIC.to_be_bytes());
        t[4..8].copy_from_slice(&self.key.id);
        t[8..16].copy_from_slice(&self.counter.to_be_bytes());
        let mut head = [0u8; 16];
        head.copy_from_slice(&t[..16]);
        let mac = self.key.mac(channel, message, &head).finalize().into_bytes();
        t[16..].copy_from_slice(&mac);
        t
    }

    /// Appends the trailer for the message that starts at `start` in `buf`
    /// and runs to its end (encode, then sign in place).
    pub fn append(&mut self, channel: &str, buf: &mut Vec<u8>, start: usize) {
        let t = self.sign(channel, buf.get(start..).unwrap_or(&[]));
        buf.extend_from_slice(&t);
    }
}

/// The outcome of checking a message's trailer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No trailer: not exactly 48 bytes follow the message, or no magic.
    Unsigned,
    /// Every check passed.
    Valid {
        /// The key that signed it.
        key_id: [u8; 4],
    },
    /// Signed with a key we do not hold.
    UnknownKey {
        /// The key id in the trailer.
        key_id: [u8; 4],
    },
    /// The MAC does not match: tampered with, or another key with the same id.
    BadMac,
    /// The counter is not above the last one accepted from this sender
    /// under this key: a replay.
    Replayed {
        /// The trailer's counter.
        counter: u64,
        /// The last counter accepted.
        last: u64,
    },
    /// `utime` is more than [`MAX_SKEW_US`] from local time (a late
    /// replay, e.g. from `lcm-logplayer`, or a wrong clock).
    Stale {
        /// Local time minus `utime`, in µs (negative: from the future).
        age_us: i64,
    },
}

impl Verdict {
    /// True for the outcomes that reject a signed message.
    pub fn is_rejection(&self) -> bool {
        !matches!(self, Verdict::Unsigned | Verdict::Valid { .. })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Unsigned => f.write_str("unsigned"),
            Verdict::Valid { key_id } => write!(f, "signed with key {}", hex(key_id)),
            Verdict::UnknownKey { key_id } => write!(f, "signed with unknown key {}", hex(key_id)),
            Verdict::BadMac => f.write_str("bad signature"),
            Verdict::Replayed { counter, last } => write!(f, "replayed (counter {counter} <= {last})"),
            Verdict::Stale { age_us } => write!(f, "signed utime {} s from local time", age_us / 1_000_000),
        }
    }
}

/// Checks trailers, remembering the last counter per (key, sender).
#[derive(Debug)]
pub struct Verifier {
    keys: Vec<Key>,
    last: HashMap<([u8; 4], String), u64>,
}

impl Verifier {
    /// A verifier holding up to [`MAX_KEYS`] keys.
    pub fn new(keys: impl IntoIterator<Item = Key>) -> Result<Verifier, KeyError> {
        let keys: Vec<Key> = keys.into_iter().collect();
        if keys.len() > MAX_KEYS {
            return Err(KeyError::TooMany);
        }
        Ok(Verifier { keys, last: HashMap::new() })
    }

    /// Checks the trailer after the `message_len`-byte message at the start
    /// of `data`, received on `channel`, from `sender` (see [`Sent::sender`])
    /// with the message's `utime`.
    pub fn verify(&mut self, channel: &str, data: &[u8], message_len: usize, sender: &str, utime: i64) -> Verdict {
        self.verify_at(channel, data, message_len, sender, utime, now_us())
    }

    /// [`Verifier::verify`] with the local wall clock given. The checks run
    /// in the spec's order; the counter is recorded only for a valid message.
    pub fn verify_at(
        &mut self,
        channel: &str,
        data: &[u8],
        message_len: usize,
        sender: &str,
        utime: i64,
        now_us: i64,
    ) -> Verdict {
        // 1. Signed only if exactly 48 bytes follow and the magic matches.
        let (Some(message), Some(trailer)) = (data.get(..message_len), data.get(message_len..)) else {
            return Verdict::Unsigned;
        };
        let Some(t) = <&[u8; TRAILER_LEN]>::try_from(trailer).ok() else { return Verdict::Unsigned };
        if t[..4] != MAGIC.to_be_bytes() {
            return Verdict::Unsigned;
        }
        // 2. The key, by id.
        let mut key_id = [0u8; 4];
        key_id.copy_from_slice(&t[4..8]);
        let Some(key) = self.keys.iter().find(|k| k.id == key_id) else {
            return Verdict::UnknownKey { key_id };
        };
        // 3. The MAC, compared in constant time.
        let mut head = [0u8; 16];
        head.copy_from_slice(&t[..16]);
        if key.mac(channel, message, &head).verify_slice(&t[16..]).is_err() {
            return Verdict::BadMac;
        }
        // 4. The counter must exceed the last one from this sender.
        let mut c = [0u8; 8];
        c.copy_from_slice(&t[8..16]);
        let counter = u64::from_be_bytes(c);
        let slot = (key_id, sender.to_string());
        if let Some(&last) = self.last.get(&slot)
            && counter <= last
        {
            return Verdict::Replayed { counter, last };
        }
        // 5. utime within ±60 s of local time.
        let age_us = now_us.saturating_sub(utime);
        if age_us.unsigned_abs() > MAX_SKEW_US as u64 {
            return Verdict::Stale { age_us };
        }
        self.remember(slot, counter);
        Verdict::Valid { key_id }
    }

    fn remember(&mut self, slot: ([u8; 4], String), counter: u64) {
        if self.last.len() >= MAX_SENDERS
            && !self.last.contains_key(&slot)
            && let Some(oldest) = self.last.iter().min_by_key(|(_, c)| **c).map(|(k, _)| k.clone())
        {
            self.last.remove(&oldest);
        }
        self.last.insert(slot, counter);
    }

    /// Decodes a `T` from `data` received on `channel` and verifies its
    /// trailer with the message's own sender and `utime`.
    pub fn check<T: Sent>(&mut self, channel: &str, data: &[u8]) -> Result<(T, Verdict), DecodeError> {
        let (m, used) = T::decode(data)?;
        let v = self.verify(channel, data, used, m.sender(), m.utime());
        Ok((m, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procman::types::{Orders, PM_ORDERS};
    use std::io::Write;

    const NOW: i64 = 1_700_000_000_000_000;

    fn key(fill: u8) -> Key {
        Key::from_bytes(&[fill; 32]).unwrap()
    }

    fn orders(utime: i64) -> Vec<u8> {
        Orders { utime, deputy_id: "d".into(), sheriff_id: "s".into(), cmds: vec![] }.to_bytes().unwrap()
    }

    fn signed(signer: &mut Signer, utime: i64, now: i64) -> (Vec<u8>, usize) {
        let mut m = orders(utime);
        let n = m.len();
        let t = signer.sign_at(PM_ORDERS, &m, now);
        m.extend_from_slice(&t);
        (m, n)
    }

    #[test]
    fn trailer_layout() {
        let k = key(1);
        let mut s = Signer::new(k.clone());
        let (m, n) = signed(&mut s, NOW, NOW);
        assert_eq!(m.len(), n + TRAILER_LEN);
        assert_eq!(m[n..n + 4], *b"PMA1");
        assert_eq!(m[n + 4..n + 8], Sha256::digest([1u8; 32])[..4]);
        assert_eq!(m[n + 8..n + 16], (NOW as u64).to_be_bytes());
        // The MAC, computed independently from the spec's formula.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&[1; 32]).unwrap();
        mac.update(&[b"PMA1".as_slice(), &[9], b"PM_ORDERS", &m[..n], &m[n..n + 16]].concat());
        assert_eq!(m[n + 16..], mac.finalize().into_bytes()[..]);
    }

    #[test]
    fn counter_strictly_increases() {
        let mut s = Signer::new(key(1));
        let c = |t: &[u8; 48]| u64::from_be_bytes(t[8..16].try_into().unwrap());
        let a = c(&s.sign_at("C", b"m", NOW));
        let b = c(&s.sign_at("C", b"m", NOW));
        let back = c(&s.sign_at("C", b"m", NOW - 5_000_000));
        let later = c(&s.sign_at("C", b"m", NOW + 10));
        assert_eq!((a, b, back, later), (NOW as u64, NOW as u64 + 1, NOW as u64 + 2, NOW as u64 + 10));
    }

    #[test]
    fn the_five_checks_in_order() {
        let mut s = Signer::new(key(1));
        let mut v = Verifier::new([key(2), key(1)]).unwrap();
        let (m, n) = signed(&mut s, NOW, NOW);
        let id = key(1).id();

        // 1. Unsigned: nothing, or not exactly 48 bytes, or no magic.
        assert_eq!(v.verify_at(PM_ORDERS, &m[..n], n, "s", NOW, NOW), Verdict::Unsigned);
        assert_eq!(v.verify_at(PM_ORDERS, &m[..n + 47], n, "s", NOW, NOW), Verdict::Unsigned);
        assert_eq!(v.verify_at(PM_ORDERS, &[&m[..], b"x"].concat(), n, "s", NOW, NOW), Verdict::Unsigned);
        let mut no_magic = m.clone();
        no_magic[n] = b'X';
        assert_eq!(v.verify_at(PM_ORDERS, &no_magic, n, "s", NOW, NOW), Verdict::Unsigned);
        assert_eq!(v.verify_at(PM_ORDERS, &m, m.len() + 1, "s", NOW, NOW), Verdict::Unsigned);

        // 2. Unknown key.
        let mut other = Signer::new(key(3));
        let (m3, _) = signed(&mut other, NOW, NOW);
        assert_eq!(v.verify_at(PM_ORDERS, &m3, n, "s", NOW, NOW), Verdict::UnknownKey { key_id: key(3).id() });

        // 3. Tampered message, trailer, or channel.
        for at in [9, n + 10, n + 20] {
            let mut bad = m.clone();
            bad[at] ^= 1;
            assert_eq!(v.verify_at(PM_ORDERS, &bad, n, "s", NOW, NOW), Verdict::BadMac, "byte {at}");
        }
        assert_eq!(v.verify_at("PM_INFO", &m, n, "s", NOW, NOW), Verdict::BadMac);

        // Valid, then 4. replayed.
        assert_eq!(v.verify_at(PM_ORDERS, &m, n, "s", NOW, NOW), Verdict::Valid { key_id: id });
        let last = NOW as u64;
        assert_eq!(v.verify_at(PM_ORDERS, &m, n, "s", NOW, NOW), Verdict::Replayed { counter: last, last });
        // Counters are per sender.
        assert_eq!(v.verify_at(PM_ORDERS, &m, n, "other", NOW, NOW), Verdict::Valid { key_id: id });

        // 5. utime too old or too far ahead; the counter is not recorded.
        let (old, _) = signed(&mut s, NOW - 61_000_000, NOW);
        assert_eq!(v.verify_at(PM_ORDERS, &old, n, "s", NOW - 61_000_000, NOW), Verdict::Stale { age_us: 61_000_000 });
        let (ahead, _) = signed(&mut s, NOW + 61_000_000, NOW);
        assert_eq!(
            v.verify_at(PM_ORDERS, &ahead, n, "s", NOW + 61_000_000, NOW),
            Verdict::Stale { age_us: -61_000_000 }
        );
        let (edge, _) = signed(&mut s, NOW - 60_000_000, NOW);
        assert_eq!(v.verify_at(PM_ORDERS, &edge, n, "s", NOW - 60_000_000, NOW), Verdict::Valid { key_id: id });
    }

    #[test]
    fn check_uses_the_message_sender_and_time() {
        let mut s = Signer::new(key(1));
        let mut v = Verifier::new([key(1)]).unwrap();
        let now = now_us();
        let (m, _) = signed(&mut s, now, now);
        let (o, verdict) = v.check::<Orders>(PM_ORDERS, &m).unwrap();
        assert_eq!((o.sheriff_id.as_str(), verdict), ("s", Verdict::Valid { key_id: key(1).id() }));
        let (_, again) = v.check::<Orders>(PM_ORDERS, &m).unwrap();
        assert!(matches!(again, Verdict::Replayed { .. }));
        assert!(v.check::<Orders>(PM_ORDERS, &m[..10]).is_err());
    }

    #[test]
    fn modes() {
        let valid = Verdict::Valid { key_id: [0; 4] };
        for (mode, unsigned, valid_ok, bad) in [
            (AuthMode::Off, true, true, true),
            (AuthMode::Sign, true, true, false),
            (AuthMode::Require, false, true, false),
        ] {
            assert_eq!(mode.admits(&Verdict::Unsigned), unsigned, "{mode}");
            assert_eq!(mode.admits(&valid), valid_ok, "{mode}");
            assert_eq!(mode.admits(&Verdict::BadMac), bad, "{mode}");
            assert_eq!(mode.to_string().parse::<AuthMode>(), Ok(mode));
        }
        assert_eq!("on".parse::<AuthMode>(), Err(AuthModeError("on".into())));
        assert!(!AuthMode::Off.signs() && AuthMode::Sign.signs() && AuthMode::Require.signs());
    }

    #[test]
    fn key_text() {
        let hex64 = "00112233445566778899aabbccddeeff".repeat(2);
        assert_eq!(Key::from_hex(&hex64).unwrap().len(), 32);
        let spaced = format!("  {}\n{}\n", &hex64[..32], hex64[32..].to_uppercase());
        assert_eq!(Key::from_hex(&spaced).unwrap().id(), Key::from_hex(&hex64).unwrap().id());
        assert!(matches!(Key::from_hex(&hex64[..62]), Err(KeyError::TooShort(31))));
        assert!(matches!(Key::from_hex(&hex64[..63]), Err(KeyError::Hex)));
        assert!(matches!(Key::from_hex(&hex64.replace('a', "g")), Err(KeyError::Hex)));
        assert!(matches!(Verifier::new([key(1), key(2), key(3)]), Err(KeyError::TooMany)));
        assert!(!format!("{:?}", key(7)).contains("0707"), "Debug never shows the secret");
    }

    #[test]
    fn key_file_mode_is_enforced() {
        let dir = std::env::temp_dir().join(format!("dp-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        let mut f = File::create(&path).unwrap();
        writeln!(f, "{}", "ab".repeat(32)).unwrap();
        for (mode, ok) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false), (0o660, false)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            match Key::load(&path) {
                Ok(k) => assert!(ok, "{mode:o} accepted; {k:?}"),
                Err(KeyError::Mode(m)) => assert!(!ok && m & 0o777 == mode, "{mode:o}"),
                Err(e) => panic!("{mode:o}: {e}"),
            }
        }
        assert!(matches!(Key::load(&dir), Err(KeyError::NotAKeyFile | KeyError::Mode(_))));
        assert!(matches!(Key::load(&dir.join("missing")), Err(KeyError::Io(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sender_table_is_bounded() {
        let mut s = Signer::new(key(1));
        let mut v = Verifier::new([key(1)]).unwrap();
        let (m, n) = signed(&mut s, NOW, NOW);
        for i in 0..MAX_SENDERS + 10 {
            assert!(matches!(v.verify_at(PM_ORDERS, &m, n, &i.to_string(), NOW, NOW), Verdict::Valid { .. }));
        }
        assert_eq!(v.last.len(), MAX_SENDERS);
    }
}
