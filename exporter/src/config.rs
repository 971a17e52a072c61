//! PCI config space through the VFIO config region: `pread`/`pwrite` at the
//! region's offset in the device fd.
//!
//! Writes that reach a register the revoke lifecycle depends on (PCI_COMMAND,
//! PMCSR, PCIe DEVCTL, AF control) go through the lifecycle bookkeeping, so
//! subscribers hear about revokes whichever helper caused them.

use crate::device::{Device, DeviceInner};
use crate::error::{Error, Result};
use crate::pci_caps::{
    FlrMethod, PCI_AF_CTRL_FLR, PCI_COMMAND, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY,
    PCI_EXP_DEVCTL_BCR_FLR,
};
use crate::revoke::{ResetMethod, RevokeReason};

impl DeviceInner {
    /// Reads `buf.len()` bytes of config space at `offset`.
    pub(crate) fn config_read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let at = self.config_region.offset.saturating_add(offset);
        let done =
            rustix::io::pread(&self.fd, &mut *buf, at).map_err(|errno| Error::ConfigAccess {
                bdf: self.bdf,
                op: "read",
                offset,
                len: buf.len(),
                errno,
            })?;
        if done != buf.len() {
            return Err(Error::ConfigShort {
                bdf: self.bdf,
                op: "read",
                offset,
                len: buf.len(),
                done,
            });
        }
        Ok(())
    }

    /// Writes `data` to config space at `offset`, with no lifecycle bookkeeping.
    pub(crate) fn config_write_raw(&self, offset: u64, data: &[u8]) -> Result<()> {
        let at = self.config_region.offset.saturating_add(offset);
        let done = rustix::io::pwrite(&self.fd, data, at).map_err(|errno| Error::ConfigAccess {
            bdf: self.bdf,
            op: "write",
            offset,
            len: data.len(),
            errno,
        })?;
        if done != data.len() {
            return Err(Error::ConfigShort {
                bdf: self.bdf,
                op: "write",
                offset,
                len: data.len(),
                done,
            });
        }
        Ok(())
    }

    /// Reads a little-endian word.
    pub(crate) fn config_read_u16(&self, offset: u16) -> Result<u16> {
        let mut b = [0u8; 2];
        self.config_read(u64::from(offset), &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Whether a write of `len` bytes at `offset` reaches a register that
    /// changes the revoke state.
    fn touches_lifecycle(&self, offset: u64, len: usize) -> bool {
        let end = offset.saturating_add(len as u64);
        let overlaps =
            |reg: u16, width: u64| offset < u64::from(reg) + width && u64::from(reg) < end;
        overlaps(PCI_COMMAND, 2)
            || self.layout.pmcsr.is_some_and(|p| overlaps(p, 2))
            || match self.layout.flr {
                Some(FlrMethod::Pcie { devctl }) => overlaps(devctl, 2),
                Some(FlrMethod::Af { ctrl }) => overlaps(ctrl, 1),
                None => false,
            }
    }

    /// The revoke the kernel performs unconditionally for this write, if any:
    /// clearing Memory Space Enable, or starting an FLR.
    pub(crate) fn forced_revoke(&self, offset: u64, data: &[u8]) -> Option<RevokeReason> {
        let byte = |reg: u16| -> Option<u8> {
            let i = u64::from(reg).checked_sub(offset)?;
            data.get(usize::try_from(i).ok()?).copied()
        };
        if let Some(command) = byte(PCI_COMMAND) {
            if u16::from(command) & PCI_COMMAND_MEMORY == 0 {
                return Some(RevokeReason::MemoryDecodeOff);
            }
        }
        match self.layout.flr {
            Some(FlrMethod::Pcie { devctl }) => {
                let high = byte(devctl + 1)?;
                (u16::from(high) << 8 & PCI_EXP_DEVCTL_BCR_FLR != 0)
                    .then_some(RevokeReason::Reset(ResetMethod::PcieFlr))
            }
            Some(FlrMethod::Af { ctrl }) => (byte(ctrl)? & PCI_AF_CTRL_FLR != 0)
                .then_some(RevokeReason::Reset(ResetMethod::AfFlr)),
            None => None,
        }
    }

    /// Writes config space, recording revokes and restores it causes.
    pub(crate) fn config_write(&self, offset: u64, data: &[u8]) -> Result<()> {
        if !self.touches_lifecycle(offset, data.len()) {
            return self.config_write_raw(offset, data);
        }
        let forced = self.forced_revoke(offset, data);
        self.transition(forced, || self.config_write_raw(offset, data))
    }
}

impl Device {
    /// Reads `buf.len()` bytes of config space at `offset`.
    pub fn config_read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.config_read(offset, buf)
    }

    /// Writes `data` to config space at `offset`.
    ///
    /// Writes reaching PCI_COMMAND, PMCSR or an FLR control register are
    /// reported to [`Device::subscribe`]rs like the dedicated helpers' are.
    pub fn config_write(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.inner.config_write(offset, data)
    }

    /// Reads a byte.
    pub fn config_read_u8(&self, offset: u16) -> Result<u8> {
        let mut b = [0u8; 1];
        self.config_read(u64::from(offset), &mut b)?;
        Ok(b[0])
    }

    /// Reads a little-endian word.
    pub fn config_read_u16(&self, offset: u16) -> Result<u16> {
        self.inner.config_read_u16(offset)
    }

    /// Reads a little-endian dword.
    pub fn config_read_u32(&self, offset: u16) -> Result<u32> {
        let mut b = [0u8; 4];
        self.config_read(u64::from(offset), &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a byte.
    pub fn config_write_u8(&self, offset: u16, value: u8) -> Result<()> {
        self.config_write(u64::from(offset), &[value])
    }

    /// Writes a little-endian word.
    pub fn config_write_u16(&self, offset: u16, value: u16) -> Result<()> {
        self.config_write(u64::from(offset), &value.to_le_bytes())
    }

    /// Writes a little-endian dword.
    pub fn config_write_u32(&self, offset: u16, value: u32) -> Result<()> {
        self.config_write(u64::from(offset), &value.to_le_bytes())
    }

    /// Reads the first `len` bytes of config space (256 covers the standard
    /// capabilities; the region may be 4096 for PCIe).
    pub fn config_snapshot(&self, len: usize) -> Result<Vec<u8>> {
        let len = len.min(usize::try_from(self.inner.config_region.size).unwrap_or(usize::MAX));
        let mut buf = vec![0u8; len];
        self.config_read(0, &mut buf)?;
        Ok(buf)
    }

    /// Sets or clears Bus Master Enable (the device may issue DMA), leaving
    /// Memory Space Enable as it is: no revoke.
    pub fn set_bus_master(&self, on: bool) -> Result<()> {
        let command = self.config_read_u16(PCI_COMMAND)?;
        let new = if on {
            command | PCI_COMMAND_MASTER
        } else {
            command & !PCI_COMMAND_MASTER
        };
        self.config_write_u16(PCI_COMMAND, new)
    }
}
