//! The mappings of a memfd, and what they rely on about the file's pages.
//!
//! Three things live here, used by `frozen`, `region` and `live`:
//!
//! - [`WritableMap`]: the writable `MAP_SHARED` mapping of a memfd this crate created
//!   ([`Frozen::build`](crate::Frozen::build), [`WritableRegion`](crate::WritableRegion),
//!   [`LiveWriter`](crate::LiveWriter)). It is never inherited by a forked child
//!   (`MADV_DONTFORK`), so that `F_SEAL_WRITE` cannot fail with `EBUSY` because of a child;
//!   the price is that in a child the Rust value outlives its mapping, so every access
//!   first compares the process's fork generation (see [`fork_generation`]) and refuses
//!   in a child.
//! - [`ReadMap`]: the `PROT_READ` + `MAP_PRIVATE` (+ `MAP_NORESERVE`) mapping of a sealed
//!   file that a [`Frozen`](crate::Frozen) reads; for a hugetlb file its length is rounded
//!   up to whole huge pages, as the kernel maps (and must unmap) them.
//! - Holes: [`first_hole`] (`lseek(SEEK_HOLE)`), the hugetlb page size of a file, and
//!   [`WritableMap::populate_holes`], which makes the crate's own buffers fully allocated.

use std::io;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(any(target_os = "linux", target_os = "android"))]
use memmap2::Advice;
use memmap2::{Mmap, MmapMut, MmapOptions};

use crate::MemFile;

// ---------------------------------------------------------------------------------------
// Fork generation.

/// How many times this process image has been the child of a `fork()` (0 in the original
/// process, 1 in its child, 2 in a grandchild, ...): bumped by a `pthread_atfork` child
/// handler. Only the forking thread exists in the child, and the handler runs there before
/// `fork()` returns, so `Relaxed` is enough: the load that follows is in the same thread.
static FORKS: AtomicU64 = AtomicU64::new(0);

/// The `pthread_atfork` child handler: one atomic add, which is async-signal-safe.
extern "C" fn after_fork_in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// The current fork generation, registering the `pthread_atfork` handler on first use.
///
/// Compared with the generation a [`WritableMap`] was made in, it says whether this
/// process is a child forked since (one `Relaxed` load: a plain load on x86-64 and arm64).
/// Only `fork()` through libc runs the handler: a child made with a raw `clone`/`vfork`
/// syscall is not seen, nor one that `posix_spawn`/`Command` execs at once (no Rust code
/// runs there anyway).
///
/// # Errors
///
/// `pthread_atfork` failing (`ENOMEM`); the error is kept and returned on every call.
pub(crate) fn fork_generation() -> io::Result<u64> {
    static REGISTERED: OnceLock<i32> = OnceLock::new();
    let rc = *REGISTERED.get_or_init(|| {
        // SAFETY: `after_fork_in_child` is an `extern "C" fn()` that lives for the whole
        // program and does only an atomic add; no prepare or parent handler is given.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) }
    });
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(FORKS.load(Ordering::Relaxed))
}

// ---------------------------------------------------------------------------------------
// The writable mapping.

/// A writable `MAP_SHARED` mapping of `len > 0` bytes of a memfd this crate created and has
/// not shared, not inherited by a fork (`MADV_DONTFORK` on Linux,
/// `minherit(INHERIT_NONE)` on FreeBSD), that refuses to be touched in a forked child.
///
/// A child forked while the mapping exists (by any thread) would otherwise keep a writable
/// mapping of its own, and `F_SEAL_WRITE` would fail with EBUSY until it exits or execs.
/// In the child, the address range is empty (SIGSEGV) or, worse, reused by a later
/// mapping; so [`WritableMap::check`] runs before every access, and in a child the value
/// is leaked on drop instead of unmapped (the `munmap` would hit whatever lives there now).
pub(crate) struct WritableMap {
    map: ManuallyDrop<MmapMut>,
    /// The fork generation the mapping was made in.
    generation: u64,
    /// Who owns it, for the message in a child: `"WritableRegion"`, ...
    owner: &'static str,
    /// The memfd's descriptor, for the same message.
    fd: RawFd,
}

