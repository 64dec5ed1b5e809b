//! [`MemFile`]: an owned memfd, and [`FromFdError`].

use std::ffi::CStr;
use std::fmt;
use std::fs::{File, Metadata};
use std::io::{self, IoSlice, IoSliceMut, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::process::Stdio;

use crate::{CreateOptions, Seal, Seals, sys};

/// The longest name `memfd_create` accepts, in bytes (`NAME_MAX` minus the `memfd:` prefix).
pub const MAX_NAME_LEN: usize = 249;

/// A memory-backed file: an owned file descriptor made by
/// [`memfd_create(2)`](https://man7.org/linux/man-pages/man2/memfd_create.2.html), to which
/// [seals](Seal) can be added.
///
/// It reads, writes and seeks like a [`File`] (also through `&MemFile`), and can be mapped
/// with `memmap2`. Its memory lives as long as any descriptor or mapping of it does, so it can
/// be handed to another process (over a Unix socket, or as a child's stdin via
/// [`Stdio`]) and outlive its creator.
///
/// Seals make the file safe to share: once [`Seal::Write`] and [`Seal::Shrink`] are in place,
/// nobody can change its bytes or cut it short under a reader's mapping. See
/// [`MemFile::add_seals`].
///
/// ```
/// use memfile::{MemFile, CreateOptions, Seal};
/// use std::io::{Read, Seek, Write};
/// # fn main() -> std::io::Result<()> {
/// let mut file = MemFile::create("greeting", CreateOptions::new().allow_sealing(true))?;
/// file.write_all(b"Hello world!")?;
/// file.add_seals(Seal::Write | Seal::Shrink | Seal::Grow)?;
/// assert!(file.write_all(b"again").is_err());
///
/// let mut text = String::new();
/// file.rewind()?;
/// file.read_to_string(&mut text)?;
/// assert_eq!(text, "Hello world!");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct MemFile {
    file: File,
}

impl MemFile {
    /// Creates a memfd with the given options (`memfd_create(2)`).
    ///
    /// The name is for debugging only: it shows in `/proc/PID/fd/` and `/proc/PID/maps` as
    /// `/memfd:NAME`, and several files may share one. The descriptor has close-on-exec set.
    ///
    /// # Errors
    ///
    /// - [`io::ErrorKind::InvalidInput`] if `name` holds a NUL byte or is longer than
    ///   [`MAX_NAME_LEN`] (249) bytes: the kernel would refuse or truncate it.
    /// - [`io::ErrorKind::PermissionDenied`] for [`CreateOptions::exec`]`(true)` when the
    ///   `vm.memfd_noexec` sysctl forbids executable memfds.
    /// - Any error of `memfd_create`, for example too many open files, or huge pages of a
    ///   size the machine does not have.
    pub fn create(name: &str, options: CreateOptions) -> io::Result<MemFile> {
        // A stack copy with room for the NUL: no allocation for the common case.
        let mut buf = [0u8; MAX_NAME_LEN + 1];
        check_name(name.as_bytes())?;
        buf[..name.len()].copy_from_slice(name.as_bytes());
        let cname = CStr::from_bytes_with_nul(&buf[..=name.len()])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        MemFile::create_cstr(cname, options)
    }

    /// Creates a memfd whose name is already a [`CStr`]; otherwise as [`MemFile::create`].
    ///
    /// # Errors
    ///
    /// As [`MemFile::create`].
    pub fn create_cstr(name: &CStr, options: CreateOptions) -> io::Result<MemFile> {
        MemFile::create_with(name, options, exec_flags_supported)
    }

