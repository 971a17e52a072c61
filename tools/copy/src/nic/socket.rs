//! The kernel-socket IO of both sides: a connected [`UdpSocket`] on whatever NIC the
//! kernel routes to the peer, the bytes in host memory (the source filled with the
//! pattern of the seed, the destination poisoned with its complement and checked by
//! the CPU after). NOT peer-to-peer: the report says so.
//!
//! The kernel picks the IPv4 idents (on a connected socket, one more per datagram:
//! `ip_select_ident_segs`, include/net/ip.h) and hides them from a receiving socket,
//! so this side's receiver relies on the count, the lengths and the full check.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::error::NicError;
use super::plan::Plan;
use super::receiver::{Checked, Receiver, ReceiverAction, ReceiverConfig};
use super::sender::{Sender, SenderAction, SenderConfig};
use super::wire::Message;
use super::{
    rates, stream_id, LocalSpec, NicReport, SendRequest, ServeRequest, HOST_DEFAULT_SIZE,
    SOCKET_NOT_P2P, SOCKET_WINDOW,
};
use crate::{pattern, CopyError};

/// What a kernel-socket end's memory is, in words.
const HOST_WHAT: &str = "host memory via kernel socket (NOT peer-to-peer)";

/// How often START and END go out again.
const RESEND: Duration = Duration::from_secs(1);

/// The longest a receive call waits before the state machine is asked again.
const MAX_WAIT: Duration = Duration::from_millis(500);

fn host_only(spec: &LocalSpec, side: &str) -> Result<(), NicError> {
    match spec {
        LocalSpec::Host => Ok(()),
        LocalSpec::Bar(b) => Err(NicError::Unavailable {
            why: format!(
                "the {side} {} BAR{} needs a NIC device: a kernel socket moves host memory only",
                b.bdf,
                b.bar
                    .map_or_else(|| "(default)".to_string(), |i| i.to_string())
            ),
            fix: "name the NIC (an igb bound to vfio-pci) that DMAs the BAR, or use host \
                  memory on this end"
                .into(),
        }),
    }
}

