//! The standard PCI capability list in a config-space snapshot, and the few
//! capabilities the revoke lifecycle needs: power management (PMCSR), PCI
//! Express (FLR), Advanced Features (FLR) and MSI-X.
//!
//! Everything here works on a byte slice, so malformed lists are unit-tested
//! without a device: loops and pointers outside the snapshot are errors.

use std::fmt;

use peerdma_uapi::pci::{
    PCI_AF_CAP, PCI_AF_CAP_FLR, PCI_AF_CAP_TP, PCI_AF_CTRL, PCI_CAPABILITY_LIST, PCI_CAP_ID_AF,
    PCI_CAP_ID_EXP, PCI_CAP_ID_PM, PCI_CAP_LIST_NEXT, PCI_EXP_DEVCAP, PCI_EXP_DEVCAP_FLR,
    PCI_EXP_DEVCTL, PCI_PM_CTRL, PCI_STATUS, PCI_STATUS_CAP_LIST, PCI_STD_HEADER_SIZEOF,
};

/// A malformed capability chain (the PCI capability list read by [`capabilities`],
/// or a VFIO info capability chain, which the exporter parses): where, and what is
/// wrong. Callers that know the device turn it into an error naming it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainError {
    /// Offset of the offending capability header (VFIO: in the info buffer) or
    /// pointer (PCI: in config space).
    pub offset: u32,
    /// What is wrong.
    pub reason: &'static str,
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at offset {:#x}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for ChainError {}

/// The kernel's bound on standard capability list walks (PCI_FIND_CAP_TTL).
const MAX_CAPS: usize = 48;

/// Little-endian byte at `off`, if inside `config`.
pub fn cfg_u8(config: &[u8], off: u16) -> Option<u8> {
    config.get(usize::from(off)).copied()
}

/// Little-endian word at `off`, if inside `config`.
pub fn cfg_u16(config: &[u8], off: u16) -> Option<u16> {
    let off = usize::from(off);
    let bytes = config.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes(bytes.try_into().ok()?))
}

/// Little-endian dword at `off`, if inside `config`.
pub fn cfg_u32(config: &[u8], off: u16) -> Option<u32> {
    let off = usize::from(off);
    let bytes = config.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// One entry of the standard capability list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciCap {
    /// Capability id (`PCI_CAP_ID_*`).
    pub id: u8,
    /// Config-space offset of the capability header.
    pub offset: u16,
}

/// Walks the standard capability list of a config-space snapshot.
///
/// An empty list (status bit clear, or a zero first pointer) is not an error.
///
/// # Errors
///
/// [`ChainError`] (offset: the config-space offset of the offending pointer)
/// for a pointer into the standard header, a pointer whose header lies outside
/// the snapshot, a loop, or more than 48 entries.
pub fn capabilities(config: &[u8]) -> Result<Vec<PciCap>, ChainError> {
    let bad = |offset: u16, reason| ChainError {
        offset: u32::from(offset),
        reason,
    };
    let status = cfg_u16(config, PCI_STATUS)
        .ok_or(bad(PCI_STATUS, "snapshot ends before the status register"))?;
    if status & PCI_STATUS_CAP_LIST == 0 {
        return Ok(Vec::new());
    }
    let mut pointer_at = PCI_CAPABILITY_LIST;
    let mut pos = u16::from(cfg_u8(config, pointer_at).ok_or(bad(
        pointer_at,
        "snapshot ends before the capability pointer",
    ))?) & !3;
    let mut caps: Vec<PciCap> = Vec::new();
    while pos != 0 {
        if pos < PCI_STD_HEADER_SIZEOF {
            return Err(bad(
                pointer_at,
                "capability pointer points into the standard header",
            ));
        }
        if usize::from(pos) + 2 > config.len() {
            return Err(bad(
                pointer_at,
                "capability pointer points past the end of config space",
            ));
        }
        if caps.iter().any(|c| c.offset == pos) {
            return Err(bad(pointer_at, "capability list loops"));
        }
        if caps.len() == MAX_CAPS {
            return Err(bad(pointer_at, "more than 48 capabilities"));
        }
        let id = config[usize::from(pos)];
        if id == 0xff {
            // The kernel stops here too: all-ones means the device is gone.
            break;
        }
        caps.push(PciCap { id, offset: pos });
        pointer_at = pos + PCI_CAP_LIST_NEXT;
        pos = u16::from(config[usize::from(pointer_at)]) & !3;
    }
    Ok(caps)
}

/// Offset of the first capability with `id`.
pub fn find(caps: &[PciCap], id: u8) -> Option<u16> {
    caps.iter().find(|c| c.id == id).map(|c| c.offset)
}

/// How a function-level reset can be started through config space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlrMethod {
    /// Set BCR_FLR in the PCIe Device Control register at this offset.
    Pcie {
        /// Config-space offset of DEVCTL.
        devctl: u16,
    },
    /// Set FLR in the Advanced Features control register at this offset.
    Af {
        /// Config-space offset of AF_CTRL.
        ctrl: u16,
    },
}

/// The FLR method vfio-pci honours for this device, if any: PCIe DEVCAP.FLR,
/// else AF with both FLR and TP (the kernel's own conditions).
pub fn flr_method(config: &[u8], caps: &[PciCap]) -> Option<FlrMethod> {
    if let Some(exp) = find(caps, PCI_CAP_ID_EXP) {
        if let Some(devcap) = cfg_u32(config, exp + PCI_EXP_DEVCAP) {
            if devcap & PCI_EXP_DEVCAP_FLR != 0 {
                return Some(FlrMethod::Pcie {
                    devctl: exp + PCI_EXP_DEVCTL,
                });
            }
        }
    }
    if let Some(af) = find(caps, PCI_CAP_ID_AF) {
        if let Some(cap) = cfg_u8(config, af + PCI_AF_CAP) {
            if cap & PCI_AF_CAP_FLR != 0 && cap & PCI_AF_CAP_TP != 0 {
                return Some(FlrMethod::Af {
                    ctrl: af + PCI_AF_CTRL,
                });
            }
        }
    }
    None
}

