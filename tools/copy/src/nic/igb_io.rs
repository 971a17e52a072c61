//! The NIC IO of both sides on the engine crate's user-space igb driver
//! (`peerdma_engine::igb`, an Intel 82576 bound to vfio-pci, [`LinkMode::Wire`]).
//!
//! The NIC is opened through its VFIO cdev on the shared iommufd, attached to an IOAS
//! of its own, and started there (rings and host buffers mapped by the driver). The
//! local BAR span (or, for the baseline, a host buffer) is exported as a dma-buf and
//! mapped in that IOAS: the sender transmits every data datagram with its 42 header
//! bytes from a host slot and its payload straight from the span's IOVA
//! ([`TxPayload::Iova`]); the receiver posts one RX slot per data datagram whose packet
//! address is the datagram's place in the span ([`RxTarget::Iova`]), and the device's
//! header split puts the UDP payload there. Control messages and ARP go through host
//! slots. No CPU mapping touches a data payload; the receiver checks the span through
//! the BAR's VFIO region mmap afterwards.
//!
//! While BAR slots are posted (READY to the last datagram) the receiver accepts only
//! unicast frames to its MAC (RCTL), and any frame that is not the next data datagram
//! is a named error. The IOMMU faults the kernel logs for the NIC while the stream runs
//! fail it too: QEMU's igb ignores a refused DMA (a TX sends whatever its buffer held, an
//! RX is lost), so the fault log is what tells.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use peerdma_engine::igb::{Igb, IgbError, IgbOptions, LinkMode, RxFrame, RxTarget, TxPayload};
use peerdma_engine::net::{
    arp_frame, parse_arp, parse_udp_headers, udp_headers, Arp, ArpOp, MacAddr, UdpEndpoint,
    ETH_HEADER,
};
use peerdma_exporter::{AccessPath, Device, DmaBuf, DmaRange, OpenOptions, PassedFds};
use peerdma_host::Bdf;
use peerdma_importer::iommufd::{
    Attachment, DmaBufMapping, Ioas, Iommufd, Iova, MappingState, Placement, Prot, UserBuffer,
    UserMapping,
};

use super::error::NicError;
use super::plan::Plan;
use super::receiver::{Checked, Receiver, ReceiverAction, ReceiverConfig};
use super::sender::{Sender, SenderAction, SenderConfig};
use super::wire::Message;
use super::{rates, stream_id, LocalSpec, NicReport, SendRequest, ServeRequest, HOST_DEFAULT_SIZE};
use crate::faults::FaultWatch;
use crate::stream_end::open_bar;
use crate::verify::{self, GuardedMap};
use crate::{pattern, CopyError, Endpoint, Side};

/// How often START and END go out again.
const RESEND: Duration = Duration::from_secs(1);
/// How often an ARP request for the peer goes out while its MAC is unknown.
const ARP_RETRY: Duration = Duration::from_millis(250);
/// Host RX slots kept posted outside a receiver's data phase.
const HOST_SLOTS: usize = 32;
/// Bytes between checks of the mappings (a revoke) and the RX ring while sending.
const CHECK_EVERY: u64 = 32;

/// The NIC, attached to its IOAS and started, with the local span mapped there.
/// Field order is drop order: the driver stops the function (RX/TX off, reset) and
/// unmaps its rings first, then the span is unmapped, the device detached, the IOAS and
/// the device file go.
struct Nic {
    igb: Igb,
    span: Option<SpanMapping>,
    _attachment: Attachment,
    ioas: Ioas,
    _device: Device,
    me: UdpEndpoint,
}

/// The local memory as the NIC sees it.
enum SpanMapping {
    Bar(DmaBufMapping<DmaBuf>),
    Host(UserMapping),
}

impl SpanMapping {
    fn iova(&self) -> u64 {
        match self {
            SpanMapping::Bar(m) => m.iova(),
            SpanMapping::Host(m) => m.iova(),
        }
    }

