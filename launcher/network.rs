//! The launcher's side of networking: turning flags into a plan, leasing
//! the address, creating the host end of the veth, and undoing it all.

use anyhow::Context;
use cns_netns::{LeaseStore, LinkAddrs, Netlink, Pool};

use crate::store::NetConfig;
use crate::{Ctx, bail_hint};

/// What `--net`, `--ip` and `-p` asked for.
#[derive(Debug, Clone)]
pub struct NetPlan {
    pub mode: String,
    pub ip: Option<LinkAddrs>,
    pub publish: Vec<(u16, u16)>,
}

/// Validates the network flags.
pub fn plan(mode: &str, ip: Option<&str>, publish: &[String]) -> anyhow::Result<NetPlan> {
    if mode != "veth" && mode != "none" {
        bail_hint!("use --net veth (default) or --net none", "unknown network mode {mode:?}");
    }
    if mode == "none" && (ip.is_some() || !publish.is_empty()) {
        bail_hint!("drop --ip/-p, or use --net veth", "--net none gives the workload only lo: --ip and -p need a veth");
    }
    let ip = ip.map(cns_netns::lease::parse_ip).transpose().map_err(|e| crate::error::hinted(e.to_string(), "e.g. --ip 10.88.7.2/30"))?;
    let mut ports = Vec::new();
    for p in publish {
        let parsed = p.split_once(':').and_then(|(h, c)| Some((h.parse::<u16>().ok()?, c.parse::<u16>().ok()?)));
        match parsed {
            Some((h, c)) if h != 0 && c != 0 => ports.push((h, c)),
            _ => bail_hint!("use -p HOSTPORT:PORT, e.g. -p 8080:80", "invalid port mapping {p:?}"),
        }
    }
    Ok(NetPlan { mode: mode.to_string(), ip, publish: ports })
}

/// The configured address pool.
pub fn pool(ctx: &Ctx) -> anyhow::Result<Pool> {
    match &ctx.config.address_pool {
        Some(p) => p.parse().map_err(|e: cns_netns::LeaseError| crate::error::hinted(e.to_string(), "fix address_pool in /etc/cns/config.toml")),
        None => Ok(Pool::default()),
    }
}

pub fn lease_store(ctx: &Ctx) -> LeaseStore {
    LeaseStore::new(ctx.store.paths.leases())
}

/// Leases the workload's address (none for `--net none`).
pub fn lease(ctx: &Ctx, name: &str, plan: &NetPlan) -> anyhow::Result<Option<LinkAddrs>> {
    if plan.mode == "none" {
        return Ok(None);
    }
    let store = lease_store(ctx);
    let lease = match &plan.ip {
        Some(a) => store.take(name, a).map_err(|e| crate::error::hinted(e.to_string(), "pick another --ip, or leave it out to get a free one"))?,
        None => store.allocate(&pool(ctx)?, name).map_err(|e| crate::error::hinted(e.to_string(), "remove old workloads or set a larger address_pool"))?,
    };
    Ok(Some(lease.addrs))
}

/// Creates the veth pair for the workload whose root is `pid`: the host end
/// named `net.host_if` with the host address, `eth0` in the workload's netns.
pub fn attach(net: &NetConfig, pid: i32) -> anyhow::Result<()> {
    let (Some(host_if), Some(addrs)) = (&net.host_if, &net.addrs) else { return Ok(()) };
    let nl = Netlink::new().context("netlink")?;
    // A stale host end of an earlier run of this name (the netns of a dumped
    // tree is torn down asynchronously).
    let _ = nl.delete_link(host_if);
    nl.create_veth(host_if, cns_netns::INNER_IF, pid).map_err(|e| {
        crate::error::hinted(format!("cannot create veth {host_if}: {e}"), "is the veth module available (CONFIG_VETH)?")
    })?;
    cns_netns::configure_host_end(&nl, host_if, addrs).with_context(|| format!("cannot configure {host_if}"))?;
    Ok(())
}

/// Removes the host end of a workload's veth, if it is there.
pub fn delete_host_end(net: &NetConfig) {
    if let Some(h) = &net.host_if {
        if let Ok(nl) = Netlink::new() {
            let _ = nl.delete_link(h);
        }
    }
}

/// Undo list for a failed run or restore.
#[derive(Debug)]
pub struct Rollback<'a> {
    ctx: &'a Ctx,
    name: String,
    pub lease: Option<LinkAddrs>,
    pub host_if: Option<String>,
}

impl<'a> Rollback<'a> {
    pub fn new(ctx: &'a Ctx, name: &str) -> Rollback<'a> {
        Rollback { ctx, name: name.to_string(), lease: None, host_if: None }
    }

    pub fn run(&mut self) {
        if let Some(h) = self.host_if.take() {
            if let Ok(nl) = Netlink::new() {
                let _ = nl.delete_link(&h);
            }
        }
        if let Some(a) = self.lease.take() {
            let _ = lease_store(self.ctx).release(&self.name, &a);
        }
    }
}
