//! A byte queue for a non-blocking stream socket: bytes are appended
//! whole (frames), written as far as the socket takes, and compacted
//! lazily. Shared by the tcpq client and the hub.

use std::io::{self, Write};

/// Consumed bytes beyond which the queue is compacted (if over half of it).
const COMPACT: usize = 64 * 1024;
/// Capacity an emptied queue keeps: a burst (up to a hub's 16 MiB per
/// client) is not held for the rest of the process's life.
const KEEP: usize = 256 * 1024;

/// Bytes waiting to be written.
#[derive(Debug, Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    head: usize,
}

impl OutBuf {
    /// A queue holding `bytes`.
    pub fn with(bytes: &[u8]) -> OutBuf {
        OutBuf { buf: bytes.to_vec(), head: 0 }
    }

    /// Bytes not yet written.
    pub fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    /// True when everything has been written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer to append whole frames to.
    pub fn tail(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Writes to `w` until done or it would block; other errors are returned.
    pub fn flush_to(&mut self, w: &mut impl Write) -> io::Result<()> {
        while self.head < self.buf.len() {
            match w.write(&self.buf[self.head..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.head += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.head == self.buf.len() {
            self.buf.clear();
            self.buf.shrink_to(KEEP);
            self.head = 0;
        } else if self.head > COMPACT && self.head * 2 > self.buf.len() {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `room` bytes per call, then blocks.
    struct Slow {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Slow {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_resume_in_order() {
        let mut q = OutBuf::with(b"hello ");
        q.tail().extend_from_slice(b"world");
        let mut w = Slow { got: Vec::new(), room: 4 };
        q.flush_to(&mut w).unwrap();
        assert_eq!((q.len(), w.got.as_slice()), (7, b"hell".as_slice()));
        w.room = 100;
        q.flush_to(&mut w).unwrap();
        assert!(q.is_empty());
        assert_eq!(w.got, b"hello world");
    }

    #[test]
    fn compacts_after_large_progress() {
        let mut q = OutBuf::with(&vec![1; 3 * COMPACT]);
        let mut w = Slow { got: Vec::new(), room: 2 * COMPACT };
        q.flush_to(&mut w).unwrap();
        assert_eq!((q.head, q.len()), (0, COMPACT));
    }
}
