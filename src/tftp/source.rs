//! Where served bytes come from: files under a root directory, or files a role generates
//! (the central's alternate list, per-client config files), behind one [`FileSource`] trait.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::path::SafePath;

/// Random access to a transfer's bytes. The transfer core reads through this and nothing else.
pub trait ReadAt {
    /// Fills as much of `buf` as the data has from `offset`; returns the count (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// The bytes of one opened file.
#[derive(Debug)]
pub enum Content {
    /// A file on disk, read with `pread` so that every client of a popular file shares the
    /// kernel's page cache instead of a copy each.
    File {
        /// The open file.
        file: File,
        /// Its size when opened.
        len: u64,
    },
    /// Bytes in memory (generated files, netascii conversions).
    Bytes(Arc<[u8]>),
}

impl Content {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Content::File { len, .. } => *len,
            Content::Bytes(b) => b.len() as u64,
        }
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The content converted to netascii (LF becomes CR LF, a bare CR becomes CR NUL), in
    /// memory. Refused above `max_len` source bytes: netascii is for small text files.
    pub fn into_netascii(self, max_len: u64) -> Result<Content, OpenError> {
        if self.len() > max_len {
            return Err(OpenError::Denied("netascii file too large, use octet mode"));
        }
        let mut raw = vec![0u8; self.len() as usize];
        let mut filled = 0;
        while filled < raw.len() {
            let n = self
                .read_at(&mut raw[filled..], filled as u64)
                .map_err(OpenError::Io)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        raw.truncate(filled);
        let mut out = Vec::with_capacity(raw.len() + raw.len() / 16);
        for &b in &raw {
            match b {
                b'\n' => out.extend_from_slice(b"\r\n"),
                b'\r' => out.extend_from_slice(b"\r\0"),
                b => out.push(b),
            }
        }
        Ok(Content::Bytes(out.into()))
    }
}

impl ReadAt for Content {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            Content::Bytes(bytes) => bytes.read_at(buf, offset),
            Content::File { file, len } => {
                // Serve the size we announced even if the file grows meanwhile.
                let want = buf
                    .len()
                    .min(usize::try_from(len.saturating_sub(offset)).unwrap_or(usize::MAX));
                let mut filled = 0;
                while filled < want {
                    match file.read_at(&mut buf[filled..want], offset + filled as u64) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(filled)
            }
        }
    }
}

/// Why a file cannot be served.
#[derive(Debug)]
pub enum OpenError {
    /// No such file (TFTP error 1).
    NotFound,
    /// Exists but must not be served (TFTP error 2); the reason is logged and sent.
    Denied(&'static str),
    /// Reading failed.
    Io(io::Error),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::NotFound => f.write_str("file not found"),
            OpenError::Denied(why) => f.write_str(why),
            OpenError::Io(e) => write!(f, "read error: {e}"),
        }
    }
}

/// Something that opens files by name for a client.
pub trait FileSource: Send + Sync {
    /// Opens `path` for `client`. Generated sources may answer differently per client.
    fn open(&self, path: &SafePath, client: SocketAddr) -> Result<Content, OpenError>;

    /// `client` acknowledged the last block of `path`: it has the whole file. (The central
    /// counts a client against an alternate only once it has its list.)
    fn delivered(&self, _path: &str, _client: SocketAddr) {}
}

impl<T: FileSource + ?Sized> FileSource for Arc<T> {
    fn open(&self, path: &SafePath, client: SocketAddr) -> Result<Content, OpenError> {
        (**self).open(path, client)
    }

    fn delivered(&self, path: &str, client: SocketAddr) {
        (**self).delivered(path, client)
    }
}

