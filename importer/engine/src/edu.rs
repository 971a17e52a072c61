//! A user-space driver for QEMU's `edu` device, a small DMA engine, over the
//! VFIO mmap of its BAR0.
//!
//! BAR0 registers used here (QEMU `hw/misc/edu.c`, docs/specs/edu.rst):
//!
//! | offset | register                                                        |
//! |--------|-----------------------------------------------------------------|
//! | 0x00   | identification, `0xMMmm00ed` (major, minor)                      |
//! | 0x04   | liveness check: reads back the bitwise inverse of what was written |
//! | 0x80   | DMA source address                                              |
//! | 0x88   | DMA destination address                                         |
//! | 0x90   | DMA byte count                                                  |
//! | 0x98   | DMA command: bit 0 start/running, bit 1 direction, bit 2 IRQ     |
//!
//! The engine copies between a bus address and its 4 KiB internal buffer,
//! which sits at device address 0x40000: direction bit clear = bus → buffer,
//! set = buffer → bus. A transfer completes about 100 ms (virtual time) after
//! it starts; bit 0 clears then. Bus addresses are truncated to the 28-bit DMA
//! mask and faults are silent, so this driver refuses spans past the mask and
//! bounds every wait. A buffer span outside 0x40000..0x41000 makes QEMU abort
//! the whole VM (`hw_error`), so those are refused before touching the device.

use std::time::{Duration, Instant};

use peerdma_exporter::{Device, MappedRegion};
use peerdma_host::Bdf;
use peerdma_uapi::pci::{PCI_DEVICE_ID, PCI_VENDOR_ID};

use crate::{check_span, DmaEngine, EngineError, Result, TransferReport};

/// PCI vendor id of QEMU's edu.
pub const EDU_VENDOR: u16 = 0x1234;
/// PCI device id of QEMU's edu.
pub const EDU_DEVICE: u16 = 0x11e8;
/// Low byte of the identification register.
pub const EDU_ID_MAGIC: u32 = 0xed;
/// Size of the internal DMA buffer.
pub const EDU_BUFFER_SIZE: u64 = 4096;
/// Device address of the internal DMA buffer.
pub const EDU_BUFFER_ADDR: u64 = 0x40000;
/// Default DMA mask: 28 bits.
pub const EDU_DMA_MASK: u64 = (1 << 28) - 1;

/// BAR0 register offsets.
mod reg {
    pub const ID: usize = 0x00;
    pub const LIVENESS: usize = 0x04;
    pub const DMA_SRC: usize = 0x80;
    pub const DMA_DST: usize = 0x88;
    pub const DMA_COUNT: usize = 0x90;
    pub const DMA_CMD: usize = 0x98;
}

/// DMA command register bits.
mod cmd {
    /// Start (write) / running (read).
    pub const RUN: u64 = 1 << 0;
    /// Set: buffer → bus address; clear: bus address → buffer.
    pub const TO_BUS: u64 = 1 << 1;
}

/// Which way an edu transfer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Bus address (IOVA) → internal buffer.
    ToBuffer,
    /// Internal buffer → bus address (IOVA).
    FromBuffer,
}

/// The edu identification register, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EduVersion {
    /// Major version.
    pub major: u8,
    /// Minor version.
    pub minor: u8,
}

/// Decodes the identification register, or `None` if it is not edu's.
pub fn decode_id(id: u32) -> Option<EduVersion> {
    (id & 0xffff == EDU_ID_MAGIC).then_some(EduVersion {
        major: (id >> 24) as u8,
        minor: (id >> 16) as u8,
    })
}

/// An edu device driven through its BAR0 mapping. The mapping keeps the VFIO
/// device file open.
#[derive(Debug)]
pub struct Edu {
    regs: MappedRegion,
    bdf: Bdf,
    version: EduVersion,
    timeout: Duration,
    poll: Duration,
}

