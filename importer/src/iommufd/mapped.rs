//! What every mapping in an IOAS says of itself ([`Mapped`]): where it is, how long,
//! what devices may do through it, and whether DMA through it still reaches the
//! memory. An engine's checked copy (`peerdma_engine::AttachedEngine::copy`) asks
//! this of both sides before and after it moves bytes.

use std::os::fd::AsFd;

use super::{DmaBufMapping, MappingState, Prot, UserMapping};

/// A mapping in an IOAS: a dma-buf range ([`DmaBufMapping`]) or user memory
/// ([`UserMapping`]).
pub trait Mapped {
    /// The IOAS it is mapped in.
    fn ioas_id(&self) -> u32;
    /// Its first IOVA.
    fn iova(&self) -> u64;
    /// Its length in bytes.
    fn len(&self) -> u64;
    /// Whether it is empty (never, for a live mapping).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// What devices may do through it.
    fn prot(&self) -> Prot;
    /// Whether DMA through it reaches the memory now. User memory is pinned by the
    /// kernel for as long as it is mapped: always [`MappingState::Live`].
    fn state(&mut self) -> MappingState;
}

impl<F: AsFd> Mapped for DmaBufMapping<F> {
    fn ioas_id(&self) -> u32 {
        DmaBufMapping::ioas_id(self)
    }
    fn iova(&self) -> u64 {
        DmaBufMapping::iova(self)
    }
    fn len(&self) -> u64 {
        DmaBufMapping::len(self)
    }
    fn prot(&self) -> Prot {
        DmaBufMapping::prot(self)
    }
    fn state(&mut self) -> MappingState {
        DmaBufMapping::state(self)
    }
}

impl Mapped for UserMapping {
    fn ioas_id(&self) -> u32 {
        UserMapping::ioas_id(self)
    }
    fn iova(&self) -> u64 {
        UserMapping::iova(self)
    }
    fn len(&self) -> u64 {
        UserMapping::len(self)
    }
    fn prot(&self) -> Prot {
        UserMapping::prot(self)
    }
    fn state(&mut self) -> MappingState {
        MappingState::Live
    }
}

impl Prot {
    /// Whether devices may read through a mapping with this protection.
    pub fn reads(self) -> bool {
        matches!(self, Prot::Read | Prot::ReadWrite)
    }

    /// Whether devices may write through a mapping with this protection.
    pub fn writes(self) -> bool {
        matches!(self, Prot::Write | Prot::ReadWrite)
    }
}

impl std::fmt::Display for Prot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Prot::Read => "read-only",
            Prot::Write => "write-only",
            Prot::ReadWrite => "read-write",
        })
    }
}

impl std::fmt::Display for MappingState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MappingState::Live => f.write_str("live"),
            MappingState::Revoked(Some(reason)) => write!(f, "revoked ({reason})"),
            MappingState::Revoked(None) => f.write_str("revoked"),
            MappingState::NeedsRemap => {
                f.write_str("restored by the exporter but not mapped again (remap it)")
            }
            MappingState::Unmapped => f.write_str("unmapped (a remap failed)"),
        }
    }
}
