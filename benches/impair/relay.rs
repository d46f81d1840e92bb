//! A user-space UDP relay between TFTP clients and one server on loopback that drops,
//! duplicates and reorders datagrams, and counts the DATA the server sends.
//!
//! TFTP answers from a new port per transfer (the transfer ID), so the relay maps ports both
//! ways: a client talks to the relay's listening port, which speaks to the server from a port
//! of its own for that client ("upstream"); each port the server answers from gets a port of the
//! relay facing the client ("downstream"), so the client sees a transfer ID as usual.
//!
//! Every datagram, in either direction, is dropped, duplicated or held back with the given
//! probabilities (a seeded generator per direction, so a run can be repeated). A held datagram
//! goes out right after the next one in the same direction (the two swap places), or after
//! [`HOLD`] if none comes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use smol::future::FutureExt;
use smol::{Async, LocalExecutor, Timer};

/// Longest a reordered datagram waits for the next one.
const HOLD: Duration = Duration::from_millis(2);

/// Per-datagram probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    pub loss: f64,
    pub dup: f64,
    pub reorder: f64,
}

/// What the relay saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// DATA datagrams the server sent (before any impairment).
    pub data: u64,
    /// The longest DATA payload: the block size.
    pub blksize: usize,
}

/// A running relay; [`Relay::finish`] stops it.
pub struct Relay {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<Counts>>,
}

impl Relay {
    /// Relays between clients and `server`, on its own thread.
    pub fn start(server: SocketAddr, impairment: Impairment, seed: u64) -> io::Result<Relay> {
        let listen = UdpSocket::bind("127.0.0.1:0")?;
        let addr = listen.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let tasks = Rc::new(LocalExecutor::new());
            let net = Rc::new(RefCell::new(Net::new(server, impairment, seed)));
            let relay = listen_loop(tasks.clone(), net.clone(), Async::new(listen)?);
            let stopped = async {
                while !flag.load(Ordering::Relaxed) {
                    Timer::after(Duration::from_millis(20)).await;
                }
                Ok(())
            };
            smol::block_on(tasks.run(relay.or(stopped)))?;
            let counts = net.borrow().counts;
            Ok(counts)
        });
        Ok(Relay { addr, stop, thread })
    }

    /// Stops the relay; what it counted.
    pub fn finish(self) -> io::Result<Counts> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| io::Error::other("relay thread panicked"))?
    }
}

type Socket = Rc<Async<UdpSocket>>;
type Tasks = Rc<LocalExecutor<'static>>;

#[derive(Clone, Copy)]
enum Way {
    ToServer = 0,
    ToClient = 1,
}

/// A datagram held back, and where it goes.
struct Held {
    id: u64,
    via: Socket,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// The relay's state, shared by its tasks (all on one thread).
struct Net {
    server: SocketAddr,
    impairment: Impairment,
    rng: [u64; 2],
    held: [Option<Held>; 2],
    next_id: u64,
    /// Client address: the port speaking to the server for it.
    upstream: HashMap<SocketAddr, Socket>,
    /// (client, server transfer ID): the port facing the client for it.
    downstream: HashMap<(SocketAddr, SocketAddr), Socket>,
    counts: Counts,
}

impl Net {
    fn new(server: SocketAddr, impairment: Impairment, seed: u64) -> Self {
        let mix = |k: u64| (seed ^ k).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        Net {
            server,
            impairment,
            rng: [mix(1), mix(2)],
            held: [None, None],
            next_id: 0,
            upstream: HashMap::new(),
            downstream: HashMap::new(),
            counts: Counts::default(),
        }
    }