    /// [`MemFile::create_cstr`], with `exec_flags` saying whether to pass `MFD_EXEC` /
    /// `MFD_NOEXEC_SEAL` (a parameter so that tests can take the path of kernels before 6.3).
    fn create_with(
        name: &CStr,
        options: CreateOptions,
        exec_flags: impl FnOnce() -> io::Result<bool>,
    ) -> io::Result<MemFile> {
        check_name(name.to_bytes())?;
        let fd = create_fd(name, options, exec_flags).map_err(|e| {
            io::Error::new(
                e.kind(),
                match (e.raw_os_error(), options.huge_tlb) {
                    (Some(libc::ENODEV), Some(size)) => format!(
                        "memfd_create({name:?}) failed: this kernel has no {size:?} huge pages ({e})"
                    ),
                    _ => format!("memfd_create({name:?}, {options:?}) failed: {e}"),
                },
            )
        })?;
        if !options.allow_sealing {
            forbid_sealing(fd.as_fd())?;
        }
        Ok(MemFile {
            file: File::from(fd),
        })
    }

    /// Creates a memfd with the default options: sealing not allowed.
    ///
    /// # Errors
    ///
    /// As [`MemFile::create`].
    pub fn create_default(name: &str) -> io::Result<MemFile> {
        MemFile::create(name, CreateOptions::new())
    }

    /// Creates a memfd to which seals can be added; otherwise the default options.
    ///
    /// # Errors
    ///
    /// As [`MemFile::create`].
    pub fn create_sealable(name: &str) -> io::Result<MemFile> {
        MemFile::create(name, CreateOptions::new().allow_sealing(true))
    }

    /// A new descriptor of the same open file (`dup`, with close-on-exec).
    ///
    /// Both share the file offset, the contents and the seals.
    ///
    /// # Errors
    ///
    /// If `fcntl(F_DUPFD_CLOEXEC)` fails, usually because of too many open files.
    pub fn try_clone(&self) -> io::Result<MemFile> {
        Ok(MemFile {
            file: self.file.try_clone()?,
        })
    }

