//! A user-space driver of the Intel 82576 Gigabit Ethernet controller (`igb`; QEMU
//! `-device igb`, 8086:10c9) over VFIO (cdev + iommufd), polling, one TX and one RX
//! queue: the NIC engine.
//!
//! Its descriptor rings and host buffers are user memory mapped with `IOMMU_IOAS_MAP`
//! into the function's IOAS, beside whatever else the caller maps there (a peer BAR's
//! dma-buf): a transmitted frame's payload descriptor may point into the peer BAR
//! ([`TxPayload::Iova`]), and with RX header split (SRRCTL.DESCTYPE = 010b) a received
//! UDP datagram's 42 header bytes land in the driver's header buffer while its payload
//! goes straight to an IOVA the caller posted ([`RxTarget::Iova`]): NIC ↔ BAR with no CPU
//! mapping touching the payload.
//!
//! - [`regs`](self): reset (CTRL.RST), PHY writes over MDIC, link up (loopback or wire);
//! - [`ring`](self): TX/RX rings and host buffers, descriptor formats;
//! - [`loopback`](self): the [`DmaEngine`](crate::DmaEngine) in MAC loopback: a copy
//!   is UDP datagrams sent to itself;
//! - [`IgbError`]: every failure named, with a stable `kind()`.
//!
//! Sources: Intel 82576EB datasheet (sections cited where used); Linux's VFIO selftest
//! driver `tools/testing/selftests/vfio/lib/drivers/igb/igb.c`; QEMU `hw/net/igb_core.c`
//! for what the emulation does (it needs STATUS.LU to receive and RCTL.LBM_MAC to loop
//! back, pads frames under 60 bytes and writes the padding as payload, writes 4 FCS
//! bytes unless RCTL.SECRC, and reports none of its DMA failures: an RX write the
//! IOMMU refuses is lost with the descriptor still written back; a TX buffer the IOMMU
//! refuses is sent with whatever QEMU's bounce buffer read (or the frame dropped when
//! that buffer is busy); a TX buffer crossing an IOMMU page drops the whole frame (the
//! driver cuts TX buffers at 4 KiB pages). The kernel's fault log, which
//! [`AttachedEngine`](crate::AttachedEngine) reads, is what tells).
//!
//! Every wait is bounded. Dropping an [`Igb`] turns RX and TX off and resets the
//! function before its rings are unmapped, so no DMA continues into freed memory.

mod error;
mod loopback;
mod regs;
mod ring;

use std::thread::sleep;
use std::time::{Duration, Instant};

use peerdma_exporter::Device;
use peerdma_host::Bdf;
use peerdma_importer::iommufd::Ioas;
use peerdma_uapi::igb::*;
use peerdma_uapi::pci::{PCI_CLASS_REVISION, PCI_DEVICE_ID, PCI_VENDOR_ID};

use crate::backing::Bar0;
use crate::net::{MacAddr, ETH_HEADER, IP_UDP_OVERHEAD};
pub use error::{IgbError, Ring};
pub use loopback::{copy_plan, CopyPlan, LOOPBACK_IP, LOOPBACK_PORT};
use regs::Registers;
use ring::{RxRing, TxRing, HDR_SLOT};
pub use ring::{RxTarget, TxPayload};

/// Intel's PCI vendor id.
pub const IGB_VENDOR: u16 = 0x8086;
/// The 82576's device id (copper; QEMU's `igb`).
pub const IGB_DEVICE: u16 = 0x10c9;
/// The smallest MTU (IPv4's minimum datagram, RFC 791).
pub const MIN_MTU: u16 = 68;
/// The largest MTU the driver takes: jumbo frames of 9018 bytes (RCTL.LPE with RLPML;
/// the 82576 receives up to 9.5 KB).
pub const MAX_MTU: u16 = 9000;

/// How the link is brought up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LinkMode {
    /// Frames loop back inside the function (PHY loopback + RCTL.LBM_MAC, forced
    /// 1000/full): what the [`DmaEngine`](crate::DmaEngine) copy uses.
    #[default]
    Loopback,
    /// A normal link to a peer (auto-negotiation; STATUS.LU waited for).
    Wire,
}

