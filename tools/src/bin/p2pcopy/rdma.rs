//! The RDMA ends: `--serve DST` and `SRC rdma://HOST:PORT`; without the `rdma`
//! feature, an explained error.

pub(crate) use built::{send, serve};

/// The RDMA ends, built with the `rdma` feature.
#[cfg(feature = "rdma")]
mod built {
    use std::io::Write as _;
    use std::time::Duration;

    use anyhow::Result;
    use peerdma_copy::rdma::{self, RdmaReport, SendRequest, ServeRequest};
    use peerdma_tools::size::human;

    use crate::advice::with_advice;
    use crate::flags::{stream_end, Cli, Engine};
    use crate::report::rate;
    use peerdma_copy::Target;

    /// A long explanation, short: its first clause, unless --verbose.
    fn short(cli: &Cli, why: &str) -> String {
        if cli.verbose {
            return why.to_string();
        }
        match why.find([';', '(']) {
            Some(at) if at > 20 => {
                let more = if cli.json {
                    "why: in the report"
                } else {
                    "--verbose says why"
                };
                format!("{} ({more})", why[..at].trim_end())
            }
            _ => why.to_string(),
        }
    }

    /// The reasons a side was not peer to peer, each once, short unless --verbose.
    fn not_p2p(cli: &Cli, r: &RdmaReport) -> Vec<String> {
        let mut whys: Vec<String> = Vec::new();
        for w in r.not_p2p.iter().map(|w| short(cli, w)) {
            if !whys.contains(&w) {
                whys.push(w);
            }
        }
        whys
    }

    fn print(cli: &Cli, r: &RdmaReport) -> Result<()> {
        if cli.json {
            // The report has the reasons in full; a person watching stderr gets them once.
            for why in not_p2p(cli, r) {
                eprintln!("p2pcopy: NOT peer-to-peer: {why}");
            }
            println!("{}", serde_json::to_string(r)?);
        } else if !cli.quiet {
            let verb = if r.role == "sender" {
                "sent"
            } else {
                "received"
            };
            println!(
                "{verb} {} {} {} ({}) over RDMA with {} QP(s) on {} ({}) in {:.3} s: {}, every byte verified by the receiver",
                human(r.bytes),
                if r.role == "sender" { "from" } else { "into" },
                r.local,
                if r.role == "sender" { format!("to {} at {}", r.remote, r.peer) } else { format!("from {}", r.peer) },
                r.qps,
                r.device,
                r.driver,
                r.seconds,
                rate(r.gbps),
            );
            if !r.not_p2p.is_empty() {
                let whys = not_p2p(cli, r);
                println!("path: NOT peer-to-peer: {}", whys.join("; "));
            } else if r.peer_to_peer {
                println!("path: peer-to-peer (the NICs read and write the device memory directly)");
            } else {
                println!("path: host memory at both ends (no device memory involved)");
            }
        }
        Ok(())
    }

    pub(crate) fn serve(cli: &Cli, dst: &Target) -> Result<()> {
        let req = ServeRequest {
            dst: stream_end(cli, dst, false, "an RDMA copy")?,
            listen: cli.listen,
            access: cli.access.into(),
            // --timeout given bounds the wait for a sender too; by default it has no end.
            wait: cli
                .given
                .contains(&"timeout")
                .then(|| Duration::from_secs(cli.timeout)),
            timeout: Duration::from_secs(cli.timeout),
            max_host_size: 4 << 30,
        };
        let report = rdma::serve(&req, &mut |addr| {
            eprintln!("p2pcopy: listening on {addr} (RDMA CM)");
            let _ = std::io::stderr().flush();
        })
        .map_err(with_advice)?;
        print(cli, &report)
    }

    pub(crate) fn send(cli: &Cli, src: &Target, peer: &str) -> Result<()> {
        if matches!(cli.engine, Engine::Cpu | Engine::Dma) {
            return Err(with_advice(peerdma_copy::CopyError::TransportUnavailable {
                transport: "cpu/dma",
                why: peerdma_copy::Unavailable::RemoteNeedsRdma,
            }));
        }
        let req = SendRequest {
            src: stream_end(cli, src, true, "an RDMA copy")?,
            peer: rdma::parse_peer(peer).map_err(with_advice)?,
            size: cli.size,
            seed: *cli
                .used_seed
                .get_or_init(|| cli.seed.unwrap_or_else(crate::fresh_seed)),
            qps: cli.qps,
            msg_size: u32::try_from(cli.chunk).unwrap_or(u32::MAX),
            depth: cli.depth,
            access: cli.access.into(),
            timeout: Duration::from_secs(cli.timeout),
        };
        let report = rdma::send(&req, &mut |_, _| {}).map_err(with_advice)?;
        print(cli, &report)
    }
}

/// Without the rdma feature the RDMA ends are an explained error.
#[cfg(not(feature = "rdma"))]
mod built {
    use anyhow::Result;
    use peerdma_copy::{CopyError, Unavailable};

    use crate::advice::with_advice;
    use crate::flags::Cli;
    use peerdma_copy::Target;

    fn not_built() -> anyhow::Error {
        with_advice(CopyError::TransportUnavailable {
            transport: "rdma",
            why: Unavailable::RdmaNotBuilt,
        })
    }

    pub(crate) fn serve(_: &Cli, _: &Target) -> Result<()> {
        Err(not_built())
    }

    pub(crate) fn send(_: &Cli, _: &Target, _: &str) -> Result<()> {
        Err(not_built())
    }
}
