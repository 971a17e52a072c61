//! The controller's registers in BAR0 (Base spec "Controller Properties"): CAP decoded,
//! CC/CSTS, the admin queue registers, doorbells, and the enable/disable handshake with
//! waits bounded by CAP.TO (Base spec "Controller Initialization", "Controller Reset").

use std::time::{Duration, Instant};

use peerdma_host::Bdf;
use peerdma_uapi::nvme::*;

use super::backing::RegisterIo;
use super::error::NvmeError;

/// CAP, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Maximum entries per queue (MQES + 1).
    pub max_queue_entries: u32,
    /// Worst-case time from CC.EN change to CSTS.RDY following it (CAP.TO × 500 ms).
    pub timeout: Duration,
    /// Doorbell stride in bytes (`4 << DSTRD`).
    pub doorbell_stride: usize,
    /// Whether the NVM command set is supported (CSS bit 0).
    pub nvm_command_set: bool,
    /// Smallest memory page size, bytes.
    pub page_min: u64,
    /// Largest memory page size, bytes.
    pub page_max: u64,
}

impl Capabilities {
    /// Decodes a CAP value.
    pub fn decode(cap: u64) -> Capabilities {
        let field = |shift: u32, bits: u32| (cap >> shift) & ((1 << bits) - 1);
        // A TO of 0 would make every wait instant; the spec's unit is the floor.
        let to = field(NVME_CAP_TO_SHIFT, 8).max(1);
        Capabilities {
            max_queue_entries: (cap & NVME_CAP_MQES_MASK) as u32 + 1,
            timeout: Duration::from_millis(500 * to),
            doorbell_stride: 4 << field(NVME_CAP_DSTRD_SHIFT, 4),
            nvm_command_set: field(NVME_CAP_CSS_SHIFT, 8) & 1 != 0,
            page_min: 1 << (12 + field(NVME_CAP_MPSMIN_SHIFT, 4)),
            page_max: 1 << (12 + field(NVME_CAP_MPSMAX_SHIFT, 4)),
        }
    }
}

/// BAR0 of a controller: register accesses with errors that name it.
#[derive(Debug)]
pub struct Registers<R: RegisterIo> {
    io: R,
    bdf: Bdf,
    cap: Capabilities,
}

impl<R: RegisterIo> Registers<R> {
    /// Wraps BAR0's register I/O (for VFIO a [`Bar0`](super::backing::Bar0), guarded
    /// against a revoke: an access after one is [`NvmeError::Revoked`]) and reads CAP.
    ///
    /// # Errors
    ///
    /// [`NvmeError::Device`], [`NvmeError::Revoked`] when CAP cannot be read.
    pub fn new(io: R, bdf: Bdf) -> Result<Registers<R>, NvmeError> {
        let mut r = Registers {
            io,
            bdf,
            cap: Capabilities::decode(0),
        };
        let lo = u64::from(r.read32(NVME_REG_CAP)?);
        let hi = u64::from(r.read32(NVME_REG_CAP + 4)?);
        r.cap = Capabilities::decode(lo | (hi << 32));
        Ok(r)
    }

    /// The decoded capabilities.
    pub fn cap(&self) -> Capabilities {
        self.cap
    }

    fn err(&self, source: peerdma_exporter::Error) -> NvmeError {
        NvmeError::Device {
            bdf: self.bdf,
            source,
        }
    }

    /// [`NvmeError::Revoked`] once an access met a revoked BAR.
    fn check_revoked(&self, during: &'static str) -> Result<(), NvmeError> {
        if self.io.revoked() {
            return Err(NvmeError::Revoked {
                bdf: self.bdf,
                during,
            });
        }
        Ok(())
    }

    /// A 32-bit register read.
    pub fn read32(&self, offset: usize) -> Result<u32, NvmeError> {
        let v = self.io.read32(offset).map_err(|e| self.err(e))?;
        self.check_revoked("a register read")?;
        Ok(v)
    }

    /// A 32-bit register write.
    pub fn write32(&self, offset: usize, value: u32) -> Result<(), NvmeError> {
        self.io.write32(offset, value).map_err(|e| self.err(e))?;
        self.check_revoked("a register write (a doorbell or CC)")
    }

    /// A 64-bit register written as two dwords, low first (every controller takes this).
    pub fn write64(&self, offset: usize, value: u64) -> Result<(), NvmeError> {
        self.write32(offset, value as u32)?;
        self.write32(offset + 4, (value >> 32) as u32)
    }

    /// Writes queue `qid`'s submission queue tail doorbell.
    pub fn ring_sq(&self, qid: u16, tail: u32) -> Result<(), NvmeError> {
        self.write32(self.doorbell(qid, false), tail)
    }

