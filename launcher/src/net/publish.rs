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
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::workload::NetConfig;

/// At most this many connections per published port are forwarded at
/// once; further clients are accepted and closed at once (shown by
/// `cns inspect`).
pub const MAX_CONNECTIONS: usize = 256;

/// How long the forwarder waits for the workload to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Listeners of a workload's published ports, bound before the workload
/// starts so that a taken port is an error, not a silent gap.
#[derive(Debug)]
pub struct Published {
    listeners: Vec<(TcpListener, u16)>,
}

/// Binds every published port of `net` on its host address (every address
/// when none is given).
pub fn bind(net: &NetConfig) -> Result<Published> {
    let mut listeners = Vec::new();
    for p in &net.publish {
        let addr = SocketAddrV4::new(p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), p.host_port);
        let l = TcpListener::bind(addr).map_err(|e| {
            Error::invalid(format!("cannot publish host port {} ({addr}): {e}", p.host_port), "pick another HOSTPORT in -p [HOSTIP:]HOSTPORT:PORT, or stop what listens there")
        })?;
        listeners.push((l, p.port));
    }
    Ok(Published { listeners })
}

impl Published {
    /// Forwards each port to the workload's inner address on background
    /// threads, for as long as this process lives. A thread that cannot be
    /// started costs that port (or that connection), never the monitor.
    pub fn serve(self, net: &NetConfig) {
        let Some(addrs) = net.addrs else { return };
        for (listener, port) in self.listeners {
            let target = SocketAddrV4::new(addrs.inner, port);
            if let Err(e) = std::thread::Builder::new().name(format!("publish-{port}")).spawn(move || serve(listener, target)) {
                tracing::warn!(port, error = %e, "cannot start the forwarder of a published port");
            }
        }
    }
}

/// Counts a connection while it lives.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn serve(listener: TcpListener, target: SocketAddrV4) {
    let live = Arc::new(AtomicUsize::new(0));
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        if live.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            live.fetch_sub(1, Ordering::SeqCst);
            drop(client);
            continue;
        }
        let slot = Slot(live.clone());
        // A failed spawn drops the closure: the client is closed, the slot freed.
        let _ = std::thread::Builder::new().spawn(move || {
            let _slot = slot;
            let _ = proxy(client, target);
        });
    }
}

fn proxy(client: TcpStream, target: SocketAddrV4) -> io::Result<()> {
    let upstream = TcpStream::connect_timeout(&target.into(), CONNECT_TIMEOUT)?;
    let (mut cr, mut cw) = (client.try_clone()?, client);
    let (mut ur, mut uw) = (upstream.try_clone()?, upstream);
    let t = std::thread::Builder::new().spawn(move || {
        let _ = io::copy(&mut cr, &mut uw);
        let _ = uw.shutdown(std::net::Shutdown::Write);
    })?;
    let _ = io::copy(&mut ur, &mut cw);
    let _ = cw.shutdown(std::net::Shutdown::Write);
    let _ = t.join();
    Ok(())
}
