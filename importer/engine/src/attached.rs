//! An engine ready to move bytes: its device bound to an iommufd, taken over
//! by its driver, and attached to an IOAS placed for its DMA mask.

use peerdma_exporter::{AccessPath, Device, OpenOptions, PassedFds};
use peerdma_host::Bdf;

use crate::{DmaEngine, EngineError, EngineOptions, Result, TransferReport};
use peerdma_host::fault_log::{FaultLog, IommuFault};
use peerdma_importer::iommufd::{Attachment, Ioas, Iommufd, Mapped, MappingState, Placement};

/// One side of a checked copy ([`AttachedEngine::copy`]): the bytes at `offset` into
/// a mapping in the engine's IOAS.
pub struct Span<'a> {
    /// The mapping (a BAR's dma-buf range, or user memory).
    pub mapping: &'a mut dyn Mapped,
    /// Offset into the mapping, in bytes.
    pub offset: u64,
}

impl<'a> Span<'a> {
    /// The span at `offset` into `mapping`.
    pub fn at(mapping: &'a mut dyn Mapped, offset: u64) -> Self {
        Span { mapping, offset }
    }

    /// The whole of `mapping`, from its start.
    pub fn start_of(mapping: &'a mut dyn Mapped) -> Self {
        Span { mapping, offset: 0 }
    }
}

/// A DMA engine attached to its own IOAS: map buffers in [`ioas`](Self::ioas)
/// and the engine DMAs between their IOVAs.
///
/// Field order is drop order: the driver lets go of the registers, the device
/// is detached, then the IOAS and the device file go.
pub struct AttachedEngine {
    engine: Box<dyn DmaEngine + Send>,
    attachment: Attachment,
    ioas: Ioas,
    device: Device,
}

impl std::fmt::Debug for AttachedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachedEngine")
            .field("engine", &self.engine.name())
            .field("attachment", &self.attachment)
            .field("ioas", &self.ioas)
            .finish_non_exhaustive()
    }
}

impl AttachedEngine {
    /// Opens the engine device `bdf` through its VFIO cdev bound to
    /// `iommufd`, takes it over with the driver its PCI ids call for
    /// ([`crate::open`]), allocates an IOAS whose [`Placement`] keeps every
    /// IOVA under the engine's DMA mask with a guard of at least its longest
    /// transfer, and attaches the device there.
    ///
    /// # Errors
    ///
    /// [`EngineError::Iommufd`] when the iommufd cannot be shared, the IOAS
    /// allocated or the device attached; [`EngineError::Device`] when the
    /// device cannot be opened; [`crate::open`]'s errors for the driver.
    pub fn open(bdf: Bdf, iommufd: &Iommufd) -> Result<Self> {
        Self::open_with(bdf, iommufd, &EngineOptions::default())
    }