    /// Wraps a descriptor that must refer to a memfd.
    ///
    /// A `/dev/shm` file, a regular file, a pipe, a socket, a directory or an `O_PATH`
    /// descriptor is refused, and the descriptor handed back inside the error. (On Linux the
    /// test is the `/proc/self/fd/N` link, which the kernel spells `/memfd:NAME`, plus
    /// `fstat`, `fstatfs` and `F_GETFL`; `F_GET_SEALS` alone cannot tell, as it works on any
    /// tmpfs file.)
    ///
    /// ```
    /// use memfile::MemFile;
    /// use std::os::fd::OwnedFd;
    /// # fn main() -> std::io::Result<()> {
    /// let fd = OwnedFd::from(MemFile::create_default("buf")?);
    /// let file = MemFile::from_fd(fd)?;
    /// assert_eq!(file.metadata()?.len(), 0);
    ///
    /// let (socket, _peer) = std::os::unix::net::UnixStream::pair()?;
    /// let err = MemFile::from_fd(OwnedFd::from(socket)).unwrap_err();
    /// assert!(err.to_string().contains("it is a socket"));
    /// let _socket: OwnedFd = err.into_fd(); // given back
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`FromFdError`] with an [`io::ErrorKind::InvalidInput`] error that says what the
    /// descriptor is instead, and the descriptor itself.
    pub fn from_fd(fd: OwnedFd) -> Result<MemFile, FromFdError> {
        match sys::check_memfd(fd.as_fd()) {
            Ok(()) => Ok(MemFile {
                file: File::from(fd),
            }),
            Err(reason) => Err(FromFdError {
                error: io::Error::new(io::ErrorKind::InvalidInput, reason),
                fd,
            }),
        }
    }

    /// Wraps a [`File`] that must refer to a memfd; see [`MemFile::from_fd`].
    ///
    /// # Errors
    ///
    /// As [`MemFile::from_fd`].
    pub fn from_file(file: File) -> Result<MemFile, FromFdError> {
        MemFile::from_fd(OwnedFd::from(file))
    }

    /// The file, borrowed.
    pub fn as_file(&self) -> &File {
        &self.file
    }

    /// The file descriptor, borrowed.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The file descriptor, owned.
    pub fn into_fd(self) -> OwnedFd {
        OwnedFd::from(self.file)
    }

    /// The file, owned.
    pub fn into_file(self) -> File {
        self.file
    }

    /// The file's metadata (`fstat`): its length, mode and so on.
    ///
    /// # Errors
    ///
    /// If `fstat` fails.
    pub fn metadata(&self) -> io::Result<Metadata> {
        self.file.metadata()
    }

    /// Truncates or extends the file to `size` bytes (`ftruncate`); new bytes read as zeros.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::PermissionDenied`] if [`Seal::Shrink`] or [`Seal::Grow`] forbids the
    /// change; the message names the seals. Also any other error of `ftruncate` (for example
    /// a size that is not a multiple of the huge page size).
    pub fn set_len(&self, size: u64) -> io::Result<()> {
        self.file
            .set_len(size)
            .map_err(|e| self.resize_error(e, "set_len", size))
    }

    /// Allocates memory for bytes `offset..offset + len`, growing the file if the range ends
    /// past its end (`fallocate(2)` with mode 0).
    ///
    /// Unlike [`set_len`](MemFile::set_len) this reserves the pages now, so a later write
    /// cannot fail for lack of memory (and the call fails instead, with `ENOSPC`).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::PermissionDenied`] if [`Seal::Grow`] forbids growing, or
    /// [`Seal::Write`] forbids the allocation; any other error of `fallocate`.
    pub fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        sys::allocate(self.as_fd(), offset, len)
            .map_err(|e| self.resize_error(e, "allocate", offset.saturating_add(len)))
    }

    /// Frees the memory of bytes `offset..offset + len` without changing the file's length
    /// (`fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`); the range reads as zeros.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::PermissionDenied`] if [`Seal::Write`] (or
    /// [`Seal::FutureWrite`](Seal)) is in place; any other error of `fallocate`.
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    pub fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        sys::punch_hole(self.as_fd(), offset, len).map_err(|e| {
            let seals = self.seals_for_message();
            io::Error::new(
                e.kind(),
                format!(
                    "cannot punch a hole of {len} bytes at {offset} in fd {} (seals: {seals}): {e}",
                    self.as_raw_fd()
                ),
            )
        })
    }

    /// The file's seals (`fcntl(F_GET_SEALS)`), every bit the kernel reports.
    ///
    /// A file created without [`CreateOptions::allow_sealing`] reports at least
    /// [`Seal::Seal`]. On Linux 6.3+ a file created non-executable also reports
    /// [`Seal::Exec`]: test for the seals you need with [`Seals::contains`], never for an
    /// exact set.
    ///
    /// # Errors
    ///
    /// If `fcntl(F_GET_SEALS)` fails (the descriptor does not support sealing).
    pub fn get_seals(&self) -> io::Result<Seals> {
        sys::get_seals(self.as_fd())
    }

    /// Adds one seal (`fcntl(F_ADD_SEALS)`); see [`MemFile::add_seals`].
    ///
    /// # Errors
    ///
    /// As [`MemFile::add_seals`].
    pub fn add_seal(&self, seal: Seal) -> io::Result<()> {
        self.add_seals(seal)
    }

    /// Adds seals (`fcntl(F_ADD_SEALS)`): a [`Seal`] or a [`Seals`] set (`Seal::Write |
    /// Seal::Shrink`).
    ///
    /// Seals belong to the file, not to this descriptor: every descriptor and every process
    /// sees them, and none can remove them. Adding a seal that is already there succeeds.
    ///
    /// ```
    /// use memfile::{MemFile, Seal};
    /// # fn main() -> std::io::Result<()> {
    /// let file = MemFile::create_sealable("config")?;
    /// file.set_len(4096)?;
    /// file.add_seals(Seal::Shrink | Seal::Grow)?;
    /// assert!(file.set_len(8192).is_err());
    /// assert!(file.get_seals()?.contains(Seal::Shrink | Seal::Grow));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The message names the seals requested, the seals found and the reason:
    /// - [`io::ErrorKind::PermissionDenied`] (`EPERM`) if [`Seal::Seal`] is in place (also
    ///   when the file was created without [`CreateOptions::allow_sealing`]), or if this
    ///   descriptor is not open for writing.
    /// - [`io::ErrorKind::ResourceBusy`] (`EBUSY`) when adding [`Seal::Write`] while a
    ///   writable shared mapping of the file exists, in any process.
    /// - [`io::ErrorKind::InvalidInput`] (`EINVAL`) if the kernel does not know one of the
    ///   seals.
    ///
    /// # Kernels without `Exec`
    ///
    /// Linux before 6.3 does not know [`Seal::Exec`] and refuses the whole call with
    /// `EINVAL`. So that `add_seals(Seals::all())` works everywhere, a request holding
    /// `Exec` that fails with `EINVAL` on such a kernel (the one-time `MFD_NOEXEC_SEAL` probe
    /// that [`MemFile::create`] makes says it has no exec modes) is made again without
    /// `Exec`: there, no seal guards the execute bits, so there is nothing to add. On Linux
    /// 6.3+ an `EINVAL` is returned as is. Check [`MemFile::get_seals`] if you need to know
    /// whether `Exec` is in place.
    pub fn add_seals(&self, seals: impl Into<Seals>) -> io::Result<()> {
        let seals = seals.into();
        match sys::add_seals(self.as_fd(), seals) {
            Ok(()) => Ok(()),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Err(e)
                if e.raw_os_error() == Some(libc::EINVAL)
                    && seals.contains(Seal::Exec)
                    && matches!(exec_flags_supported(), Ok(false)) =>
            {
                let without_exec = seals - Seal::Exec;
                sys::add_seals(self.as_fd(), without_exec)
                    .map_err(|e| self.seal_error(e, without_exec))
            }
            Err(e) => Err(self.seal_error(e, seals)),
        }
    }

    /// The current seals as text for an error message, or why they could not be read.
    fn seals_for_message(&self) -> String {
        match self.get_seals() {
            Ok(seals) => seals.to_string(),
            Err(e) => format!("unknown: {e}"),
        }
    }

    /// `e` with the fd, its length, its seals, and which seal refused `new_len`.
    fn resize_error(&self, e: io::Error, op: &str, new_len: u64) -> io::Error {
        let old = sys::file_len(self.as_fd()).ok();
        let seals = self.get_seals().ok();
        let refused_by = match (e.raw_os_error(), old, seals) {
            (Some(libc::EPERM), Some(old), Some(seals)) => {
                if new_len > old && seals.contains(Seal::Grow) {
                    "the Grow seal forbids growing it: "
                } else if new_len < old && seals.contains(Seal::Shrink) {
                    "the Shrink seal forbids shrinking it: "
                } else {
                    ""
                }
            }
            _ => "",
        };
        let old = old.map_or_else(|| "?".to_owned(), |len| len.to_string());
        let seals = seals.map_or_else(|| "?".to_owned(), |seals| seals.to_string());
        io::Error::new(
            e.kind(),
            format!(
                "{op} to {new_len} bytes on fd {} (length {old}, seals: {seals}): {refused_by}{e}",
                self.as_raw_fd()
            ),
        )
    }

    fn seal_error(&self, e: io::Error, requested: Seals) -> io::Error {
        let found = self.get_seals();
        let reason = match (e.raw_os_error(), &found) {
            (Some(libc::EPERM), Ok(found)) if found.contains(Seal::Seal) => {
                "the Seal seal forbids adding seals (was the file created with allow_sealing(true)?)"
            }
            (Some(libc::EPERM), _) => "the descriptor is not open for writing",
            (Some(libc::EBUSY), _) => {
                "a writable shared mapping of the file exists (Write needs every one unmapped)"
            }
            (Some(libc::EINVAL), _) => {
                "the file does not support sealing, or the kernel does not know one of the seals"
            }
            _ => "",
        };
        let found = match found {
            Ok(found) => found.to_string(),
            Err(e) => format!("unknown: {e}"),
        };
        let sep = if reason.is_empty() { "" } else { ": " };
        io::Error::new(
            e.kind(),
            format!(
                "cannot add seals {requested} to fd {} (seals found: {found}){sep}{reason} ({e})",
                self.as_raw_fd()
            ),
        )
    }
}

