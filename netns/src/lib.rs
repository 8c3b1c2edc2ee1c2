//! Network namespaces and veth pairs for cns, over rtnetlink (no `ip` binary).
//!
//! - [`Netlink`]: a small synchronous rtnetlink client bound to one network
//!   namespace (the caller's, or another process's via [`Netlink::for_pid`]).
//! - [`lease`]: the address pool and its leases (one /30 per workload).

pub mod lease;
pub mod nat;
mod netlink;
pub mod nft;
pub mod raw;

pub use lease::{Lease, LeaseError, LeaseStore, Pool};
pub use netlink::{NetError, Netlink};

use std::net::Ipv4Addr;

/// Linux's interface name limit, without the trailing NUL.
pub const IFNAMSIZ: usize = 15;

/// The inner interface name of every workload.
pub const INNER_IF: &str = "eth0";

/// Addresses of one workload's link: the host end and the workload end of a /30.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkAddrs {
    pub host: Ipv4Addr,
    pub inner: Ipv4Addr,
    pub prefix: u8,
}

/// Sets up the host end of a workload's veth: address, up.
pub fn configure_host_end(nl: &Netlink, host_if: &str, addrs: &LinkAddrs) -> Result<(), NetError> {
    let idx = address_host_end(nl, host_if, addrs)?;
    nl.set_up(idx)?;
    Ok(())
}

/// [`configure_host_end`] but for the last step: the address is on, the
/// link still down (no route leads into the workload yet). Returns the
/// link's index, for [`Netlink::set_up`] later.
pub fn address_host_end(nl: &Netlink, host_if: &str, addrs: &LinkAddrs) -> Result<u32, NetError> {
    let idx = nl.link_index(host_if)?.ok_or_else(|| NetError::NoSuchLink(host_if.to_string()))?;
    nl.replace_address(idx, addrs.host, addrs.prefix)?;
    Ok(idx)
}

/// Inside the workload's namespace: `lo` up, and when given, eth0 with its
/// address and a default route through the host end.
pub fn configure_inside(nl: &Netlink, addrs: Option<&LinkAddrs>) -> Result<(), NetError> {
    let lo = nl.link_index("lo")?.ok_or_else(|| NetError::NoSuchLink("lo".into()))?;
    nl.set_up(lo)?;
    if let Some(a) = addrs {
        let eth = nl.link_index(INNER_IF)?.ok_or_else(|| NetError::NoSuchLink(INNER_IF.into()))?;
        nl.flush_addresses(eth)?;
        nl.replace_address(eth, a.inner, a.prefix)?;
        nl.set_up(eth)?;
        nl.replace_default_route(a.host)?;
    }
    Ok(())
}
