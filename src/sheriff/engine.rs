//! The sheriff on the wire (docs/fleet.md §5.1, §5.5): subscribes to
//! info, orders and output, keeps the [`Fleet`] and a bounded ring of each
//! command's recent output, sends one `orders_t` per deputy every second
//! and at once after a change, and notices other sheriffs.
//!
//! Output is kept within limits: [`RING_BYTES`] per command the fleet
//! holds (and for each deputy's notices), [`MAX_OUTPUT_BYTES`] in all (the
//! rings written least recently are emptied first), and for commands the
//! fleet does not hold (output that came before their first report, or
//! spoofed) at most [`MAX_STRAYS`] rings of [`STRAY_RING_BYTES`], the
//! oldest dropped first.

use super::model::{Fleet, Key as CmdKey, MAX_DEPUTY_ID, Verb};
use crate::procman::auth::{self, AuthMode, Key, Signer, Verdict, Verifier};
use crate::procman::{DeputyInfo, Discovery, Lcm, Orders, Output, PM_DISCOVER, PM_INFO, PM_ORDERS, PM_OUTPUT, Url};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::io;
use std::time::{Duration, Instant};

/// Bytes of output kept per command.
pub const RING_BYTES: usize = 256 * 1024;
/// Bytes of output kept in all rings together.
pub const MAX_OUTPUT_BYTES: usize = 16 << 20;
/// Rings kept for commands the fleet does not hold.
pub const MAX_STRAYS: usize = 256;
/// Bytes kept in each of those.
pub const STRAY_RING_BYTES: usize = 4096;
/// The longest command id such a ring is kept for.
pub const MAX_STRAY_ID: usize = 255;

/// The recent output of one command, and how much was ever appended (so a
/// follower can ask for what came after a position).
#[derive(Default)]
pub struct Ring {
    /// The kept bytes, oldest first.
    pub data: VecDeque<u8>,
    /// Bytes ever appended.
    pub total: u64,
    /// When it was last written ([`Outputs`]' counter).
    seq: u64,
}

impl Ring {
    fn push(&mut self, text: &[u8], cap: usize) {
        self.total += text.len() as u64;
        let text = &text[text.len().saturating_sub(cap)..];
        let over = (self.data.len() + text.len()).saturating_sub(cap);
        self.data.drain(..over.min(self.data.len()));
        self.data.extend(text);
    }

    /// The last `n` lines (a final line without LF counts).
    pub fn tail_lines(&self, n: usize) -> Vec<u8> {
        let (a, b) = self.data.as_slices();
        let all: Vec<u8> = [a, b].concat();
        let body = all.strip_suffix(b"\n").unwrap_or(&all);
        let mut count = 0;
        let mut start = 0;
        for (i, &c) in body.iter().enumerate().rev() {
            if c == b'\n' {
                count += 1;
                if count == n {
                    start = i + 1;
                    break;
                }
            }
        }
        if n == 0 {
            return Vec::new();
        }
        all[start..].to_vec()
    }

    /// What was appended after position `from` (as much as is kept).
    pub fn since(&self, from: u64) -> Vec<u8> {
        let kept_from = self.total - self.data.len() as u64;
        let skip = from.saturating_sub(kept_from) as usize;
        self.data.iter().skip(skip).copied().collect()
    }
}

/// The output rings by (deputy, command id), within the limits above.
#[derive(Default)]
pub struct Outputs {
    rings: HashMap<CmdKey, Ring>,
    /// Rings holding data, by when they were last written.
    lru: BTreeMap<u64, CmdKey>,
    /// Rings made for commands not held, oldest first.
    strays: VecDeque<CmdKey>,
    seq: u64,
    bytes: usize,
    /// Output messages' entries dropped (a stray beyond the limits).
    pub dropped: u64,
    /// Rings emptied to stay within [`MAX_OUTPUT_BYTES`].
    pub evicted: u64,
}

impl Outputs {
    /// The ring of `key`.
    pub fn get(&self, key: &CmdKey) -> Option<&Ring> {
        self.rings.get(key)
    }

    /// Is there a ring for `key`?
    pub fn contains_key(&self, key: &CmdKey) -> bool {
        self.rings.contains_key(key)
    }

    /// Rings kept.
    pub fn len(&self) -> usize {
        self.rings.len()
    }

