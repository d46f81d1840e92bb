//! Admission of read requests, sans-IO: whether a datagram on the listening port starts a
//! transfer, is answered with an ERROR, or is dropped.
//!
//! Two steps, because the file is opened in between, by the caller and off its executor:
//! [`Endpoint::handle`] checks what needs no file (the packet, the name, the options) and
//! returns an [`Incoming`] request; once the caller has opened its file,
//! [`Endpoint::accept`] grants the options for the file's size, takes a slot in the transfer
//! table and builds the [`Transfer`]. Neither touches a socket, a file or the clock, so the
//! server shell and the simulated transfers in the tests admit requests through the same code.
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Instant;
//! use bootherd::tftp::endpoint::{DatagramEvent, Endpoint};
//! use bootherd::tftp::options::Limits;
//! use bootherd::tftp::progress::Progress;
//! use bootherd::tftp::source::Content;
//! use bootherd::tftp::transfer::Retransmit;
//!
//! let client: SocketAddr = "192.0.2.7:40000".parse().unwrap();
//! let endpoint = Endpoint {
//!     limits: Limits::default(),
//!     retransmit: Retransmit::default(),
//!     max_transfers: 512,
//!     single_port: false,
//!     closing: false,
//! };
//! let DatagramEvent::Incoming(incoming) =
//!     endpoint.handle(client, b"\x00\x01pxelinux.0\x00octet\x00tsize\x000\x00")
//! else {
//!     panic!("refused")
//! };
//! assert_eq!(incoming.path.as_str(), "pxelinux.0");
//! let file = Content::Bytes(vec![0u8; 1000].into());
//! let new = endpoint
//!     .accept(incoming, Ok(file), &Progress::new(), Instant::now())
//!     .unwrap();
//! assert_eq!(new.transfer.size(), 1000);
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::options::{Limits, Refused, Requested};
use super::path::{sanitize, PathError, SafePath};
use super::progress::{Progress, TransferGuard};
use super::source::{Content, OpenError};
use super::transfer::{Retransmit, Transfer};
use super::wire::{ErrorCode, Mode, Packet, WireError};

/// The admission rules of a server at one moment: what it grants, how many transfers it
/// serves, and whether it still takes requests. Cheap to build for each decision, so that a
/// reload takes effect with the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Largest block and window sizes granted.
    pub limits: Limits,
    /// Retransmission settings of new transfers.
    pub retransmit: Retransmit,
    /// Transfers served at once (counted in the [`Progress`] table, which other servers may
    /// share); a request beyond them is refused so that the client tries another server.
    pub max_transfers: usize,
    /// Transfers are served from the listening port, where an RRQ with a forged source is
    /// easy: each new transfer holds back its first window until the client answers.
    pub single_port: bool,
    /// The server is shutting down: every request is refused.
    pub closing: bool,
}

/// What to do with a datagram that arrived on the listening port from an unknown peer.
#[derive(Debug)]
pub enum DatagramEvent {
    /// A read request that passed the checks needing no file: open its file, then
    /// [`Endpoint::accept`] it.
    Incoming(Incoming),
    /// Answer with an ERROR.
    Refuse(Refusal),
    /// Drop it without an answer: an ERROR, which RFC 1350 never answers.
    Ignore,
}

/// A read request waiting for its file to be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The client.
    pub from: SocketAddr,
    /// The file asked for, checked lexically (the file source checks the rest).
    pub path: SafePath,
    /// Netascii files are converted when opened.
    pub mode: Mode,
    /// Checked, granted by [`Endpoint::accept`] once the size is known.
    options: Requested,
}

/// An ERROR to answer a request with, and why, for the log.
#[derive(Debug)]
pub struct Refusal {
    /// The client.
    pub to: SocketAddr,
    /// Sent as the ERROR's code.
    pub code: ErrorCode,
    /// Sent as the ERROR's message: short, and never the server's own paths.
    pub message: &'static str,
    /// What the operator should see; `None` for routine refusals (a stray ACK, a shutdown).
    /// Boxed: the common case carries none, and refusals travel in `Result`s.
    pub reason: Option<Box<Reason>>,
}

