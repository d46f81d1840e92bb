//! ICMP errors on unconnected UDP sockets.
//!
//! A client that sends a request to a port where nothing listens gets an ICMP "port
//! unreachable" back at once, but Linux reports it only to connected sockets, and a TFTP client
//! cannot connect: the answer comes from a port it does not know yet. With `IP_RECVERR` the
//! kernel reports the error to an unconnected socket too: the next receive (or send) fails with
//! it (`ECONNREFUSED`, `EHOSTUNREACH`, `ENETUNREACH`), and the socket's error queue says which
//! destination it was about. [`take_icmp_errors`] drains that queue; it must be called after
//! such an error, or the socket stays readable-with-error for good.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};

use super::batch::socket_addr;
use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage,
};

/// Asks the kernel to report ICMP errors about what this socket sent (see the module).
/// Without it (an unusual kernel) a dead server is found by its silence instead.
pub fn report_icmp_errors(socket: impl AsFd, ipv6: bool) {
    let _ = if ipv6 {
        setsockopt(&socket, sockopt::Ipv6RecvErr, &true)
    } else {
        setsockopt(&socket, sockopt::Ipv4RecvErr, &true)
    };
}

/// Whether `e` is what an ICMP destination-unreachable error becomes on a socket.
pub fn is_unreachable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

/// Drains the socket's error queue: for each queued error, the destination of the datagram it
/// was about and the error. Never blocks.
pub fn take_icmp_errors(socket: impl AsFd) -> Vec<(SocketAddr, io::Error)> {
    let mut out = Vec::new();
    loop {
        // The datagram that caused the error comes back too: its first bytes are enough.
        let mut head = [0u8; 64];
        let mut iov = [IoSliceMut::new(&mut head)];
        let mut control = [0u8; 256];
        let msg = match recvmsg::<SockaddrStorage>(
            socket.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(msg) => msg,
            // EAGAIN: the queue is empty.
            Err(_) => return out,
        };
        let Some(to) = msg.address.as_ref().and_then(socket_addr) else {
            continue;
        };
        let Ok(cmsgs) = msg.cmsgs() else { continue };
        for cmsg in cmsgs {
            let errno = match cmsg {
                ControlMessageOwned::Ipv4RecvErr(err, _)
                | ControlMessageOwned::Ipv6RecvErr(err, _) => err.ee_errno,
                _ => continue,
            };
            out.push((to, io::Error::from(Errno::from_raw(errno as i32))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    /// A port on loopback where nothing listens (bound, then closed).
    fn closed_port() -> SocketAddr {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[test]
    fn a_closed_port_is_reported_with_its_address() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        report_icmp_errors(&socket, false);
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let dead = closed_port();
        socket.send_to(b"hello", dead).unwrap();
        let e = socket.recv_from(&mut [0u8; 16]).unwrap_err();
        assert!(is_unreachable(&e), "{e:?}");
        let errors = take_icmp_errors(&socket);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, dead);
        assert_eq!(errors[0].1.kind(), io::ErrorKind::ConnectionRefused);
        assert!(take_icmp_errors(&socket).is_empty(), "drained");
    }

    #[test]
    fn without_the_option_the_error_is_not_seen() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        socket.send_to(b"hello", closed_port()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let e = socket.recv_from(&mut [0u8; 16]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(take_icmp_errors(&socket).is_empty());
    }
}
