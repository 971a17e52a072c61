//! The control messages of a NIC stream (docs/nic.md, "Control messages"): the UDP
//! payload of START, READY, ACK, END, VERDICT and ABORT. Each is `b"PDMA"`, the
//! version (1), the type, then little-endian fields; a text field is a `u16` length and
//! that many bytes of UTF-8. Data datagrams carry payload bytes only and are no
//! message of this module.

use std::fmt;

/// The first four bytes of every control message.
pub const MAGIC: [u8; 4] = *b"PDMA";

/// The protocol version this module speaks.
pub const VERSION: u8 = 1;

/// The longest text field (a description, a reason, a verdict's message) this side
/// writes, in bytes: longer text is cut at a character boundary, so that START (the
/// largest message, 42 bytes before its text) stays far below the smallest MTU's
/// payload (576 − 28 bytes).
pub const MAX_TEXT: usize = 400;

/// The sender's opening: what it will send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    /// Ties the messages of one stream together.
    pub stream: u32,
    /// Bytes in the stream.
    pub total: u64,
    /// Bytes per data datagram (the plan's P).
    pub payload: u32,
    /// Data datagrams (the plan's N).
    pub count: u64,
    /// The pattern's seed (`peerdma_copy::pattern`).
    pub seed: u64,
    /// The source in words.
    pub what: String,
}

/// The receiver's answer to START: ready for data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The stream.
    pub stream: u32,
    /// Datagrams the sender may have sent beyond the last ACK.
    pub window: u32,
    /// The destination in words.
    pub what: String,
}

/// Datagrams received so far (cumulative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The stream.
    pub stream: u32,
    /// Data datagrams received so far.
    pub received: u64,
}

/// The sender's last message: every data datagram was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct End {
    /// The stream.
    pub stream: u32,
    /// Data datagrams sent.
    pub sent: u64,
    /// Payload bytes sent.
    pub bytes: u64,
}

/// What the receiver found when it checked its destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The stream.
    pub stream: u32,
    /// Every byte arrived and matched the pattern.
    pub ok: bool,
    /// Bytes checked.
    pub verified: u64,
    /// The first offset that differs (`None`: none; `u64::MAX` on the wire).
    pub first_mismatch: Option<u64>,
    /// What the receiver says about it.
    pub message: String,
}

/// Either side gives up, and says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Abort {
    /// The stream.
    pub stream: u32,
    /// Why.
    pub reason: String,
}

/// One control message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Type 1.
    Start(Start),
    /// Type 2.
    Ready(Ready),
    /// Type 3.
    Ack(Ack),
    /// Type 4.
    End(End),
    /// Type 5.
    Verdict(Verdict),
    /// Type 6.
    Abort(Abort),
}

