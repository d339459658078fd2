//! PMA1 authentication trailers (docs/fleet.md §6.3): hostile bytes
//! never verify; a message signed by a holder of the key verifies once,
//! its replay is refused, and any change to a signed byte, the channel or
//! the sender's clock beyond the skew is refused too.

#![no_main]

use daemonproxy::procman::auth::{Key, MAX_SKEW_US, Signer, TRAILER_LEN, Verdict, Verifier};
use daemonproxy::procman::{DeputyInfo, Discovery, Orders, Output};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_700_000_000_000_000;

fn keys() -> (Key, Key) {
    (Key::from_bytes(&[0x11; 32]).unwrap(), Key::from_bytes(&[0x22; 40]).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else { return };
    let (a, b) = keys();
    let mut v = Verifier::new([a, b]).unwrap();
    let channels = ["PM_ORDERS", "PM_INFO", "PM_OUTPUT", "PM_DISCOVER"];
    let channel = channels[usize::from(ctl & 3)];
    // 1. Arbitrary bytes, every split point a message could end at.
    for len in [0, rest.len().saturating_sub(TRAILER_LEN), rest.len() / 2, rest.len()] {
        let verdict = v.verify_at(channel, rest, len, "s", NOW, NOW);
        assert!(!matches!(verdict, Verdict::Valid { .. }), "forged bytes verified");
    }
    // Decoders with trailers: never a panic, never a valid verdict.
    let _ = v.check::<Orders>(channel, rest).map(|(_, x)| assert!(!matches!(x, Verdict::Valid { .. })));
    let _ = v.check::<DeputyInfo>(channel, rest).map(|(_, x)| assert!(!matches!(x, Verdict::Valid { .. })));
    let _ = v.check::<Output>(channel, rest).map(|(_, x)| assert!(!matches!(x, Verdict::Valid { .. })));
    let _ = v.check::<Discovery>(channel, rest).map(|(_, x)| assert!(!matches!(x, Verdict::Valid { .. })));

    // 2. A genuine signature over the fuzz bytes as the message.
    let key = if ctl & 4 == 0 { keys().0 } else { keys().1 };
    let mut signer = Signer::new(key);
    let skew = i64::from(ctl >> 3) * 4_000_000 - 62_000_000; // -62 s .. +62 s
    let utime = NOW + skew;
    let mut signed = rest.to_vec();
    signed.extend_from_slice(&signer.sign_at(channel, rest, NOW));
    let fresh = skew.unsigned_abs() <= MAX_SKEW_US as u64;
    let first = v.verify_at(channel, &signed, rest.len(), "sender", utime, NOW);
    if fresh {
        assert!(matches!(first, Verdict::Valid { .. }), "a genuine signature was refused: {first:?}");
        let again = v.verify_at(channel, &signed, rest.len(), "sender", utime, NOW);
        assert!(matches!(again, Verdict::Replayed { .. }), "a replay was accepted: {again:?}");
    } else {
        assert!(matches!(first, Verdict::Stale { .. }), "a stale message was accepted: {first:?}");
    }
    // 3. Tampering: one byte of message or trailer, or another channel.
    if !signed.is_empty() {
        let mut t = signed.clone();
        let at = usize::from(ctl) * 131 % t.len();
        t[at] ^= 0x40;
        let mut w = Verifier::new([keys().0, keys().1]).unwrap();
        let x = w.verify_at(channel, &t, rest.len(), "sender", NOW, NOW);
        assert!(!matches!(x, Verdict::Valid { .. }), "a changed byte at {at} verified");
    }
    let other = channels[usize::from((ctl & 3) ^ 1)];
    let mut w = Verifier::new([keys().0, keys().1]).unwrap();
    let x = w.verify_at(other, &signed, rest.len(), "sender", NOW, NOW);
    assert!(!matches!(x, Verdict::Valid { .. }), "verified on another channel");
});
