//! The frame header (RFC 6455 §5.2), parsed from a slice that may be too short and
//! written into a small stack buffer.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```

use super::coding::OpCode;
use super::error::ProtocolError;

/// The longest header: 2 base bytes + 8 bytes of 64-bit length + 4 bytes of mask key.
pub const MAX_HEADER_LEN: usize = 14;

/// The largest payload length a frame may declare: the 64-bit form's top bit must be 0.
pub const MAX_PAYLOAD_LEN: u64 = i64::MAX as u64;

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the last frame of its message (always set on control frames).
    pub fin: bool,
    /// RSV1, RSV2, RSV3 as the bits `0b100`, `0b010`, `0b001`.
    pub rsv: u8,
    /// What the payload means.
    pub opcode: OpCode,
    /// The 4-byte masking key, present on every client-to-server frame (§5.3).
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes, at most [`MAX_PAYLOAD_LEN`].
    pub payload_len: u64,
}

/// The result of parsing a header from bytes that may not hold all of it yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderParse {
    /// Not enough bytes: the header is at least this many bytes long in total.
    Partial {
        /// The total header length known so far (2 until the length byte is seen).
        needed: usize,
    },
    /// A whole header of `len` bytes.
    Complete {
        /// The header.
        header: FrameHeader,
        /// How many bytes it took (2 to 14).
        len: usize,
    },
}

impl FrameHeader {
    /// Parses a header from the front of `buf`, consuming nothing: it either says how
    /// many bytes the header needs or returns the header and its length. Only the
    /// rules that concern the header's own encoding are checked here (length top bit,
    /// minimal length); the decoder checks the rest against its state.
    pub fn parse(buf: &[u8]) -> Result<HeaderParse, ProtocolError> {
        let [b0, b1, rest @ ..] = buf else {
            return Ok(HeaderParse::Partial { needed: 2 });
        };
        let masked = b1 & 0x80 != 0;
        let len_code = b1 & 0x7F;
        let ext_len = match len_code {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let needed = 2 + ext_len + if masked { 4 } else { 0 };
        if buf.len() < needed {
            return Ok(HeaderParse::Partial { needed });
        }
        // `buf.len() >= needed` = 2 + ext_len (+ 4), so `rest` holds the extended length
        // (and the key): the split and the indexing below are in bounds.
        let (ext, after_len) = rest.split_at(ext_len);
        let payload_len = match ext_len {
            0 => u64::from(len_code),
            2 => {
                let len = u64::from(u16::from_be_bytes([ext[0], ext[1]]));
                // §5.2: "the minimal number of bytes MUST be used to encode the length".
                if len < 126 {
                    return Err(ProtocolError::NonMinimalLength);
                }
                len
            }
            _ => {
                let mut be = [0u8; 8];
                be.copy_from_slice(ext);
                let len = u64::from_be_bytes(be);
                if len > MAX_PAYLOAD_LEN {
                    return Err(ProtocolError::LengthTopBitSet);
                }
                if len <= u64::from(u16::MAX) {
                    return Err(ProtocolError::NonMinimalLength);
                }
                len
            }
        };
        let mask = match after_len {
            [k0, k1, k2, k3, ..] if masked => Some([*k0, *k1, *k2, *k3]),
            _ => None,
        };
        Ok(HeaderParse::Complete {
            header: FrameHeader {
                fin: b0 & 0x80 != 0,
                rsv: (b0 >> 4) & 0x07,
                opcode: OpCode::from(*b0),
                mask,
                payload_len,
            },
            len: needed,
        })
    }

    /// Writes the header into `out` and returns how many bytes it took, always using the
    /// shortest length form (§5.2). `payload_len` must be at most [`MAX_PAYLOAD_LEN`].
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        debug_assert!(self.payload_len <= MAX_PAYLOAD_LEN);
        out[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x07) << 4) | u8::from(self.opcode);
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut len = 2;
        if self.payload_len < 126 {
            out[1] = mask_bit | self.payload_len as u8;
        } else if let Ok(short) = u16::try_from(self.payload_len) {
            out[1] = mask_bit | 126;
            out[2..4].copy_from_slice(&short.to_be_bytes());
            len = 4;
        } else {
            out[1] = mask_bit | 127;
            out[2..10].copy_from_slice(&self.payload_len.to_be_bytes());
            len = 10;
        }
        if let Some(key) = self.mask {
            out[len..len + 4].copy_from_slice(&key);
            len += 4;
        }
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(payload_len: u64, mask: Option<[u8; 4]>) -> FrameHeader {
        FrameHeader {
            fin: true,
            rsv: 0,
            opcode: OpCode::Binary,
            mask,
            payload_len,
        }
    }

    fn round_trip(h: FrameHeader) -> usize {
        let mut out = [0u8; MAX_HEADER_LEN];
        let len = h.encode(&mut out);
        for short in 0..len {
            assert!(matches!(
                FrameHeader::parse(&out[..short]),
                Ok(HeaderParse::Partial { needed }) if needed > short
            ));
        }
        assert_eq!(
            FrameHeader::parse(&out[..len]),
            Ok(HeaderParse::Complete { header: h, len })
        );
        len
    }

    #[test]
    fn boundary_lengths_use_the_shortest_form() {
        let cases = [
            (0, 2),
            (1, 2),
            (125, 2),
            (126, 4),
            (127, 4),
            (65_535, 4),
            (65_536, 10),
            (1 << 32, 10),
            (MAX_PAYLOAD_LEN, 10),
        ];
        for (payload_len, header_len) in cases {
            assert_eq!(round_trip(header(payload_len, None)), header_len);
            assert_eq!(
                round_trip(header(payload_len, Some([1, 2, 3, 4]))),
                header_len + 4
            );
        }
    }

    #[test]
    fn the_browser_a_frame_header_is_six_bytes() {
        // A browser sending "a": FIN+text, MASK+len 1, then a 4-byte key.
        let wire = [0x81, 0x81, 0x12, 0x34, 0x56, 0x78, b'a' ^ 0x12];
        let Ok(HeaderParse::Complete { header, len }) = FrameHeader::parse(&wire) else {
            panic!("complete header expected");
        };
        assert_eq!(len, 6);
        assert_eq!(header.opcode, OpCode::Text);
        assert!(header.fin);
        assert_eq!(header.mask, Some([0x12, 0x34, 0x56, 0x78]));
        assert_eq!(header.payload_len, 1);
    }

    #[test]
    fn a_64_bit_length_with_the_top_bit_set_is_rejected() {
        let mut wire = [0x82, 127, 0, 0, 0, 0, 0, 0, 0, 0];
        wire[2] = 0x80;
        assert_eq!(
            FrameHeader::parse(&wire),
            Err(ProtocolError::LengthTopBitSet)
        );
    }

    #[test]
    fn non_minimal_lengths_are_rejected() {
        assert_eq!(
            FrameHeader::parse(&[0x82, 126, 0, 125]),
            Err(ProtocolError::NonMinimalLength)
        );
        assert_eq!(
            FrameHeader::parse(&[0x82, 127, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]),
            Err(ProtocolError::NonMinimalLength)
        );
    }

    #[test]
    fn rsv_bits_and_opcode_are_read_from_the_first_byte() {
        let Ok(HeaderParse::Complete { header, .. }) = FrameHeader::parse(&[0x7B, 0]) else {
            panic!("complete header expected");
        };
        assert!(!header.fin);
        assert_eq!(header.rsv, 0b111);
        assert_eq!(header.opcode, OpCode::Reserved(0xB));
    }
}
