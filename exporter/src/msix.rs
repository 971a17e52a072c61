//! Where the MSI-X table and Pending Bit Array live, and which pages they occupy.
//!
//! A peer that can DMA into the MSI-X table can forge interrupts, so the
//! exporter refuses ranges touching these pages unless the region is MSI-X
//! mappable or the caller overrides it (see `ranges`).

use std::fmt;

use peerdma_host::pci_caps::{cfg_u16, cfg_u32, find, PciCap};
use peerdma_uapi::pci::{
    PCI_CAP_ID_MSIX, PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_QSIZE, PCI_MSIX_PBA, PCI_MSIX_PBA_BIR,
    PCI_MSIX_PBA_OFFSET, PCI_MSIX_TABLE, PCI_MSIX_TABLE_BIR, PCI_MSIX_TABLE_OFFSET,
};

/// One of the two MSI-X structures in a BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MsixStructure {
    /// The vector table (16 bytes per vector).
    Table,
    /// The Pending Bit Array (one bit per vector, in 64-bit words).
    Pba,
}

impl fmt::Display for MsixStructure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MsixStructure::Table => "table",
            MsixStructure::Pba => "PBA",
        })
    }
}

/// The MSI-X capability's description of its table and PBA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixLayout {
    /// Number of vectors (table size field + 1).
    pub vectors: u16,
    /// BAR holding the table.
    pub table_bir: u8,
    /// Offset of the table inside its BAR.
    pub table_offset: u32,
    /// BAR holding the PBA.
    pub pba_bir: u8,
    /// Offset of the PBA inside its BAR.
    pub pba_offset: u32,
}

/// A page-rounded span `[start, end)` of one MSI-X structure inside a BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixSpan {
    /// Table or PBA.
    pub structure: MsixStructure,
    /// First byte of the first page touched.
    pub start: u64,
    /// One past the last byte of the last page touched.
    pub end: u64,
}

impl MsixLayout {
    /// Decodes the MSI-X capability found at `cap` in a config-space snapshot.
    /// Returns `None` when the capability's registers lie outside `config`.
    pub fn from_config(config: &[u8], cap: u16) -> Option<Self> {
        let flags = cfg_u16(config, cap.checked_add(PCI_MSIX_FLAGS)?)?;
        let table = cfg_u32(config, cap.checked_add(PCI_MSIX_TABLE)?)?;
        let pba = cfg_u32(config, cap.checked_add(PCI_MSIX_PBA)?)?;
        Some(Self {
            vectors: (flags & PCI_MSIX_FLAGS_QSIZE) + 1,
            table_bir: (table & PCI_MSIX_TABLE_BIR) as u8,
            table_offset: table & PCI_MSIX_TABLE_OFFSET,
            pba_bir: (pba & PCI_MSIX_PBA_BIR) as u8,
            pba_offset: pba & PCI_MSIX_PBA_OFFSET,
        })
    }

    /// Finds and decodes the MSI-X capability among `caps`; `None` when the
    /// device has none.
    pub fn find(config: &[u8], caps: &[PciCap]) -> Option<Self> {
        Self::from_config(config, find(caps, PCI_CAP_ID_MSIX)?)
    }

    /// Size of the vector table in bytes.
    pub fn table_len(&self) -> u64 {
        u64::from(self.vectors) * 16
    }

    /// Size of the PBA in bytes.
    pub fn pba_len(&self) -> u64 {
        u64::from(self.vectors).div_ceil(64) * 8
    }

    /// The page-rounded spans of the structures that live in BAR `region`.
    pub fn spans_in(&self, region: u32, page_size: u64) -> Vec<MsixSpan> {
        self.span_slots(region, page_size)
            .into_iter()
            .flatten()
            .collect()
    }

