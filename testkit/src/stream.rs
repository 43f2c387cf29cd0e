//! Streaming a message of any size through a server and checking its echo, with
//! neither side holding the message: a [`FrameWriter`] produces client frames piece
//! by piece from a deterministic generator (binary from [`crate::payload::fill`], text
//! from [`TextGen`]) and masks them, while [`read_echo`] parses the server's frames
//! with a strict reader of its own and hands every echoed byte to a checker as it
//! arrives ([`binary_checker`], [`text_checker`]).
//!
//! The in-process large-message tests of the library and the server's end-to-end
//! memory tests share these, so both check the same bytes the same way. Like the rest
//! of the testkit, none of it comes from the library: a bug in its codec cannot hide
//! itself here.

use crate::payload::{fill, word};
use crate::raw::{
    client_frame_header, masked_frame, read_close, BINARY, CLOSE, CONTINUATION, TEXT,
};
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

/// A kibibyte.
pub const KIB: u64 = 1024;
/// A mebibyte.
pub const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------
// Payload generators: the same bytes on both sides, never held whole. Binary messages
// come from `crate::payload::fill`; text from `TextGen` below.

/// A producer for [`FrameWriter::frame`]: the binary stream `seed` from byte `start`
/// on, each call continuing where the previous one stopped.
pub fn binary_from(seed: u64, start: u64) -> impl FnMut(&mut [u8]) {
    let mut pos = start;
    move |out| {
        fill(seed, pos, out);
        pos += out.len() as u64;
    }
}

/// A deterministic stream of UTF-8 text of an exact length, mostly 2-, 3- and 4-byte
/// characters, so that almost any cut falls inside one. Produced in pieces of any
/// size (a character may be cut between two `fill` calls).
pub struct TextGen {
    state: u64,
    remaining: u64,
    pending: [u8; 4],
    pending_len: usize,
    pending_at: usize,
}

impl TextGen {
    /// The text stream `seed`, `len` bytes long in all.
    pub fn new(seed: u64, len: u64) -> Self {
        TextGen {
            state: seed,
            remaining: len,
            pending: [0; 4],
            pending_len: 0,
            pending_at: 0,
        }
    }

    fn next_random(&mut self) -> u64 {
        self.state = self.state.wrapping_add(1);
        word(0x7e47, self.state)
    }

    /// The next character that fits in what is left of the message (ASCII at the very
    /// end, so that the message is valid UTF-8 as a whole).
    fn next_char(&mut self) -> char {
        let r = self.next_random();
        let pick = |lo: u32, hi: u32| lo + (r >> 8) as u32 % (hi - lo + 1);
        let c = match r % 10 {
            0 => pick(0x20, 0x7E),
            1..=3 => pick(0x80, 0x7FF),
            // Skipping the surrogates, which UTF-8 cannot encode.
            4..=6 => pick(0x800, 0xFFFF - 0x800),
            _ => pick(0x1_0000, 0x10_FFFF),
        };
        let c = if (0xD800..0xE000).contains(&c) {
            c + 0x800
        } else {
            c
        };
        let c = char::from_u32(c).unwrap_or('?');
        if c.len_utf8() as u64 <= self.remaining {
            c
        } else {
            'x'
        }
    }

    /// The next `out.len()` bytes of the text.
    pub fn fill(&mut self, out: &mut [u8]) {
        for byte in out {
            if self.pending_at == self.pending_len {
                let c = self.next_char();
                self.pending_len = c.encode_utf8(&mut self.pending).len();
                self.pending_at = 0;
                self.remaining -= self.pending_len as u64;
            }
            *byte = self.pending[self.pending_at];
            self.pending_at += 1;
        }
    }
}

/// The whole text of a `TextGen` (for the small messages that tests keep).
pub fn text(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    TextGen::new(seed, len as u64).fill(&mut out);
    assert!(std::str::from_utf8(&out).is_ok());
    out
}

/// Whether `b` continues a UTF-8 character (rather than starting one).
pub fn is_continuation_byte(b: u8) -> bool {
    b & 0xC0 == 0x80
}

// ---------------------------------------------------------------------------------
// The client side of the wire, written here rather than taken from the crate, so that
// a bug in the crate's codec cannot hide itself.

/// XORs `buf` with `key` (RFC 6455 §5.3), `offset` bytes into the frame's payload.
pub fn mask(buf: &mut [u8], key: [u8; 4], offset: u64) {
    let start = (offset % 4) as usize;
    let rotated = [0, 1, 2, 3].map(|j| key[(start + j) % 4]);
    for chunk in buf.chunks_mut(4) {
        for (byte, k) in chunk.iter_mut().zip(rotated) {
            *byte ^= k;
        }
    }
}

/// Writes client frames whose payloads are produced piece by piece.
pub struct FrameWriter {
    out: BufWriter<TcpStream>,
    scratch: Vec<u8>,
    frames: u64,
}