    /// Whether DMA still reaches it (a BAR's dma-buf can be revoked).
    fn live(&mut self) -> bool {
        match self {
            SpanMapping::Bar(m) => matches!(m.state(), MappingState::Live),
            SpanMapping::Host(_) => true,
        }
    }
}

/// This side's memory: a BAR span (its CPU mapping for the fill or the check) or a host
/// buffer (mapped in the NIC's IOAS; the baseline of the same driver).
enum Local {
    Bar { ep: Endpoint, map: GuardedMap },
    Host,
}

impl Nic {
    fn open(bdf: Bdf, ip: Ipv4Addr, port: u16, mtu: u32) -> Result<Nic, CopyError> {
        if crate::dma::available().is_err() {
            return Err(NicError::Unavailable {
                why: format!(
                    "the NIC {bdf} is driven through iommufd, and this kernel has no /dev/iommu"
                ),
                fix: "load iommufd (modprobe iommufd; a kernel without CONFIG_IOMMUFD needs \
                      rebuilding), or make this end a kernel socket on an ordinary NIC \
                      (no NIC device named; host memory, NOT peer-to-peer)"
                    .into(),
            }
            .into());
        }
        // By its ids before opening: advice to bind some other NIC to vfio-pci would take that
        // NIC away from its driver and still not make it an 82576.
        if let Ok(d) = peerdma_host::sysfs::Sysfs::system().device(bdf) {
            let id = peerdma_engine::EngineId::of_function(d.vendor, d.device, d.class);
            if !id.is_some_and(|e| e.is_nic()) {
                return Err(peerdma_engine::EngineError::from(IgbError::NotIgb {
                    bdf,
                    vendor: d.vendor,
                    device: d.device,
                    what: format!("class {:06x}", d.class),
                })
                .into());
            }
        }
        let iommufd = Iommufd::shared()?;
        let device = Device::open_with(
            bdf,
            OpenOptions {
                access: AccessPath::Cdev,
                passed: PassedFds::Iommufd(iommufd.try_clone_fd()?),
                ..OpenOptions::default()
            },
        )?;
        let mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
        let mut igb = Igb::open(
            &device,
            IgbOptions {
                link: LinkMode::Wire,
                mtu,
                ..IgbOptions::default()
            },
        )
        .map_err(peerdma_engine::EngineError::from)?;
        let ioas = Ioas::alloc_with(&iommufd, Placement::default())?;
        let attachment = ioas.attach(&device)?;
        igb.start(&ioas)
            .map_err(peerdma_engine::EngineError::from)?;
        let me = UdpEndpoint {
            mac: igb.mac(),
            ip,
            port,
        };
        Ok(Nic {
            igb,
            span: None,
            _attachment: attachment,
            ioas,
            _device: device,
            me,
        })
    }

    /// Maps `local`'s first `len` bytes (rounded up to a page) in the IOAS (`prot`: the
    /// NIC reads a source, writes a destination; host memory: a fresh buffer); returns
    /// the IOVA.
    fn map_span(&mut self, local: &Local, len: u64, prot: Prot) -> Result<u64, CopyError> {
        let page = 4096;
        let len = len.div_ceil(page) * page;
        let mapping = match local {
            Local::Bar { ep, .. } => {
                let buf = ep
                    .device
                    .export_dma_buf(ep.bar.index, &[DmaRange::new(ep.offset, len)])?;
                SpanMapping::Bar(self.ioas.map_vfio_dmabuf(
                    &ep.device,
                    buf,
                    0,
                    len,
                    Iova::Guarded,
                    prot,
                )?)
            }
            Local::Host => {
                let buf = UserBuffer::new(len as usize)?;
                SpanMapping::Host(self.ioas.map_host(buf, Iova::Guarded, prot)?)
            }
        };
        let iova = mapping.iova();
        self.span = Some(mapping);
        Ok(iova)
    }

    fn host_buffer(&self) -> Option<&UserBuffer> {
        match &self.span {
            Some(SpanMapping::Host(m)) => Some(m.buffer()),
            _ => None,
        }
    }

