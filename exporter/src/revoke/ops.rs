//! The device operations that revoke and restore its dma-bufs (memory decode,
//! `VFIO_DEVICE_RESET`, FLR, power state), and the state and events that report
//! it. The types are in `state`.

use std::sync::mpsc::{channel, Receiver};
use std::time::Instant;

use super::state::{
    PowerState, ResetMethod, ResetRecord, RevokeEvent, RevokeReason, RevokeState, SubscriptionToken,
};
use crate::device::{Device, DeviceInner};
use crate::error::{Error, Result};
use crate::explain;
use crate::ioctl::{self, VfioIoctl};
use peerdma_host::pci_caps::FlrMethod;
use peerdma_uapi::pci::{
    PCI_AF_CTRL_FLR, PCI_COMMAND, PCI_COMMAND_MEMORY, PCI_EXP_DEVCTL_BCR_FLR,
    PCI_PM_CTRL_PME_STATUS, PCI_PM_CTRL_STATE_MASK,
};

impl DeviceInner {
    /// The revoke state, read from PCI_COMMAND and PMCSR.
    pub(crate) fn revoke_state(&self) -> Result<RevokeState> {
        let command = self.config_read_u16(PCI_COMMAND)?;
        let pmcsr = match self.layout.pmcsr {
            Some(at) => Some(self.config_read_u16(at)?),
            None => None,
        };
        let is_virtfn = self.sys.as_ref().is_some_and(|s| s.is_virtfn);
        Ok(RevokeState::from_registers(command, pmcsr, is_virtfn))
    }

    /// Runs `action` between two reads of the revoke state and reports the
    /// change; `forced` is the revoke the kernel performs for this action even
    /// when the state is the same before and after. The lifecycle lock is held
    /// throughout, so library actions on one device do not interleave.
    pub(crate) fn transition<T>(
        &self,
        forced: Option<RevokeReason>,
        action: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let mut life = self.lifecycle();
        let before = self.revoke_state()?;
        let result = action();
        if let Ok(after) = self.revoke_state() {
            life.record(
                &self.generation,
                before,
                after,
                forced.filter(|_| result.is_ok()),
            );
        }
        result
    }
}

impl Device {
    /// Whether importers can map this device's dma-bufs now, from the device's
    /// registers (Memory Space Enable, PMCSR power state).
    ///
    /// # Errors
    ///
    /// [`Error::ConfigAccess`] with the errno of `pread`, or
    /// [`Error::ConfigShort`] when fewer bytes came back.
    pub fn revoke_state(&self) -> Result<RevokeState> {
        self.inner.revoke_state()
    }

    /// Receives every revoke and restore this library causes on this device
    /// (through any `Device` method, `config_write` included), so importers can
    /// map again after a restore. Changes made by other processes are not seen;
    /// poll [`Device::revoke_state`] for those.
    pub fn subscribe(&self) -> Receiver<RevokeEvent> {
        let (tx, rx) = channel();
        self.inner.lifecycle().subscribe(tx);
        rx
    }

    /// As [`Device::subscribe`], for a subscriber that ends before the device: the
    /// device forgets it as soon as the token is dropped (at the next subscription),
    /// not only at the next revoke event. What an importer's mapping uses.
    pub fn subscribe_tracked(&self) -> (Receiver<RevokeEvent>, SubscriptionToken) {
        let (tx, rx) = channel();
        let token = self.inner.lifecycle().subscribe_tracked(tx);
        (rx, token)
    }

    /// Number of revokes this library has caused on this device so far. A revoke or
    /// reset that this library is performing on the device on another thread is waited
    /// for first (it counts once it has finished), so a caller that saw the device stop
    /// under it (an NVMe controller's CSTS.RDY gone clear mid-reset) reads the
    /// generation that tells the reset from a failure.
    pub fn revoke_generation(&self) -> u64 {
        let _settled = self.inner.lifecycle();
        self.inner.generation.get()
    }

    /// The last reset this library performed on this device.
    pub fn last_reset(&self) -> Option<ResetRecord> {
        self.inner.lifecycle().last_reset
    }

    /// Whether Memory Space Enable is set (as the kernel sees it: the
    /// virtualized command register).
    ///
    /// # Errors
    ///
    /// [`Error::ConfigAccess`] with the errno of `pread`, or
    /// [`Error::ConfigShort`] when fewer bytes came back.
    pub fn memory_decode(&self) -> Result<bool> {
        Ok(self.config_read_u16(PCI_COMMAND)? & PCI_COMMAND_MEMORY != 0)
    }

