//! Sizes and ranges as users type them: `4096`, `0x1000`, `4K`, `2M`, `1G`, and
//! `OFFSET:LENGTH` ranges built from those.

use std::fmt;

/// A size or offset that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeError {
    input: String,
    reason: &'static str,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}: {}; write a number of bytes such as 4096, 0x1000, 4K, 2M or 1G",
            self.input, self.reason
        )
    }
}

impl std::error::Error for SizeError {}

/// Parses a byte count: decimal, `0x` hex, or decimal with a K/M/G/T suffix (powers of
/// 1024; `KiB`/`KB`/`K`/`k` all accepted) or a `B`; `_` may separate digits. Nothing
/// else: no sign, no `iB` without a unit.
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let err = |reason| SizeError {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    // Digits and `_` only, at least one digit ([u64::from_str_radix] alone would
    // also take a sign).
    let digits_only = |digits: &str, radix: u32| {
        digits
            .bytes()
            .all(|b| b == b'_' || char::from(b).is_digit(radix))
            && digits.bytes().any(|b| b != b'_')
    };
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if !digits_only(hex, 16) {
            return Err(err("not a hexadecimal number"));
        }
        return u64::from_str_radix(&hex.replace('_', ""), 16)
            .map_err(|_| err("too large for 64 bits"));
    }
    let lower = s.to_ascii_lowercase();
    let (digits, shift) = [("k", 10), ("m", 20), ("g", 30), ("t", 40)]
        .iter()
        .find_map(|&(unit, shift)| {
            ["ib", "b", ""].iter().find_map(|tail| {
                lower
                    .strip_suffix(&format!("{unit}{tail}"))
                    .map(|digits| (digits, shift))
            })
        })
        .unwrap_or_else(|| (lower.strip_suffix('b').unwrap_or(&lower), 0));
    if !digits_only(digits, 10) {
        return Err(err("not a number"));
    }
    let n: u64 = digits
        .replace('_', "")
        .parse()
        .map_err(|_| err("too large for 64 bits"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| err("too large for 64 bits"))
}

/// Parses `OFFSET:LENGTH` (each as [`parse_size`]).
pub fn parse_range(input: &str) -> Result<(u64, u64), SizeError> {
    let (o, l) = input.split_once(':').ok_or(SizeError {
        input: input.to_string(),
        reason: "a range is OFFSET:LENGTH, e.g. 0:2M or 0x10000:64K",
    })?;
    Ok((parse_size(o)?, parse_size(l)?))
}

/// Formats a byte count for people: `64 MiB`, `4 KiB`, `1.5 GiB`, `100 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if v.fract() == 0.0 {
        format!("{v} {}", UNITS[i])
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_every_spelling() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0x1000"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1_000"), Ok(1000));
    }

    #[test]
    fn bad_sizes_name_the_input_and_the_fix() {
        let e = parse_size("12Q").unwrap_err().to_string();
        assert!(e.contains("\"12Q\"") && e.contains("4K"), "{e}");
        assert!(parse_size("").is_err());
        assert!(parse_size("0xZZ").is_err());
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .to_string()
            .contains("64 bits"));
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("0:2M"), Ok((0, 2 << 20)));
        assert_eq!(parse_range("0x10000:64K"), Ok((0x10000, 65536)));
        assert!(parse_range("4096")
            .unwrap_err()
            .to_string()
            .contains("OFFSET:LENGTH"));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(64 << 20), "64 MiB");
        assert_eq!(human(4096), "4 KiB");
        assert_eq!(human(100), "100 B");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }
}
