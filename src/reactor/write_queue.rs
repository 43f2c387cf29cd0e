//! Outgoing bytes of one connection that the socket has not taken yet.

use crate::protocol::header::{FrameHeader, MAX_HEADER_LEN};
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

/// Size of one block of the queue.
const BLOCK: usize = 64 * 1024;
/// Most blocks handed to one `writev` (Linux allows 1024 iovecs; 64 blocks is 4 MiB,
/// more than a socket takes at once).
const MAX_IOV: usize = 64;

/// A queue of encoded frames waiting for the socket, in fixed 64 KiB blocks.
///
/// Frames are appended whole (header, then payload) into the last block, spilling into
/// new ones, and written with one vectored write over the blocks, so any number of
/// queued frames costs one syscall. Fixed blocks keep memory at the queued length
/// rounded up to a block: a growing queue never reallocates or copies what it holds
/// (a doubling buffer would briefly need three times the queue, and keep twice it).
/// An empty queue frees its blocks, so an idle connection holds no buffer.
#[derive(Debug, Default)]
pub struct WriteQueue {
    /// Each block has capacity `BLOCK`; all but the last are full.
    blocks: VecDeque<Vec<u8>>,
    /// Bytes of the front block already written.
    head: usize,
    /// Bytes waiting: the blocks' lengths minus `head`.
    len: usize,
    /// The last flush stopped at `WouldBlock` with bytes left: the socket's send
    /// buffer is full, and only a writable event (the peer acknowledged data) can
    /// make room. Writing before that would only fail again.
    blocked: bool,
}

impl WriteQueue {
    /// Appends one frame: its header, then its payload (already masked if it must be).
    pub fn push_frame(&mut self, header: &FrameHeader, payload: &[u8]) {
        let mut head = [0u8; MAX_HEADER_LEN];
        let len = header.encode(&mut head);
        self.push_bytes(&head[..len]);
        self.push_bytes(payload);
    }

    /// Appends raw bytes (an HTTP response during the handshake, or a frame's parts).
    pub fn push_bytes(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len();
        while !bytes.is_empty() {
            let block = match self.blocks.back_mut() {
                Some(block) if block.len() < BLOCK => block,
                _ => {
                    self.blocks.push_back(Vec::with_capacity(BLOCK));
                    match self.blocks.back_mut() {
                        Some(block) => block,
                        None => return, // just pushed: unreachable
                    }
                }
            };
            let n = (BLOCK - block.len()).min(bytes.len());
            block.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the socket refused the rest of the queue on the last flush and no
    /// writable event has come since (see [`WriteQueue::unblock`]).
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// A writable event came: the socket has room again.
    pub fn unblock(&mut self) {
        self.blocked = false;
    }

    /// Writes until the queue is empty or the socket would block. Returns the number of
    /// bytes written; `WouldBlock` is not an error here (the rest waits for the next
    /// writable event, see [`WriteQueue::is_blocked`]), any other error is.
    pub fn flush_until_blocked(&mut self, socket: &mut impl Write) -> io::Result<usize> {
        let mut written = 0;
        self.blocked = false;
        while self.len > 0 {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            for (slot, (i, block)) in iov.iter_mut().zip(self.blocks.iter().enumerate()) {
                let start = if i == 0 { self.head } else { 0 };
                *slot = IoSlice::new(block.get(start..).unwrap_or_default());
                count += 1;
            }
            match socket.write_vectored(&iov[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.consume(n);
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }

    /// Forgets the first `n` queued bytes (which the socket took), freeing every block
    /// that has been written out.
    fn consume(&mut self, mut n: usize) {
        self.len -= n.min(self.len);
        while n > 0 {
            let Some(front) = self.blocks.front() else {
                break;
            };
            let available = front.len() - self.head;
            if n < available {
                self.head += n;
                return;
            }
            n -= available;
            self.blocks.pop_front();
            self.head = 0;
        }
        if self.len == 0 {
            // A partly filled last block that was written out entirely goes too.
            self.blocks.clear();
            self.head = 0;
        }
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
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut total = 0;
            for buf in bufs {
                match self.write(buf) {
                    Ok(n) => total += n,
                    Err(e) if total == 0 => return Err(e),
                    Err(_) => break,
                }
                if total == 0 || self.budget == 0 {
                    break;
                }
            }
            Ok(total)
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
        assert!(queue.is_blocked());
        socket.budget = usize::MAX;
        assert_eq!(queue.flush_until_blocked(&mut socket).unwrap(), 204);
        assert!(queue.is_empty() && !queue.is_blocked());
        assert_eq!(&socket.taken[..4], &[0x82, 126, 1, 44]);
        assert_eq!(socket.taken.len(), 304);
    }

    #[test]
    fn bytes_spanning_many_blocks_come_out_in_order_and_free_their_blocks() {
        let mut queue = WriteQueue::default();
        let data: Vec<u8> = (0..(5 * BLOCK + 123)).map(|i| (i % 251) as u8).collect();
        for piece in data.chunks(10_000) {
            queue.push_bytes(piece);
        }
        assert_eq!(queue.len(), data.len());
        assert_eq!(queue.blocks.len(), 6, "full blocks, no reallocation");
        assert!(queue.blocks.iter().all(|b| b.capacity() == BLOCK));
        let mut socket = Trickle {
            taken: Vec::new(),
            per_write: 3 * BLOCK / 2,
            budget: 2 * BLOCK + 5,
        };
        queue.flush_until_blocked(&mut socket).unwrap();
        assert_eq!(queue.len(), data.len() - (2 * BLOCK + 5));
        assert_eq!(queue.blocks.len(), 4, "written blocks are freed");
        socket.budget = usize::MAX;
        queue.flush_until_blocked(&mut socket).unwrap();
        assert_eq!(socket.taken, data);
        assert!(queue.blocks.is_empty() && queue.is_empty());
    }
}
