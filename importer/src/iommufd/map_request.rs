//! What a mapping asks for: the [`Prot`]ection devices get, and the
//! [`MapRequest`] that carries one `IOMMU_IOAS_MAP_FILE` call's facts.

use peerdma_exporter::RevokeReason;
use peerdma_uapi::iommufd::{IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE};

use super::Iova;

/// What devices may do through a mapping: the IOMMU page protection
/// `IOMMU_IOAS_MAP_READABLE` / `IOMMU_IOAS_MAP_WRITEABLE` of `IOMMU_IOAS_MAP` and
/// `IOMMU_IOAS_MAP_FILE` (`include/uapi/linux/iommufd.h`, `struct iommu_ioas_map`).
/// Not RDMA's `IBV_ACCESS_*` (that is `rdma::Access`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prot {
    /// Devices read (the source of a DMA).
    Read,
    /// Devices write (the destination of a DMA).
    Write,
    /// Both.
    ReadWrite,
}

impl Prot {
    /// The `IOMMU_IOAS_MAP_*` flags.
    pub fn flags(self) -> u32 {
        match self {
            Prot::Read => IOMMU_IOAS_MAP_READABLE,
            Prot::Write => IOMMU_IOAS_MAP_WRITEABLE,
            Prot::ReadWrite => IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
        }
    }
}

/// One dma-buf mapping request: which range of the buffer, where, with what
/// access, and what the exporter said about the buffer (so that a refusal
/// gets the error that explains it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct MapRequest {
    /// Offset of the range in the dma-buf.
    pub(crate) offset: u64,
    /// Length of the range.
    pub(crate) len: u64,
    /// Where it goes.
    pub(crate) iova: Iova,
    /// What devices may do.
    pub(crate) prot: Prot,
    /// The exporter's revoke reason, when the buffer is revoked.
    pub(crate) revoked: Option<RevokeReason>,
    /// How many ranges the dma-buf has, when known.
    pub(crate) ranges: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_flags() {
        assert_eq!(Prot::Read.flags(), IOMMU_IOAS_MAP_READABLE);
        assert_eq!(Prot::Write.flags(), IOMMU_IOAS_MAP_WRITEABLE);
        assert_eq!(
            Prot::ReadWrite.flags(),
            IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE
        );
    }
}
