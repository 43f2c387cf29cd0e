//! Outgoing bytes of one connection that the socket has not taken yet.

use crate::protocol::header::{FrameHeader, MAX_HEADER_LEN};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

/// Size of one block of the queue.
const BLOCK: usize = 64 * 1024;
/// Most blocks handed to one `writev` (Linux allows 1024 iovecs; 64 blocks is 4 MiB,
/// more than a socket takes at once).
const MAX_IOV: usize = 64;
/// Smallest data part that [`Connection::send_data`](super::connection::Connection::send_data)
/// writes straight from the caller's slice (with [`WriteQueue::write_frames`]). Below
/// it frames are copied into the queue even when it is empty: small frames (an echo
/// batch of 16 × 32 B) must keep being gathered into one `writev` per read, where a
/// syscall per frame would cost far more than the copy. From a few KiB up the copy
/// (and the blocks it allocates) is the larger cost, and such a part is worth a
/// syscall of its own.
pub const DIRECT_WRITE_MIN: usize = 4 * 1024;

/// Free blocks a worker keeps for reuse (1 MiB): every queue of the worker takes its
/// blocks from them first and gives written blocks back, up to this many. Without
/// them, each batch of small echoes cost a `malloc` and a `free` of 64 KiB, and a
/// streaming echo whose socket filled freed blocks that glibc handed back to the
/// kernel and faulted in again (3 % of the server's time at 1 MiB messages).
const FREE_BLOCKS: usize = 16;

thread_local! {
    /// This worker's free blocks (each worker is one thread), all empty, capacity `BLOCK`.
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty block: a free one if the worker has one, else a new allocation.
fn take_block() -> Vec<u8> {
    FREE.with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| Vec::with_capacity(BLOCK))
}

/// Gives a written block back to the worker's free blocks, or frees it if they are full.
fn recycle_block(mut block: Vec<u8>) {
    if block.capacity() != BLOCK {
        return;
    }
    block.clear();
    FREE.with_borrow_mut(|free| {
        if free.len() < FREE_BLOCKS {
            free.push(block);
        }
    });
}

/// Most frames in one [`FrameBatch`]: a 256 KiB read cut into 64 KiB frames makes 5.
const GATHER: usize = 16;

/// Frames of one data part to be written together: headers encoded here, payloads
/// borrowed (from the reactor's read buffer). Writing all the frames of a read in one
/// `writev` rather than one call per frame is what makes a larger read pay off: on
/// loopback each write is a trip through TCP and the receiver's wake-up, whatever
/// its size.
pub(crate) struct FrameBatch<'d> {
    heads: [[u8; MAX_HEADER_LEN]; GATHER],
    head_lens: [u8; GATHER],
    payloads: [&'d [u8]; GATHER],
    len: usize,
}

impl Default for FrameBatch<'_> {
    /// An empty batch.
    fn default() -> Self {
        FrameBatch {
            heads: [[0; MAX_HEADER_LEN]; GATHER],
            head_lens: [0; GATHER],
            payloads: [&[]; GATHER],
            len: 0,
        }
    }
}

impl<'d> FrameBatch<'d> {
    /// Adds a frame; true when the batch is full and must be written (or cleared)
    /// before the next push. The caller empties a full batch before pushing again; a
    /// frame pushed onto a full batch anyway is not stored (and a debug build stops).
    #[must_use]
    pub fn push(&mut self, header: &FrameHeader, payload: &'d [u8]) -> bool {
        let i = self.len;
        let (Some(head), Some(head_len), Some(slot)) = (
            self.heads.get_mut(i),
            self.head_lens.get_mut(i),
            self.payloads.get_mut(i),
        ) else {
            debug_assert!(false, "a frame pushed onto a full batch");
            return true;
        };
        // A header is at most MAX_HEADER_LEN (14) bytes.
        *head_len = header.encode(head) as u8;
        *slot = payload;
        self.len += 1;
        self.len == GATHER
    }

    /// Whether no frame is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops the frames waiting (after a write error, nothing more is sent).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The frames as they go on the wire: header, payload, header, payload, ...
    fn parts(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len).flat_map(move |i| {
            [
                &self.heads[i][..usize::from(self.head_lens[i])],
                self.payloads[i],
            ]
        })
    }
}