/// Refuses names the kernel would reject or truncate, with a message saying why.
fn check_name(name: &[u8]) -> io::Result<()> {
    if name.len() > MAX_NAME_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "memfd name is {} bytes long, the kernel allows at most {MAX_NAME_LEN}",
                name.len()
            ),
        ));
    }
    if let Some(pos) = name.iter().position(|&b| b == 0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "memfd name {:?} holds a NUL byte at offset {pos}",
                String::from_utf8_lossy(name)
            ),
        ));
    }
    Ok(())
}

/// Whether this kernel knows `MFD_NOEXEC_SEAL`/`MFD_EXEC` and `F_SEAL_EXEC` (Linux 6.3+):
/// [`EXEC_UNKNOWN`] until [`exec_flags_supported`] has probed, then the answer.
#[cfg(any(target_os = "linux", target_os = "android"))]
static EXEC_FLAGS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(EXEC_UNKNOWN);
#[cfg(any(target_os = "linux", target_os = "android"))]
const EXEC_UNKNOWN: u8 = 0;
#[cfg(any(target_os = "linux", target_os = "android"))]
const EXEC_KNOWN: u8 = 1;
#[cfg(any(target_os = "linux", target_os = "android"))]
const EXEC_UNSUPPORTED: u8 = 2;

/// Whether this kernel knows the exec flags (Linux 6.3+), probed once per process.
///
/// The probe is a `memfd_create("memfile-probe", MFD_CLOEXEC | MFD_NOEXEC_SEAL)` of its own,
/// closed at once: only its `EINVAL` means "unknown flag". (Judging from the caller's own
/// `memfd_create` would also take an `EINVAL` caused by its other flags, say a bad hugetlb
/// combination, as proof, and switch the exec flags off for the rest of the process.)
/// Any other error of the probe is returned and nothing is cached.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn exec_flags_supported() -> io::Result<bool> {
    use std::sync::atomic::Ordering::Relaxed;
    match EXEC_FLAGS.load(Relaxed) {
        EXEC_KNOWN => return Ok(true),
        EXEC_UNSUPPORTED => return Ok(false),
        _ => {}
    }
    // Two threads may both probe; they store the same answer.
    let supported =
        match sys::memfd_create(c"memfile-probe", libc::MFD_CLOEXEC | libc::MFD_NOEXEC_SEAL) {
            Ok(_probe) => true,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => false,
            Err(e) => return Err(e),
        };
    EXEC_FLAGS.store(
        if supported {
            EXEC_KNOWN
        } else {
            EXEC_UNSUPPORTED
        },
        Relaxed,
    );
    Ok(supported)
}

