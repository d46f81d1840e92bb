//! Small socket helpers shared by the shells.

use smol::net::UdpSocket;

/// Receive buffer asked for on sockets that take bursts (a client's window of DATA, every
/// client's ACKs in single-port mode). The kernel caps it at `net.core.rmem_max`.
const BURST_RECV_BUFFER: usize = 4 << 20;

/// Asks the kernel for a larger receive buffer; a refusal only costs throughput.
pub fn grow_recv_buffer(socket: &UdpSocket) {
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(socket, BURST_RECV_BUFFER);
}