    /// [`MsixLayout::spans_in`] without allocating (the export path): the table's
    /// span, then the PBA's, each `None` when that structure lives in another BAR.
    pub(crate) fn span_slots(&self, region: u32, page_size: u64) -> [Option<MsixSpan>; 2] {
        let span = |structure, bir: u8, offset: u32, len: u64| {
            (u32::from(bir) == region).then(|| MsixSpan {
                structure,
                start: u64::from(offset) / page_size * page_size,
                end: (u64::from(offset) + len).div_ceil(page_size) * page_size,
            })
        };
        [
            span(
                MsixStructure::Table,
                self.table_bir,
                self.table_offset,
                self.table_len(),
            ),
            span(
                MsixStructure::Pba,
                self.pba_bir,
                self.pba_offset,
                self.pba_len(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap_bytes(flags: u16, table: u32, pba: u32) -> Vec<u8> {
        let mut config = vec![0u8; 0x100];
        let cap = 0x70;
        config[cap] = 0x11;
        config[cap + 2..cap + 4].copy_from_slice(&flags.to_le_bytes());
        config[cap + 4..cap + 8].copy_from_slice(&table.to_le_bytes());
        config[cap + 8..cap + 12].copy_from_slice(&pba.to_le_bytes());
        config
    }

    #[test]
    fn decodes_capability() {
        // 8 vectors, table in BAR1 at 0x2000, PBA in BAR1 at 0x3800.
        let config = cap_bytes(0x8007, 0x2000 | 1, 0x3800 | 1);
        let msix = MsixLayout::from_config(&config, 0x70).unwrap();
        assert_eq!(
            msix,
            MsixLayout {
                vectors: 8,
                table_bir: 1,
                table_offset: 0x2000,
                pba_bir: 1,
                pba_offset: 0x3800
            }
        );
        assert_eq!(msix.table_len(), 128);
        assert_eq!(msix.pba_len(), 8);
    }

    #[test]
    fn pba_len_rounds_to_qwords() {
        let config = cap_bytes(64, 0, 0); // 65 vectors
        let msix = MsixLayout::from_config(&config, 0x70).unwrap();
        assert_eq!(msix.pba_len(), 16);
        let config = cap_bytes(0x7ff, 0, 0); // 2048 vectors
        let msix = MsixLayout::from_config(&config, 0x70).unwrap();
        assert_eq!(msix.table_len(), 2048 * 16);
        assert_eq!(msix.pba_len(), 256);
    }

    #[test]
    fn spans_are_page_rounded_and_per_bar() {
        let config = cap_bytes(7, 0x2000 | 1, 0x3800 | 4);
        let msix = MsixLayout::from_config(&config, 0x70).unwrap();
        assert_eq!(
            msix.spans_in(1, 0x1000),
            vec![MsixSpan {
                structure: MsixStructure::Table,
                start: 0x2000,
                end: 0x3000
            }]
        );
        assert_eq!(
            msix.spans_in(4, 0x1000),
            vec![MsixSpan {
                structure: MsixStructure::Pba,
                start: 0x3000,
                end: 0x4000
            }]
        );
        assert!(msix.spans_in(0, 0x1000).is_empty());
        // A 64 KiB page swallows both.
        let both = MsixLayout { pba_bir: 1, ..msix };
        assert_eq!(
            both.spans_in(1, 0x10000),
            vec![
                MsixSpan {
                    structure: MsixStructure::Table,
                    start: 0,
                    end: 0x10000
                },
                MsixSpan {
                    structure: MsixStructure::Pba,
                    start: 0,
                    end: 0x10000
                }
            ]
        );
    }

    #[test]
    fn found_through_the_capability_list() {
        let mut config = cap_bytes(3, 0x1000, 0x1800);
        config[0x06] = 0x10;
        config[0x34] = 0x70;
        let caps = peerdma_host::pci_caps::capabilities(&config).unwrap();
        assert_eq!(MsixLayout::find(&config, &caps).unwrap().vectors, 4);
        assert_eq!(MsixLayout::find(&config, &[]), None);
    }

    #[test]
    fn truncated_config_is_none() {
        let config = cap_bytes(7, 0, 0);
        assert!(MsixLayout::from_config(&config[..0x78], 0x70).is_none());
        assert!(MsixLayout::from_config(&config, 0xfff0).is_none());
    }
}