impl FrameWriter {
    /// Frames to `stream` (buffered, with a 60 s write timeout).
    pub fn new(stream: TcpStream) -> Self {
        stream
            .set_write_timeout(Some(Duration::from_secs(60)))
            .expect("write timeout");
        FrameWriter {
            out: BufWriter::with_capacity(256 * 1024, stream),
            scratch: vec![0u8; 64 * 1024],
            frames: 0,
        }
    }

    /// One frame of `len` payload bytes, which `produce` fills in order (it is called
    /// with pieces of at most 64 KiB). The key varies from frame to frame.
    pub fn frame(
        &mut self,
        fin: bool,
        opcode: u8,
        len: u64,
        produce: &mut dyn FnMut(&mut [u8]),
    ) -> std::io::Result<()> {
        self.partial_frame(fin, opcode, len, len, produce)
    }

    /// A frame header that declares `len` payload bytes, followed by only the first
    /// `send` of them.
    pub fn partial_frame(
        &mut self,
        fin: bool,
        opcode: u8,
        len: u64,
        send: u64,
        produce: &mut dyn FnMut(&mut [u8]),
    ) -> std::io::Result<()> {
        let k = word(0x006b_6579, self.frames).to_le_bytes();
        let key = [k[0], k[1], k[2], k[3]];
        self.frames += 1;
        self.out
            .write_all(&client_frame_header(fin, opcode, len, key))?;
        let mut done = 0;
        while done < send.min(len) {
            let n = (send.min(len) - done).min(self.scratch.len() as u64) as usize;
            let piece = &mut self.scratch[..n];
            produce(piece);
            mask(piece, key, done);
            self.out.write_all(piece)?;
            done += n as u64;
        }
        Ok(())
    }

    /// A control frame with its payload in hand.
    pub fn control(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut payload = payload.to_vec();
        self.frame(true, opcode, payload.len() as u64, &mut |out| {
            out.copy_from_slice(&payload[..out.len()]);
            payload.drain(..out.len());
        })
    }

    /// Sends what is buffered.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// What came back, as seen by [`read_echo`].
#[derive(Debug, Default)]
pub struct StreamedEcho {
    /// Data frames of the echoed message.
    pub data_frames: u64,
    /// The largest data frame payload.
    pub max_frame: u64,
    /// Opcode of the first data frame.
    pub first_opcode: Option<u8>,
    /// Whether a data frame with FIN arrived (the message is complete).
    pub fin: bool,
    /// Data bytes received.
    pub bytes: u64,
    /// Data frames whose payload began with a UTF-8 continuation byte (for text: the
    /// frame boundary cut a character).
    pub frames_starting_mid_char: u64,
    /// Control frames: (data bytes received before it, opcode, payload).
    pub controls: Vec<(u64, u8, Vec<u8>)>,
    /// The close frame that ended the reading, if one did: (code, reason).
    pub close: Option<(Option<u16>, String)>,
}

/// Reads server frames (which must be unmasked and without RSV bits) and checks that
/// they form one data message: a text or binary frame, then continuations, FIN on the
/// last only. Every data byte goes to `check(position, bytes)` as it arrives. Stops
/// after the message's last frame, after a close frame, or once `stop_after` data
/// bytes have arrived.
pub fn read_echo(
    stream: TcpStream,
    stop_after: Option<u64>,
    mut check: impl FnMut(u64, &[u8]),
) -> StreamedEcho {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut r = BufReader::with_capacity(256 * 1024, stream);
    let mut echo = StreamedEcho::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if stop_after.is_some_and(|n| echo.bytes >= n) {
            return echo;
        }
        let mut head = [0u8; 2];
        r.read_exact(&mut head).unwrap_or_else(|e| {
            panic!(
                "the echo stopped after {} data bytes and {} frames: {e}",
                echo.bytes, echo.data_frames
            )
        });
        assert_eq!(head[0] & 0x70, 0, "server frames carry no RSV bits");
        assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
        let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0F);
        let len = match head[1] & 0x7F {
            126 => {
                let mut b = [0u8; 2];
                r.read_exact(&mut b).expect("16-bit length");
                let len = u64::from(u16::from_be_bytes(b));
                assert!(len >= 126, "non-minimal 16-bit length {len}");
                len
            }
            127 => {
                let mut b = [0u8; 8];
                r.read_exact(&mut b).expect("64-bit length");
                let len = u64::from_be_bytes(b);
                assert!(len > 0xFFFF && len >> 63 == 0, "bad 64-bit length {len}");
                len
            }
            n => u64::from(n),
        };
        if opcode >= 0x8 {
            assert!(fin && len <= 125, "bad control frame: fin {fin} len {len}");
            let mut payload = vec![0u8; len as usize];
            r.read_exact(&mut payload).expect("control payload");
            if opcode == CLOSE {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                let reason = String::from_utf8(payload.get(2..).unwrap_or_default().to_vec())
                    .expect("UTF-8 close reason");
                echo.close = Some((code, reason));
                return echo;
            }
            echo.controls.push((echo.bytes, opcode, payload));
            continue;
        }
        assert!(!echo.fin, "a data frame after the end of the message");
        match (echo.first_opcode, opcode) {
            (None, TEXT | BINARY) => echo.first_opcode = Some(opcode),
            (Some(_), CONTINUATION) => {}
            other => panic!(
                "bad frame sequence at data frame {}: {other:?}",
                echo.data_frames
            ),
        }
        echo.data_frames += 1;
        echo.max_frame = echo.max_frame.max(len);
        echo.fin = fin;
        let mut left = len;
        let mut first = true;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            r.read_exact(&mut buf[..n])
                .unwrap_or_else(|e| panic!("payload cut after {} data bytes: {e}", echo.bytes));
            if first && is_continuation_byte(buf[0]) {
                echo.frames_starting_mid_char += 1;
            }
            first = false;
            check(echo.bytes, &buf[..n]);
            echo.bytes += n as u64;
            left -= n as u64;
        }
        if fin {
            return echo;
        }
    }
}