    /// True if no ring is kept.
    pub fn is_empty(&self) -> bool {
        self.rings.is_empty()
    }

    /// Bytes kept in all rings.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Take the bytes kept for `key` (its position stays).
    pub fn take(&mut self, key: &CmdKey) -> Vec<u8> {
        let Some(r) = self.rings.get_mut(key) else { return Vec::new() };
        self.bytes = self.bytes.saturating_sub(r.data.len());
        self.lru.remove(&r.seq);
        std::mem::take(&mut r.data).into()
    }

    /// Append `text` to `key`'s ring; `held` tells which keys belong to
    /// the fleet. False if it was dropped.
    fn push(&mut self, key: CmdKey, text: &[u8], held: &dyn Fn(&CmdKey) -> bool) -> bool {
        let is_held = held(&key);
        if !is_held && !self.rings.contains_key(&key) {
            if key.0.len() > MAX_DEPUTY_ID || key.1.len() > MAX_STRAY_ID {
                self.dropped += 1;
                return false;
            }
            while self.strays.len() >= MAX_STRAYS {
                if let Some(old) = self.strays.pop_front()
                    && !held(&old)
                {
                    self.forget(&old);
                }
            }
            self.strays.push_back(key.clone());
        }
        let cap = if is_held { RING_BYTES } else { STRAY_RING_BYTES };
        self.seq += 1;
        let r = self.rings.entry(key.clone()).or_default();
        let before = r.data.len();
        r.push(text, cap);
        self.bytes = (self.bytes + r.data.len()).saturating_sub(before);
        self.lru.remove(&r.seq);
        r.seq = self.seq;
        self.lru.insert(self.seq, key);
        // Empty the rings written longest ago (never the one just written:
        // one ring is far below the budget).
        while self.bytes > MAX_OUTPUT_BYTES {
            let Some((_, k)) = self.lru.pop_first() else { break };
            if let Some(r) = self.rings.get_mut(&k) {
                self.bytes = self.bytes.saturating_sub(r.data.len());
                r.data = VecDeque::new();
                self.evicted += 1;
            }
        }
        true
    }

    fn forget(&mut self, key: &CmdKey) {
        if let Some(r) = self.rings.remove(key) {
            self.bytes = self.bytes.saturating_sub(r.data.len());
            self.lru.remove(&r.seq);
        }
    }

    /// Drop the rings of commands no longer held (and not strays).
    fn prune(&mut self, held: &dyn Fn(&CmdKey) -> bool) {
        let strays: HashSet<&CmdKey> = self.strays.iter().collect();
        let gone: Vec<CmdKey> = self.rings.keys().filter(|k| !held(k) && !strays.contains(k)).cloned().collect();
        for k in &gone {
            self.forget(k);
        }
    }
}

/// Is `text`, a deputy's notice under command `id` ("" = the deputy's
/// own), its word that it will not act on orders about that command, or
/// on any order of sheriff `me`? The notice, trimmed, if so. These are the
/// bridge's notices of docs/fleet.md §4.1, §4.4 and §6.1.
pub fn refusal<'a>(text: &'a str, id: &str, me: &str) -> Option<&'a str> {
    let t = text.trim_end();
    if id.is_empty() {
        let about_me = t.contains(me) && (t.contains(" ignored") || t.contains(" refused"));
        (t.ends_with("is read-only; orders ignored") || about_me).then_some(t)
    } else {
        t.ends_with("orders about it are ignored").then_some(t)
    }
}

/// Settings of the engine.
pub struct Settings {
    /// LCM endpoint.
    pub url: Url,
    /// Send nothing; rebuild desired state from other sheriffs' orders.
    pub observer: bool,
    /// Turn observer when another sheriff's orders are seen.
    pub demote_on_conflict: bool,
    /// Message authentication.
    pub auth: AuthMode,
    /// Keys (the first signs).
    pub keys: Vec<Key>,
    /// Under `require`, unsigned info from these deputies is accepted.
    pub trust_unsigned: Vec<String>,
    /// Send no orders for this long after start: a sheriff that is already
    /// active sends its orders every second, so a new one sees them (and
    /// turns observer) before it disturbs anything.
    pub listen_first: Duration,
}

