//! What a PCI function's config space says about peer-to-peer routing: its
//! place in the hierarchy (root port, switch port, endpoint, from the PCI
//! Express capability), the bus range behind a bridge, and its Access Control
//! Services (ACS) extended capability.
//!
//! ACS decides whether a port forwards a request between two of its
//! downstream devices directly or redirects it upstream, towards the root
//! complex and the IOMMU. The kernel's P2P distance check
//! (`pci_bridge_has_acs_redir()` in `drivers/pci/p2pdma.c`) treats a function
//! whose ACS control has P2P Request Redirect, P2P Completion Redirect or P2P
//! Egress Control set as redirecting: see [`AcsFlags::redirects`].
//!
//! Everything here works on a config-space snapshot (a byte slice, as read
//! from sysfs `config`), so it is tested on dumps without a device.

use peerdma_uapi::pci::{
    PCI_ACS_CAP, PCI_ACS_CR, PCI_ACS_CTRL, PCI_ACS_DT, PCI_ACS_EC, PCI_ACS_RR, PCI_ACS_SV,
    PCI_ACS_TB, PCI_ACS_UF, PCI_CAP_ID_EXP, PCI_CFG_SPACE_EXP_SIZE, PCI_CFG_SPACE_SIZE,
    PCI_EXP_FLAGS, PCI_EXP_FLAGS_TYPE, PCI_EXP_TYPE_DOWNSTREAM, PCI_EXP_TYPE_ENDPOINT,
    PCI_EXP_TYPE_LEG_END, PCI_EXP_TYPE_PCIE_BRIDGE, PCI_EXP_TYPE_PCI_BRIDGE, PCI_EXP_TYPE_RC_END,
    PCI_EXP_TYPE_ROOT_PORT, PCI_EXP_TYPE_UPSTREAM, PCI_EXT_CAP_ID_ACS, PCI_HEADER_TYPE,
    PCI_HEADER_TYPE_BRIDGE, PCI_HEADER_TYPE_MASK, PCI_SECONDARY_BUS, PCI_SUBORDINATE_BUS,
};
use serde::Serialize;

use crate::pci_caps::{capabilities, cfg_u16, cfg_u32, cfg_u8, find};

/// Bytes of config space sysfs shows a reader without `CAP_SYS_ADMIN` (128
/// for a CardBus bridge): the extended capabilities need root.
pub const UNPRIVILEGED_CONFIG_BYTES: usize = 128;

/// The kernel's bound on an extended capability walk (`PCI_FIND_CAP_TTL` for
/// extended space: one header per 8 bytes after the first 256).
const MAX_EXT_CAPS: usize = (PCI_CFG_SPACE_EXP_SIZE as usize - PCI_CFG_SPACE_SIZE as usize) / 8;

/// ACS capability or control bits (`PCI_ACS_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(into = "Vec<&'static str>")]
pub struct AcsFlags(pub u16);

impl AcsFlags {
    /// Every bit this tool names: the mask, lspci's short name, and the
    /// spec's name.
    pub const BITS: [(u16, &'static str, &'static str); 7] = [
        (PCI_ACS_SV, "SrcValid", "source validation"),
        (PCI_ACS_TB, "TransBlk", "translation blocking"),
        (PCI_ACS_RR, "ReqRedir", "P2P request redirect"),
        (PCI_ACS_CR, "CmpltRedir", "P2P completion redirect"),
        (PCI_ACS_UF, "UpstreamFwd", "upstream forwarding"),
        (PCI_ACS_EC, "EgressCtrl", "P2P egress control"),
        (PCI_ACS_DT, "DirectTrans", "direct translated P2P"),
    ];

    /// The bits the kernel's P2P distance check treats as redirecting peer
    /// traffic upstream (`pci_bridge_has_acs_redir()`).
    pub const REDIRECT: u16 = PCI_ACS_RR | PCI_ACS_CR | PCI_ACS_EC;

