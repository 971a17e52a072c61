//! The RDMA path: the sender ([`send`]) writes a span of local memory (host
//! memory or a BAR through its dma-buf) into the receiver's memory with RDMA
//! WRITE over one or more RC QPs; the receiver ([`serve`]) exposes its
//! destination (host memory or a BAR), waits for one sender, checks every
//! byte and tells the sender what it found. RDMA CM finds the local RDMA
//! device by the peer's IP address.
//!
//! Where a BAR's dma-buf cannot be registered (soft-RoCE has no dma-buf MRs;
//! see `peerdma_importer::rdma::device`), that side goes through a host MR
//! the CPU copies the BAR through: the report says the path is NOT
//! peer-to-peer and why — never silently.

mod memory;
mod send;
mod serve;
mod wire;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde::Serialize;

pub use memory::LocalSpec;
pub use send::{send, SendRequest};
pub use serve::{serve, ServeRequest};
pub use wire::{Accept, Done, Hello, Verdict};

use super::CopyError;

/// The port `p2pcopy --serve` listens on unless told.
pub const DEFAULT_PORT: u16 = 18520;

/// How long a peer may take to connect, answer, or finish.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What an RDMA copy reports, on either side.
#[derive(Clone, Debug, Serialize)]
pub struct RdmaReport {
    /// `sender` or `receiver`.
    pub role: &'static str,
    /// Always `rdma` (the key older reports call `engine`).
    pub engine: &'static str,
    /// This side's memory.
    pub local: String,
    /// The other side's memory, as it described it.
    pub remote: String,
    /// The peer's address.
    pub peer: String,
    /// The RDMA device used here.
    pub device: String,
    /// Its kernel driver.
    pub driver: String,
    /// QPs used.
    pub qps: u8,
    /// Bytes moved.
    pub bytes: u64,
    /// Seconds (sender: first WRITE to last completion; receiver: connection
    /// to the sender's last message).
    pub seconds: f64,
    /// Throughput in GB/s (10^9 bytes per second).
    pub gbps: f64,
    /// The receiver checked every byte and all matched.
    pub verified: bool,
    /// Whether device memory (a BAR) is at either end and the NICs read and
    /// wrote every device-memory end directly (no end staged).
    pub peer_to_peer: bool,
    /// The device-memory ends that went through host memory, and why: each
    /// makes the path NOT peer-to-peer (empty when none was staged).
    pub not_p2p: Vec<String>,
}

/// Parses `rdma://HOST:PORT` (or `HOST:PORT`, `HOST`: the default port).
///
/// # Errors
///
/// [`CopyError::BadPeerPort`] for port 0 or a number past 65535;
/// [`CopyError::BadPeer`] when the host does not resolve.
pub fn parse_peer(s: &str) -> Result<SocketAddr, CopyError> {
    let rest = s.strip_prefix("rdma://").unwrap_or(s);
    // HOST:DIGITS (or [V6]:DIGITS) whose digits are no port: say so, not "cannot resolve".
    if let Some((host, port)) = rest.rsplit_once(':') {
        let v4_or_name = !host.contains(':');
        let v6 = host.starts_with('[') && host.ends_with(']');
        if (v4_or_name || v6)
            && !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().map_or(true, |p| p == 0)
        {
            return Err(CopyError::BadPeerPort {
                peer: s.to_string(),
                port: port.to_string(),
            });
        }
    }
    let with_port = if rest.parse::<SocketAddr>().is_ok()
        || rest
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.contains(':') && p.parse::<u16>().is_ok())
    {
        rest.to_string()
    } else {
        format!("{rest}:{DEFAULT_PORT}")
    };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| CopyError::BadPeer {
            peer: s.to_string(),
        })
}

pub(super) fn rate(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 / seconds / 1e9
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_with_and_without_scheme_and_port() {
        assert_eq!(
            parse_peer("rdma://10.0.0.2:7000").unwrap(),
            "10.0.0.2:7000".parse().unwrap()
        );
        assert_eq!(parse_peer("10.0.0.2").unwrap().port(), DEFAULT_PORT);
        assert_eq!(parse_peer("rdma://10.0.0.2").unwrap().port(), DEFAULT_PORT);
        assert!(parse_peer("rdma://no.such.host.invalid:1").is_err());
        for (peer, port) in [
            ("rdma://10.0.0.2:0", "0"),
            ("rdma://10.0.0.2:99999", "99999"),
            ("10.0.0.2:65536", "65536"),
            ("rdma://[fe80::1]:0", "0"),
        ] {
            match parse_peer(peer) {
                Err(CopyError::BadPeerPort { port: p, .. }) => assert_eq!(p, port, "{peer}"),
                other => panic!("{peer}: {other:?}"),
            }
        }
        let e = parse_peer("rdma://10.0.0.2:99999").unwrap_err().to_string();
        assert!(
            e.contains("port 99999") && !e.contains("cannot resolve"),
            "{e}"
        );
        assert_eq!(parse_peer("[fe80::1]:7000").unwrap().port(), 7000);
    }
}
