//! What makes the tools install like tools: a `--version` that names the kernel
//! features they were built for, and shell completions and man pages generated
//! from the clap definitions (`peerdma completions SHELL`, `peerdma man [DIR]`,
//! `p2pcopy --completions SHELL`, `p2pcopy --man [DIR]`). Without DIR the command's
//! own page goes to stdout; with DIR it and a page per subcommand are written there.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::{Command, CommandFactory};
use clap_complete::Shell;
use peerdma_exporter::kernel::KERNEL_OPTIONS;

/// The kernel ABI the crates were built and layout-tested against.
pub const BUILT_FOR: &str = "Linux 7.2 user-space headers (peerdma-uapi, layout-tested)";

/// The kernel features the tools use, with the release that brought each.
pub const KERNEL_FEATURES: &[&str] = &[
    "vfio-pci dma-buf export of BAR ranges (VFIO_DEVICE_FEATURE_DMA_BUF, 6.19)",
    "VFIO cdev bound to iommufd (VFIO_DEVICE_BIND_IOMMUFD) and the group/container path",
    "iommufd import of a BAR dma-buf (IOMMU_IOAS_MAP_FILE)",
    "dma-buf sync and naming ioctls, udmabuf",
    "PCI P2PDMA distance rules of 7.2 (peerdma path)",
];

/// The `--version` text: the version, what it was built for, the features it
/// uses and the kernel options they need (`peerdma doctor` checks them).
pub fn long_version() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut s = format!(
            "{}\nbuilt for {BUILT_FOR}\nkernel features used:\n",
            env!("CARGO_PKG_VERSION")
        );
        for f in KERNEL_FEATURES {
            s.push_str(&format!("  {f}\n"));
        }
        let opts: Vec<&str> = KERNEL_OPTIONS.iter().map(|o| o.name).collect();
        s.push_str(&format!(
            "kernel options needed (peerdma doctor checks them): {}",
            opts.join(" ")
        ));
        s
    })
}

/// Writes `cmd`'s completion script for `shell`.
pub fn write_completions(mut cmd: Command, shell: Shell, out: &mut dyn Write) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, out);
}

/// Writes `cmd`'s own man page (roff) to `out`.
///
/// # Errors
///
/// The I/O error of writing to `out`.
pub fn write_man_page(cmd: Command, out: &mut dyn Write) -> io::Result<()> {
    clap_mangen::Man::new(cmd).render(out)
}

/// Writes one man page per command and visible subcommand into `dir`
/// (`peerdma.1`, `peerdma-path.1` …) and returns their paths.
///
/// # Errors
///
/// The I/O error of creating `dir` or writing a page, its message prefixed with what
/// was being done and the path ("creating the directory /x: File exists (os error 17)").
pub fn write_man_pages(cmd: Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    let at = |what: &str, path: &Path| {
        let what = format!("{what} {}", path.display());
        move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"))
    };
    std::fs::create_dir_all(dir).map_err(at("creating the directory", dir))?;
    let mut written = Vec::new();
    let mut todo = vec![(cmd.get_name().to_string(), cmd)];
    while let Some((name, cmd)) = todo.pop() {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let full = format!("{name}-{}", sub.get_name());
            // Command names are &'static (clap without its "string" feature); a
            // few short strings per run of a generator.
            let leaked: &'static str = Box::leak(full.clone().into_boxed_str());
            todo.push((full, sub.clone().name(leaked)));
        }
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut buf)?;
        std::fs::write(&path, buf).map_err(at("writing", &path))?;
        written.push(path);
    }
    written.sort();
    Ok(written)
}

/// For a binary whose arguments cannot take a subcommand (`p2pcopy SRC DST`):
/// handles `--completions SHELL` and `--man [DIR]` when they are the first
/// argument, before clap parses. `Some(status)` when it did. `--man` without DIR
/// prints the page on stdout, as `peerdma man` does.
pub fn handle_generate_flags<C: CommandFactory>(args: &[OsString]) -> Option<i32> {
    generate::<C>(args, &mut io::stdout())
}

