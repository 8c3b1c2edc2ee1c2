//! The address pool and its leases.
//!
//! The pool is an IPv4 prefix (default 10.88.0.0/16) cut into /30 subnets;
//! each workload leases one: `.1` for the host end of its veth, `.2` for the
//! workload. A lease is a file named after the subnet, created with
//! `O_CREAT|O_EXCL` in the lease directory, so two concurrent `cns run`s can
//! never take the same subnet, and releasing it is removing the file.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::LinkAddrs;

/// Distinguishes temp files of claims made by threads of one process.
static TMP_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Lease failures.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("invalid address {0:?}: expected A.B.C.D or A.B.C.D/30 (or /31)")]
    BadAddress(String),
    #[error("invalid pool {0:?}: expected an IPv4 prefix between /8 and /29, e.g. 10.88.0.0/16")]
    BadPool(String),
    #[error("address {addr} is already leased to workload {owner}")]
    Taken { addr: Ipv4Addr, owner: String },
    #[error("the address pool {0} is exhausted")]
    Exhausted(String),
    #[error("lease store {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// An IPv4 pool cut into /30s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool { base: Ipv4Addr::new(10, 88, 0, 0), prefix: 16 }
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) }
}

impl std::str::FromStr for Pool {
    type Err = LeaseError;
    fn from_str(s: &str) -> Result<Pool, LeaseError> {
        let bad = || LeaseError::BadPool(s.to_string());
        let (ip, p) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if !(8..=29).contains(&prefix) {
            return Err(bad());
        }
        Ok(Pool { base: Ipv4Addr::from(u32::from(ip) & mask(prefix)), prefix })
    }
}

impl Pool {
    /// Number of /30 subnets.
    pub fn slots(&self) -> u32 {
        1 << (30 - u32::from(self.prefix))
    }

    /// Addresses of slot `i`.
    pub fn slot(&self, i: u32) -> LinkAddrs {
        let net = u32::from(self.base) + 4 * i;
        LinkAddrs { host: Ipv4Addr::from(net + 1), inner: Ipv4Addr::from(net + 2), prefix: 30 }
    }
}

/// Parses `--ip`: the workload's address, `A.B.C.D[/30|/31]`. The host end
/// takes the other usable address of the /30 (or /31).
pub fn parse_ip(s: &str) -> Result<LinkAddrs, LeaseError> {
    let bad = || LeaseError::BadAddress(s.to_string());
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, p)) => (ip, p.parse::<u8>().map_err(|_| bad())?),
        None => (s, 30),
    };
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let v = u32::from(ip);
    let net = v & mask(prefix);
    let host = match prefix {
        30 => {
            let off = v - net;
            if off == 0 || off == 3 {
                return Err(bad());
            }
            net + if off == 1 { 2 } else { 1 }
        }
        31 => net + (1 - (v - net)),
        _ => return Err(bad()),
    };
    if ip.is_loopback() || ip.is_multicast() || ip.is_unspecified() || ip.is_broadcast() {
        return Err(bad());
    }
    Ok(LinkAddrs { host: Ipv4Addr::from(host), inner: ip, prefix })
}

/// A held lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    pub owner: String,
    pub addrs: LinkAddrs,
}

/// The directory of lease files.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    pub dir: PathBuf,
}

impl LeaseStore {
    pub fn new(dir: impl Into<PathBuf>) -> LeaseStore {
        LeaseStore { dir: dir.into() }
    }

    fn io(&self, source: io::Error) -> LeaseError {
        LeaseError::Io { path: self.dir.clone(), source }
    }

    fn key(addrs: &LinkAddrs) -> String {
        Ipv4Addr::from(u32::from(addrs.inner) & mask(addrs.prefix.min(30))).to_string()
    }

    fn path(&self, addrs: &LinkAddrs) -> PathBuf {
        self.dir.join(Self::key(addrs))
    }

