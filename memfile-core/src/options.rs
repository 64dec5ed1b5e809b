//! [`CreateOptions`] and [`HugeTlb`]: how [`MemFile::create`](crate::MemFile::create) makes
//! a memfd.

use std::ffi::CStr;
use std::io;

use crate::MemFile;

/// Options for creating a [`MemFile`], a builder for the flags of
/// [`memfd_create(2)`](https://man7.org/linux/man-pages/man2/memfd_create.2.html).
///
/// The defaults: sealing not allowed, normal pages, not executable. The close-on-exec flag is
/// always set, so a memfd never leaks into a program started with `exec` by accident; pass it
/// to a child explicitly (for example through [`std::process::Stdio`], or over a socket).
///
/// ```
/// use memfile::{CreateOptions, Seal};
/// # fn main() -> std::io::Result<()> {
/// let file = CreateOptions::new().allow_sealing(true).create("frame")?;
/// file.add_seal(Seal::Shrink)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CreateOptions {
    pub(crate) allow_sealing: bool,
    pub(crate) huge_tlb: Option<HugeTlb>,
    pub(crate) exec: bool,
}

impl CreateOptions {
    /// The default options: sealing not allowed, no huge pages, not executable.
    pub const fn new() -> Self {
        CreateOptions {
            allow_sealing: false,
            huge_tlb: None,
            exec: false,
        }
    }

    /// Whether seals can be added to the file (`MFD_ALLOW_SEALING`).
    ///
    /// With `false` (the default) no seal can ever be added to the file, through any of its
    /// descriptors: it is created with `F_SEAL_SEAL` already in place. This holds on every
    /// kernel and in every exec mode (on Linux 6.3+ `MFD_NOEXEC_SEAL` would make the file
    /// sealable on its own; the crate then adds `F_SEAL_SEAL` right after creating it).
    pub const fn allow_sealing(mut self, value: bool) -> Self {
        self.allow_sealing = value;
        self
    }

    /// Create the file on hugetlbfs, backed by huge pages of the given size (`MFD_HUGETLB`).
    ///
    /// Huge pages must be reserved by the administrator (`vm.nr_hugepages`, or
    /// `/sys/kernel/mm/hugepages/`); without free ones, growing or touching the file fails.
    /// The size of such a file must be a multiple of the huge page size, and `write()` is not
    /// supported on it: fill it through a mapping. `None` (the default) uses normal pages.
    /// See the kernel's
    /// [hugetlbpage documentation](https://www.kernel.org/doc/html/latest/admin-guide/mm/hugetlbpage.html).
    pub fn huge_tlb(mut self, value: impl Into<Option<HugeTlb>>) -> Self {
        self.huge_tlb = value.into();
        self
    }

    /// Whether the file may be executed (Linux 6.3+ exec modes).
    ///
    /// With `false` (the default) the file is created with `MFD_NOEXEC_SEAL` where the kernel
    /// knows it: its mode is `0666` and `F_SEAL_EXEC` keeps it that way, so the memory can
    /// never be run as a program (W^X). Older kernels do not know the flag; the crate then
    /// retries without it and remembers the answer for the rest of the process.
    ///
    /// With `true` the file is created with `MFD_EXEC` (mode `0777`, no `Exec` seal), for
    /// programs that really run code from a memfd (`fexecve`). If the `vm.memfd_noexec`
    /// sysctl is `2`, the kernel refuses this and [`create`](CreateOptions::create) fails
    /// with [`io::ErrorKind::PermissionDenied`].
    ///
    /// On FreeBSD this option has no effect.
    pub const fn exec(mut self, value: bool) -> Self {
        self.exec = value;
        self
    }

    /// Whether sealing is allowed (see [`allow_sealing`](CreateOptions::allow_sealing)).
    pub const fn is_sealing_allowed(&self) -> bool {
        self.allow_sealing
    }

    /// The huge page size, if any (see [`huge_tlb`](CreateOptions::huge_tlb)).
    pub const fn huge_tlb_size(&self) -> Option<HugeTlb> {
        self.huge_tlb
    }

    /// Whether the file is to be executable (see [`exec`](CreateOptions::exec)).
    pub const fn is_exec(&self) -> bool {
        self.exec
    }

    /// Creates a [`MemFile`] with these options: shorthand for [`MemFile::create`].
    ///
    /// # Errors
    ///
    /// As [`MemFile::create`]: an invalid name, or the kernel refused.
    pub fn create(&self, name: &str) -> io::Result<MemFile> {
        MemFile::create(name, *self)
    }

