//! BAR0 of an 82576: 32-bit register accesses that name the function in their errors
//! and notice a revoke, the reset handshake (CTRL.RST, datasheet 4.2.1.6.1), PHY
//! writes over MDIC (8.2.4) and the link bring-up: forced 1000/full with PHY loopback
//! (3.5.6.3, as Linux's selftest `tools/testing/selftests/vfio/lib/drivers/igb/igb.c`
//! does) or auto-negotiation on a wire, each wait bounded.

use std::thread::sleep;
use std::time::{Duration, Instant};

use peerdma_host::Bdf;
use peerdma_uapi::igb::*;

use super::error::IgbError;
use crate::backing::{Bar0, RegisterIo};
use crate::net::MacAddr;

/// The longest a reset may take (the datasheet's NVM auto-read completes in ~10 ms).
pub(crate) const RESET_TIMEOUT: Duration = Duration::from_millis(100);
/// The longest one MDIC access may take (the selftest's 1000 × 50 µs).
const MDIC_TIMEOUT: Duration = Duration::from_millis(50);

/// BAR0 of one function.
#[derive(Debug)]
pub(crate) struct Registers {
    io: Bar0,
    bdf: Bdf,
}

impl Registers {
    /// Wraps BAR0's mapping (guarded against a revoke).
    pub(crate) fn new(io: Bar0, bdf: Bdf) -> Registers {
        Registers { io, bdf }
    }

    fn check_revoked(&self, during: &'static str) -> Result<(), IgbError> {
        if self.io.revoked() {
            return Err(IgbError::Revoked {
                bdf: self.bdf,
                during,
            });
        }
        Ok(())
    }

    /// A 32-bit register read.
    pub(crate) fn read32(&self, offset: usize) -> Result<u32, IgbError> {
        let v = self.io.read32(offset).map_err(|source| IgbError::Device {
            bdf: self.bdf,
            source,
        })?;
        self.check_revoked("a register read")?;
        Ok(v)
    }

    /// A 32-bit register write.
    pub(crate) fn write32(&self, offset: usize, value: u32) -> Result<(), IgbError> {
        self.io
            .write32(offset, value)
            .map_err(|source| IgbError::Device {
                bdf: self.bdf,
                source,
            })?;
        self.check_revoked("a register write")
    }

    /// Read-modify-write: clears `clear`, then sets `set`.
    pub(crate) fn update(&self, offset: usize, clear: u32, set: u32) -> Result<(), IgbError> {
        let v = self.read32(offset)?;
        self.write32(offset, (v & !clear) | set)
    }

    /// Device reset (CTRL.RST): waits ≥ 1 ms, then until EECD.AUTO_RD is set (real
    /// hardware: the NVM was read again) or, since QEMU never sets AUTO_RD, CTRL.RST
    /// reads clear and 20 ms passed; at most [`RESET_TIMEOUT`]. Then masks every
    /// interrupt cause (IMC, EIMC): the driver polls.
    pub(crate) fn reset(&self) -> Result<(), IgbError> {
        let ctrl = self.read32(IGB_CTRL)?;
        self.write32(IGB_CTRL, ctrl | IGB_CTRL_RST)?;
        sleep(Duration::from_millis(1));
        let start = Instant::now();
        loop {
            let eecd = self.read32(IGB_EECD)?;
            let ctrl = self.read32(IGB_CTRL)?;
            let waited = start.elapsed();
            if eecd & IGB_EECD_AUTO_RD != 0
                || (ctrl & IGB_CTRL_RST == 0 && waited >= Duration::from_millis(20))
            {
                break;
            }
            if waited >= RESET_TIMEOUT {
                return Err(IgbError::ResetTimeout {
                    bdf: self.bdf,
                    waited,
                    ctrl,
                });
            }
            sleep(Duration::from_millis(1));
        }
        self.write32(IGB_IMC, u32::MAX)?;
        self.write32(IGB_EIMC, u32::MAX)
    }

