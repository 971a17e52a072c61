//! The datagram plan of a stream: how `total` bytes are cut into N data datagrams
//! of payload size P (docs/nic.md, "Datagrams").
//!
//! Datagram k (0-based) carries stream bytes `[k·P, k·P + P)`; the last one carries
//! the rest. QEMU's igb pads a received frame shorter than 60 bytes to 60 and writes
//! the padding as payload (hw/net/igb_core.c), so every datagram's UDP payload is at
//! least [`MIN_DATAGRAM`] bytes (14 Ethernet + 20 IPv4 + 8 UDP + 18 = 60): where the
//! rest would be shorter, the last two datagrams share the last P + rest bytes, the
//! last carrying 18.

use std::fmt;

/// The smallest UDP payload of a datagram: 60-byte minimum frame − 42 bytes of headers.
pub const MIN_DATAGRAM: u32 = 18;

/// The smallest payload size P: two minimum datagrams, so that the last two can always
/// share the tail.
pub const MIN_PAYLOAD: u32 = 2 * MIN_DATAGRAM;

/// IPv4 (20, no options) and UDP (8) headers: P ≤ MTU − 28.
pub const IP_UDP_HEADERS: u32 = 28;

/// The Ethernet MTU most links have (P ≤ 1472).
pub const DEFAULT_MTU: u32 = 1500;

/// The largest MTU this plan takes (jumbo frames; igb needs RCTL.LPE and RLPML for
/// frames past 1522 bytes).
pub const MAX_MTU: u32 = 9000;

/// The largest payload size for `mtu`.
pub fn max_payload(mtu: u32) -> u32 {
    mtu.saturating_sub(IP_UDP_HEADERS)
}

/// Where one data datagram's bytes are in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Stream offset of its first byte.
    pub offset: u64,
    /// Its UDP payload length.
    pub len: u32,
}

/// Why a stream cannot be planned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// Fewer bytes than one minimum datagram.
    TooShort {
        /// Bytes asked for.
        total: u64,
    },
    /// A payload size below [`MIN_PAYLOAD`].
    PayloadTooSmall {
        /// P asked for.
        payload: u32,
    },
    /// A payload size the MTU cannot carry.
    PayloadTooLarge {
        /// P asked for.
        payload: u32,
        /// The MTU.
        mtu: u32,
    },
    /// An odd payload size or total for a NIC receiver, whose RX packet addresses
    /// must be even (bit 0 of the packet address in the 82576's advanced RX descriptor is
    /// A0/NSE, no-snoop enable: `peerdma_uapi::igb`).
    Odd {
        /// P.
        payload: u32,
        /// Bytes in the stream.
        total: u64,
    },
    /// An MTU outside 576 to 9000.
    Mtu {
        /// The MTU asked for.
        mtu: u32,
    },
}

impl PlanError {
    /// What is wrong, without the fix.
    pub fn what(&self) -> String {
        match self {
            PlanError::TooShort { total } => format!(
                "a stream of {total} bytes is shorter than one datagram's minimum payload of \
                 {MIN_DATAGRAM} bytes (QEMU's igb pads a shorter frame to 60 bytes and writes \
                 the padding as payload)"
            ),
            PlanError::PayloadTooSmall { payload } => format!(
                "a payload size of {payload} bytes per datagram is below {MIN_PAYLOAD} (the \
                 last two datagrams must both carry at least {MIN_DATAGRAM})"
            ),
            PlanError::PayloadTooLarge { payload, mtu } => format!(
                "a payload size of {payload} bytes does not fit an MTU of {mtu} (at most {} = \
                 MTU − 20 IPv4 − 8 UDP)",
                max_payload(*mtu)
            ),
            PlanError::Mtu { mtu } => {
                format!("an MTU of {mtu} bytes is outside 576 to {MAX_MTU}")
            }
            PlanError::Odd { payload, total } => format!(
                "a NIC receiver places every datagram at an even offset (the 82576's RX \
                 packet address has its no-snoop bit as bit 0), and {payload} bytes per \
                 datagram in a stream of {total} bytes give odd ones"
            ),
        }
    }

