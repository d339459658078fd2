//! The tcpq wire forms of docs/fleet.md §2.3, without sockets: the handshake words
//! and the PUBLISH / SUBSCRIBE / UNSUBSCRIBE frames (all integers u32
//! big-endian), shared by the client ([`super::tcpq`]) and the hub
//! ([`super::hub`]).

use std::fmt;

use super::datagram::MAX_PAYLOAD;

/// The client's handshake magic.
pub const CLIENT_MAGIC: u32 = 0x2876_17fb;
/// The hub's handshake magic.
pub const SERVER_MAGIC: u32 = 0x2876_17fa;
/// The protocol version both sides send.
pub const VERSION: u32 = 0x0000_0100;
/// Frame type: a message.
pub const PUBLISH: u32 = 1;
/// Frame type: subscribe to a channel regex.
pub const SUBSCRIBE: u32 = 2;
/// Frame type: drop a subscription (by its exact regex string).
pub const UNSUBSCRIBE: u32 = 3;
/// The longest channel or pattern accepted in a frame.
pub const MAX_FRAME_CHANNEL: usize = 1024;

/// The 8-byte greeting of a client (`server == false`) or hub.
pub fn handshake(server: bool) -> [u8; 8] {
    let magic = if server { SERVER_MAGIC } else { CLIENT_MAGIC };
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&magic.to_be_bytes());
    h[4..].copy_from_slice(&VERSION.to_be_bytes());
    h
}

/// A parsed frame, borrowing from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A message on a channel.
    Publish {
        /// The channel.
        channel: &'a str,
        /// The payload.
        data: &'a [u8],
    },
    /// A subscription to a channel regex.
    Subscribe(&'a str),
    /// The end of a subscription.
    Unsubscribe(&'a str),
}

/// Why the byte stream is not a tcpq stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The greeting has the wrong magic or version.
    Handshake,
    /// An unknown frame type.
    Type(u32),
    /// A channel longer than [`MAX_FRAME_CHANNEL`] or not UTF-8.
    Channel,
    /// A payload larger than [`MAX_PAYLOAD`].
    TooLarge,
    /// A hub sent a frame other than PUBLISH.
    NotPublish,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Handshake => f.write_str("bad tcpq handshake"),
            FrameError::Type(t) => write!(f, "unknown tcpq frame type {t}"),
            FrameError::Channel => f.write_str("bad tcpq channel"),
            FrameError::TooLarge => f.write_str("tcpq message larger than 1 MiB"),
            FrameError::NotPublish => f.write_str("tcpq hub sent a frame other than PUBLISH"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Checks a greeting from the other side.
pub fn check_handshake(got: &[u8; 8], from_server: bool) -> Result<(), FrameError> {
    if *got == handshake(from_server) { Ok(()) } else { Err(FrameError::Handshake) }
}

/// Appends a PUBLISH frame.
pub fn publish(out: &mut Vec<u8>, channel: &str, data: &[u8]) {
    out.extend_from_slice(&PUBLISH.to_be_bytes());
    out.extend_from_slice(&(channel.len() as u32).to_be_bytes());
    out.extend_from_slice(channel.as_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// Appends a SUBSCRIBE (`subscribe == true`) or UNSUBSCRIBE frame.
pub fn subscription(out: &mut Vec<u8>, subscribe: bool, pattern: &str) {
    let kind = if subscribe { SUBSCRIBE } else { UNSUBSCRIBE };
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(pattern.len() as u32).to_be_bytes());
    out.extend_from_slice(pattern.as_bytes());
}

fn be32(buf: &[u8], at: usize) -> Option<u32> {
    buf.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Parses the first frame in `buf`: `Ok(None)` if more bytes are needed,
/// else the frame and its length. Limits are checked before waiting for the
/// bytes they announce, so a hostile length cannot make the caller buffer.
pub fn parse(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let (Some(kind), Some(clen)) = (be32(buf, 0), be32(buf, 4)) else {
        return Ok(None);
    };
    if !(PUBLISH..=UNSUBSCRIBE).contains(&kind) {
        return Err(FrameError::Type(kind));
    }
    let clen = clen as usize;
    if clen > MAX_FRAME_CHANNEL {
        return Err(FrameError::Channel);
    }
    let Some(cbytes) = buf.get(8..8 + clen) else {
        return Ok(None);
    };
    let channel = std::str::from_utf8(cbytes).map_err(|_| FrameError::Channel)?;
    let at = 8 + clen;
    match kind {
        SUBSCRIBE => Ok(Some((Frame::Subscribe(channel), at))),
        UNSUBSCRIBE => Ok(Some((Frame::Unsubscribe(channel), at))),
        _ => {
            let Some(dlen) = be32(buf, at) else { return Ok(None) };
            let dlen = dlen as usize;
            if dlen > MAX_PAYLOAD {
                return Err(FrameError::TooLarge);
            }
            let end = at + 4 + dlen;
            Ok(buf.get(at + 4..end).map(|data| (Frame::Publish { channel, data }, end)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes() {
        assert_eq!(handshake(false), [0x28, 0x76, 0x17, 0xfb, 0, 0, 1, 0]);
        assert_eq!(handshake(true), [0x28, 0x76, 0x17, 0xfa, 0, 0, 1, 0]);
        assert_eq!(check_handshake(&handshake(true), true), Ok(()));
        assert_eq!(check_handshake(&handshake(false), true), Err(FrameError::Handshake));
    }

    #[test]
    fn frames_round_trip_and_wait_for_bytes() {
        let mut buf = Vec::new();
        publish(&mut buf, "PM_INFO", b"xyz");
        subscription(&mut buf, true, "PM_.*");
        subscription(&mut buf, false, "PM_.*");
        assert_eq!(buf[..8], [0, 0, 0, 1, 0, 0, 0, 7]);
        let p = 8 + 7 + 4 + 3;
        for cut in 0..p {
            assert_eq!(parse(&buf[..cut]), Ok(None), "{cut}");
        }
        assert_eq!(parse(&buf), Ok(Some((Frame::Publish { channel: "PM_INFO", data: b"xyz" }, p))));
        assert_eq!(parse(&buf[p..]), Ok(Some((Frame::Subscribe("PM_.*"), 13))));
        assert_eq!(parse(&buf[p + 13..]), Ok(Some((Frame::Unsubscribe("PM_.*"), 13))));
    }

    #[test]
    fn hostile_frames() {
        assert_eq!(parse(&[0, 0, 0, 4, 0, 0, 0, 0]), Err(FrameError::Type(4)));
        assert_eq!(parse(&[0, 0, 0, 2, 0, 0, 4, 1]), Err(FrameError::Channel));
        assert_eq!(parse(&[0, 0, 0, 2, 0, 0, 0, 1, 0xff]), Err(FrameError::Channel));
        assert_eq!(parse(&[0, 0, 0, 1, 0, 0, 0, 1, b'c', 0, 0x10, 0, 1]), Err(FrameError::TooLarge));
    }
}
