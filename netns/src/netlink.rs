//! A synchronous rtnetlink client.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// rtnetlink failures.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("cannot enter the network namespace of pid {pid}: {source}")]
    EnterNs { pid: i32, source: std::io::Error },
    #[error("netlink {op} failed: {source}")]
    Request { op: &'static str, source: std::io::Error },
    #[error("netlink {op}: cannot decode the kernel's answer: {what}")]
    Decode { op: &'static str, what: String },
    #[error("no network interface named {0}")]
    NoSuchLink(String),
}

impl NetError {
    /// The errno, when the kernel refused.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            NetError::Request { source, .. } | NetError::Socket(source) | NetError::EnterNs { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }
}

/// An rtnetlink socket bound to one network namespace.
#[derive(Debug)]
pub struct Netlink {
    sock: Socket,
    seq: std::cell::Cell<u32>,
}

impl Netlink {
    /// A socket in the caller's network namespace.
    pub fn new() -> Result<Netlink, NetError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(NetError::Socket)?;
        sock.bind_auto().map_err(NetError::Socket)?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(NetError::Socket)?;
        Ok(Netlink { sock, seq: std::cell::Cell::new(1) })
    }

    /// A socket in the network namespace of `pid`. The namespace switch
    /// happens on a short-lived thread (setns of a netns is per thread), so
    /// the caller's own namespace never changes; the socket stays bound to
    /// the namespace it was created in.
    pub fn for_pid(pid: i32) -> Result<Netlink, NetError> {
        crate::raw::in_netns_of(pid, Netlink::new).map_err(|source| NetError::EnterNs { pid, source })?
    }

    fn request(&self, op: &'static str, msg: RouteNetlinkMessage, flags: u16) -> Result<Vec<RouteNetlinkMessage>, NetError> {
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.sock.send(&buf, 0).map_err(|source| NetError::Request { op, source })?;

        let mut out = Vec::new();
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        loop {
            let (data, _) = self.sock.recv_from_full().map_err(|source| NetError::Request { op, source })?;
            let mut off = 0;
            while off < data.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..])
                    .map_err(|e| NetError::Decode { op, what: e.to_string() })?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(NetError::Decode { op, what: "zero-length message".into() });
                }
                off += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(_) => Err(NetError::Request { op, source: e.to_io() }),
                        };
                    }
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Index of the interface `name`, if it exists.
    pub fn link_index(&self, name: &str) -> Result<Option<u32>, NetError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request("get link", RouteNetlinkMessage::GetLink(m), 0) {
            Ok(v) => Ok(v.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Names of all interfaces.
    pub fn link_names(&self) -> Result<Vec<String>, NetError> {
        let m = LinkMessage::default();
        let v = self.request("list links", RouteNetlinkMessage::GetLink(m), NLM_F_DUMP)?;
        Ok(v.into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => l.attributes.into_iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n),
                    _ => None,
                }),
                _ => None,
            })
            .collect())
    }

    /// Creates a veth pair `host` ↔ `peer`, with `peer` created directly in
    /// the network namespace of `peer_pid`.
    pub fn create_veth(&self, host: &str, peer: &str, peer_pid: i32) -> Result<(), NetError> {
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes.push(LinkAttribute::IfName(peer.to_string()));
        peer_msg.attributes.push(LinkAttribute::NetNsPid(peer_pid as u32));
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(host.to_string()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request("create veth", RouteNetlinkMessage::NewLink(m), NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)?;
        Ok(())
    }

    /// Deletes interface `name`; Ok(false) when it did not exist.
    pub fn delete_link(&self, name: &str) -> Result<bool, NetError> {
        let Some(idx) = self.link_index(name)? else { return Ok(false) };
        let mut m = LinkMessage::default();
        m.header.index = idx;
        match self.request("delete link", RouteNetlinkMessage::DelLink(m), NLM_F_ACK) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Brings interface `index` up.
    pub fn set_up(&self, index: u32) -> Result<(), NetError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.request("set link up", RouteNetlinkMessage::SetLink(m), NLM_F_ACK)?;
        Ok(())
    }

    fn addr_msg(index: u32, ip: Ipv4Addr, prefix: u8) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
        m.attributes.push(AddressAttribute::Address(IpAddr::V4(ip)));
        m
    }

    /// Adds (or replaces) an IPv4 address on interface `index`.
    pub fn replace_address(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
        let m = Self::addr_msg(index, ip, prefix);
        self.request("add address", RouteNetlinkMessage::NewAddress(m), NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)?;
        Ok(())
    }

    /// IPv4 addresses on interface `index`.
    pub fn addresses(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetError> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        let v = self.request("list addresses", RouteNetlinkMessage::GetAddress(m), NLM_F_DUMP)?;
        Ok(v.into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    let prefix = a.header.prefix_len;
                    a.attributes.into_iter().find_map(|at| match at {
                        AddressAttribute::Local(IpAddr::V4(ip)) => Some((ip, prefix)),
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Removes every IPv4 address from interface `index`.
    pub fn flush_addresses(&self, index: u32) -> Result<(), NetError> {
        for (ip, prefix) in self.addresses(index)? {
            let m = Self::addr_msg(index, ip, prefix);
            match self.request("delete address", RouteNetlinkMessage::DelAddress(m), NLM_F_ACK) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sets the IPv4 default route via `gw`.
    pub fn replace_default_route(&self, gw: Ipv4Addr) -> Result<(), NetError> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.table = netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        self.request("add default route", RouteNetlinkMessage::NewRoute(m), NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)?;
        Ok(())
    }
}