    /// What to do about it.
    pub fn fix(&self) -> String {
        match self {
            PlanError::TooShort { .. } => format!("send {MIN_DATAGRAM} bytes or more"),
            PlanError::PayloadTooSmall { .. } => format!("use {MIN_PAYLOAD} bytes or more"),
            PlanError::PayloadTooLarge { mtu, .. } => format!(
                "use at most {} bytes, or a larger MTU on both ends (igb takes up to {MAX_MTU})",
                max_payload(*mtu)
            ),
            PlanError::Mtu { .. } => format!("use 1500, or a jumbo MTU up to {MAX_MTU}"),
            PlanError::Odd { .. } => {
                "send an even number of bytes in datagrams of an even size (1472 is)".into()
            }
        }
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; fix: {}", self.what(), self.fix())
    }
}

impl std::error::Error for PlanError {}

/// A stream cut into data datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    total: u64,
    payload: u32,
    count: u64,
}

impl Plan {
    /// Plans `total` bytes in datagrams of `payload` bytes on a link of `mtu`.
    ///
    /// # Errors
    ///
    /// [`PlanError`]: fewer than 18 bytes, P below 36, P past MTU − 28, an MTU outside
    /// 576..=9000.
    pub fn new(total: u64, payload: u32, mtu: u32) -> Result<Plan, PlanError> {
        if !(576..=MAX_MTU).contains(&mtu) {
            return Err(PlanError::Mtu { mtu });
        }
        if payload < MIN_PAYLOAD {
            return Err(PlanError::PayloadTooSmall { payload });
        }
        if payload > max_payload(mtu) {
            return Err(PlanError::PayloadTooLarge { payload, mtu });
        }
        if total < u64::from(MIN_DATAGRAM) {
            return Err(PlanError::TooShort { total });
        }
        Ok(Plan {
            total,
            payload,
            count: total.div_ceil(u64::from(payload)),
        })
    }

    /// The plan a START describes: `None` when its fields make no plan on a link of
    /// `mtu`, or its count is not the one its total and payload size give.
    pub fn from_start(total: u64, payload: u32, count: u64, mtu: u32) -> Option<Plan> {
        Plan::new(total, payload, mtu)
            .ok()
            .filter(|p| p.count == count)
    }

    /// Bytes in the stream.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Payload size P.
    pub fn payload(&self) -> u32 {
        self.payload
    }

    /// Datagrams N.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Datagram `k` (0-based), or `None` past the last.
    pub fn datagram(&self, k: u64) -> Option<Datagram> {
        if k >= self.count {
            return None;
        }
        let p = u64::from(self.payload);
        let last = self.count - 1;
        let rest = self.total - last * p;
        let short_tail = self.count >= 2 && rest < u64::from(MIN_DATAGRAM);
        let (offset, len) = if short_tail && k == last {
            (
                self.total - u64::from(MIN_DATAGRAM),
                u64::from(MIN_DATAGRAM),
            )
        } else if short_tail && k == last - 1 {
            (k * p, p + rest - u64::from(MIN_DATAGRAM))
        } else if k == last {
            (k * p, rest)
        } else {
            (k * p, p)
        };
        Some(Datagram {
            offset,
            len: len as u32,
        })
    }

