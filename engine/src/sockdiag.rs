//! Unix sockets of a network namespace with their peers, over
//! NETLINK_SOCK_DIAG (what `ss -xp` reads). Pre-flight uses it to find
//! stream connections whose other end is outside the dumped tree, which
//! CRIU refuses at dump time ("Can't dump half of stream unix connection",
//! "External socket is used", "Dangling connection").

use std::os::fd::OwnedFd;

use cns_netns::raw::{self, u32_at};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UDIAG_SHOW_PEER: u32 = 0x4;
const UDIAG_SHOW_ICONS: u32 = 0x8;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_ICONS: u16 = 3;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;

/// One unix socket as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnixSocket {
    pub ino: u64,
    /// libc::SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET.
    pub kind: u8,
    /// TCP-style state: 1 established, 10 listen, 7 close.
    pub state: u8,
    /// Inode of the peer, 0 when none.
    pub peer: u64,
    /// Bit 0: no more reads, bit 1: no more writes.
    pub shutdown: u8,
    /// A listener's connections not yet accepted (their inodes).
    pub pending: Vec<u64>,
    /// Bytes waiting to be read (a listener: connections waiting).
    pub rqueue: u32,
    /// Bytes sent and not yet read by the peer.
    pub wqueue: u32,
}

impl UnixSocket {
    pub fn is_stream(&self) -> bool {
        i32::from(self.kind) == libc::SOCK_STREAM || i32::from(self.kind) == libc::SOCK_SEQPACKET
    }
}

/// Dumps every unix socket in the network namespace of `pid` (or the
/// caller's when `None`).
pub fn unix_sockets(pid: Option<i32>) -> std::io::Result<Vec<UnixSocket>> {
    Diag::open(pid)?.unix()
}

/// A NETLINK_SOCK_DIAG socket in one network namespace; it answers any
/// number of dumps, one after the other.
#[derive(Debug)]
pub struct Diag {
    fd: OwnedFd,
    pid: Option<i32>,
}

impl Diag {
    /// Opens it in the network namespace of `pid` (the caller's for `None`).
    pub fn open(pid: Option<i32>) -> std::io::Result<Diag> {
        raw::socket(libc::NETLINK_SOCK_DIAG, pid).map(|fd| Diag { fd, pid })
    }

    /// Every unix socket of the namespace, with peers.
    pub fn unix(&self) -> std::io::Result<Vec<UnixSocket>> {
        dump(&self.fd, &request_bytes(), parse_msg)
    }

    /// Every TCP socket (IPv4 and IPv6) of the namespace.
    ///
    /// An INET_DIAG dump walks the kernel's TCP hash tables, which are
    /// shared by all namespaces and sized by the host's memory: 3-4 ms each
    /// here, even for a namespace without a single socket. The namespace's
    /// own count of hashed sockets (`TCP: inuse` in net/sockstat, and
    /// sockstat6) says for nothing whether there is anything to find, so a
    /// family with none is not walked. Listening, connecting and
    /// connected sockets are all hashed; only closed ones are not.
    pub fn tcp(&self) -> std::io::Result<Vec<TcpSocket>> {
        let mut out = Vec::new();
        for (family, stat, key) in [(libc::AF_INET, "sockstat", "TCP:"), (libc::AF_INET6, "sockstat6", "TCP6:")] {
            if self.in_use(stat, key) == Some(0) {
                continue;
            }
            out.extend(dump(&self.fd, &inet_request_bytes(family as u8), parse_inet_msg)?);
        }
        Ok(out)
    }

    /// `inuse` of the `key` line of the namespace's /proc/<pid>/net/<stat>;
    /// None when it cannot be read (then the dump decides).
    fn in_use(&self, stat: &str, key: &str) -> Option<u64> {
        let path = match self.pid {
            Some(pid) => format!("/proc/{pid}/net/{stat}"),
            None => format!("/proc/thread-self/net/{stat}"),
        };
        sockstat_in_use(&std::fs::read_to_string(path).ok()?, key)
    }
}

