//! The NIC path: a stream of UDP/IPv4 datagrams from a sender ([`send`]) to a
//! receiver ([`serve`]), the receiver checking every byte and telling the sender its
//! verdict. The framing is plain Ethernet II + IPv4 + UDP (docs/nic.md), so one end
//! can be an ordinary kernel socket and tcpdump or Wireshark can read the wire.
//!
//! Each end moves its bytes one of two ways:
//!
//! - with no NIC device named, a kernel socket ([`std::net::UdpSocket`], connected)
//!   on whatever NIC routes to the peer, through host memory: NOT peer-to-peer, and
//!   the report says so;
//! - with a NIC device (an Intel 82576, igb, bound to vfio-pci), the engine crate's
//!   user-space igb driver DMAs data datagrams straight out of (or into) a BAR span
//!   through its dma-buf: peer-to-peer.
//!
//! The protocol itself ([`Sender`], [`Receiver`]) has no IO: both IOs drive the same
//! state machines. Messages: [`wire`]; the cut into datagrams: [`plan`].

mod error;
mod igb_io;
pub mod plan;
mod receiver;
mod sender;
mod socket;
pub mod wire;

use std::net::SocketAddr;
use std::time::Duration;

use peerdma_exporter::AccessPath;
use peerdma_host::Bdf;
use serde::Serialize;

pub use error::NicError;
pub use plan::{Datagram, Plan, PlanError};
pub use receiver::{Checked, Receiver, ReceiverAction, ReceiverConfig, ReceiverOutcome};
pub use sender::{data_ident, Sender, SenderAction, SenderConfig, SenderOutcome};

use crate::CopyError;

/// The UDP port a receiver listens on unless told (RDMA's is 18520).
pub const DEFAULT_PORT: u16 = 18521;

/// How long a peer may take to answer START or END, and a receiver waits for START
/// unless told.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the data (or its ACKs) may stop before the stream is given up.
pub const DEFAULT_STALL: Duration = Duration::from_secs(10);

/// Host-memory sources default to this size.
pub const HOST_DEFAULT_SIZE: u64 = 16 << 20;

/// The most a kernel-socket receiver offers as its window; fewer where its receive
/// buffer (raised to what the kernel allows) holds fewer datagrams at their skb
/// truesize (`socket.rs`, `window_for`).
pub const SOCKET_WINDOW: u32 = 64;

/// How long a receiver answers a repeated END with its verdict again.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(2);

/// What one end of a NIC stream is: host memory (the only memory a kernel socket
/// moves) or a BAR span (needs a NIC device).
pub use crate::LocalSpec;

/// What to send where.
#[derive(Clone, Debug)]
pub struct SendRequest {
    /// The source.
    pub src: LocalSpec,
    /// The receiver.
    pub peer: SocketAddr,
    /// This side's address: the kernel socket binds it (`None`: any); a NIC sender
    /// needs it (its IPv4 address on the wire).
    pub bind: Option<SocketAddr>,
    /// The NIC (`None`: a kernel socket).
    pub nic: Option<Bdf>,
    /// Bytes (`None`: the BAR's span past the offset; host memory:
    /// [`HOST_DEFAULT_SIZE`]).
    pub size: Option<u64>,
    /// Bytes per data datagram (P ≤ MTU − 28).
    pub payload: u32,
    /// The link's MTU.
    pub mtu: u32,
    /// Pattern seed.
    pub seed: u64,
    /// VFIO access path for a BAR source and the NIC.
    pub access: AccessPath,
    /// How long the receiver may take to answer START, and END.
    pub timeout: Duration,
    /// How long its ACKs may stop.
    pub stall: Duration,
    /// Test hook (feature `testing`): turn the source BAR's memory decode off right
    /// after data datagram N is sent (a NIC side; the stream meets the revoke).
    #[cfg(feature = "testing")]
    pub test_revoke_after: Option<u64>,
}