    /// Writes PHY register `reg` of the internal PHY (address 1) through MDIC, waiting
    /// at most 50 ms for MDIC.R.
    pub(crate) fn phy_write(&self, reg: u32, data: u16) -> Result<(), IgbError> {
        let cmd = u32::from(data)
            | (reg << IGB_MDIC_REG_SHIFT)
            | (1 << IGB_MDIC_PHY_SHIFT)
            | IGB_MDIC_OP_WRITE;
        self.write32(IGB_MDIC, cmd)?;
        let start = Instant::now();
        loop {
            let mdic = self.read32(IGB_MDIC)?;
            if mdic & IGB_MDIC_READY != 0 {
                if mdic & IGB_MDIC_ERROR != 0 {
                    return Err(IgbError::Mdic {
                        bdf: self.bdf,
                        reg,
                        what: "reported an error (MDIC.E)",
                        mdic,
                    });
                }
                return Ok(());
            }
            if start.elapsed() >= MDIC_TIMEOUT {
                return Err(IgbError::Mdic {
                    bdf: self.bdf,
                    reg,
                    what: "did not finish within 50 ms",
                    mdic,
                });
            }
            sleep(Duration::from_micros(50));
        }
    }

    /// Loopback: PHY loopback at 1000 Mb/s full duplex (BMCR), the MAC forced to the
    /// same with the link set up (CTRL.FRCSPD/FRCDPX/SLU). An auto-negotiation restart
    /// first: QEMU raises STATUS.LU only from its auto-negotiation timer, and without
    /// LU it drops every received frame; on an 82576 the next BMCR write cancels it.
    /// RCTL.LBM_MAC (set with RCTL) is what makes QEMU loop frames back.
    pub(crate) fn link_loopback(&self) -> Result<(), IgbError> {
        let _ = self.phy_write(IGB_PHY_BMCR, IGB_BMCR_ANENABLE | IGB_BMCR_ANRESTART);
        self.phy_write(
            IGB_PHY_BMCR,
            IGB_BMCR_LOOPBACK | IGB_BMCR_SPEED1000 | IGB_BMCR_FULLDPLX,
        )?;
        // The settling time Linux's ethtool selftest and the VFIO selftest use.
        sleep(Duration::from_millis(50));
        self.update(
            IGB_CTRL,
            IGB_CTRL_SPD_SEL,
            IGB_CTRL_FRCSPD | IGB_CTRL_FRCDPX | IGB_CTRL_SPD_1000 | IGB_CTRL_FD | IGB_CTRL_SLU,
        )
    }

    /// A wire: link up (CTRL.SLU), speed and duplex from auto-negotiation (BMCR.ANENABLE
    /// with a restart).
    pub(crate) fn link_wire(&self) -> Result<(), IgbError> {
        self.update(IGB_CTRL, IGB_CTRL_FRCSPD | IGB_CTRL_FRCDPX, IGB_CTRL_SLU)?;
        self.phy_write(IGB_PHY_BMCR, IGB_BMCR_ANENABLE | IGB_BMCR_ANRESTART)
    }

    /// Waits at most `timeout` for STATUS.LU.
    pub(crate) fn wait_link(&self, timeout: Duration, loopback: bool) -> Result<(), IgbError> {
        let start = Instant::now();
        loop {
            let status = self.read32(IGB_STATUS)?;
            if status & IGB_STATUS_LU != 0 {
                return Ok(());
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(IgbError::LinkDown {
                    bdf: self.bdf,
                    waited,
                    status,
                    loopback,
                });
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// The MAC address in receive address entry 0 (RAL0/RAH0; loaded from the NVM, or
    /// QEMU's `mac=` property, at reset).
    pub(crate) fn mac(&self) -> Result<MacAddr, IgbError> {
        let lo = self.read32(igb_ral(0))?.to_le_bytes();
        let hi = self.read32(igb_rah(0))?.to_le_bytes();
        Ok(MacAddr([lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]]))
    }
}