    /// A uniform number in [0, 1) for direction `way` (xorshift64*).
    fn uniform(&mut self, way: Way) -> f64 {
        let s = &mut self.rng[way as usize];
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Sends without waiting; a full socket buffer drops the datagram, as a full queue would.
fn send(via: &Socket, to: SocketAddr, bytes: &[u8]) {
    let _ = via.get_ref().send_to(bytes, to);
}

/// Passes `bytes` on through `via` to `to`, with the direction's impairment.
fn post(
    tasks: &Tasks,
    net: &Rc<RefCell<Net>>,
    way: Way,
    via: &Socket,
    to: SocketAddr,
    bytes: &[u8],
) {
    let mut n = net.borrow_mut();
    let r = n.uniform(way);
    let Impairment { loss, dup, reorder } = n.impairment;
    if r < loss {
        return;
    }
    if r >= loss + dup && r < loss + dup + reorder && n.held[way as usize].is_none() {
        let id = n.next_id;
        n.next_id += 1;
        n.held[way as usize] = Some(Held {
            id,
            via: via.clone(),
            to,
            bytes: bytes.to_vec(),
        });
        let net = net.clone();
        tasks
            .spawn(async move {
                Timer::after(HOLD).await;
                let mut n = net.borrow_mut();
                if n.held[way as usize].as_ref().is_some_and(|h| h.id == id) {
                    let h = n.held[way as usize].take().unwrap();
                    send(&h.via, h.to, &h.bytes);
                }
            })
            .detach();
        return;
    }
    send(via, to, bytes);
    if r >= loss && r < loss + dup {
        send(via, to, bytes);
    }
    if let Some(h) = n.held[way as usize].take() {
        send(&h.via, h.to, &h.bytes);
    }
}

fn bind() -> io::Result<Socket> {
    let socket = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0))?;
    // Whole windows arrive at once on loopback: room for them.
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&socket, 4 << 20);
    Ok(Rc::new(socket))
}

/// Requests from clients, to the server's well-known port.
async fn listen_loop(
    tasks: Tasks,
    net: Rc<RefCell<Net>>,
    listen: Async<UdpSocket>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (len, client) = listen.recv_from(&mut buf).await?;
        let existing = net.borrow().upstream.get(&client).cloned();
        let upstream = match existing {
            Some(socket) => socket,
            None => {
                let socket = bind()?;
                net.borrow_mut().upstream.insert(client, socket.clone());
                tasks
                    .spawn(upstream_loop(
                        tasks.clone(),
                        net.clone(),
                        client,
                        socket.clone(),
                    ))
                    .detach();
                socket
            }
        };
        let server = net.borrow().server;
        post(&tasks, &net, Way::ToServer, &upstream, server, &buf[..len]);
    }
}

/// What the server sends to one client, from any of its ports.
async fn upstream_loop(tasks: Tasks, net: Rc<RefCell<Net>>, client: SocketAddr, upstream: Socket) {
    let mut buf = vec![0u8; 65_536];
    while let Ok((len, tid)) = upstream.recv_from(&mut buf).await {
        let datagram = &buf[..len];
        if datagram.len() >= 4 && datagram[..2] == [0, 3] {
            let mut n = net.borrow_mut();
            n.counts.data += 1;
            n.counts.blksize = n.counts.blksize.max(len - 4);
        }
        let existing = net.borrow().downstream.get(&(client, tid)).cloned();
        let downstream = match existing {
            Some(socket) => socket,
            None => {
                let Ok(socket) = bind() else { continue };
                net.borrow_mut()
                    .downstream
                    .insert((client, tid), socket.clone());
                let task = downstream_loop(
                    tasks.clone(),
                    net.clone(),
                    tid,
                    socket.clone(),
                    upstream.clone(),
                );
                tasks.spawn(task).detach();
                socket
            }
        };
        post(&tasks, &net, Way::ToClient, &downstream, client, datagram);
    }
}

/// What one client sends to the server port `tid`.
async fn downstream_loop(
    tasks: Tasks,
    net: Rc<RefCell<Net>>,
    tid: SocketAddr,
    downstream: Socket,
    upstream: Socket,
) {
    let mut buf = vec![0u8; 65_536];
    while let Ok((len, _)) = downstream.recv_from(&mut buf).await {
        post(&tasks, &net, Way::ToServer, &upstream, tid, &buf[..len]);
    }
}
