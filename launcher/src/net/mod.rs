//! The launcher's side of networking: turning options into a plan, leasing
//! the address, creating the host end of the veth, and undoing it all.

pub mod names;
pub mod publish;

use cns_netns::{LinkAddrs, Netlink};

use crate::error::{Context, Error, Result};
use crate::runtime::Runtime;
pub use crate::workload::Publish;
use crate::workload::{NetConfig, NetMode};

pub use names::host_veth_name;

/// What the network options asked for, validated.
#[derive(Debug, Clone)]
pub struct NetPlan {
    pub mode: NetMode,
    pub ip: Option<LinkAddrs>,
    pub publish: Vec<Publish>,
    /// Masquerade its traffic out of the host (veth only).
    pub outbound: bool,
}

/// Parses `-p [HOSTIP:]HOSTPORT:PORT` (as docker spells it, TCP).
pub fn parse_publish(p: &str) -> Result<Publish> {
    let bad = || Error::invalid(format!("invalid port mapping {p:?}"), "use -p [HOSTIP:]HOSTPORT:PORT, e.g. -p 8080:80 or -p 127.0.0.1:8080:80");
    let parts: Vec<&str> = p.split(':').collect();
    let (ip, h, c) = match parts.as_slice() {
        [h, c] => (None, h, c),
        [ip, h, c] => (Some(ip.parse::<std::net::Ipv4Addr>().map_err(|_| bad())?), h, c),
        _ => return Err(bad()),
    };
    match (h.parse::<u16>(), c.parse::<u16>()) {
        (Ok(h), Ok(c)) if h != 0 && c != 0 => Ok(Publish { host_ip: ip, host_port: h, port: c }),
        _ => Err(bad()),
    }
}

/// Validates the network options.
pub fn plan(mode: NetMode, ip: Option<&str>, publish: &[String], no_outbound: bool) -> Result<NetPlan> {
    if mode == NetMode::Host {
        return Err(Error::invalid("host networking is only for adopted trees", "use --net veth (default) or --net none"));
    }
    if mode == NetMode::None && (ip.is_some() || !publish.is_empty()) {
        return Err(Error::invalid("--net none gives the workload only lo: --ip and -p need a veth", "drop --ip/-p, or use --net veth"));
    }
    let ip = ip.map(cns_netns::lease::parse_ip).transpose().map_err(|e| Error::invalid(e.to_string(), "e.g. --ip 10.88.7.2/30"))?;
    let publish = publish.iter().map(|p| parse_publish(p)).collect::<Result<Vec<_>>>()?;
    if mode == NetMode::None && no_outbound {
        return Err(Error::invalid("--net none has no network to keep in: --no-outbound needs a veth", "drop --no-outbound"));
    }
    Ok(NetPlan { mode, ip, publish, outbound: mode == NetMode::Veth && !no_outbound })
}

/// Leases the workload's address (none without a veth).
pub fn lease(rt: &Runtime, name: &str, plan: &NetPlan) -> Result<Option<LinkAddrs>> {
    if plan.mode != NetMode::Veth {
        return Ok(None);
    }
    let store = rt.leases();
    let lease = match &plan.ip {
        Some(a) => store.take(name, a).map_err(|e| Error::invalid(e.to_string(), "pick another --ip, or leave it out to get a free one"))?,
        None => store.allocate(&rt.pool()?, name).map_err(|e| Error::invalid(e.to_string(), "remove old workloads or set a larger address_pool"))?,
    };
    Ok(Some(lease.addrs))
}

/// The workload other than `name` whose record claims `host_if`, if any.
pub fn claimed_by_other(rt: &Runtime, name: &str, host_if: &str) -> Option<String> {
    rt.store.list().into_iter().find(|w| w.name != name && w.net.host_if.as_deref() == Some(host_if)).map(|w| w.name)
}

/// Refuses a host interface name another workload owns (two long names
/// whose hashed forms collide).
pub fn check_host_if(rt: &Runtime, name: &str, host_if: &str) -> Result<()> {
    if !host_if.contains('~') {
        // `cns-NAME` itself: names are unique, so is this.
        return Ok(());
    }
    match claimed_by_other(rt, name, host_if) {
        Some(other) => Err(Error::new(crate::error::ErrorKind::Exists, format!("the host interface name {host_if} of {name} is taken by workload {other}"))
            .with_hint("give the workload another name (long names share an interface name only when their hashes collide)")),
        None => Ok(()),
    }
}

/// Creates the veth pair for the workload whose root is `pid`: the host end
/// named `net.host_if` with the host address, `eth0` in the workload's netns.
pub fn attach(net: &NetConfig, pid: i32) -> Result<()> {
    let (Some(host_if), Some(addrs)) = (&net.host_if, &net.addrs) else { return Ok(()) };
    let nl = Netlink::new().context("netlink")?;
    // A stale host end of an earlier run of this name (the netns of a dumped
    // tree is torn down asynchronously) goes; anything else of that name stays.
    remove_stale_host_end(&nl, host_if)?;
    nl.create_veth(host_if, cns_netns::INNER_IF, pid)
        .map_err(|e| Error::wrap(format!("cannot create veth {host_if}"), e).with_hint("is the veth module available (CONFIG_VETH)?"))?;
    cns_netns::configure_host_end(&nl, host_if, addrs).with_context(|| format!("cannot configure {host_if}"))?;
    Ok(())
}