/// A queue of encoded frames waiting for the socket, in fixed 64 KiB blocks.
///
/// Frames are appended whole (header, then payload) into the last block, spilling into
/// new ones, and written with one vectored write over the blocks, so any number of
/// queued frames costs one syscall. Fixed blocks keep memory at the queued length
/// rounded up to a block: a growing queue never reallocates or copies what it holds
/// (a doubling buffer would briefly need three times the queue, and keep twice it).
/// An empty queue frees its blocks, so an idle connection holds no buffer.
///
/// The front block is a field of its own and only the blocks behind it go into a
/// `VecDeque`, which is boxed: a queue that never held more than one block (a 101
/// response, an echo of less than 64 KiB) allocates nothing but that block, and the
/// deque, once used, is freed again as soon as the queue is down to one block. An
/// empty queue thus holds no heap memory at all, and the struct is 48 bytes.
#[derive(Debug, Default)]
pub struct WriteQueue {
    /// The block written from; empty and unallocated while the queue is empty. Every
    /// block has capacity `BLOCK`; all but the last one are full.
    front: Vec<u8>,
    /// The blocks after `front`, if there are any. Boxed on purpose: 8 bytes in every
    /// connection instead of a 32-byte `VecDeque`, for a deque that only queues of
    /// more than 64 KiB use.
    #[allow(clippy::box_collection)]
    more: Option<Box<VecDeque<Vec<u8>>>>,
    /// Bytes waiting: the blocks' lengths minus `head`.
    len: usize,
    /// Bytes of `front` already written (below `BLOCK`, so 32 bits are enough).
    head: u32,
    /// The last flush stopped at `WouldBlock` with bytes left: the socket's send
    /// buffer is full, and only a writable event (the peer acknowledged data) can
    /// make room. Writing before that would only fail again.
    blocked: bool,
}

impl WriteQueue {
    /// Appends one frame: its header, then its payload (already masked if it must be).
    /// A frame that fits in the last block (every small echo) is copied there in one
    /// go; a larger one is spread over blocks by `push_bytes`.
    pub fn push_frame(&mut self, header: &FrameHeader, payload: &[u8]) {
        let mut head = [0u8; MAX_HEADER_LEN];
        let head_len = header.encode(&mut head);
        let head = &head[..head_len];
        let block = self.last_with_room();
        if BLOCK - block.len() >= head.len() + payload.len() {
            block.extend_from_slice(head);
            block.extend_from_slice(payload);
            self.len += head.len() + payload.len();
        } else {
            self.push_bytes(head);
            self.push_bytes(payload);
        }
    }

    /// Sends the frames of `batch` and empties it (also on an error). While nothing is
    /// queued and the socket is not known to be full, they are written straight from
    /// their payload slices, all in one vectored write, repeated while the socket takes
    /// bytes; what it does not take is queued and the queue is marked blocked, as
    /// [`WriteQueue::flush_until_blocked`] would leave it. Otherwise they are queued
    /// whole, behind what is there (frames leave in order).
    ///
    /// Returns the bytes written now. Errors are those of `flush_until_blocked`
    /// (`WouldBlock` is not one); after an error the batch's rest is not queued, and
    /// the caller must drop the connection.
    #[inline(never)]
    pub fn write_frames(
        &mut self,
        socket: &mut impl Write,
        batch: &mut FrameBatch<'_>,
    ) -> io::Result<usize> {
        let result = self.write_parts(socket, batch);
        batch.clear();
        result
    }