/// The sheriff's LCM side.
pub struct Engine {
    /// The fleet.
    pub fleet: Fleet,
    /// Recent output by (deputy, command id); "" = the deputy's notices.
    pub output: Outputs,
    /// `"<hostname>:<pid>:<utime at start>"`.
    pub id: String,
    /// Observing: nothing is sent.
    pub observer: bool,
    demote: bool,
    /// The endpoint.
    pub lcm: Lcm,
    auth: AuthMode,
    signer: Option<Signer>,
    verifier: Verifier,
    trust_unsigned: Vec<String>,
    dirty: BTreeSet<String>,
    next_orders: Instant,
    quiet_until: Instant,
    last_utime: i64,
    /// Messages for the log (warnings, conflicts), taken by the caller.
    pub notes: Vec<String>,
    /// Output received since the caller last looked, by key (for
    /// followers).
    pub fresh_output: HashSet<(String, String)>,
    next_prune: Instant,
}

impl Engine {
    /// Open the endpoint and subscribe; a non-observer announces itself
    /// with one `discovery_t` (nonce 0).
    pub fn new(s: Settings) -> io::Result<Engine> {
        let mut lcm = Lcm::new(&s.url)?;
        for ch in [PM_INFO, PM_ORDERS, PM_OUTPUT] {
            lcm.subscribe(ch)?;
        }
        let start = auth::now_us();
        let id = format!("{}:{}:{}", crate::sys::hostname(), std::process::id(), start);
        let signer = if s.auth.signs() { s.keys.first().cloned().map(Signer::new) } else { None };
        let verifier = Verifier::new(s.keys.iter().cloned()).map_err(|e| io::Error::other(e.to_string()))?;
        let mut e = Engine {
            fleet: Fleet::default(),
            output: Outputs::default(),
            id,
            observer: s.observer,
            demote: s.demote_on_conflict,
            lcm,
            auth: s.auth,
            signer,
            verifier,
            trust_unsigned: s.trust_unsigned,
            dirty: BTreeSet::new(),
            next_orders: Instant::now() + Duration::from_secs(1),
            quiet_until: Instant::now() + s.listen_first,
            last_utime: 0,
            notes: Vec::new(),
            fresh_output: HashSet::new(),
            next_prune: Instant::now(),
        };
        if !e.observer {
            let d = Discovery { utime: start, transmitter_id: e.id.clone(), nonce: 0 };
            if let Ok(b) = d.to_bytes() {
                e.publish(PM_DISCOVER, b);
            }
        }
        Ok(e)
    }

    fn publish(&mut self, channel: &str, mut data: Vec<u8>) {
        if let Some(s) = &mut self.signer {
            let t = s.sign(channel, &data);
            data.extend_from_slice(&t);
        }
        let _ = self.lcm.publish(channel, &data);
    }

    /// Still in the first moments after start, listening before acting
    /// (see [`Settings::listen_first`]); until when.
    pub fn listening(&self, now: Instant) -> Option<Instant> {
        (now < self.quiet_until).then_some(self.quiet_until)
    }

    /// Apply a verb to the commands `keys`; changed deputies get orders at
    /// the next [`Engine::tick`]. Returns how many changed.
    pub fn act(&mut self, keys: &[(String, String)], verb: Verb) -> usize {
        let mut n = 0;
        for k in keys {
            if self.fleet.act(k, verb) {
                n += 1;
                self.dirty.insert(k.0.clone());
            }
        }
        n
    }

    /// Mark a deputy's orders to be sent at once (after a config load).
    pub fn touch(&mut self, deputy: &str) {
        self.dirty.insert(deputy.to_string());
    }

    /// Receive everything waiting.
    pub fn poll_lcm(&mut self, now: Instant) {
        while let Some(r) = self.lcm.recv() {
            match r.channel.as_str() {
                PM_INFO => self.on_info(&r.data, now),
                PM_ORDERS => self.on_orders(&r.data),
                PM_OUTPUT => self.on_output(&r.data),
                _ => {}
            }
        }
    }

    fn on_info(&mut self, data: &[u8], now: Instant) {
        let Ok((info, v)) = self.verifier.check::<DeputyInfo>(PM_INFO, data) else { return };
        let trusted = self.trust_unsigned.iter().any(|t| t == &info.deputy_id) && v == Verdict::Unsigned;
        if !self.auth.admits(&v) && !trusted {
            return;
        }
        let first = self.fleet.deputies.get(&info.deputy_id).is_none_or(|d| d.heard.is_none());
        if self.fleet.on_info(&info, auth::now_us(), now, self.observer) && first && !self.observer {
            // A deputy heard for the first time gets its orders at once.
            self.dirty.insert(info.deputy_id.clone());
        }
    }