    /// Whether any of [`REDIRECT`](Self::REDIRECT) is set.
    pub fn redirects(self) -> bool {
        self.0 & Self::REDIRECT != 0
    }

    /// lspci's short names of the set bits, in bit order.
    pub fn names(self) -> Vec<&'static str> {
        Self::BITS
            .iter()
            .filter(|(bit, ..)| self.0 & bit != 0)
            .map(|(_, name, _)| *name)
            .collect()
    }

    /// lspci's rendering: every bit with `+` or `-`.
    pub fn lspci(self) -> String {
        Self::BITS
            .iter()
            .map(|(bit, name, _)| format!("{name}{}", if self.0 & bit != 0 { '+' } else { '-' }))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The `pci=config_acs=` flag string that clears the redirecting bits and
    /// leaves the others as they are: one character per bit, bit 6 first
    /// (`x` unchanged, `0` force off).
    pub fn config_acs_clearing_redirects() -> String {
        (0..7)
            .rev()
            .map(|bit| {
                if Self::REDIRECT & (1 << bit) != 0 {
                    '0'
                } else {
                    'x'
                }
            })
            .collect()
    }
}

impl From<AcsFlags> for Vec<&'static str> {
    fn from(f: AcsFlags) -> Self {
        f.names()
    }
}

/// A function's ACS extended capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Acs {
    /// Config-space offset of the capability header.
    pub offset: u16,
    /// Which controls the function implements (ACS Capability register).
    pub cap: AcsFlags,
    /// Which controls are on (ACS Control register).
    pub ctrl: AcsFlags,
}

/// What config space says about ACS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AcsState {
    /// The function has no ACS capability (or no extended config space): it
    /// never redirects.
    Absent,
    /// The capability and its bits.
    Present(Acs),
    /// Only the first `bytes` of config space were readable (sysfs shows the
    /// extended capabilities to root only).
    Unreadable {
        /// How many bytes were readable.
        bytes: usize,
    },
}

impl AcsState {
    /// Reads the ACS state from a config-space snapshot: a snapshot of at most
    /// [`UNPRIVILEGED_CONFIG_BYTES`] is unreadable, one of 256 bytes (a
    /// conventional PCI function) has no extended space.
    pub fn from_config(config: &[u8]) -> AcsState {
        if config.len() <= UNPRIVILEGED_CONFIG_BYTES {
            return AcsState::Unreadable {
                bytes: config.len(),
            };
        }
        match find_ext_capability(config, PCI_EXT_CAP_ID_ACS) {
            None => AcsState::Absent,
            Some(offset) => match (
                cfg_u16(config, offset + PCI_ACS_CAP),
                cfg_u16(config, offset + PCI_ACS_CTRL),
            ) {
                (Some(cap), Some(ctrl)) => AcsState::Present(Acs {
                    offset,
                    cap: AcsFlags(cap),
                    ctrl: AcsFlags(ctrl),
                }),
                _ => AcsState::Absent,
            },
        }
    }

    /// Whether the kernel's distance check counts this function as
    /// redirecting; `None` when config space was unreadable.
    pub fn redirects(&self) -> Option<bool> {
        match self {
            AcsState::Absent => Some(false),
            AcsState::Present(acs) => Some(acs.ctrl.redirects()),
            AcsState::Unreadable { .. } => None,
        }
    }
}

/// Offset of the first extended capability with `id`, walking from offset
/// 256 like `pci_find_ext_capability()`: an all-zero or all-ones header ends
/// the walk, and so do a next pointer below 256, a pointer outside the
/// snapshot, and more than 480 entries.
pub fn find_ext_capability(config: &[u8], id: u16) -> Option<u16> {
    let mut pos = PCI_CFG_SPACE_SIZE;
    for _ in 0..MAX_EXT_CAPS {
        let header = cfg_u32(config, pos)?;
        if header == 0 || header == u32::MAX {
            return None;
        }
        // PCI_EXT_CAP_ID(header) and PCI_EXT_CAP_NEXT(header) of pci_regs.h.
        if (header & 0xffff) as u16 == id {
            return Some(pos);
        }
        pos = ((header >> 20) & 0xffc) as u16;
        if pos < PCI_CFG_SPACE_SIZE {
            return None;
        }
    }
    None
}