    /// [`WriteQueue::write_frames`] but for emptying the batch.
    fn write_parts(
        &mut self,
        socket: &mut impl Write,
        batch: &FrameBatch<'_>,
    ) -> io::Result<usize> {
        if self.len > 0 || self.blocked {
            for part in batch.parts() {
                self.push_bytes(part);
            }
            return Ok(0);
        }
        let mut iov = [IoSlice::new(&[]); 2 * GATHER];
        let mut count = 0;
        for (slot, part) in iov.iter_mut().zip(batch.parts()) {
            *slot = IoSlice::new(part);
            count += 1;
        }
        let mut rest = &mut iov[..count];
        let mut written = 0;
        while !rest.is_empty() {
            match socket.write_vectored(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    // The socket took `n` of the bytes offered, so `n` is in bounds.
                    IoSlice::advance_slices(&mut rest, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    for part in rest.iter() {
                        self.push_bytes(part);
                    }
                    self.blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }

    /// Appends raw bytes (an HTTP response during the handshake, or a frame's parts).
    pub fn push_bytes(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len();
        while !bytes.is_empty() {
            let block = self.last_with_room();
            let n = (BLOCK - block.len()).min(bytes.len());
            block.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
    }

    /// The last block, or a new one behind it if it is full.
    fn last_with_room(&mut self) -> &mut Vec<u8> {
        if self.front.capacity() == 0 {
            // Empty queue: the first block becomes the front.
            self.front = take_block();
            return &mut self.front;
        }
        if self.more.is_none() && self.front.len() < BLOCK {
            return &mut self.front;
        }
        let more = self.more.get_or_insert_with(Box::default);
        if more.back().is_none_or(|block| block.len() >= BLOCK) {
            more.push_back(take_block());
        }
        match more.back_mut() {
            Some(block) => block,
            None => &mut self.front, // just pushed: unreachable
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
            iov[0] = IoSlice::new(self.front.get(self.head as usize..).unwrap_or_default());
            let mut count = 1;
            if let Some(more) = &self.more {
                for (slot, block) in iov[1..].iter_mut().zip(more.iter()) {
                    *slot = IoSlice::new(block);
                    count += 1;
                }
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
        while n > 0 && self.front.capacity() > 0 {
            let available = self.front.len() - self.head as usize;
            if n < available {
                // Below `BLOCK`: the cast is lossless.
                self.head += n as u32;
                return;
            }
            n -= available;
            self.head = 0;
            let next = self.more.as_mut().and_then(|more| more.pop_front());
            recycle_block(std::mem::replace(&mut self.front, next.unwrap_or_default()));
            if self.more.as_ref().is_some_and(|more| more.is_empty()) {
                self.more = None;
            }
        }
        if self.len == 0 {
            // A partly filled last block that was written out entirely goes too.
            recycle_block(std::mem::take(&mut self.front));
            self.more = None;
            self.head = 0;
        }
    }

    /// The blocks the queue holds, front first.
    #[cfg(test)]
    fn blocks(&self) -> impl Iterator<Item = &Vec<u8>> {
        let front = (self.front.capacity() > 0).then_some(&self.front);
        front
            .into_iter()
            .chain(self.more.iter().flat_map(|m| m.iter()))
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
        /// Vectored writes that took bytes.
        calls: usize,
    }

    impl Trickle {
        fn new(per_write: usize, budget: usize) -> Self {
            Trickle {
                taken: Vec::new(),
                per_write,
                budget,
                calls: 0,
            }
        }
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
                let n = match self.write(buf) {
                    Ok(n) => n,
                    Err(e) if total == 0 => return Err(e),
                    Err(_) => break,
                };
                total += n;
                // A short write ends the call, as in a real socket.
                if n < buf.len() || self.budget == 0 {
                    break;
                }
            }
            self.calls += 1;
            Ok(total)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn binary(len: usize) -> FrameHeader {
        FrameHeader {
            fin: true,
            rsv: 0,
            opcode: OpCode::Binary,
            mask: None,
            payload_len: len as u64,
        }
    }

    /// The frame `push_frame` would queue: header then payload.
    fn encoded(header: &FrameHeader, payload: &[u8]) -> Vec<u8> {
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        [&head[..n], payload].concat()
    }

    /// Sends `frames` with one `write_frames` into `queue` and `socket`.
    fn send(
        queue: &mut WriteQueue,
        socket: &mut impl Write,
        frames: &[&[u8]],
    ) -> io::Result<usize> {
        let headers: Vec<FrameHeader> = frames.iter().map(|p| binary(p.len())).collect();
        let mut batch = FrameBatch::default();
        for (header, payload) in headers.iter().zip(frames) {
            assert!(!batch.push(header, payload));
        }
        let result = queue.write_frames(socket, &mut batch);
        assert!(batch.is_empty(), "write_frames empties the batch");
        result
    }

    /// Writes a `len`-byte frame directly into a socket that takes `per_write` bytes a
    /// call and `budget` in all; returns the queue, the socket and what was written.
    fn direct(len: usize, per_write: usize, budget: usize) -> (WriteQueue, Trickle, usize) {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut queue = WriteQueue::default();
        let mut socket = Trickle::new(per_write, budget);
        let written = send(&mut queue, &mut socket, &[&payload]).unwrap();
        (queue, socket, written)
    }

    /// Drains `queue` into `socket` and checks the socket got exactly the frame.
    fn drain_and_check(mut queue: WriteQueue, mut socket: Trickle, len: usize) {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        socket.budget = usize::MAX;
        queue.unblock();
        queue.flush_until_blocked(&mut socket).unwrap();
        assert!(queue.is_empty());
        assert_eq!(socket.taken, encoded(&binary(len), &payload));
    }

    #[test]
    fn a_large_frame_is_written_without_queueing_when_the_socket_takes_it() {
        let len = 100_000;
        // Several partial writes in a row, until all of it (14-byte header) is taken.
        let (queue, socket, written) = direct(len, 30_000, len + 10);
        assert_eq!(written, len + 10);
        assert!(queue.is_empty() && !queue.is_blocked());
        drain_and_check(queue, socket, len);
        // Exactly the frame: nothing queued, not blocked, no block allocated.
        let (queue, socket, written) = direct(len, usize::MAX, usize::MAX);
        assert_eq!(written, len + 10);
        assert!(queue.is_empty() && !queue.is_blocked());
        assert!(queue.front.capacity() == 0 && queue.more.is_none());
        drain_and_check(queue, socket, len);
    }

    #[test]
    fn would_block_mid_header_queues_the_rest_of_the_header_and_the_payload() {
        let len = 70_000; // 10-byte header
        let (queue, socket, written) = direct(len, usize::MAX, 3);
        assert_eq!(written, 3);
        assert_eq!(queue.len(), len + 10 - 3);
        assert!(queue.is_blocked());
        drain_and_check(queue, socket, len);
        // Nothing taken at all: the whole frame is queued.
        let (queue, socket, written) = direct(len, usize::MAX, 0);
        assert_eq!((written, queue.len()), (0, len + 10));
        assert!(queue.is_blocked());
        drain_and_check(queue, socket, len);
    }

    #[test]
    fn would_block_mid_payload_queues_only_the_rest_of_the_payload() {
        let len = 5_000; // 4-byte header
        let (queue, socket, written) = direct(len, 1_000, 2_500);
        assert_eq!(written, 2_500);
        assert_eq!(queue.len(), len + 4 - 2_500);
        assert!(queue.is_blocked());
        drain_and_check(queue, socket, len);
        // Exactly the header taken.
        let (queue, socket, written) = direct(len, usize::MAX, 4);
        assert_eq!((written, queue.len()), (4, len));
        drain_and_check(queue, socket, len);
    }

    #[test]
    fn the_frames_of_a_batch_go_out_in_one_write_and_a_block_queues_the_rest_in_order() {
        let parts: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 3_000 + usize::from(i)]).collect();
        let frames: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let expected: Vec<u8> = frames
            .iter()
            .flat_map(|p| encoded(&binary(p.len()), p))
            .collect();
        // A socket that takes everything: one call for all five frames.
        let mut socket = Trickle::new(usize::MAX, usize::MAX);
        let mut queue = WriteQueue::default();
        assert_eq!(
            send(&mut queue, &mut socket, &frames).unwrap(),
            expected.len()
        );
        assert_eq!(socket.taken, expected);
        assert_eq!(socket.calls, 1);
        assert!(queue.is_empty() && queue.front.capacity() == 0);
        // Blocked in the middle of the third payload, then in a header: the rest is
        // queued, and drained after it comes out exactly as the frames.
        for budget in [2 * 3_004 + 1_000, 3_004 + 2] {
            let mut socket = Trickle::new(2_500, budget);
            let mut queue = WriteQueue::default();
            assert_eq!(send(&mut queue, &mut socket, &frames).unwrap(), budget);
            assert!(queue.is_blocked());
            assert_eq!(queue.len(), expected.len() - budget);
            socket.budget = usize::MAX;
            queue.unblock();
            queue.flush_until_blocked(&mut socket).unwrap();
            assert_eq!(socket.taken, expected);
        }
    }

    #[test]
    fn queued_bytes_and_a_full_socket_keep_the_copy() {
        let mut socket = Trickle::new(usize::MAX, usize::MAX);
        let mut queue = WriteQueue::default();
        let small = [1; 100];
        queue.push_frame(&binary(small.len()), &small);
        // Something is queued: the batch goes behind it, not before.
        let large = [2; 2 * DIRECT_WRITE_MIN];
        assert_eq!(send(&mut queue, &mut socket, &[&large]).unwrap(), 0);
        assert!(socket.taken.is_empty());
        queue.flush_until_blocked(&mut socket).unwrap();
        let expected = [
            encoded(&binary(small.len()), &small),
            encoded(&binary(large.len()), &large),
        ]
        .concat();
        assert_eq!(socket.taken, expected);
        // Blocked (and empty, as after a writable event was not yet seen): queue it.
        let mut queue = WriteQueue {
            blocked: true,
            ..WriteQueue::default()
        };
        assert_eq!(send(&mut queue, &mut socket, &[&large]).unwrap(), 0);
        assert_eq!(queue.len(), large.len() + 4);
    }

    #[test]
    fn a_socket_error_is_returned() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut queue = WriteQueue::default();
        let payload = [0; DIRECT_WRITE_MIN];
        let err = send(&mut queue, &mut Broken, &[&payload]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
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
        let mut socket = Trickle::new(7, 100);
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
        assert_eq!(queue.blocks().count(), 6, "full blocks, no reallocation");
        assert!(queue.blocks().all(|b| b.capacity() == BLOCK));
        let mut socket = Trickle::new(3 * BLOCK / 2, 2 * BLOCK + 5);
        queue.flush_until_blocked(&mut socket).unwrap();
        assert_eq!(queue.len(), data.len() - (2 * BLOCK + 5));
        assert_eq!(queue.blocks().count(), 4, "written blocks are freed");
        socket.budget = usize::MAX;
        queue.flush_until_blocked(&mut socket).unwrap();
        assert_eq!(socket.taken, data);
        assert!(queue.blocks().next().is_none() && queue.is_empty());
        assert!(queue.more.is_none() && queue.front.capacity() == 0);
    }
}
