//! Why a NIC stream failed: each names what was seen (datagram, ident, count, peer,
//! seconds) and the fix.

use std::fmt;

use super::plan::PlanError;

/// A NIC stream's failure, on either side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NicError {
    /// The stream cannot be planned (size, payload size, MTU).
    Plan(PlanError),
    /// The peer never answered START.
    NoAnswer {
        /// The peer.
        peer: String,
        /// Seconds waited.
        seconds: u64,
    },
    /// The receiver's ACKs stopped.
    AckStalled {
        /// Datagrams acknowledged.
        acked: u64,
        /// Datagrams in the stream.
        count: u64,
        /// Seconds without an ACK.
        seconds: u64,
    },
    /// The receiver never answered END.
    NoVerdict {
        /// The peer.
        peer: String,
        /// Seconds waited.
        seconds: u64,
    },
    /// No sender sent START.
    NoSender {
        /// Where the receiver listened.
        listen: String,
        /// Seconds waited.
        seconds: u64,
    },
    /// The data datagrams stopped before the last.
    DataStalled {
        /// Datagrams received.
        received: u64,
        /// Datagrams in the stream.
        count: u64,
        /// Seconds without one.
        seconds: u64,
    },
    /// Every datagram arrived, but END did not.
    NoEnd {
        /// The peer.
        peer: String,
        /// Seconds waited.
        seconds: u64,
    },
    /// A data datagram's IPv4 Identification is not the next in sequence.
    IdentMismatch {
        /// The datagram (0-based).
        index: u64,
        /// Its ident.
        got: u16,
        /// The ident expected.
        expected: u16,
    },
    /// A data datagram of another length than the plan's.
    WrongLength {
        /// The datagram (0-based).
        index: u64,
        /// Its UDP payload length.
        got: usize,
        /// The plan's.
        expected: u32,
    },
    /// The sender said it sent more (or other) datagrams than arrived.
    ShortStream {
        /// Datagrams received.
        received: u64,
        /// Datagrams the sender says it sent.
        sent: u64,
        /// Datagrams in the stream.
        count: u64,
    },
    /// The peer gave up and said why.
    PeerAborted {
        /// The peer.
        peer: String,
        /// Its reason.
        reason: String,
    },
    /// The peer's host answered ICMP port unreachable mid-stream: nothing listens there
    /// any more.
    PeerGone {
        /// The peer.
        peer: String,
        /// What this side was doing.
        during: String,
    },
    /// The receiver checked and found other bytes (or fewer).
    PeerVerdict {
        /// The peer.
        peer: String,
        /// Bytes it checked.
        verified: u64,
        /// Bytes in the stream.
        total: u64,
        /// First differing offset, if it named one.
        first: Option<u64>,
        /// What it said.
        message: String,
    },
    /// The peer broke the protocol (a START that makes no plan, an ACK past what was
    /// sent, a window of 0).
    Protocol {
        /// The peer.
        peer: String,
        /// What it did.
        what: String,
    },
    /// The sender's datagrams are longer than this end's MTU lets a frame be.
    MtuMismatch {
        /// The peer.
        peer: String,
        /// Its datagrams' payload, in bytes.
        payload: u32,
        /// This end's MTU.
        mtu: u32,
    },
    /// The receiver's destination cannot hold the stream.
    TooLarge {
        /// Bytes the sender wants to send.
        total: u64,
        /// Bytes the destination holds.
        room: u64,
        /// The destination in words.
        dst: String,
    },
    /// An address that names no IPv4 host and port.
    BadAddress {
        /// What was given.
        given: String,
        /// Why it is no address.
        why: String,
    },
    /// Host memory for the stream could not be allocated.
    NoMemory {
        /// Bytes asked for.
        bytes: u64,
    },
    /// A socket call failed.
    Io {
        /// What was being done ("binding 10.0.0.1:18521").
        doing: String,
        /// The errno's name and text.
        error: String,
    },
    /// This combination of ends cannot run (a BAR end without a NIC, a NIC side
    /// without an IPv4 address, the NIC also the BAR's device).
    Unavailable {
        /// Why.
        why: String,
        /// What to do instead.
        fix: String,
    },
}