    /// [`open`](Self::open) with driver options; after the attach the engine starts
    /// in the IOAS ([`DmaEngine::start_in`]: an NVMe controller maps its queues there
    /// and comes up).
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open), and the driver's start-up errors.
    pub fn open_with(bdf: Bdf, iommufd: &Iommufd, opts: &EngineOptions) -> Result<Self> {
        let iommufd_err = |source| EngineError::Iommufd {
            engine: bdf.to_string(),
            source,
        };
        let device = Device::open_with(
            bdf,
            OpenOptions {
                access: AccessPath::Cdev,
                passed: PassedFds::Iommufd(iommufd.try_clone_fd().map_err(iommufd_err)?),
                ..OpenOptions::default()
            },
        )
        .map_err(|source| EngineError::Device {
            engine: bdf.to_string(),
            source,
        })?;
        let mut engine = crate::open_with(&device, opts)?;
        let ioas = Ioas::alloc_with(
            iommufd,
            Placement::for_engine(engine.dma_mask(), engine.max_transfer()),
        )
        .map_err(iommufd_err)?;
        let attachment = ioas.attach(&device).map_err(iommufd_err)?;
        engine.start_in(&ioas)?;
        Ok(AttachedEngine {
            engine,
            attachment,
            ioas,
            device,
        })
    }

    /// The IOAS the engine DMAs through.
    pub fn ioas(&self) -> &Ioas {
        &self.ioas
    }

    /// The engine's VFIO device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The engine.
    pub fn engine(&self) -> &(dyn DmaEngine + Send) {
        self.engine.as_ref()
    }

    /// The engine, for its raw driver operations ([`DmaEngine`]): they return `Ok`
    /// whether or not the IOMMU let the DMA through. Move data with
    /// [`copy`](Self::copy), which checks; use this only where the caller checks the
    /// mappings, the kernel log and the bytes itself.
    pub fn engine_mut(&mut self) -> &mut (dyn DmaEngine + Send) {
        self.engine.as_mut()
    }

    /// The NVMe driver, when the engine is an NVMe controller.
    pub fn nvme_mut(&mut self) -> Option<&mut crate::Nvme> {
        self.engine.as_nvme_mut()
    }

    /// The NIC driver, when the engine is an 82576 (igb): its rings are started in
    /// [`ioas`](Self::ioas), where the caller maps the BARs its frames come from or go to.
    pub fn igb_mut(&mut self) -> Option<&mut crate::Igb> {
        self.engine.as_igb_mut()
    }

    /// Copies `len` bytes from `src` to `dst` with the engine's DMA, checked: the copy
    /// the library offers for moving data. Before any DMA it checks that both spans lie
    /// inside mappings of this engine's IOAS, that the source is mapped readable and the
    /// destination writable, and that both mappings are live; it watches the kernel log
    /// (`/dev/kmsg`) for IOMMU faults by the engine while the engine runs, and looks at
    /// both mappings' state again after. The report's `bytes` is `len`; its
    /// `iommu_faults` is `Some(0)`, or `None` where the kernel log cannot be read
    /// (`kernel.dmesg_restrict` without `CAP_SYSLOG`): then only the mapping state was
    /// checked, and the caller's own check of the bytes is all there is.
    ///
    /// A revoke made through another process (sysfs, another VFIO user) is not seen
    /// by the mapping's state until its fault shows in the kernel log.
    ///
    /// # Errors
    ///
    /// [`EngineError::MappingUnusable`] before any DMA; [`EngineError::NotLanded`] when
    /// the kernel logged an IOMMU fault for the engine during the copy or a side was
    /// revoked under it (whether or not the engine reported an error); the engine's own
    /// errors ([`DmaEngine::copy`]) otherwise.
    pub fn copy(
        &mut self,
        mut src: Span<'_>,
        mut dst: Span<'_>,
        len: u64,
    ) -> Result<TransferReport> {
        let name = self.engine.name();
        let ioas = self.ioas.id();
        let check = |side: &'static str, span: &mut Span<'_>, writes: bool| -> Result<u64> {
            let m = &mut *span.mapping;
            let unusable = |why: String, fix: &'static str| EngineError::MappingUnusable {
                engine: name.clone(),
                side,
                why,
                fix,
            };
            if m.ioas_id() != ioas {
                return Err(unusable(
                    format!(
                        "is mapped in IOAS {}, not in the engine's IOAS {ioas}",
                        m.ioas_id()
                    ),
                    "map the buffer in the engine's IOAS (AttachedEngine::ioas)",
                ));
            }
            if span.offset.checked_add(len).is_none_or(|end| end > m.len()) {
                return Err(unusable(
                    format!(
                        "span {:#x} + {len:#x} runs past the end of its {:#x}-byte mapping",
                        span.offset,
                        m.len()
                    ),
                    "copy inside the mapping, or map more of the buffer",
                ));
            }
            let (ok, needs) = if writes {
                (m.prot().writes(), "writes")
            } else {
                (m.prot().reads(), "reads")
            };
            if !ok {
                return Err(unusable(
                    format!(
                        "mapping at IOVA {:#x} is {}, and the engine {needs} it: the IOMMU \
                         would refuse every access",
                        m.iova(),
                        m.prot()
                    ),
                    "map it with the access the copy needs",
                ));
            }
            match m.state() {
                MappingState::Live => Ok(m.iova() + span.offset),
                state => Err(unusable(
                    format!("mapping at IOVA {:#x} is {state}", m.iova()),
                    "wait for the device to come back and remap it (DmaBufMapping::remap)",
                )),
            }
        };
        let from = check("source", &mut src, false)?;
        let to = check("destination", &mut dst, true)?;
        let mut log = FaultLog::open().ok();
        let outcome = self.engine.copy(from, to, len);
        let bdf = self.device.bdf();
        let faults: Vec<IommuFault> = match log.as_mut().map(|l| l.read_new_by(bdf)) {
            Some(Ok(new)) => new,
            Some(Err(_)) => {
                log = None;
                Vec::new()
            }
            None => Vec::new(),
        };
        let revoked: Vec<String> = [
            ("source", src.mapping.state()),
            ("destination", dst.mapping.state()),
        ]
        .into_iter()
        .filter(|(_, state)| *state != MappingState::Live)
        .map(|(side, state)| format!("the {side} mapping became {state}"))
        .collect();
        if !faults.is_empty() || !revoked.is_empty() {
            let mut cause: Vec<String> = revoked;
            if let Some(first) = faults.first() {
                cause.push(format!(
                    "the IOMMU refused {} access(es) by the engine, the first: {first}",
                    faults.len()
                ));
            }
            if let Err(e) = &outcome {
                cause.push(format!("the engine reported: {e}"));
            }
            return Err(EngineError::NotLanded {
                engine: name,
                len,
                cause: cause.join("; "),
                faults,
            });
        }
        let mut report = outcome?;
        report.bytes = len;
        report.iommu_faults = log.map(|_| 0);
        Ok(report)
    }

    /// The engine's name ("edu 0000:00:12.0").
    pub fn name(&self) -> String {
        self.engine.name()
    }
}