impl SendRequest {
    /// A stream of `src` to `peer` with the pattern of `seed` over a kernel socket,
    /// and the defaults: MTU 1500, P = 1472, 60 s to answer, 10 s of silence at most.
    pub fn new(src: LocalSpec, peer: SocketAddr, seed: u64) -> SendRequest {
        SendRequest {
            src,
            peer,
            bind: None,
            nic: None,
            size: None,
            payload: plan::max_payload(plan::DEFAULT_MTU),
            mtu: plan::DEFAULT_MTU,
            seed,
            access: AccessPath::Auto,
            timeout: DEFAULT_TIMEOUT,
            stall: DEFAULT_STALL,
            #[cfg(feature = "testing")]
            test_revoke_after: None,
        }
    }
}

/// What to receive into, where.
#[derive(Clone, Debug)]
pub struct ServeRequest {
    /// The destination.
    pub dst: LocalSpec,
    /// Address and port to listen on (a NIC receiver: its IPv4 address on the wire).
    pub listen: SocketAddr,
    /// The NIC (`None`: a kernel socket).
    pub nic: Option<Bdf>,
    /// The window offered (`None`: [`SOCKET_WINDOW`] on a socket, the RX ring's
    /// free slots on a NIC).
    pub window: Option<u32>,
    /// The link's MTU.
    pub mtu: u32,
    /// VFIO access path for a BAR destination and the NIC.
    pub access: AccessPath,
    /// How long to wait for START (`None`: forever).
    pub wait: Option<Duration>,
    /// How long the sender may take to send END after the last datagram.
    pub timeout: Duration,
    /// How long the data may stop before the last datagram.
    pub stall: Duration,
    /// The largest host-memory destination to allocate.
    pub max_host_size: u64,
    /// How long the verdict is sent again for a repeated END.
    pub linger: Duration,
    /// Test hook (feature `testing`): turn the destination BAR's memory decode off
    /// right after data datagram N arrived (a NIC side; the stream meets the revoke).
    #[cfg(feature = "testing")]
    pub test_revoke_after: Option<u64>,
}

impl ServeRequest {
    /// A kernel-socket receiver into host memory on `listen`, and the defaults: MTU
    /// 1500, waiting for START forever, 60 s for END, 10 s of silence at most, at most
    /// 1 GiB of host memory.
    pub fn new(dst: LocalSpec, listen: SocketAddr) -> ServeRequest {
        ServeRequest {
            dst,
            listen,
            nic: None,
            window: None,
            mtu: plan::DEFAULT_MTU,
            access: AccessPath::Auto,
            wait: None,
            timeout: DEFAULT_TIMEOUT,
            stall: DEFAULT_STALL,
            max_host_size: 1 << 30,
            linger: DEFAULT_LINGER,
            #[cfg(feature = "testing")]
            test_revoke_after: None,
        }
    }
}

/// What a NIC stream reports, on either side.
#[derive(Clone, Debug, Serialize)]
pub struct NicReport {
    /// `sender` or `receiver`.
    pub role: &'static str,
    /// Always `nic`.
    pub engine: &'static str,
    /// This side's memory.
    pub local: String,
    /// The other side's memory, as it described it.
    pub remote: String,
    /// The peer's address.
    pub peer: String,
    /// The NIC used here: its BDF, or `kernel socket on IFACE`.
    pub device: String,
    /// Whether this side's NIC DMAed the data straight from (or into) device memory.
    pub peer_to_peer: bool,
    /// Why it is or is not peer-to-peer.
    pub peer_to_peer_why: String,
    /// Data datagrams.
    pub datagrams: u64,
    /// Bytes per data datagram (P).
    pub payload_size: u32,
    /// Bytes moved.
    pub bytes: u64,
    /// Seconds (sender: first data datagram sent to the ACK of the last; receiver:
    /// first data datagram arrived to the last).
    pub seconds: f64,
    /// Throughput in GB/s (10^9 bytes per second).
    pub gbps: f64,
    /// Data datagrams per second.
    pub frames_per_s: f64,
    /// The pattern's seed (the sender's, sent in START): with it the stream's bytes can
    /// be made again (`pattern::fill`).
    pub seed: u64,
    /// The receiver checked every byte and all matched.
    pub verified: bool,
    /// The receiver's verdict, in its words.
    pub verdict: String,
}

/// Why a kernel-socket side is not peer-to-peer.
pub const SOCKET_NOT_P2P: &str =
    "NOT peer-to-peer: a kernel socket on an ordinary NIC, through host memory";