impl WritableMap {
    /// Maps `len > 0` bytes of `file` writable and shared, for `owner` (a type name, for
    /// the message in a forked child).
    pub(crate) fn new(file: &MemFile, len: usize, owner: &'static str) -> io::Result<WritableMap> {
        // Registers the fork handler before the mapping exists, so no fork can be missed.
        let generation = fork_generation()?;
        // Callers only hand the mapping out as `&mut [u8]` tied to their own borrow (after
        // `check`), and share the fd only after sealing Shrink and (Future)Write.
        // SAFETY: a memfd this crate just created and has not shared: nobody else can
        // truncate or write it.
        let map = unsafe { MmapOptions::new().len(len).map_mut(&file.as_fd())? };
        #[cfg(any(target_os = "linux", target_os = "android"))]
        map.advise(Advice::DontFork)?;
        #[cfg(target_os = "freebsd")]
        {
            // memmap2 has no `minherit` (FreeBSD's `madvise` has no DONTFORK), so call libc.
            // SAFETY: `map` is a live mapping of exactly `map.len()` bytes starting at a
            // page boundary, owned by `map`; `minherit` changes only what a future fork
            // inherits.
            let rc = unsafe {
                libc::minherit(
                    map.as_ptr().cast_mut().cast(),
                    map.len(),
                    libc::INHERIT_NONE,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if len >= HUGE_PAGE_MIN {
            // Lets shmem THP (`shmem_enabled` = `advise`) back the file with huge pages: one
            // fault and one page clear per 2 MiB instead of 512, 10× the fill rate. At
            // `never` the kernel accepts it and does nothing; a kernel without THP says
            // EINVAL, which only means no huge pages, so the result is ignored.
            let _ = map.advise(Advice::HugePage);
        }
        Ok(WritableMap {
            map: ManuallyDrop::new(map),
            generation,
            owner,
            fd: file.as_fd().as_raw_fd(),
        })
    }

    /// Whether the mapping exists in this process: `Err` in a child forked since it was
    /// made, naming the owner and its fd.
    pub(crate) fn check(&self) -> io::Result<()> {
        if FORKS.load(Ordering::Relaxed) != self.generation {
            return Err(io::Error::other(format!(
                "{} (fd {}) used in a child forked after it was created: its writable \
                 mapping is MADV_DONTFORK and does not exist in this process",
                self.owner, self.fd
            )));
        }
        Ok(())
    }

    /// The length in bytes (no access to the mapping: fine in a forked child).
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The bytes.
    ///
    /// # Panics
    ///
    /// In a child forked since the mapping was made ([`WritableMap::check`]).
    #[inline]
    #[track_caller]
    pub(crate) fn bytes(&self) -> &[u8] {
        self.assert_here();
        &self.map
    }

    /// The bytes, writable.
    ///
    /// # Panics
    ///
    /// In a child forked since the mapping was made ([`WritableMap::check`]).
    #[inline]
    #[track_caller]
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        self.assert_here();
        &mut self.map
    }

    /// Panics with [`WritableMap::check`]'s error in a forked child: one relaxed load and a
    /// compare on the normal path, the message built out of line.
    #[inline]
    #[track_caller]
    fn assert_here(&self) {
        if FORKS.load(Ordering::Relaxed) != self.generation {
            self.forked();
        }
    }

    #[cold]
    #[inline(never)]
    #[track_caller]
    fn forked(&self) -> ! {
        match self.check() {
            Err(e) => panic!("{e}"),
            Ok(()) => unreachable!("called in a forked child only"),
        }
    }

    /// Makes every page of `fd` (the mapped file) below its end count as allocated for
    /// [`first_hole`], by reading the pages that do not yet (`MADV_POPULATE_READ`, or one
    /// read per page where the kernel lacks it): a read fault through a shared mapping
    /// allocates (or, after `fallocate`, clears) the page and marks it up to date.
    ///
    /// Pages the fill wrote cost nothing here; one `lseek` finds that there is no hole.
    pub(crate) fn populate_holes(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        populate_holes(fd, self.bytes())
    }
}

impl Drop for WritableMap {
    fn drop(&mut self) {
        if self.check().is_err() {
            // Not ours to unmap: the range is empty here or belongs to a later mapping.
            return;
        }
        // SAFETY: dropped once, here, in the process that made the mapping.
        unsafe { ManuallyDrop::drop(&mut self.map) };
    }
}

/// From this length up, writable mappings ask for transparent huge pages: the size of one
/// x86-64/arm64 (4 KiB base page) PMD huge page. Smaller files could not use one anyway.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const HUGE_PAGE_MIN: usize = 2 << 20;

// ---------------------------------------------------------------------------------------
// The read-only mapping.

/// A `PROT_READ`, `MAP_PRIVATE`, `MAP_NORESERVE` mapping of a sealed file, of which the
/// first `len` bytes are the file's contents.
///
/// For a hugetlb file whose length is not a multiple of the huge page size the mapping is
/// longer than `len`: the kernel maps whole huge pages and refuses to unmap part of one
/// (`munmap` of the unrounded length fails with `EINVAL`, and memmap2 would leak the
/// mapping and its huge page on drop).
pub(crate) struct ReadMap {
    map: Mmap,
    len: usize,
}

impl Deref for ReadMap {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map[..self.len]
    }
}

/// Maps `map_len >= len` bytes of `fd` read-only and private; `None` for 0 bytes.
///
/// # Safety
///
/// The file's first `len` bytes must never change and the file never get shorter than
/// `len` while the mapping lives: seals `Write` and `Shrink` were seen on it, then a
/// length of at least `len`. `map_len` is `len`, or for a hugetlb file `len` rounded up
/// to its huge page size.
pub(crate) unsafe fn map_read_only(
    fd: BorrowedFd<'_>,
    len: usize,
    map_len: usize,
) -> io::Result<Option<ReadMap>> {
    if len == 0 {
        return Ok(None);
    }
    debug_assert!(map_len >= len);
    // MAP_NORESERVE: a read-only private mapping never copies a page, so it needs no
    // reservation (it matters for hugetlb files, where a reservation would take huge pages).
    //
    // SAFETY: memmap2 calls mapping a file unsafe because the file may be changed or
    // truncated underneath; the caller guarantees neither can happen to these bytes.
    let map = unsafe {
        MmapOptions::new()
            .len(map_len)
            .no_reserve_swap()
            .map_copy_read_only(&fd)?
    };
    Ok(Some(ReadMap { map, len }))
}

// ---------------------------------------------------------------------------------------
// Holes.

/// The offset of the first hole of `fd` below `len` (`lseek(SEEK_HOLE)`), or `None` when
/// bytes `0..len` are all allocated. Moves the file offset (shared with every `dup` of the
/// descriptor) to that hole or to `len`.
///
/// On tmpfs (memfds) a page counts as data once it holds data: written, faulted in through
/// a mapping, or swapped out. A page that `fallocate` reserved but nothing has touched yet
/// counts as a hole (Linux 6.18 here; a test pins it), and so does one never touched.
/// Not for hugetlbfs, which reports the whole file as data: see [`hugetlb_page_size`].
pub(crate) fn first_hole(fd: BorrowedFd<'_>, len: u64) -> io::Result<Option<u64>> {
    if len == 0 {
        return Ok(None);
    }
    let hole = seek(fd, 0, nix::unistd::Whence::SeekHole)?
        .expect("a hole at or after 0 exists in a file of length > 0: its end");
    Ok((hole < len).then_some(hole))
}

/// `lseek(fd, offset, whence)`, `None` for `ENXIO` (no data, or no hole, after `offset`).
fn seek(fd: BorrowedFd<'_>, offset: u64, whence: nix::unistd::Whence) -> io::Result<Option<u64>> {
    let offset = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset past off_t"))?;
    match nix::unistd::lseek(fd, offset, whence) {
        Ok(at) => Ok(Some(at as u64)),
        Err(nix::errno::Errno::ENXIO) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads every page of each hole of `fd` below `map.len()` through `map` (a mapping of
/// `fd` from offset 0), so that the holes become allocated pages of zeros.
pub(crate) fn populate_holes(fd: BorrowedFd<'_>, map: &[u8]) -> io::Result<()> {
    let len = map.len() as u64;
    let mut at = 0;
    while let Some(hole) = seek(fd, at, nix::unistd::Whence::SeekHole)? {
        if hole >= len {
            break;
        }
        let end = seek(fd, hole, nix::unistd::Whence::SeekData)?.map_or(len, |d| d.min(len));
        read_pages(&map[hole as usize..end as usize])?;
        at = end;
        if at >= len {
            break;
        }
    }
    Ok(())
}

/// Faults in every page of `range` for reading.
///
/// `MADV_POPULATE_READ` (Linux 5.14+) reports a failure (`ENOMEM`, ...) as an error; where
/// the kernel lacks it (`EINVAL`), one read per page does the same, but a failure there
/// is a fault (the OOM killer, or `SIGBUS`), as for any first touch of memory.
fn read_pages(range: &[u8]) -> io::Result<()> {
    // The range's start is a hole offset, so page-aligned.
    #[cfg(target_os = "linux")]
    {
        use std::sync::atomic::AtomicBool;
        static NO_POPULATE: AtomicBool = AtomicBool::new(false);
        if !NO_POPULATE.load(Ordering::Relaxed) {
            // SAFETY: `range` is part of a live mapping this process owns; populating
            // only faults its pages in for reading, changing no byte.
            let rc = unsafe {
                libc::madvise(
                    range.as_ptr().cast_mut().cast(),
                    range.len(),
                    libc::MADV_POPULATE_READ,
                )
            };
            if rc == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e);
            }
            NO_POPULATE.store(true, Ordering::Relaxed);
        }
    }
    let page = page_size();
    for offset in (0..range.len()).step_by(page) {
        // A volatile read, so that the compiler cannot drop the access that faults in the
        // page. SAFETY: `offset < range.len()`, inside the borrowed slice.
        unsafe { std::ptr::read_volatile(range.as_ptr().add(offset)) };
    }
    Ok(())
}

/// The base page size.
pub(crate) fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map_or(4096, |p| p as usize)
    })
}

/// The huge page size of `fd` if it is a hugetlbfs file, `None` for any other file.
///
/// `st_blksize` (from the caller's `fstat`) is the huge page size on hugetlbfs and the
/// base page size on tmpfs, so only a file with a larger block size costs an `fstatfs`.
pub(crate) fn hugetlb_page_size(fd: BorrowedFd<'_>, st_blksize: u64) -> io::Result<Option<u64>> {
    if st_blksize <= page_size() as u64 {
        return Ok(None);
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use nix::sys::statfs::{HUGETLBFS_MAGIC, fstatfs};
        let fs = fstatfs(fd)?;
        if fs.filesystem_type() == HUGETLBFS_MAGIC {
            return Ok(Some(st_blksize));
        }
    }
    let _ = fd;
    Ok(None)
}

/// `len` rounded up to a multiple of `huge_page` (a power of two), as `usize`.
pub(crate) fn round_up_to(len: u64, huge_page: u64) -> Option<u64> {
    len.checked_add(huge_page - 1).map(|l| l & !(huge_page - 1))
}
