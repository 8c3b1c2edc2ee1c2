//! CRIU's network lock, undone over nf_tables netlink (no `nft` binary).
//!
//! While it dumps with `--network-lock nftables`, CRIU adds a table
//! `inet CRIU-<run id>` to the dumped network namespace that drops the
//! tree's traffic, and deletes it at the end. A CRIU killed in between
//! (its `cns dump` was killed) leaves the table, and the workload's network
//! stays blocked. [`criu_lock_tables`] finds such tables; [`delete_table`]
//! removes one.

use crate::raw;

use crate::nat::{NETLINK_NETFILTER, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFNL_SUBSYS_NFTABLES, NFT_MSG_DELTABLE, NFT_MSG_NEWTABLE};

const NFT_MSG_GETTABLE: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;
/// Prefix of the tables CRIU's nftables network lock creates.
pub const CRIU_TABLE_PREFIX: &str = "CRIU-";

/// One nf_tables table: its family (NFPROTO_*) and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: u8,
    pub name: String,
}

/// nlmsghdr + nfgenmsg + flat attributes (nat.rs builds the nested ones).
fn message(ty: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let attrs: Vec<crate::nat::Attr> = attrs.iter().map(|(t, v)| crate::nat::Attr::Bytes(*t, v.to_vec())).collect();
    crate::nat::message(ty, flags, seq, family, res_id, &attrs)
}

/// Every nf_tables table of the network namespace of `pid`.
pub fn tables(pid: Option<i32>) -> std::io::Result<Vec<Table>> {
    let sock = raw::socket(NETLINK_NETFILTER, pid)?;
    let ty = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE;
    raw::send(&sock, &message(ty, (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16, 1, libc::AF_UNSPEC as u8, 0, &[]))?;
    let mut out = Vec::new();
    raw::receive(&sock, None, |_, body| {
        let Some(&family) = body.first() else { return Ok(()) };
        // After the 4-byte nfgenmsg.
        for (t, v) in raw::attributes(body, 4) {
            if t == NFTA_TABLE_NAME {
                out.push(Table { family, name: String::from_utf8_lossy(v).trim_end_matches('\0').to_string() });
            }
        }
        Ok(())
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
    let sock = raw::socket(NETLINK_NETFILTER, pid)?;
    let mut name = t.name.as_bytes().to_vec();
    name.push(0);
    let mut batch = message(NFNL_MSG_BATCH_BEGIN, libc::NLM_F_REQUEST as u16, 1, libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES, &[]);
    let ty = (NFNL_SUBSYS_NFTABLES << 8) | op;
    let flags = libc::NLM_F_REQUEST | libc::NLM_F_ACK | if op == NFT_MSG_NEWTABLE { libc::NLM_F_CREATE } else { 0 };
    batch.extend(message(ty, flags as u16, 2, t.family, 0, &[(NFTA_TABLE_NAME, &name)]));
    batch.extend(message(NFNL_MSG_BATCH_END, libc::NLM_F_REQUEST as u16, 3, libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES, &[]));
    raw::send(&sock, &batch)?;
    raw::receive(&sock, Some(2), |_, _| Ok(()))
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