/// The `inuse` count on the line starting with `key` ("TCP:", "TCP6:").
fn sockstat_in_use(text: &str, key: &str) -> Option<u64> {
    let rest = text.lines().find_map(|l| l.strip_prefix(key))?;
    let mut words = rest.split_whitespace();
    while let Some(w) = words.next() {
        if w == "inuse" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// One TCP socket as INET_DIAG reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    pub inode: u64,
    /// Kernel TCP state: 1 established, 10 listen, ...
    pub state: u8,
    /// For a listener: connections waiting in its accept queue.
    pub rqueue: u32,
}

/// Every TCP socket (IPv4 and IPv6) in the network namespace of `pid`.
/// One netlink dump each: /proc/net/tcp walks the whole hash table once
/// per read(2), tens of milliseconds on a large machine.
pub fn tcp_sockets(pid: Option<i32>) -> std::io::Result<Vec<TcpSocket>> {
    Diag::open(pid)?.tcp()
}

/// nlmsghdr + inet_diag_req_v2 (TCP, all states).
fn inet_request_bytes(family: u8) -> Vec<u8> {
    let mut b = Vec::with_capacity(72);
    b.extend_from_slice(&72u32.to_ne_bytes());
    b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    b.extend_from_slice(&1u32.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.push(family); // sdiag_family
    b.push(libc::IPPROTO_TCP as u8); // sdiag_protocol
    b.push(0); // idiag_ext
    b.push(0); // pad
    b.extend_from_slice(&u32::MAX.to_ne_bytes()); // idiag_states: all
    b.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: any
    b
}

/// inet_diag_msg: family, state, timer, retrans, sockid (48), expires,
/// rqueue, wqueue, uid, inode.
fn parse_inet_msg(m: &[u8]) -> Option<TcpSocket> {
    Some(TcpSocket { state: *m.get(1)?, rqueue: u32_at(m, 56)?, inode: u64::from(u32_at(m, 68)?) })
}

/// The request: nlmsghdr + unix_diag_req, all states, show peers.
fn request_bytes() -> Vec<u8> {
    let mut b = Vec::with_capacity(40);
    b.extend_from_slice(&40u32.to_ne_bytes());
    b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    b.extend_from_slice(&1u32.to_ne_bytes()); // seq
    b.extend_from_slice(&0u32.to_ne_bytes()); // port id
    b.push(libc::AF_UNIX as u8); // sdiag_family
    b.push(0); // sdiag_protocol
    b.extend_from_slice(&0u16.to_ne_bytes()); // pad
    b.extend_from_slice(&u32::MAX.to_ne_bytes()); // udiag_states: all
    b.extend_from_slice(&0u32.to_ne_bytes()); // udiag_ino
    b.extend_from_slice(&(UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN).to_ne_bytes());
    b.extend_from_slice(&[0xff; 8]); // cookie: none
    b
}

/// Sends one dump request and parses every reply message with `one`.
fn dump<T>(sock: &OwnedFd, request: &[u8], one: fn(&[u8]) -> Option<T>) -> std::io::Result<Vec<T>> {
    raw::send(sock, request)?;
    let mut out = Vec::new();
    raw::receive(sock, None, |ty, body| {
        if ty == SOCK_DIAG_BY_FAMILY {
            out.push(one(body).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed sock_diag reply"))?);
        }
        Ok(())
    })?;
    Ok(out)
}

/// unix_diag_msg (16 bytes) then attributes.
fn parse_msg(m: &[u8]) -> Option<UnixSocket> {
    let mut s = UnixSocket { ino: u64::from(u32_at(m, 4)?), kind: *m.get(1)?, state: *m.get(2)?, ..Default::default() };
    for (ty, v) in raw::attributes(m, 16) {
        match ty {
            UNIX_DIAG_PEER => s.peer = u64::from(u32_at(v, 0)?),
            UNIX_DIAG_SHUTDOWN => s.shutdown = *v.first()?,
            UNIX_DIAG_ICONS => s.pending = v.chunks_exact(4).filter_map(|c| u32_at(c, 0)).map(u64::from).collect(),
            UNIX_DIAG_RQLEN => {
                s.rqueue = u32_at(v, 0)?;
                s.wqueue = u32_at(v, 4)?;
            }
            _ => {}
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn ino_of(fd: i32) -> u64 {
        let t = std::fs::read_link(format!("/proc/self/fd/{fd}")).expect("link");
        t.to_string_lossy().trim_start_matches("socket:[").trim_end_matches(']').parse().expect("ino")
    }

    #[test]
    fn sees_a_socketpair_and_its_peer() {
        let (a, b) = UnixStream::pair().expect("pair");
        b.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let (ia, ib) = (ino_of(a.as_raw_fd()), ino_of(b.as_raw_fd()));
        let all = unix_sockets(None).expect("sock_diag");
        let sa = all.iter().find(|s| s.ino == ia).expect("a listed");
        let sb = all.iter().find(|s| s.ino == ib).expect("b listed");
        assert_eq!(sa.peer, ib);
        assert_eq!(sb.peer, ia);
        assert!(sa.is_stream());
        assert_eq!(sb.shutdown & 2, 2, "SHUT_WR is reported");
    }

    #[test]
    fn one_socket_answers_several_dumps() {
        let d = Diag::open(None).expect("open");
        let a = d.unix().expect("unix");
        d.tcp().expect("tcp");
        let b = d.unix().expect("unix again");
        assert!(!a.is_empty() && !b.is_empty());
    }

    #[test]
    fn reads_the_in_use_count_of_one_protocol() {
        let v4 = "sockets: used 7\nTCP: inuse 3 orphan 0 tw 2 alloc 4 mem 301\nUDP: inuse 1 mem 0\n";
        assert_eq!(sockstat_in_use(v4, "TCP:"), Some(3));
        assert_eq!(sockstat_in_use(v4, "UDP:"), Some(1));
        assert_eq!(sockstat_in_use("TCP6: inuse 0\nUDP6: inuse 0\n", "TCP6:"), Some(0));
        assert_eq!(sockstat_in_use("TCP: orphan 0\n", "TCP:"), None);
        assert_eq!(sockstat_in_use("", "TCP:"), None);
    }

    #[test]
    fn a_namespace_without_tcp_sockets_reports_none_and_a_listener_shows() {
        // A fresh network namespace of its own: nothing hashed, then one listener.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare net");
            let d = Diag::open(None).expect("diag");
            let before = d.tcp().expect("tcp").len();
            let lo = std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status();
            assert!(lo.is_ok_and(|s| s.success()));
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let after = d.tcp().expect("tcp");
            let ino = ino_of(std::os::fd::AsRawFd::as_raw_fd(&l));
            tx.send((before, after.iter().any(|s| s.inode == ino && s.state == 10))).expect("send");
        });
        let (before, seen) = rx.recv().expect("thread result");
        assert_eq!(before, 0);
        assert!(seen, "the listener must be found once the namespace has one");
    }

    #[test]
    fn requests_have_their_declared_length() {
        assert_eq!(request_bytes().len(), 40);
        assert_eq!(inet_request_bytes(libc::AF_INET as u8).len(), 72);
    }

    #[test]
    fn sees_a_listener_with_a_waiting_connection_and_an_established_pair() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let waiting = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let lino = ino_of(l.as_raw_fd());
        let cino = ino_of(waiting.as_raw_fd());
        let all = tcp_sockets(None).expect("inet_diag");
        let ls = all.iter().find(|s| s.inode == lino).expect("listener listed");
        assert_eq!((ls.state, ls.rqueue), (10, 1));
        assert_eq!(all.iter().find(|s| s.inode == cino).map(|s| s.state), Some(1));
    }
}
