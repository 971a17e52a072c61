//! A copy with an NVMe (or host) side: the request from the command line, the run,
//! and its summary.

use std::time::Instant;

use anyhow::Result;
#[cfg(feature = "testing")]
use peerdma_copy::Side;
use peerdma_copy::{CopyError, Progress, StorageReport, StorageRequest, Target};
use peerdma_engine::nvme::DataPointer;
use peerdma_engine::NvmeOptions;
use peerdma_tools::failure::usage;
use peerdma_tools::size::human;

use crate::advice::with_advice;
use crate::bar::Bar;
use crate::flags::{Cli, DataPointerArg, Engine};
use crate::report::{iommu_line, one_schema, rate, timing};
#[cfg(feature = "testing")]
use crate::test_hooks;

/// The copy `src` → `dst` where one side is an NVMe namespace (the other a BAR or
/// host memory), with the pattern of `seed`.
pub(crate) fn run(cli: &Cli, src: Target, dst: Target, seed: u64) -> Result<()> {
    if matches!(cli.engine, Engine::Cpu | Engine::Rdma) {
        return Err(usage(
            "engine_not_applicable",
            "an NVMe side is read and written by the NVMe controller's own DMA, not \
             the CPU or a NIC",
            Some("use --engine auto or --engine dma"),
        ));
    }
    let blk = matches!(src, Target::Blk(_)) || matches!(dst, Target::Blk(_));
    if let Some(flag) = ["transfer_size", "data_pointer"]
        .into_iter()
        .find(|f| blk && cli.given.contains(f))
    {
        let flag = format!("--{}", flag.replace('_', "-"));
        return Err(usage(
            "flag_not_applicable",
            format!(
                "{flag} applies to the user-space NVMe engine (nvme:); a blk: side is driven                  by the kernel's nvme driver, whose I/Os are each max_hw_sectors_kb at most"
            ),
            Some(&format!("leave {flag} out")),
        ));
    }
    let req = StorageRequest {
        src,
        dst,
        size: cli.size,
        chunk: cli.chunk,
        iterations: cli.iterations,
        nvme: NvmeOptions {
            // Not given: the library's default, lowered to the controller's CAP.MQES.
            queue_depth: if cli.given.contains(&"queue_depth") {
                cli.queue_depth
            } else {
                0
            },
            transfer_size: cli.transfer_size,
            data_pointer: match cli.data_pointer {
                DataPointerArg::Auto => DataPointer::Auto,
                DataPointerArg::Prp => DataPointer::Prp,
                DataPointerArg::Sgl => DataPointer::Sgl,
            },
            ..NvmeOptions::default()
        },
        verify: !cli.no_verify,
        seed,
        allow_register_bars: cli.allow_register_bar,
        access: cli.access.into(),
    };
    run_storage(cli, &req)
}
/// The storage copy, with the test hook the hidden flags ask for (on the BAR side) where
/// the build has them.
pub(crate) fn copy_storage(
    cli: &Cli,
    req: &StorageRequest,
    progress: &mut dyn FnMut(Progress),
) -> Result<StorageReport, CopyError> {
    #[cfg(feature = "testing")]
    return {
        let bar_side = match req.src {
            Target::Nvme(_) => Side::Dst,
            _ => Side::Src,
        };
        peerdma_copy::testing::run_storage(req, progress, &test_hooks(cli, bar_side))
    };
    #[cfg(not(feature = "testing"))]
    return {
        let _ = cli;
        peerdma_copy::run_storage(req, progress)
    };
}

pub(crate) fn run_storage(cli: &Cli, req: &StorageRequest) -> Result<()> {
    let mut bar = Bar::new(cli);
    let started = Instant::now();
    let result = copy_storage(cli, req, &mut |p| bar.update(p));
    let wall = started.elapsed().as_secs_f64();
    bar.finish();
    let r: StorageReport = result.map_err(with_advice)?;
    if cli.json {
        println!("{}", one_schema(serde_json::to_value(&r)?, wall));
    } else if !cli.quiet {
        println!(
            "copied {} × {} from {} to {} by NVMe {} in {}: {}, {:.0} IOPS, QD {}, {} per \
             command, latency p50 {:.1} µs p99 {:.1} µs{}",
            human(r.bytes),
            r.iterations,
            r.src,
            r.dst,
            r.via,
            timing(r.seconds, wall),
            rate(r.gbps),
            r.iops,
            r.queue_depth,
            human(r.transfer_size),
            r.latency.p50_us,
            r.latency.p99_us,
            match (r.verified, r.seed) {
                (Some(true), Some(seed)) =>
                    format!(", every byte verified (destination poisoned first, seed {seed:#x})"),
                _ => " (not verified)".to_string(),
            }
        );
        println!("engine: {}", r.engine_reason);
        if let Some(v) = &r.verification {
            // What the check shares with the copy (a read-back by the same controller).
            println!("check: {}; layout: {}", v.read_by, v.layout);
        }
        println!("{}", iommu_line(r.iommu_faults));
        match &r.route {
            Some(route) => println!("route: {}", route.summary),
            None => println!(
                "route: not peer to peer: the controller moved the bytes to or from host memory \
                 (the baseline)"
            ),
        }
    }
    Ok(())
}