/// How the driver runs the function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IgbOptions {
    /// Loopback or a wire.
    pub link: LinkMode,
    /// IP MTU in bytes: [`MIN_MTU`] to [`MAX_MTU`] (over 1500 enables jumbo frames:
    /// RCTL.LPE, RLPML = MTU + 18).
    pub mtu: u16,
    /// How long [`Igb::start`] waits for STATUS.LU.
    pub link_timeout: Duration,
    /// Descriptors per ring: a multiple of 8 (RDLEN/TDLEN are multiples of 128 bytes),
    /// 8 to 32768.
    pub ring_entries: u16,
    /// How long a wait for a descriptor (a free TX slot, a received frame in a copy)
    /// may see no progress.
    pub completion_timeout: Duration,
}

impl Default for IgbOptions {
    /// Loopback, MTU 1500, 5 s for the link, 1024 descriptors per ring, 2 s without
    /// progress.
    fn default() -> Self {
        IgbOptions {
            link: LinkMode::Loopback,
            mtu: 1500,
            link_timeout: Duration::from_secs(5),
            ring_entries: 1024,
            completion_timeout: Duration::from_secs(2),
        }
    }
}

/// A received frame ([`Igb::poll_rx`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RxFrame {
    /// The ring slot it landed in.
    pub slot: u16,
    /// The header bytes the device split off (copied out of the slot's header buffer);
    /// empty when it did not split (not IPv4/UDP or TCP, e.g. ARP: the whole frame is
    /// the payload).
    pub headers: Vec<u8>,
    /// Bytes written to the packet buffer (the UDP payload of a split datagram,
    /// including padding to a 60-byte frame).
    pub payload_len: usize,
    /// Where the packet buffer was.
    pub target: RxTarget,
    /// The payload bytes, for a [`RxTarget::Host`] slot.
    pub payload: Option<Vec<u8>>,
}

/// The rings and buffers of a started function.
#[derive(Debug)]
struct Started {
    tx: TxRing,
    rx: RxRing,
}

/// An 82576 taken over through VFIO.
///
/// [`open`](Self::open) checks and resets it; [`start`](Self::start) maps its rings into
/// the IOAS the device is attached to and brings the link up.
#[derive(Debug)]
pub struct Igb {
    regs: Registers,
    bdf: Bdf,
    opts: IgbOptions,
    mac: MacAddr,
    started: Option<Started>,
    /// RCTL as last written (filters change it).
    rctl: u32,
}

/// Packet buffer bytes for an MTU: the whole frame (an unsplit one lands there in
/// full) plus a VLAN tag, in whole KiB (SRRCTL.BSIZEPACKET's unit).
fn packet_buffer(mtu: u16) -> usize {
    (usize::from(mtu) + ETH_HEADER + 4).div_ceil(1024) * 1024
}

impl Igb {
    /// Takes over `device`: checks it is an 82576 (8086:10c9), maps BAR0 (BAR3 is the
    /// MSI-X table; neither is a copy endpoint), resets it (CTRL.RST, bounded), masks
    /// its interrupts (IMC/EIMC), tells it a driver is loaded (CTRL_EXT.DRV_LOAD, copper
    /// link mode), turns off resending on completion timeout (GCR: a DMA the IOMMU
    /// refused is not retried), reads its MAC (RAL0/RAH0) and enables Bus Master.
    ///
    /// # Errors
    ///
    /// [`IgbError::NotIgb`], [`IgbError::Mtu`], [`IgbError::RingEntries`],
    /// [`IgbError::Device`] (config space, BAR0), [`IgbError::ResetTimeout`],
    /// [`IgbError::Revoked`].
    pub fn open(device: &Device, opts: IgbOptions) -> Result<Igb, IgbError> {
        let bdf = device.bdf();
        let dev_err = |source| IgbError::Device { bdf, source };
        let vendor = device.config_read_u16(PCI_VENDOR_ID).map_err(dev_err)?;
        let device_id = device.config_read_u16(PCI_DEVICE_ID).map_err(dev_err)?;
        if (vendor, device_id) != (IGB_VENDOR, IGB_DEVICE) {
            let class = device
                .config_read_u32(PCI_CLASS_REVISION)
                .map_err(dev_err)?
                >> 8;
            let what = match crate::EngineId::of_function(vendor, device_id, class) {
                Some(id) => format!("{}, class {class:06x}", id.name),
                None => format!("class {class:06x}"),
            };
            return Err(IgbError::NotIgb {
                bdf,
                vendor,
                device: device_id,
                what,
            });
        }
        check_options(bdf, &opts)?;
        let map = device.map_region(0).map_err(dev_err)?;
        let regs = Registers::new(Bar0::new(map), bdf);
        regs.write32(IGB_RCTL, 0)?;
        regs.write32(IGB_TCTL, 0)?;
        regs.reset()?;
        regs.update(
            IGB_CTRL_EXT,
            IGB_CTRL_EXT_LINK_MODE_MASK,
            IGB_CTRL_EXT_DRV_LOAD,
        )?;
        regs.update(IGB_GCR, IGB_GCR_CMPL_TMOUT_RESEND, 0)?;
        let mac = regs.mac()?;
        device.set_bus_master(true).map_err(dev_err)?;
        Ok(Igb {
            regs,
            bdf,
            opts,
            mac,
            started: None,
            rctl: 0,
        })
    }