    /// Sets or clears Memory Space Enable through the config region. Clearing
    /// it revokes every dma-buf of the device; setting it restores them
    /// (importers must map again).
    ///
    /// # Errors
    ///
    /// [`Error::ConfigAccess`] or [`Error::ConfigShort`] from the read or the
    /// write of the register.
    pub fn set_memory_decode(&self, on: bool) -> Result<()> {
        self.update_command(PCI_COMMAND_MEMORY, on)
    }

    /// `VFIO_DEVICE_RESET`. The kernel moves the device to D0, revokes its
    /// dma-bufs, resets it, and restores them if memory decode is on after.
    ///
    /// # Errors
    ///
    /// [`Error::ResetUnsupported`] when device info lacks
    /// `VFIO_DEVICE_FLAGS_RESET`; [`Error::Ioctl`] with the kernel's errno when
    /// the reset fails; [`Error::ConfigAccess`]/[`Error::ConfigShort`] when the
    /// revoke state cannot be read around it.
    pub fn reset(&self) -> Result<()> {
        let bdf = self.bdf();
        if !self.inner.info.supports_reset() {
            return Err(Error::ResetUnsupported { bdf });
        }
        self.reset_with(ResetMethod::VfioReset, || {
            ioctl::device_reset(self.fd()).map_err(explain::ioctl_err(bdf, VfioIoctl::DeviceReset))
        })
    }

    /// A function-level reset written through config space: PCIe DEVCTL
    /// BCR_FLR when DEVCAP advertises FLR, else the Advanced Features FLR
    /// (with TP), as vfio-pci requires. Revokes and restores like
    /// [`Device::reset`].
    ///
    /// # Errors
    ///
    /// [`Error::FlrUnsupported`] when neither capability offers FLR;
    /// [`Error::ConfigAccess`]/[`Error::ConfigShort`] when the control register
    /// or the revoke state cannot be read or written.
    pub fn flr(&self) -> Result<()> {
        match self.inner.layout.flr {
            Some(FlrMethod::Pcie { devctl }) => self.reset_with(ResetMethod::PcieFlr, || {
                let ctl = self.config_read_u16(devctl)?;
                self.inner.config_write_raw(
                    u64::from(devctl),
                    &(ctl | PCI_EXP_DEVCTL_BCR_FLR).to_le_bytes(),
                )
            }),
            Some(FlrMethod::Af { ctrl }) => self.reset_with(ResetMethod::AfFlr, || {
                let ctl = self.config_read_u8(ctrl)?;
                self.inner
                    .config_write_raw(u64::from(ctrl), &[ctl | PCI_AF_CTRL_FLR])
            }),
            None => Err(Error::FlrUnsupported { bdf: self.bdf() }),
        }
    }

    fn reset_with(&self, method: ResetMethod, action: impl FnOnce() -> Result<()>) -> Result<()> {
        let result = self
            .inner
            .transition(Some(RevokeReason::Reset(method)), || Ok(action()))?;
        let mut life = self.inner.lifecycle();
        let generation = self.inner.generation.get();
        life.last_reset = Some(ResetRecord {
            method,
            at: Instant::now(),
            generation,
            errno: result.as_ref().err().and_then(Error::errno),
        });
        result
    }

    /// The PMCSR power state, if the device has a PM capability.
    ///
    /// # Errors
    ///
    /// [`Error::ConfigAccess`] with the errno of `pread`, or
    /// [`Error::ConfigShort`] when fewer bytes came back.
    pub fn power_state(&self) -> Result<Option<PowerState>> {
        match self.inner.layout.pmcsr {
            Some(at) => Ok(Some(PowerState::from_pmcsr(self.config_read_u16(at)?))),
            None => Ok(None),
        }
    }

    /// Writes the PMCSR power state. Entering D3hot revokes the device's
    /// dma-bufs; returning to D0 restores them if memory decode is on.
    ///
    /// # Errors
    ///
    /// [`Error::PowerStateUnsupported`] without a PM capability;
    /// [`Error::ConfigAccess`]/[`Error::ConfigShort`] when PMCSR cannot be read
    /// or written.
    pub fn set_power_state(&self, state: PowerState) -> Result<()> {
        let at = self
            .inner
            .layout
            .pmcsr
            .ok_or(Error::PowerStateUnsupported { bdf: self.bdf() })?;
        let pmcsr = self.config_read_u16(at)?;
        // Keep the other bits, but never write 1 to the write-one-to-clear PME status.
        let new = (pmcsr & !(PCI_PM_CTRL_STATE_MASK | PCI_PM_CTRL_PME_STATUS)) | state.pmcsr_bits();
        self.config_write_u16(at, new)
    }
}
