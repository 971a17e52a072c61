//! Fuzz target for size, offset and range arguments ([`parse_size`], [`parse_range`])
//! against an independent model of the grammar, on stable Rust with a seeded
//! generator (the exporter's `fuzz` module has the other targets; docs/fuzzing.md).
//!
//! Full run: `PEERDMA_FUZZ_RUNS=10000000 cargo test -p peerdma-tools --release --lib size_fuzz -- --ignored --nocapture`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use crate::size::{parse_range, parse_size};

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The grammar, by hand: `0x` hex digits, or decimal digits with an optional
/// unit (`k`/`m`/`g`/`t`, then optionally `b` or `ib`) or a lone `b`; `_`
/// between digits; at least one digit; surrounding whitespace ignored.
fn model(input: &str) -> Option<u64> {
    let s = input.trim();
    let b = s.as_bytes();
    let (body, radix) = match b {
        [b'0', b'x' | b'X', rest @ ..] => (rest, 16u128),
        _ => (b, 10),
    };
    let mut value: u128 = 0;
    let mut digits = 0;
    let mut i = 0;
    while i < body.len() {
        let c = char::from(body[i]);
        if c == '_' {
        } else if let Some(d) = c.to_digit(radix as u32) {
            value = value * radix + u128::from(d);
            if value > u128::from(u64::MAX) {
                return None;
            }
            digits += 1;
        } else {
            break;
        }
        i += 1;
    }
    if digits == 0 {
        return None;
    }
    let unit = std::str::from_utf8(&body[i..]).ok()?.to_ascii_lowercase();
    let shift = if radix == 16 {
        (unit.is_empty()).then_some(0)?
    } else {
        match unit.as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            _ => return None,
        }
    };
    u64::try_from(value << shift).ok()
}

const PIECES: &[&str] = &[
    "0",
    "1",
    "4",
    "9",
    "18446744073709551615",
    "18446744073709551616",
    "0x",
    "0X",
    "f",
    "F",
    "ffffffffffffffff",
    "1_000",
    "_",
    "k",
    "K",
    "M",
    "g",
    "T",
    "b",
    "B",
    "iB",
    "ib",
    "KiB",
    "kb",
    "+",
    "-",
    " ",
    "\t",
    ":",
    ".",
    "é",
    "e",
    "x",
    "16777215",
    "4096",
    "Q",
    "\u{a0}",
];

fn input(rng: &mut Rng) -> String {
    (0..1 + rng.below(4)).map(|_| *rng.pick(PIECES)).collect()
}

fn target(rng: &mut Rng) -> Result<(), String> {
    let a = input(rng);
    let got = parse_size(&a).ok();
    let want = model(&a);
    if got != want {
        return Err(format!(
            "parse_size({a:?}) = {got:?}, the grammar says {want:?}"
        ));
    }
    let b = input(rng);
    let range = format!("{a}:{b}");
    let got = parse_range(&range).ok();
    let want = model(&a).zip(model(&b));
    if !b.contains(':') && !a.contains(':') && got != want {
        return Err(format!(
            "parse_range({range:?}) = {got:?}, the grammar says {want:?}"
        ));
    }
    Ok(())
}

/// Runs `runs` cases; returns (seconds, panics, disagreements, first failure).
fn run(runs: u64) -> (f64, u64, u64, Option<String>) {
    let start = Instant::now();
    let (mut panics, mut disagreements, mut first) = (0, 0, None);
    for i in 0..runs {
        let seed = 0x7369_7a65 ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let failure = match catch_unwind(AssertUnwindSafe(|| target(&mut Rng(seed)))) {
            Ok(Ok(())) => continue,
            Ok(Err(what)) => {
                disagreements += 1;
                what
            }
            Err(_) => {
                panics += 1;
                "panicked".to_owned()
            }
        };
        first.get_or_insert_with(|| format!("case seed {seed:#x}: {failure}"));
    }
    (start.elapsed().as_secs_f64(), panics, disagreements, first)
}

#[test]
fn sizes_agree_with_the_grammar() {
    let (_, panics, disagreements, first) = run(20_000);
    assert!(
        first.is_none(),
        "{panics} panics, {disagreements} disagreements; {first:?}"
    );
}

#[test]
fn the_grammar_by_example() {
    assert_eq!(model("4K"), Some(4096));
    assert_eq!(model(" 0x1_000 "), Some(4096));
    assert_eq!(model("2mib"), Some(2 << 20));
    assert_eq!(model("+5"), None);
    assert_eq!(model("5ib"), None);
    assert_eq!(model("0x"), None);
    assert_eq!(model("16777216T"), None);
}

/// The full run: `PEERDMA_FUZZ_RUNS` cases (10^7 when unset).
#[test]
#[ignore = "the full fuzz run takes minutes; run it by the command in docs/fuzzing.md"]
fn full() {
    let runs = std::env::var("PEERDMA_FUZZ_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let (seconds, panics, disagreements, first) = run(runs);
    println!(
        "fuzz {:<24} runs {runs:>10}  seconds {seconds:>8.1}  panics {panics}  disagreements {disagreements}",
        "size"
    );
    assert!(first.is_none(), "{first:?}");
}