    /// The function.
    pub fn bdf(&self) -> Bdf {
        self.bdf
    }

    /// The options it runs with.
    pub fn options(&self) -> IgbOptions {
        self.opts
    }

    /// Its MAC address (receive address entry 0).
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// The largest UDP payload of one frame: MTU − 28 (IPv4 and UDP headers).
    pub fn max_udp_payload(&self) -> usize {
        usize::from(self.opts.mtu) - IP_UDP_OVERHEAD
    }

    /// The longest frame it sends or receives: MTU + 14 (no FCS, no VLAN tag).
    pub fn max_frame(&self) -> usize {
        usize::from(self.opts.mtu) + ETH_HEADER
    }

    /// Whether STATUS.LU reads 1 (false when the register cannot be read).
    pub fn link_up(&self) -> bool {
        self.regs
            .read32(IGB_STATUS)
            .is_ok_and(|s| s & IGB_STATUS_LU != 0)
    }

    /// Maps the TX and RX rings and the host buffers (per slot: a 128-byte header
    /// buffer, a payload buffer of the MTU's packet buffer size) in `ioas` (which the
    /// device is attached to), programs the rings (TDBAL/TDLEN/TDH/TDT, RDBAL/..., RX
    /// header split: SRRCTL.DESCTYPE 010b, BSIZEHEADER 128, BSIZEPACKET), brings the
    /// link up, enables RX (RCTL: broadcast accepted, CRC stripped, MAC loopback in
    /// [`LinkMode::Loopback`], long packets past MTU 1500) and TX (TCTL, short packets
    /// padded), and waits for both queues to enable and for STATUS.LU.
    ///
    /// # Errors
    ///
    /// [`IgbError::Iommufd`] when the memory cannot be mapped, [`IgbError::Mdic`],
    /// [`IgbError::QueueEnable`], [`IgbError::LinkDown`] (after
    /// [`IgbOptions::link_timeout`]), [`IgbError::Device`], [`IgbError::Revoked`].
    pub fn start(&mut self, ioas: &Ioas) -> Result<(), IgbError> {
        let bdf = self.bdf;
        let ioerr = |source| IgbError::Iommufd { bdf, source };
        let entries = self.opts.ring_entries;
        let buf = packet_buffer(self.opts.mtu);
        // Re-starting: stop the old rings before they are unmapped.
        if self.started.is_some() {
            self.stop();
            self.started = None;
        }
        let tx = TxRing::new(ioas, entries, buf).map_err(ioerr)?;
        let rx = RxRing::new(ioas, entries, buf).map_err(ioerr)?;
        self.started = Some(Started { tx, rx });
        if let Err(e) = self.program() {
            self.stop();
            return Err(e);
        }
        Ok(())
    }

    /// Resets the function and brings it up again with its rings emptied (every frame
    /// queued or posted is forgotten): what a failed copy does before it returns, and
    /// what a caller does to reuse the function after an error.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start), and [`IgbError::NotStarted`].
    pub fn recover(&mut self) -> Result<(), IgbError> {
        self.started("a recovery")?;
        self.stop();
        let r = self.program();
        if r.is_err() {
            self.stop();
        }
        r
    }

