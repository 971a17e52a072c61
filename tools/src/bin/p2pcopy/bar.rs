//! The progress bar (indicatif): the binary's side of the library's progress callback.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use peerdma_copy::Progress;

use crate::flags::Cli;

/// The progress bar: shown on a terminal for copies longer than a second.
pub(crate) struct Bar {
    interactive: bool,
    start: Instant,
    bar: Option<ProgressBar>,
}

impl Bar {
    pub(crate) fn new(cli: &Cli) -> Bar {
        Bar {
            interactive: std::io::stderr().is_terminal()
                && std::env::var("TERM").map_or(true, |t| t != "dumb")
                && !cli.quiet
                && !cli.json,
            start: Instant::now(),
            bar: None,
        }
    }

    pub(crate) fn update(&mut self, p: Progress) {
        if !self.interactive {
            return;
        }
        if self.bar.is_none() && self.start.elapsed() > Duration::from_secs(1) {
            let b = ProgressBar::new(p.total);
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            self.bar = Some(b);
        }
        if let Some(b) = &self.bar {
            b.set_position(p.done);
        }
    }

    pub(crate) fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
