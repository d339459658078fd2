//! The udpm datagram forms of docs/fleet.md §2.2, without sockets: the short `LC02`
//! form, the fragmented `LC03` form, and reassembly of fragments keyed by
//! (source, seqno) with bounded buffers.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Magic of the short form ("LC02").
pub const SHORT_MAGIC: u32 = 0x4c43_3032;
/// Magic of the fragmented form ("LC03").
pub const FRAGMENT_MAGIC: u32 = 0x4c43_3033;
/// The longest channel name, in bytes.
pub const MAX_CHANNEL: usize = 63;
/// The most `channel + NUL + payload` bytes that still go in one short datagram.
pub const MAX_SHORT_BODY: usize = 65499;
/// Bytes after the header in each fragment.
pub const FRAGMENT_BODY: usize = 65487;
/// Size of the fragment header.
pub const FRAGMENT_HEADER: usize = 20;
/// The largest message reassembled or sent (docs/fleet.md §6.4).
pub const MAX_PAYLOAD: usize = 1024 * 1024;
/// The most bytes held in partial messages at once (as liblcm: 16 MiB),
/// their bookkeeping included (see [`partial_cost`]).
pub const MAX_BUFFERED: usize = 16 * 1024 * 1024;
/// What a partial message costs beyond its data and its table of
/// fragments seen: its entry in the map and its channel name (at most
/// [`MAX_CHANNEL`] bytes), rounded up; checked in the tests.
pub const PARTIAL_OVERHEAD: usize = 256;
/// The most partial messages held at once (as liblcm: 1000).
pub const MAX_PARTIALS: usize = 1000;
/// A partial message with no new fragment for this long is dropped.
pub const FRAGMENT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a datagram was not accepted, or a message could not be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatagramError {
    /// Shorter than its header, or an unknown magic.
    Malformed,
    /// The channel name is empty, over [`MAX_CHANNEL`] bytes, unterminated
    /// or not UTF-8.
    Channel,
    /// The message is larger than [`MAX_PAYLOAD`].
    TooLarge,
    /// A fragment's numbers contradict themselves or its message.
    Fragment,
}

impl fmt::Display for DatagramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatagramError::Malformed => "malformed LCM datagram",
            DatagramError::Channel => "bad LCM channel name",
            DatagramError::TooLarge => "LCM message larger than 1 MiB",
            DatagramError::Fragment => "inconsistent LCM fragment",
        })
    }
}

impl std::error::Error for DatagramError {}

/// Checks a channel name for sending.
pub fn check_channel(channel: &str) -> Result<(), DatagramError> {
    if channel.is_empty() || channel.len() > MAX_CHANNEL || channel.as_bytes().contains(&0) {
        Err(DatagramError::Channel)
    } else {
        Ok(())
    }
}

/// Builds the datagrams for one message, in order, and hands each to `send`
/// (built in `scratch`, reused). The short form is used when it fits.
pub fn encode<E: From<DatagramError>>(
    channel: &str,
    payload: &[u8],
    seqno: u32,
    scratch: &mut Vec<u8>,
    mut send: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    check_channel(channel)?;
    if payload.len() > MAX_PAYLOAD {
        return Err(DatagramError::TooLarge.into());
    }
    let body = channel.len() + 1 + payload.len();
    scratch.clear();
    if body <= MAX_SHORT_BODY {
        scratch.extend_from_slice(&SHORT_MAGIC.to_be_bytes());
        scratch.extend_from_slice(&seqno.to_be_bytes());
        scratch.extend_from_slice(channel.as_bytes());
        scratch.push(0);
        scratch.extend_from_slice(payload);
        return send(scratch);
    }
    let count = body.div_ceil(FRAGMENT_BODY) as u16;
    let mut offset = 0usize;
    for number in 0..count {
        scratch.clear();
        scratch.extend_from_slice(&FRAGMENT_MAGIC.to_be_bytes());
        scratch.extend_from_slice(&seqno.to_be_bytes());
        scratch.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        scratch.extend_from_slice(&(offset as u32).to_be_bytes());
        scratch.extend_from_slice(&number.to_be_bytes());
        scratch.extend_from_slice(&count.to_be_bytes());
        let mut room = FRAGMENT_BODY;
        if number == 0 {
            scratch.extend_from_slice(channel.as_bytes());
            scratch.push(0);
            room -= channel.len() + 1;
        }
        let end = (offset + room).min(payload.len());
        scratch.extend_from_slice(&payload[offset..end]);
        offset = end;
        send(scratch)?;
    }
    Ok(())
}