    /// Programs the (empty) rings of [`Started`] and brings the link and queues up.
    fn program(&mut self) -> Result<(), IgbError> {
        let bdf = self.bdf;
        let s = self.started.as_mut().ok_or(IgbError::NotStarted {
            bdf,
            what: "programming the rings",
        })?;
        s.tx.clear();
        s.rx.clear();
        let (tx_iova, rx_iova, buf) = (s.tx.iova(), s.rx.iova(), s.rx.buf());
        let entries = self.opts.ring_entries;
        let r = &self.regs;
        // After a reset (recover): the driver-loaded handshake and GCR again.
        r.update(
            IGB_CTRL_EXT,
            IGB_CTRL_EXT_LINK_MODE_MASK,
            IGB_CTRL_EXT_DRV_LOAD,
        )?;
        r.update(IGB_GCR, IGB_GCR_CMPL_TMOUT_RESEND, 0)?;
        let ring_bytes = u32::from(entries) * ring::DESC as u32;
        r.write32(igb_tdbal(0), tx_iova as u32)?;
        r.write32(igb_tdbah(0), (tx_iova >> 32) as u32)?;
        r.write32(igb_tdlen(0), ring_bytes)?;
        r.write32(igb_tdh(0), 0)?;
        r.write32(igb_tdt(0), 0)?;
        r.write32(igb_txdctl(0), IGB_XDCTL_QUEUE_ENABLE)?;
        r.write32(igb_rdbal(0), rx_iova as u32)?;
        r.write32(igb_rdbah(0), (rx_iova >> 32) as u32)?;
        r.write32(igb_rdlen(0), ring_bytes)?;
        r.write32(igb_rdh(0), 0)?;
        r.write32(igb_rdt(0), 0)?;
        r.write32(
            igb_srrctl(0),
            IGB_SRRCTL_DESCTYPE_HDR_SPLIT
                | ((HDR_SLOT as u32) << IGB_SRRCTL_BSIZEHEADER_SHIFT)
                | (buf as u32 >> IGB_SRRCTL_BSIZEPACKET_SHIFT),
        )?;
        r.write32(igb_rxdctl(0), IGB_XDCTL_QUEUE_ENABLE)?;
        // Longest frame accepted, FCS and a VLAN tag included.
        r.write32(IGB_RLPML, u32::from(self.opts.mtu) + 18 + 4)?;
        let loopback = self.opts.link == LinkMode::Loopback;
        if loopback {
            r.link_loopback()?;
        } else {
            r.link_wire()?;
        }
        let mut rctl = IGB_RCTL_EN | IGB_RCTL_BAM | IGB_RCTL_SECRC;
        if loopback {
            rctl |= IGB_RCTL_LBM_MAC;
        }
        if self.opts.mtu > 1500 {
            rctl |= IGB_RCTL_LPE;
        }
        r.write32(IGB_RCTL, rctl)?;
        self.rctl = rctl;
        // Collision threshold 15 and distance 63: the datasheet's full-duplex values.
        r.write32(
            IGB_TCTL,
            IGB_TCTL_EN | IGB_TCTL_PSP | (0xf << 4) | (0x3f << 12),
        )?;
        self.wait_queue(Ring::Tx, igb_txdctl(0), "TXDCTL")?;
        self.wait_queue(Ring::Rx, igb_rxdctl(0), "RXDCTL")?;
        self.regs.wait_link(self.opts.link_timeout, loopback)
    }

    /// Waits at most 100 ms for a queue's ENABLE bit to read back (8.10.10/8.12.13:
    /// it stays 0 until RCTL.EN/TCTL.EN are set).
    fn wait_queue(&self, ring: Ring, reg_at: usize, reg: &'static str) -> Result<(), IgbError> {
        let timeout = Duration::from_millis(100);
        let start = Instant::now();
        loop {
            let value = self.regs.read32(reg_at)?;
            if value & IGB_XDCTL_QUEUE_ENABLE != 0 {
                return Ok(());
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(IgbError::QueueEnable {
                    bdf: self.bdf,
                    ring,
                    reg,
                    value,
                    waited,
                });
            }
            sleep(Duration::from_micros(100));
        }
    }

