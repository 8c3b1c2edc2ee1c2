//! How cns writes its own files: private modes, crash-safe replacement,
//! never through a symlink, never re-permissioning what exists.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Context, Result};

/// A random 64-bit value (getrandom(2); pid and time if it ever fails).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: b is a valid writable buffer of b.len() bytes.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        return t ^ u64::from(std::process::id()).rotate_left(32);
    }
    u64::from_le_bytes(b)
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether the file at `path` passes `same` (a full comparison), asked only
/// when it changed since it last passed: the pass is remembered in
/// `stamp_file` by the file's path, inode, size and ctime, which any change
/// to the file moves. Keep `stamp_file` where workloads cannot write.
pub fn verified(path: &Path, stamp_file: &Path, same: impl FnOnce() -> bool) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = fs::metadata(path) else { return false };
    let stamp = format!("{} {} {} {} {}\n", path.display(), m.ino(), m.size(), m.ctime(), m.ctime_nsec());
    if fs::read_to_string(stamp_file).is_ok_and(|s| s == stamp) {
        return true;
    }
    if !same() {
        return false;
    }
    let _ = write_transient(stamp_file, stamp.as_bytes(), 0o600);
    true
}

/// Replaces `path` with `data` atomically and durably: a fresh temp file
/// (O_EXCL|O_NOFOLLOW, unpredictable name) in the same directory, written
/// and fsync-ed, renamed over `path`, then the directory fsync-ed. A crash
/// leaves the old or the new file, never a torn one; a symlink planted at
/// the temp name is never followed.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    write_replace(path, data, mode, true)
}

/// As [`write_atomic`], without the fsyncs: for files that only need to
/// survive the death of a cns process, not of the machine (recovery
/// markers, caches). Still never torn, never through a symlink.
pub fn write_transient(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    write_replace(path, data, mode, false)
}

fn write_replace(path: &Path, data: &[u8], mode: u32, durable: bool) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let base = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{base}.tmp.{:016x}", random_u64()));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    let r = f.write_all(data).and_then(|()| if durable { f.sync_all() } else { Ok(()) }).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = r {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    if durable {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Creates `dir` and any missing parents with mode 0700. Directories that
/// exist are left exactly as they are (never chmod-ed).
pub fn mkdir_private(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Opens `path` for appending, creating it 0600 (and its directory 0700)
/// when missing, emptied when `truncate`: workload logs and the stdio
/// mountpoint. Never follows a symlink at `path`.
pub fn create_private_file(path: &Path, truncate: bool) -> Result<File> {
    if let Some(dir) = path.parent() {
        mkdir_private(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .and_then(|f| {
            if truncate {
                f.set_len(0)?;
            }
            Ok(f)
        })
        .with_context(|| format!("cannot create {}", path.display()))
}

/// Checks that a pidfile can be written (its directory exists).
pub fn check_pidfile(p: Option<&Path>) -> Result<()> {
    if let Some(p) = p {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(crate::error::Error::invalid(
                format!("cannot write pidfile {}: directory {} does not exist", p.display(), dir.display()),
                "create the directory first or choose another path",
            ));
        }
    }
    Ok(())
}

/// Writes a pidfile atomically.
pub fn write_pidfile(p: &Path, pid: i32) -> Result<()> {
    let abs = if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir()?.join(p) };
    crate::files::write_atomic(&abs, format!("{pid}\n").as_bytes(), 0o644).with_context(|| format!("cannot write pidfile {}", p.display()))
}

/// Unix time now, in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("x.json");
        write_atomic(&p, b"one", 0o600).expect("write");
        write_atomic(&p, b"two", 0o600).expect("write");
        assert_eq!(fs::read(&p).expect("read"), b"two");
        assert_eq!(fs::read_dir(d.path()).expect("ls").count(), 1);
    }

    #[test]
    fn mkdir_private_leaves_existing_modes_alone() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tmp");
        let shared = d.path().join("shared");
        fs::create_dir(&shared).expect("mkdir");
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).expect("chmod");
        mkdir_private(&shared.join("mine")).expect("mkdir");
        assert_eq!(fs::metadata(&shared).expect("stat").permissions().mode() & 0o7777, 0o1777);
        assert_eq!(fs::metadata(shared.join("mine")).expect("stat").permissions().mode() & 0o777, 0o700);
    }
}