/// One fragment of a large message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment<'a> {
    /// The sender's sequence number of the whole message.
    pub seqno: u32,
    /// The size of the whole payload.
    pub payload_size: u32,
    /// Where this fragment's data goes in the payload.
    pub offset: u32,
    /// This fragment's number, from 0.
    pub number: u16,
    /// How many fragments the message has.
    pub count: u16,
    /// The channel (fragment 0 only).
    pub channel: Option<&'a str>,
    /// This fragment's share of the payload.
    pub data: &'a [u8],
}

/// A parsed datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// A whole message (`LC02`).
    Short {
        /// The sender's sequence number.
        seqno: u32,
        /// The channel.
        channel: &'a str,
        /// The payload.
        payload: &'a [u8],
    },
    /// One fragment (`LC03`).
    Fragment(Fragment<'a>),
}

fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

fn be16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

/// Splits `s` at its first NUL into a channel name and the rest.
fn split_channel(s: &[u8]) -> Result<(&str, &[u8]), DatagramError> {
    let limit = s.len().min(MAX_CHANNEL + 1);
    let nul = s[..limit].iter().position(|b| *b == 0).ok_or(DatagramError::Channel)?;
    let channel = std::str::from_utf8(&s[..nul]).map_err(|_| DatagramError::Channel)?;
    if channel.is_empty() {
        return Err(DatagramError::Channel);
    }
    Ok((channel, &s[nul + 1..]))
}

/// Parses one datagram (borrowing from it).
pub fn parse(d: &[u8]) -> Result<Datagram<'_>, DatagramError> {
    if d.len() < 8 {
        return Err(DatagramError::Malformed);
    }
    let seqno = be32(d, 4);
    match be32(d, 0) {
        SHORT_MAGIC => {
            let (channel, payload) = split_channel(&d[8..])?;
            Ok(Datagram::Short { seqno, channel, payload })
        }
        FRAGMENT_MAGIC if d.len() >= FRAGMENT_HEADER => {
            let (payload_size, offset, number, count) = (be32(d, 8), be32(d, 12), be16(d, 16), be16(d, 18));
            if payload_size as usize > MAX_PAYLOAD {
                return Err(DatagramError::TooLarge);
            }
            let (channel, data) = if number == 0 {
                let (c, rest) = split_channel(&d[FRAGMENT_HEADER..])?;
                (Some(c), rest)
            } else {
                (None, &d[FRAGMENT_HEADER..])
            };
            let end = offset as usize + data.len();
            if number >= count || end > payload_size as usize || (number == 0 && offset != 0) {
                return Err(DatagramError::Fragment);
            }
            Ok(Datagram::Fragment(Fragment { seqno, payload_size, offset, number, count, channel, data }))
        }
        _ => Err(DatagramError::Malformed),
    }
}

/// The bytes a partial message of `payload_size` bytes in `count`
/// fragments is counted for against [`MAX_BUFFERED`]: its data, its bitmap
/// of fragments seen, and [`PARTIAL_OVERHEAD`]. Without the bitmap and the
/// overhead, 1000 partials of 65535 tiny fragments held some 64 MiB of
/// bookkeeping beside the 16 MiB of data (issue 14).
pub fn partial_cost(payload_size: usize, count: u16) -> usize {
    payload_size + usize::from(count).div_ceil(64) * 8 + PARTIAL_OVERHEAD
}

/// A message being put together from its fragments.
struct Partial {
    seqno: u32,
    count: u16,
    channel: Option<String>,
    buf: Vec<u8>,
    /// One bit per fragment number.
    seen: Vec<u64>,
    missing: usize,
    last: Instant,
    /// [`partial_cost`] of this message.
    cost: usize,
}

/// Counts of what reassembly threw away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Partial messages dropped unfinished (timeout, new seqno, or eviction).
    pub dropped: u64,
    /// Fragments that contradicted their message.
    pub inconsistent: u64,
}

/// Reassembles fragmented messages, at most one in progress per source.
pub struct Reassembler {
    partials: HashMap<SocketAddr, Partial>,
    buffered: usize,
    stats: ReassemblyStats,
}

impl Default for Reassembler {
    fn default() -> Self {
        Self::new()
    }
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new() -> Self {
        Reassembler { partials: HashMap::new(), buffered: 0, stats: ReassemblyStats::default() }
    }