    fn started(&mut self, what: &'static str) -> Result<&mut Started, IgbError> {
        let bdf = self.bdf;
        self.started
            .as_mut()
            .ok_or(IgbError::NotStarted { bdf, what })
    }

    /// Receive filters for the data phase: `true` accepts only unicast frames to its own
    /// MAC (RCTL.UPE, MPE and BAM off: no ARP broadcast lands in a BAR), `false` accepts
    /// broadcast again (ARP).
    ///
    /// # Errors
    ///
    /// [`IgbError::Device`], [`IgbError::Revoked`].
    pub fn set_unicast_only(&mut self, only: bool) -> Result<(), IgbError> {
        let mut rctl = self.rctl & !(IGB_RCTL_UPE | IGB_RCTL_MPE | IGB_RCTL_BAM);
        if !only {
            rctl |= IGB_RCTL_BAM;
        }
        self.regs.write32(IGB_RCTL, rctl)?;
        self.rctl = rctl;
        Ok(())
    }

    /// Queues one frame: `headers` (1 to 128 bytes, e.g. [`udp_headers`](crate::net::udp_headers)'
    /// 42, copied into the slot's header buffer) then `payload`, as advanced data
    /// descriptors (one for the headers, one for the payload, the last with EOP, IFCS,
    /// RS; a buffer crossing a 4 KiB IOVA page takes one more per crossing, for QEMU),
    /// and writes TDT. Waits, bounded by [`IgbOptions::completion_timeout`] without
    /// progress, for free descriptors.
    /// Frames under 60 bytes are padded by the device (TCTL.PSP).
    ///
    /// # Errors
    ///
    /// [`IgbError::NotStarted`], [`IgbError::FrameTooLong`], [`IgbError::Unsupported`]
    /// (headers empty or over 128 bytes), [`IgbError::RingStall`] (TX),
    /// [`IgbError::Iommufd`], [`IgbError::Device`], [`IgbError::Revoked`].
    pub fn transmit(&mut self, headers: &[u8], payload: TxPayload<'_>) -> Result<(), IgbError> {
        self.queue_tx(headers, payload)?;
        self.announce_tx()
    }

    /// [`transmit`](Self::transmit) without the TDT write.
    fn queue_tx(&mut self, headers: &[u8], payload: TxPayload<'_>) -> Result<(), IgbError> {
        let bdf = self.bdf;
        let (max, mtu) = (self.max_frame(), self.opts.mtu);
        let len = headers.len() + payload.len();
        if len > max {
            return Err(IgbError::FrameTooLong { bdf, len, max, mtu });
        }
        if headers.is_empty() || headers.len() > HDR_SLOT {
            return Err(IgbError::Unsupported {
                bdf,
                what: format!(
                    "{} header bytes; a frame's header descriptor takes 1 to {HDR_SLOT}",
                    headers.len()
                ),
                fix: "put the frame's headers first and its data in the payload",
            });
        }
        let plan = self.started("a transmit")?.tx.plan(headers, &payload);
        self.wait_tx_room(plan.len() as u16)?;
        let s = self.started("a transmit")?;
        s.tx.push(headers, payload, &plan)
            .map_err(|source| IgbError::Iommufd { bdf, source })
    }

    /// Writes TDT if frames were queued since the last write.
    fn announce_tx(&mut self) -> Result<(), IgbError> {
        let Some(s) = self.started.as_mut() else {
            return Ok(());
        };
        if s.tx.unannounced() {
            let tail = u32::from(s.tx.tail);
            s.tx.announced();
            self.regs.write32(igb_tdt(0), tail)?;
        }
        Ok(())
    }

    /// Waits until `n` TX descriptors are free, reaping completions; no progress for
    /// the completion timeout is a [`IgbError::RingStall`].
    fn wait_tx_room(&mut self, n: u16) -> Result<(), IgbError> {
        let timeout = self.opts.completion_timeout;
        let mut last = Instant::now();
        loop {
            let s = self.started("a transmit")?;
            if s.tx.free() >= n {
                return Ok(());
            }
            self.announce_tx()?;
            if self.reap_tx()? > 0 {
                last = Instant::now();
                continue;
            }
            if last.elapsed() >= timeout {
                return Err(self.stall(Ring::Tx, last.elapsed()));
            }
            std::thread::yield_now();
        }
    }

