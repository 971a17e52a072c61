//! The devices and the IOAS every reference scenario uses: ivshmem0's BAR2 exported and
//! mapped, edu attached to the same IOAS, and where in the BAR each scenario works.

use anyhow::{Context, Result};
use peerdma_engine::{DmaEngine, Edu, TransferReport};
use peerdma_exporter::{
    AccessPath, Device, DmaBuf, DmaRange, MappedRegion, OpenOptions, PassedFds,
};
use peerdma_host::Bdf;
use peerdma_importer::iommufd::{
    Attachment, DmaBufMapping, Ioas, Iommufd, Iova, Placement, Prot, UserBuffer, UserMapping,
};
use peerdma_testbed::manifest::Manifest;
use peerdma_testbed::pattern;

pub(crate) const KIB: u64 = 1 << 10;
pub(crate) const MIB: u64 = 1 << 20;
/// edu's buffer and longest transfer.
pub(crate) const EDU_BUF: u64 = 4096;

/// Where each scenario works in ivshmem0's BAR2 (offsets in the BAR and in the
/// backing file).
pub(crate) mod at {
    use super::{KIB, MIB};
    pub const HOST_TO_BAR: u64 = MIB;
    pub const HOST_TO_BAR_IN_BUF: u64 = 0x3000;
    pub const BAR_TO_HOST: u64 = 2 * MIB;
    pub const GUARD: u64 = 4 * MIB;
    pub const CONTROL: u64 = 5 * MIB;
    pub const REVOKE: u64 = 8 * MIB;
    pub const MULTI: u64 = 12 * MIB;
    pub const BENCH: u64 = 16 * MIB;
    pub const LATENCY: u64 = 20 * MIB;
    pub const SMALL: u64 = 64 * KIB;
}

/// The devices and the IOAS every reference scenario uses.
pub(crate) struct Rig {
    // Mapped region, attachment and engine before the devices they came from.
    pub(crate) edu: Edu,
    pub(crate) _attached: Attachment,
    pub(crate) ioas: Ioas,
    pub(crate) iommufd: Iommufd,
    pub(crate) bar2: MappedRegion,
    pub(crate) ivshmem: Device,
    pub(crate) edu_dev: Device,
    pub(crate) ivshmem1: Bdf,
}

pub(crate) fn bdf_of(m: &Manifest, role: &str) -> Result<Bdf> {
    let d = m
        .device(role)
        .with_context(|| format!("no {role} in testbed.json"))?;
    d.bdf
        .parse()
        .with_context(|| format!("{role}: bad BDF {}", d.bdf))
}

/// Opens the device of `role` through its VFIO cdev (an iommufd of its own).
pub(crate) fn open_cdev(m: &Manifest, role: &str) -> Result<Device> {
    Ok(Device::open_with(
        bdf_of(m, role)?,
        OpenOptions {
            access: AccessPath::Cdev,
            ..OpenOptions::default()
        },
    )?)
}

/// The request an importer makes: an iommufd, the edu engine bound to it and
/// attached to an IOAS limited to edu's DMA mask, and ivshmem0 for exports.
pub(crate) fn setup(m: &Manifest) -> Result<Rig> {
    let iommufd = Iommufd::open()?;
    let edu_dev = Device::open_with(
        bdf_of(m, "edu0")?,
        OpenOptions {
            access: AccessPath::Cdev,
            passed: PassedFds::Iommufd(iommufd.try_clone_fd()?),
            ..OpenOptions::default()
        },
    )?;
    let edu = Edu::open(&edu_dev)?;
    let ioas = Ioas::alloc_with(
        &iommufd,
        Placement::for_engine(edu.dma_mask(), edu.max_transfer()),
    )?;
    let attached = ioas.attach(&edu_dev)?;
    let ivshmem = open_cdev(m, "ivshmem0")?;
    let bar2 = ivshmem.map_region(2)?;
    Ok(Rig {
        edu,
        _attached: attached,
        ioas,
        iommufd,
        bar2,
        ivshmem,
        edu_dev,
        ivshmem1: bdf_of(m, "ivshmem1")?,
    })
}

impl Rig {
    pub(crate) fn export_dma_buf(&self, offset: u64, len: u64) -> Result<DmaBuf> {
        Ok(self.ivshmem.export_dma_buf(
            2,
            &[DmaRange {
                offset,
                length: len,
            }],
        )?)
    }

    pub(crate) fn map_bar<'b>(
        &self,
        buf: &'b DmaBuf,
        iova: Iova,
    ) -> Result<DmaBufMapping<&'b DmaBuf>> {
        Ok(self
            .ioas
            .map_vfio_dmabuf(&self.ivshmem, buf, 0, buf.size(), iova, Prot::ReadWrite)?)
    }

    pub(crate) fn host(&self, len: u64, access: Prot) -> Result<UserMapping> {
        Ok(self
            .ioas
            .map_host(UserBuffer::new(len as usize)?, Iova::Guarded, access)?)
    }

    /// Loads edu's buffer with `seed`'s pattern through a host mapping.
    pub(crate) fn load_edu(&mut self, seed: u64) -> Result<TransferReport> {
        let host = self.host(EDU_BUF, Prot::Read)?;
        let mut data = vec![0u8; EDU_BUF as usize];
        pattern::fill(seed, 0, &mut data);
        host.buffer().write(0, &data)?;
        Ok(self.edu.load(host.iova(), 0, EDU_BUF)?)
    }

    pub(crate) fn bar_read(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len as usize];
        self.bar2.read_bytes(offset as usize, &mut v)?;
        Ok(v)
    }

    pub(crate) fn bar_write_pattern(&self, seed: u64, offset: u64, len: u64) -> Result<()> {
        let mut v = vec![0u8; len as usize];
        pattern::fill(seed, 0, &mut v);
        Ok(self.bar2.write_bytes(offset as usize, &v)?)
    }
}
