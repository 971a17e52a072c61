//! Decoding the Identify data structures (Base spec "Identify Controller Data
//! Structure", NVM command set spec "Identify Namespace Data Structure").

use peerdma_uapi::nvme::*;
use serde::Serialize;

/// What Identify Controller says that this driver uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ControllerInfo {
    /// PCI vendor id.
    pub vendor: u16,
    /// Serial number, trimmed.
    pub serial: String,
    /// Model number, trimmed.
    pub model: String,
    /// Firmware revision, trimmed.
    pub firmware: String,
    /// Maximum data transfer size in bytes (`None`: no limit).
    pub mdts_bytes: Option<u64>,
    /// Number of namespaces.
    pub namespaces: u32,
    /// Whether SGLs are supported for NVM commands (SGLS bits 1:0).
    pub sgl: bool,
}

/// What Identify Namespace says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NamespaceInfo {
    /// Namespace id.
    pub nsid: u32,
    /// Size in logical blocks (NSZE).
    pub blocks: u64,
    /// Logical block size in bytes.
    pub block_size: u32,
}

impl NamespaceInfo {
    /// Capacity in bytes.
    pub fn bytes(&self) -> u64 {
        self.blocks * u64::from(self.block_size)
    }
}

fn le16(d: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([d[at], d[at + 1]])
}

fn le32(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(d[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(d: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(d[at..at + 8].try_into().expect("8 bytes"))
}

fn ascii(d: &[u8]) -> String {
    String::from_utf8_lossy(d)
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_string()
}

/// Decodes an Identify Controller page; `page_min` is CAP.MPSMIN in bytes (MDTS's unit).
pub fn controller(d: &[u8; NVME_IDENTIFY_DATA_SIZE], page_min: u64) -> ControllerInfo {
    let mdts = d[NVME_ID_CTRL_MDTS];
    ControllerInfo {
        vendor: le16(d, NVME_ID_CTRL_VID),
        serial: ascii(&d[NVME_ID_CTRL_SN..NVME_ID_CTRL_SN + 20]),
        model: ascii(&d[NVME_ID_CTRL_MN..NVME_ID_CTRL_MN + 40]),
        firmware: ascii(&d[NVME_ID_CTRL_FR..NVME_ID_CTRL_FR + 8]),
        mdts_bytes: (mdts != 0).then(|| page_min << mdts.min(40)),
        namespaces: le32(d, NVME_ID_CTRL_NN),
        sgl: le32(d, NVME_ID_CTRL_SGLS) & 0x3 != 0,
    }
}

/// Decodes an Identify Namespace page; `None` for an inactive namespace (all zero).
pub fn namespace(nsid: u32, d: &[u8; NVME_IDENTIFY_DATA_SIZE]) -> Option<NamespaceInfo> {
    let blocks = le64(d, NVME_ID_NS_NSZE);
    if blocks == 0 {
        return None;
    }
    let format = usize::from(d[NVME_ID_NS_FLBAS] & 0xf);
    let lbaf = le32(d, NVME_ID_NS_LBAF + 4 * format);
    let lbads = (lbaf >> 16) & 0xff;
    Some(NamespaceInfo {
        nsid,
        blocks,
        block_size: 1u32.checked_shl(lbads).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_and_namespace_pages_decode() {
        let mut c = [0u8; NVME_IDENTIFY_DATA_SIZE];
        c[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
        c[NVME_ID_CTRL_SN..NVME_ID_CTRL_SN + 20].copy_from_slice(b"peerdma0            ");
        c[NVME_ID_CTRL_MN..NVME_ID_CTRL_MN + 10].copy_from_slice(b"QEMU NVMe ");
        c[NVME_ID_CTRL_MDTS] = 7;
        c[NVME_ID_CTRL_NN..NVME_ID_CTRL_NN + 4].copy_from_slice(&256u32.to_le_bytes());
        c[NVME_ID_CTRL_SGLS] = 1;
        let info = controller(&c, 4096);
        assert_eq!(info.serial, "peerdma0");
        assert_eq!(info.model, "QEMU NVMe");
        assert_eq!(info.mdts_bytes, Some(512 << 10));
        assert_eq!(info.namespaces, 256);
        assert!(info.sgl);
        c[NVME_ID_CTRL_MDTS] = 0;
        assert_eq!(controller(&c, 4096).mdts_bytes, None);

        let mut n = [0u8; NVME_IDENTIFY_DATA_SIZE];
        assert_eq!(namespace(1, &n), None);
        n[0..8].copy_from_slice(&131072u64.to_le_bytes());
        n[NVME_ID_NS_FLBAS] = 1;
        n[NVME_ID_NS_LBAF + 4..NVME_ID_NS_LBAF + 8].copy_from_slice(&(12u32 << 16).to_le_bytes());
        let ns = namespace(1, &n).unwrap();
        assert_eq!((ns.blocks, ns.block_size), (131072, 4096));
        assert_eq!(ns.bytes(), 512 << 20);
    }
}
