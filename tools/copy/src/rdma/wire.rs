//! What the two p2pcopy ends tell each other: the connect request's private
//! data ([`Hello`]: seed, size, QPs), the accept's ([`Accept`]: the
//! destination MR and whether it is peer-to-peer), and two SENDs at the end
//! ([`Done`] from the sender, [`Verdict`] from the receiver).

use peerdma_importer::rdma::RemoteMr;

const MAGIC: [u8; 4] = *b"P2PC";
const VERSION: u8 = 1;

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn head_ok(b: &[u8]) -> bool {
    b.len() >= 5 && b[..4] == MAGIC && b[4] == VERSION
}

/// The connect request's private data (32 bytes; RDMA CM carries 56).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// QPs the sender opens in all.
    pub qps: u8,
    /// This connection's index among them.
    pub index: u8,
    /// Pattern seed.
    pub seed: u64,
    /// Bytes the sender writes.
    pub size: u64,
    /// Ties the QPs of one run together.
    pub session: u64,
}

impl Hello {
    /// Encodes it.
    pub fn to_bytes(self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&[VERSION, self.qps, self.index, 0]);
        b.extend_from_slice(&self.seed.to_le_bytes());
        b.extend_from_slice(&self.size.to_le_bytes());
        b.extend_from_slice(&self.session.to_le_bytes());
        b
    }

    /// Decodes it (`None`: not a p2pcopy sender of this version).
    pub fn from_bytes(b: &[u8]) -> Option<Hello> {
        if !head_ok(b) || b.len() < 32 {
            return None;
        }
        Some(Hello {
            qps: b[5],
            index: b[6],
            seed: u64_at(b, 8)?,
            size: u64_at(b, 16)?,
            session: u64_at(b, 24)?,
        })
    }
}

/// The accept's private data: where to write, and what the destination is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accept {
    /// The destination MR.
    pub mr: RemoteMr,
    /// Whether the destination is device memory the NIC writes directly.
    pub peer_to_peer: bool,
    /// Whether the destination is device memory staged through host memory
    /// (NOT peer-to-peer).
    pub staged: bool,
    /// The destination in words (at most 140 bytes).
    pub what: String,
}

impl Accept {
    /// Encodes it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(196);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&[
            VERSION,
            u8::from(self.peer_to_peer),
            u8::from(self.staged),
            0,
        ]);
        b.extend_from_slice(&self.mr.to_bytes());
        let what = self.what.as_bytes();
        b.extend_from_slice(&what[..what.len().min(140)]);
        b
    }

    /// Decodes it.
    pub fn from_bytes(b: &[u8]) -> Option<Accept> {
        if !head_ok(b) || b.len() < 8 + RemoteMr::ENCODED_LEN {
            return None;
        }
        let rest = &b[8 + RemoteMr::ENCODED_LEN..];
        Some(Accept {
            mr: RemoteMr::from_bytes(&b[8..])?,
            peer_to_peer: b[5] != 0,
            staged: b[6] != 0,
            what: String::from_utf8_lossy(rest)
                .trim_end_matches('\0')
                .to_string(),
        })
    }
}

/// The sender's last message: every WRITE completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Done {
    /// Bytes written.
    pub bytes: u64,
}

/// What the receiver found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every byte matched the pattern.
    Verified {
        /// Nanoseconds from the connection to the sender's Done.
        nanos: u64,
    },
    /// Some bytes differ.
    Mismatch {
        /// First differing offset.
        first: u64,
        /// How many differ.
        count: u64,
    },
    /// The receiver could not check (its side failed).
    Failed,
}

/// Bytes a control message takes.
pub const MSG_LEN: usize = 32;

impl Done {
    /// Encodes it.
    pub fn to_bytes(self) -> [u8; MSG_LEN] {
        let mut b = [0u8; MSG_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = 1;
        b[8..16].copy_from_slice(&self.bytes.to_le_bytes());
        b
    }

    /// Decodes it.
    pub fn from_bytes(b: &[u8]) -> Option<Done> {
        (head_ok(b) && b.get(5) == Some(&1)).then_some(())?;
        Some(Done {
            bytes: u64_at(b, 8)?,
        })
    }
}

impl Verdict {
    /// Encodes it.
    pub fn to_bytes(self) -> [u8; MSG_LEN] {
        let mut b = [0u8; MSG_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = 2;
        let (kind, x, y) = match self {
            Verdict::Verified { nanos } => (0, nanos, 0),
            Verdict::Mismatch { first, count } => (1, first, count),
            Verdict::Failed => (2, 0, 0),
        };
        b[6] = kind;
        b[8..16].copy_from_slice(&x.to_le_bytes());
        b[16..24].copy_from_slice(&y.to_le_bytes());
        b
    }

    /// Decodes it.
    pub fn from_bytes(b: &[u8]) -> Option<Verdict> {
        (head_ok(b) && b.get(5) == Some(&2)).then_some(())?;
        let (x, y) = (u64_at(b, 8)?, u64_at(b, 16)?);
        match b[6] {
            0 => Some(Verdict::Verified { nanos: x }),
            1 => Some(Verdict::Mismatch { first: x, count: y }),
            2 => Some(Verdict::Failed),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_fit_rdma_cm() {
        let h = Hello {
            qps: 2,
            index: 1,
            seed: 0x9eed,
            size: 64 << 20,
            session: 77,
        };
        assert!(
            h.to_bytes().len() <= 56,
            "connect private data is 56 bytes at most"
        );
        assert_eq!(Hello::from_bytes(&h.to_bytes()), Some(h));
        let a = Accept {
            mr: RemoteMr {
                addr: 0x1000,
                rkey: 5,
                len: 1 << 20,
            },
            peer_to_peer: false,
            staged: true,
            what: "x".repeat(300),
        };
        assert!(
            a.to_bytes().len() <= 196,
            "accept private data is 196 bytes at most"
        );
        let back = Accept::from_bytes(&a.to_bytes()).unwrap();
        assert_eq!(
            (back.mr, back.peer_to_peer, back.what.len()),
            (a.mr, false, 140)
        );
        let d = Done { bytes: 12345 };
        assert_eq!(Done::from_bytes(&d.to_bytes()), Some(d));
        for v in [
            Verdict::Verified { nanos: 9 },
            Verdict::Mismatch { first: 3, count: 4 },
            Verdict::Failed,
        ] {
            assert_eq!(Verdict::from_bytes(&v.to_bytes()), Some(v));
        }
        assert_eq!(Done::from_bytes(&Verdict::Failed.to_bytes()), None);
        assert_eq!(
            Hello::from_bytes(b"GET / HTTP/1.1\r\n\r\n0123456789abcdef"),
            None
        );
    }
}
