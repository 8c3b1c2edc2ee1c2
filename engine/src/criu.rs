//! Finding the CRIU binary and making sure it can work on this kernel.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The oldest CRIU that cns accepts: 4.1 cannot dump TCP/UDP sockets on
/// kernels >= 6.16 and 3.x fails `criu check` on recent kernels (vDSO bounds).
pub const MIN_VERSION: CriuVersion = CriuVersion { major: 4, minor: 2, sublevel: 0 };

/// Errors while locating or validating CRIU.
#[derive(Debug, thiserror::Error)]
pub enum CriuError {
    #[error("CRIU not found (looked at --criu, $CNS_CRIU, then PATH)")]
    NotFound,
    #[error("CRIU at {path} is not executable: {source}")]
    NotExecutable { path: PathBuf, source: std::io::Error },
    #[error("cannot read the version of {path}: output was {output:?}")]
    BadVersion { path: PathBuf, output: String },
    #[error("CRIU {found} at {path} is too old for kernel {kernel}: cns needs CRIU >= {min} ({why})")]
    TooOld { path: PathBuf, found: CriuVersion, min: CriuVersion, kernel: String, why: &'static str },
}

impl CriuError {
    /// The fix to show the user.
    pub fn hint(&self) -> &'static str {
        match self {
            CriuError::NotFound | CriuError::TooOld { .. } | CriuError::BadVersion { .. } => {
                "run scripts/install-criu (builds CRIU 4.2 from Debian's source), or point --criu / CNS_CRIU at a CRIU >= 4.2"
            }
            CriuError::NotExecutable { .. } => "check the path and its permissions",
        }
    }
}

/// A CRIU version triple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct CriuVersion {
    pub major: u32,
    pub minor: u32,
    pub sublevel: u32,
}

impl std::fmt::Display for CriuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.sublevel)
    }
}

impl CriuVersion {
    /// Parses the `Version: X.Y[.Z]` line of `criu --version`.
    pub fn parse_version_output(out: &str) -> Option<CriuVersion> {
        let line = out.lines().find_map(|l| l.trim().strip_prefix("Version:"))?;
        let mut it = line.trim().split(['.', '-']);
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        let sublevel = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        Some(CriuVersion { major, minor, sublevel })
    }
}

/// A located, version-checked CRIU binary.
#[derive(Debug, Clone)]
pub struct Criu {
    pub path: PathBuf,
    pub version: CriuVersion,
}

impl Criu {
    /// Finds CRIU: `explicit` (from `--criu`), then `$CNS_CRIU`, then `PATH`
    /// (plus the sbin directories root's PATH usually has), and refuses one
    /// that is too old for the running kernel.
    pub fn locate(explicit: Option<&Path>) -> Result<Criu, CriuError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os("CNS_CRIU").filter(|v| !v.is_empty()) {
                Some(p) => PathBuf::from(p),
                None => search_path("criu").ok_or(CriuError::NotFound)?,
            },
        };
        Criu::at(&path)
    }

    /// Like [`Criu::locate`], remembering the version of a binary (by path,
    /// size and mtime) in the file `cache`: running `criu --version` costs a
    /// few milliseconds on every dump and restore.
    pub fn locate_cached(explicit: Option<&Path>, cache: &Path) -> Result<Criu, CriuError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os("CNS_CRIU").filter(|v| !v.is_empty()) {
                Some(p) => PathBuf::from(p),
                None => search_path("criu").ok_or(CriuError::NotFound)?,
            },
        };
        let key = cache_key(&path);
        if let (Some(key), Ok(text)) = (&key, std::fs::read_to_string(cache)) {
            if let Some(v) = text.strip_prefix(key.as_str()).and_then(CriuVersion::parse_version_output) {
                if v >= MIN_VERSION {
                    return Ok(Criu { path, version: v });
                }
            }
        }
        let criu = Criu::at(&path)?;
        if let Some(key) = key {
            let tmp = cache.with_extension(format!("tmp.{}", std::process::id()));
            if std::fs::write(&tmp, format!("{key}Version: {}\n", criu.version)).is_ok() {
                let _ = std::fs::rename(&tmp, cache);
            }
        }
        Ok(criu)
    }

    /// Validates the CRIU at `path`.
    pub fn at(path: &Path) -> Result<Criu, CriuError> {
        let out = Command::new(path)
            .arg("--version")
            .output()
            .map_err(|source| CriuError::NotExecutable { path: path.to_path_buf(), source })?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let version = CriuVersion::parse_version_output(&text)
            .ok_or_else(|| CriuError::BadVersion { path: path.to_path_buf(), output: text.clone() })?;
        if version < MIN_VERSION {
            let kernel = kernel_release();
            let why = if version.major == 4 && version.minor == 1 {
                "4.1 cannot dump TCP/UDP sockets on kernels >= 6.16"
            } else {
                "older CRIU fails `criu check` on recent kernels (vDSO layout)"
            };
            return Err(CriuError::TooOld { path: path.to_path_buf(), found: version, min: MIN_VERSION, kernel, why });
        }
        Ok(Criu { path: path.to_path_buf(), version })
    }
}

/// "path size mtime\n" of a binary, or None when it cannot be stat'ed.
fn cache_key(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(format!("{} {} {}.{}\n", path.display(), m.size(), m.mtime(), m.mtime_nsec()))
}

fn search_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin"];
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// `uname -r` of the running kernel.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_criu_version_lines() {
        let v = CriuVersion::parse_version_output("Version: 4.2.1\n").expect("parse");
        assert_eq!(v, CriuVersion { major: 4, minor: 2, sublevel: 1 });
        let v = CriuVersion::parse_version_output("Version: 3.17\nGitID: v3.17\n").expect("parse");
        assert_eq!(v, CriuVersion { major: 3, minor: 17, sublevel: 0 });
        assert!(CriuVersion::parse_version_output("criu 4.2").is_none());
    }

    #[test]
    fn orders_versions() {
        let v41 = CriuVersion { major: 4, minor: 1, sublevel: 1 };
        assert!(v41 < MIN_VERSION);
        assert!(CriuVersion { major: 4, minor: 2, sublevel: 1 } >= MIN_VERSION);
        assert!(CriuVersion { major: 5, minor: 0, sublevel: 0 } > MIN_VERSION);
    }
}