/// Regular files below a root directory. Symlinks are followed only while they stay inside.
///
/// Opening never waits: the file is opened with `O_NONBLOCK` (a FIFO opens at once instead of
/// waiting for a writer) and `O_NOFOLLOW` (a symlink swapped in after the path was resolved is
/// refused), and its type is checked on the open descriptor, so a file swapped for a FIFO, a
/// device or a symlink between the check and the open is refused. The server still calls
/// [`FileSource::open`] off its executor, as any file system call can block.
#[derive(Debug, Clone)]
pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    /// Serves files below `root`, which must be an existing directory.
    pub fn new(root: &Path) -> io::Result<Self> {
        let root = root.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(DirSource { root })
    }
}

impl FileSource for DirSource {
    fn open(&self, path: &SafePath, _client: SocketAddr) -> Result<Content, OpenError> {
        let real = match self.root.join(path.as_str()).canonicalize() {
            Ok(real) => real,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OpenError::NotFound),
            Err(e) => return Err(OpenError::Io(e)),
        };
        if !real.starts_with(&self.root) {
            return Err(OpenError::Denied("path leaves the served root"));
        }
        // Checked before opening too, so that a device is not even opened.
        regular(std::fs::metadata(&real))?;
        let (file, len) = open_regular(&real)?;
        // Start reading it into the page cache now: the transfer reads it on the executor.
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::WillNeed);
        Ok(Content::File { file, len })
    }
}

/// Opens `path` without waiting and without following a symlink, and checks on the descriptor
/// that it is a regular file; returns it with its size.
fn open_regular(path: &Path) -> Result<(File, u64), OpenError> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY;
    let fd = rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
        match io::Error::from(e) {
            e if e.kind() == io::ErrorKind::NotFound => OpenError::NotFound,
            e if e.kind() == io::ErrorKind::PermissionDenied => {
                OpenError::Denied("permission denied")
            }
            e if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                OpenError::Denied("not a regular file")
            }
            e => OpenError::Io(e),
        }
    })?;
    let file = File::from(fd);
    let len = regular(file.metadata())?;
    Ok((file, len))
}

/// The size of a regular file, or why it is not one.
fn regular(meta: io::Result<std::fs::Metadata>) -> Result<u64, OpenError> {
    match meta {
        Ok(m) if m.is_file() => Ok(m.len()),
        Ok(m) if m.is_dir() => Err(OpenError::Denied("is a directory")),
        Ok(_) => Err(OpenError::Denied("not a regular file")),
        Err(e) => Err(OpenError::Io(e)),
    }
}

/// Tries `first`, and `second` where `first` has no such file: generated files over a root.
#[derive(Debug, Clone)]
pub struct Overlay<A, B> {
    /// Asked first.
    pub first: A,
    /// Asked when `first` answers [`OpenError::NotFound`].
    pub second: B,
}

impl<A: FileSource, B: FileSource> FileSource for Overlay<A, B> {
    fn open(&self, path: &SafePath, client: SocketAddr) -> Result<Content, OpenError> {
        match self.first.open(path, client) {
            Err(OpenError::NotFound) => self.second.open(path, client),
            other => other,
        }
    }

    fn delivered(&self, path: &str, client: SocketAddr) {
        self.first.delivered(path, client);
        self.second.delivered(path, client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use crate::tftp::path::sanitize;

    const CLIENT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        1069,
    ));

    fn open(src: &impl FileSource, name: &str) -> Result<Content, OpenError> {
        src.open(&sanitize(name).unwrap(), CLIENT)
    }