/// No exec flags outside Linux.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn exec_flags_supported() -> io::Result<bool> {
    Ok(false)
}

/// `memfd_create` with the flags `options` asks for, and the exec flag it asks for when
/// `exec_flags` says the kernel has them. Files on a kernel without them are executable,
/// as `MFD_EXEC` asks, and there is no exec seal to add.
fn create_fd(
    name: &CStr,
    options: CreateOptions,
    exec_flags: impl FnOnce() -> io::Result<bool>,
) -> io::Result<OwnedFd> {
    let mut flags = libc::MFD_CLOEXEC;
    if options.allow_sealing {
        flags |= libc::MFD_ALLOW_SEALING;
    }
    if let Some(size) = options.huge_tlb {
        flags |= libc::MFD_HUGETLB | size.flag_bits();
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if exec_flags()? {
        flags |= if options.exec {
            libc::MFD_EXEC
        } else {
            libc::MFD_NOEXEC_SEAL
        };
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = exec_flags;
    match sys::memfd_create(name, flags) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Err(e) if e.raw_os_error() == Some(libc::EACCES) && options.exec => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("MFD_EXEC refused: the vm.memfd_noexec sysctl forbids executable memfds ({e})"),
        )),
        result => result,
    }
}

/// Makes sure no seal can ever be added to a new file created without `MFD_ALLOW_SEALING`.
///
/// `MFD_NOEXEC_SEAL` makes a file sealable even without `MFD_ALLOW_SEALING` (Linux 6.3+), which
/// would break the promise of `allow_sealing(false)`; `F_SEAL_SEAL` restores it.
fn forbid_sealing(fd: BorrowedFd<'_>) -> io::Result<()> {
    let seals = sys::get_seals(fd)?;
    if !seals.contains(Seal::Seal) {
        sys::add_seals(fd, Seal::Seal.into()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot add the Seal seal to new fd {} (seals: {seals}): {e}",
                    fd.as_raw_fd()
                ),
            )
        })?;
    }
    Ok(())
}