impl Edu {
    /// Takes over the edu device `device`: checks its PCI ids and identity
    /// register (refusing anything else with [`EngineError::NotEdu`]), maps
    /// BAR0, checks the liveness register, and enables Bus Master so that it
    /// can DMA. The device must be attached to an IOAS for its DMA to reach
    /// anything.
    ///
    /// # Errors
    ///
    /// [`EngineError::NotEdu`] for another device or a dead identity or
    /// liveness register, [`EngineError::Device`] when config space, BAR0 or
    /// the command register cannot be used.
    pub fn open(device: &Device) -> Result<Self> {
        let bdf = device.bdf();
        let engine = format!("edu {bdf}");
        let dev_err = |source| EngineError::Device {
            engine: engine.clone(),
            source,
        };
        let vendor = device.config_read_u16(PCI_VENDOR_ID).map_err(dev_err)?;
        let device_id = device.config_read_u16(PCI_DEVICE_ID).map_err(dev_err)?;
        let not_edu = |identity| EngineError::NotEdu {
            bdf,
            vendor,
            device: device_id,
            identity,
        };
        if (vendor, device_id) != (EDU_VENDOR, EDU_DEVICE) {
            return Err(not_edu(None));
        }
        let regs = device.map_region(0).map_err(dev_err)?;
        let id = regs.read::<u32>(reg::ID).map_err(dev_err)?;
        let version = decode_id(id).ok_or_else(|| not_edu(Some(id)))?;
        let probe = 0x5a5a_1234u32;
        regs.write::<u32>(reg::LIVENESS, probe).map_err(dev_err)?;
        if regs.read::<u32>(reg::LIVENESS).map_err(dev_err)? != !probe {
            return Err(not_edu(Some(id)));
        }
        device.set_bus_master(true).map_err(dev_err)?;
        Ok(Edu {
            regs,
            bdf,
            version,
            timeout: Duration::from_secs(5),
            poll: Duration::from_millis(1),
        })
    }

    /// The device.
    pub fn bdf(&self) -> Bdf {
        self.bdf
    }

    /// What the identification register says.
    pub fn version(&self) -> EduVersion {
        self.version
    }

    /// How long to wait for a transfer (default 5 s; a transfer takes about
    /// 100 ms of virtual time, more under a slow TCG guest).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Whether a transfer is running (command bit 0).
    ///
    /// # Errors
    ///
    /// [`EngineError::Device`] when the register cannot be read.
    pub fn busy(&self) -> Result<bool> {
        Ok(self.cmd()? & cmd::RUN != 0)
    }

    fn cmd(&self) -> Result<u64> {
        self.regs
            .read::<u64>(reg::DMA_CMD)
            .map_err(|source| EngineError::Device {
                engine: self.name(),
                source,
            })
    }

    fn write(&self, offset: usize, value: u64) -> Result<()> {
        self.regs
            .write::<u64>(offset, value)
            .map_err(|source| EngineError::Device {
                engine: self.name(),
                source,
            })
    }

    /// Waits until no transfer runs.
    fn wait_idle(&self, what: &'static str) -> Result<()> {
        let start = Instant::now();
        loop {
            let c = self.cmd()?;
            if c & cmd::RUN == 0 {
                return Ok(());
            }
            if start.elapsed() >= self.timeout {
                return Err(EngineError::Timeout {
                    engine: self.name(),
                    what,
                    after: self.timeout,
                    cmd: c,
                });
            }
            std::thread::sleep(self.poll);
        }
    }

