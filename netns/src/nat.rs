//! Outbound network for a workload, over nf_tables netlink (no `nft`
//! binary): one table per workload in the host's namespace, `ip cns-NAME`,
//! so adding and removing a workload's rules is one batch each and a table
//! left by a crashed command is found by its name.
//!
//! With outbound access the table holds a `nat` chain on postrouting:
//! `ip saddr ADDR oifname != "cns-*" masquerade` — the workload's packets
//! leave with the host's address, except towards other workloads. Without
//! (`--no-outbound`) it holds a `filter` chain on forward that drops what
//! the workload sends past the host: `ip saddr ADDR drop` — even when IP
//! forwarding is on for other workloads.
//!
//! [`ForwardingGuard`] turns IPv4 forwarding on for the first workload that
//! needs it and puts the host's own value back when the last goes.

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::nft::{Table, tables};
use crate::raw;

// nfnetlink and nf_tables numbers (linux/netfilter/nfnetlink.h, nf_tables.h),
// shared with nft.rs.
pub(crate) const NETLINK_NETFILTER: i32 = 12;
pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(crate) const NFT_MSG_NEWTABLE: u16 = 0;
pub(crate) const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
pub(crate) const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub(crate) const NFNL_MSG_BATCH_END: u16 = 0x11;
const NLA_F_NESTED: u16 = 0x8000;
const NFPROTO_IPV4: u8 = 2;

const NF_INET_FORWARD: u32 = 2;
const NF_INET_POST_ROUTING: u32 = 4;
const NF_ACCEPT: u32 = 1;
const NF_DROP: u32 = 0;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_META_OIFNAME: u32 = 7;

/// Prefix of the host ends of workloads' veths (traffic between workloads
/// is not masqueraded).
pub const HOST_IF_PREFIX: &str = "cns-";

/// Prefix of the tables cns makes.
pub const TABLE_PREFIX: &str = "cns-";

/// A netlink attribute tree, serialised with 4-byte alignment.
pub(crate) enum Attr {
    Bytes(u16, Vec<u8>),
    Nested(u16, Vec<Attr>),
}

fn s(t: u16, v: &str) -> Attr {
    let mut b = v.as_bytes().to_vec();
    b.push(0);
    Attr::Bytes(t, b)
}

fn be32(t: u16, v: u32) -> Attr {
    Attr::Bytes(t, v.to_be_bytes().to_vec())
}

impl Attr {
    fn write(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0]);
        let ty = match self {
            Attr::Bytes(t, v) => {
                out.extend_from_slice(v);
                *t
            }
            Attr::Nested(t, children) => {
                for c in children {
                    c.write(out);
                }
                *t | NLA_F_NESTED
            }
        };
        let len = (out.len() - start) as u16;
        out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        out[start + 2..start + 4].copy_from_slice(&ty.to_ne_bytes());
        out.resize(out.len().div_ceil(4) * 4, 0);
    }
}

/// One nf_tables message: nlmsghdr + nfgenmsg + attributes. `op` is an
/// NFT_MSG_* (in the nf_tables subsystem) or a batch begin/end type.
pub(crate) fn message(op: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[Attr]) -> Vec<u8> {
    let mut body = vec![family, 0];
    body.extend_from_slice(&res_id.to_be_bytes());
    for a in attrs {
        a.write(&mut body);
    }
    let ty = if op >= NFNL_MSG_BATCH_BEGIN { op } else { (NFNL_SUBSYS_NFTABLES << 8) | op };
    let mut m = Vec::with_capacity(16 + body.len());
    m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&body);
    m
}

fn expr(name: &str, data: Vec<Attr>) -> Attr {
    // NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA }
    let mut e = vec![s(1, name)];
    if !data.is_empty() {
        e.push(Attr::Nested(2, data));
    }
    Attr::Nested(1, e)
}

/// `ip saddr == addr` into register 1 and a compare.
fn saddr_is(addr: Ipv4Addr) -> [Attr; 2] {
    [
        expr("payload", vec![be32(1, NFT_REG_1), be32(2, NFT_PAYLOAD_NETWORK_HEADER), be32(3, 12), be32(4, 4)]),
        expr("cmp", vec![be32(1, NFT_REG_1), be32(2, NFT_CMP_EQ), Attr::Nested(3, vec![Attr::Bytes(1, addr.octets().to_vec())])]),
    ]
}