/// The error of [`MemFile::from_fd`]: why the descriptor is not a memfd, and the descriptor.
///
/// It converts into an [`io::Error`] (dropping the descriptor), so `?` works in a function
/// that returns `io::Result`.
///
/// ```
/// use memfile::MemFile;
/// use std::fs::File;
/// use std::io::{ErrorKind, Write};
///
/// let (read_end, write_end) = nix::unistd::pipe()?;
/// let err = MemFile::from_fd(read_end).unwrap_err();
/// assert_eq!(err.error().kind(), ErrorKind::InvalidInput);
/// assert!(err.to_string().contains("it is a pipe"), "{err}");
///
/// // The pipe is not lost: take it back and use it.
/// let read_end = File::from(err.into_fd());
/// File::from(write_end).write_all(b"still open")?; // and closes the write end
/// assert_eq!(std::io::read_to_string(read_end)?, "still open");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FromFdError {
    error: io::Error,
    fd: OwnedFd,
}

impl FromFdError {
    /// The reason, as an I/O error (kind [`io::ErrorKind::InvalidInput`] for a descriptor
    /// that is not a memfd).
    pub fn error(&self) -> &io::Error {
        &self.error
    }

    /// The descriptor that was passed in, borrowed.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The reason and the descriptor.
    pub fn into_parts(self) -> (io::Error, OwnedFd) {
        (self.error, self.fd)
    }

    /// The reason; the descriptor is closed.
    pub fn into_error(self) -> io::Error {
        self.error
    }

    /// The descriptor that was passed in.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl fmt::Display for FromFdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for FromFdError {}

impl From<FromFdError> for io::Error {
    fn from(e: FromFdError) -> io::Error {
        e.error
    }
}

impl Read for MemFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.file.read_vectored(bufs)
    }
    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.file.read_to_end(buf)
    }
    fn read_to_string(&mut self, buf: &mut String) -> io::Result<usize> {
        self.file.read_to_string(buf)
    }
}

impl Read for &MemFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&self.file).read_vectored(bufs)
    }
    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        (&self.file).read_to_end(buf)
    }
    fn read_to_string(&mut self, buf: &mut String) -> io::Result<usize> {
        (&self.file).read_to_string(buf)
    }
}

impl Write for MemFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.file.write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Write for &MemFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&self.file).write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&self.file).write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&self.file).flush()
    }
}

impl Seek for MemFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

impl Seek for &MemFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        (&self.file).seek(pos)
    }
}

impl FileExt for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.file.write_at(buf, offset)
    }
}

