//! `p2pcopy-bench SRC DST`: the cpu engine's copy against a plain `memcpy` between the
//! same two BAR mappings, in the same run, for 4 KiB to 64 MiB; prints the ratio
//! (engine throughput / memcpy throughput; the goal is ≥ 0.95).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use peerdma_copy::{Endpoint, EndpointSpec};
use peerdma_exporter::OpenOptions;
use peerdma_host::Bdf;
use peerdma_tools::size::{human, parse_size};

#[derive(Parser)]
#[command(
    name = "p2pcopy-bench",
    about = "cpu engine vs memcpy between two BAR mappings"
)]
struct Cli {
    /// Source device.
    src: Bdf,
    /// Destination device.
    dst: Bdf,
    /// Largest size to measure.
    #[arg(long, value_parser = parse_size, default_value = "64M")]
    max: u64,
    /// Minimum time spent per size and method.
    #[arg(long, default_value_t = 200)]
    min_ms: u64,
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `f` until `min` has passed (at least 3 times) and returns bytes per second.
fn rate(len: usize, min: Duration, mut f: impl FnMut()) -> f64 {
    f(); // warm up (first-touch faults)
    let start = Instant::now();
    let mut n = 0u64;
    while n < 3 || start.elapsed() < min {
        f();
        n += 1;
    }
    (len as u64 * n) as f64 / start.elapsed().as_secs_f64()
}

fn run(cli: &Cli) -> Result<()> {
    let open = |bdf| {
        Endpoint::open(
            &EndpointSpec {
                bdf,
                bar: None,
                offset: 0,
            },
            OpenOptions::default(),
        )
    };
    let (src, dst) = (open(cli.src)?, open(cli.dst)?);
    let max = cli.max.min(src.bar.size()).min(dst.bar.size());
    if max < 4096 {
        bail!("the BARs are smaller than 4 KiB");
    }
    let (sm, dm) = (src.map(max)?, dst.map(max)?);
    let min = Duration::from_millis(cli.min_ms);
    if !cli.json {
        println!(
            "{:>10} {:>14} {:>14} {:>7}",
            "size", "engine MB/s", "memcpy MB/s", "ratio"
        );
    }
    let mut len = 4096u64;
    while len <= max {
        let n = len as usize;
        let engine = rate(n, min, || {
            sm.copy_to(0, &dm, 0, n)
                .expect("both mappings hold at least `max` bytes")
        });
        // SAFETY: as above.
        let memcpy = rate(n, min, || unsafe {
            std::ptr::copy_nonoverlapping(sm.as_ptr(), dm.as_ptr(), n)
        });
        let ratio = engine / memcpy;
        if cli.json {
            println!(
                "{}",
                serde_json::json!({"size": len, "engine_bps": engine, "memcpy_bps": memcpy, "ratio": ratio})
            );
        } else {
            println!(
                "{:>10} {:>14.1} {:>14.1} {:>7.3}",
                human(len),
                engine / 1e6,
                memcpy / 1e6,
                ratio
            );
        }
        len *= 4;
    }
    Ok(())
}

fn main() -> ExitCode {
    peerdma_tools::cli::default_sigpipe();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p2pcopy-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