impl NicError {
    /// What went wrong, without the fix.
    pub fn what(&self) -> String {
        match self {
            NicError::Plan(e) => e.what(),
            NicError::NoAnswer { peer, seconds } => {
                format!("peer {peer} never answered within {seconds} s")
            }
            NicError::AckStalled {
                acked,
                count,
                seconds,
            } => format!(
                "the receiver acknowledged {acked} of {count} datagrams, then nothing for \
                 {seconds} s"
            ),
            NicError::NoVerdict { peer, seconds } => format!(
                "every datagram was acknowledged, but peer {peer} sent no verdict within \
                 {seconds} s of END"
            ),
            NicError::NoSender { listen, seconds } => {
                format!("no sender sent START to {listen} within {seconds} s")
            }
            NicError::DataStalled {
                received,
                count,
                seconds,
            } => format!(
                "received {received} of {count} datagrams, then nothing for {seconds} s: a \
                 datagram was lost (the stream has no retransmission)"
            ),
            NicError::NoEnd { peer, seconds } => {
                format!("every datagram arrived, but peer {peer} sent no END within {seconds} s")
            }
            NicError::IdentMismatch {
                index,
                got,
                expected,
            } => format!(
                "datagram {index} carried IPv4 ident {got:#06x}, expected {expected:#06x}: a \
                 frame was lost or reordered"
            ),
            NicError::WrongLength {
                index,
                got,
                expected,
            } => format!(
                "datagram {index} carried {got} bytes, the plan says {expected}: not this \
                 stream's datagram, or a frame was lost"
            ),
            NicError::ShortStream {
                received,
                sent,
                count,
            } => format!("the sender says it sent {sent} of {count} datagrams, {received} arrived"),
            NicError::PeerAborted { peer, reason } => {
                format!("peer {peer} aborted the stream: {reason}")
            }
            NicError::PeerGone { peer, during } => format!(
                "the host of peer {peer} answered \"port unreachable\" while {during}: its \
                 receiver is gone"
            ),
            NicError::PeerVerdict {
                peer,
                verified,
                total,
                first,
                message,
            } => format!(
                "the receiver at {peer} checked {verified} of {total} bytes and did not accept \
                 them{}: {message}",
                first.map_or_else(String::new, |f| format!(
                    " (first difference at offset {f:#x})"
                ))
            ),
            NicError::MtuMismatch { peer, payload, mtu } => format!(
                "peer {peer} sends datagrams of {payload} bytes, more than this end's MTU of \
                 {mtu} lets a frame carry ({} bytes)",
                super::plan::max_payload(*mtu)
            ),
            NicError::Protocol { peer, what } => {
                format!("peer {peer} broke the stream protocol: {what}")
            }
            NicError::TooLarge { total, room, dst } => {
                format!("the sender wants to send {total:#x} bytes, {dst} holds {room:#x}")
            }
            NicError::BadAddress { given, why } => format!("{given:?} is no UDP address: {why}"),
            NicError::NoMemory { bytes } => {
                format!("{bytes:#x} bytes of host memory cannot be allocated here")
            }
            NicError::Io { doing, error } => format!("{doing} failed: {error}"),
            NicError::Unavailable { why, .. } => why.clone(),
        }
    }

    /// What to do about it (never a command-line flag).
    pub fn fix(&self) -> String {
        match self {
            NicError::Plan(e) => e.fix(),
            NicError::NoAnswer { .. } => "start the receiver first, check the address, port \
                                          and route (and that no firewall drops UDP there); a \
                                          NIC side finds the peer's MAC by ARP, so the peer \
                                          must be on its link"
                .into(),
            NicError::AckStalled { .. } | NicError::DataStalled { .. } => {
                "check the link and the receiver's output; a smaller window or payload size \
                 loses fewer frames on a busy link"
                    .into()
            }
            NicError::NoVerdict { .. } | NicError::NoEnd { .. } => "check the peer's output".into(),
            NicError::NoSender { .. } => {
                "start the sender towards this address and port, or wait longer".into()
            }
            NicError::IdentMismatch { .. } => "run again; if it repeats at the same datagram, \
                                               check what else sends to this address (an ARP \
                                               probe, another sender)"
                .into(),
            NicError::WrongLength { .. } => {
                "make sure only the one sender sends to this port".into()
            }
            NicError::ShortStream { .. } => "run again; the link lost frames".into(),
            NicError::PeerAborted { .. }
            | NicError::PeerVerdict { .. }
            | NicError::PeerGone { .. } => "see the peer's output".into(),
            NicError::MtuMismatch { payload, .. } => format!(
                "give both ends the same MTU (these datagrams need {} or more)",
                payload + super::plan::IP_UDP_HEADERS
            ),
            NicError::Protocol { .. } => "run the same peerdma version on both ends".into(),
            NicError::TooLarge { .. } => "send fewer bytes, or give the receiver a larger \
                                          destination"
                .into(),
            NicError::BadAddress { .. } => {
                format!(
                    "give IPV4:PORT, a host name, or udp://HOST:PORT (port 1 to 65535, default {})",
                    super::DEFAULT_PORT
                )
            }
            NicError::NoMemory { .. } => "stream fewer bytes".into(),
            NicError::Io { .. } => "check the address is configured on this host, and the \
                                    port is free"
                .into(),
            NicError::Unavailable { fix, .. } => fix.clone(),
        }
    }