    /// Tries to take `addrs` for `owner`; Ok(false) if someone holds it.
    fn try_take(&self, owner: &str, addrs: &LinkAddrs) -> Result<bool, LeaseError> {
        fs::create_dir_all(&self.dir).map_err(|e| self.io(e))?;
        let path = self.path(addrs);
        // Written whole to a temp file, then link(2)ed into place: the link
        // is the atomic, exclusive claim, and no reader sees a half lease.
        let lease = Lease { owner: owner.to_string(), addrs: *addrs };
        let text = serde_json::to_string(&lease).map_err(|e| self.io(io::Error::other(e)))?;
        let tmp = self.dir.join(format!(".tmp.{}.{}", std::process::id(), TMP_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(|e| self.io(e))?;
        f.write_all(text.as_bytes()).map_err(|e| self.io(e))?;
        drop(f);
        let r = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Who holds the subnet of `addrs`.
    pub fn holder(&self, addrs: &LinkAddrs) -> Option<Lease> {
        let text = fs::read_to_string(self.path(addrs)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Takes the specific `addrs` for `owner`.
    pub fn take(&self, owner: &str, addrs: &LinkAddrs) -> Result<Lease, LeaseError> {
        if self.try_take(owner, addrs)? {
            return Ok(Lease { owner: owner.to_string(), addrs: *addrs });
        }
        let holder = self.holder(addrs).map_or_else(|| "(unknown)".to_string(), |l| l.owner);
        if holder == owner {
            return Ok(Lease { owner: owner.to_string(), addrs: *addrs });
        }
        Err(LeaseError::Taken { addr: addrs.inner, owner: holder })
    }

    /// Takes the first free /30 of `pool` for `owner`. The lease directory
    /// is read once and held subnets are skipped without a claim each (a
    /// claim is a file written and linked: with many workloads, most of a
    /// launch); the claim of a free-looking subnet is still the exclusive
    /// link, so a racing command that took it meanwhile only moves this
    /// one on to the next.
    pub fn allocate(&self, pool: &Pool, owner: &str) -> Result<Lease, LeaseError> {
        let held = self.held_keys();
        // Slot 0 is skipped: its network address equals the pool's.
        for i in 1..pool.slots() {
            let addrs = pool.slot(i);
            if held.contains(&Self::key(&addrs)) {
                continue;
            }
            if self.try_take(owner, &addrs)? {
                return Ok(Lease { owner: owner.to_string(), addrs });
            }
        }
        Err(LeaseError::Exhausted(pool.to_string()))
    }

    /// Names of the lease files (temp files of claims in progress skipped).
    fn held_keys(&self) -> std::collections::HashSet<String> {
        let Ok(rd) = fs::read_dir(&self.dir) else { return Default::default() };
        rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !n.starts_with('.')).collect()
    }

    /// Releases the lease of `addrs` if `owner` holds it.
    pub fn release(&self, owner: &str, addrs: &LinkAddrs) -> Result<(), LeaseError> {
        match self.holder(addrs) {
            Some(l) if l.owner == owner => match fs::remove_file(self.path(addrs)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(self.io(e)),
            },
            _ => Ok(()),
        }
    }

    /// All leases (temp files of claims in progress are skipped).
    pub fn list(&self) -> Vec<Lease> {
        let Ok(rd) = fs::read_dir(&self.dir) else { return Vec::new() };
        rd.flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| fs::read_to_string(e.path()).ok())
            .filter_map(|t| serde_json::from_str(&t).ok())
            .collect()
    }

    /// The directory, for diagnostics.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_parses_and_slots() {
        let p: Pool = "10.88.0.0/16".parse().expect("pool");
        assert_eq!(p.slots(), 16384);
        let s = p.slot(1);
        assert_eq!((s.host, s.inner, s.prefix), ("10.88.0.5".parse().expect("ip"), "10.88.0.6".parse().expect("ip"), 30));
        assert!("10.88.0.0/30".parse::<Pool>().is_err());
        assert!("nonsense".parse::<Pool>().is_err());
    }

    #[test]
    fn ip_flag_parses() {
        let a = parse_ip("10.9.0.2").expect("ip");
        assert_eq!(a.host, Ipv4Addr::new(10, 9, 0, 1));
        let a = parse_ip("10.9.0.1/30").expect("ip");
        assert_eq!(a.host, Ipv4Addr::new(10, 9, 0, 2));
        let a = parse_ip("10.9.0.5/31").expect("ip");
        assert_eq!(a.host, Ipv4Addr::new(10, 9, 0, 4));
        for bad in ["10.9.0.0/30", "10.9.0.3", "10.9.0.2/24", "1.2.3", "127.0.0.2", "x/30"] {
            assert!(parse_ip(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn leases_are_exclusive_and_released() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = LeaseStore::new(dir.path());
        let pool: Pool = "10.77.0.0/28".parse().expect("pool");
        let a = store.allocate(&pool, "a").expect("a");
        let b = store.allocate(&pool, "b").expect("b");
        assert_ne!(a.addrs, b.addrs);
        let c = store.allocate(&pool, "c").expect("c");
        assert!(matches!(store.allocate(&pool, "d"), Err(LeaseError::Exhausted(_))));
        assert!(matches!(store.take("d", &b.addrs), Err(LeaseError::Taken { .. })));
        store.release("b", &b.addrs).expect("release");
        assert_eq!(store.allocate(&pool, "d").expect("d").addrs, b.addrs);
        assert_eq!(store.list().len(), 3);
        let _ = c;
    }

    #[test]
    fn allocation_skips_held_subnets_without_claiming_them() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = LeaseStore::new(dir.path());
        let pool: Pool = "10.78.0.0/24".parse().expect("pool");
        let taken: Vec<_> = (0..20).map(|i| store.allocate(&pool, &format!("w{i}")).expect("alloc").addrs).collect();
        // A gap in the middle is found again, and the held ones stay theirs.
        store.release("w7", &taken[7]).expect("release");
        assert_eq!(store.allocate(&pool, "x").expect("x").addrs, taken[7]);
        assert_eq!(store.holder(&taken[8]).map(|l| l.owner), Some("w8".to_string()));
        // No temp file of a claim is left behind.
        let stray = fs::read_dir(dir.path()).expect("dir").flatten().filter(|e| e.file_name().to_string_lossy().starts_with('.')).count();
        assert_eq!(stray, 0);
        assert_eq!(store.list().len(), 20);
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        let dir = tempfile::tempdir().expect("tmp");
        let pool = Pool::default();
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let store = LeaseStore::new(dir.path());
                std::thread::spawn(move || store.allocate(&pool, &format!("w{i}")).expect("alloc").addrs)
            })
            .collect();
        let mut got: Vec<_> = handles.into_iter().map(|h| h.join().expect("join").inner).collect();
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 16);
    }
}
