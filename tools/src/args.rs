//! Value parsers the tools share, so that a malformed value is refused in the user's
//! words (which value, what is expected) instead of Rust's ("invalid digit found in
//! string").

use clap::ValueEnum;
use peerdma_exporter::AccessPath;

/// Which VFIO access path to open a device through (`--access`), as the tools spell
/// it: [`AccessPath`] for clap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Access {
    /// cdev + iommufd where the kernel has them, else group/container.
    Auto,
    /// /dev/vfio/devices/vfioN bound to /dev/iommu.
    Cdev,
    /// /dev/vfio/vfio container + /dev/vfio/GROUP.
    Group,
}

impl From<Access> for AccessPath {
    fn from(a: Access) -> AccessPath {
        match a {
            Access::Auto => AccessPath::Auto,
            Access::Cdev => AccessPath::Cdev,
            Access::Group => AccessPath::Group,
        }
    }
}

/// A BAR as the user names it: `2`, `BAR2` or `bar2` (region index 0 to 5).
///
/// # Errors
///
/// A message naming the value and the accepted spellings.
pub fn parse_bar(s: &str) -> Result<u32, String> {
    let digits = s
        .strip_prefix("BAR")
        .or_else(|| s.strip_prefix("bar"))
        .unwrap_or(s);
    match digits.parse::<u32>() {
        Ok(n) if n <= 5 => Ok(n),
        Ok(n) => Err(format!(
            "BAR{n} does not exist: a PCI function has BAR0 to BAR5; give 0 to 5 (or BAR0 to BAR5)"
        )),
        Err(_) => Err("a BAR is 0 to 5 (or BAR0 to BAR5)".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_is_a_number_or_bar_n_and_nothing_else() {
        assert_eq!(parse_bar("2"), Ok(2));
        assert_eq!(parse_bar("BAR2"), Ok(2));
        assert_eq!(parse_bar("bar5"), Ok(5));
        for bad in ["BAR", "x", "-1", "BAR2x", ""] {
            let e = parse_bar(bad).unwrap_err();
            assert!(e.contains("0 to 5") && !e.contains("digit"), "{bad}: {e}");
        }
        assert!(parse_bar("4294967295")
            .unwrap_err()
            .contains("BAR0 to BAR5"));
    }
}
