//! `nic`: the igb engine (igb0) beyond the contract. In MAC loopback: a 4 KiB host →
//! host copy lands; a copy under 18 bytes is refused by name; control frames in host
//! buffers go round (an ARP request, not split, arrives whole in the slot's payload
//! buffer; a UDP datagram arrives split, its 42 header bytes in the header buffer); with
//! the unicast-only filter a broadcast is dropped while a unicast datagram still
//! arrives; with the NIC's memory decode turned off (VFIO zaps its BAR0 mapping) the
//! next copy fails as `igb_revoked`, not with a SIGBUS or a hang. Then opened for a
//! wire: the link comes up (STATUS.LU) and a DMA-engine copy is refused by name. Last,
//! 1 MiB copies with MTU 1500 and 9000 (jumbo frames) land, and say their rates.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use peerdma_engine::igb::{LinkMode, RxFrame, RxTarget, TxPayload};
use peerdma_engine::net::{arp_frame, parse_arp, parse_udp_headers, udp_headers, Arp, UdpEndpoint};
use peerdma_engine::{AttachedEngine, EngineOptions, Igb, IgbOptions, Span};
use peerdma_importer::iommufd::{Iommufd, Iova, Prot, UserBuffer};
use peerdma_testbed::manifest::Manifest;
use peerdma_testbed::pattern;
use serde_json::{json, Value};

use crate::rig::bdf_of;

