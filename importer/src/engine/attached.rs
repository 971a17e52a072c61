//! An engine ready to move bytes: its device bound to an iommufd, taken over
//! by its driver, and attached to an IOAS placed for its DMA mask.

use peerdma_exporter::{AccessPath, Bdf, Device, OpenOptions, PassedFds};

use super::{DmaEngine, EngineError, EngineOptions, Result};
use crate::iommufd::{Attachment, Ioas, Iommufd, Placement};

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
    /// ([`super::open`]), allocates an IOAS whose [`Placement`] keeps every
    /// IOVA under the engine's DMA mask with a guard of at least its longest
    /// transfer, and attaches the device there.
    ///
    /// # Errors
    ///
    /// [`EngineError::Iommufd`] when the iommufd cannot be shared, the IOAS
    /// allocated or the device attached; [`EngineError::Device`] when the
    /// device cannot be opened; [`super::open`]'s errors for the driver.
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
        let mut engine = super::open_with(&device, opts)?;
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

    /// The engine, to start transfers.
    pub fn engine_mut(&mut self) -> &mut (dyn DmaEngine + Send) {
        self.engine.as_mut()
    }

    /// The NVMe driver, when the engine is an NVMe controller.
    pub fn nvme_mut(&mut self) -> Option<&mut super::Nvme> {
        self.engine.as_nvme_mut()
    }

    /// The engine's name ("edu 0000:00:12.0").
    pub fn name(&self) -> String {
        self.engine.name()
    }
}