/// Why bytes are no control message of this version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the message's fields need.
    Short {
        /// What was being read.
        field: &'static str,
        /// Bytes needed up to the end of that field.
        need: usize,
        /// Bytes there are.
        got: usize,
    },
    /// The first four bytes are not `PDMA`.
    Magic([u8; 4]),
    /// Another protocol version.
    Version(u8),
    /// A type this version does not have.
    Type(u8),
    /// A text field is not UTF-8.
    Text {
        /// Which field.
        field: &'static str,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short { field, need, got } => write!(
                f,
                "a control message of {got} bytes is too short: its {field} ends at byte {need}"
            ),
            DecodeError::Magic(m) => write!(
                f,
                "not a peerdma control message: it starts with {:02x} {:02x} {:02x} {:02x}, \
                 not \"PDMA\"",
                m[0], m[1], m[2], m[3]
            ),
            DecodeError::Version(v) => write!(
                f,
                "a control message of protocol version {v}; this side speaks version {VERSION}"
            ),
            DecodeError::Type(t) => write!(f, "a control message of unknown type {t}"),
            DecodeError::Text { field } => {
                write!(f, "a control message whose {field} is not UTF-8")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

impl Message {
    /// The wire type byte.
    pub fn type_byte(&self) -> u8 {
        match self {
            Message::Start(_) => 1,
            Message::Ready(_) => 2,
            Message::Ack(_) => 3,
            Message::End(_) => 4,
            Message::Verdict(_) => 5,
            Message::Abort(_) => 6,
        }
    }

    /// Its name as docs/nic.md writes it (`START`).
    pub fn name(&self) -> &'static str {
        match self {
            Message::Start(_) => "START",
            Message::Ready(_) => "READY",
            Message::Ack(_) => "ACK",
            Message::End(_) => "END",
            Message::Verdict(_) => "VERDICT",
            Message::Abort(_) => "ABORT",
        }
    }

    /// The stream it belongs to.
    pub fn stream(&self) -> u32 {
        match self {
            Message::Start(m) => m.stream,
            Message::Ready(m) => m.stream,
            Message::Ack(m) => m.stream,
            Message::End(m) => m.stream,
            Message::Verdict(m) => m.stream,
            Message::Abort(m) => m.stream,
        }
    }

    /// The UDP payload. Text fields longer than [`MAX_TEXT`] bytes are cut at a
    /// character boundary.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&MAGIC);
        b.push(VERSION);
        b.push(self.type_byte());
        b.extend_from_slice(&self.stream().to_le_bytes());
        match self {
            Message::Start(m) => {
                b.extend_from_slice(&m.total.to_le_bytes());
                b.extend_from_slice(&m.payload.to_le_bytes());
                b.extend_from_slice(&m.count.to_le_bytes());
                b.extend_from_slice(&m.seed.to_le_bytes());
                put_text(&mut b, &m.what);
            }
            Message::Ready(m) => {
                b.extend_from_slice(&m.window.to_le_bytes());
                put_text(&mut b, &m.what);
            }
            Message::Ack(m) => b.extend_from_slice(&m.received.to_le_bytes()),
            Message::End(m) => {
                b.extend_from_slice(&m.sent.to_le_bytes());
                b.extend_from_slice(&m.bytes.to_le_bytes());
            }
            Message::Verdict(m) => {
                b.push(u8::from(m.ok));
                b.extend_from_slice(&m.verified.to_le_bytes());
                b.extend_from_slice(&m.first_mismatch.unwrap_or(u64::MAX).to_le_bytes());
                put_text(&mut b, &m.message);
            }
            Message::Abort(m) => put_text(&mut b, &m.reason),
        }
        b
    }

    /// Reads a UDP payload. Bytes past the last field are ignored.
    ///
    /// # Errors
    ///
    /// [`DecodeError`]: a wrong magic, version or type, a message too short for its
    /// fields, a text that is not UTF-8.
    pub fn decode(b: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader { b, at: 0 };
        let magic: [u8; 4] = r.take("magic", 4)?.try_into().expect("4 bytes");
        if magic != MAGIC {
            return Err(DecodeError::Magic(magic));
        }
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let kind = r.u8("type")?;
        if !(1..=6).contains(&kind) {
            return Err(DecodeError::Type(kind));
        }
        let stream = r.u32("stream id")?;
        Ok(match kind {
            1 => Message::Start(Start {
                stream,
                total: r.u64("total bytes")?,
                payload: r.u32("payload size")?,
                count: r.u64("datagram count")?,
                seed: r.u64("pattern seed")?,
                what: r.text("description")?,
            }),
            2 => Message::Ready(Ready {
                stream,
                window: r.u32("window")?,
                what: r.text("description")?,
            }),
            3 => Message::Ack(Ack {
                stream,
                received: r.u64("datagrams received")?,
            }),
            4 => Message::End(End {
                stream,
                sent: r.u64("datagrams sent")?,
                bytes: r.u64("bytes sent")?,
            }),
            5 => Message::Verdict(Verdict {
                stream,
                ok: r.u8("ok")? != 0,
                verified: r.u64("bytes verified")?,
                first_mismatch: Some(r.u64("first mismatch")?).filter(|&f| f != u64::MAX),
                message: r.text("message")?,
            }),
            _ => Message::Abort(Abort {
                stream,
                reason: r.text("reason")?,
            }),
        })
    }
}

