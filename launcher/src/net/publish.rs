//! Published ports (`-p HOSTPORT:PORT`): a userspace TCP forwarder in the
//! workload's monitor.
//!
//! Why userspace and not nftables DNAT: this platform has no `nft` binary
//! and no iptables; a forwarder needs neither, works the same for every
//! kernel, and lives in the monitor, outside the dumped tree, so it is never
//! part of a checkpoint. After a restore the new monitor starts it again for
//! the same address, so published ports survive dump/restore.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};

use crate::error::{Error, Result};
use crate::workload::NetConfig;

/// Listeners of a workload's published ports, bound before the workload
/// starts so that a taken port is an error, not a silent gap.
#[derive(Debug)]
pub struct Published {
    listeners: Vec<(TcpListener, u16)>,
}

/// Binds every published port of `net` on all host addresses.
pub fn bind(net: &NetConfig) -> Result<Published> {
    let mut listeners = Vec::new();
    for &(host_port, port) in &net.publish {
        let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, host_port)).map_err(|e| {
            Error::invalid(format!("cannot publish host port {host_port}: {e}"), "pick another HOSTPORT in -p HOSTPORT:PORT, or stop what listens there")
        })?;
        listeners.push((l, port));
    }
    Ok(Published { listeners })
}

impl Published {
    /// Forwards each port to the workload's inner address on background
    /// threads, for as long as this process lives.
    pub fn serve(self, net: &NetConfig) {
        let Some(addrs) = net.addrs else { return };
        for (listener, port) in self.listeners {
            let target = SocketAddrV4::new(addrs.inner, port);
            std::thread::spawn(move || serve(listener, target));
        }
    }
}

fn serve(listener: TcpListener, target: SocketAddrV4) {
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        std::thread::spawn(move || {
            let _ = proxy(client, target);
        });
    }
}

fn proxy(client: TcpStream, target: SocketAddrV4) -> io::Result<()> {
    let upstream = TcpStream::connect(target)?;
    let (mut cr, mut cw) = (client.try_clone()?, client);
    let (mut ur, mut uw) = (upstream.try_clone()?, upstream);
    let t = std::thread::spawn(move || {
        let _ = io::copy(&mut cr, &mut uw);
        let _ = uw.shutdown(std::net::Shutdown::Write);
    });
    let _ = io::copy(&mut ur, &mut cw);
    let _ = cw.shutdown(std::net::Shutdown::Write);
    let _ = t.join();
    Ok(())
}
