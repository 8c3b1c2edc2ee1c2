//! CRIU's network lock, undone over nf_tables netlink (no `nft` binary).
//!
//! While it dumps with `--network-lock nftables`, CRIU adds a table
//! `inet CRIU-<run id>` to the dumped network namespace that drops the
//! tree's traffic, and deletes it at the end. A CRIU killed in between
//! (its `cns dump` was killed) leaves the table, and the workload's network
//! stays blocked. [`criu_lock_tables`] finds such tables; [`delete_table`]
//! removes one.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFTA_TABLE_NAME: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// Prefix of the tables CRIU's nftables network lock creates.
pub const CRIU_TABLE_PREFIX: &str = "CRIU-";

/// One nf_tables table: its family (NFPROTO_*) and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: u8,
    pub name: String,
}

fn open_in(pid: Option<i32>) -> std::io::Result<OwnedFd> {
    let open = || -> std::io::Result<OwnedFd> {
        // SAFETY: plain socket(2); the fd is owned right after.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    match pid {
        None => open(),
        Some(pid) => {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
            std::thread::spawn(move || {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                open()
            })
            .join()
            .map_err(|_| std::io::Error::other("nftables thread panicked"))?
        }
    }
}

/// nlmsghdr + nfgenmsg + attributes.
fn message(ty: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = vec![family, 0];
    body.extend_from_slice(&res_id.to_be_bytes());
    for (t, v) in attrs {
        let len = 4 + v.len();
        body.extend_from_slice(&(len as u16).to_ne_bytes());
        body.extend_from_slice(&t.to_ne_bytes());
        body.extend_from_slice(v);
        body.resize(body.len().div_ceil(4) * 4, 0);
    }
    let mut m = Vec::with_capacity(16 + body.len());
    m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&body);
    m
}

fn send(sock: &OwnedFd, b: &[u8]) -> std::io::Result<()> {
    // SAFETY: sending our own buffer on our own socket.
    let n = unsafe { libc::send(sock.as_raw_fd(), b.as_ptr().cast(), b.len(), 0) };
    if n < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

/// Reads replies until DONE (dumps) or the ack of `ack_seq`; each
/// NEWTABLE-style message body goes to `each`.
fn read_replies(sock: &OwnedFd, ack_seq: Option<u32>, mut each: impl FnMut(&[u8])) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: receiving into a buffer we own, bounded by its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut b = &buf[..usize::try_from(n).unwrap_or(0)];
        if b.is_empty() {
            return Ok(());
        }
        while b.len() >= 16 {
            let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
            let ty = u16::from_ne_bytes([b[4], b[5]]);
            let seq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
            if len < 16 || len > b.len() {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed nf_tables reply"));
            }
            match ty {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let errno = i32::from_ne_bytes([b[16], b[17], b[18], b[19]]);
                    if errno != 0 {
                        return Err(std::io::Error::from_raw_os_error(-errno));
                    }
                    if ack_seq == Some(seq) {
                        return Ok(());
                    }
                }
                _ => each(&b[16..len]),
            }
            b = b.get((len + 3) & !3..).unwrap_or(&[]);
        }
    }
}

/// Every nf_tables table of the network namespace of `pid`.
pub fn tables(pid: Option<i32>) -> std::io::Result<Vec<Table>> {
    let sock = open_in(pid)?;
    let ty = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE;
    send(&sock, &message(ty, (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16, 1, libc::AF_UNSPEC as u8, 0, &[]))?;
    let mut out = Vec::new();
    read_replies(&sock, None, |body| {
        let Some(&family) = body.first() else { return };
        let mut a = body.get(4..).unwrap_or(&[]);
        while a.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([a[0], a[1]]));
            let t = u16::from_ne_bytes([a[2], a[3]]) & 0x3fff;
            if len < 4 || len > a.len() {
                break;
            }
            if t == NFTA_TABLE_NAME {
                let name = String::from_utf8_lossy(&a[4..len]).trim_end_matches('\0').to_string();
                out.push(Table { family, name });
            }
            a = a.get((len + 3) & !3..).unwrap_or(&[]);
        }
    })?;
    Ok(out)
}

/// CRIU network-lock tables left in the netns of `pid`.
pub fn criu_lock_tables(pid: i32) -> std::io::Result<Vec<Table>> {
    Ok(tables(Some(pid))?.into_iter().filter(|t| t.name.starts_with(CRIU_TABLE_PREFIX)).collect())
}

/// Deletes one table in the netns of `pid` (a batch of one, as nf_tables
/// requires).
pub fn delete_table(pid: Option<i32>, t: &Table) -> std::io::Result<()> {
    table_op(pid, NFT_MSG_DELTABLE, t)
}

/// Creates a table (what CRIU's lock does first; used by the tests).
pub fn create_table(pid: Option<i32>, t: &Table) -> std::io::Result<()> {
    table_op(pid, NFT_MSG_NEWTABLE, t)
}

fn table_op(pid: Option<i32>, op: u16, t: &Table) -> std::io::Result<()> {
    let sock = open_in(pid)?;
    let mut name = t.name.as_bytes().to_vec();
    name.push(0);
    let mut batch = message(NFNL_MSG_BATCH_BEGIN, libc::NLM_F_REQUEST as u16, 1, libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES, &[]);
    let ty = (NFNL_SUBSYS_NFTABLES << 8) | op;
    let flags = libc::NLM_F_REQUEST | libc::NLM_F_ACK | if op == NFT_MSG_NEWTABLE { libc::NLM_F_CREATE } else { 0 };
    batch.extend(message(ty, flags as u16, 2, t.family, 0, &[(NFTA_TABLE_NAME, &name)]));
    batch.extend(message(NFNL_MSG_BATCH_END, libc::NLM_F_REQUEST as u16, 3, libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES, &[]));
    send(&sock, &batch)?;
    read_replies(&sock, Some(2), |_| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_aligned_and_sized() {
        let m = message(0x0a02, 5, 2, 1, 0, &[(NFTA_TABLE_NAME, b"CRIU-1\0")]);
        assert_eq!(m.len() % 4, 0);
        assert_eq!(u32::from_ne_bytes([m[0], m[1], m[2], m[3]]) as usize, m.len());
        assert_eq!(&m[24..31], b"CRIU-1\0");
    }

    #[test]
    fn finds_and_deletes_a_criu_lock_table_in_a_fresh_netns() {
        // A thread in a network namespace of its own: nothing else is touched.
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
            let t = Table { family: 1, name: "CRIU-test".into() };
            assert!(tables(None).expect("dump").is_empty(), "a fresh netns has no tables");
            create_table(None, &t).expect("create");
            assert_eq!(tables(None).expect("dump"), vec![t.clone()]);
            delete_table(None, &t).expect("delete");
            assert!(tables(None).expect("dump").is_empty());
        })
        .join()
        .expect("netns thread");
    }
}
