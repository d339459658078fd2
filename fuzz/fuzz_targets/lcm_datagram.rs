//! UDP multicast datagrams (LC02 short messages, LC03 fragments) and their
//! reassembly, from hostile senders (docs/fleet.md §6.4): arbitrary
//! datagrams from a few sources interleaved with a real fragmented message,
//! delivered out of order and with time passing. The buffers stay within
//! their caps, whatever completes is consistent with its header, and the
//! real message still arrives whole once all of its fragments are in.

#![no_main]

use daemonproxy::procman::datagram::{self, Datagram, MAX_BUFFERED, MAX_PARTIALS, Reassembler};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A payload and the datagrams that carry it.
type Sent = (Vec<u8>, Vec<Vec<u8>>);

/// Four genuine messages of 2 to 5 fragments, built once.
fn genuine() -> &'static [Sent] {
    static G: OnceLock<Vec<Sent>> = OnceLock::new();
    G.get_or_init(|| {
        (0..4u32)
            .map(|k| {
                let payload: Vec<u8> = (0..65_500 + k * 70_000).map(|i| (i * 7 + 3) as u8).collect();
                let mut frags = Vec::new();
                let mut scratch = Vec::new();
                datagram::encode::<datagram::DatagramError>("PM_INFO", &payload, 42, &mut scratch, |d| {
                    frags.push(d.to_vec());
                    Ok(())
                })
                .expect("encode");
                assert!(frags.len() >= 2);
                (payload, frags)
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, mut rest)) = data.split_first() else { return };
    let sources: Vec<SocketAddr> = (0..4).map(|k| SocketAddr::from(([10, 0, 0, k], 7667))).collect();
    let mut r = Reassembler::new();
    let mut now = Instant::now();
    // A genuine message, from its own source, that the noise must not spoil.
    let (payload, genuine) = &genuine()[usize::from(head % 4)];
    let real = SocketAddr::from(([10, 0, 1, 1], 7667));
    let mut delivered = 0;
    let mut completed = false;
    // No gap between genuine fragments longer than the reassembly timeout.
    let (mut last, mut in_time) = (None::<Instant>, true);
    // Each record: a control byte (source, time step, whether a genuine
    // fragment goes first), a u16 length, the datagram.
    while let [ctl, a, b, tail @ ..] = rest {
        let n = (usize::from(*a) << 8 | usize::from(*b)).min(tail.len());
        let (d, next) = tail.split_at(n);
        rest = next;
        now += Duration::from_millis(u64::from(ctl >> 4) * 20);
        if ctl & 8 != 0 && delivered < genuine.len() {
            // The genuine fragments in reverse order: the last completes it.
            let g = &genuine[genuine.len() - 1 - delivered];
            delivered += 1;
            in_time &= last.is_none_or(|t| now.duration_since(t) <= datagram::FRAGMENT_TIMEOUT);
            last = Some(now);
            if let Ok(Datagram::Fragment(f)) = datagram::parse(g)
                && let Some((ch, p)) = r.push(real, &f, now)
            {
                assert_eq!(ch, "PM_INFO");
                assert!(p == *payload, "the genuine message came out changed");
                completed = true;
            }
        }
        match datagram::parse(d) {
            Ok(Datagram::Short { channel, .. }) => assert!(!channel.is_empty() && channel.len() <= 63),
            Ok(Datagram::Fragment(f)) => {
                assert!(f.number < f.count);
                assert!(f.offset as usize + f.data.len() <= f.payload_size as usize);
                if let Some((ch, p)) = r.push(sources[usize::from(ctl & 3)], &f, now) {
                    assert_eq!(p.len(), f.payload_size as usize, "completed payload of the wrong size");
                    assert!(!ch.is_empty());
                }
            }
            Err(_) => {}
        }
        assert!(r.buffered() <= MAX_BUFFERED && r.partials() <= MAX_PARTIALS);
        if ctl & 0xf0 == 0xf0 {
            r.expire(now);
        }
    }
    // Noise from other sources cannot evict or spoil it: delivered whole
    // and in time, the genuine message completed.
    if delivered == genuine.len() && in_time {
        assert!(completed, "the genuine message was lost among the noise");
    }
});