    /// One device transfer of `len` bytes between bus address `bus` and the
    /// internal buffer at `offset`, waited for.
    ///
    /// # Errors
    ///
    /// [`EngineError::ZeroLength`], [`EngineError::AddressOverMask`],
    /// [`EngineError::TooLong`] and [`EngineError::BufferBounds`] before the
    /// device is touched; [`EngineError::Timeout`] when it does not finish;
    /// [`EngineError::Device`] when a register access fails.
    pub fn transfer(
        &mut self,
        direction: Direction,
        bus: u64,
        offset: u64,
        len: u64,
    ) -> Result<TransferReport> {
        let engine = self.name();
        check_span(&engine, bus, len, EDU_DMA_MASK)?;
        if len > EDU_BUFFER_SIZE {
            return Err(EngineError::TooLong {
                engine,
                len,
                max: EDU_BUFFER_SIZE,
            });
        }
        if offset
            .checked_add(len)
            .is_none_or(|end| end > EDU_BUFFER_SIZE)
        {
            return Err(EngineError::BufferBounds {
                engine,
                offset,
                len,
                size: EDU_BUFFER_SIZE,
            });
        }
        self.wait_idle("the previous transfer")?;
        let buffer = EDU_BUFFER_ADDR + offset;
        let (src, dst, command) = match direction {
            Direction::ToBuffer => (bus, buffer, cmd::RUN),
            Direction::FromBuffer => (buffer, bus, cmd::RUN | cmd::TO_BUS),
        };
        let start = Instant::now();
        self.write(reg::DMA_SRC, src)?;
        self.write(reg::DMA_DST, dst)?;
        self.write(reg::DMA_COUNT, len)?;
        self.write(reg::DMA_CMD, command)?;
        self.wait_idle(match direction {
            Direction::ToBuffer => "a DMA into the edu buffer",
            Direction::FromBuffer => "a DMA out of the edu buffer",
        })?;
        Ok(TransferReport {
            bytes: len,
            transfers: 1,
            elapsed: start.elapsed(),
            iommu_faults: None,
        })
    }
}

impl Edu {
    /// Size of the internal buffer ([`EDU_BUFFER_SIZE`]).
    pub fn buffer_size(&self) -> u64 {
        EDU_BUFFER_SIZE
    }

    /// Load: DMA `len` bytes from IOVA `src` into the internal buffer at `offset`.
    ///
    /// # Errors
    ///
    /// As [`transfer`](Self::transfer).
    pub fn load(&mut self, src: u64, offset: u64, len: u64) -> Result<TransferReport> {
        self.transfer(Direction::ToBuffer, src, offset, len)
    }

    /// Store: DMA `len` bytes from the internal buffer at `offset` to IOVA `dst`.
    ///
    /// # Errors
    ///
    /// As [`transfer`](Self::transfer).
    pub fn store(&mut self, offset: u64, dst: u64, len: u64) -> Result<TransferReport> {
        self.transfer(Direction::FromBuffer, dst, offset, len)
    }
}

impl DmaEngine for Edu {
    fn name(&self) -> String {
        format!("edu {}", self.bdf)
    }

    fn dma_mask(&self) -> u64 {
        EDU_DMA_MASK
    }

    fn max_transfer(&self) -> u64 {
        EDU_BUFFER_SIZE
    }

    /// Through the internal buffer, one [`load`](Edu::load) and one
    /// [`store`](Edu::store) per 4 KiB chunk.
    fn copy(&mut self, src: u64, dst: u64, len: u64) -> Result<TransferReport> {
        check_span(&self.name(), src, len, self.dma_mask())?;
        check_span(&self.name(), dst, len, self.dma_mask())?;
        let chunk = self.buffer_size().min(self.max_transfer());
        let mut report = TransferReport::default();
        let mut done = 0;
        while done < len {
            let n = chunk.min(len - done);
            report.add(self.load(src + done, 0, n)?);
            report.add(self.store(0, dst + done, n)?);
            done += n;
        }
        // A load and a store move each byte once from source to destination.
        report.bytes = done;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_register() {
        assert_eq!(
            decode_id(0x010000ed),
            Some(EduVersion { major: 1, minor: 0 })
        );
        assert_eq!(decode_id(0xffffffff), None);
        assert_eq!(decode_id(0), None);
    }

    #[test]
    fn spans_are_checked_against_the_mask() {
        assert!(check_span("edu", 0x0fff_f000, 0x1000, EDU_DMA_MASK).is_ok());
        assert!(matches!(
            check_span("edu", 0x0fff_f001, 0x1000, EDU_DMA_MASK),
            Err(EngineError::AddressOverMask { .. })
        ));
        assert!(matches!(
            check_span("edu", u64::MAX, 2, EDU_DMA_MASK),
            Err(EngineError::AddressOverMask { .. })
        ));
        assert!(matches!(
            check_span("edu", 0, 0, EDU_DMA_MASK),
            Err(EngineError::ZeroLength { .. })
        ));
    }
}