/// The table's name for workload `name`.
pub fn table_name(name: &str) -> String {
    format!("{TABLE_PREFIX}{name}")
}

/// What a workload's table does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Masquerade its packets out of the host.
    Outbound,
    /// Drop what it sends past the host.
    Isolated,
}

/// The batch that (re)creates the table of workload `name` at `addr`.
fn batch(name: &str, addr: Ipv4Addr, policy: Policy) -> Vec<u8> {
    let table = table_name(name);
    let mut seq = 1;
    let mut next = || {
        seq += 1;
        seq
    };
    let req = libc::NLM_F_REQUEST as u16;
    let create = (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE) as u16;
    // The table must be new (EEXIST otherwise): its rules are never added
    // to an old one's.
    let create_new = create | libc::NLM_F_EXCL as u16;
    let mut b = message(NFNL_MSG_BATCH_BEGIN, req, 1, libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES, &[]);
    b.extend(message(NFT_MSG_NEWTABLE, create_new, next(), NFPROTO_IPV4, 0, &[s(1, &table)]));
    let (chain, ty, hook, prio, rule) = match policy {
        Policy::Outbound => {
            let [p, c] = saddr_is(addr);
            let iface = HOST_IF_PREFIX.as_bytes().to_vec();
            let rule = vec![
                p,
                c,
                expr("meta", vec![be32(2, NFT_META_OIFNAME), be32(1, NFT_REG_1)]),
                expr("cmp", vec![be32(1, NFT_REG_1), be32(2, NFT_CMP_NEQ), Attr::Nested(3, vec![Attr::Bytes(1, iface)])]),
                expr("masq", vec![]),
            ];
            ("postrouting", "nat", NF_INET_POST_ROUTING, 100u32, rule)
        }
        Policy::Isolated => {
            let [p, c] = saddr_is(addr);
            let drop = expr("immediate", vec![be32(1, NFT_REG_VERDICT), Attr::Nested(2, vec![Attr::Nested(2, vec![be32(1, NF_DROP)])])]);
            ("forward", "filter", NF_INET_FORWARD, 0u32, vec![p, c, drop])
        }
    };
    b.extend(message(
        NFT_MSG_NEWCHAIN,
        create,
        next(),
        NFPROTO_IPV4,
        0,
        &[s(1, &table), s(3, chain), Attr::Nested(4, vec![be32(1, hook), be32(2, prio)]), be32(5, NF_ACCEPT), s(7, ty)],
    ));
    b.extend(message(NFT_MSG_NEWRULE, create | libc::NLM_F_APPEND as u16, next(), NFPROTO_IPV4, 0, &[s(1, &table), s(2, chain), Attr::Nested(4, rule)]));
    b.extend(message(NFNL_MSG_BATCH_END, req, next(), libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES, &[]));
    b
}

/// Every message of a batch is acked; reads until the last one's.
fn send_batch(b: &[u8], last_seq: u32) -> io::Result<()> {
    let sock = raw::socket(NETLINK_NETFILTER, None)?;
    raw::send(&sock, b)?;
    raw::receive(&sock, Some(last_seq), |_, _| Ok(()))
}

/// Creates (or replaces) the table of workload `name` in the host's netns.
/// One transaction when the table is new (the common case: no listing of
/// the host's tables first); an old table is deleted and the batch sent
/// again.
pub fn install(name: &str, addr: Ipv4Addr, policy: Policy) -> io::Result<()> {
    // Sequence numbers: 1 begin, 2 table, 3 chain, 4 rule, 5 end; the rule's ack is the last.
    let b = batch(name, addr, policy);
    match send_batch(&b, 4) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            remove(name)?;
            send_batch(&b, 4)
        }
        r => r,
    }
}