    fn read_all(c: &Content) -> Vec<u8> {
        let mut buf = vec![0; c.len() as usize + 10];
        let n = c.read_at(&mut buf, 0).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn serves_files_and_refuses_escapes_dirs_and_devices() {
        let tmp = TempDir::new("source");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("boot")).unwrap();
        std::fs::write(root.join("boot/kernel"), b"KERNEL").unwrap();
        std::fs::write(tmp.path().join("secret"), b"SECRET").unwrap();
        std::os::unix::fs::symlink("../secret", root.join("escape")).unwrap();
        std::os::unix::fs::symlink("boot/kernel", root.join("inside")).unwrap();
        std::os::unix::fs::symlink("/dev/null", root.join("device")).unwrap();
        let src = DirSource::new(&root).unwrap();

        assert_eq!(read_all(&open(&src, "boot/kernel").unwrap()), b"KERNEL");
        assert_eq!(read_all(&open(&src, "inside").unwrap()), b"KERNEL");
        assert!(matches!(open(&src, "missing"), Err(OpenError::NotFound)));
        assert!(matches!(open(&src, "escape"), Err(OpenError::Denied(_))));
        assert!(matches!(open(&src, "boot"), Err(OpenError::Denied(_))));
        assert!(matches!(open(&src, "device"), Err(OpenError::Denied(_))));
    }

    #[test]
    fn opening_never_waits_and_refuses_fifos_and_symlinks_on_the_descriptor() {
        // Issue 11, defect 8: a served file swapped for a FIFO after the type check made a
        // plain open() wait for a writer, on the executor: the whole server stopped. This is
        // the step after the check, given what was swapped in.
        let tmp = TempDir::new("source-swap");
        let fifo = tmp.path().join("fifo");
        let st = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::write(tmp.path().join("kernel"), b"KERNEL").unwrap();
        std::os::unix::fs::symlink("kernel", tmp.path().join("link")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || tx.send(open_regular(&path).map(|_| ())).unwrap());
        let opened = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("opening a FIFO waited for a writer");
        assert!(matches!(
            opened,
            Err(OpenError::Denied("not a regular file"))
        ));
        assert!(matches!(
            open_regular(&tmp.path().join("link")),
            Err(OpenError::Denied("not a regular file"))
        ));
        let (mut file, len) = open_regular(&tmp.path().join("kernel")).unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).unwrap();
        assert_eq!((bytes.as_slice(), len), (&b"KERNEL"[..], 6));
    }

    #[test]
    fn file_reads_stop_at_the_announced_length() {
        let tmp = TempDir::new("source-len");
        std::fs::write(tmp.path().join("f"), b"0123456789").unwrap();
        let src = DirSource::new(tmp.path()).unwrap();
        let content = open(&src, "f").unwrap();
        std::fs::write(tmp.path().join("f"), b"0123456789-grown").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(content.read_at(&mut buf, 6).unwrap(), 4);
        assert_eq!(&buf[..4], b"6789");
        assert_eq!(content.read_at(&mut buf, 10).unwrap(), 0);
        assert_eq!(content.read_at(&mut buf, u64::MAX).unwrap(), 0);
    }

    #[test]
    fn netascii_conversion() {
        let c = Content::Bytes(Arc::from(&b"a\nb\rc\r\n"[..]));
        let n = c.into_netascii(100).unwrap();
        assert_eq!(read_all(&n), b"a\r\nb\r\0c\r\0\r\n");
        let big = Content::Bytes(Arc::from(&[b'x'; 101][..]));
        assert!(matches!(big.into_netascii(100), Err(OpenError::Denied(_))));
    }

    struct Generated;
    impl FileSource for Generated {
        fn open(&self, path: &SafePath, client: SocketAddr) -> Result<Content, OpenError> {
            match path.as_str() {
                "list.txt" => Ok(Content::Bytes(Arc::from(client.to_string().as_bytes()))),
                _ => Err(OpenError::NotFound),
            }
        }
    }

    #[test]
    fn overlay_prefers_generated_files() {
        let tmp = TempDir::new("overlay");
        std::fs::write(tmp.path().join("list.txt"), b"stale").unwrap();
        std::fs::write(tmp.path().join("kernel"), b"K").unwrap();
        let src = Overlay {
            first: Generated,
            second: DirSource::new(tmp.path()).unwrap(),
        };
        assert_eq!(
            read_all(&open(&src, "list.txt").unwrap()),
            b"127.0.0.1:1069"
        );
        assert_eq!(read_all(&open(&src, "kernel").unwrap()), b"K");
    }
}