/// Runs `write` on a writer thread and `read_echo` here, concurrently (a streamed echo
/// needs both: the server stops reading while the client does not read).
pub fn exchange<W>(
    stream: &TcpStream,
    stop_after: Option<u64>,
    write: W,
    check: impl FnMut(u64, &[u8]),
) -> StreamedEcho
where
    W: FnOnce(&mut FrameWriter) -> std::io::Result<()> + Send + 'static,
{
    let mut writer = FrameWriter::new(stream.try_clone().expect("clone"));
    // The closure flushes (or not, if the server may have closed first).
    let writer = thread::spawn(move || write(&mut writer));
    let echo = read_echo(stream.try_clone().expect("clone"), stop_after, check);
    writer
        .join()
        .expect("writer thread")
        .expect("writing the message");
    echo
}

/// Sends a normal close and expects the server's close 1000 back.
pub fn close_normally(stream: &mut TcpStream) {
    stream
        .write_all(&masked_frame(true, CLOSE, &1000u16.to_be_bytes()))
        .expect("write close");
    assert_eq!(read_close(stream).0, Some(1000));
}

/// Asserts that the echoed `bytes` at message position `pos` are the `expected` ones,
/// naming the first byte that differs (without printing the bytes).
pub fn assert_echo_matches(pos: u64, bytes: &[u8], expected: &[u8]) {
    if bytes != expected {
        let i = bytes.iter().zip(expected.iter()).position(|(a, b)| a != b);
        panic!(
            "echoed byte {} differs from the message",
            pos + i.unwrap_or(0) as u64
        );
    }
}

/// Checks every echoed byte of a binary message against the generator.
pub fn binary_checker(seed: u64) -> impl FnMut(u64, &[u8]) {
    let mut expected = vec![0u8; 64 * 1024];
    move |pos, bytes| {
        let expected = &mut expected[..bytes.len()];
        fill(seed, pos, expected);
        assert_echo_matches(pos, bytes, expected);
    }
}

/// Checks every echoed byte of a text message against a `TextGen` with the same seed.
pub fn text_checker(seed: u64, len: u64) -> impl FnMut(u64, &[u8]) {
    let mut gen = TextGen::new(seed, len);
    let mut expected = vec![0u8; 64 * 1024];
    let mut next = 0;
    move |pos, bytes| {
        assert_eq!(pos, next);
        let expected = &mut expected[..bytes.len()];
        gen.fill(expected);
        assert_echo_matches(pos, bytes, expected);
        next += bytes.len() as u64;
    }
}

/// Sends the binary stream `seed` as one frame of `size` bytes and reads the whole
/// echo, checking every byte.
pub fn echo_one_binary_frame(stream: &TcpStream, size: u64, seed: u64) -> StreamedEcho {
    exchange(
        stream,
        None,
        move |w| {
            w.frame(true, BINARY, size, &mut binary_from(seed, 0))?;
            w.flush()
        },
        binary_checker(seed),
    )
}

/// Asserts that the echo is one whole message of `size` bytes that began with
/// `opcode`, in frames of at most 64 KiB (the default `--max-frame-out`).
pub fn assert_whole_echo(echo: &StreamedEcho, size: u64, opcode: u8) {
    assert_eq!(echo.bytes, size);
    assert!(echo.fin);
    assert_eq!(echo.first_opcode, Some(opcode));
    assert!(
        echo.max_frame <= 64 * KIB,
        "frame of {} bytes",
        echo.max_frame
    );
}
