//! Unix sockets of a network namespace with their peers, over
//! NETLINK_SOCK_DIAG (what `ss -xp` reads). Pre-flight uses it to find
//! stream connections whose other end is outside the dumped tree, which
//! CRIU refuses at dump time ("Can't dump half of stream unix connection",
//! "External socket is used", "Dangling connection").

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const UDIAG_SHOW_PEER: u32 = 0x4;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_SHUTDOWN: u16 = 6;

/// One unix socket as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
pub struct Diag(OwnedFd);

impl Diag {
    /// Opens it in the network namespace of `pid` (the caller's for `None`).
    pub fn open(pid: Option<i32>) -> std::io::Result<Diag> {
        open_in(pid).map(Diag)
    }

    /// Every unix socket of the namespace, with peers.
    pub fn unix(&self) -> std::io::Result<Vec<UnixSocket>> {
        request(&self.0, &request_bytes())?;
        read_all(&self.0, parse_msg)
    }

    /// Every TCP socket (IPv4 and IPv6) of the namespace.
    pub fn tcp(&self) -> std::io::Result<Vec<TcpSocket>> {
        let mut out = Vec::new();
        for family in [libc::AF_INET, libc::AF_INET6] {
            request(&self.0, &inet_request_bytes(family as u8))?;
            out.extend(read_all(&self.0, parse_inet_msg)?);
        }
        Ok(out)
    }
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

fn open_in(pid: Option<i32>) -> std::io::Result<OwnedFd> {
    Ok(match pid {
        None => open_diag()?,
        Some(pid) => {
            // A netlink socket belongs to the netns it was created in: make
            // it on a thread that joined the target's netns.
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
            std::thread::spawn(move || -> std::io::Result<OwnedFd> {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                open_diag()
            })
            .join()
            .map_err(|_| std::io::Error::other("sock_diag thread panicked"))??
        }
    })
}

fn open_diag() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right after.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
    b.extend_from_slice(&UDIAG_SHOW_PEER.to_ne_bytes());
    b.extend_from_slice(&[0xff; 8]); // cookie: none
    b
}

fn request(sock: &OwnedFd, b: &[u8]) -> std::io::Result<()> {
    // SAFETY: sending our own buffer on our own socket; the kernel is the
    // default destination of an unbound netlink socket.
    let n = unsafe { libc::send(sock.as_raw_fd(), b.as_ptr().cast(), b.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn read_all<T>(sock: &OwnedFd, one: fn(&[u8]) -> Option<T>) -> std::io::Result<Vec<T>> {
    let mut out = Vec::new();
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
        let n = usize::try_from(n).unwrap_or(0);
        if n == 0 {
            return Ok(out);
        }
        if parse(&buf[..n], &mut out, one)? {
            return Ok(out);
        }
    }
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// Parses one datagram of replies; true when the dump is done.
fn parse<T>(mut b: &[u8], out: &mut Vec<T>, one: fn(&[u8]) -> Option<T>) -> std::io::Result<bool> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed sock_diag reply");
    while b.len() >= 16 {
        let len = u32_at(b, 0).ok_or_else(bad)? as usize;
        let ty = u16_at(b, 4).ok_or_else(bad)?;
        if len < 16 || len > b.len() {
            return Err(bad());
        }
        let msg = &b[16..len];
        match ty {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = u32_at(msg, 0).map(|e| -(e as i32)).unwrap_or(libc::EIO);
                return Err(std::io::Error::from_raw_os_error(errno));
            }
            SOCK_DIAG_BY_FAMILY => out.push(one(msg).ok_or_else(bad)?),
            _ => {}
        }
        let step = (len + 3) & !3;
        b = b.get(step..).unwrap_or(&[]);
    }
    Ok(false)
}

/// unix_diag_msg (16 bytes) then attributes.
fn parse_msg(m: &[u8]) -> Option<UnixSocket> {
    let mut s = UnixSocket { ino: u64::from(u32_at(m, 4)?), kind: *m.get(1)?, state: *m.get(2)?, peer: 0, shutdown: 0 };
    let mut a = m.get(16..)?;
    while a.len() >= 4 {
        let len = usize::from(u16_at(a, 0)?);
        let ty = u16_at(a, 2)? & 0x3fff;
        if len < 4 || len > a.len() {
            break;
        }
        match ty {
            UNIX_DIAG_PEER => s.peer = u64::from(u32_at(a, 4)?),
            UNIX_DIAG_SHUTDOWN => s.shutdown = *a.get(4)?,
            _ => {}
        }
        a = a.get((len + 3) & !3..).unwrap_or(&[]);
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
