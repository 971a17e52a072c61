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

/// What Identify Namespace says: the size, and the format every Read and Write moves
/// (NVM command set spec, "Identify Namespace Data Structure": NSZE, FLBAS, DPS, LBAF).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NamespaceInfo {
    /// Namespace id.
    pub nsid: u32,
    /// Size in logical blocks (NSZE).
    pub blocks: u64,
    /// Logical block size in bytes (the data part, without metadata).
    pub block_size: u32,
    /// The LBA format in use (FLBAS's index into the LBAF list).
    pub format: u8,
    /// Metadata bytes per logical block in that format (LBAF.MS); 0: none.
    pub metadata_size: u16,
    /// Whether that metadata travels inline at the end of each block (FLBAS bit 4, an
    /// extended LBA: a Read's data buffer receives block + metadata, block + metadata …)
    /// rather than through a separate metadata pointer (MPTR).
    pub metadata_extended: bool,
    /// The end-to-end protection information type (DPS bits 2:0; 0: none, 1 to 3).
    pub protection: u8,
    /// An LBA format of this namespace without metadata, as (index, block size in bytes):
    /// the one with the current block size if there is one, else the first.
    pub without_metadata: Option<(u8, u32)>,
}

impl NamespaceInfo {
    /// Capacity in bytes (data only).
    pub fn bytes(&self) -> u64 {
        self.blocks * u64::from(self.block_size)
    }

    /// Whether blocks carry metadata: then the bytes a Read delivers are not the
    /// block data alone (extended LBA), or the controller also DMAs metadata to the
    /// address in MPTR (separate buffer).
    pub fn has_metadata(&self) -> bool {
        self.metadata_size != 0
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

/// One LBA Format entry: (metadata bytes, block size in bytes; 0 for an LBADS the
/// spec does not allow, under 9).
fn lba_format(d: &[u8], index: usize) -> (u16, u32) {
    let lbaf = le32(d, NVME_ID_NS_LBAF + 4 * index);
    let lbads = (lbaf >> 16) & 0xff;
    let block_size = if (9..32).contains(&lbads) {
        1u32 << lbads
    } else {
        0
    };
    ((lbaf & 0xffff) as u16, block_size)
}

/// Decodes an Identify Namespace page; `None` for an inactive namespace (all zero).
pub fn namespace(nsid: u32, d: &[u8; NVME_IDENTIFY_DATA_SIZE]) -> Option<NamespaceInfo> {
    let blocks = le64(d, NVME_ID_NS_NSZE);
    if blocks == 0 {
        return None;
    }
    let flbas = d[NVME_ID_NS_FLBAS];
    // Bits 3:0 are the index's low bits, bits 6:5 its high bits (used when NLBAF > 16).
    let format = usize::from(flbas & 0xf) | usize::from((flbas >> 5) & 0x3) << 4;
    let formats = (usize::from(d[NVME_ID_NS_NLBAF]) + 1).min(NVME_ID_NS_LBAF_MAX);
    let (metadata_size, block_size) = lba_format(d, format);
    let plain = (0..formats)
        .map(|i| (i, lba_format(d, i)))
        .filter(|(_, (ms, bs))| *ms == 0 && *bs != 0);
    let without_metadata = plain
        .clone()
        .find(|(_, (_, bs))| *bs == block_size)
        .or_else(|| plain.clone().next())
        .map(|(i, (_, bs))| (i as u8, bs));
    Some(NamespaceInfo {
        nsid,
        blocks,
        block_size,
        format: format as u8,
        metadata_size,
        metadata_extended: flbas & NVME_ID_NS_FLBAS_EXTENDED != 0,
        protection: d[NVME_ID_NS_DPS] & 0x7,
        without_metadata,
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
        assert!(!ns.has_metadata());
    }

    /// QEMU's `nvme-ns ms=8,mset=1` (and its LBA format list): 512-byte blocks with 8
    /// bytes of metadata inline, a 512-byte format without metadata at index 0.
    #[test]
    fn a_namespace_formatted_with_metadata_says_so_and_names_a_format_without() {
        let mut n = [0u8; NVME_IDENTIFY_DATA_SIZE];
        n[0..8].copy_from_slice(&262144u64.to_le_bytes());
        n[NVME_ID_NS_NLBAF] = 7;
        let lbaf = |ms: u32, lbads: u32| (lbads << 16 | ms).to_le_bytes();
        let formats = [
            (0, 9),
            (8, 9),
            (16, 9),
            (64, 9),
            (0, 12),
            (8, 12),
            (16, 12),
            (64, 12),
        ];
        for (i, (ms, lbads)) in formats.into_iter().enumerate() {
            let at = NVME_ID_NS_LBAF + 4 * i;
            n[at..at + 4].copy_from_slice(&lbaf(ms, lbads));
        }
        n[NVME_ID_NS_FLBAS] = 1 | NVME_ID_NS_FLBAS_EXTENDED;
        let ns = namespace(1, &n).unwrap();
        assert_eq!((ns.format, ns.block_size, ns.metadata_size), (1, 512, 8));
        assert!(ns.has_metadata() && ns.metadata_extended);
        assert_eq!(ns.protection, 0);
        assert_eq!(ns.without_metadata, Some((0, 512)));
        // Separate metadata with Type 1 PI on 4 KiB blocks: the 4 KiB plain format.
        n[NVME_ID_NS_FLBAS] = 5;
        n[NVME_ID_NS_DPS] = 1;
        let ns = namespace(1, &n).unwrap();
        assert_eq!((ns.format, ns.block_size, ns.metadata_size), (5, 4096, 8));
        assert!(!ns.metadata_extended);
        assert_eq!((ns.protection, ns.without_metadata), (1, Some((4, 4096))));
        // Format index 17 (FLBAS bits 6:5 = 1, bits 3:0 = 1) on a 20-format namespace.
        n[NVME_ID_NS_NLBAF] = 19;
        let at = NVME_ID_NS_LBAF + 4 * 17;
        n[at..at + 4].copy_from_slice(&lbaf(0, 13));
        n[NVME_ID_NS_FLBAS] = 1 << 5 | 1;
        n[NVME_ID_NS_DPS] = 0;
        let ns = namespace(1, &n).unwrap();
        assert_eq!((ns.format, ns.block_size, ns.metadata_size), (17, 8192, 0));
        // No format without metadata at all.
        n[NVME_ID_NS_NLBAF] = 0;
        n[NVME_ID_NS_FLBAS] = 0;
        n[NVME_ID_NS_LBAF..NVME_ID_NS_LBAF + 4].copy_from_slice(&lbaf(8, 9));
        assert_eq!(namespace(1, &n).unwrap().without_metadata, None);
    }
}