    fn send_udp(
        &mut self,
        to: &UdpEndpoint,
        ident: u16,
        payload: TxPayload<'_>,
    ) -> Result<(), CopyError> {
        let headers = udp_headers(&self.me, to, ident, payload.len());
        self.igb
            .transmit(&headers, payload)
            .map_err(peerdma_engine::EngineError::from)?;
        Ok(())
    }

    fn send_control(
        &mut self,
        to: &UdpEndpoint,
        ident: u16,
        msg: &Message,
    ) -> Result<(), CopyError> {
        let bytes = msg.encode();
        self.send_udp(to, ident, TxPayload::Host(&bytes))
    }

    fn send_arp(&mut self, arp: &Arp) -> Result<(), CopyError> {
        let frame = arp_frame(arp);
        self.igb
            .transmit(&frame[..ETH_HEADER], TxPayload::Host(&frame[ETH_HEADER..]))
            .map_err(peerdma_engine::EngineError::from)?;
        Ok(())
    }

    fn post_host(&mut self, slots: usize) -> Result<(), CopyError> {
        for _ in 0..slots {
            if self.igb.rx_posted() >= self.igb.rx_capacity() {
                break;
            }
            self.igb
                .post_rx(RxTarget::Host)
                .map_err(peerdma_engine::EngineError::from)?;
        }
        Ok(())
    }

    fn poll(&mut self) -> Result<Option<RxFrame>, CopyError> {
        Ok(self
            .igb
            .poll_rx()
            .map_err(peerdma_engine::EngineError::from)?)
    }

    /// What a received frame is. An ARP request for this side's address is answered
    /// here.
    fn classify(&mut self, f: &RxFrame) -> Result<Got, CopyError> {
        if f.headers.is_empty() {
            // Not split: not an IPv4/UDP datagram; the whole frame is the payload.
            let Some(frame) = &f.payload else {
                return Ok(Got::Other(format!(
                    "a frame of {} bytes that is no UDP datagram",
                    f.payload_len
                )));
            };
            return Ok(match parse_arp(frame) {
                Ok(arp) => {
                    if arp.op == ArpOp::Request && arp.target_ip == self.me.ip {
                        let reply = arp.reply_from(self.me.mac);
                        self.send_arp(&reply)?;
                    }
                    Got::Arp(arp)
                }
                Err(e) => Got::Other(format!("a frame that is neither UDP nor ARP ({e})")),
            });
        }
        let h = match parse_udp_headers(&f.headers) {
            Ok(h) => h,
            Err(e) => {
                return Ok(Got::Other(format!(
                    "a frame that is no plain UDP datagram ({e})"
                )))
            }
        };
        if h.dst.ip != self.me.ip || h.dst.port != self.me.port {
            return Ok(Got::Other(format!(
                "a UDP datagram from {} to {}:{}, not this stream's {}:{}",
                h.src, h.dst.ip, h.dst.port, self.me.ip, self.me.port
            )));
        }
        Ok(match (&f.target, &f.payload) {
            (RxTarget::Host, Some(p)) => match Message::decode(&p[..h.payload_len.min(p.len())]) {
                Ok(m) => Got::Control(m, h.ident, h.src),
                Err(e) => Got::Other(format!(
                    "a datagram from {} that is no control message ({e})",
                    h.src
                )),
            },
            _ => Got::Data {
                ident: h.ident,
                len: h.payload_len,
                from: h.src,
            },
        })
    }

