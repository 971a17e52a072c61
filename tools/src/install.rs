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
use peerdma_host::kernel::KERNEL_OPTIONS;

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
        s.push_str(&format!(
            "kernel features used where the kernel has them (the series {}; peerdma doctor BDF \
             probes them):\n",
            peerdma_exporter::posted::SERIES
        ));
        for f in peerdma_exporter::posted::PostedFeature::ALL {
            s.push_str(&format!("  {}\n", f.name()));
        }
        s.push_str(&format!(
            "  io_uring dma-buf registered buffers for NVMe (the series {}; p2pcopy blk:)\n",
            peerdma_engine::kernel_nvme::SERIES
        ));
        let opts: Vec<&str> = KERNEL_OPTIONS.iter().map(|o| o.name).collect();
        s.push_str(&format!(
            "kernel options needed (peerdma doctor checks them): {}",
            opts.join(" ")
        ));
        s
    })
}

/// The arguments that name a PCI function (by clap id): completions offer the BDFs
/// of this machine's PCI functions for them.
const BDF_ARGS: &[&str] = &["bdf", "bdfs", "a", "b", "src", "dst", "via"];

/// Writes `cmd`'s completion script for `shell`. Arguments that name a device are
/// offered the BDFs under `/sys/bus/pci/devices` (as they are when the script is
/// generated) and, for p2pcopy's SRC and DST, `host`; hidden arguments (test hooks)
/// are not offered.
pub fn write_completions(cmd: Command, shell: Shell, out: &mut dyn Write) {
    write_completions_with(
        cmd,
        shell,
        &pci_functions(Path::new("/sys/bus/pci/devices")),
        out,
    )
}

/// The BDFs of the PCI functions in a sysfs `devices` directory, sorted.
pub fn pci_functions(dir: &Path) -> Vec<String> {
    let mut bdfs: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.parse::<peerdma_host::Bdf>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    bdfs.sort();
    bdfs
}

fn write_completions_with(cmd: Command, shell: Shell, bdfs: &[String], out: &mut dyn Write) {
    let name = cmd.get_name().to_string();
    let mut hidden = Vec::new();
    let mut cmd = offer_bdfs(cmd, bdfs, &mut hidden);
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    let script = String::from_utf8_lossy(&script);
    let _ = out.write_all(without_flags(&script, &hidden).as_bytes());
}

/// `cmd` (and its subcommands) with the BDF arguments offering `bdfs`; collects the
/// long names of hidden arguments into `hidden`.
fn offer_bdfs(cmd: Command, bdfs: &[String], hidden: &mut Vec<String>) -> Command {
    for a in cmd.get_arguments().filter(|a| a.is_hide_set()) {
        if let Some(long) = a.get_long() {
            hidden.push(format!("--{long}"));
        }
    }
    let cmd = cmd.mut_args(|a| {
        if !BDF_ARGS.contains(&a.get_id().as_str()) || bdfs.is_empty() {
            return a;
        }
        let mut values: Vec<String> = bdfs.to_vec();
        if matches!(a.get_id().as_str(), "src" | "dst") {
            values.push("host".to_string());
        }
        // Possible values are &'static (clap without its "string" feature); a generator
        // runs once per process.
        let values: Vec<&'static str> = values
            .into_iter()
            .map(|v| &*Box::leak(v.into_boxed_str()))
            .collect();
        a.value_parser(clap::builder::PossibleValuesParser::new(values))
    });
    let subs: Vec<Command> = cmd
        .get_subcommands()
        .map(|s| offer_bdfs(s.clone(), bdfs, hidden))
        .collect();
    subs.into_iter().fold(cmd, |cmd, s| {
        let name = String::from(s.get_name());
        cmd.mut_subcommand(&name, move |_| s)
    })
}

