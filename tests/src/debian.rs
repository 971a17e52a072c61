//! Fetching Debian packages from a suite the host does not track (sid), without touching
//! the host's own apt configuration: a private sources list, private lists and a private
//! archive cache, all under the testbed cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cache;

/// The suite the 7.2 kernels, their sources and their headers come from.
pub const SUITE: &str = "sid";

/// A private apt configuration pointed at one Debian suite.
pub struct PrivateApt {
    root: PathBuf,
}

impl PrivateApt {
    /// The private apt for `suite`, its lists refreshed when older than a day.
    pub fn new(suite: &str) -> Result<Self> {
        let root = cache::subdir(&format!("apt-{suite}"))?;
        for d in ["lists/partial", "archives/partial"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        std::fs::write(
            root.join("sources.list"),
            format!(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
                 http://deb.debian.org/debian {suite} main\n"
            ),
        )?;
        let apt = PrivateApt { root };
        apt.refresh()?;
        Ok(apt)
    }

    fn options(&self) -> Vec<String> {
        let r = self.root.display();
        vec![
            format!("-o=Dir::Etc::SourceList={r}/sources.list"),
            "-o=Dir::Etc::SourceParts=/dev/null".into(),
            format!("-o=Dir::State::Lists={r}/lists"),
            format!("-o=Dir::Cache={r}"),
            format!("-o=Dir::Cache::archives={r}/archives"),
            "-o=APT::Architecture=amd64".into(),
            "-q".into(),
        ]
    }

    fn refresh(&self) -> Result<()> {
        let stamp = self.root.join("lists/.updated");
        let fresh = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() < 24 * 3600);
        if fresh {
            return Ok(());
        }
        let out = Command::new("apt-get")
            .args(self.options())
            .arg("update")
            .output()
            .context("running apt-get update (is this a Debian machine with apt?)")?;
        if !out.status.success() {
            bail!(
                "apt-get update for the private {} lists failed: {}",
                self.root.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::fs::write(stamp, b"")?;
        Ok(())
    }

    /// The candidate version of `package` in this suite.
    pub fn version(&self, package: &str) -> Result<String> {
        let out = Command::new("apt-cache")
            .args(self.options())
            .args(["show", "--no-all-versions", package])
            .output()
            .context("running apt-cache")?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("package {package} is not in Debian {SUITE}"))
    }

    /// Downloads `package` (the candidate version) and returns the .deb's path.
    pub fn download(&self, package: &str) -> Result<PathBuf> {
        let dir = self.root.join("debs");
        std::fs::create_dir_all(&dir)?;
        let version = self.version(package)?;
        let prefix = format!("{package}_{}_", version.replace(':', "%3a"));
        if let Some(found) = find_prefixed(&dir, &prefix) {
            return Ok(found);
        }
        let status = Command::new("apt-get")
            .args(self.options())
            .args(["download", package])
            .current_dir(&dir)
            // apt's progress belongs on stderr: stdout may carry JSON.
            .stdout(std::io::stderr())
            .status()
            .context("running apt-get download")?;
        if !status.success() {
            bail!("apt-get download {package} from Debian {SUITE} failed ({status})");
        }
        find_prefixed(&dir, &prefix)
            .with_context(|| format!("apt-get download {package} left no {prefix}*.deb"))
    }

    /// Downloads `package` and unpacks it into a cache directory named after it and its
    /// version (done once); returns that directory.
    pub fn unpack(&self, package: &str) -> Result<PathBuf> {
        let version = self.version(package)?;
        let dest = cache::subdir("pkgs")?.join(format!("{package}_{version}"));
        let marker = dest.join(".peerdma-unpacked");
        if marker.exists() {
            return Ok(dest);
        }
        let deb = self.download(package)?;
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::create_dir_all(&dest)?;
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&dest)
            .status()
            .context("running dpkg-deb")?;
        if !status.success() {
            bail!("dpkg-deb -x {} failed ({status})", deb.display());
        }
        std::fs::write(&marker, format!("{package} {version}\n"))?;
        Ok(dest)
    }
}

fn find_prefixed(dir: &Path, prefix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        (name.starts_with(prefix) && name.ends_with(".deb")).then(|| e.path())
    })
}

/// The Linux 7.2 user-space API headers (`linux-libc-dev` from sid), unpacked in the
/// cache: returns the directory to pass to the C compiler with `-I` (its `usr/include`).
/// `PEERDMA_UAPI_HEADERS` names another directory (e.g. `make headers_install` output).
pub fn uapi_headers() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PEERDMA_UAPI_HEADERS") {
        return Ok(PathBuf::from(dir));
    }
    let root = PrivateApt::new(SUITE)?.unpack("linux-libc-dev")?;
    Ok(root.join("usr/include"))
}
