//! Host-only (no VM): every enum whose docs say its variants are sorted has them sorted.
//!
//! The claim is read where a reader meets it: the enum's own doc comment ("Variants are
//! sorted", "variants sorted by name"), or the file's module doc for the file's error
//! enums (`//! ... Variants are sorted by name.` above `pub enum Error`). One scan of
//! the workspace's sources, so a new error type that makes the claim is held to it
//! without a test of its own.

use std::path::{Path, PathBuf};

/// The workspace's library and program sources.
const ROOTS: &[&str] = &[
    "uapi/src",
    "exporter/host/src",
    "exporter/src",
    "importer/src",
    "importer/engine/src",
    "tools/src",
    "tests/src",
];

/// Enums known to claim it: the scan must find each (a broken scan finds nothing).
const KNOWN: &[(&str, &str)] = &[
    ("exporter/host/src/error.rs", "HostError"),
    ("exporter/src/error.rs", "Error"),
    ("importer/engine/src/error.rs", "EngineError"),
    (
        "importer/engine/src/kernel_nvme/error.rs",
        "KernelNvmeError",
    ),
    ("importer/engine/src/nvme/error.rs", "NvmeError"),
    ("importer/src/drm/error.rs", "Error"),
    ("importer/src/iommufd/error.rs", "Error"),
    ("importer/src/vulkan/error.rs", "VulkanError"),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// An enum at the top level of a file that claims sorted variants.
struct Claim {
    file: String,
    name: String,
    variants: Vec<String>,
}

fn says_sorted(doc: &str) -> bool {
    let doc = doc.to_ascii_lowercase();
    doc.contains("variants are sorted") || doc.contains("variants sorted")
}

/// The enums of `src` that claim sorted variants, with their variants in source order.
fn claims(file: &str, src: &str) -> Vec<Claim> {
    let lines: Vec<&str> = src.lines().collect();
    let module_doc: String = lines
        .iter()
        .filter_map(|l| l.strip_prefix("//!"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix("pub enum ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // The doc comment and attributes right above the enum.
        let own_doc: String = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.starts_with("///") || l.starts_with("#["))
            .filter_map(|l| l.strip_prefix("///"))
            .collect::<Vec<_>>()
            .join(" ");
        let claimed =
            says_sorted(&own_doc) || (name.ends_with("Error") && says_sorted(&module_doc));
        if !claimed {
            continue;
        }
        let variants = lines[i + 1..]
            .iter()
            .take_while(|l| **l != "}")
            .filter_map(|l| l.strip_prefix("    "))
            .filter(|l| l.starts_with(|c: char| c.is_ascii_uppercase()))
            .map(|l| {
                l.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        found.push(Claim {
            file: file.to_owned(),
            name,
            variants,
        });
    }
    found
}

#[test]
fn enums_that_say_their_variants_are_sorted_have_them_sorted() {
    let root = workspace();
    let mut files = Vec::new();
    for dir in ROOTS {
        rust_files(&root.join(dir), &mut files);
    }
    files.sort();
    let mut all = Vec::new();
    for path in &files {
        let src = std::fs::read_to_string(path).expect("a source file");
        let rel = path
            .strip_prefix(&root)
            .expect("under the workspace")
            .to_string_lossy()
            .into_owned();
        all.extend(claims(&rel, &src));
    }
    for (file, name) in KNOWN {
        let claim = all.iter().find(|c| c.file == *file && c.name == *name);
        let claim = claim.unwrap_or_else(|| panic!("{file}: enum {name} not found or no claim"));
        assert!(
            claim.variants.len() > 2,
            "{file}: {name}: the scan found only {:?}",
            claim.variants
        );
    }
    let mut unsorted = Vec::new();
    for c in &all {
        if let Some(w) = c.variants.windows(2).find(|w| w[0] > w[1]) {
            unsorted.push(format!(
                "{}: enum {}: {} comes before {}",
                c.file, c.name, w[0], w[1]
            ));
        }
    }
    assert!(
        unsorted.is_empty(),
        "variants out of order where the docs say sorted:\n{}",
        unsorted.join("\n")
    );
}

#[test]
fn the_scan_reads_claims_and_variants_in_source_order() {
    let src = "//! Variants are sorted by name.\n\
               /// Doc.\n#[derive(Debug)]\npub enum Error {\n    /// B.\n    #[error(\"b\")]\n    \
               Beta {\n        /// Field.\n        x: u32,\n    },\n    Alpha(u32),\n}\n\
               /// Not claimed.\npub enum Other {\n    Z,\n    A,\n}\n";
    let found = claims("x.rs", src);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].variants, ["Beta", "Alpha"]);
}