/// Whether the host link `name` is one end of a pair (a veth: its iflink
/// is its peer, not itself); `None` when there is no such link.
pub fn is_pair_end(name: &str) -> Option<bool> {
    let read = |f: &str| std::fs::read_to_string(format!("/sys/class/net/{name}/{f}")).ok().map(|v| v.trim().to_string());
    let (index, link) = (read("ifindex")?, read("iflink")?);
    Some(index != link)
}

/// Deletes a lingering host end of this workload's veth; refuses a link of
/// that name that is not a veth (a user's own interface is never deleted).
pub fn remove_stale_host_end(nl: &Netlink, host_if: &str) -> Result<()> {
    match is_pair_end(host_if) {
        None => Ok(()),
        Some(true) => {
            let _ = nl.delete_link(host_if);
            Ok(())
        }
        Some(false) => Err(Error::new(crate::error::ErrorKind::Exists, format!("host interface {host_if} exists and is not a veth cns made; cns will not delete it"))
            .with_hint("rename or remove that interface, or give the workload another name")),
    }
}

/// Removes a host interface cns made (a veth end), if it is there.
pub fn delete_link(host_if: &str) {
    if is_pair_end(host_if) == Some(false) {
        tracing::info!(link = host_if, "not deleting a host link that is not a veth");
        return;
    }
    if let Ok(nl) = Netlink::new() {
        let _ = nl.delete_link(host_if);
    }
}

/// Removes the host end of a workload's veth, if it is there.
pub fn delete_host_end(net: &NetConfig) {
    if let Some(h) = &net.host_if {
        delete_link(h);
    }
}

fn forwarding(rt: &Runtime) -> std::path::PathBuf {
    rt.store.paths.state.join(".ip_forward")
}

/// Installs the workload's nf_tables rules in the host's netns: outbound
/// NAT (forwarding turned on if it was off), or isolation with
/// `--no-outbound` (see cns_netns::nat).
pub fn install_rules(rt: &Runtime, name: &str, net: &NetConfig) -> Result<()> {
    let Some(a) = &net.addrs else { return Ok(()) };
    let policy = if net.outbound {
        let saved = forwarding(rt);
        cns_netns::nat::ForwardingGuard { saved: &saved }.need().context("cannot turn on IPv4 forwarding for the workload's outbound network")?;
        cns_netns::nat::Policy::Outbound
    } else {
        cns_netns::nat::Policy::Isolated
    };
    cns_netns::nat::install(name, a.inner, policy)
        .map_err(|e| Error::wrap(format!("cannot install the nf_tables rules of {name}"), e).with_hint("the kernel needs nf_tables with NAT and masquerade (CONFIG_NFT_NAT, CONFIG_NFT_MASQ)"))
}

/// Removes the workload's rules, and puts the host's forwarding setting
/// back when no workload needs it any more.
pub fn remove_rules(rt: &Runtime, name: &str) {
    if let Err(e) = cns_netns::nat::remove(name) {
        tracing::warn!(workload = name, error = %e, "cannot remove the workload's nf_tables rules");
    }
    settle_forwarding(rt, None);
}

/// Forwarding back to the host's value when no workload with outbound
/// access keeps its rules.
/// `installed`: the workloads with rules now, when the caller has just
/// listed them (else they are listed here).
pub fn settle_forwarding(rt: &Runtime, installed: Option<Vec<String>>) {
    if !forwarding(rt).exists() {
        // cns did not change the host's setting.
        return;
    }
    let installed = installed.unwrap_or_else(|| cns_netns::nat::installed().unwrap_or_default());
    // The records of the workloads with rules, not every record: this runs
    // in every command's recovery sweep, and the first outbound one ends it.
    let in_use = installed.iter().any(|n| rt.store.get(n).is_ok_and(|w| w.net.outbound));
    let saved = forwarding(rt);
    if let Err(e) = (cns_netns::nat::ForwardingGuard { saved: &saved }).settle(in_use) {
        tracing::warn!(error = %e, "cannot put IPv4 forwarding back");
    }
}

/// Undo list for a failed run or restore.
#[derive(Debug)]
pub struct Rollback<'a> {
    rt: &'a Runtime,
    name: String,
    pub lease: Option<LinkAddrs>,
    pub host_if: Option<String>,
    /// The workload's nf_tables rules were installed.
    pub rules: bool,
}

impl<'a> Rollback<'a> {
    pub fn new(rt: &'a Runtime, name: &str) -> Rollback<'a> {
        Rollback { rt, name: name.to_string(), lease: None, host_if: None, rules: false }
    }

    pub fn run(&mut self) {
        if let Some(h) = self.host_if.take() {
            delete_link(&h);
        }
        if std::mem::take(&mut self.rules) {
            remove_rules(self.rt, &self.name);
        }
        if let Some(a) = self.lease.take() {
            let _ = self.rt.leases().release(&self.name, &a);
        }
    }
}