    fn on_orders(&mut self, data: &[u8]) {
        let Ok((o, v)) = self.verifier.check::<Orders>(PM_ORDERS, data) else { return };
        if o.sheriff_id == self.id || !self.auth.admits(&v) {
            return; // our own, looped back
        }
        if !self.observer {
            self.notes.push(format!("multiple sheriffs detected: orders from {}", o.sheriff_id));
            if !self.demote {
                return;
            }
            self.notes.push("turning observer (another sheriff is active)".into());
            self.observer = true;
        }
        self.fleet.on_foreign_orders(&o);
    }

    fn on_output(&mut self, data: &[u8]) {
        let Ok((o, v)) = self.verifier.check::<Output>(PM_OUTPUT, data) else { return };
        if !self.auth.admits(&v) && !self.trust_unsigned.iter().any(|t| t == &o.deputy_id) {
            return;
        }
        for (id, text) in o.command_ids.iter().zip(&o.text) {
            if let Some(why) = refusal(text, id, &self.id) {
                self.refused_notice(&o.deputy_id, id, why);
            }
            let fleet = &self.fleet;
            let held = |k: &CmdKey| fleet.cmds.contains_key(k) || (k.1.is_empty() && fleet.deputies.contains_key(&k.0));
            let key = (o.deputy_id.clone(), id.clone());
            if self.output.push(key.clone(), text.as_bytes(), &held) {
                self.fresh_output.insert(key);
            }
        }
    }

    /// A deputy said it will not act on orders about `id` ("" = on any
    /// order of this sheriff): the fleet takes note (`Fleet::refuse`) and
    /// that deputy's orders go out at once with the desired state reset.
    fn refused_notice(&mut self, deputy: &str, id: &str, why: &str) {
        if self.observer {
            return;
        }
        if id.is_empty() {
            self.fleet.refuse_deputy(deputy, why);
        } else if !self.fleet.refuse(&(deputy.to_string(), id.to_string()), why) {
            return;
        }
        self.dirty.insert(deputy.to_string());
    }

    /// The orders for `deputy` cannot be sent: why (a definition the wire
    /// cannot carry). A verb that changed its commands then fails.
    pub fn unsendable(&self, deputy: &str) -> Option<String> {
        let o = self.fleet.orders_for(deputy, &self.id, 0);
        o.to_bytes().err().map(|e| format!("the orders for deputy {deputy} cannot be sent: {e}"))
    }