/// Config-space offset of PMCSR, if the device has a PM capability.
pub fn pmcsr_offset(caps: &[PciCap]) -> Option<u16> {
    find(caps, PCI_CAP_ID_PM).map(|pm| pm + PCI_PM_CTRL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerdma_uapi::pci::PCI_CAP_ID_MSIX;

    /// A 256-byte config space with the given (offset, id, next) capabilities.
    fn config_with(caps: &[(u8, u8, u8)]) -> Vec<u8> {
        let mut config = vec![0u8; 256];
        config[0..2].copy_from_slice(&0x1af4u16.to_le_bytes());
        if let Some(first) = caps.first() {
            config[PCI_STATUS as usize] = PCI_STATUS_CAP_LIST as u8;
            config[PCI_CAPABILITY_LIST as usize] = first.0;
        }
        for &(off, id, next) in caps {
            config[off as usize] = id;
            config[off as usize + 1] = next;
        }
        config
    }

    #[test]
    fn walks_list() {
        let config = config_with(&[(0x40, 0x01, 0x50), (0x50, 0x10, 0x98), (0x98, 0x11, 0)]);
        let caps = capabilities(&config).unwrap();
        assert_eq!(
            caps,
            vec![
                PciCap {
                    id: 1,
                    offset: 0x40
                },
                PciCap {
                    id: 0x10,
                    offset: 0x50
                },
                PciCap {
                    id: 0x11,
                    offset: 0x98
                }
            ]
        );
        assert_eq!(find(&caps, PCI_CAP_ID_MSIX), Some(0x98));
        assert_eq!(pmcsr_offset(&caps), Some(0x44));
        assert_eq!(find(&caps, PCI_CAP_ID_AF), None);
    }

    #[test]
    fn no_list_is_empty() {
        let config = config_with(&[]);
        assert!(capabilities(&config).unwrap().is_empty());
        let mut config = config_with(&[(0x40, 1, 0)]);
        config[PCI_STATUS as usize] = 0;
        assert!(capabilities(&config).unwrap().is_empty());
    }

    #[test]
    fn low_bits_of_pointers_are_ignored() {
        let mut config = config_with(&[(0x40, 0x01, 0x53), (0x50, 0x05, 0)]);
        config[PCI_CAPABILITY_LIST as usize] = 0x42;
        let caps = capabilities(&config).unwrap();
        assert_eq!(
            caps.iter().map(|c| c.offset).collect::<Vec<_>>(),
            vec![0x40, 0x50]
        );
    }

    #[test]
    fn all_ones_id_ends_the_walk() {
        let config = config_with(&[(0x40, 0x01, 0x50), (0x50, 0xff, 0x60), (0x60, 0x11, 0)]);
        assert_eq!(capabilities(&config).unwrap().len(), 1);
    }

    #[test]
    fn loop_is_an_error() {
        let config = config_with(&[(0x40, 0x01, 0x50), (0x50, 0x10, 0x40)]);
        let err = capabilities(&config).unwrap_err();
        assert!(
            matches!(err, ChainError { offset: 0x51, reason } if reason.contains("loops")),
            "{err:?}"
        );
        let config = config_with(&[(0x40, 0x01, 0x40)]);
        assert!(matches!(capabilities(&config), Err(ChainError { .. })));
    }

    #[test]
    fn pointer_into_header_is_an_error() {
        let config = config_with(&[(0x40, 0x01, 0x3c)]);
        let err = capabilities(&config).unwrap_err();
        assert!(matches!(err, ChainError { offset: 0x41, .. }), "{err:?}");
    }

    #[test]
    fn pointer_past_snapshot_is_an_error() {
        let config = config_with(&[(0x40, 0x01, 0xfc)]);
        // Only 0x80 bytes were read.
        let err = capabilities(&config[..0x80]).unwrap_err();
        assert!(matches!(err, ChainError { offset: 0x41, .. }), "{err:?}");
        // A snapshot too short for the status register is an error, not a panic.
        assert!(capabilities(&config[..4]).is_err());
        assert!(capabilities(&config[..0x30]).is_err());
    }

    #[test]
    fn flr_from_pcie_devcap() {
        let mut config = config_with(&[(0x40, PCI_CAP_ID_EXP, 0)]);
        let caps = capabilities(&config).unwrap();
        assert_eq!(flr_method(&config, &caps), None);
        config[0x44..0x48].copy_from_slice(&PCI_EXP_DEVCAP_FLR.to_le_bytes());
        assert_eq!(
            flr_method(&config, &caps),
            Some(FlrMethod::Pcie { devctl: 0x48 })
        );
    }

    #[test]
    fn flr_from_af_needs_tp_too() {
        let mut config = config_with(&[(0x60, PCI_CAP_ID_AF, 0)]);
        let caps = capabilities(&config).unwrap();
        config[0x63] = PCI_AF_CAP_FLR;
        assert_eq!(flr_method(&config, &caps), None);
        config[0x63] = PCI_AF_CAP_FLR | PCI_AF_CAP_TP;
        assert_eq!(
            flr_method(&config, &caps),
            Some(FlrMethod::Af { ctrl: 0x64 })
        );
    }
}
