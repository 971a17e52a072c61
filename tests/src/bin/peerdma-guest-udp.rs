//! Guest side of the wire suite: a kernel-socket UDP sender and receiver.
//!
//! Usage (in the testbed):
//!   `peerdma-guest-udp send LOCAL_IP PEER_IP:PORT COUNT SIZE`
//!   `peerdma-guest-udp recv LOCAL_IP:PORT COUNT SIZE TIMEOUT_S`
//!
//! The sender binds LOCAL_IP, connects to the peer (so Linux numbers the IPv4 idents of
//! its datagrams one by one), sends `PROBE` every 200 ms until the receiver answers
//! `READY` (60 s at most), then COUNT datagrams of SIZE bytes
//! ([`peerdma_testbed::pair::datagram_payload`]). The receiver answers each `PROBE` and
//! checks every data datagram's size and content; it exits 0 once it has all COUNT
//! distinct ones, 1 at TIMEOUT_S without them. Each prints one JSON line.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use peerdma_testbed::pair::datagram_payload;

const PROBE: &[u8] = b"PROBE";
const READY: &[u8] = b"READY";

/// The guest's receive buffer default: 32 MiB, so that a whole burst of datagrams waits
/// in the socket rather than being dropped while the receiver is descheduled (the
/// kernel's default is about 208 KiB; 4 MiB lost 67 of 4000 full-size datagrams on a
/// loaded host: each counts with its skb's truesize, about twice its payload).
const RCVBUF: &str = "33554432";

fn send(local: &str, peer: &str, count: u64, size: usize) -> Result<serde_json::Value> {
    let peer: SocketAddr = peer.parse().with_context(|| format!("peer {peer:?}"))?;
    let sock = UdpSocket::bind((local, 0)).with_context(|| format!("binding {local}"))?;
    sock.connect(peer)
        .with_context(|| format!("connecting to {peer}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let start = Instant::now();
    let mut probes = 0u64;
    let mut buf = [0u8; 64];
    loop {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("peer {peer} never answered {probes} probes within 60 s");
        }
        sock.send(PROBE).context("sending a probe")?;
        probes += 1;
        // ECONNREFUSED (the peer's port not bound yet, ICMP port unreachable) and the
        // timeout both mean: probe again.
        if let Ok(n) = sock.recv(&mut buf) {
            if &buf[..n] == READY {
                break;
            }
        }
    }
    let ready_s = start.elapsed().as_secs_f64();
    let t = Instant::now();
    for k in 0..count {
        sock.send(&datagram_payload(k, size))
            .with_context(|| format!("sending datagram {k}"))?;
    }
    Ok(serde_json::json!({
        "sent": count,
        "size": size,
        "probes": probes,
        "ready_after_s": ready_s,
        "send_s": t.elapsed().as_secs_f64(),
        "local": sock.local_addr()?.to_string(),
    }))
}

/// A counter of `/proc/net/snmp`'s `Udp:` lines (`RcvbufErrors`, `InErrors`).
fn udp_counter(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

fn recv(
    listen: &str,
    count: u64,
    size: usize,
    timeout_s: u64,
) -> Result<(bool, serde_json::Value)> {
    let _ = std::fs::write("/proc/sys/net/core/rmem_default", RCVBUF);
    let sock = UdpSocket::bind(listen).with_context(|| format!("binding {listen}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let start = Instant::now();
    let mut got = BTreeSet::new();
    let (mut bad, mut dup, mut probes) = (0u64, 0u64, 0u64);
    let mut first_bad: Option<String> = None;
    let mut from = None;
    let mut buf = vec![0u8; 65536];
    while (got.len() as u64) < count && start.elapsed() < Duration::from_secs(timeout_s) {
        let Ok((n, src)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let d = &buf[..n];
        if d == PROBE {
            probes += 1;
            sock.send_to(READY, src).context("answering a probe")?;
            continue;
        }
        from = Some(src);
        let k = (n >= 8).then(|| u64::from_le_bytes(d[..8].try_into().expect("8 bytes")));
        match k {
            Some(k) if k < count && n == size && d == datagram_payload(k, size) => {
                if !got.insert(k) {
                    dup += 1;
                }
            }
            _ => {
                bad += 1;
                first_bad.get_or_insert_with(|| format!("{n} bytes from {src}, index {k:?}"));
            }
        }
    }
    let ok = got.len() as u64 == count && bad == 0;
    Ok((
        ok,
        serde_json::json!({
            "received": got.len(),
            "expected": count,
            "bad": bad,
            "first_bad": first_bad,
            "duplicates": dup,
            "probes": probes,
            "from": from.map(|a| a.to_string()),
            "first_missing": (0..count).find(|k| !got.contains(k)),
            "udp_rcvbuf_errors": udp_counter("RcvbufErrors"),
            "udp_in_errors": udp_counter("InErrors"),
            "elapsed_s": start.elapsed().as_secs_f64(),
        }),
    ))
}

fn run() -> Result<(bool, serde_json::Value)> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> Result<u64> {
        a.get(i)
            .with_context(|| format!("argument {i} missing"))?
            .parse()
            .with_context(|| format!("argument {i} ({:?}) is not a number", a[i]))
    };
    match a.first().map(String::as_str) {
        Some("send") if a.len() == 5 => {
            let size = num(4)? as usize;
            if size < 8 {
                bail!("SIZE must be at least 8 (the datagram's index)");
            }
            Ok((true, send(&a[1], &a[2], num(3)?, size)?))
        }
        Some("recv") if a.len() == 5 => recv(&a[1], num(2)?, num(3)? as usize, num(4)?),
        _ => bail!(
            "usage: peerdma-guest-udp send LOCAL_IP PEER_IP:PORT COUNT SIZE | \
             recv LOCAL_IP:PORT COUNT SIZE TIMEOUT_S"
        ),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok((ok, v)) => {
            println!("{v}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            ExitCode::from(2)
        }
    }
}