    /// Send orders: to every deputy heard from each second, to changed
    /// ones at once. Returns when it is next due.
    pub fn tick(&mut self, now: Instant) -> Instant {
        if now >= self.next_prune {
            self.next_prune = now + Duration::from_secs(1);
            let fleet = &self.fleet;
            let held = |k: &CmdKey| fleet.cmds.contains_key(k) || (k.1.is_empty() && fleet.deputies.contains_key(&k.0));
            self.output.prune(&held);
        }
        if self.observer {
            self.dirty.clear();
            return now + Duration::from_secs(1);
        }
        if now < self.quiet_until {
            return self.quiet_until;
        }
        let all = now >= self.next_orders;
        let targets: Vec<String> = if all {
            self.next_orders = now + Duration::from_secs(1);
            self.fleet.heard_deputies()
        } else {
            let heard: BTreeSet<String> = self.fleet.heard_deputies().into_iter().collect();
            self.dirty.iter().filter(|d| heard.contains(*d)).cloned().collect()
        };
        for d in &targets {
            self.dirty.remove(d);
            // utime strictly increasing: deputies drop repeats (§4.4).
            let utime = auth::now_us().max(self.last_utime + 1);
            self.last_utime = utime;
            let o = self.fleet.orders_for(d, &self.id, utime);
            match o.to_bytes() {
                Ok(b) => self.publish(PM_ORDERS, b),
                Err(e) => self.notes.push(format!("orders for {d} not sent: {e}")),
            }
        }
        let _ = self.lcm.flush();
        if self.dirty.is_empty() { self.next_orders } else { now }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_tail() {
        let mut r = Ring::default();
        r.push(b"a\nb\nc\n", RING_BYTES);
        assert_eq!(r.tail_lines(2), b"b\nc\n");
        assert_eq!(r.tail_lines(5), b"a\nb\nc\n");
        assert_eq!(r.tail_lines(0), b"");
        r.push(b"partial", RING_BYTES);
        assert_eq!(r.tail_lines(1), b"partial");
        assert_eq!(r.since(4), b"c\npartial");
        let big = vec![b'x'; RING_BYTES];
        r.push(&big, RING_BYTES);
        assert_eq!(r.data.len(), RING_BYTES);
        assert_eq!(r.total, (6 + 7 + RING_BYTES) as u64);
        assert_eq!(r.since(0).len(), RING_BYTES, "what is no longer kept is skipped");
    }

    #[test]
    fn output_is_held_within_limits() {
        let mut o = Outputs::default();
        let held = |k: &CmdKey| k.1.starts_with("held");
        // strays: bounded in number and size, oldest dropped first
        for n in 0..MAX_STRAYS * 3 {
            assert!(o.push(("d".into(), format!("spoof{n}")), &[b'x'; 10_000], &held));
        }
        assert_eq!(o.len(), MAX_STRAYS);
        assert_eq!(o.bytes(), MAX_STRAYS * STRAY_RING_BYTES);
        assert!(o.contains_key(&("d".into(), format!("spoof{}", MAX_STRAYS * 3 - 1))));
        assert!(!o.push(("d".into(), "s".repeat(MAX_STRAY_ID + 1)), b"x", &held));
        assert_eq!(o.dropped, 1);
        // held commands: RING_BYTES each, MAX_OUTPUT_BYTES in all
        let chunk = vec![b'y'; RING_BYTES];
        for n in 0..(MAX_OUTPUT_BYTES / RING_BYTES) * 2 {
            o.push(("d".into(), format!("held{n}")), &chunk, &held);
        }
        assert!(o.bytes() <= MAX_OUTPUT_BYTES, "{}", o.bytes());
        assert!(o.evicted > 0);
        let last = ("d".to_string(), format!("held{}", (MAX_OUTPUT_BYTES / RING_BYTES) * 2 - 1));
        assert_eq!(o.get(&last).map(|r| r.data.len()), Some(RING_BYTES), "the newest ring is kept");
        // rings of commands no longer held go at the next prune
        o.prune(&|k: &CmdKey| k.1 == "held0");
        assert_eq!(o.len(), MAX_STRAYS + 1);
        assert_eq!(o.take(&("d".into(), "nothing".into())), b"");
    }

    #[test]
    fn refusals_are_recognised() {
        let me = "host:12:1700000000000000";
        let local = "keeper is not a procman command of this deputy; orders about it are ignored\n";
        assert_eq!(refusal(local, "keeper", me), Some(local.trim_end()));
        assert_eq!(refusal(local, "", me), None, "under the deputy's id it is not about one command");
        assert!(refusal("deputy d is read-only; orders ignored", "", me).is_some());
        assert!(refusal(&format!("unsigned orders from \"{me}\" ignored"), "", me).is_some());
        assert!(refusal("unsigned orders from \"other:1:1\" ignored", "", me).is_none(), "another sheriff's");
        assert!(refusal("Terminated", "x", me).is_none());
        assert!(refusal("ignoring stale orders (utime 61 seconds ago).", "x", me).is_none());
    }

    #[test]
    fn orders_that_cannot_be_sent_are_reported() {
        let mut e = Engine::new(Settings {
            url: Url::Tcpq { host: "127.0.0.1".into(), port: 9 },
            observer: false,
            demote_on_conflict: false,
            auth: AuthMode::Off,
            keys: vec![],
            trust_unsigned: vec![],
            listen_first: Duration::ZERO,
        })
        .unwrap();
        let cmd = |id: String| crate::procman::CmdT {
            command_id: id,
            exec_str: "x".into(),
            group: String::new(),
            auto_respawn: false,
            stop_signal: 15,
            stop_time_allowed: 1.0,
        };
        e.fleet.define("d", cmd("ok".into()));
        assert_eq!(e.unsendable("d"), None);
        e.fleet.define("d", cmd("i".repeat(70_000)));
        let why = e.unsendable("d").expect("a 70,000-byte id cannot go");
        assert!(why.starts_with("the orders for deputy d cannot be sent: "), "{why}");
    }
}
