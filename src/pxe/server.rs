//! The PXE shell: one proxyDHCP socket and one discovery socket per served interface, each
//! answering with that interface's address (multi-homed routers), around the sans-IO
//! [`respond`](super::responder::respond).

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;

use smol::net::UdpSocket;
use socket2::{Domain, Protocol, Socket, Type};

use super::responder::{respond_with, Decision, PxeConfig, Service};
use crate::log;

/// Where to listen: an interface and the address replies carry there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// How to bind (see [`Binding`]).
    pub binding: Binding,
    /// The central's address on that interface (siaddr, option 54).
    pub address: Ipv4Addr,
}

/// How a served interface's sockets are bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// `0.0.0.0` bound to the named device (`SO_BINDTODEVICE`): hears broadcasts on that
    /// interface only.
    Device(String),
    /// `0.0.0.0` on every interface: a single-homed host.
    Any,
    /// The address itself: relayed and unicast requests only (and loopback tests).
    Address,
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Binding::Device(name) => write!(f, "interface {name}"),
            Binding::Any => f.write_str("every interface"),
            Binding::Address => f.write_str("its address"),
        }
    }
}

/// The service's name in messages.
fn service_name(service: Service) -> &'static str {
    match service {
        Service::Proxy => "proxyDHCP",
        Service::Discovery => "boot-server discovery",
    }
}

/// PXE service settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PxeSettings {
    /// The responder's settings.
    pub responder: PxeConfig,
    /// Serve proxyDHCP on `proxy_port`; false serves only discovery (when the host also runs
    /// the site's DHCP server, as the PXE spec lays out).
    pub proxy: bool,
    /// Interfaces served.
    pub interfaces: Vec<Interface>,
    /// proxyDHCP port (67).
    pub proxy_port: u16,
    /// Discovery port (4011).
    pub discovery_port: u16,
}

struct Listener {
    socket: StdUdpSocket,
    service: Service,
    address: Ipv4Addr,
}

/// Gives a UEFI HTTP boot client (from the address it asked from) the URL of a path on the
/// best alternate that serves HTTP, if any.
pub type HttpLocator = Arc<dyn Fn(&str, SocketAddr) -> Option<String> + Send + Sync>;

/// Bound PXE sockets, ready to run.
pub struct PxeServer {
    /// Shared so that a config reload can change boot files and menu while it runs.
    responder: Arc<Mutex<PxeConfig>>,
    listeners: Vec<Listener>,
    http: Option<HttpLocator>,
}

fn bind(binding: &Binding, address: Ipv4Addr, port: u16) -> io::Result<StdUdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    let local = match binding {
        Binding::Device(name) => {
            socket.bind_device(Some(name.as_bytes()))?;
            Ipv4Addr::UNSPECIFIED
        }
        Binding::Any => Ipv4Addr::UNSPECIFIED,
        Binding::Address => address,
    };
    socket.bind(&SocketAddr::from((local, port)).into())?;
    Ok(socket.into())
}

impl PxeServer {
    /// Binds every socket (synchronously: see [`crate::tftp::server::Server`]). Ports below 1024
    /// need root or CAP_NET_BIND_SERVICE.
    pub fn bind(settings: &PxeSettings) -> Result<PxeServer, String> {
        settings.responder.boot_files.validate()?;
        let mut listeners = Vec::new();
        for iface in &settings.interfaces {
            let mut services = vec![(Service::Discovery, settings.discovery_port)];
            if settings.proxy {
                services.push((Service::Proxy, settings.proxy_port));
            }
            for (service, port) in services {
                let socket = bind(&iface.binding, iface.address, port).map_err(|e| {
                    format!(
                        "cannot listen for {} on {} port {port}: {e}",
                        service_name(service),
                        iface.binding
                    )
                })?;
                listeners.push(Listener {
                    socket,
                    service,
                    address: iface.address,
                });
            }
        }
        Ok(PxeServer {
            responder: Arc::new(Mutex::new(settings.responder.clone())),
            listeners,
            http: None,
        })
    }

    /// Answers UEFI HTTP boot clients with URLs `locate` gives.
    pub fn with_http_boot(self, locate: HttpLocator) -> Self {
        PxeServer {
            http: Some(locate),
            ..self
        }
    }

    /// The responder's settings, which may change while it runs (a config reload).
    pub fn responder(&self) -> Arc<Mutex<PxeConfig>> {
        self.responder.clone()
    }

    /// The bound addresses, by service.
    pub fn local_addrs(&self) -> Vec<(Service, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|l| Some((l.service, l.socket.local_addr().ok()?)))
            .collect()
    }

    /// Answers requests until a socket fails.
    pub async fn run(self) -> Result<(), String> {
        let mut sockets = Vec::new();
        for l in &self.listeners {
            let socket = UdpSocket::try_from(l.socket.try_clone().map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            sockets.push((socket, l.service, l.address));
        }
        let tasks = sockets
            .iter()
            .map(|(socket, service, address)| {
                serve(
                    socket,
                    *service,
                    *address,
                    &self.responder,
                    self.http.as_ref(),
                )
            })
            .collect();
        first_to_finish(tasks).await
    }
}

/// Polls every future; returns the first result (each listener runs until an error).
async fn first_to_finish<F: Future<Output = Result<(), String>>>(
    tasks: Vec<F>,
) -> Result<(), String> {
    let mut tasks: Vec<_> = tasks.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        tasks
            .iter_mut()
            .find_map(|task| match task.as_mut().poll(cx) {
                Poll::Ready(result) => Some(Poll::Ready(result)),
                Poll::Pending => None,
            })
            .unwrap_or(Poll::Pending)
    })
    .await
}

async fn serve(
    socket: &UdpSocket,
    service: Service,
    address: Ipv4Addr,
    responder: &Mutex<PxeConfig>,
    http: Option<&HttpLocator>,
) -> Result<(), String> {
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, from) = socket
            .recv_from(&mut buf)
            .await
            .map_err(|e| format!("PXE socket: {e}"))?;
        let decision = respond_with(
            &responder.lock().unwrap_or_else(PoisonError::into_inner),
            service,
            &buf[..n],
            from,
            address,
            &mut |path| http.and_then(|locate| locate(path, from)),
        );
        match decision {
            Decision::Ignore(why) => log::debug!("pxe: {service:?} {from}: ignored: {why}"),
            Decision::Reply {
                payload,
                to,
                client,
                file,
            } => {
                log::info!(
                    "pxe: {:?} {} (arch {}{}, uuid {}) from {from}: {} -> {to}",
                    service,
                    client.mac,
                    client.arch,
                    if client.ipxe { ", iPXE" } else { "" },
                    client.uuid.as_deref().unwrap_or("-"),
                    file.map_or("boot menu".to_string(), |f| format!("boot file {f}"))
                );
                if let Err(e) = socket.send_to(&payload, to).await {
                    log::warning_limited!("pxe: reply to {to}: {e}");
                }
            }
        }
    }
}
