//! The NIC ends: `--serve --engine nic DST` and `SRC udp://HOST:PORT`, each through a
//! user-space igb NIC named by `--via` (its DMA reads or writes the BAR), or a kernel
//! socket without it (host memory, NOT peer-to-peer). The framing: docs/nic.md.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use peerdma_copy::nic::{self, NicReport, SendRequest, ServeRequest};
use peerdma_copy::LocalSpec;
use peerdma_copy::{Progress, Target};
use peerdma_tools::failure::usage;
use peerdma_tools::size::human;

use crate::advice::with_advice;
use crate::bar::Bar;
use crate::flags::{stream_end, Cli, Engine};
use crate::report::rate;

/// A BAR end needs the NIC that DMAs it: a kernel socket moves host memory only.
fn needs_nic(cli: &Cli, end: &LocalSpec, what: &str) -> Result<()> {
    if matches!(end, LocalSpec::Bar(_)) && cli.via.is_none() {
        return Err(usage(
            "nic_needs_via",
            format!(
                "{what} is a BAR: a kernel socket moves host memory only, so a BAR end of a \
                 NIC stream needs the NIC whose DMA reads or writes it"
            ),
            Some("name the igb NIC bound to vfio-pci with --via BDF (or use host)"),
        ));
    }
    Ok(())
}

fn print(cli: &Cli, r: &NicReport) -> Result<()> {
    if cli.json {
        if !r.peer_to_peer {
            eprintln!("p2pcopy: {}", r.peer_to_peer_why);
        }
        println!("{}", serde_json::to_string(r)?);
    } else if !cli.quiet {
        let sender = r.role == "sender";
        println!(
            "{} {} in {} UDP datagrams of {} bytes in {:.3} s: {}, {:.0} datagrams/s",
            if sender { "sent" } else { "received" },
            human(r.bytes),
            r.datagrams,
            r.payload_size,
            r.seconds,
            rate(r.gbps),
            r.frames_per_s,
        );
        let (from, to) = if sender {
            (r.local.clone(), format!("{} at udp://{}", r.remote, r.peer))
        } else {
            (format!("{} at udp://{}", r.remote, r.peer), r.local.clone())
        };
        println!("from: {from}");
        println!("to: {to}");
        println!("verdict: {} (seed {:#x})", r.verdict, r.seed);
        if r.peer_to_peer_why.contains(&r.device) {
            println!("this side: {}", r.peer_to_peer_why);
        } else {
            println!("this side: {}: {}", r.device, r.peer_to_peer_why);
        }
    }
    Ok(())
}

fn progress(bar: &mut Bar) -> impl FnMut(u64, u64) + '_ {
    |done, total| bar.update(Progress { done, total })
}

pub(crate) fn serve(cli: &Cli, dst: &Target) -> Result<()> {
    let dst = stream_end(cli, dst, false, "a NIC stream")?;
    needs_nic(cli, &dst, "the destination")?;
    let listen = if cli.given.contains(&"listen") {
        cli.listen
    } else if cli.via.is_some() {
        return Err(usage(
            "nic_needs_address",
            "a NIC receiver has no address of its own: the kernel does not drive it",
            Some("give its IPv4 address on the wire with --listen ADDR[:PORT]"),
        ));
    } else {
        SocketAddr::from(([0, 0, 0, 0], nic::DEFAULT_PORT))
    };
    let mut req = ServeRequest::new(dst, listen);
    req.nic = cli.via;
    req.mtu = cli.mtu;
    req.access = cli.access.into();
    // --timeout given bounds the wait for a sender too; by default it has no end.
    req.wait = cli
        .given
        .contains(&"timeout")
        .then(|| Duration::from_secs(cli.timeout));
    req.timeout = Duration::from_secs(cli.timeout);
    #[cfg(feature = "testing")]
    {
        req.test_revoke_after = test_revoke_after(cli);
    }
    let json = cli.json;
    let report = nic::serve(&req, &mut |addr| {
        if !json {
            eprintln!("p2pcopy: listening on udp://{addr}");
            let _ = std::io::stderr().flush();
        }
    })
    .map_err(with_advice)?;
    print(cli, &report)
}

pub(crate) fn send(cli: &Cli, src: &Target, peer: &str) -> Result<()> {
    if !matches!(cli.engine, Engine::Nic | Engine::Auto) {
        return Err(usage(
            "engine_not_applicable",
            format!("{peer} is a receiver over UDP: a NIC moves the bytes, not --engine"),
            Some("leave --engine out (or give --engine nic)"),
        ));
    }
    let src = stream_end(cli, src, true, "a NIC stream")?;
    needs_nic(cli, &src, "the source")?;
    let peer = nic::parse_addr(peer).map_err(|e| with_advice(e.into()))?;
    if cli.via.is_some() && peer.ip().is_loopback() {
        return Err(usage(
            "nic_loopback_peer",
            format!(
                "{peer} is a loopback address: the kernel's lo, which a NIC's wire never reaches"
            ),
            Some("give the receiver's address on the NIC's link (or leave --via out for lo)"),
        ));
    }
    let bind = match (&cli.bind, cli.via) {
        (Some(b), _) => {
            let bind = nic::parse_addr(b).map_err(|e| with_advice(e.into()))?;
            if bind.ip() == peer.ip() {
                return Err(usage(
                    "nic_same_address",
                    format!("--bind {} is the receiver's own address", bind.ip()),
                    Some("give this end's own IPv4 address on the link"),
                ));
            }
            Some(bind)
        }
        (None, Some(nic)) => {
            return Err(usage(
                "nic_needs_address",
                format!("the NIC {nic} has no address of its own: the kernel does not drive it"),
                Some("give its IPv4 address on the wire with --bind ADDR"),
            ))
        }
        (None, None) => None,
    };
    let seed = *cli
        .used_seed
        .get_or_init(|| cli.seed.unwrap_or_else(crate::fresh_seed));
    let mut req = SendRequest::new(src, peer, seed);
    req.bind = bind;
    req.nic = cli.via;
    req.size = cli.size;
    req.mtu = cli.mtu;
    // Even: a NIC receiver places datagrams at even offsets (82576 RX address bit 0).
    req.payload = nic::plan::max_payload(cli.mtu) & !1;
    req.access = cli.access.into();
    req.timeout = Duration::from_secs(cli.timeout);
    #[cfg(feature = "testing")]
    {
        req.test_revoke_after = test_revoke_after(cli);
    }
    let mut bar = Bar::new(cli);
    let report = nic::send(&req, &mut progress(&mut bar));
    bar.finish();
    print(cli, &report.map_err(with_advice)?)
}

/// `--test-revoke-after-bytes N` on a NIC side: this side's BAR revoked after the
/// datagram holding byte N (at the largest payload the MTU allows).
#[cfg(feature = "testing")]
fn test_revoke_after(cli: &Cli) -> Option<u64> {
    let payload = u64::from(nic::plan::max_payload(cli.mtu)).max(1);
    cli.test_revoke_after_bytes.map(|b| b / payload)
}