    /// The [`IgbError::RingStall`] of `ring` (head read now; a revoke or a failed
    /// read says so instead).
    fn stall(&self, ring: Ring, waited: Duration) -> IgbError {
        let (h, t) = match ring {
            Ring::Tx => (igb_tdh(0), igb_tdt(0)),
            Ring::Rx => (igb_rdh(0), igb_rdt(0)),
        };
        let head = match self.regs.read32(h) {
            Ok(v) => v,
            Err(e) => return e,
        };
        let tail = self.regs.read32(t).unwrap_or(u32::MAX);
        IgbError::RingStall {
            bdf: self.bdf,
            ring,
            head,
            tail,
            waited,
        }
    }

    /// Releases the frames the device finished sending (DD written back), in order;
    /// returns how many.
    ///
    /// # Errors
    ///
    /// [`IgbError::NotStarted`], [`IgbError::Iommufd`].
    pub fn reap_tx(&mut self) -> Result<usize, IgbError> {
        let bdf = self.bdf;
        let s = self.started("reaping TX")?;
        s.tx.reap()
            .map_err(|source| IgbError::Iommufd { bdf, source })
    }

    /// Frames queued and not yet reaped.
    pub fn tx_in_flight(&self) -> usize {
        self.started.as_ref().map_or(0, |s| s.tx.in_flight())
    }

    /// Waits until every queued frame was sent; no progress for `timeout` is a
    /// [`IgbError::RingStall`] naming TDH and TDT.
    ///
    /// # Errors
    ///
    /// [`IgbError::RingStall`], [`IgbError::NotStarted`], [`IgbError::Iommufd`],
    /// [`IgbError::Device`], [`IgbError::Revoked`].
    pub fn flush_tx(&mut self, timeout: Duration) -> Result<(), IgbError> {
        self.announce_tx()?;
        let mut last = Instant::now();
        let mut spins = 0u32;
        while self.tx_in_flight() > 0 {
            if self.reap_tx()? > 0 {
                last = Instant::now();
                continue;
            }
            spins += 1;
            if spins.is_multiple_of(256) {
                self.regs.read32(IGB_STATUS)?; // notices a revoke
            }
            if last.elapsed() >= timeout {
                return Err(self.stall(Ring::Tx, last.elapsed()));
            }
            std::thread::yield_now();
        }
        Ok(())
    }

    /// Posts the next RX slot with `target` and writes RDT. Headers always land in the
    /// slot's host header buffer.
    ///
    /// # Errors
    ///
    /// [`IgbError::NotStarted`], [`IgbError::Unsupported`] when [`rx_capacity`](Self::rx_capacity)
    /// slots are already posted or the target's IOVA is odd, [`IgbError::Iommufd`],
    /// [`IgbError::Device`], [`IgbError::Revoked`].
    pub fn post_rx(&mut self, target: RxTarget) -> Result<(), IgbError> {
        self.queue_rx(target)?;
        self.announce_rx()
    }

    fn queue_rx(&mut self, target: RxTarget) -> Result<(), IgbError> {
        let bdf = self.bdf;
        let s = self.started("posting RX")?;
        if s.rx.posted() >= s.rx.capacity() {
            return Err(IgbError::Unsupported {
                bdf,
                what: format!("all {} RX slots are posted", s.rx.capacity()),
                fix: "poll completed frames (poll_rx) before posting more",
            });
        }
        if let RxTarget::Iova { iova, .. } = target {
            if iova & 1 != 0 {
                return Err(IgbError::Unsupported {
                    bdf,
                    what: format!(
                        "RX target IOVA {iova:#x} is odd (bit 0 of the packet address is A0/NSE)"
                    ),
                    fix: "post an even IOVA",
                });
            }
        }
        s.rx.post(target)
            .map_err(|source| IgbError::Iommufd { bdf, source })
    }

    fn announce_rx(&mut self) -> Result<(), IgbError> {
        let Some(s) = self.started.as_mut() else {
            return Ok(());
        };
        if s.rx.unannounced() {
            let tail = u32::from(s.rx.tail);
            s.rx.announced();
            self.regs.write32(igb_rdt(0), tail)?;
        }
        Ok(())
    }

