//! TFTP through the firmware's MTFTPv4 protocol, with the timeouts in our hands.
//!
//! The PXE Base Code's own TFTP waits 4 s per packet and tries 6 times, so a silent server
//! costs 24 s, and it cannot tell a slow server from a dead one. Used directly, MTFTPv4 lets
//! us decide: the firmware re-sends the request and ACKs on its one-second timer tick and gives
//! up after [`TRIES`] ticks without progress (the patience a busy server gets), while this
//! module aborts a read whose server has sent nothing at all within [`FIRST_ANSWER_MS`] (a
//! dead one). A closed port or unreachable host ends the read at once (ICMP). Data comes in
//! through the packet callback, in order, into a buffer sized by the `tsize` the server
//! announces, so nothing is fetched twice.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ffi::{c_char, c_void, CStr};
use core::ptr;
use core::time::Duration;

use uefi::boot::{self, EventType, OpenProtocolAttributes, OpenProtocolParams, TimerTrigger, Tpl};
use uefi::proto::device_path::DevicePath;
use uefi::proto::unsafe_protocol;
use uefi::{Event, Handle, Status, StatusExt};
use uefi_raw::protocol::driver::ServiceBindingProtocol;
use uefi_raw::Boolean;

/// A server that sends nothing at all this long after the request is dead.
pub const FIRST_ANSWER_MS: u64 = 1000;
/// Seconds per firmware timeout (its timer ticks once a second): a lost request or ACK is
/// re-sent within a second.
const TIMEOUT_S: u16 = 1;
/// Timeouts without progress before the firmware gives up on a server that did answer.
const TRIES: u16 = 10;
/// Block size asked for: a DATA packet fills a 1500-byte Ethernet frame.
const BLKSIZE: &CStr = c"1468";
/// Window size asked for (RFC 7440): fewer round trips; firmware that does not know the option
/// (before 2020) gets a plain request.
const WINDOWSIZE: &CStr = c"16";
/// Largest file accepted (the kernel and initrds are held in memory).
const MAX_FILE: u64 = 1 << 31;

const EFI_MTFTP4_OPCODE_DATA: u16 = 3;
const EFI_MTFTP4_OPCODE_ERROR: u16 = 5;
const EFI_MTFTP4_OPCODE_OACK: u16 = 6;

#[repr(C)]
struct ConfigData {
    use_default_setting: Boolean,
    station_ip: [u8; 4],
    subnet_mask: [u8; 4],
    local_port: u16,
    gateway_ip: [u8; 4],
    server_ip: [u8; 4],
    initial_server_port: u16,
    try_count: u16,
    timeout_value: u16,
}

#[repr(C)]
struct TftpOption {
    option: *const c_char,
    value: *const c_char,
}

type CheckPacket = unsafe extern "efiapi" fn(*mut Mtftp4, *mut Token, u16, *const u8) -> Status;

#[repr(C)]
struct Token {
    status: Status,
    event: *mut c_void,
    override_data: *const c_void,
    filename: *const u8,
    mode: *const u8,
    option_count: u32,
    options: *const TftpOption,
    buffer_size: u64,
    buffer: *mut c_void,
    context: *mut c_void,
    check_packet: Option<CheckPacket>,
    timeout_callback: *const c_void,
    packet_needed: *const c_void,
}

/// `EFI_MTFTP4_PROTOCOL`.
#[repr(C)]
#[unsafe_protocol("78247c57-63db-4708-99c2-a8b4a9a61f6b")]
struct Mtftp4 {
    get_mode_data: *const c_void,
    configure: unsafe extern "efiapi" fn(*mut Mtftp4, *const ConfigData) -> Status,
    get_info: *const c_void,
    parse_options: *const c_void,
    read_file: unsafe extern "efiapi" fn(*mut Mtftp4, *mut Token) -> Status,
    write_file: *const c_void,
    read_directory: *const c_void,
    poll: unsafe extern "efiapi" fn(*mut Mtftp4) -> Status,
}

/// `EFI_MTFTP4_SERVICE_BINDING_PROTOCOL`.
#[repr(transparent)]
#[unsafe_protocol("2fe800be-8f01-4aa6-946b-d71388e1833f")]
struct Mtftp4ServiceBinding(ServiceBindingProtocol);

/// Why a read failed.
#[derive(Debug)]
pub enum ReadError {
    /// Nothing at all came from the server within [`FIRST_ANSWER_MS`].
    NoAnswer,
    /// The server answered with a TFTP error.
    Server(u16, String),
    /// Any other failure: ICMP unreachable, a timeout after the server had answered, a
    /// refused option, a size mismatch.
    Failed(String),
}

impl core::fmt::Display for ReadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ReadError::NoAnswer => write!(f, "no answer in {FIRST_ANSWER_MS} ms"),
            ReadError::Server(code, message) => write!(f, "server error {code}: {message}"),
            ReadError::Failed(why) => f.write_str(why),
        }
    }
}

/// What the packet callback collects.
#[derive(Default)]
struct Received {
    answered: bool,
    data: Vec<u8>,
    tsize: Option<u64>,
    error: Option<(u16, String)>,
}

