//! PCI config space through the VFIO config region: `pread`/`pwrite` at the
//! region's offset in the device fd.
//!
//! Writes that reach a register the revoke lifecycle depends on (PCI_COMMAND,
//! PMCSR, PCIe DEVCTL, AF control) go through the lifecycle bookkeeping, so
//! subscribers hear about revokes whichever helper caused them.

use crate::device::{ConfigLayout, Device, DeviceInner};
use crate::error::{Error, Result};
use crate::revoke::{ResetMethod, RevokeReason};
use peerdma_host::pci_caps::FlrMethod;
use peerdma_uapi::pci::{
    PCI_AF_CTRL_FLR, PCI_COMMAND, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY, PCI_EXP_DEVCTL_BCR_FLR,
};

/// Whether a write of `len` bytes at `offset` reaches a register that changes
/// the revoke state: PCI_COMMAND, PMCSR, or the FLR control register.
pub(crate) fn touches_lifecycle(layout: &ConfigLayout, offset: u64, len: usize) -> bool {
    let end = offset.saturating_add(len as u64);
    let overlaps = |reg: u16, width: u64| offset < u64::from(reg) + width && u64::from(reg) < end;
    overlaps(PCI_COMMAND, 2)
        || layout.pmcsr.is_some_and(|p| overlaps(p, 2))
        || match layout.flr {
            Some(FlrMethod::Pcie { devctl }) => overlaps(devctl, 2),
            Some(FlrMethod::Af { ctrl }) => overlaps(ctrl, 1),
            None => false,
        }
}

/// The revoke the kernel performs unconditionally for a write of `data` at
/// `offset`, if any: clearing Memory Space Enable, or starting an FLR (only
/// where the device advertises one, as vfio-pci requires).
pub(crate) fn forced_revoke(
    layout: &ConfigLayout,
    offset: u64,
    data: &[u8],
) -> Option<RevokeReason> {
    let byte = |reg: u16| -> Option<u8> {
        let i = u64::from(reg).checked_sub(offset)?;
        data.get(usize::try_from(i).ok()?).copied()
    };
    if let Some(command) = byte(PCI_COMMAND) {
        if u16::from(command) & PCI_COMMAND_MEMORY == 0 {
            return Some(RevokeReason::MemoryDecodeOff);
        }
    }
    match layout.flr {
        Some(FlrMethod::Pcie { devctl }) => {
            let high = byte(devctl + 1)?;
            ((u16::from(high) << 8) & PCI_EXP_DEVCTL_BCR_FLR != 0)
                .then_some(RevokeReason::Reset(ResetMethod::PcieFlr))
        }
        Some(FlrMethod::Af { ctrl }) => {
            (byte(ctrl)? & PCI_AF_CTRL_FLR != 0).then_some(RevokeReason::Reset(ResetMethod::AfFlr))
        }
        None => None,
    }
}

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

    /// Writes config space, recording revokes and restores it causes.
    pub(crate) fn config_write(&self, offset: u64, data: &[u8]) -> Result<()> {
        if !touches_lifecycle(&self.layout, offset, data.len()) {
            return self.config_write_raw(offset, data);
        }
        let forced = forced_revoke(&self.layout, offset, data);
        self.transition(forced, || self.config_write_raw(offset, data))
    }
}