fn put_text(b: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    b.extend_from_slice(&(end as u16).to_le_bytes());
    b.extend_from_slice(&s.as_bytes()[..end]);
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
        let need = self.at + n;
        let got = self.b.get(self.at..need).ok_or(DecodeError::Short {
            field,
            need,
            got: self.b.len(),
        })?;
        self.at = need;
        Ok(got)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(field, 1)?[0])
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(field, 4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(field, 8)?.try_into().expect("8 bytes"),
        ))
    }

    fn text(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = u16::from_le_bytes(self.take(field, 2)?.try_into().expect("2 bytes"));
        let bytes = self.take(field, usize::from(len))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Text { field })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Message> {
        vec![
            Message::Start(Start {
                stream: 0xdead_beef,
                total: 14_720_000,
                payload: 1472,
                count: 10_000,
                seed: 0x9eed,
                what: "BAR2 of 0000:00:04.0 via NIC 0000:00:05.0".into(),
            }),
            Message::Ready(Ready {
                stream: 7,
                window: 256,
                what: "host memory via kernel socket (NOT peer-to-peer)".into(),
            }),
            Message::Ack(Ack {
                stream: 7,
                received: 4096,
            }),
            Message::End(End {
                stream: 7,
                sent: 10_000,
                bytes: 14_720_000,
            }),
            Message::Verdict(Verdict {
                stream: 7,
                ok: true,
                verified: 14_720_000,
                first_mismatch: None,
                message: "every byte matched".into(),
            }),
            Message::Verdict(Verdict {
                stream: 7,
                ok: false,
                verified: 100,
                first_mismatch: Some(17),
                message: "ü".into(),
            }),
            Message::Abort(Abort {
                stream: 7,
                reason: "0000:00:04.0 BAR2 was revoked".into(),
            }),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in all() {
            let b = m.encode();
            assert_eq!(&b[..4], b"PDMA");
            assert_eq!(b[4], VERSION);
            assert_eq!(b[5], m.type_byte());
            assert_eq!(Message::decode(&b), Ok(m.clone()), "{}", m.name());
        }
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let ack = Message::Ack(Ack {
            stream: 0x0403_0201,
            received: 0x0102,
        })
        .encode();
        assert_eq!(
            ack,
            [b'P', b'D', b'M', b'A', 1, 3, 1, 2, 3, 4, 2, 1, 0, 0, 0, 0, 0, 0]
        );
        // The smallest control message is still a datagram of >= 18 bytes.
        assert_eq!(ack.len(), 18);
        let start = Message::Start(Start {
            stream: 1,
            total: 2,
            payload: 3,
            count: 4,
            seed: 5,
            what: "ab".into(),
        })
        .encode();
        assert_eq!(start.len(), 10 + 8 + 4 + 8 + 8 + 2 + 2);
        assert_eq!(&start[10..18], &2u64.to_le_bytes());
        assert_eq!(&start[18..22], &3u32.to_le_bytes());
        assert_eq!(&start[38..42], &[2, 0, b'a', b'b']);
        let v = Message::Verdict(Verdict {
            stream: 1,
            ok: true,
            verified: 9,
            first_mismatch: None,
            message: String::new(),
        })
        .encode();
        assert_eq!(&v[19..27], &u64::MAX.to_le_bytes());
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let m = Message::Abort(Abort {
            stream: 1,
            reason: "é".repeat(MAX_TEXT),
        });
        let Message::Abort(back) = Message::decode(&m.encode()).unwrap() else {
            panic!("not an abort");
        };
        assert!(back.reason.len() <= MAX_TEXT && back.reason.len() >= MAX_TEXT - 1);
        assert!(back.reason.chars().all(|c| c == 'é'));
    }

    #[test]
    fn wrong_bytes_are_refused_with_the_reason() {
        let good = all()[0].encode();
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(Message::decode(&b), Err(DecodeError::Magic(*b"XDMA")));
        let mut b = good.clone();
        b[4] = 2;
        assert_eq!(Message::decode(&b), Err(DecodeError::Version(2)));
        let msg = DecodeError::Version(2).to_string();
        assert!(
            msg.contains("version 2") && msg.contains("version 1"),
            "{msg}"
        );
        for t in [0u8, 7, 255] {
            let mut b = good.clone();
            b[5] = t;
            assert_eq!(Message::decode(&b), Err(DecodeError::Type(t)));
        }
        assert!(matches!(
            Message::decode(&good[..good.len() - 1]),
            Err(DecodeError::Short {
                field: "description",
                ..
            })
        ));
        assert_eq!(
            Message::decode(&good[..12]),
            Err(DecodeError::Short {
                field: "total bytes",
                need: 18,
                got: 12
            })
        );
        assert!(matches!(
            Message::decode(b"PD"),
            Err(DecodeError::Short { field: "magic", .. })
        ));
        assert!(Message::decode(&[]).is_err());
        let mut bad_text = Message::Abort(Abort {
            stream: 1,
            reason: "ab".into(),
        })
        .encode();
        let n = bad_text.len();
        bad_text[n - 1] = 0xff;
        assert_eq!(
            Message::decode(&bad_text),
            Err(DecodeError::Text { field: "reason" })
        );
        assert!(DecodeError::Magic(*b"GET ")
            .to_string()
            .contains("47 45 54 20"));
    }
}
