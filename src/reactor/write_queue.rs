//! Outgoing bytes of one connection that the socket has not taken yet.

use crate::protocol::header::{FrameHeader, MAX_HEADER_LEN};
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

/// A byte ring of encoded frames waiting for the socket.
///
/// Frames are appended whole (header, then payload) and written with one vectored
/// write of the ring's two halves, so any number of queued frames costs one syscall.
/// An empty queue gives its memory back, so an idle connection holds no buffer.
#[derive(Debug, Default)]
pub struct WriteQueue {
    bytes: VecDeque<u8>,
}

impl WriteQueue {
    /// Appends one frame: its header, then its payload (already masked if it must be).
    pub fn push_frame(&mut self, header: &FrameHeader, payload: &[u8]) {
        let mut head = [0u8; MAX_HEADER_LEN];
        let len = header.encode(&mut head);
        self.bytes.extend(&head[..len]);
        self.bytes.extend(payload);
    }

    /// Appends raw bytes (an HTTP response during the handshake).
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        self.bytes.extend(bytes);
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Writes until the queue is empty or the socket would block. Returns the number of
    /// bytes written; `WouldBlock` is not an error here (the rest waits for the next
    /// writable event), any other error is.
    pub fn flush_until_blocked(&mut self, socket: &mut impl Write) -> io::Result<usize> {
        let mut written = 0;
        while !self.bytes.is_empty() {
            let (front, back) = self.bytes.as_slices();
            match socket.write_vectored(&[IoSlice::new(front), IoSlice::new(back)]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.bytes.drain(..n);
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.bytes.is_empty() {
            // Give the memory back: idle connections should cost (almost) nothing.
            self.bytes = VecDeque::new();
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::OpCode;

    /// A socket that takes at most `per_write` bytes per call, then blocks after `budget`.
    struct Trickle {
        taken: Vec<u8>,
        per_write: usize,
        budget: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.per_write).min(self.budget);
            self.taken.extend_from_slice(&buf[..n]);
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_the_rest_in_order() {
        let mut queue = WriteQueue::default();
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode: OpCode::Binary,
            mask: None,
            payload_len: 300,
        };
        queue.push_frame(&header, &[7; 300]);
        assert_eq!(queue.len(), 304);
        let mut socket = Trickle {
            taken: Vec::new(),
            per_write: 7,
            budget: 100,
        };
        assert_eq!(queue.flush_until_blocked(&mut socket).unwrap(), 100);
        assert_eq!(queue.len(), 204);
        socket.budget = usize::MAX;
        assert_eq!(queue.flush_until_blocked(&mut socket).unwrap(), 204);
        assert!(queue.is_empty());
        assert_eq!(&socket.taken[..4], &[0x82, 126, 1, 44]);
        assert_eq!(socket.taken.len(), 304);
    }
}
