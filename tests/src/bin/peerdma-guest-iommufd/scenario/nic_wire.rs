//! `nic-wire`: two VMs, an igb each, joined by the testbed's wire (`peerdma-testbed run
//! --devices igb --peer-devices igb`; not part of `all`). VM 1 (10.77.0.2) answers the
//! ARP request of VM 0 (10.77.0.1) only once it has posted RX slots whose payload
//! buffers are IOVAs of one host buffer in its IOAS (unicast-only filter on); VM 0 then
//! sends [`COUNT`] UDP datagrams whose payloads its NIC reads from IOVAs of its own
//! buffer; VM 1 checks every header (ident, length), then the bytes its NIC wrote, and
//! answers with a one-byte verdict datagram. No CPU copy of the payload on either side.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use peerdma_engine::igb::{LinkMode, RxFrame, RxTarget, TxPayload};
use peerdma_engine::net::{
    arp_frame, parse_arp, parse_udp_headers, udp_headers, Arp, ArpOp, MacAddr, UdpEndpoint,
};
use peerdma_engine::{AttachedEngine, EngineOptions, Igb, IgbOptions};
use peerdma_importer::iommufd::{Iommufd, Iova, Prot, UserBuffer};
use peerdma_testbed::manifest::Manifest;
use peerdma_testbed::pattern;
use serde_json::{json, Value};

use crate::rig::bdf_of;

/// Datagrams sent.
const COUNT: usize = 200;
/// Payload bytes of each.
const P: usize = 1472;
/// How long each phase may take (both VMs boot at once, give or take seconds).
const PHASE: Duration = Duration::from_secs(60);

fn ip(vm: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, vm + 1)
}

/// The next frame, within `within`.
fn next(igb: &mut Igb, within: Duration) -> Result<Option<RxFrame>> {
    let start = Instant::now();
    loop {
        if let Some(f) = igb.poll_rx()? {
            return Ok(Some(f));
        }
        if start.elapsed() >= within {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

pub(crate) fn nic_wire(m: &Manifest) -> Result<Value> {
    let vm: u8 = std::env::var("PEERDMA_VM_INDEX")
        .context("PEERDMA_VM_INDEX is not set: run with --peer-devices")?
        .parse()?;
    let iommufd = Iommufd::open()?;
    let opts = EngineOptions {
        igb: IgbOptions {
            link: LinkMode::Wire,
            ..IgbOptions::default()
        },
        ..EngineOptions::default()
    };
    let mut nic = AttachedEngine::open_with(bdf_of(m, "igb0")?, &iommufd, &opts)?;
    let buf = nic
        .ioas()
        .map_host(UserBuffer::new(COUNT * P)?, Iova::Guarded, Prot::ReadWrite)?;
    let seed = 0x77;
    let t = Instant::now();
    let igb = nic.igb_mut().context("igb0 is not driven by Igb")?;
    let me = UdpEndpoint {
        mac: igb.mac(),
        ip: ip(vm),
        port: 18521,
    };
    let out = if vm == 0 {
        let mut data = vec![0u8; COUNT * P];
        pattern::fill(seed, 0, &mut data);
        buf.buffer().write(0, &data)?;
        // ARP for the peer, every 200 ms.
        let peer_ip = ip(1);
        igb.post_rx(RxTarget::Host)?;
        let peer_mac: MacAddr = loop {
            if t.elapsed() > PHASE {
                bail!("{peer_ip} never answered ARP within {PHASE:?}");
            }
            igb.transmit(
                &arp_frame(&Arp::request(me.mac, me.ip, peer_ip)),
                TxPayload::Host(&[]),
            )?;
            if let Some(f) = next(igb, Duration::from_millis(200))? {
                igb.post_rx(RxTarget::Host)?;
                if let Ok(a) = parse_arp(f.payload.as_deref().unwrap_or_default()) {
                    if a.op == ArpOp::Reply && a.sender_ip == peer_ip {
                        break a.sender_mac;
                    }
                }
            }
        };
        let peer = UdpEndpoint {
            mac: peer_mac,
            ip: peer_ip,
            port: 18521,
        };
        let start = Instant::now();
        for k in 0..COUNT {
            igb.transmit(
                &udp_headers(&me, &peer, k as u16, P),
                TxPayload::Iova {
                    iova: buf.iova() + (k * P) as u64,
                    len: P as u32,
                },
            )?;
        }
        igb.flush_tx(Duration::from_secs(5))?;
        let sent_s = start.elapsed().as_secs_f64();
        // The verdict: one datagram, payload [1] for every byte right.
        let verdict = loop {
            let f = next(igb, PHASE)?.context("no verdict from the receiver")?;
            igb.post_rx(RxTarget::Host)?;
            if let Ok(h) = parse_udp_headers(&f.headers) {
                if h.src.ip == peer_ip {
                    break f.payload.unwrap_or_default().first().copied() == Some(1);
                }
            }
        };
        json!({"role": "sender", "peer_mac": peer_mac.to_string(), "sent_s": sent_s,
               "verdict": verdict, "ok": verdict})
    } else {
        // Receiver: one host slot at a time until the ARP request for this address.
        let asker = loop {
            if t.elapsed() > PHASE {
                bail!("no ARP request for {} within {PHASE:?}", me.ip);
            }
            igb.post_rx(RxTarget::Host)?;
            let Some(f) = next(igb, PHASE)? else { continue };
            if let Ok(a) = parse_arp(f.payload.as_deref().unwrap_or_default()) {
                if a.op == ArpOp::Request && a.target_ip == me.ip {
                    break a;
                }
            }
        };
        // Only unicast to this MAC from here; every data datagram's slot points into the
        // buffer; then the answer.
        igb.set_unicast_only(true)?;
        for k in 0..COUNT {
            igb.post_rx(RxTarget::Iova {
                iova: buf.iova() + (k * P) as u64,
                len: P as u32,
            })?;
        }
        igb.transmit(&arp_frame(&asker.reply_from(me.mac)), TxPayload::Host(&[]))?;
        let start = Instant::now();
        let mut bad = None;
        for k in 0..COUNT {
            let f = next(igb, PHASE)?.with_context(|| format!("datagram {k} never came"))?;
            let h = parse_udp_headers(&f.headers)?;
            if bad.is_none() && (h.ident != k as u16 || h.payload_len != P || f.payload_len != P) {
                bad = Some(format!(
                    "datagram {k}: ident {}, {} bytes",
                    h.ident, f.payload_len
                ));
            }
        }
        let recv_s = start.elapsed().as_secs_f64();
        let got = buf.buffer().to_vec();
        let mismatch = pattern::first_mismatch(seed, 0, &got[..COUNT * P]);
        let ok = bad.is_none() && mismatch.is_none();
        igb.set_unicast_only(false)?;
        let peer = UdpEndpoint {
            mac: asker.sender_mac,
            ip: asker.sender_ip,
            port: 18521,
        };
        let answer = [u8::from(ok); 18];
        igb.transmit(
            &udp_headers(&me, &peer, 0, answer.len()),
            TxPayload::Host(&answer),
        )?;
        igb.flush_tx(Duration::from_secs(5))?;
        json!({"role": "receiver", "recv_s": recv_s, "bad": bad,
               "mismatch": mismatch.map(|(at, n)| format!("{n} bytes from {at:#x}")),
               "bytes": COUNT * P, "ok": ok})
    };
    Ok(out)
}