/// Reads through one MTFTPv4 child of the boot NIC; destroyed on drop.
pub struct Client {
    binding: *mut ServiceBindingProtocol,
    child: Handle,
    protocol: *mut Mtftp4,
    station: [u8; 4],
    mask: [u8; 4],
    gateway: [u8; 4],
}

impl Client {
    /// A client on the NIC under `device` (the PXE Base Code's handle), sending from `station`.
    pub fn new(
        device: Handle,
        station: [u8; 4],
        mask: [u8; 4],
        gateway: [u8; 4],
    ) -> Result<Client, String> {
        let image = boot::image_handle();
        let path = boot::open_protocol_exclusive::<DevicePath>(device)
            .map_err(|e| format!("no device path for the boot NIC: {:?}", e.status()))?;
        let mut rest: &DevicePath = &path;
        let nic = boot::locate_device_path::<Mtftp4ServiceBinding>(&mut rest)
            .map_err(|e| format!("no MTFTPv4 on the boot NIC: {:?}", e.status()))?;
        drop(path);
        let get = |handle| OpenProtocolParams {
            handle,
            agent: image,
            controller: None,
        };
        // SAFETY: GetProtocol only borrows the interfaces; the network drivers keep them
        // installed while this program runs, and the child is destroyed before it ends.
        unsafe {
            let binding = boot::open_protocol::<Mtftp4ServiceBinding>(
                get(nic),
                OpenProtocolAttributes::GetProtocol,
            )
            .map_err(|e| format!("MTFTPv4 service: {:?}", e.status()))?;
            let binding: *mut ServiceBindingProtocol = &raw const binding.0 as *mut _;
            let mut child = ptr::null_mut();
            ((*binding).create_child)(binding, &mut child)
                .to_result()
                .map_err(|e| format!("MTFTPv4 child: {:?}", e.status()))?;
            let child = Handle::from_ptr(child).ok_or("MTFTPv4 child: no handle")?;
            let protocol = match boot::open_protocol::<Mtftp4>(
                get(child),
                OpenProtocolAttributes::GetProtocol,
            ) {
                Ok(p) => &raw const *p as *mut Mtftp4,
                Err(e) => {
                    let _ = ((*binding).destroy_child)(binding, child.as_ptr());
                    return Err(format!("MTFTPv4 protocol: {:?}", e.status()));
                }
            };
            Ok(Client {
                binding,
                child,
                protocol,
                station,
                mask,
                gateway,
            })
        }
    }

    /// Reads `path` from `server` (port 69) into memory.
    pub fn read(&mut self, server: [u8; 4], path: &str) -> Result<Vec<u8>, ReadError> {
        self.read_with(server, path, true)
    }