/// Deletes the table of workload `name` (absent: nothing to do).
pub fn remove(name: &str) -> io::Result<()> {
    let t = Table { family: NFPROTO_IPV4, name: table_name(name) };
    if !tables(None)?.contains(&t) {
        return Ok(());
    }
    let req = libc::NLM_F_REQUEST as u16;
    let mut b = message(NFNL_MSG_BATCH_BEGIN, req, 1, libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES, &[]);
    b.extend(message(NFT_MSG_DELTABLE, (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16, 2, NFPROTO_IPV4, 0, &[s(1, &t.name)]));
    b.extend(message(NFNL_MSG_BATCH_END, req, 3, libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES, &[]));
    match send_batch(&b, 2) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

/// Names of the workloads that have a table on this host.
pub fn installed() -> io::Result<Vec<String>> {
    Ok(tables(None)?.into_iter().filter(|t| t.family == NFPROTO_IPV4).filter_map(|t| t.name.strip_prefix(TABLE_PREFIX).map(str::to_string)).collect())
}

/// IPv4 forwarding, on while any workload needs it. The host's own value
/// is kept in `saved` (under cns's state dir) from the moment cns turns
/// forwarding on until it puts it back, so a crash in between is undone by
/// the next command's [`ForwardingGuard::settle`].
#[derive(Debug)]
pub struct ForwardingGuard<'a> {
    pub saved: &'a Path,
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

impl ForwardingGuard<'_> {
    /// Forwarding on; the host's value remembered when cns is the one turning it on.
    pub fn need(&self) -> io::Result<()> {
        let now = std::fs::read_to_string(IP_FORWARD)?;
        if now.trim() == "1" {
            return Ok(());
        }
        if !self.saved.exists() {
            std::fs::write(self.saved, now.trim())?;
        }
        std::fs::write(IP_FORWARD, "1")
    }

    /// When no workload needs forwarding any more (`in_use` false), puts
    /// the host's own value back, if cns changed it.
    pub fn settle(&self, in_use: bool) -> io::Result<()> {
        if in_use {
            return Ok(());
        }
        let Ok(old) = std::fs::read_to_string(self.saved) else { return Ok(()) };
        let old = old.trim();
        if old == "0" || old == "1" {
            std::fs::write(IP_FORWARD, old)?;
        }
        std::fs::remove_file(self.saved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_aligned_and_nest() {
        for p in [Policy::Outbound, Policy::Isolated] {
            let b = batch("w", Ipv4Addr::new(10, 88, 0, 2), p);
            assert_eq!(b.len() % 4, 0);
            // Five messages, each with a length that fits.
            let mut off = 0;
            let mut n = 0;
            while off < b.len() {
                let len = u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]) as usize;
                assert!(len >= 16 && off + len <= b.len());
                off += len;
                n += 1;
            }
            assert_eq!(n, 5);
        }
    }

    #[test]
    fn forwarding_goes_back_to_the_hosts_value_when_nothing_needs_it() {
        // In a network namespace of its own: /proc/sys/net is per namespace.
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
            let dir = tempfile::tempdir().expect("dir");
            let saved = dir.path().join("ip_forward");
            let g = ForwardingGuard { saved: &saved };
            std::fs::write(IP_FORWARD, "0").expect("off");
            g.need().expect("need");
            assert_eq!(std::fs::read_to_string(IP_FORWARD).expect("read").trim(), "1");
            assert_eq!(std::fs::read_to_string(&saved).expect("saved"), "0");
            g.need().expect("need again");
            g.settle(true).expect("still in use");
            assert_eq!(std::fs::read_to_string(IP_FORWARD).expect("read").trim(), "1");
            g.settle(false).expect("settle");
            assert_eq!(std::fs::read_to_string(IP_FORWARD).expect("read").trim(), "0");
            assert!(!saved.exists());
            // A host that had it on keeps it on: cns saved nothing, restores nothing.
            std::fs::write(IP_FORWARD, "1").expect("on");
            g.need().expect("need");
            g.settle(false).expect("settle");
            assert_eq!(std::fs::read_to_string(IP_FORWARD).expect("read").trim(), "1");
        })
        .join()
        .expect("netns thread");
    }

    #[test]
    fn tables_install_and_go_in_a_fresh_netns() {
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
            for p in [Policy::Outbound, Policy::Isolated] {
                install("unit", Ipv4Addr::new(10, 88, 9, 2), p).expect("install");
                assert_eq!(installed().expect("list"), vec!["unit".to_string()]);
                install("unit", Ipv4Addr::new(10, 88, 9, 2), p).expect("install again");
                remove("unit").expect("remove");
                assert!(installed().expect("list").is_empty());
            }
            remove("unit").expect("removing what is not there");
        })
        .join()
        .expect("netns thread");
    }
}