/// Sends over a kernel socket (see [`super::send`]).
pub(super) fn send(
    req: &SendRequest,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<NicReport, CopyError> {
    host_only(&req.src, "source")?;
    let size = req.size.unwrap_or(HOST_DEFAULT_SIZE);
    let plan = Plan::new(size, req.payload, req.mtu).map_err(NicError::from)?;
    let bind = req.bind.unwrap_or(match req.peer {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    });
    let sock = UdpSocket::bind(bind)
        .map_err(|e| NicError::io(format!("binding a UDP socket to {bind}"), &e))?;
    sock.connect(req.peer)
        .map_err(|e| NicError::io(format!("connecting a UDP socket to {}", req.peer), &e))?;
    let mut src = host_memory(size)?;
    pattern::fill(req.seed, 0, &mut src);
    let peer = req.peer.to_string();
    let mut s = Sender::new(
        SenderConfig {
            stream: stream_id(req.seed),
            plan,
            seed: req.seed,
            what: HOST_WHAT.into(),
            peer: peer.clone(),
            ident: 0,
            answer_timeout: req.timeout,
            stall: req.stall,
            resend: RESEND,
        },
        Instant::now(),
    );
    let mut buf = [0u8; 2048];
    let every = (plan.count() / 100).max(1);
    let outcome = loop {
        match s.poll(Instant::now()) {
            Some(SenderAction::Control { msg, .. }) => {
                // A START towards a port nobody listens on yet draws an ICMP port
                // unreachable, which a later send reports: START goes out again anyway.
                if let Err(e) = sock.send(&msg.encode()) {
                    if e.kind() != io::ErrorKind::ConnectionRefused {
                        let e = NicError::io(format!("sending {} to {peer}", msg.name()), &e);
                        let _ = s.abort(&e.what());
                        return Err(e.into());
                    }
                }
            }
            Some(SenderAction::Data { index, .. }) => {
                let d = plan
                    .datagram(index)
                    .expect("the sender sends only planned datagrams");
                let bytes = &src[d.offset as usize..][..d.len as usize];
                if let Err(e) = sock.send(bytes) {
                    let doing = format!("sending datagram {index}");
                    let e = if e.kind() == io::ErrorKind::ConnectionRefused {
                        NicError::PeerGone {
                            peer: peer.clone(),
                            during: doing,
                        }
                    } else {
                        NicError::io(format!("{doing} to {peer}"), &e)
                    };
                    if let SenderAction::Control { msg, .. } = s.abort(&e.what()) {
                        let _ = sock.send(&msg.encode());
                    }
                    return Err(e.into());
                }
                if index % every == 0 || index + 1 == plan.count() {
                    progress(d.offset + u64::from(d.len), size);
                }
            }
            Some(SenderAction::Finished(r)) => break r,
            None => match recv_until(&sock, s.deadline(), &mut buf) {
                Ok(Some(n)) => {
                    if let Ok(m) = Message::decode(&buf[..n]) {
                        s.on_message(Instant::now(), &m);
                    }
                }
                Ok(None) => {}
                // Port unreachable for an earlier datagram: before READY the receiver
                // may not be up yet (START goes out again); after, it is gone.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    if !s.is_starting() {
                        let _ = s.abort("port unreachable");
                        return Err(NicError::PeerGone {
                            peer,
                            during: "waiting for its answer".into(),
                        }
                        .into());
                    }
                }
                Err(e) => return Err(NicError::io(format!("receiving from {peer}"), &e).into()),
            },
        }
    }?;
    let (gbps, frames_per_s) = rates(size, plan.count(), outcome.seconds);
    Ok(NicReport {
        role: "sender",
        engine: "nic",
        local: format!("{size:#x} bytes of {HOST_WHAT}"),
        remote: outcome.remote,
        peer,
        device: device(&sock, req.peer.ip()),
        peer_to_peer: false,
        peer_to_peer_why: SOCKET_NOT_P2P.into(),
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

/// The window a kernel-socket receiver can offer: [`SOCKET_WINDOW`] datagrams, or fewer
/// where its receive buffer holds fewer. The buffer is raised first to what the kernel
/// allows (`SO_RCVBUFFORCE` as root, else `SO_RCVBUF` up to net.core.rmem_max): a
/// datagram past a full buffer is dropped by the kernel (UDP RcvbufErrors) and the
/// stream fails, as it did under load with the default 208 KiB on virtio-net.
/// `mtu` sizes what one datagram costs the buffer: its skb's truesize, taken as the
/// frame plus a page (a virtio-net receive buffer with mergeable buffers takes whole
/// pages).
fn window_for(sock: &UdpSocket, mtu: u32) -> u32 {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    let truesize = (mtu as usize + 4096).next_multiple_of(512);
    let want = truesize * SOCKET_WINDOW as usize * 2;
    if setsockopt(sock, sockopt::RcvBufForce, &want).is_err() {
        let _ = setsockopt(sock, sockopt::RcvBuf, &want);
    }
    // The kernel reports (and accounts against) twice what was set.
    let have = getsockopt(sock, sockopt::RcvBuf).unwrap_or(212_992);
    let fits = (have / truesize) as u32;
    fits.clamp(4, SOCKET_WINDOW)
}

/// Receives over a kernel socket (see [`super::serve`]).
pub(super) fn serve(
    req: &ServeRequest,
    on_listen: &mut dyn FnMut(SocketAddr),
) -> Result<NicReport, CopyError> {
    host_only(&req.dst, "destination")?;
    let sock = UdpSocket::bind(req.listen)
        .map_err(|e| NicError::io(format!("binding a UDP socket to {}", req.listen), &e))?;
    let listen = sock.local_addr().unwrap_or(req.listen);
    let window = req
        .window
        .unwrap_or_else(|| window_for(&sock, req.mtu))
        .max(1);
    on_listen(listen);
    let mut r = Receiver::new(
        ReceiverConfig {
            window,
            what: HOST_WHAT.into(),
            room: req.max_host_size,
            even_offsets: false,
            mtu: req.mtu,
            listen: listen.to_string(),
            wait: req.wait,
            stall: req.stall,
            answer_timeout: req.timeout,
            linger: req.linger,
        },
        Instant::now(),
    );
    let mut dst: Vec<u8> = Vec::new();
    let mut seed = 0;
    let mut buf = vec![0u8; 1 << 16];
    let mut reply_to: Option<SocketAddr> = None;
    let mut connected = false;
    let mut mismatch = None;
    let outcome = loop {
        match r.poll(Instant::now()) {
            Some(ReceiverAction::Prepare { plan, seed: s }) => {
                seed = s;
                dst = match host_memory(plan.total()) {
                    Ok(d) => d,
                    Err(e) => {
                        if let (Some(ReceiverAction::Control(m)), Some(to)) =
                            (r.abort(&e.what()), reply_to)
                        {
                            let _ = sock.send_to(&m.encode(), to);
                        }
                        return Err(e.into());
                    }
                };
                pattern::fill_complement(seed, 0, &mut dst);
            }
            Some(ReceiverAction::PostSlots { .. } | ReceiverAction::DataPhaseOver) => {}
            Some(ReceiverAction::Control(msg)) => {
                if let Some(to) = reply_to {
                    // The sender gone (ICMP port unreachable) shows as its silence.
                    let _ = sock.send_to(&msg.encode(), to);
                }
            }
            Some(ReceiverAction::Check) => {
                mismatch = pattern::first_mismatch(seed, 0, &dst);
                r.on_checked(
                    Instant::now(),
                    &Checked {
                        verified: dst.len() as u64,
                        mismatch,
                        read_by: "the CPU reading the host buffer the socket received into".into(),
                    },
                );
            }
            Some(ReceiverAction::Finished(res)) => break res,
            None => {
                let got = recv_from_until(&sock, r.deadline(), &mut buf)
                    .map_err(|e| NicError::io(format!("receiving on {listen}"), &e))?;
                let Some((n, from)) = got else { continue };
                let now = Instant::now();
                let bytes = &buf[..n];
                match (r.stream(), Message::decode(bytes)) {
                    (None, Ok(m)) => {
                        reply_to = Some(from);
                        r.on_control(now, &m, None, &from.to_string());
                        if r.stream().is_some() && !connected {
                            // From now on only this sender's datagrams arrive here.
                            sock.connect(from).map_err(|e| {
                                NicError::io(format!("connecting to the sender {from}"), &e)
                            })?;
                            connected = true;
                        }
                    }
                    (Some(stream), Ok(m)) if m.stream() == stream => {
                        r.on_control(now, &m, None, &from.to_string())
                    }
                    (Some(_), _) => {
                        if let Some(d) = r.next_data() {
                            if n == d.len as usize {
                                dst[d.offset as usize..][..n].copy_from_slice(bytes);
                            }
                            r.on_data(now, n, None);
                        }
                    }
                    // Before START, what is no control message is not ours.
                    (None, Err(_)) => {}
                }
            }
        }
    }?;
    let start = outcome.start;
    if !outcome.verdict.ok {
        let (first, count) = mismatch.unwrap_or((dst.len() as u64, 0));
        let detail = (first < dst.len() as u64)
            .then(|| crate::verify::pattern_detail(seed, first, &dst[first as usize..]));
        return Err(CopyError::Mismatch {
            first,
            count,
            detail,
        });
    }
    let (gbps, frames_per_s) = rates(start.total, start.count, outcome.seconds);
    let peer_ip = reply_to.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    Ok(NicReport {
        role: "receiver",
        engine: "nic",
        local: format!("{:#x} bytes of {HOST_WHAT}", start.total),
        remote: start.what,
        peer: outcome.peer,
        device: device(&sock, peer_ip),
        peer_to_peer: false,
        peer_to_peer_why: SOCKET_NOT_P2P.into(),
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

/// `size` zeroed bytes of host memory, or the error that says there is not that much.
fn host_memory(size: u64) -> Result<Vec<u8>, NicError> {
    let fail = || NicError::NoMemory { bytes: size };
    let n = usize::try_from(size).map_err(|_| fail())?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| fail())?;
    v.resize(n, 0);
    Ok(v)
}

/// How long to wait for the next datagram: until `deadline`, at most [`MAX_WAIT`], at
/// least 1 ms.
fn wait_for(deadline: Option<Instant>) -> Duration {
    deadline
        .map_or(MAX_WAIT, |d| d.saturating_duration_since(Instant::now()))
        .clamp(Duration::from_millis(1), MAX_WAIT)
}

fn quiet(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// One datagram from the connected peer, or `None` by the deadline (an ICMP port
/// unreachable for an earlier send is `ConnectionRefused`).
fn recv_until(
    sock: &UdpSocket,
    deadline: Option<Instant>,
    buf: &mut [u8],
) -> io::Result<Option<usize>> {
    sock.set_read_timeout(Some(wait_for(deadline)))?;
    match sock.recv(buf) {
        Ok(n) => Ok(Some(n)),
        Err(e) if quiet(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// [`recv_until`] with the sender's address.
fn recv_from_until(
    sock: &UdpSocket,
    deadline: Option<Instant>,
    buf: &mut [u8],
) -> io::Result<Option<(usize, SocketAddr)>> {
    sock.set_read_timeout(Some(wait_for(deadline)))?;
    match sock.recv_from(buf) {
        Ok(got) => Ok(Some(got)),
        // A sender gone shows as its silence.
        Err(e) if quiet(&e) || e.kind() == io::ErrorKind::ConnectionRefused => Ok(None),
        Err(e) => Err(e),
    }
}

/// "kernel socket on IFACE": the interface the kernel routes `peer` through.
fn device(sock: &UdpSocket, peer: IpAddr) -> String {
    let iface = match peer {
        IpAddr::V4(v4) if v4.is_loopback() => Some("lo".to_string()),
        IpAddr::V4(v4) => std::fs::read_to_string("/proc/net/route")
            .ok()
            .and_then(|t| route_iface(&t, v4)),
        IpAddr::V6(v6) if v6.is_loopback() => Some("lo".to_string()),
        IpAddr::V6(_) => None,
    };
    match iface {
        Some(i) => format!("kernel socket on {i}"),
        None => format!(
            "kernel socket on {}",
            sock.local_addr()
                .map_or_else(|_| "an unknown interface".into(), |a| a.ip().to_string())
        ),
    }
}

/// The interface of the longest-prefix route to `dst` in `/proc/net/route`'s text
/// (fields: Iface Destination Gateway Flags RefCnt Use Metric Mask ...; addresses in
/// hex, in the kernel's byte order, which is the address's bytes read as a
/// little-endian number on x86). Lower metric wins a tie.
fn route_iface(table: &str, dst: Ipv4Addr) -> Option<String> {
    let want = u32::from_ne_bytes(dst.octets());
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, net, flags, metric, mask) = (
                *f.first()?,
                u32::from_str_radix(f.get(1)?, 16).ok()?,
                u32::from_str_radix(f.get(3)?, 16).ok()?,
                f.get(6)?.parse::<u32>().ok()?,
                u32::from_str_radix(f.get(7)?, 16).ok()?,
            );
            // RTF_UP.
            (flags & 1 != 0 && want & mask == net).then(|| (mask.count_ones(), metric, iface))
        })
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, _, iface)| iface.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nic::wire::{End, Start};
    use crate::nic::{send, serve, NicReport};
    use std::sync::mpsc;

    fn localhost() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    }

    /// Serves on 127.0.0.1 on a thread: its address, and its outcome.
    fn serving(
        req: ServeRequest,
    ) -> (
        SocketAddr,
        std::thread::JoinHandle<Result<NicReport, CopyError>>,
    ) {
        let (tx, rx) = mpsc::channel();
        let t = std::thread::spawn(move || serve(&req, &mut |a| tx.send(a).unwrap()));
        (rx.recv().unwrap(), t)
    }

    fn receiver() -> ServeRequest {
        ServeRequest {
            wait: Some(Duration::from_secs(30)),
            stall: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
            linger: Duration::from_millis(300),
            ..ServeRequest::new(LocalSpec::Host, localhost())
        }
    }

    #[test]
    fn ten_thousand_datagrams_over_loopback_are_checked_by_the_receiver() {
        let (addr, t) = serving(receiver());
        let mut req = SendRequest::new(LocalSpec::Host, addr, 0x5eed);
        // 10^4 datagrams, the last one short.
        req.size = Some(9_999 * 1472 + 100);
        req.timeout = Duration::from_secs(10);
        let mut last = 0;
        let sent = send(&req, &mut |done, _| last = done).unwrap();
        let got = t.join().unwrap().unwrap();
        assert_eq!(last, req.size.unwrap());
        for r in [&sent, &got] {
            assert_eq!(r.datagrams, 10_000);
            assert_eq!(r.bytes, 9_999 * 1472 + 100);
            assert_eq!(r.payload_size, 1472);
            assert!(r.verified, "{r:?}");
            assert!(!r.peer_to_peer);
            assert_eq!(r.device, "kernel socket on lo");
            assert!(r.peer_to_peer_why.starts_with("NOT peer-to-peer"));
        }
        assert_eq!(sent.role, "sender");
        assert_eq!(got.role, "receiver");
        assert!(
            got.verdict.contains("all 14718628 bytes match"),
            "{}",
            got.verdict
        );
        assert_eq!(sent.remote, HOST_WHAT);
        assert_eq!(got.remote, HOST_WHAT);
        assert!(sent.gbps > 0.0 && sent.frames_per_s > 0.0, "{sent:?}");
        let json = serde_json::to_value(&sent).unwrap();
        assert_eq!(json["engine"], "nic");
    }

    #[test]
    fn a_silent_peer_fails_within_the_timeout() {
        let silent = UdpSocket::bind(localhost()).unwrap();
        let mut req = SendRequest::new(LocalSpec::Host, silent.local_addr().unwrap(), 1);
        req.size = Some(4096);
        req.timeout = Duration::from_secs(2);
        let t0 = Instant::now();
        let e = send(&req, &mut |_, _| {}).unwrap_err();
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(4),
            "{took:?}"
        );
        assert_eq!(
            e.what(),
            format!(
                "peer {} never answered within 2 s",
                silent.local_addr().unwrap()
            )
        );
        assert_eq!(e.kind(), "nic_no_answer");
        // It tried once a second, and told the peer it gave up.
        let mut buf = [0u8; 2048];
        silent.set_nonblocking(true).unwrap();
        let mut kinds = Vec::new();
        while let Ok(n) = silent.recv(&mut buf) {
            kinds.push(Message::decode(&buf[..n]).unwrap().name());
        }
        assert_eq!(kinds, ["START", "START", "ABORT"]);
    }

    #[test]
    fn nobody_listening_is_the_same_bounded_silence() {
        // A port with no socket: ICMP port unreachable, which changes nothing.
        let gone = UdpSocket::bind(localhost()).unwrap().local_addr().unwrap();
        let mut req = SendRequest::new(LocalSpec::Host, gone, 1);
        req.size = Some(4096);
        req.timeout = Duration::from_secs(1);
        let e = send(&req, &mut |_, _| {}).unwrap_err();
        assert_eq!(e.kind(), "nic_no_answer", "{e}");
    }

    /// A hand-made sender: START, READY back, `data` datagrams of the 10, then END
    /// (or nothing): what the receiver says, and what it sent back.
    fn short_stream(data: u64, end: bool) -> (CopyError, Vec<&'static str>) {
        let (addr, t) = serving(ServeRequest {
            stall: Duration::from_secs(1),
            ..receiver()
        });
        let s = UdpSocket::bind(localhost()).unwrap();
        s.connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let start = Message::Start(Start {
            stream: 77,
            total: 10_000,
            payload: 1000,
            count: 10,
            seed: 3,
            what: "a test".into(),
        });
        s.send(&start.encode()).unwrap();
        let mut buf = [0u8; 2048];
        let n = s.recv(&mut buf).unwrap();
        assert_eq!(Message::decode(&buf[..n]).unwrap().name(), "READY");
        let mut bytes = vec![0u8; 10_000];
        pattern::fill(3, 0, &mut bytes);
        for k in 0..data as usize {
            s.send(&bytes[k * 1000..][..1000]).unwrap();
        }
        if end {
            s.send(
                &Message::End(End {
                    stream: 77,
                    sent: 10,
                    bytes: 10_000,
                })
                .encode(),
            )
            .unwrap();
        }
        let e = t.join().unwrap().unwrap_err();
        let mut back = Vec::new();
        s.set_nonblocking(true).unwrap();
        while let Ok(n) = s.recv(&mut buf) {
            back.push(Message::decode(&buf[..n]).unwrap().name());
        }
        (e, back)
    }

    #[test]
    fn a_receiver_that_gets_a_short_stream_says_so() {
        let (e, back) = short_stream(4, true);
        assert_eq!(
            e.what(),
            "the sender says it sent 10 of 10 datagrams, 4 arrived"
        );
        assert_eq!(back.last(), Some(&"ABORT"));
        let (e, back) = short_stream(4, false);
        assert!(
            e.what()
                .starts_with("received 4 of 10 datagrams, then nothing for 1 s"),
            "{e}"
        );
        assert_eq!(back.last(), Some(&"ABORT"));
    }

    #[test]
    fn a_receiver_that_vanishes_mid_stream_is_named() {
        // A hand-made receiver: READY with a large window, then it closes its socket.
        let r = UdpSocket::bind(localhost()).unwrap();
        let addr = r.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let (n, from) = r.recv_from(&mut buf).unwrap();
            let Message::Start(s) = Message::decode(&buf[..n]).unwrap() else {
                panic!("not START")
            };
            let ready = Message::Ready(crate::nic::wire::Ready {
                stream: s.stream,
                // No window to speak of: the sender sends on past the close.
                window: u32::MAX,
                what: "gone soon".into(),
            });
            r.send_to(&ready.encode(), from).unwrap();
        });
        let mut req = SendRequest::new(LocalSpec::Host, addr, 1);
        req.size = Some(16 << 20);
        req.stall = Duration::from_secs(5);
        let t0 = Instant::now();
        let e = send(&req, &mut |_, _| {}).unwrap_err();
        t.join().unwrap();
        // The port unreachable for a datagram tells at once, not the stall.
        assert_eq!(e.kind(), "nic_peer_gone", "{e}");
        assert!(e.what().contains("answered \"port unreachable\""), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn more_host_memory_than_there_is_is_an_error_not_an_abort() {
        let mut req = SendRequest::new(LocalSpec::Host, localhost(), 1);
        req.size = Some(u64::MAX / 2);
        let e = send(&req, &mut |_, _| {}).unwrap_err();
        assert_eq!(e.kind(), "nic_no_memory", "{e}");
    }

    #[test]
    fn a_bar_end_needs_a_nic() {
        let spec = crate::EndpointSpec {
            bdf: "00:04.0".parse().unwrap(),
            bar: Some(2),
            offset: 0,
        };
        let req = SendRequest::new(LocalSpec::Bar(spec), localhost(), 1);
        let e = send(&req, &mut |_, _| {}).unwrap_err();
        assert_eq!(e.kind(), "nic_unavailable");
        assert!(
            e.what().contains("0000:00:04.0 BAR2 needs a NIC device"),
            "{e}"
        );
    }

    #[test]
    fn the_route_table_names_the_interface() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                     eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
                     eth1\t004D0A0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth2\t004D0A0A\t00000000\t0001\t0\t0\t50\t00FFFFFF\t0\t0\t0\n";
        if cfg!(target_endian = "little") {
            assert_eq!(
                route_iface(table, Ipv4Addr::new(10, 10, 77, 1)).as_deref(),
                Some("eth1")
            );
            assert_eq!(
                route_iface(table, Ipv4Addr::new(10, 0, 0, 9)).as_deref(),
                Some("eth0")
            );
            assert_eq!(
                route_iface(table, Ipv4Addr::new(8, 8, 8, 8)).as_deref(),
                Some("eth0")
            );
        }
        assert_eq!(route_iface("Iface\n", Ipv4Addr::new(8, 8, 8, 8)), None);
    }
}