impl Device {
    /// Reads `buf.len()` bytes of config space at `offset`.
    ///
    /// # Errors
    ///
    /// [`Error::ConfigAccess`] with the errno of `pread`, or
    /// [`Error::ConfigShort`] when fewer bytes came back.
    pub fn config_read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.config_read(offset, buf)
    }

    /// Writes `data` to config space at `offset`.
    ///
    /// Writes reaching PCI_COMMAND, PMCSR or an FLR control register are
    /// reported to [`Device::subscribe`]rs like the dedicated helpers' are.
    ///
    /// # Errors
    ///
    /// [`Error::ConfigAccess`] with the errno of `pwrite`, or
    /// [`Error::ConfigShort`] when fewer bytes were written.
    pub fn config_write(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.inner.config_write(offset, data)
    }

    /// Reads a byte.
    ///
    /// # Errors
    ///
    /// [`Error::ConfigAccess`] with the errno of `pread`, or
    /// [`Error::ConfigShort`] when fewer bytes came back.
    pub fn config_read_u8(&self, offset: u16) -> Result<u8> {
        let mut b = [0u8; 1];
        self.config_read(u64::from(offset), &mut b)?;
        Ok(b[0])
    }

    /// Reads a little-endian word.
    ///
    /// # Errors
    ///
    /// [`Error::ConfigAccess`] with the errno of `pread`, or
    /// [`Error::ConfigShort`] when fewer bytes came back.
    pub fn config_read_u16(&self, offset: u16) -> Result<u16> {
        self.inner.config_read_u16(offset)
    }

    /// Reads a little-endian dword.
    ///
    /// # Errors
    ///
    /// [`Error::ConfigAccess`] with the errno of `pread`, or
    /// [`Error::ConfigShort`] when fewer bytes came back.
    pub fn config_read_u32(&self, offset: u16) -> Result<u32> {
        let mut b = [0u8; 4];
        self.config_read(u64::from(offset), &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a byte.
    ///
    /// # Errors
    ///
    /// [`Error::ConfigAccess`] with the errno of `pwrite`, or
    /// [`Error::ConfigShort`] when fewer bytes were written.
    pub fn config_write_u8(&self, offset: u16, value: u8) -> Result<()> {
        self.config_write(u64::from(offset), &[value])
    }

    /// Writes a little-endian word.
    ///
    /// # Errors
    ///
    /// [`Error::ConfigAccess`] with the errno of `pwrite`, or
    /// [`Error::ConfigShort`] when fewer bytes were written.
    pub fn config_write_u16(&self, offset: u16, value: u16) -> Result<()> {
        self.config_write(u64::from(offset), &value.to_le_bytes())
    }

    /// Writes a little-endian dword.
    ///
    /// # Errors
    ///
    /// [`Error::ConfigAccess`] with the errno of `pwrite`, or
    /// [`Error::ConfigShort`] when fewer bytes were written.
    pub fn config_write_u32(&self, offset: u16, value: u32) -> Result<()> {
        self.config_write(u64::from(offset), &value.to_le_bytes())
    }

    /// Reads the first `len` bytes of config space (256 covers the standard
    /// capabilities; the region may be 4096 for PCIe).
    ///
    /// # Errors
    ///
    /// [`Error::ConfigAccess`] with the errno of `pread`, or
    /// [`Error::ConfigShort`] when fewer bytes came back.
    pub fn config_snapshot(&self, len: usize) -> Result<Vec<u8>> {
        let len = len.min(usize::try_from(self.inner.config_region.size).unwrap_or(usize::MAX));
        let mut buf = vec![0u8; len];
        self.config_read(0, &mut buf)?;
        Ok(buf)
    }

    /// Sets or clears Bus Master Enable (the device may issue DMA), leaving
    /// Memory Space Enable as it is: no revoke.
    ///
    /// # Errors
    ///
    /// [`Error::ConfigAccess`] or [`Error::ConfigShort`] from the read or the
    /// write of the register.
    pub fn set_bus_master(&self, on: bool) -> Result<()> {
        self.update_command(PCI_COMMAND_MASTER, on)
    }

    /// Sets (`on`) or clears the `mask` bits of PCI_COMMAND, keeping the others
    /// (read-modify-write through [`Device::config_write`], so revokes are
    /// recorded).
    pub(crate) fn update_command(&self, mask: u16, on: bool) -> Result<()> {
        let command = self.config_read_u16(PCI_COMMAND)?;
        let new = if on { command | mask } else { command & !mask };
        self.config_write_u16(PCI_COMMAND, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(flr: Option<FlrMethod>) -> ConfigLayout {
        ConfigLayout {
            caps: vec![],
            msix: None,
            pmcsr: Some(0x64),
            flr,
        }
    }

    #[test]
    fn which_writes_touch_the_lifecycle() {
        let l = layout(Some(FlrMethod::Pcie { devctl: 0x88 }));
        assert!(touches_lifecycle(&l, 4, 2));
        assert!(touches_lifecycle(&l, 0, 8));
        assert!(touches_lifecycle(&l, 5, 1));
        assert!(!touches_lifecycle(&l, 6, 2), "PCI_STATUS");
        assert!(!touches_lifecycle(&l, 0, 4), "ids");
        assert!(touches_lifecycle(&l, 0x64, 2), "PMCSR");
        assert!(touches_lifecycle(&l, 0x89, 1), "DEVCTL high byte");
        assert!(!touches_lifecycle(&l, 0x8a, 2), "DEVSTA");
        assert!(!touches_lifecycle(&layout(None), 0x88, 2));
        let af = layout(Some(FlrMethod::Af { ctrl: 0x54 }));
        assert!(touches_lifecycle(&af, 0x54, 1));
        assert!(!touches_lifecycle(&af, 0x55, 1));
    }

    #[test]
    fn clearing_memory_enable_is_a_forced_revoke() {
        let l = layout(None);
        assert_eq!(
            forced_revoke(&l, 4, &[0x04, 0x00]),
            Some(RevokeReason::MemoryDecodeOff)
        );
        assert_eq!(forced_revoke(&l, 4, &[0x06, 0x00]), None);
        // A dword write at 4 covers the command and status registers.
        assert_eq!(
            forced_revoke(&l, 4, &0x0010_0000u32.to_le_bytes()),
            Some(RevokeReason::MemoryDecodeOff)
        );
        assert_eq!(
            forced_revoke(&l, 0, &[0xf4, 0x1a, 0x10, 0x11, 0x06, 0x00]),
            None
        );
        // The high byte alone does not reach the memory bit.
        assert_eq!(forced_revoke(&l, 5, &[0x00]), None);
    }

    #[test]
    fn flr_writes_are_forced_resets() {
        let pcie = layout(Some(FlrMethod::Pcie { devctl: 0x88 }));
        assert_eq!(
            forced_revoke(&pcie, 0x88, &0x8000u16.to_le_bytes()),
            Some(RevokeReason::Reset(ResetMethod::PcieFlr))
        );
        assert_eq!(forced_revoke(&pcie, 0x88, &0x2810u16.to_le_bytes()), None);
        let af = layout(Some(FlrMethod::Af { ctrl: 0x54 }));
        assert_eq!(
            forced_revoke(&af, 0x54, &[1]),
            Some(RevokeReason::Reset(ResetMethod::AfFlr))
        );
        assert_eq!(forced_revoke(&af, 0x54, &[0]), None);
        // Without an advertised FLR the kernel ignores the bit: nothing forced.
        assert_eq!(
            forced_revoke(&layout(None), 0x88, &0x8000u16.to_le_bytes()),
            None
        );
    }
}