    /// What has been thrown away so far.
    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// Bytes currently held in partial messages, bookkeeping included
    /// ([`partial_cost`]).
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// How many partial messages are held.
    pub fn partials(&self) -> usize {
        self.partials.len()
    }

    fn remove(&mut self, source: &SocketAddr) {
        if let Some(p) = self.partials.remove(source) {
            self.buffered -= p.cost;
        }
    }

    fn drop_partial(&mut self, source: &SocketAddr) {
        self.remove(source);
        self.stats.dropped += 1;
    }

    /// Drops partial messages idle for longer than [`FRAGMENT_TIMEOUT`].
    pub fn expire(&mut self, now: Instant) {
        let old: Vec<SocketAddr> = self
            .partials
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last) > FRAGMENT_TIMEOUT)
            .map(|(s, _)| *s)
            .collect();
        for s in old {
            self.drop_partial(&s);
        }
    }

    /// Makes room for `size` more bytes and one more partial: expired ones
    /// go first, then the least recently active.
    fn make_room(&mut self, size: usize, now: Instant) {
        if self.buffered + size <= MAX_BUFFERED && self.partials.len() < MAX_PARTIALS {
            return;
        }
        self.expire(now);
        while self.buffered + size > MAX_BUFFERED || self.partials.len() >= MAX_PARTIALS {
            let Some(oldest) = self.partials.iter().min_by_key(|(_, p)| p.last).map(|(s, _)| *s) else {
                break;
            };
            self.drop_partial(&oldest);
        }
    }

    /// Adds a fragment from `source`; returns the channel and payload once
    /// the message is complete.
    pub fn push(&mut self, source: SocketAddr, f: &Fragment<'_>, now: Instant) -> Option<(String, Vec<u8>)> {
        let stale = self.partials.get(&source).map(|p| {
            p.seqno != f.seqno
                || p.count != f.count
                || p.buf.len() != f.payload_size as usize
                || now.saturating_duration_since(p.last) > FRAGMENT_TIMEOUT
        });
        if stale == Some(true) {
            self.drop_partial(&source);
        }
        if !self.partials.contains_key(&source) {
            let size = f.payload_size as usize;
            let cost = partial_cost(size, f.count);
            self.make_room(cost, now);
            let p = Partial {
                seqno: f.seqno,
                count: f.count,
                channel: None,
                buf: vec![0; size],
                seen: vec![0; usize::from(f.count).div_ceil(64)],
                missing: f.count as usize,
                last: now,
                cost,
            };
            self.buffered += cost;
            self.partials.insert(source, p);
        }
        let p = self.partials.get_mut(&source)?;
        let n = f.number as usize;
        let (word, bit) = (n / 64, 1u64 << (n % 64));
        if p.seen.get(word).is_none_or(|w| w & bit != 0) {
            return None;
        }
        let (start, end) = (f.offset as usize, f.offset as usize + f.data.len());
        p.buf.get_mut(start..end)?.copy_from_slice(f.data);
        p.seen[word] |= bit;
        p.missing -= 1;
        p.last = now;
        if let Some(c) = f.channel {
            p.channel = Some(c.to_string());
        }
        if p.missing > 0 {
            return None;
        }
        let p = self.partials.remove(&source)?;
        self.buffered -= p.cost;
        match p.channel {
            Some(c) => Some((c, p.buf)),
            None => {
                self.stats.inconsistent += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagrams(channel: &str, payload: &[u8], seqno: u32) -> Result<Vec<Vec<u8>>, DatagramError> {
        let mut out = Vec::new();
        encode(channel, payload, seqno, &mut Vec::new(), |d| {
            out.push(d.to_vec());
            Ok::<(), DatagramError>(())
        })?;
        Ok(out)
    }

    fn src(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn short_form_is_the_spec_example() {
        let payload = [0xab; 31];
        let d = datagrams("PM_DISCOVER", &payload, 0).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].len(), 51);
        assert_eq!(d[0][..20], *b"LC02\0\0\0\0PM_DISCOVER\0".first_chunk::<20>().unwrap());
        assert_eq!(parse(&d[0]), Ok(Datagram::Short { seqno: 0, channel: "PM_DISCOVER", payload: &payload }));
    }

    #[test]
    fn fragmented_form_is_the_spec_example() {
        let payload: Vec<u8> = (0..76_800u32).map(|i| i as u8).collect();
        let d = datagrams("BIG", &payload, 9).unwrap();
        assert_eq!(d.iter().map(Vec::len).collect::<Vec<_>>(), [65_507, 11_337]);
        let Ok(Datagram::Fragment(f1)) = parse(&d[1]) else { panic!("fragment 1") };
        assert_eq!((f1.seqno, f1.payload_size, f1.offset, f1.number, f1.count), (9, 76_800, 65_483, 1, 2));
        let Ok(Datagram::Fragment(f0)) = parse(&d[0]) else { panic!("fragment 0") };
        assert_eq!(f0.channel, Some("BIG"));
        let mut r = Reassembler::new();
        let now = Instant::now();
        // Out of order is fine.
        assert_eq!(r.push(src(1), &f1, now), None);
        assert_eq!(r.push(src(1), &f0, now), Some(("BIG".to_string(), payload)));
        assert_eq!((r.buffered(), r.partials()), (0, 0));
    }

    #[test]
    fn boundary_between_the_forms() {
        let fits = vec![0; MAX_SHORT_BODY - 2];
        assert_eq!(datagrams("C", &fits, 0).unwrap().len(), 1);
        let over = vec![0; MAX_SHORT_BODY - 1];
        let d = datagrams("C", &over, 0).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].len(), FRAGMENT_HEADER + FRAGMENT_BODY);
    }

    #[test]
    fn sending_limits() {
        assert_eq!(datagrams("", b"x", 0), Err(DatagramError::Channel));
        assert_eq!(datagrams(&"c".repeat(64), b"x", 0), Err(DatagramError::Channel));
        assert!(datagrams(&"c".repeat(63), b"x", 0).is_ok());
        assert_eq!(datagrams("C", &vec![0; MAX_PAYLOAD + 1], 0), Err(DatagramError::TooLarge));
        assert_eq!(datagrams("C", &vec![0; MAX_PAYLOAD], 0).unwrap().len(), 17);
    }

    #[test]
    fn hostile_datagrams_are_refused() {
        let mut frag = Vec::new();
        frag.extend_from_slice(b"LC03\0\0\0\x01");
        frag.extend_from_slice(&10u32.to_be_bytes());
        frag.extend_from_slice(&8u32.to_be_bytes());
        frag.extend_from_slice(&1u16.to_be_bytes());
        frag.extend_from_slice(&2u16.to_be_bytes());
        frag.extend_from_slice(b"abc"); // 8 + 3 > 10
        let mut huge = frag.clone();
        huge[8..12].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_be_bytes());
        let mut number = frag.clone();
        number[16..18].copy_from_slice(&2u16.to_be_bytes());
        let cases: [(&[u8], DatagramError); 8] = [
            (b"LC02", DatagramError::Malformed),
            (b"XXXX\0\0\0\0C\0", DatagramError::Malformed),
            (b"LC02\0\0\0\0\0payload", DatagramError::Channel),
            (b"LC02\0\0\0\0no-nul", DatagramError::Channel),
            (b"LC02\0\0\0\0\xff\0", DatagramError::Channel),
            (&frag, DatagramError::Fragment),
            (&huge, DatagramError::TooLarge),
            (&number, DatagramError::Fragment),
        ];
        for (d, want) in cases {
            assert_eq!(parse(d), Err(want), "{d:02x?}");
        }
        let long = [b"LC02\0\0\0\0".as_slice(), &[b'c'; 64], b"\0"].concat();
        assert_eq!(parse(&long), Err(DatagramError::Channel));
    }

    fn fragments(payload_size: usize, seqno: u32) -> Vec<Vec<u8>> {
        datagrams("CH", &vec![7; payload_size], seqno).unwrap()
    }

    fn frag(d: &[u8]) -> Fragment<'_> {
        match parse(d) {
            Ok(Datagram::Fragment(f)) => f,
            other => panic!("not a fragment: {other:?}"),
        }
    }

    #[test]
    fn new_seqno_drops_the_partial() {
        let a = fragments(100_000, 1);
        let b = fragments(100_000, 2);
        let mut r = Reassembler::new();
        let now = Instant::now();
        assert_eq!(r.push(src(1), &frag(&a[0]), now), None);
        assert_eq!(r.push(src(1), &frag(&b[0]), now), None);
        assert_eq!(r.stats().dropped, 1);
        assert!(r.push(src(1), &frag(&b[1]), now).is_some(), "the new message completes");
        assert_eq!(r.push(src(1), &frag(&a[1]), now), None, "the old message is gone");
        assert_eq!((r.partials(), r.stats().dropped), (1, 1));
    }

    #[test]
    fn sources_are_kept_apart_and_duplicates_ignored() {
        let a = fragments(70_000, 5);
        let mut r = Reassembler::new();
        let now = Instant::now();
        assert_eq!(r.push(src(1), &frag(&a[0]), now), None);
        assert_eq!(r.push(src(1), &frag(&a[0]), now), None);
        assert_eq!(r.push(src(2), &frag(&a[1]), now), None);
        assert!(r.push(src(1), &frag(&a[1]), now).is_some());
        assert_eq!(r.partials(), 1);
    }

    #[test]
    fn timeout_drops_the_partial() {
        let a = fragments(70_000, 5);
        let mut r = Reassembler::new();
        let t0 = Instant::now();
        r.push(src(1), &frag(&a[0]), t0);
        let late = t0 + FRAGMENT_TIMEOUT + Duration::from_millis(1);
        assert_eq!(r.push(src(1), &frag(&a[1]), late), None);
        assert_eq!(r.stats().dropped, 1);
        r.expire(late + FRAGMENT_TIMEOUT * 2);
        assert_eq!((r.partials(), r.buffered(), r.stats().dropped), (0, 0, 2));
    }

    #[test]
    fn buffers_are_bounded() {
        let a = fragments(MAX_PAYLOAD, 1);
        let mut r = Reassembler::new();
        let now = Instant::now();
        for port in 0..40u16 {
            r.push(src(port), &frag(&a[0]), now + Duration::from_millis(port.into()));
            assert!(r.buffered() <= MAX_BUFFERED);
        }
        // 15, not 16: each also counts its bookkeeping
        assert_eq!(r.partials(), MAX_BUFFERED / partial_cost(MAX_PAYLOAD, 17));
        assert_eq!(r.stats().dropped, 40 - 15);
        // A small first fragment of a two-fragment message (legal, if odd).
        let mut small = b"LC03\0\0\0\x01".to_vec();
        for v in [100u32, 0] {
            small.extend_from_slice(&v.to_be_bytes());
        }
        small.extend_from_slice(&[0, 0, 0, 2]);
        small.extend_from_slice(b"C\0payload");
        for port in 0..(MAX_PARTIALS as u16 + 5) {
            assert_eq!(r.push(src(1000 + port), &frag(&small), now + Duration::from_secs(1)), None);
        }
        assert_eq!(r.partials(), MAX_PARTIALS);
    }

    /// Issue 14 #11: the cap held the data only; 1000 partials of 65535
    /// fragments kept 64 MiB of tables of fragments seen besides.
    #[test]
    fn bookkeeping_counts_against_the_cap() {
        assert!(std::mem::size_of::<(SocketAddr, Partial)>() + MAX_CHANNEL < PARTIAL_OVERHEAD);
        let mut d = b"LC03\0\0\0\x01".to_vec();
        for v in [16_384u32, 0] {
            d.extend_from_slice(&v.to_be_bytes());
        }
        d.extend_from_slice(&[0x40, 0, 0xff, 0xff]); // fragment 16384 of 65535, no data
        let mut r = Reassembler::new();
        let now = Instant::now();
        for port in 0..1100u16 {
            assert_eq!(r.push(src(port), &frag(&d), now), None);
            let held: usize = r.partials.values().map(|p| p.buf.len() + p.seen.len() * 8 + PARTIAL_OVERHEAD).sum();
            assert_eq!(held, r.buffered());
            assert!(r.buffered() <= MAX_BUFFERED);
        }
        assert_eq!(r.partials(), MAX_BUFFERED / partial_cost(16_384, 65_535));
    }

    /// Random and mutated datagrams never panic the parser or reassembler,
    /// and never grow the buffers past their bounds.
    #[test]
    fn hostile_datagrams_never_panic() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds = fragments(150_000, 3);
        let mut r = Reassembler::new();
        let t0 = Instant::now();
        for i in 0..5_000u64 {
            let mut d = seeds[(next() % 3) as usize].clone();
            d.truncate(FRAGMENT_HEADER + (next() % 64) as usize);
            for _ in 0..3 {
                let at = (next() % d.len() as u64) as usize;
                d[at] = next() as u8;
            }
            if let Ok(Datagram::Fragment(f)) = parse(&d) {
                let _ = r.push(src((next() % 50) as u16), &f, t0 + Duration::from_millis(i));
            }
            assert!(r.buffered() <= MAX_BUFFERED && r.partials() <= MAX_PARTIALS);
        }
    }
}
