//! The seam under the VFIO drivers (openvmm's `DeviceBacking` shape; used by
//! [`nvme`](crate::nvme) and [`igb`](crate::igb)): what a driver needs from a controller
//! is register I/O at BAR0 offsets ([`RegisterIo`]) and memory the controller can DMA
//! to and from ([`DmaMemory`], handing out [`DmaBuffer`]s with the
//! IOVA the device sees and CPU access through a [`UserBuffer`]).
//!
//! [`Vfio`] is the real backing: BAR0 mapped through VFIO ([`Bar0`], guarded against a
//! revoke) and user memory mapped into an iommufd IOAS ([`Ioas`] hands out
//! [`UserMapping`]s). The unit tests put an in-process controller model behind the same
//! traits, so the NVMe controller state machine, phase tags, doorbells, reset on error
//! and command building are tested without a VM.

use std::fmt::Debug;

use peerdma_exporter::MappedRegion;

use peerdma_importer::iommufd::{self, Ioas, Iova, Prot, UserBuffer, UserMapping};

/// 32-bit register accesses at byte offsets of BAR0 (NVMe: Base spec "Controller
/// Properties"; igb: the 82576 datasheet's section 8); 64-bit registers go as two
/// dwords, low first.
pub trait RegisterIo: Debug {
    /// Reads the dword at `offset`.
    ///
    /// # Errors
    ///
    /// The exporter's error for an access outside the region.
    fn read32(&self, offset: usize) -> peerdma_exporter::Result<u32>;

    /// Writes the dword at `offset`.
    ///
    /// # Errors
    ///
    /// As [`read32`](Self::read32).
    fn write32(&self, offset: usize, value: u32) -> peerdma_exporter::Result<()>;

    /// Whether an access met a revoked BAR (decode off, a reset or D3 through VFIO
    /// zapped the mapping): the values read since are not the controller's.
    fn revoked(&self) -> bool;
}

/// Memory the controller reaches by IOVA, with CPU access for the driver.
pub trait DmaBuffer: Debug {
    /// The address the controller uses.
    fn iova(&self) -> u64;

    /// The CPU side: page-aligned memory of at least the asked length, accessed by
    /// copies and volatile accesses only (the controller may write it at any time).
    fn buffer(&self) -> &UserBuffer;
}

/// Hands out [`DmaBuffer`]s.
pub trait DmaMemory {
    /// The buffers it hands out.
    type Buffer: DmaBuffer;

    /// `len` bytes (rounded up to pages, zeroed) that the controller may read
    /// ([`Prot::Read`]), write ([`Prot::Write`]) or both.
    ///
    /// # Errors
    ///
    /// The importer's errors when the memory cannot be allocated or mapped.
    fn alloc(&self, len: usize, access: Prot) -> iommufd::Result<Self::Buffer>;
}

/// What a driver instance runs on: its registers and the memory its queues live in.
pub trait Backing: Debug {
    /// BAR0.
    type Registers: RegisterIo;
    /// Where queues, PRP lists and the Identify page are allocated
    /// ([`Nvme::start`](crate::Nvme::start) takes it).
    type Memory: DmaMemory;
}

/// The buffers of backing `B`.
pub type Buffer<B> = <<B as Backing>::Memory as DmaMemory>::Buffer;

/// A controller taken over through VFIO, its memory mapped into an iommufd IOAS.
#[derive(Debug)]
pub enum Vfio {}

impl Backing for Vfio {
    type Registers = Bar0;
    type Memory = Ioas;
}

/// BAR0 mapped through VFIO.
#[derive(Debug)]
pub struct Bar0 {
    map: MappedRegion,
}

impl Bar0 {
    /// Wraps the mapping and guards it against a revoke (an access after one reads as
    /// revoked, not a SIGBUS that ends the process; best effort: with every guard slot
    /// of the process taken the mapping stays unguarded).
    pub fn new(mut map: MappedRegion) -> Bar0 {
        let _ = map.guard_against_revoke();
        Bar0 { map }
    }
}

impl RegisterIo for Bar0 {
    fn read32(&self, offset: usize) -> peerdma_exporter::Result<u32> {
        self.map.read::<u32>(offset)
    }

    fn write32(&self, offset: usize, value: u32) -> peerdma_exporter::Result<()> {
        self.map.write::<u32>(offset, value)
    }

    fn revoked(&self) -> bool {
        self.map.revoked_under_access()
    }
}

impl DmaBuffer for UserMapping {
    fn iova(&self) -> u64 {
        UserMapping::iova(self)
    }

    fn buffer(&self) -> &UserBuffer {
        UserMapping::buffer(self)
    }
}

impl DmaMemory for Ioas {
    type Buffer = UserMapping;

    /// Anonymous pages mapped at a guarded IOVA (`IOMMU_IOAS_MAP`).
    fn alloc(&self, len: usize, access: Prot) -> iommufd::Result<UserMapping> {
        self.map_host(UserBuffer::new(len)?, Iova::Guarded, access)
    }
}