    /// RX slots posted and not yet completed.
    pub fn rx_posted(&self) -> usize {
        self.started.as_ref().map_or(0, |s| s.rx.posted())
    }

    /// The most RX slots posted at once (ring entries − 1; 0 before start).
    pub fn rx_capacity(&self) -> usize {
        self.started.as_ref().map_or(0, |s| s.rx.capacity())
    }

    /// Packet buffer bytes per RX slot (SRRCTL.BSIZEPACKET): what the device may write
    /// at an [`RxTarget::Iova`].
    pub fn rx_buffer_size(&self) -> usize {
        packet_buffer(self.opts.mtu)
    }

    /// The next completed RX slot in ring order, if the device wrote it back.
    ///
    /// # Errors
    ///
    /// [`IgbError::RxDescriptor`] for descriptor error bits (the slot is consumed),
    /// [`IgbError::RxOverrun`] when the payload ran past an IOVA target's length,
    /// [`IgbError::NotStarted`], [`IgbError::Iommufd`].
    pub fn poll_rx(&mut self) -> Result<Option<RxFrame>, IgbError> {
        let bdf = self.bdf;
        let s = self.started("polling RX")?;
        let buffer = s.rx.buf() as u32;
        let Some(done) =
            s.rx.poll()
                .map_err(|source| IgbError::Iommufd { bdf, source })?
        else {
            return Ok(None);
        };
        if let Some((what, fix)) = done.wb.errors() {
            return Err(IgbError::RxDescriptor {
                bdf,
                slot: done.slot,
                what,
                status_error: done.wb.status_error,
                len: done.wb.len,
                fix,
            });
        }
        if let RxTarget::Iova { iova, len } = done.target {
            if u32::from(done.wb.len) > len {
                return Err(IgbError::RxOverrun {
                    bdf,
                    slot: done.slot,
                    len: u32::from(done.wb.len),
                    target_len: len,
                    iova,
                    buffer,
                });
            }
        }
        Ok(Some(RxFrame {
            slot: done.slot,
            headers: done.headers,
            payload_len: usize::from(done.wb.len),
            target: done.target,
            payload: done.payload,
        }))
    }

    /// RX and TX off, then a reset: no DMA continues (best effort, from drop and
    /// re-start).
    fn stop(&mut self) {
        let _ = self.regs.write32(IGB_RCTL, 0);
        let _ = self.regs.write32(IGB_TCTL, 0);
        let _ = self.regs.reset();
        if let Some(s) = self.started.as_mut() {
            s.tx.clear();
            s.rx.clear();
        }
    }
}

impl Drop for Igb {
    fn drop(&mut self) {
        // Before the rings' memory is unmapped (the fields drop after this).
        self.stop();
    }
}

fn check_options(bdf: Bdf, o: &IgbOptions) -> Result<(), IgbError> {
    if !(MIN_MTU..=MAX_MTU).contains(&o.mtu) {
        return Err(IgbError::Mtu {
            bdf,
            mtu: o.mtu,
            min: MIN_MTU,
            max: MAX_MTU,
        });
    }
    let why = if o.ring_entries < 8 {
        Some("fewer than 8")
    } else if !o.ring_entries.is_multiple_of(8) {
        Some("not a multiple of 8")
    } else if o.ring_entries > 32768 {
        Some("more than 32768")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(IgbError::RingEntries {
            bdf,
            entries: o.ring_entries,
            why,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_buffers_hold_a_whole_frame_in_kib() {
        assert_eq!(packet_buffer(1500), 2048);
        assert_eq!(packet_buffer(9000), 9216);
        assert_eq!(packet_buffer(68), 1024);
    }

    #[test]
    fn options_outside_the_device_are_refused_by_name() {
        let bdf: Bdf = "0000:00:05.0".parse().unwrap();
        let ok = IgbOptions::default();
        assert!(check_options(bdf, &ok).is_ok());
        let e = check_options(bdf, &IgbOptions { mtu: 9001, ..ok }).unwrap_err();
        assert_eq!(e.kind(), "igb_mtu");
        assert!(e.to_string().contains("68..=9000"), "{e}");
        let e = check_options(
            bdf,
            &IgbOptions {
                ring_entries: 100,
                ..ok
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a multiple of 8"), "{e}");
    }
}