/// Why a request was refused, in more detail than the client is told.
#[derive(Debug)]
pub enum Reason {
    /// A write request: this server only reads.
    WriteRequest {
        /// The file the client wanted to write.
        filename: String,
    },
    /// Not a TFTP packet.
    Malformed(WireError),
    /// A file name that is absolute, climbs out with `..` or holds control characters.
    Name {
        /// As sent.
        name: String,
        /// What is wrong with it.
        error: PathError,
    },
    /// An option with a value the server must refuse (RFC 2347: ERROR 8).
    Option {
        /// The file asked for.
        path: SafePath,
        /// The option.
        refused: Refused,
    },
    /// The file could not be opened.
    Open {
        /// The file asked for.
        path: SafePath,
        /// Why.
        error: OpenError,
    },
    /// Every transfer slot is taken.
    Busy {
        /// The file asked for.
        path: SafePath,
        /// The slots.
        max: usize,
    },
}

/// A transfer admitted by [`Endpoint::accept`], ready to serve.
#[derive(Debug)]
pub struct NewTransfer {
    /// The transfer, with its negotiated options; its first transmit is the OACK or DATA 1.
    pub transfer: Transfer,
    /// Its bytes.
    pub content: Content,
    /// The file served.
    pub path: SafePath,
    /// Its slot in the transfer table, held until the transfer is dropped.
    pub guard: TransferGuard,
    /// The granted block size, for the log.
    pub blksize: u16,
    /// The granted window size, for the log.
    pub windowsize: u16,
}

impl Endpoint {
    /// Decides what to do with `datagram` from `from`, a peer with no transfer yet.
    pub fn handle(&self, from: SocketAddr, datagram: &[u8]) -> DatagramEvent {
        let refuse = |code, message, reason: Option<Reason>| {
            DatagramEvent::Refuse(Refusal {
                to: from,
                code,
                message,
                reason: reason.map(Box::new),
            })
        };
        let request = match Packet::parse(datagram) {
            Ok(Packet::Read(request)) => request,
            Ok(Packet::Write(request)) => {
                let filename = request.filename.to_string();
                return refuse(
                    ErrorCode::AccessViolation,
                    "read-only server",
                    Some(Reason::WriteRequest { filename }),
                );
            }
            Ok(Packet::Error { .. }) => return DatagramEvent::Ignore,
            // A stray ACK or DATA: its transfer is over, or never was.
            Ok(_) => return refuse(ErrorCode::UnknownTid, "no such transfer", None),
            Err(e) => {
                return refuse(
                    ErrorCode::IllegalOperation,
                    "malformed request",
                    Some(Reason::Malformed(e)),
                )
            }
        };
        if self.closing {
            return refuse(
                ErrorCode::NotDefined,
                "server shutting down, try another server",
                None,
            );
        }
        let name = request.filename;
        let path = match sanitize(name) {
            Ok(path) => path,
            Err(error) => {
                let name = name.to_string();
                return refuse(
                    ErrorCode::AccessViolation,
                    "file name refused",
                    Some(Reason::Name { name, error }),
                );
            }
        };
        match Requested::parse(request.options) {
            Ok(options) => DatagramEvent::Incoming(Incoming {
                from,
                path,
                mode: request.mode,
                options,
            }),
            Err(refused) => refuse(
                ErrorCode::OptionRefused,
                "option refused",
                Some(Reason::Option { path, refused }),
            ),
        }
    }