/// A completion script without the lines (zsh, fish, elvish, powershell) or words
/// and `case` branches (bash) that offer one of `flags`.
fn without_flags(script: &str, flags: &[String]) -> String {
    if flags.is_empty() {
        return script.to_string();
    }
    let offers = |l: &str| {
        flags.iter().any(|f| {
            let bare = &f[2..];
            l.contains(&format!("'{f}"))
                || l.contains(&format!("\"{f}"))
                || l.contains(&format!("-l {bare}"))
                || l.contains(&format!("'{f}="))
                || l.contains(&format!("--{bare}="))
                || l.trim_start().starts_with(&format!("cand {f} "))
        })
    };
    let mut out = String::with_capacity(script.len());
    let mut skipping_case = false;
    for line in script.lines() {
        let t = line.trim();
        if skipping_case {
            skipping_case = t != ";;";
            continue;
        }
        if flags.iter().any(|f| t == format!("{f})")) {
            skipping_case = true;
            continue;
        }
        if t.starts_with("opts=") {
            let mut l = line.to_string();
            for f in flags {
                l = l
                    .replace(&format!(" {f} "), " ")
                    .replace(&format!("\"{f} "), "\"");
            }
            out.push_str(&l);
            out.push('\n');
            continue;
        }
        if offers(line) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Examples for the EXAMPLES section: (command line, what it does). A subcommand's
/// page shows the examples that start with it.
const EXAMPLES: &[(&str, &str)] = &[
    ("peerdma doctor 01:00.0 02:00.0", "Check the kernel, IOMMU, drivers, groups, BARs and the path between two devices; exit 4 if a check failed."),
    ("peerdma list --vfio", "The devices bound to vfio-pci, with IOMMU groups and BARs."),
    ("peerdma regions 0000:01:00.0", "The VFIO regions of one device, MSI-X and dma-buf support."),
    ("peerdma path 01:00.0 02:00.0", "The PCI path between two devices, ACS on every bridge and the kernel's P2P verdict."),
    ("peerdma export 01:00.0 --bar 2 --range 0:2M --hold", "Export the first 2 MiB of BAR2 as a dma-buf and hold it until interrupted."),
    ("peerdma inspect 1234:7", "Describe fd 7 of process 1234 if it is a dma-buf."),
    ("peerdma regions 01:00.0 --json | jq -r .error.kind", "A script's view of a failure: the stable kind (no_such_device, not_vfio_bound, …)."),
    ("peerdma completions bash > ~/.local/share/bash-completion/completions/peerdma", "Install bash completions (device arguments complete to this machine's BDFs)."),
    ("peerdma man ~/.local/share/man/man1", "Write this page and one per subcommand."),
    ("p2pcopy 01:00.0 02:00.0 --size 64M", "Copy 64 MiB from one device's largest BAR to another's, verify every byte, report GB/s and the route."),
    ("p2pcopy 01:00.0 02:00.0 --engine dma --via 03:00.0 --size 1M", "Let DMA engine 03:00.0 move the bytes through iommufd."),
    ("p2pcopy nvme:0000:03:00.0 0000:01:00.0 --size 64M --queue-depth 32", "Read 64 MiB from an NVMe namespace straight into a BAR."),
    ("p2pcopy --serve host", "Receive over RDMA into host memory; the sender runs p2pcopy 01:00.0 rdma://HOST:18520."),
    ("p2pcopy 01:00.0 02:00.0 --json; echo $?", "One JSON object whatever happens; exit 0 verified, 1 bytes differ, 2 usage, 3 could not run."),
];

/// Escapes a line of text for roff.
fn roff_text(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// The sections clap_mangen does not write: EXAMPLES, EXIT STATUS, SEE ALSO, and
/// VERSION with its lines kept (`.nf`).
fn extra_sections(cmd: &Command, page: &str, siblings: &[String]) -> String {
    let mut r = String::new();
    let tool = page.split('-').next().unwrap_or(page);
    let prefix = page.replacen('-', " ", 1);
    let examples: Vec<&(&str, &str)> = EXAMPLES
        .iter()
        .filter(|(c, _)| {
            if page == tool {
                c.starts_with(&format!("{tool} "))
            } else {
                c.starts_with(&format!("{prefix} "))
            }
        })
        .collect();
    if !examples.is_empty() {
        r.push_str(".SH EXAMPLES\n");
        for (c, what) in examples {
            r.push_str(&format!(
                ".TP\n\\fB{}\\fR\n{}\n",
                roff_text(c),
                roff_text(what)
            ));
        }
    }
    r.push_str(".SH \"EXIT STATUS\"\n");
    for (code, what) in crate::exit::MAN_TEXT {
        if *code == 4 && !page.starts_with("peerdma") {
            continue;
        }
        r.push_str(&format!(".TP\n\\fB{code}\\fR\n{}\n", roff_text(what)));
    }
    r.push_str(
        ".PP\nUnder \\fB\\-\\-json\\fR every outcome is one JSON object on stdout; a failure is \
         {\"error\": {\"kind\", \"message\", \"fix\"}, …} with what was done so far beside \
         it (docs/cli.md).\n",
    );
    r.push_str(".SH \"SEE ALSO\"\n");
    let see: Vec<String> = siblings
        .iter()
        .filter(|s| s.as_str() != page)
        .map(|s| format!("\\fB{}\\fR(1)", roff_text(s)))
        .collect();
    r.push_str(&see.join(", "));
    r.push('\n');
    if let Some(v) = cmd.get_long_version().or_else(|| cmd.get_version()) {
        r.push_str(".SH VERSION\n.nf\n");
        for line in v.to_string().lines() {
            r.push_str(&roff_text(line));
            r.push('\n');
        }
        r.push_str(".fi\n");
    }
    r
}

/// Renders the page of `cmd` named `page`, with `siblings` (the other pages) in SEE ALSO.
fn render_page(
    cmd: Command,
    page: &str,
    siblings: &[String],
    out: &mut dyn Write,
) -> io::Result<()> {
    let cmd = cmd.disable_help_subcommand(true);
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(out)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(out)?;
    }
    if cmd.get_after_long_help().is_some() || cmd.get_after_help().is_some() {
        man.render_extra_section(out)?;
    }
    out.write_all(extra_sections(&cmd, page, siblings).as_bytes())
}

/// The pages a tool's documentation has: the tool's, one per visible subcommand
/// (`peerdma-path`), and the other tool's.
fn page_names(cmd: &Command) -> Vec<String> {
    let name = cmd.get_name().to_string();
    let mut pages = vec![name.clone()];
    for s in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        pages.push(format!("{name}-{}", s.get_name()));
    }
    for other in ["peerdma", "p2pcopy"] {
        if !pages.iter().any(|p| p == other) {
            pages.push(other.to_string());
        }
    }
    pages
}

/// Writes `cmd`'s own man page (roff) to `out`: clap's sections, then EXAMPLES, EXIT
/// STATUS, SEE ALSO and VERSION.
///
/// # Errors
///
/// The I/O error of writing to `out`.
pub fn write_man_page(cmd: Command, out: &mut dyn Write) -> io::Result<()> {
    let pages = page_names(&cmd);
    let name = cmd.get_name().to_string();
    render_page(cmd, &name, &pages, out)
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
    let pages = page_names(&cmd);
    let mut todo = vec![(
        cmd.get_name().to_string(),
        cmd.disable_help_subcommand(true),
    )];
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
        render_page(cmd, &name, &pages, &mut buf)?;
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

    #[derive(Parser)]
    #[command(
        name = "tool",
        version,
        long_version = "1.0\nbuilt for X\n  feature one"
    )]
    struct Tool {
        /// The device.
        src: String,
        /// The engine.
        #[arg(long)]
        via: Option<String>,
        /// Test hook.
        #[arg(long, hide = true)]
        test_revoke_after_ms: Option<u64>,
        /// Test hook with a bool.
        #[arg(long, hide = true)]
        test_hook: bool,
    }

    #[test]
    fn completions_offer_bdfs_and_never_the_hidden_test_hooks() {
        let dir = std::env::temp_dir().join(format!("peerdma-bdfs-{}", std::process::id()));
        for d in ["0000:00:10.0", "0000:00:11.0", "not-a-bdf"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let bdfs = pci_functions(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(bdfs, ["0000:00:10.0", "0000:00:11.0"]);
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let mut out = Vec::new();
            write_completions_with(Tool::command(), shell, &bdfs, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(
                !text.contains("test-revoke") && !text.contains("test-hook"),
                "{shell}: {text}"
            );
            assert!(text.contains("via"), "{shell}: {text}");
            if matches!(shell, Shell::Bash | Shell::Zsh) {
                assert!(
                    text.contains("0000:00:10.0") || text.contains("0000\\:00\\:10.0"),
                    "{shell}: {text}"
                );
                assert!(text.contains("host"), "{shell}: {text}");
            }
        }
    }

    #[test]
    fn man_pages_have_examples_exit_status_see_also_and_the_version_as_written() {
        let mut out = Vec::new();
        write_man_page(Demo::command(), &mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        assert!(
            page.contains(".SH \"EXIT STATUS\"") && page.contains(".SH \"SEE ALSO\""),
            "{page}"
        );
        for code in ["\\fB0\\fR", "\\fB1\\fR", "\\fB2\\fR", "\\fB3\\fR"] {
            assert!(page.contains(code), "{code} missing: {page}");
        }
        assert!(page.contains("\\fBdemo\\-path\\fR(1)"), "{page}");
        assert!(
            !page.contains("help(1)"),
            "a page that is never written: {page}"
        );
        let mut out = Vec::new();
        write_man_page(Tool::command(), &mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        assert!(
            page.contains(".SH VERSION\n.nf\n1.0\nbuilt for X\n  feature one\n.fi"),
            "{page}"
        );
        assert!(!page.contains("test\\-revoke"), "{page}");
        // The real tools' pages carry their examples.
        let mut out = Vec::new();
        render_page(
            Command::new("p2pcopy"),
            "p2pcopy",
            &["p2pcopy".into(), "peerdma".into()],
            &mut out,
        )
        .unwrap();
        let page = String::from_utf8(out).unwrap();
        assert!(
            page.contains(".SH EXAMPLES")
                && page.contains("p2pcopy 01:00.0 02:00.0 \\-\\-size 64M"),
            "{page}"
        );
        assert!(
            page.contains("\\fBpeerdma\\fR(1)") && !page.contains("\\fB4\\fR"),
            "{page}"
        );
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