    /// Creates a [`MemFile`] with these options and a name that is already a `CStr`: shorthand
    /// for [`MemFile::create_cstr`].
    ///
    /// # Errors
    ///
    /// As [`MemFile::create_cstr`].
    pub fn create_cstr(&self, name: &CStr) -> io::Result<MemFile> {
        MemFile::create_cstr(name, *self)
    }
}

/// A huge page size for [`CreateOptions::huge_tlb`]: the `MFD_HUGE_*` flags.
///
/// Which sizes exist depends on the CPU (x86-64 has 2 MiB and 1 GiB) and on the kernel
/// configuration; `/sys/kernel/mm/hugepages/` lists them. The discriminant is the flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
#[non_exhaustive]
pub enum HugeTlb {
    /// 64 KiB pages (`MFD_HUGE_64KB`).
    Huge64KB = libc::MFD_HUGE_64KB,
    /// 512 KiB pages (`MFD_HUGE_512KB`).
    Huge512KB = libc::MFD_HUGE_512KB,
    /// 1 MiB pages (`MFD_HUGE_1MB`).
    Huge1MB = libc::MFD_HUGE_1MB,
    /// 2 MiB pages (`MFD_HUGE_2MB`), the usual size on x86-64.
    Huge2MB = libc::MFD_HUGE_2MB,
    /// 8 MiB pages (`MFD_HUGE_8MB`).
    Huge8MB = libc::MFD_HUGE_8MB,
    /// 16 MiB pages (`MFD_HUGE_16MB`).
    Huge16MB = libc::MFD_HUGE_16MB,
    /// 32 MiB pages (`MFD_HUGE_32MB`).
    Huge32MB = libc::MFD_HUGE_32MB,
    /// 256 MiB pages (`MFD_HUGE_256MB`).
    Huge256MB = libc::MFD_HUGE_256MB,
    /// 512 MiB pages (`MFD_HUGE_512MB`).
    Huge512MB = libc::MFD_HUGE_512MB,
    /// 1 GiB pages (`MFD_HUGE_1GB`).
    Huge1GB = libc::MFD_HUGE_1GB,
    /// 2 GiB pages (`MFD_HUGE_2GB`).
    Huge2GB = libc::MFD_HUGE_2GB,
    /// 16 GiB pages (`MFD_HUGE_16GB`).
    Huge16GB = libc::MFD_HUGE_16GB,
}

/// `MFD_HUGE_SHIFT`: the flag holds log2 of the page size at this bit.
const MFD_HUGE_SHIFT: u32 = 26;

impl HugeTlb {
    /// Every size the kernel can name, smallest first.
    pub const ALL: [HugeTlb; 12] = [
        HugeTlb::Huge64KB,
        HugeTlb::Huge512KB,
        HugeTlb::Huge1MB,
        HugeTlb::Huge2MB,
        HugeTlb::Huge8MB,
        HugeTlb::Huge16MB,
        HugeTlb::Huge32MB,
        HugeTlb::Huge256MB,
        HugeTlb::Huge512MB,
        HugeTlb::Huge1GB,
        HugeTlb::Huge2GB,
        HugeTlb::Huge16GB,
    ];

    /// The page size in bytes.
    ///
    /// ```
    /// use memfile::HugeTlb;
    /// assert_eq!(HugeTlb::Huge2MB.size_bytes(), 2 * 1024 * 1024);
    /// assert_eq!(HugeTlb::Huge16GB.size_bytes(), 16 << 30);
    /// ```
    pub const fn size_bytes(self) -> u64 {
        1 << (self as u32 >> MFD_HUGE_SHIFT)
    }

    /// The page size in bytes if one of the sizes is exactly `bytes`.
    ///
    /// ```
    /// use memfile::HugeTlb;
    /// assert_eq!(HugeTlb::from_size_bytes(1 << 30), Some(HugeTlb::Huge1GB));
    /// assert_eq!(HugeTlb::from_size_bytes(4096), None);
    /// ```
    pub fn from_size_bytes(bytes: u64) -> Option<HugeTlb> {
        HugeTlb::ALL.into_iter().find(|h| h.size_bytes() == bytes)
    }

    /// The `MFD_HUGE_*` flag bits (without `MFD_HUGETLB`).
    pub const fn flag_bits(self) -> u32 {
        self as u32
    }
}