    fn read_with(
        &mut self,
        server: [u8; 4],
        path: &str,
        windowed: bool,
    ) -> Result<Vec<u8>, ReadError> {
        let failed = |what: &str, status: Status| ReadError::Failed(format!("{what}: {status:?}"));
        let config = ConfigData {
            use_default_setting: Boolean::FALSE,
            station_ip: self.station,
            subnet_mask: self.mask,
            local_port: 0,
            gateway_ip: self.gateway,
            server_ip: server,
            initial_server_port: 69,
            try_count: TRIES,
            timeout_value: TIMEOUT_S,
        };
        let mut name = Vec::from(path.as_bytes());
        name.push(0);
        let options = [
            TftpOption {
                option: c"blksize".as_ptr(),
                value: BLKSIZE.as_ptr(),
            },
            TftpOption {
                option: c"tsize".as_ptr(),
                value: c"0".as_ptr(),
            },
            TftpOption {
                option: c"windowsize".as_ptr(),
                value: WINDOWSIZE.as_ptr(),
            },
        ];
        // SAFETY: an event without a notification function, closed below.
        let done = unsafe { boot::create_event(EventType::empty(), Tpl::CALLBACK, None, None) }
            .map_err(|e| failed("event", e.status()))?;
        // Written by the packet callback, which the firmware may run from its own timer
        // events: only touched through this pointer until the read has ended.
        let received = Box::into_raw(Box::<Received>::default());
        let mut token = Token {
            status: Status::SUCCESS,
            event: done.as_ptr(),
            override_data: ptr::null(),
            filename: name.as_ptr(),
            mode: ptr::null(),
            option_count: if windowed { 3 } else { 2 },
            options: options.as_ptr(),
            buffer_size: 0,
            buffer: ptr::null_mut(),
            context: received.cast(),
            check_packet: Some(check_packet),
            timeout_callback: ptr::null(),
            packet_needed: ptr::null(),
        };
        let deadline = Deadline::in_ms(FIRST_ANSWER_MS);
        // SAFETY: the protocol pointer is valid while the child lives; the token, the file
        // name, the options and `received` outlive the operation, which has ended (completed,
        // or aborted by the reset) when the loop exits.
        let status = unsafe {
            let p = self.protocol;
            let configured = ((*p).configure)(p, &config);
            let started = match configured {
                Status::SUCCESS => ((*p).read_file)(p, &mut token),
                error => error,
            };
            if started.is_error() {
                let _ = ((*p).configure)(p, ptr::null());
                started
            } else {
                loop {
                    let _ = ((*p).poll)(p);
                    let status = ptr::read_volatile(&raw const token.status);
                    if status != Status::NOT_READY {
                        break status;
                    }
                    if !ptr::read_volatile(&raw const (*received).answered) && deadline.passed() {
                        // Resetting the instance aborts the read.
                        let _ = ((*p).configure)(p, ptr::null());
                        break Status::NO_RESPONSE;
                    }
                }
            }
        };
        let _ = boot::close_event(done);
        // SAFETY: the read has ended: the firmware no longer calls back with this pointer.
        let received = unsafe { Box::from_raw(received) };
        if let Some((code, message)) = received.error {
            return Err(ReadError::Server(code, message));
        }
        match status {
            Status::SUCCESS => {}
            Status::NO_RESPONSE => return Err(ReadError::NoAnswer),
            // Firmware without RFC 7440 refuses to send the option at all.
            Status::UNSUPPORTED if windowed => return self.read_with(server, path, false),
            other => return Err(ReadError::Failed(describe(other))),
        }
        match received.tsize {
            Some(size) if size != received.data.len() as u64 => Err(ReadError::Failed(format!(
                "received {} bytes, server announced {size}",
                received.data.len()
            ))),
            _ => Ok(received.data),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // SAFETY: the child was created by this binding and no operation is running.
        let _ = unsafe { ((*self.binding).destroy_child)(self.binding, self.child.as_ptr()) };
    }
}

/// What a read's final status means, in words where the firmware's names are unknown to the
/// `uefi` crate (the ICMP errors of UEFI 2.x).
fn describe(status: Status) -> String {
    let code = status.0 & !Status::ERROR_BIT;
    match code {
        100 => "ICMP network unreachable".into(),
        101 => "ICMP host unreachable".into(),
        102 => "ICMP protocol unreachable".into(),
        103 => "ICMP port unreachable".into(),
        _ if status == Status::TIMEOUT => {
            format!("no progress in {TRIES} tries of {TIMEOUT_S} s")
        }
        _ => format!("{status:?}"),
    }
}

/// The firmware calls this for every OACK and ERROR, and for every DATA packet in order.
unsafe extern "efiapi" fn check_packet(
    _this: *mut Mtftp4,
    token: *mut Token,
    len: u16,
    packet: *const u8,
) -> Status {
    // SAFETY: the firmware passes our token, whose context is the `Received` of the running
    // read, and a packet of `len` bytes.
    let (received, packet) = unsafe {
        (
            &mut *(*token).context.cast::<Received>(),
            core::slice::from_raw_parts(packet, usize::from(len)),
        )
    };
    received.answered = true;
    let Some((opcode, body)) = packet.split_first_chunk::<2>() else {
        return Status::SUCCESS;
    };
    match u16::from_be_bytes(*opcode) {
        EFI_MTFTP4_OPCODE_DATA => {
            let data = body.get(2..).unwrap_or_default();
            if (received.data.len() + data.len()) as u64 > MAX_FILE {
                return Status::ABORTED;
            }
            received.data.extend_from_slice(data);
        }
        EFI_MTFTP4_OPCODE_OACK => {
            received.tsize = oack_tsize(body).filter(|&size| size <= MAX_FILE);
            if let Some(size) = received.tsize {
                received.data.reserve_exact(size as usize);
            }
        }
        EFI_MTFTP4_OPCODE_ERROR => {
            let (code, message) = body.split_at(body.len().min(2));
            let code = match code {
                [a, b] => u16::from_be_bytes([*a, *b]),
                _ => 0,
            };
            let message = message.split(|&b| b == 0).next().unwrap_or_default();
            received.error = Some((code, String::from_utf8_lossy(message).into()));
        }
        _ => {}
    }
    Status::SUCCESS
}

/// The `tsize` value of an OACK's NUL-separated option list.
fn oack_tsize(options: &[u8]) -> Option<u64> {
    let mut words = options.split(|&b| b == 0);
    while let (Some(name), Some(value)) = (words.next(), words.next()) {
        if name.eq_ignore_ascii_case(b"tsize") {
            return core::str::from_utf8(value).ok()?.parse().ok();
        }
    }
    None
}

/// A one-shot timer event.
struct Deadline(Option<Event>);

impl Deadline {
    fn in_ms(ms: u64) -> Deadline {
        // SAFETY: a timer event without a notification function, closed on drop.
        let event = unsafe { boot::create_event(EventType::TIMER, Tpl::CALLBACK, None, None) }.ok();
        let event = event.filter(|e| {
            boot::set_timer(e, TimerTrigger::Relative(Duration::from_millis(ms))).is_ok()
        });
        Deadline(event)
    }

    /// Whether the time is up (never, if the firmware gave no timer: the firmware's own retry
    /// limit still ends the read).
    fn passed(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|e| boot::check_event(e).unwrap_or(false))
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Some(event) = self.0.take() {
            let _ = boot::close_event(event);
        }
    }
}