/// A function's role in the PCI hierarchy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    /// A PCI Express root port.
    RootPort,
    /// A switch's upstream port.
    SwitchUpstream,
    /// A switch's downstream port.
    SwitchDownstream,
    /// A PCI Express to PCI bridge, or a conventional PCI-to-PCI bridge.
    PciBridge,
    /// A host bridge (class 06 00).
    HostBridge,
    /// A PCI Express or conventional endpoint.
    Endpoint,
    /// A root complex integrated endpoint (on the root bus, no link).
    RcEndpoint,
}

/// PCI class code (base class and subclass) of a host bridge.
pub const PCI_CLASS_BRIDGE_HOST: u32 = 0x0600;
/// PCI class code of a PCI-to-PCI bridge.
pub const PCI_CLASS_BRIDGE_PCI: u32 = 0x0604;

impl PortKind {
    /// The role from the PCI Express capability's port type, or from the
    /// header type and class for conventional functions; `class` is sysfs's
    /// 24-bit class code.
    pub fn from_config(config: &[u8], class: u32) -> PortKind {
        let pcie_type = capabilities(config)
            .ok()
            .and_then(|caps| find(&caps, PCI_CAP_ID_EXP))
            .and_then(|off| cfg_u16(config, off + PCI_EXP_FLAGS))
            .map(|flags| (flags & PCI_EXP_FLAGS_TYPE) >> 4);
        match pcie_type {
            Some(PCI_EXP_TYPE_ROOT_PORT) => PortKind::RootPort,
            Some(PCI_EXP_TYPE_UPSTREAM) => PortKind::SwitchUpstream,
            Some(PCI_EXP_TYPE_DOWNSTREAM) => PortKind::SwitchDownstream,
            Some(PCI_EXP_TYPE_PCI_BRIDGE | PCI_EXP_TYPE_PCIE_BRIDGE) => PortKind::PciBridge,
            Some(PCI_EXP_TYPE_RC_END) => PortKind::RcEndpoint,
            Some(PCI_EXP_TYPE_ENDPOINT | PCI_EXP_TYPE_LEG_END) => PortKind::Endpoint,
            _ => match class >> 8 {
                PCI_CLASS_BRIDGE_HOST => PortKind::HostBridge,
                PCI_CLASS_BRIDGE_PCI => PortKind::PciBridge,
                _ if is_bridge_header(config) => PortKind::PciBridge,
                _ => PortKind::Endpoint,
            },
        }
    }

    /// Whether this function forwards to a bus below it.
    pub fn is_bridge(self) -> bool {
        matches!(
            self,
            PortKind::RootPort
                | PortKind::SwitchUpstream
                | PortKind::SwitchDownstream
                | PortKind::PciBridge
        )
    }

    /// A few words for people.
    pub fn describe(self) -> &'static str {
        match self {
            PortKind::RootPort => "root port",
            PortKind::SwitchUpstream => "switch upstream port",
            PortKind::SwitchDownstream => "switch downstream port",
            PortKind::PciBridge => "PCI bridge",
            PortKind::HostBridge => "host bridge",
            PortKind::Endpoint => "endpoint",
            PortKind::RcEndpoint => "root complex integrated endpoint",
        }
    }
}

/// Whether the header is a type 1 (bridge) header.
fn is_bridge_header(config: &[u8]) -> bool {
    cfg_u8(config, PCI_HEADER_TYPE)
        .is_some_and(|h| h & PCI_HEADER_TYPE_MASK == PCI_HEADER_TYPE_BRIDGE)
}