    /// Starts the transfer of `incoming` at `now`, given what opening its file gave, if a slot
    /// in `progress` is free.
    pub fn accept(
        &self,
        incoming: Incoming,
        opened: Result<Content, OpenError>,
        progress: &Arc<Progress>,
        now: Instant,
    ) -> Result<NewTransfer, Refusal> {
        let Incoming {
            from,
            path,
            options,
            ..
        } = incoming;
        let content = match opened {
            Ok(content) => content,
            Err(error) => {
                let (code, message) = match error {
                    OpenError::NotFound => (ErrorCode::FileNotFound, "file not found"),
                    OpenError::Denied(why) => (ErrorCode::AccessViolation, why),
                    OpenError::Io(_) => (ErrorCode::NotDefined, "read error"),
                };
                return Err(Refusal {
                    to: from,
                    code,
                    message,
                    reason: Some(Box::new(Reason::Open { path, error })),
                });
            }
        };
        let negotiated = options.grant(self.limits, content.len());
        let max = self.max_transfers;
        let Some(guard) = progress.try_begin(max, from, path.as_str(), content.len(), now) else {
            return Err(Refusal {
                to: from,
                code: ErrorCode::NotDefined,
                message: "server busy, try another server",
                reason: Some(Box::new(Reason::Busy { path, max })),
            });
        };
        let (blksize, windowsize) = (negotiated.blksize, negotiated.windowsize);
        let mut transfer = Transfer::new(from, negotiated, self.retransmit, content.len());
        if self.single_port {
            // ACK 0 to the well-known port can be sent blind with a forged source.
            transfer = transfer.limit_until_proven();
        }
        Ok(NewTransfer {
            transfer,
            content,
            path,
            guard,
            blksize,
            windowsize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::wire::OptionsBuf;

    const CLIENT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::new(192, 0, 2, 7),
        40000,
    ));

    static RRQ_PLAIN: &[u8] = b"\x00\x01pxelinux.0\x00octet\x00";
    static RRQ_OPTIONS: &[u8] = b"\x00\x01boot\\x86_64\\vmlinuz\x00octet\x00blksize\x001468\x00tsize\x000\x00windowsize\x0016\x00";
    static WRQ: &[u8] = b"\x00\x02pxelinux.0\x00octet\x00";

    /// A server's defaults.
    fn endpoint() -> Endpoint {
        Endpoint {
            limits: Limits::default(),
            retransmit: Retransmit::default(),
            max_transfers: 512,
            single_port: false,
            closing: false,
        }
    }

    fn incoming(endpoint: &Endpoint, datagram: &[u8]) -> Incoming {
        match endpoint.handle(CLIENT, datagram) {
            DatagramEvent::Incoming(incoming) => incoming,
            other => panic!("{other:?}"),
        }
    }

    fn refusal(endpoint: &Endpoint, datagram: &[u8]) -> Refusal {
        match endpoint.handle(CLIENT, datagram) {
            DatagramEvent::Refuse(refusal) => refusal,
            other => panic!("{other:?}"),
        }
    }

    fn file(len: usize) -> Result<Content, OpenError> {
        Ok(Content::Bytes(vec![1u8; len].into()))
    }

    /// The first datagram the transfer sends.
    fn first_transmit(transfer: &mut Transfer, content: &Content) -> Vec<u8> {
        let mut buf = vec![0u8; transfer.batch_buffer_len(1)];
        let tx = transfer
            .poll_transmit(Instant::now(), 1, &mut buf, content)
            .unwrap();
        assert_eq!(tx.to, CLIENT);
        buf[..tx.len].to_vec()
    }

    #[test]
    fn a_plain_read_request_starts_with_data_1() {
        let endpoint = endpoint();
        let incoming = incoming(&endpoint, RRQ_PLAIN);
        assert_eq!(
            (incoming.from, incoming.path.as_str(), incoming.mode),
            (CLIENT, "pxelinux.0", Mode::Octet)
        );
        let progress = Progress::new();
        let mut new = endpoint
            .accept(incoming, file(700), &progress, Instant::now())
            .unwrap();
        assert_eq!((new.blksize, new.windowsize), (512, 1));
        assert_eq!(progress.totals().active, 1);
        let first = first_transmit(&mut new.transfer, &new.content);
        assert_eq!(first[..4], *b"\x00\x03\x00\x01");
        assert_eq!(first.len(), 4 + 512);
        drop(new);
        assert_eq!(progress.totals().active, 0);
    }

    #[test]
    fn options_are_granted_within_the_limits_with_the_files_size() {
        let endpoint = Endpoint {
            limits: Limits {
                max_blksize: 1024,
                max_windowsize: 64,
            },
            ..endpoint()
        };
        let incoming = incoming(&endpoint, RRQ_OPTIONS);
        assert_eq!(incoming.path.as_str(), "boot/x86_64/vmlinuz");
        let mut new = endpoint
            .accept(incoming, file(123_456), &Progress::new(), Instant::now())
            .unwrap();
        assert_eq!((new.blksize, new.windowsize), (1024, 16));
        let mut oack = OptionsBuf::default();
        oack.push("blksize", 1024);
        oack.push("tsize", 123_456);
        oack.push("windowsize", 16);
        let mut want = vec![0u8; 128];
        let len = Packet::OptionAck(oack.as_options())
            .emit(&mut want)
            .unwrap();
        assert_eq!(first_transmit(&mut new.transfer, &new.content), want[..len]);
    }

    #[test]
    fn write_requests_are_refused() {
        let refusal = refusal(&endpoint(), WRQ);
        assert_eq!(
            (refusal.to, refusal.code, refusal.message),
            (CLIENT, ErrorCode::AccessViolation, "read-only server")
        );
        assert!(matches!(
            refusal.reason.as_deref(),
            Some(Reason::WriteRequest { filename }) if filename == "pxelinux.0"
        ));
        let mut buf = [0u8; 64];
        let len = Packet::Error {
            code: refusal.code,
            message: refusal.message,
        }
        .emit(&mut buf)
        .unwrap();
        assert_eq!(buf[..len], *b"\x00\x05\x00\x02read-only server\x00");
    }

    #[test]
    fn hostile_names_are_refused() {
        for (datagram, want) in [
            (
                &b"\x00\x01/etc/passwd\x00octet\x00"[..],
                PathError::Absolute,
            ),
            (
                b"\x00\x01boot/../../etc/shadow\x00octet\x00",
                PathError::ParentDir,
            ),
            (b"\x00\x01..\\..\\x\x00netascii\x00", PathError::ParentDir),
            (b"\x00\x01a\nb\x00octet\x00", PathError::ControlChar),
            (b"\x00\x01./\x00octet\x00", PathError::Empty),
        ] {
            let refusal = refusal(&endpoint(), datagram);
            assert_eq!(
                (refusal.code, refusal.message),
                (ErrorCode::AccessViolation, "file name refused")
            );
            assert!(
                matches!(refusal.reason.as_deref(), Some(Reason::Name { error, .. }) if *error == want),
                "{datagram:?}: {refusal:?}"
            );
        }
    }

    #[test]
    fn bad_options_are_refused_with_error_8() {
        // Which values are bad is the negotiation's business (see `options`); here, the answer.
        let refusal = refusal(&endpoint(), b"\x00\x01f\x00octet\x00blksize\x007\x00");
        assert_eq!(
            (refusal.code, refusal.message),
            (ErrorCode::OptionRefused, "option refused")
        );
        assert!(matches!(
            refusal.reason.as_deref(),
            Some(Reason::Option { path, refused }) if path.as_str() == "f" && refused.value == "7"
        ));
    }

    #[test]
    fn malformed_datagrams_stray_packets_and_errors() {
        let endpoint = endpoint();
        let malformed = refusal(&endpoint, b"\x00\x01no-terminator");
        assert_eq!(malformed.code, ErrorCode::IllegalOperation);
        assert!(matches!(
            malformed.reason.as_deref(),
            Some(Reason::Malformed(WireError::Unterminated))
        ));
        let stray = refusal(&endpoint, b"\x00\x04\x00\x07");
        assert_eq!(
            (stray.code, stray.message, stray.reason.is_none()),
            (ErrorCode::UnknownTid, "no such transfer", true)
        );
        assert!(matches!(
            endpoint.handle(CLIENT, b"\x00\x05\x00\x00bye\x00"),
            DatagramEvent::Ignore
        ));
    }

    #[test]
    fn a_closing_server_refuses_every_well_formed_request() {
        let endpoint = Endpoint {
            closing: true,
            ..endpoint()
        };
        let closing = refusal(&endpoint, RRQ_OPTIONS);
        assert_eq!(
            (closing.code, closing.message, closing.reason.is_none()),
            (
                ErrorCode::NotDefined,
                "server shutting down, try another server",
                true
            )
        );
        // The shutdown is checked after the packet, before the name.
        let malformed = refusal(&endpoint, b"\x00\x01x");
        assert_eq!(malformed.code, ErrorCode::IllegalOperation);
        let hostile = refusal(&endpoint, b"\x00\x01/etc/passwd\x00octet\x00");
        assert_eq!(hostile.code, ErrorCode::NotDefined);
    }

    #[test]
    fn files_that_cannot_be_opened_are_refused() {
        let endpoint = endpoint();
        for (error, code, message) in [
            (
                OpenError::NotFound,
                ErrorCode::FileNotFound,
                "file not found",
            ),
            (
                OpenError::Denied("not a regular file"),
                ErrorCode::AccessViolation,
                "not a regular file",
            ),
            (
                OpenError::Io(std::io::Error::other("EIO")),
                ErrorCode::NotDefined,
                "read error",
            ),
        ] {
            let incoming = incoming(&endpoint, RRQ_PLAIN);
            let progress = Progress::new();
            let refusal = endpoint
                .accept(incoming, Err(error), &progress, Instant::now())
                .unwrap_err();
            assert_eq!((refusal.code, refusal.message), (code, message));
            assert!(matches!(
                refusal.reason.as_deref(),
                Some(Reason::Open { .. })
            ));
            assert_eq!(progress.totals().active, 0);
        }
    }

    #[test]
    fn over_capacity_is_refused_until_a_slot_frees() {
        let endpoint = Endpoint {
            max_transfers: 2,
            ..endpoint()
        };
        let progress = Progress::new();
        let now = Instant::now();
        let admit = || {
            let incoming = incoming(&endpoint, RRQ_OPTIONS);
            endpoint.accept(incoming, file(10), &progress, now)
        };
        let first = admit().unwrap();
        let _second = admit().unwrap();
        let refusal = admit().unwrap_err();
        assert_eq!(
            (refusal.code, refusal.message),
            (ErrorCode::NotDefined, "server busy, try another server")
        );
        assert!(matches!(
            refusal.reason.as_deref(),
            Some(Reason::Busy { max: 2, .. })
        ));
        drop(first);
        assert!(admit().is_ok());
    }

    #[test]
    fn single_port_transfers_hold_back_their_first_window() {
        let now = Instant::now();
        let start = |single_port| {
            let endpoint = Endpoint {
                single_port,
                ..endpoint()
            };
            let incoming = incoming(&endpoint, b"\x00\x01f\x00octet\x00windowsize\x0016\x00");
            let mut new = endpoint
                .accept(incoming, file(100_000), &Progress::new(), now)
                .unwrap();
            let mut buf = vec![0u8; new.transfer.batch_buffer_len(64)];
            // The OACK, then the first window once the client ACKs it.
            new.transfer.poll_transmit(now, 64, &mut buf, &new.content);
            new.transfer
                .handle_datagram(now, CLIENT, b"\x00\x04\x00\x00");
            let mut blocks = Vec::new();
            while let Some(tx) = new.transfer.poll_transmit(now, 64, &mut buf, &new.content) {
                blocks.extend(tx.datagrams(&buf).map(|d| u16::from_be_bytes([d[2], d[3]])));
            }
            blocks
        };
        assert_eq!(start(false), (1..=16).collect::<Vec<_>>());
        // Block 1, and block 3 to draw an answer at once from a client that is really there.
        assert_eq!(start(true), [1, 3]);
    }
}