    /// The datagrams in order.
    pub fn iter(&self) -> impl Iterator<Item = Datagram> + '_ {
        (0..self.count).map_while(|k| self.datagram(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte is in exactly one datagram, in order, and each is 18..=P bytes.
    fn check(plan: &Plan) {
        let mut at = 0;
        for d in plan.iter() {
            assert_eq!(d.offset, at, "{plan:?}");
            assert!(
                d.len >= MIN_DATAGRAM && d.len <= plan.payload(),
                "{plan:?} {d:?}"
            );
            at += u64::from(d.len);
        }
        assert_eq!(at, plan.total(), "{plan:?}");
        assert_eq!(plan.iter().count() as u64, plan.count());
        assert_eq!(plan.datagram(plan.count()), None);
    }

    #[test]
    fn full_datagrams_and_a_tail() {
        let p = Plan::new(10_000 * 1472, 1472, DEFAULT_MTU).unwrap();
        assert_eq!(p.count(), 10_000);
        check(&p);
        let p = Plan::new(4096, 1472, DEFAULT_MTU).unwrap();
        assert_eq!(p.count(), 3);
        assert_eq!(
            p.datagram(2),
            Some(Datagram {
                offset: 2944,
                len: 1152
            })
        );
        check(&p);
    }

    #[test]
    fn a_short_tail_is_shared_by_the_last_two() {
        // 1472 + 1: the rest of 1 byte cannot be a datagram of its own.
        let p = Plan::new(1473, 1472, DEFAULT_MTU).unwrap();
        assert_eq!(p.count(), 2);
        assert_eq!(
            p.datagram(0),
            Some(Datagram {
                offset: 0,
                len: 1455
            })
        );
        assert_eq!(
            p.datagram(1),
            Some(Datagram {
                offset: 1455,
                len: 18
            })
        );
        check(&p);
        // The smallest P: the last two are 19 and 18.
        let p = Plan::new(3 * 36 + 1, MIN_PAYLOAD, DEFAULT_MTU).unwrap();
        assert_eq!(p.datagram(2).unwrap().len, 19);
        assert_eq!(p.datagram(3).unwrap().len, 18);
        check(&p);
        // A rest of exactly 18 stays as it is.
        let p = Plan::new(1472 + 18, 1472, DEFAULT_MTU).unwrap();
        assert_eq!(p.datagram(0).unwrap().len, 1472);
        assert_eq!(p.datagram(1).unwrap().len, 18);
        for total in 18..400 {
            for payload in [36, 37, 50, 64, 100] {
                check(&Plan::new(total, payload, DEFAULT_MTU).unwrap());
            }
        }
    }

    #[test]
    fn one_datagram_streams() {
        for total in [18, 19, 1471, 1472] {
            let p = Plan::new(total, 1472, DEFAULT_MTU).unwrap();
            assert_eq!(p.count(), 1);
            assert_eq!(p.datagram(0).unwrap().len as u64, total);
        }
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(
            Plan::new(17, 1472, DEFAULT_MTU),
            Err(PlanError::TooShort { total: 17 })
        );
        assert_eq!(
            Plan::new(0, 1472, DEFAULT_MTU),
            Err(PlanError::TooShort { total: 0 })
        );
        assert_eq!(
            Plan::new(1 << 20, 1473, DEFAULT_MTU),
            Err(PlanError::PayloadTooLarge {
                payload: 1473,
                mtu: 1500
            })
        );
        assert!(Plan::new(1 << 20, 8972, MAX_MTU).is_ok());
        assert!(Plan::new(1 << 20, 8973, MAX_MTU).is_err());
        assert_eq!(
            Plan::new(1 << 20, 35, DEFAULT_MTU),
            Err(PlanError::PayloadTooSmall { payload: 35 })
        );
        assert_eq!(
            Plan::new(1 << 20, 1000, 9001),
            Err(PlanError::Mtu { mtu: 9001 })
        );
        let e = PlanError::TooShort { total: 17 }.to_string();
        assert!(e.contains("17 bytes") && e.contains("fix: send 18"), "{e}");
        let e = Plan::new(1 << 20, 1473, DEFAULT_MTU)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 1472"), "{e}");
        assert_eq!(max_payload(DEFAULT_MTU), 1472);
        assert_eq!(max_payload(MAX_MTU), 8972);
    }

    #[test]
    fn a_start_must_agree_with_itself() {
        assert!(Plan::from_start(4096, 1472, 3, DEFAULT_MTU).is_some());
        assert!(Plan::from_start(4096, 1472, 4, DEFAULT_MTU).is_none());
        assert!(Plan::from_start(4096, 9000, 1, DEFAULT_MTU).is_none());
    }
}