/// The next received frame, waiting at most `within`.
fn next_frame(igb: &mut Igb, within: Duration) -> Result<Option<RxFrame>> {
    let start = Instant::now();
    loop {
        if let Some(f) = igb.poll_rx()? {
            return Ok(Some(f));
        }
        if start.elapsed() >= within {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Control frames in host buffers, in loopback.
fn control(igb: &mut Igb) -> Result<Value> {
    let me = UdpEndpoint {
        mac: igb.mac(),
        ip: Ipv4Addr::new(10, 255, 0, 1),
        port: 18521,
    };
    for _ in 0..3 {
        igb.post_rx(RxTarget::Host)?;
    }
    // ARP: not IPv4/UDP, so not split: the whole (padded) frame is the payload.
    igb.transmit(
        &arp_frame(&Arp::request(me.mac, me.ip, me.ip)),
        TxPayload::Host(&[]),
    )?;
    let f = next_frame(igb, Duration::from_secs(2))?.context("the ARP request never came back")?;
    let arp = parse_arp(f.payload.as_deref().unwrap_or_default())?;
    let arp_ok = f.headers.is_empty() && f.payload_len == 60 && arp.sender_mac == me.mac;
    // UDP: split, 42 header bytes apart from the payload.
    let data: Vec<u8> = (0..100u8).collect();
    igb.transmit(
        &udp_headers(&me, &me, 7, data.len()),
        TxPayload::Host(&data),
    )?;
    let f = next_frame(igb, Duration::from_secs(2))?.context("the UDP datagram never came back")?;
    let h = parse_udp_headers(&f.headers)?;
    let udp_ok = f.headers.len() == 42
        && h.ident == 7
        && h.payload_len == 100
        && f.payload.as_deref() == Some(&data[..]);
    // Unicast only: the broadcast is dropped, the next unicast datagram arrives.
    igb.set_unicast_only(true)?;
    igb.transmit(
        &arp_frame(&Arp::request(me.mac, me.ip, me.ip)),
        TxPayload::Host(&[]),
    )?;
    let dropped = next_frame(igb, Duration::from_millis(300))?.is_none();
    igb.transmit(
        &udp_headers(&me, &me, 8, data.len()),
        TxPayload::Host(&data),
    )?;
    let f = next_frame(igb, Duration::from_secs(2))?.context("the unicast datagram never came")?;
    let unicast_ok = parse_udp_headers(&f.headers)?.ident == 8;
    igb.set_unicast_only(false)?;
    igb.flush_tx(Duration::from_secs(2))?;
    if igb.rx_posted() != 0 {
        bail!("{} RX slots still posted", igb.rx_posted());
    }
    Ok(json!({
        "arp_ok": arp_ok, "udp_ok": udp_ok, "broadcast_dropped": dropped,
        "unicast_ok": unicast_ok,
        "ok": arp_ok && udp_ok && dropped && unicast_ok,
    }))
}

pub(crate) fn nic(m: &Manifest) -> Result<Value> {
    let bdf = bdf_of(m, "igb0")?;
    let iommufd = Iommufd::open()?;
    let mut nic = AttachedEngine::open(bdf, &iommufd)?;
    let len = 4096u64;
    let mut data = vec![0u8; len as usize];
    pattern::fill(0x1ab, 0, &mut data);
    let mut src = nic
        .ioas()
        .map_host(UserBuffer::new(len as usize)?, Iova::Guarded, Prot::Read)?;
    src.buffer().write(0, &data)?;
    let mut dst =
        nic.ioas()
            .map_host(UserBuffer::new(len as usize)?, Iova::Guarded, Prot::Write)?;
    let first = nic.copy(Span::start_of(&mut src), Span::start_of(&mut dst), len);
    let landed = first.is_ok() && dst.buffer().to_vec() == data;
    let short = nic.copy(Span::start_of(&mut src), Span::start_of(&mut dst), 17);
    let short_kind = short.as_ref().err().map(|e| e.kind());
    let control = control(nic.igb_mut().context("igb0 is not driven by Igb")?)
        .unwrap_or_else(|e| json!({"ok": false, "error": format!("{e:#}")}));
    // A source with nothing mapped behind it: the IOMMU refuses QEMU's igb the TX
    // buffer; QEMU then sends what its bounce buffer read (garbage) or drops the frame
    // (the RX ring stalls after the completion timeout). Either way the checked copy
    // fails naming the fault, once the kernel logs it: after a rate-limit window clear
    // of the `checked` scenario's faults just before.
    std::thread::sleep(super::contract::DMAR_LOG_WINDOW);
    let fault_kind = {
        let gone =
            nic.ioas()
                .map_host(UserBuffer::new(len as usize)?, Iova::Guarded, Prot::Read)?;
        let mut hole = super::contract::Unmapped {
            ioas: gone.ioas_id(),
            iova: gone.iova(),
            len,
        };
        gone.unmap()?;
        let r = nic.copy(Span::start_of(&mut hole), Span::start_of(&mut dst), len);
        r.err().map(|e| (e.kind(), e.to_string()))
    };
    nic.device().set_memory_decode(false)?;
    let revoked = nic.copy(Span::start_of(&mut src), Span::start_of(&mut dst), len);
    nic.device().set_memory_decode(true)?;
    let (revoked_kind, revoked_error) = match &revoked {
        Ok(r) => (None, Some(format!("the copy returned Ok ({r:?})"))),
        Err(e) => (Some(e.kind()), Some(e.to_string())),
    };
    drop((src, dst, nic));
    // A wire: the link comes up; a memcpy is refused.
    let opts = EngineOptions {
        igb: IgbOptions {
            link: LinkMode::Wire,
            ..IgbOptions::default()
        },
        ..EngineOptions::default()
    };
    let t = Instant::now();
    let (wire_link, wire_copy_kind, wire_error) =
        match AttachedEngine::open_with(bdf, &iommufd, &opts) {
            Ok(mut wire) => {
                let up = wire.igb_mut().is_some_and(|i| i.link_up());
                let mut s =
                    wire.ioas()
                        .map_host(UserBuffer::new(4096)?, Iova::Guarded, Prot::ReadWrite)?;
                let mut d =
                    wire.ioas()
                        .map_host(UserBuffer::new(4096)?, Iova::Guarded, Prot::ReadWrite)?;
                let r = wire.copy(Span::start_of(&mut s), Span::start_of(&mut d), 4096);
                (up, r.err().map(|e| e.kind()), None)
            }
            Err(e) => (false, None, Some(e.to_string())),
        };
    let wire_ms = t.elapsed().as_secs_f64() * 1e3;
    // Jumbo frames (MTU 9000: RCTL.LPE, RLPML, 9 KiB packet buffers, each payload cut
    // across three 4 KiB pages) against the standard MTU: 1 MiB host → host each.
    let mut rates = Vec::new();
    for mtu in [1500u16, 9000] {
        rates.push(
            timed_copy(bdf, &iommufd, mtu)
                .unwrap_or_else(|e| json!({"mtu": mtu, "ok": false, "error": format!("{e:#}")})),
        );
    }
    let jumbo_ok = rates.iter().all(|r| r["ok"] == true);
    Ok(json!({
        "ok": landed && short_kind == Some("igb_copy_too_short")
            && control["ok"] == true
            && fault_kind.as_ref().map(|f| f.0) == Some("not_landed")
            && revoked_kind == Some("igb_revoked")
            && wire_link && wire_copy_kind == Some("igb_unsupported")
            && jumbo_ok,
        "landed": landed,
        "first_error": first.err().map(|e| e.to_string()),
        "short_kind": short_kind,
        "short_error": short.err().map(|e| e.to_string()),
        "control": control,
        "tx_fault_kind": fault_kind.as_ref().map(|f| f.0),
        "tx_fault_error": fault_kind.as_ref().map(|f| f.1.clone()),
        "revoked_kind": revoked_kind,
        "revoked_error": revoked_error,
        "wire_link": wire_link,
        "wire_open_ms": wire_ms,
        "wire_copy_kind": wire_copy_kind,
        "wire_error": wire_error,
        "mtu_copies": rates,
    }))
}

/// A 1 MiB host → host copy through igb0 opened with `mtu`, checked, and its rate.
fn timed_copy(bdf: peerdma_host::Bdf, iommufd: &Iommufd, mtu: u16) -> Result<Value> {
    let opts = EngineOptions {
        igb: IgbOptions {
            mtu,
            ..IgbOptions::default()
        },
        ..EngineOptions::default()
    };
    let mut nic = AttachedEngine::open_with(bdf, iommufd, &opts)?;
    let len = 1usize << 20;
    let mut data = vec![0u8; len];
    pattern::fill(u64::from(mtu), 0, &mut data);
    let mut src = nic
        .ioas()
        .map_host(UserBuffer::new(len)?, Iova::Guarded, Prot::Read)?;
    src.buffer().write(0, &data)?;
    let mut dst = nic
        .ioas()
        .map_host(UserBuffer::new(len)?, Iova::Guarded, Prot::Write)?;
    let rep = nic.copy(
        Span::start_of(&mut src),
        Span::start_of(&mut dst),
        len as u64,
    )?;
    let landed = dst.buffer().to_vec() == data;
    Ok(json!({
        "mtu": mtu,
        "ok": landed,
        "datagrams": rep.transfers,
        "mb_per_s": len as f64 / rep.elapsed.as_secs_f64() / 1e6,
    }))
}
