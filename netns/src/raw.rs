//! Raw netlink sockets for the families without a maintained crate cns
//! uses (sock_diag, nf_tables): a socket made inside another process's
//! network namespace, and the reading of a reply stream (dumps and acks).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const HEADER: usize = 16;

/// Runs `f` on a thread that joined the network namespace of `pid`. A
/// socket belongs to the netns it was created in, so a socket made by `f`
/// keeps talking to that namespace; the caller's own thread never moves.
pub fn in_netns_of<T: Send + 'static>(pid: i32, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::spawn(move || -> io::Result<T> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("netns helper thread panicked"))?
}

/// A netlink socket of `protocol` in the netns of `pid` (the caller's for `None`).
pub fn socket(protocol: i32, pid: Option<i32>) -> io::Result<OwnedFd> {
    let open = move || -> io::Result<OwnedFd> {
        // SAFETY: plain socket(2); the fd is owned right after.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    match pid {
        None => open(),
        Some(pid) => in_netns_of(pid, open)?,
    }
}

/// Sends one buffer (one or more messages) to the kernel.
pub fn send(sock: &OwnedFd, b: &[u8]) -> io::Result<()> {
    // SAFETY: sending our own buffer on our own socket; the kernel is the
    // default destination of an unbound netlink socket.
    let n = unsafe { libc::send(sock.as_raw_fd(), b.as_ptr().cast(), b.len(), 0) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn malformed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed netlink reply")
}

/// Reads replies until NLMSG_DONE (a dump) or the ack of `ack_seq`. Every
/// other message goes to `each` as (type, body after the header). An error
/// message with an errno is returned as that error.
pub fn receive(sock: &OwnedFd, ack_seq: Option<u32>, mut each: impl FnMut(u16, &[u8]) -> io::Result<()>) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: receiving into a buffer we own, bounded by its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut b = &buf[..usize::try_from(n).unwrap_or(0)];
        if b.is_empty() {
            return Ok(());
        }
        while b.len() >= HEADER {
            let len = u32_at(b, 0).ok_or_else(malformed)? as usize;
            let ty = u16_at(b, 4).ok_or_else(malformed)?;
            let seq = u32_at(b, 8).ok_or_else(malformed)?;
            if len < HEADER || len > b.len() {
                return Err(malformed());
            }
            let body = &b[HEADER..len];
            match ty {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let errno = u32_at(body, 0).map(|e| e as i32).ok_or_else(malformed)?;
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                    if ack_seq == Some(seq) {
                        return Ok(());
                    }
                }
                _ => each(ty, body)?,
            }
            b = b.get((len + 3) & !3..).unwrap_or(&[]);
        }
    }
}

/// A native-endian u16 at `i`, if the buffer holds it.
pub fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

/// A native-endian u32 at `i`, if the buffer holds it.
pub fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// The attributes (type without flag bits, payload) of a netlink message
/// body, starting at `from`.
pub fn attributes(body: &[u8], from: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut a = body.get(from..).unwrap_or(&[]);
    while a.len() >= 4 {
        let (Some(len), Some(ty)) = (u16_at(a, 0), u16_at(a, 2)) else { break };
        let len = usize::from(len);
        if len < 4 || len > a.len() {
            break;
        }
        out.push((ty & 0x3fff, &a[4..len]));
        a = a.get((len + 3) & !3..).unwrap_or(&[]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_aligned_and_bounded() {
        // len 6 (padded to 8), then len 8, then a truncated one.
        let b = [6, 0, 1, 0, b'h', b'i', 0, 0, 8, 0, 2, 0x40, 1, 2, 3, 4, 9, 0, 3, 0];
        let attrs = attributes(&b, 0);
        assert_eq!(attrs, vec![(1, &b"hi"[..]), (2, &[1u8, 2, 3, 4][..])]);
        assert!(attributes(&b, 100).is_empty());
    }
}
