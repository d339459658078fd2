//! tcpq frames (the LCM TCP hub protocol) from a hostile stream: a frame is
//! recognised only when all its bytes are there and not before, its
//! announced lengths are checked against the limits before any wait (so a
//! hostile length cannot make a reader buffer), and what parses encodes
//! back to the same bytes.

#![no_main]

use daemonproxy::procman::frame::{self, Frame, FrameError, MAX_FRAME_CHANNEL};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    let mut frames = 0;
    while !buf.is_empty() && frames < 64 {
        frames += 1;
        match frame::parse(buf) {
            Ok(None) => {
                // Waiting for more is allowed only within the limits: the
                // lengths read so far are below them.
                if buf.len() >= 8 {
                    let clen = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
                    assert!(clen <= MAX_FRAME_CHANNEL, "waits for a channel over the limit");
                }
                return;
            }
            Ok(Some((f, n))) => {
                assert!(n > 0 && n <= buf.len());
                let mut again = Vec::new();
                match f {
                    Frame::Publish { channel, data } => frame::publish(&mut again, channel, data),
                    Frame::Subscribe(p) => frame::subscription(&mut again, true, p),
                    Frame::Unsubscribe(p) => frame::subscription(&mut again, false, p),
                }
                assert_eq!(again, &buf[..n], "a frame does not encode back to its bytes");
                // Every shorter prefix is an incomplete frame, not an error.
                for cut in [0, n / 2, n - 1] {
                    assert_eq!(frame::parse(&buf[..cut]), Ok(None), "a cut frame at {cut} of {n}");
                }
                buf = &buf[n..];
            }
            Err(FrameError::Type(t)) => {
                assert!(!(1..=3).contains(&t));
                return;
            }
            Err(_) => return,
        }
    }
});