fn generate<C: CommandFactory>(args: &[OsString], out: &mut dyn Write) -> Option<i32> {
    let first = args.get(1)?.to_str()?;
    let second = args.get(2).and_then(|a| a.to_str());
    if matches!(first, "--completions" | "--man") && args.len() > 3 {
        eprintln!(
            "error: {first} takes {} and nothing after it; leave out {:?}",
            if first == "--man" {
                "at most one directory"
            } else {
                "one shell"
            },
            args[3]
        );
        return Some(2);
    }
    match first {
        "--completions" => {
            let Some(shell) = second.and_then(|s| s.parse::<Shell>().ok()) else {
                let given = match second {
                    Some(s) => format!("{s:?} is not a shell this knows"),
                    None => "it needs a shell".to_string(),
                };
                eprintln!(
                    "error: --completions: {given}; give one of bash, zsh, fish, elvish, powershell"
                );
                return Some(2);
            };
            write_completions(C::command(), shell, out);
            Some(0)
        }
        "--man" => {
            let written = match second {
                None => write_man_page(C::command(), out).map(|()| Vec::new()),
                Some(dir) => write_man_pages(C::command(), Path::new(dir)),
            };
            match written {
                Ok(pages) => {
                    for p in pages {
                        // A closed stdout is the reader's business, not an error here.
                        let _ = writeln!(out, "{}", p.display());
                    }
                    Some(0)
                }
                Err(e) => {
                    eprintln!("error: writing the man page: {e}");
                    Some(1)
                }
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use clap::{Parser, Subcommand};

    use super::*;

    #[derive(Parser)]
    #[command(name = "demo", about = "A demo")]
    struct Demo {
        #[command(subcommand)]
        cmd: Sub,
    }

    #[derive(Subcommand)]
    enum Sub {
        /// Shows a path.
        Path { a: String },
        /// Hidden.
        #[command(hide = true)]
        Secret,
    }

    #[test]
    fn completions_and_man_pages_come_from_the_clap_definitions() {
        let mut out = Vec::new();
        write_completions(Demo::command(), Shell::Bash, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("_demo") && text.contains("path"), "{text}");
        let dir = std::env::temp_dir().join(format!("peerdma-man-{}", std::process::id()));
        let pages = write_man_pages(Demo::command(), &dir).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["demo-path.1", "demo.1"]);
        let page = std::fs::read_to_string(dir.join("demo-path.1")).unwrap();
        assert!(
            page.contains(".TH demo-path") && page.contains("Shows a path"),
            "{page}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let args: Vec<OsString> = ["demo", "--completions", "nosuchshell"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(handle_generate_flags::<Demo>(&args), Some(2));
        let args: Vec<OsString> = ["demo", "path"].iter().map(OsString::from).collect();
        assert_eq!(handle_generate_flags::<Demo>(&args), None);
    }

    #[test]
    fn man_without_a_directory_prints_the_page_and_writes_no_file() {
        let args: Vec<OsString> = ["demo", "--man"].iter().map(OsString::from).collect();
        let mut out = Vec::new();
        assert_eq!(generate::<Demo>(&args, &mut out), Some(0));
        let page = String::from_utf8(out).unwrap();
        assert!(
            page.starts_with(".ie") || page.contains(".TH demo"),
            "{page}"
        );
        assert!(
            page.contains(".TH demo") && page.contains("A demo"),
            "{page}"
        );
        // With a directory: the pages go there and their paths to stdout.
        let dir = std::env::temp_dir().join(format!("peerdma-man-dir-{}", std::process::id()));
        let args: Vec<OsString> = ["demo", "--man"]
            .iter()
            .map(OsString::from)
            .chain([dir.clone().into_os_string()])
            .collect();
        let mut out = Vec::new();
        assert_eq!(generate::<Demo>(&args, &mut out), Some(0));
        let listed = String::from_utf8(out).unwrap();
        assert!(
            listed.contains("demo.1") && !listed.contains(".TH"),
            "{listed}"
        );
        assert!(dir.join("demo.1").exists() && dir.join("demo-path.1").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_man_directory_that_cannot_be_made_is_named_and_extra_arguments_are_refused() {
        let file = std::env::temp_dir().join(format!("peerdma-man-file-{}", std::process::id()));
        std::fs::write(&file, b"").unwrap();
        let e = write_man_pages(Demo::command(), &file).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(
            e.to_string()
                .starts_with(&format!("creating the directory {}: ", file.display())),
            "{e}"
        );
        std::fs::remove_file(&file).unwrap();
        let dir = std::env::temp_dir().join(format!("peerdma-man-extra-{}", std::process::id()));
        let dir_arg = dir.to_str().unwrap();
        for extra in [
            &["--man", dir_arg, "y"][..],
            &["--completions", "bash", "x"],
        ] {
            let args: Vec<OsString> = ["demo"].iter().chain(extra).map(OsString::from).collect();
            let mut out = Vec::new();
            assert_eq!(generate::<Demo>(&args, &mut out), Some(2), "{extra:?}");
            assert!(out.is_empty(), "{extra:?} wrote output");
        }
        assert!(!dir.exists(), "a refused --man wrote its pages");
    }

    #[test]
    fn the_long_version_names_the_kernel_features() {
        let v = long_version();
        assert!(v.starts_with(env!("CARGO_PKG_VERSION")));
        assert!(
            v.contains("VFIO_DEVICE_FEATURE_DMA_BUF") && v.contains("CONFIG_IOMMUFD"),
            "{v}"
        );
    }
}
