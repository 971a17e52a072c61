//! Packet formats the NIC engine sends and receives, as pure functions on byte slices
//! (no I/O, no unsafe): Ethernet II (IEEE 802.3 clause 3, the DIX type field), IPv4
//! (RFC 791) without options, UDP (RFC 768) and ARP for IPv4 over Ethernet (RFC 826).
//!
//! - [`MacAddr`] ([`mac`]): a 48-bit Ethernet address, `52:54:00:12:34:56`;
//! - [`udp`]: the 42 bytes before a UDP payload ([`udp_headers`]), their parse
//!   ([`parse_udp_headers`], [`NotUdp`] saying why a frame is not plain IPv4/UDP) and
//!   the IPv4 header checksum ([`ipv4_checksum`], RFC 1071);
//! - [`arp`]: ARP request/reply frames, built and parsed.
//!
//! The wire format the peerdma NIC stream uses on top of these is in docs/nic.md.

pub mod arp;
pub mod mac;
pub mod udp;

pub use arp::{arp_frame, parse_arp, Arp, ArpOp, NotArp, ARP_FRAME};
pub use mac::{MacAddr, ParseMacError};
pub use udp::{ipv4_checksum, parse_udp_headers, udp_headers, NotUdp, UdpEndpoint, UdpHeaders};

/// Ethernet II header: destination MAC, source MAC, EtherType (bytes).
pub const ETH_HEADER: usize = 14;
/// IPv4 header without options (IHL 5), bytes (RFC 791 section 3.1).
pub const IPV4_HEADER: usize = 20;
/// UDP header, bytes (RFC 768).
pub const UDP_HEADER: usize = 8;
/// Everything before a UDP payload in an Ethernet frame: 14 + 20 + 8 bytes.
pub const UDP_HEADERS: usize = ETH_HEADER + IPV4_HEADER + UDP_HEADER;
/// The shortest Ethernet frame without its 4-byte FCS (64 bytes on the wire): a NIC pads
/// shorter frames to this on receive (QEMU's igb writes the padding as payload).
pub const MIN_FRAME: usize = 60;
/// The shortest UDP payload whose frame needs no padding: 60 − 42 = 18 bytes.
pub const MIN_UDP_PAYLOAD: usize = MIN_FRAME - UDP_HEADERS;
/// IPv4 and UDP headers together: an MTU's largest UDP payload is MTU − 28.
pub const IP_UDP_OVERHEAD: usize = IPV4_HEADER + UDP_HEADER;

/// EtherType of IPv4 (IEEE registry, RFC 894).
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP (RFC 826).
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// IPv4 protocol number of UDP (IANA, RFC 768).
pub const IPPROTO_UDP: u8 = 17;