    /// The peer's MAC, by ARP requests every 250 ms until a reply (or `timeout`).
    fn resolve(&mut self, peer: SocketAddrV4, timeout: Duration) -> Result<MacAddr, CopyError> {
        let deadline = Instant::now() + timeout;
        let mut next = Instant::now();
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(NicError::NoAnswer {
                    peer: format!("{} (ARP for its MAC)", peer.ip()),
                    seconds: timeout.as_secs(),
                }
                .into());
            }
            if now >= next {
                self.send_arp(&Arp::request(self.me.mac, self.me.ip, *peer.ip()))?;
                next = now + ARP_RETRY;
            }
            while let Some(f) = self.poll()? {
                let got = self.classify(&f)?;
                self.post_host(1)?;
                if let Got::Arp(a) = got {
                    if a.op == ArpOp::Reply && a.sender_ip == *peer.ip() {
                        return Ok(a.sender_mac);
                    }
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// A received frame.
enum Got {
    Control(Message, u16, UdpEndpoint),
    Data {
        ident: u16,
        len: usize,
        from: UdpEndpoint,
    },
    Arp(Arp),
    Other(String),
}

fn v4(addr: SocketAddr, what: &str) -> Result<SocketAddrV4, CopyError> {
    match addr {
        SocketAddr::V4(a) if !a.ip().is_unspecified() => Ok(a),
        _ => Err(NicError::Unavailable {
            why: format!(
                "a NIC side needs this side's own IPv4 address on the wire, and {what} is {addr}"
            ),
            fix: "give this side's IPv4 address (a sender's bind address, a receiver's listen \
                  address): the NIC answers ARP for it and sends from it"
                .into(),
        }
        .into()),
    }
}

/// Refuses a BAR end on the NIC itself (a VFIO device opens once; the NIC's BARs are
/// its registers and MSI-X table).
fn same_device(nic: Bdf, spec: &LocalSpec) -> Result<(), CopyError> {
    match spec {
        LocalSpec::Bar(b) if b.bdf == nic => Err(NicError::Unavailable {
            why: format!(
                "{nic} is named both as the NIC and as the device whose BAR it moves: the NIC's \
                 BARs hold its registers"
            ),
            fix: "name the BAR of another device (an ivshmem, a GPU) for the NIC to DMA".into(),
        }
        .into()),
        _ => Ok(()),
    }
}

/// Opens the local memory: a BAR span from its offset (checked: page-aligned offset,
/// memory not registers, at least `size` bytes when given; its CPU mapping for the fill
/// or the check) or host memory. Returns it and its size (`size`, or what the BAR holds
/// past the offset; host memory: `size` or [`HOST_DEFAULT_SIZE`]).
fn open_local(
    spec: &LocalSpec,
    side: Side,
    size: Option<u64>,
    access: AccessPath,
) -> Result<(Local, u64), CopyError> {
    match spec {
        LocalSpec::Host => Ok((Local::Host, size.unwrap_or(HOST_DEFAULT_SIZE))),
        LocalSpec::Bar(spec) => {
            let (ep, page) = open_bar(spec, side, access)?;
            let bar_size = ep.bar.size();
            let room = bar_size.saturating_sub(ep.offset);
            let size = size.unwrap_or(room);
            if size == 0 {
                return Err(CopyError::ZeroSize);
            }
            let mapped = size.div_ceil(page) * page;
            ep.check_span(side, mapped)?;
            ep.check_not_registers(side, mapped)?;
            let map = GuardedMap::new(&ep, mapped)?;
            Ok((Local::Bar { ep, map }, size))
        }
    }
}

fn describe(local: &Local, nic: Bdf) -> String {
    match local {
        Local::Bar { ep, .. } => format!("BAR{} of {} via NIC {nic}", ep.bar.index, ep.bdf()),
        Local::Host => format!("host memory via NIC {nic}"),
    }
}

fn p2p_why(local: &Local, nic: Bdf, tx: bool) -> (bool, String) {
    match local {
        Local::Bar { ep, .. } => (
            true,
            format!(
                "the NIC {nic} DMAed every data datagram's payload {} {} BAR{} through its \
                 dma-buf mapped in the NIC's IOAS; no CPU mapping touched the payload",
                if tx { "straight from" } else { "straight into" },
                ep.bdf(),
                ep.bar.index
            ),
        ),
        Local::Host => (
            false,
            format!("NOT peer-to-peer: host memory buffers mapped in the NIC {nic}'s IOAS (the baseline)"),
        ),
    }
}

/// Sends through the NIC `nic` (see [`super::send`]).
pub(super) fn send(
    nic: Bdf,
    req: &SendRequest,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<NicReport, CopyError> {
    let peer = v4(req.peer, "the peer")?;
    let bind = v4(
        req.bind
            .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
        "the bind address",
    )?;
    same_device(nic, &req.src)?;
    let (local, size) = open_local(&req.src, Side::Src, req.size, req.access)?;
    let plan = Plan::new(size, req.payload, req.mtu).map_err(NicError::from)?;
    let port = if bind.port() == 0 {
        super::DEFAULT_PORT
    } else {
        bind.port()
    };
    let mut n = Nic::open(nic, *bind.ip(), port, req.mtu)?;
    let base = n.map_span(&local, size, Prot::Read)?;
    // The pattern goes in through the CPU before the NIC reads it.
    match &local {
        Local::Bar { ep, map } => verify::fill(ep, map, req.seed, 1 << 20)?,
        Local::Host => {
            let mut chunk = vec![0u8; 1 << 20];
            let buf = n.host_buffer().expect("a host span");
            let mut off = 0u64;
            while off < size {
                let len = (size - off).min(chunk.len() as u64) as usize;
                pattern::fill(req.seed, off, &mut chunk[..len]);
                buf.write(off as usize, &chunk[..len])?;
                off += len as u64;
            }
        }
    }
    n.post_host(HOST_SLOTS)?;
    let mac = n.resolve(peer, req.timeout)?;
    let to = UdpEndpoint {
        mac,
        ip: *peer.ip(),
        port: peer.port(),
    };
    let mut faults = FaultWatch::start(nic);
    let what = describe(&local, nic);
    let stream = stream_id(req.seed);
    let mut s = Sender::new(
        SenderConfig {
            stream,
            plan,
            seed: req.seed,
            what: what.clone(),
            peer: req.peer.to_string(),
            ident: stream as u16,
            answer_timeout: req.timeout,
            stall: req.stall,
            resend: RESEND,
        },
        Instant::now(),
    );
    let every = (plan.count() / 100).max(1);
    let outcome = loop {
        match s.poll(Instant::now()) {
            Some(SenderAction::Control { msg, ident }) => n.send_control(&to, ident, &msg)?,
            Some(SenderAction::Data { index, ident }) => {
                let d = plan.datagram(index).expect("planned");
                n.send_udp(
                    &to,
                    ident,
                    TxPayload::Iova {
                        iova: base + d.offset,
                        len: d.len,
                    },
                )?;
                if index % every == 0 || index + 1 == plan.count() {
                    progress(d.offset + u64::from(d.len), size);
                }
                let hooked = revoke_hook(&local, send_hook(req), index);
                if index % CHECK_EVERY == 0 || hooked {
                    if !n.span.as_mut().expect("mapped").live() {
                        let Local::Bar { ep, .. } = &local else {
                            unreachable!("host memory is never revoked")
                        };
                        let e = verify::revoked(ep, d.offset, size);
                        if let SenderAction::Control { msg, ident } = s.abort(&e.what()) {
                            let _ = n.send_control(&to, ident, &msg);
                        }
                        return Err(e);
                    }
                    sender_rx(&mut n, &mut s)?;
                }
            }
            Some(SenderAction::Finished(r)) => break r,
            None => {
                if !sender_rx(&mut n, &mut s)? {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        }
    };
    let outcome = outcome.map_err(CopyError::from);
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return Err(faults.explain(e)),
    };
    faults.finish(true)?;
    let (p2p, why) = p2p_why(&local, nic, true);
    let (gbps, frames_per_s) = rates(size, plan.count(), outcome.seconds);
    Ok(NicReport {
        role: "sender",
        engine: "nic",
        local: what,
        remote: outcome.remote,
        peer: req.peer.to_string(),
        device: nic.to_string(),
        peer_to_peer: p2p,
        peer_to_peer_why: why,
        datagrams: plan.count(),
        payload_size: plan.payload(),
        bytes: size,
        seconds: outcome.seconds,
        gbps,
        frames_per_s,
        seed: req.seed,
        verified: outcome.verdict.ok,
        verdict: outcome.verdict.message,
    })
}

/// Takes what arrived on a sender's host slots: control messages to the state
/// machine, ARP answered. Returns whether anything arrived.
fn sender_rx(n: &mut Nic, s: &mut Sender) -> Result<bool, CopyError> {
    let mut any = false;
    while let Some(f) = n.poll()? {
        any = true;
        let got = n.classify(&f)?;
        n.post_host(1)?;
        if let Got::Control(m, _, _) = got {
            s.on_message(Instant::now(), &m);
        }
    }
    Ok(any)
}

/// Receives through the NIC `nic` (see [`super::serve`]).
pub(super) fn serve(
    nic: Bdf,
    req: &ServeRequest,
    on_listen: &mut dyn FnMut(SocketAddr),
) -> Result<NicReport, CopyError> {
    let listen = v4(req.listen, "the listen address")?;
    let port = if listen.port() == 0 {
        super::DEFAULT_PORT
    } else {
        listen.port()
    };
    same_device(nic, &req.dst)?;
    let (local, room) = open_local(
        &req.dst,
        Side::Dst,
        match req.dst {
            LocalSpec::Host => Some(req.max_host_size),
            LocalSpec::Bar(_) => None,
        },
        req.access,
    )?;
    let mut n = Nic::open(nic, *listen.ip(), port, req.mtu)?;
    // The destination is mapped in the NIC's IOAS once START says how much.
    let mut base = 0;
    on_listen(SocketAddr::V4(SocketAddrV4::new(*listen.ip(), port)));
    let what = describe(&local, nic);
    let window = req
        .window
        .unwrap_or(u32::MAX)
        .min(n.igb.rx_capacity() as u32)
        .max(1);
    let mut r = Receiver::new(
        ReceiverConfig {
            window,
            what: what.clone(),
            room,
            even_offsets: true,
            mtu: req.mtu,
            listen: format!("{}:{port} ({})", listen.ip(), n.me.mac),
            wait: req.wait,
            stall: req.stall,
            answer_timeout: req.timeout,
            linger: req.linger,
        },
        Instant::now(),
    );
    // Until START, one host slot at a time: when START takes it, no host slot is left
    // ahead of the data slots (a START repeated meanwhile finds no slot and is dropped).
    n.post_host(1)?;
    let mut peer: Option<UdpEndpoint> = None;
    let mut seed = 0;
    let mut total = 0;
    let mut mismatch = None;
    let mut data_phase = false;
    let mut after_data = false;
    // Data datagrams taken into the destination so far (for the test hook).
    let mut received = 0u64;
    let mut faults: Option<FaultWatch> = None;
    let outcome = loop {
        match r.poll(Instant::now()) {
            Some(ReceiverAction::Prepare { plan, seed: s }) => {
                let t = Instant::now();
                seed = s;
                total = plan.total();
                faults = Some(FaultWatch::start(nic));
                base = n.map_span(&local, total, Prot::Write)?;
                poison(&n, &local, seed, total)?;
                r.missed_starts_for(t.elapsed().as_secs_f64());
                n.igb
                    .set_unicast_only(true)
                    .map_err(peerdma_engine::EngineError::from)?;
                data_phase = true;
            }
            Some(ReceiverAction::PostSlots { first, count }) => {
                let plan = r.plan().expect("a stream");
                for k in first..first + count {
                    let d = plan.datagram(k).expect("planned");
                    n.igb
                        .post_rx(RxTarget::Iova {
                            iova: base + d.offset,
                            len: d.len,
                        })
                        .map_err(peerdma_engine::EngineError::from)?;
                }
            }
            Some(ReceiverAction::DataPhaseOver) => {
                data_phase = false;
                after_data = true;
                n.igb
                    .set_unicast_only(false)
                    .map_err(peerdma_engine::EngineError::from)?;
                n.post_host(HOST_SLOTS)?;
            }
            Some(ReceiverAction::Control(msg)) => {
                if let Some(to) = peer {
                    n.send_control(&to, 0, &msg)?;
                }
            }
            Some(ReceiverAction::Check) => {
                mismatch = check(&n, &local, seed, total)?;
                let read_by = match &local {
                    Local::Bar { ep, .. } => format!(
                        "the CPU through a VFIO mmap of {} BAR{} (not through the NIC)",
                        ep.bdf(),
                        ep.bar.index
                    ),
                    Local::Host => "the CPU reading the host buffer the NIC wrote".into(),
                };
                r.on_checked(
                    Instant::now(),
                    &Checked {
                        verified: total,
                        mismatch,
                        read_by,
                    },
                );
            }
            Some(ReceiverAction::Finished(res)) => break res,
            None => {
                let mut any = false;
                while let Some(f) = n.poll()? {
                    any = true;
                    let now = Instant::now();
                    let got = n.classify(&f)?;
                    let in_bar = matches!(f.target, RxTarget::Iova { .. });
                    match got {
                        Got::Data { ident, len, from } if in_bar && Some(from) == peer => {
                            // A datagram of another length may be the sender's ABORT,
                            // landed in the BAR slot: read back through the CPU, only
                            // to say so.
                            let next = r.next_data();
                            if let Some(d) = next.filter(|d| d.len as usize != len) {
                                if let Some(m) = peek_control(&n, &local, d.offset, len) {
                                    if Some(m.stream()) == r.stream() {
                                        r.on_control(now, &m, Some(ident), &from.to_string());
                                        continue;
                                    }
                                }
                            }
                            let index = next.map(|_| received);
                            r.on_data(now, len, Some(ident));
                            received += 1;
                            if let Some(k) = index {
                                revoke_hook(&local, serve_hook(req), k);
                            }
                        }
                        other if in_bar => {
                            let what = match other {
                                Got::Data { from, .. } => format!("a datagram from {from}"),
                                Got::Control(m, _, from) => format!("{} from {from}", m.name()),
                                Got::Arp(a) => format!("an ARP frame from {}", a.sender_ip),
                                Got::Other(w) => w,
                            };
                            let next = r.next_data().map_or(0, |d| d.offset);
                            let e = NicError::Protocol {
                                peer: peer.map_or_else(String::new, |p| p.to_string()),
                                what: format!(
                                    "{what} arrived in the receive slot of the next data \
                                     datagram (destination offset {next:#x}): only the \
                                     stream's datagrams may reach this address during it"
                                ),
                            };
                            if let Some(ReceiverAction::Control(m)) = r.abort(&e.what()) {
                                if let Some(to) = peer {
                                    let _ = n.send_control(&to, 0, &m);
                                }
                            }
                            return Err(e.into());
                        }
                        Got::Control(m, ident, from) => {
                            if peer.is_none() && matches!(m, Message::Start(_)) {
                                peer = Some(from);
                            }
                            r.on_control(now, &m, Some(ident), &from.to_string());
                            // Until START one host slot at a time; from START to the
                            // last datagram none; after, one for each taken.
                            if r.plan().is_none() || after_data {
                                n.post_host(1)?;
                            }
                        }
                        _ => {
                            if r.plan().is_none() || after_data {
                                n.post_host(1)?;
                            }
                        }
                    }
                }
                if data_phase && !n.span.as_mut().expect("mapped").live() {
                    let Local::Bar { ep, .. } = &local else {
                        unreachable!("host memory is never revoked")
                    };
                    let done = r.next_data().map_or(total, |d| d.offset);
                    let e = verify::revoked(ep, done, total);
                    if let Some(ReceiverAction::Control(m)) = r.abort(&e.what()) {
                        if let Some(to) = peer {
                            let _ = n.send_control(&to, 0, &m);
                        }
                    }
                    return Err(e);
                }
                if !any {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        }
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            let e = CopyError::from(e);
            return Err(match &mut faults {
                Some(f) => f.explain(e),
                None => e,
            });
        }
    };
    if let Some(f) = &mut faults {
        f.finish(outcome.verdict.ok)?;
    }
    let start = outcome.start;
    if !outcome.verdict.ok {
        let (first, count) = mismatch.unwrap_or((total, 0));
        return Err(CopyError::Mismatch {
            first,
            count,
            detail: None,
        });
    }
    let (p2p, why) = p2p_why(&local, nic, false);
    let (gbps, frames_per_s) = rates(start.total, start.count, outcome.seconds);
    Ok(NicReport {
        role: "receiver",
        engine: "nic",
        local: what,
        remote: start.what,
        peer: outcome.peer,
        device: nic.to_string(),
        peer_to_peer: p2p,
        peer_to_peer_why: why,
        datagrams: start.count,
        payload_size: start.payload,
        bytes: start.total,
        seconds: outcome.seconds,
        gbps,
        frames_per_s,
        seed,
        verified: outcome.verdict.ok,
        verdict: outcome.verdict.message,
    })
}

/// The test hook's datagram, where the build has hooks.
#[cfg(feature = "testing")]
fn send_hook(req: &SendRequest) -> Option<u64> {
    req.test_revoke_after
}

#[cfg(not(feature = "testing"))]
fn send_hook(_: &SendRequest) -> Option<u64> {
    None
}

#[cfg(feature = "testing")]
fn serve_hook(req: &ServeRequest) -> Option<u64> {
    req.test_revoke_after
}

#[cfg(not(feature = "testing"))]
fn serve_hook(_: &ServeRequest) -> Option<u64> {
    None
}

/// Turns the BAR's memory decode off when datagram `index` is the hook's (a revoke
/// through VFIO, which revokes the span's dma-buf); returns whether it did.
fn revoke_hook(local: &Local, at: Option<u64>, index: u64) -> bool {
    match local {
        Local::Bar { ep, .. } if at == Some(index) => ep.device.set_memory_decode(false).is_ok(),
        _ => false,
    }
}

/// The control message a frame that landed in a data slot at `offset` carries, if it
/// is one (read through the CPU: the BAR's region mmap, or the host buffer).
fn peek_control(n: &Nic, local: &Local, offset: u64, len: usize) -> Option<Message> {
    let mut b = vec![0u8; len.min(1 << 12)];
    let read = match local {
        Local::Bar { ep, map } => map.read_at(ep, offset as usize, &mut b).is_ok(),
        Local::Host => n.host_buffer()?.read(offset as usize, &mut b).is_ok(),
    };
    read.then(|| Message::decode(&b).ok()).flatten()
}

/// Writes the complement of the pattern into the first `total` bytes of the
/// destination, through the CPU.
fn poison(n: &Nic, local: &Local, seed: u64, total: u64) -> Result<(), CopyError> {
    let mut chunk = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < total {
        let len = (total - off).min(chunk.len() as u64) as usize;
        pattern::fill_complement(seed, off, &mut chunk[..len]);
        match local {
            Local::Bar { ep, map } => map.write_at(ep, off as usize, &chunk[..len])?,
            Local::Host => n
                .host_buffer()
                .expect("a host span")
                .write(off as usize, &chunk[..len])?,
        }
        off += len as u64;
    }
    Ok(())
}

/// Checks the first `total` bytes of the destination against the pattern, through the
/// CPU (the BAR's region mmap, never the NIC): the first difference and the count.
fn check(n: &Nic, local: &Local, seed: u64, total: u64) -> Result<Option<(u64, u64)>, CopyError> {
    let mut chunk = vec![0u8; 1 << 20];
    let mut off = 0u64;
    let mut first = None;
    let mut count = 0;
    while off < total {
        let len = (total - off).min(chunk.len() as u64) as usize;
        match local {
            Local::Bar { ep, map } => map.read_at(ep, off as usize, &mut chunk[..len])?,
            Local::Host => n
                .host_buffer()
                .expect("a host span")
                .read(off as usize, &mut chunk[..len])?,
        }
        if let Some((f, c)) = pattern::first_mismatch(seed, off, &chunk[..len]) {
            first.get_or_insert(f);
            count += c;
        }
        off += len as u64;
    }
    Ok(first.map(|f| (f, count)))
}