    /// A stable, machine-readable name (`nic_no_answer`, `nic_ident_mismatch`).
    pub fn kind(&self) -> &'static str {
        match self {
            NicError::Plan(_) => "nic_plan",
            NicError::NoAnswer { .. } => "nic_no_answer",
            NicError::AckStalled { .. } => "nic_ack_stalled",
            NicError::NoVerdict { .. } => "nic_no_verdict",
            NicError::NoSender { .. } => "nic_no_sender",
            NicError::DataStalled { .. } => "nic_data_stalled",
            NicError::NoEnd { .. } => "nic_no_end",
            NicError::IdentMismatch { .. } => "nic_ident_mismatch",
            NicError::WrongLength { .. } => "nic_wrong_length",
            NicError::ShortStream { .. } => "nic_short_stream",
            NicError::PeerAborted { .. } => "nic_peer_aborted",
            NicError::PeerVerdict { .. } => "nic_peer_verdict",
            NicError::PeerGone { .. } => "nic_peer_gone",
            NicError::MtuMismatch { .. } => "nic_mtu_mismatch",
            NicError::Protocol { .. } => "nic_protocol",
            NicError::TooLarge { .. } => "nic_too_large",
            NicError::BadAddress { .. } => "nic_bad_address",
            NicError::NoMemory { .. } => "nic_no_memory",
            NicError::Io { .. } => "nic_io",
            NicError::Unavailable { .. } => "nic_unavailable",
        }
    }

    /// `Io` for a failed socket call.
    pub(crate) fn io(doing: impl Into<String>, e: &std::io::Error) -> NicError {
        let error = match e.raw_os_error() {
            Some(n) => format!("{} ({e})", peerdma_host::errno_name_raw(n)),
            None => e.to_string(),
        };
        NicError::Io {
            doing: doing.into(),
            error,
        }
    }
}

impl fmt::Display for NicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; fix: {}", self.what(), self.fix())
    }
}

impl std::error::Error for NicError {}

impl From<PlanError> for NicError {
    fn from(e: PlanError) -> NicError {
        NicError::Plan(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_says_what_and_a_fix_and_names_no_flag() {
        let peer = || "10.77.0.1:18521".to_string();
        let errors = [
            NicError::Plan(PlanError::TooShort { total: 3 }),
            NicError::NoAnswer {
                peer: peer(),
                seconds: 60,
            },
            NicError::AckStalled {
                acked: 4096,
                count: 10_000,
                seconds: 10,
            },
            NicError::NoVerdict {
                peer: peer(),
                seconds: 60,
            },
            NicError::NoSender {
                listen: peer(),
                seconds: 5,
            },
            NicError::DataStalled {
                received: 1,
                count: 2,
                seconds: 10,
            },
            NicError::NoEnd {
                peer: peer(),
                seconds: 60,
            },
            NicError::IdentMismatch {
                index: 17,
                got: 0x1234,
                expected: 0x1235,
            },
            NicError::WrongLength {
                index: 1,
                got: 60,
                expected: 1472,
            },
            NicError::ShortStream {
                received: 1,
                sent: 2,
                count: 2,
            },
            NicError::PeerAborted {
                peer: peer(),
                reason: "x".into(),
            },
            NicError::PeerVerdict {
                peer: peer(),
                verified: 1,
                total: 2,
                first: Some(1),
                message: "m".into(),
            },
            NicError::Protocol {
                peer: peer(),
                what: "w".into(),
            },
            NicError::TooLarge {
                total: 2,
                room: 1,
                dst: "d".into(),
            },
            NicError::io(
                "binding 10.0.0.1:18521",
                &std::io::Error::from_raw_os_error(98),
            ),
            NicError::Unavailable {
                why: "w".into(),
                fix: "f".into(),
            },
            NicError::NoMemory { bytes: 1 << 62 },
            NicError::PeerGone {
                peer: peer(),
                during: "sending datagram 3".into(),
            },
            NicError::BadAddress {
                given: "x".into(),
                why: "w".into(),
            },
        ];
        let mut kinds = std::collections::HashSet::new();
        for e in errors {
            let msg = e.to_string();
            assert_eq!(msg, format!("{}; fix: {}", e.what(), e.fix()));
            assert!(!msg.contains("--"), "{msg}");
            assert!(kinds.insert(e.kind()), "{}", e.kind());
            let copy = crate::CopyError::from(e);
            assert!(copy.is_own() && copy.to_string() == msg, "{msg}");
        }
        assert_eq!(
            NicError::IdentMismatch {
                index: 17,
                got: 0x1234,
                expected: 0x1235
            }
            .what(),
            "datagram 17 carried IPv4 ident 0x1234, expected 0x1235: a frame was lost or \
             reordered"
        );
        let io = NicError::io(
            "binding 10.0.0.1:18521",
            &std::io::Error::from_raw_os_error(98),
        );
        assert!(
            io.what()
                .starts_with("binding 10.0.0.1:18521 failed: EADDRINUSE"),
            "{io}"
        );
    }
}
