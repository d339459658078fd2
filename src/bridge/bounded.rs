//! What the bridge keeps about senders it does not trust, bounded (issue
//! 14, "every table that network input can grow is bounded and counted").
//!
//! [`Table`] holds at most a fixed number of entries, each keyed by a
//! 64-bit hash of its parts (never by the sender-chosen text itself, which
//! may be 64 KiB), and evicts the oldest entry when full. The hash is keyed
//! per process ([`std::collections::hash_map::RandomState`]), so a sender
//! cannot choose ids that collide; a collision would only merge two rate
//! limits. [`quote`] is how sender-chosen text appears in notices and logs.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::Instant;

/// A map of at most `cap` entries keyed by hashed text, each with a time
/// stamp that decides which entry goes when a new one needs room.
#[derive(Debug)]
pub struct Table<V> {
    map: HashMap<u64, (Instant, V)>,
    cap: usize,
    hasher: RandomState,
}

impl<V> Table<V> {
    /// An empty table for at most `cap` entries (at least one).
    pub fn new(cap: usize) -> Table<V> {
        Table { map: HashMap::with_capacity(cap.max(1)), cap: cap.max(1), hasher: RandomState::new() }
    }

    /// The key of `parts` (each length-prefixed, so `("a", "bc")` and
    /// `("ab", "c")` differ).
    pub fn key(&self, parts: &[&str]) -> u64 {
        let mut h = self.hasher.build_hasher();
        for p in parts {
            p.len().hash(&mut h);
            h.write(p.as_bytes());
        }
        h.finish()
    }

    /// The entry of `key`, with its time stamp.
    pub fn get(&self, key: u64) -> Option<&(Instant, V)> {
        self.map.get(&key)
    }

    /// Set `key` to `value` stamped `at`; a new key in a full table first
    /// evicts the entry with the oldest stamp.
    pub fn insert(&mut self, key: u64, at: Instant, value: V) {
        if self.map.len() >= self.cap
            && !self.map.contains_key(&key)
            && let Some(oldest) = self.map.iter().min_by_key(|(_, (t, _))| *t).map(|(k, _)| *k)
        {
            self.map.remove(&oldest);
        }
        self.map.insert(key, (at, value));
    }

    /// Keep only the entries for which `keep(stamp, value)` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(Instant, &V) -> bool) {
        self.map.retain(|_, (t, v)| keep(*t, v));
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No entry is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The most bytes of sender-chosen text (a sheriff id, a command id) that
/// a notice or a log line quotes.
pub const QUOTE_MAX: usize = 64;

/// `s` as a notice shows it: at most [`QUOTE_MAX`] bytes (then
/// `...(N bytes)`), control and direction-changing characters escaped.
pub fn quote(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() >= QUOTE_MAX {
            out.push_str(&format!("...({} bytes)", s.len()));
            return out;
        }
        let invisible =
            matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}');
        if c.is_control() || invisible {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn full_table_evicts_the_oldest() {
        let mut t: Table<u32> = Table::new(3);
        let t0 = Instant::now();
        let ks: Vec<u64> = (0..5).map(|i| t.key(&["k", &i.to_string()])).collect();
        for (i, k) in ks.iter().enumerate() {
            t.insert(*k, t0 + Duration::from_secs(i as u64), i as u32);
            assert!(t.len() <= 3);
        }
        assert!(t.get(ks[0]).is_none() && t.get(ks[1]).is_none());
        assert_eq!(t.get(ks[4]).map(|e| e.1), Some(4));
        // an existing key is updated without evicting another
        t.insert(ks[2], t0 + Duration::from_secs(9), 7);
        assert_eq!((t.len(), t.get(ks[3]).map(|e| e.1)), (3, Some(3)));
        t.retain(|at, _| at > t0 + Duration::from_secs(5));
        assert_eq!(t.len(), 1);
        assert_ne!(t.key(&["a", "bc"]), t.key(&["ab", "c"]));
    }

    #[test]
    fn quotes_are_short_and_visible() {
        assert_eq!(quote("sheriff:1:1"), "sheriff:1:1");
        assert_eq!(quote("a\tb\u{202e}c"), "a\\tb\\u{202e}c");
        let long = "é".repeat(40_000);
        let q = quote(&long);
        assert!(q.len() <= QUOTE_MAX + 20, "{q}");
        assert!(q.ends_with("...(80000 bytes)"), "{q}");
    }
}