/// The secondary and subordinate bus numbers of a bridge's type 1 header.
pub fn bus_range(config: &[u8]) -> Option<(u8, u8)> {
    if !is_bridge_header(config) {
        return None;
    }
    Some((
        cfg_u8(config, PCI_SECONDARY_BUS)?,
        cfg_u8(config, PCI_SUBORDINATE_BUS)?,
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use peerdma_uapi::pci::{PCI_CAPABILITY_LIST, PCI_STATUS, PCI_STATUS_CAP_LIST};

    /// A 4 KiB config-space dump: a PCI Express capability of `pcie_type` at
    /// 0x40, type 1 header for ports (buses `bus_range`), and in extended
    /// space an AER header at 0x100 then, when given, ACS (cap, ctrl) at 0x148.
    pub(crate) fn config_dump(pcie_type: u16, acs: Option<(u16, u16)>, buses: (u8, u8)) -> Vec<u8> {
        let mut c = vec![0u8; usize::from(PCI_CFG_SPACE_EXP_SIZE)];
        let put16 = |c: &mut Vec<u8>, off: u16, v: u16| {
            c[usize::from(off)..usize::from(off) + 2].copy_from_slice(&v.to_le_bytes())
        };
        let put32 = |c: &mut Vec<u8>, off: u16, v: u32| {
            c[usize::from(off)..usize::from(off) + 4].copy_from_slice(&v.to_le_bytes())
        };
        put16(&mut c, 0, 0x1b36);
        put16(&mut c, PCI_STATUS, PCI_STATUS_CAP_LIST);
        c[usize::from(PCI_CAPABILITY_LIST)] = 0x40;
        c[0x40] = PCI_CAP_ID_EXP;
        put16(&mut c, 0x40 + PCI_EXP_FLAGS, 2 | (pcie_type << 4));
        if matches!(
            pcie_type,
            PCI_EXP_TYPE_ROOT_PORT | PCI_EXP_TYPE_UPSTREAM | PCI_EXP_TYPE_DOWNSTREAM
        ) {
            c[usize::from(PCI_HEADER_TYPE)] = PCI_HEADER_TYPE_BRIDGE;
            c[usize::from(PCI_SECONDARY_BUS)] = buses.0;
            c[usize::from(PCI_SUBORDINATE_BUS)] = buses.1;
        }
        // AER (id 1, version 2), next at 0x148 or the end.
        let next: u32 = if acs.is_some() { 0x148 } else { 0 };
        put32(&mut c, 0x100, 1 | (2 << 16) | (next << 20));
        if let Some((cap, ctrl)) = acs {
            put32(&mut c, 0x148, u32::from(PCI_EXT_CAP_ID_ACS) | (1 << 16));
            put16(&mut c, 0x148 + PCI_ACS_CAP, cap);
            put16(&mut c, 0x148 + PCI_ACS_CTRL, ctrl);
        }
        c
    }

    /// QEMU's pcie-root-port: SV RR CR UF (0x1d... with TB) implemented and on.
    const QEMU_ROOT_PORT_ACS: u16 = PCI_ACS_SV | PCI_ACS_TB | PCI_ACS_RR | PCI_ACS_CR | PCI_ACS_UF;

    #[test]
    fn acs_is_found_behind_another_extended_capability() {
        let c = config_dump(
            PCI_EXP_TYPE_ROOT_PORT,
            Some((QEMU_ROOT_PORT_ACS, QEMU_ROOT_PORT_ACS)),
            (1, 1),
        );
        let AcsState::Present(acs) = AcsState::from_config(&c) else {
            panic!("no ACS");
        };
        assert_eq!(acs.offset, 0x148);
        assert!(acs.ctrl.redirects());
        assert_eq!(
            acs.ctrl.names(),
            [
                "SrcValid",
                "TransBlk",
                "ReqRedir",
                "CmpltRedir",
                "UpstreamFwd"
            ]
        );
        assert_eq!(
            acs.cap.lspci(),
            "SrcValid+ TransBlk+ ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-"
        );
        assert_eq!(AcsState::from_config(&c).redirects(), Some(true));
        assert_eq!(PortKind::from_config(&c, 0x060400), PortKind::RootPort);
        assert_eq!(bus_range(&c), Some((1, 1)));
    }

    #[test]
    fn redirect_means_rr_cr_or_ec_in_control_not_capability() {
        for (ctrl, redirects) in [
            (0, false),
            (PCI_ACS_SV | PCI_ACS_UF | PCI_ACS_TB | PCI_ACS_DT, false),
            (PCI_ACS_RR, true),
            (PCI_ACS_CR, true),
            (PCI_ACS_EC, true),
        ] {
            let c = config_dump(PCI_EXP_TYPE_DOWNSTREAM, Some((0x7f, ctrl)), (2, 2));
            assert_eq!(
                AcsState::from_config(&c).redirects(),
                Some(redirects),
                "{ctrl:#x}"
            );
        }
    }

    #[test]
    fn no_acs_short_dumps_and_broken_lists() {
        let c = config_dump(PCI_EXP_TYPE_DOWNSTREAM, None, (2, 3));
        assert_eq!(AcsState::from_config(&c), AcsState::Absent);
        assert_eq!(AcsState::Absent.redirects(), Some(false));
        assert_eq!(
            PortKind::from_config(&c, 0x060400),
            PortKind::SwitchDownstream
        );
        // What sysfs shows a non-root reader: the first 64 bytes.
        assert_eq!(
            AcsState::from_config(&c[..64]),
            AcsState::Unreadable { bytes: 64 }
        );
        assert_eq!(AcsState::from_config(&c[..64]).redirects(), None);
        // A conventional PCI function: 256 bytes, no extended space.
        assert_eq!(AcsState::from_config(&c[..256]), AcsState::Absent);
        // A loop in the extended list ends the walk.
        let mut looped = c.clone();
        looped[0x100..0x104].copy_from_slice(&(1u32 | (0x100 << 20)).to_le_bytes());
        assert_eq!(find_ext_capability(&looped, PCI_EXT_CAP_ID_ACS), None);
        // All ones: the device is gone.
        let mut gone = c;
        gone[0x100..0x104].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(find_ext_capability(&gone, 1), None);
    }

    #[test]
    fn port_kinds_from_the_express_capability_or_the_class() {
        let up = config_dump(PCI_EXP_TYPE_UPSTREAM, None, (2, 4));
        assert_eq!(
            PortKind::from_config(&up, 0x060400),
            PortKind::SwitchUpstream
        );
        let ep = config_dump(PCI_EXP_TYPE_ENDPOINT, None, (0, 0));
        assert_eq!(PortKind::from_config(&ep, 0x050000), PortKind::Endpoint);
        assert_eq!(bus_range(&ep), None);
        let rc = config_dump(PCI_EXP_TYPE_RC_END, None, (0, 0));
        assert_eq!(PortKind::from_config(&rc, 0x050000), PortKind::RcEndpoint);
        // No capability list: conventional PCI, the class decides.
        let plain = vec![0u8; 64];
        assert_eq!(
            PortKind::from_config(&plain, 0x060000),
            PortKind::HostBridge
        );
        assert_eq!(PortKind::from_config(&plain, 0x060400), PortKind::PciBridge);
        assert_eq!(PortKind::from_config(&plain, 0x020000), PortKind::Endpoint);
        assert!(PortKind::RootPort.is_bridge() && !PortKind::Endpoint.is_bridge());
    }

    #[test]
    fn config_acs_string_clears_rr_cr_ec_only() {
        // Bit 6 (DT) first: DT x, EC 0, UF x, CR 0, RR 0, TB x, SV x.
        assert_eq!(AcsFlags::config_acs_clearing_redirects(), "x0x00xx");
    }
}