impl AsFd for MemFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for MemFile {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl IntoRawFd for MemFile {
    fn into_raw_fd(self) -> RawFd {
        self.file.into_raw_fd()
    }
}

impl FromRawFd for MemFile {
    /// Wraps a raw descriptor without checking that it is a memfd (use
    /// [`MemFile::from_fd`] to check).
    ///
    /// # Safety
    ///
    /// `fd` must be an open descriptor that nothing else owns: the `MemFile` closes it.
    unsafe fn from_raw_fd(fd: RawFd) -> MemFile {
        // SAFETY: the caller hands over ownership of an open descriptor, as this trait's
        // contract requires; `File` needs nothing more.
        let file = unsafe { File::from_raw_fd(fd) };
        MemFile { file }
    }
}

impl From<MemFile> for OwnedFd {
    fn from(file: MemFile) -> OwnedFd {
        file.into_fd()
    }
}

impl From<MemFile> for File {
    fn from(file: MemFile) -> File {
        file.file
    }
}

impl From<MemFile> for Stdio {
    /// The memfd as a child's stdin, stdout or stderr; the child's copy loses close-on-exec,
    /// as it must.
    ///
    /// The child's descriptor is a `dup` of this one: it shares the file offset with every
    /// [`try_clone`](MemFile::try_clone) of the file. A child reading it as stdin starts where
    /// the offset is (after `write`s: at the end, so rewind first), and its reads move the
    /// offset of the clones the parent kept. A `Frozen`'s `to_stdio` opens a descriptor with
    /// its own offset instead.
    fn from(file: MemFile) -> Stdio {
        Stdio::from(file.file)
    }
}

impl TryFrom<OwnedFd> for MemFile {
    type Error = FromFdError;

    /// As [`MemFile::from_fd`].
    fn try_from(fd: OwnedFd) -> Result<MemFile, FromFdError> {
        MemFile::from_fd(fd)
    }
}

impl TryFrom<File> for MemFile {
    type Error = FromFdError;

    /// As [`MemFile::from_file`].
    fn try_from(file: File) -> Result<MemFile, FromFdError> {
        MemFile::from_file(file)
    }
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;

    /// The path of kernels before 6.3 (no exec flags), taken on this kernel by telling
    /// `create_with` that the probe said no.
    #[test]
    fn without_exec_flags_allow_sealing_false_still_forbids_seals() {
        let no_exec_flags = || Ok(false);
        let file =
            MemFile::create_with(c"old-kernel", CreateOptions::new(), no_exec_flags).unwrap();
        let seals = file.get_seals().unwrap();
        assert!(seals.contains(Seal::Seal), "seals: {seals}");
        for &seal in Seal::ALL {
            let err = file.add_seal(seal).expect_err("add to an unsealable file");
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{seal}: {err}");
        }

        let sealable = CreateOptions::new().allow_sealing(true);
        let file = MemFile::create_with(c"old-kernel", sealable, no_exec_flags).unwrap();
        let seals = file.get_seals().unwrap();
        assert!(!seals.contains(Seal::Seal), "seals: {seals}");
        file.add_seals(Seal::Write | Seal::Seal).unwrap();
    }

    /// Only the dedicated probe decides about the exec flags: failing `memfd_create`s (here
    /// with huge page sizes this machine does not have: `ENODEV`) leave the answer alone.
    #[test]
    fn exec_flag_probe_is_not_swayed_by_other_failures() {
        let truth = match sys::memfd_create(c"t", libc::MFD_CLOEXEC | libc::MFD_NOEXEC_SEAL) {
            Ok(_) => true,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
                false
            }
        };
        for size in crate::HugeTlb::ALL {
            let _ = CreateOptions::new().huge_tlb(size).create("probe-test");
        }
        let _ = MemFile::create_default("after-failures");
        assert_eq!(exec_flags_supported().unwrap(), truth);
    }
}