/// Sends; `progress(done, total)` now and then (bytes sent).
///
/// # Errors
///
/// [`CopyError::Nic`]: a plan that cannot be made, a peer that never answers, ACKs
/// that stop, a verdict that refuses the bytes, an ABORT, a socket that fails; a BAR
/// source's open, span and alignment errors.
pub fn send(req: &SendRequest, progress: &mut dyn FnMut(u64, u64)) -> Result<NicReport, CopyError> {
    match req.nic {
        None => socket::send(req, progress),
        Some(nic) => igb_io::send(nic, req, progress),
    }
}

/// Serves one sender; `on_listen` is told the address once listening.
///
/// # Errors
///
/// [`CopyError::Nic`]: no START in time, data that stops, a lost or reordered frame
/// (NIC side), a short stream, a START that makes no plan or does not fit, a socket
/// that fails; a BAR destination's open, span and alignment errors;
/// [`CopyError::Mismatch`] when the check finds other bytes (the sender is told).
pub fn serve(
    req: &ServeRequest,
    on_listen: &mut dyn FnMut(SocketAddr),
) -> Result<NicReport, CopyError> {
    match req.nic {
        None => socket::serve(req, on_listen),
        Some(nic) => igb_io::serve(nic, req, on_listen),
    }
}

/// Parses a peer or listen address: `udp://HOST:PORT`, `HOST:PORT`, or `HOST` (port
/// [`DEFAULT_PORT`]); HOST an IPv4 address or a name that resolves to one.
///
/// # Errors
///
/// [`NicError::BadAddress`]: port 0 or past 65535, a host that does not resolve, an
/// IPv6 address (the NIC stream is IPv4).
pub fn parse_addr(s: &str) -> Result<SocketAddr, NicError> {
    use std::net::ToSocketAddrs;
    let bad = |why: &str| NicError::BadAddress {
        given: s.to_string(),
        why: why.to_string(),
    };
    let rest = s.strip_prefix("udp://").unwrap_or(s);
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad(&format!("port {p} is not 1 to 65535")))?;
            (h, port)
        }
        Some(_) => return Err(bad("the NIC stream is IPv4")),
        None => (rest, DEFAULT_PORT),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.find(SocketAddr::is_ipv4))
        .ok_or_else(|| bad("the host does not resolve to an IPv4 address"))
}

/// A stream id: the clock's nanoseconds, the process and the seed mixed.
pub(crate) fn stream_id(seed: u64) -> u32 {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let x = clock ^ u64::from(std::process::id()).rotate_left(32) ^ seed.rotate_left(17);
    (x ^ (x >> 32)) as u32
}

fn rate(x: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        x / seconds
    } else {
        0.0
    }
}

/// The report's throughput fields from `bytes`, `datagrams` and `seconds`.
pub(crate) fn rates(bytes: u64, datagrams: u64, seconds: f64) -> (f64, f64) {
    (
        rate(bytes as f64, seconds) / 1e9,
        rate(datagrams as f64, seconds),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_and_without_scheme_and_port() {
        assert_eq!(
            parse_addr("udp://10.77.0.1:7000").unwrap(),
            "10.77.0.1:7000".parse().unwrap()
        );
        assert_eq!(parse_addr("10.77.0.1").unwrap().port(), DEFAULT_PORT);
        assert_eq!(parse_addr("udp://10.77.0.1").unwrap().port(), DEFAULT_PORT);
        assert_eq!(
            parse_addr("0.0.0.0:0").unwrap_err().kind(),
            "nic_bad_address"
        );
        for bad in [
            "10.0.0.1:0",
            "10.0.0.1:65536",
            "[fe80::1]:7000",
            "fe80::1",
            "",
            "udp://",
        ] {
            let e = parse_addr(bad).unwrap_err();
            assert_eq!(e.kind(), "nic_bad_address", "{bad}: {e}");
        }
        assert!(parse_addr("10.0.0.1:99999")
            .unwrap_err()
            .what()
            .contains("port 99999"));
        assert!(parse_addr("no.such.host.invalid").is_err());
    }
}