    /// Writes queue `qid`'s completion queue head doorbell.
    pub fn ring_cq(&self, qid: u16, head: u32) -> Result<(), NvmeError> {
        self.write32(self.doorbell(qid, true), head)
    }

    fn doorbell(&self, qid: u16, cq: bool) -> usize {
        NVME_REG_DBS + (2 * usize::from(qid) + usize::from(cq)) * self.cap.doorbell_stride
    }

    /// CSTS.
    pub fn csts(&self) -> Result<u32, NvmeError> {
        self.read32(NVME_REG_CSTS)
    }

    /// For an enabled controller that commands wait on: fails with
    /// [`NvmeError::Fatal`] when CSTS.CFS is set, and with [`NvmeError::Stopped`] when
    /// CSTS.RDY went clear (the controller was reset under the driver and its queues
    /// are gone: no command in flight will complete).
    pub fn check_running(&self, during: &'static str) -> Result<(), NvmeError> {
        let csts = self.csts()?;
        if csts == u32::MAX {
            return Ok(()); // all ones: the read did not reach the controller; the caller's timeout decides
        }
        if csts & NVME_CSTS_CFS != 0 {
            return Err(NvmeError::Fatal {
                bdf: self.bdf,
                during,
                csts,
            });
        }
        if csts & NVME_CSTS_RDY == 0 {
            return Err(NvmeError::Stopped {
                bdf: self.bdf,
                during,
                csts,
            });
        }
        Ok(())
    }

    /// Clears CC.EN and waits (at most CAP.TO) for CSTS.RDY to clear: the controller is
    /// reset, its queues gone (Base spec "Controller Reset").
    pub fn disable(&self) -> Result<(), NvmeError> {
        let cc = self.read32(NVME_REG_CC)?;
        if cc & NVME_CC_EN != 0 {
            self.write32(NVME_REG_CC, cc & !NVME_CC_EN)?;
        }
        self.wait_ready(false, "disabling the controller (CC.EN = 0)")
    }

    /// Programs the admin queues and CC, sets CC.EN and waits (at most CAP.TO) for
    /// CSTS.RDY (Base spec "Memory-based Transport Controller Initialization").
    pub fn enable(
        &self,
        asq: u64,
        acq: u64,
        sq_entries: u32,
        cq_entries: u32,
    ) -> Result<(), NvmeError> {
        self.write32(NVME_REG_AQA, ((cq_entries - 1) << 16) | (sq_entries - 1))?;
        self.write64(NVME_REG_ASQ, asq)?;
        self.write64(NVME_REG_ACQ, acq)?;
        // Mask every interrupt: completions are polled.
        self.write32(NVME_REG_INTMS, u32::MAX)?;
        let cc = NVME_CC_EN
            | (NVME_SQES_LOG2 << NVME_CC_IOSQES_SHIFT)
            | (NVME_CQES_LOG2 << NVME_CC_IOCQES_SHIFT);
        self.write32(NVME_REG_CC, cc)?;
        self.wait_ready(true, "enabling the controller (CC.EN = 1)")
    }

    fn wait_ready(&self, ready: bool, during: &'static str) -> Result<(), NvmeError> {
        let start = Instant::now();
        loop {
            let csts = self.csts()?;
            if ready && csts & NVME_CSTS_CFS != 0 && csts != u32::MAX {
                return Err(NvmeError::Fatal {
                    bdf: self.bdf,
                    during,
                    csts,
                });
            }
            if (csts & NVME_CSTS_RDY != 0) == ready && csts != u32::MAX {
                return Ok(());
            }
            if start.elapsed() >= self.cap.timeout {
                return Err(NvmeError::ReadyTimeout {
                    bdf: self.bdf,
                    during,
                    want: u8::from(ready),
                    after: self.cap.timeout,
                    csts,
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_decodes_as_qemu_reports_it() {
        // QEMU's nvme: MQES 0x7ff, CQR 1, TO 0xf, DSTRD 0, CSS NVM (+ admin only bit 7),
        // MPSMIN 0, MPSMAX 4.
        let cap: u64 = 0x7ff | (1 << 16) | (0xf << 24) | (0xc1u64 << 37) | (4u64 << 52);
        let c = Capabilities::decode(cap);
        assert_eq!(c.max_queue_entries, 0x800);
        assert_eq!(c.timeout, Duration::from_millis(7500));
        assert_eq!(c.doorbell_stride, 4);
        assert!(c.nvm_command_set);
        assert_eq!((c.page_min, c.page_max), (4096, 65536));
        // TO 0 still waits one unit.
        assert_eq!(Capabilities::decode(0).timeout, Duration::from_millis(500));
        assert_eq!(Capabilities::decode(2u64 << 32).doorbell_stride, 16);
    }
}
