//! The iommufd engine: both spans exported as single-range dma-bufs, mapped into an IOAS
//! that a DMA-capable device (the engine) is attached to, and the engine moves the data
//! from one IOVA to the other. The CPU never touches the data on this path.

use std::path::Path;

use peerdma_exporter::{AccessPath, Bdf, Device, DmaBuf, DmaRange, OpenOptions, PassedFds, Sysfs};
use peerdma_importer::iommufd::{
    Access, Attachment, DmaBufMapping, Ioas, Iommufd, Iova, MappingState, Placement,
};

use super::{CopyError, Endpoint, Progress};
use crate::engines::edu::{EDU_DEVICE, EDU_VENDOR};
use crate::engines::{DmaEngine, Edu};

/// The engines this p2pcopy can drive through iommufd, by PCI ID.
const SUPPORTED: &[(u16, u16, &str)] = &[(EDU_VENDOR, EDU_DEVICE, "QEMU edu")];

/// Default span for an engine as slow as edu (4 KiB per ~100 ms).
pub(super) const EDU_DEFAULT_SIZE: u64 = 64 << 10;

/// The engine device: `--via`, or the one supported engine bound to vfio-pci.
pub(super) fn find_engine(via: Option<Bdf>, exclude: &[Bdf]) -> Result<Bdf, CopyError> {
    if let Some(bdf) = via {
        if exclude.contains(&bdf) {
            return Err(CopyError::EngineUnavailable {
                engine: "iommufd",
                why: format!(
                    "--via {bdf} is also SRC or DST: the engine must be a third device \
                     (a VFIO cdev device can be opened once); name another with --via"
                ),
            });
        }
        return Ok(bdf);
    }
    let sys = Sysfs::system();
    let mut found: Vec<Bdf> = std::fs::read_dir(sys.root().join("bus/pci/devices"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse::<Bdf>().ok())
                .filter(|b| !exclude.contains(b))
                .filter(|b| {
                    sys.device(*b).is_ok_and(|d| {
                        d.is_vfio_bound()
                            && SUPPORTED
                                .iter()
                                .any(|(v, dv, _)| (d.vendor, d.device) == (*v, *dv))
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .into_iter()
        .next()
        .ok_or_else(|| CopyError::EngineUnavailable {
            engine: "iommufd",
            why: format!(
            "no supported DMA engine is bound to vfio-pci (supported: {}); bind one or name it \
             with --via BDF, or use --engine cpu",
            SUPPORTED
                .iter()
                .map(|(v, d, n)| format!("{n} {v:04x}:{d:04x}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        })
}

/// Whether this kernel has the iommufd path at all.
pub(super) fn available() -> Result<(), CopyError> {
    if Path::new("/dev/iommu").exists() {
        Ok(())
    } else {
        Err(CopyError::EngineUnavailable {
            engine: "iommufd",
            why: "/dev/iommu does not exist: this kernel has no CONFIG_IOMMUFD (Debian's stock \
                  kernels leave it off), so a dma-buf cannot be imported into an IOAS; use \
                  --engine cpu"
                .into(),
        })
    }
}

/// The engine, attached to its IOAS, with both spans mapped.
pub(super) struct IommufdCopy<'a> {
    edu: Edu,
    src_map: DmaBufMapping<DmaBuf>,
    dst_map: DmaBufMapping<DmaBuf>,
    src: &'a Endpoint,
    dst: &'a Endpoint,
    // Field order is drop order: unmap, detach, then close the devices.
    _attached: Attachment,
    _ioas: Ioas,
    engine_dev: Device,
}

impl<'a> IommufdCopy<'a> {
    /// Opens the engine, builds the IOAS, exports and maps both spans.
    pub(super) fn new(
        engine: Bdf,
        src: &'a Endpoint,
        dst: &'a Endpoint,
        size: u64,
    ) -> Result<IommufdCopy<'a>, CopyError> {
        available()?;
        let iommufd = Iommufd::open()?;
        let engine_dev = Device::open_with(
            engine,
            OpenOptions {
                access: AccessPath::Cdev,
                passed: PassedFds::Iommufd(iommufd.try_clone_fd()?),
                ..OpenOptions::default()
            },
        )?;
        let edu = Edu::open(&engine_dev)?;
        let ioas = Ioas::alloc_with(
            &iommufd,
            Placement::for_engine(edu.dma_mask(), edu.max_transfer()),
        )?;
        let attached = ioas.attach(&engine_dev)?;
        let export = |ep: &Endpoint| -> Result<DmaBuf, CopyError> {
            Ok(ep
                .device
                .export_dma_buf(ep.bar.index, &[DmaRange::new(ep.offset, size)])?)
        };
        let src_map = ioas.map_vfio_dmabuf(
            &src.device,
            export(src)?,
            0,
            size,
            Iova::Guarded,
            Access::Read,
        )?;
        let dst_map = ioas.map_vfio_dmabuf(
            &dst.device,
            export(dst)?,
            0,
            size,
            Iova::Guarded,
            Access::Write,
        )?;
        Ok(IommufdCopy {
            edu,
            src_map,
            dst_map,
            src,
            dst,
            _attached: attached,
            _ioas: ioas,
            engine_dev,
        })
    }

    /// The engine's name for the report.
    pub(super) fn via(&self) -> String {
        format!("{} ({})", self.engine_dev.bdf(), self.edu.name())
    }

    /// Copies the span `iterations` times, `chunk` bytes per engine call.
    pub(super) fn copy(
        &mut self,
        chunk: u64,
        iterations: u32,
        total: u64,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), CopyError> {
        let len = self.src_map.len();
        let (s, d) = (self.src_map.iova(), self.dst_map.iova());
        // Step in the engine's own transfer size, so a revoke is seen within one transfer.
        let chunk = chunk.min(self.edu.max_transfer()).max(1);
        let mut done = 0;
        for _ in 0..iterations {
            let mut off = 0;
            while off < len {
                let n = chunk.min(len - off);
                self.edu.copy(s + off, d + off, n)?;
                // A revoke tears the IOMMU mapping down: the engine's DMA faulted and
                // nothing landed. Stop rather than report bytes that never moved.
                for (map, ep) in [(&mut self.src_map, self.src), (&mut self.dst_map, self.dst)] {
                    if !matches!(map.state(), MappingState::Live) {
                        return Err(super::revoked(ep, done, total));
                    }
                }
                off += n;
                done += n;
                progress(Progress { done, total });
            }
        }
        Ok(())
    }
}
