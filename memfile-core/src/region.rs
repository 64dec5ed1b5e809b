//! [`WritableRegion`]: a private writable memfd mapping, filled over several calls, then
//! frozen in place.

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::AsRawFd;

use crate::frozen::freeze_unmapped;
use crate::map::WritableMap;
use crate::{Frozen, MemFile};

/// A new memfd of fixed length, mapped writable, that only this value can write; turns
/// into a [`Frozen`] with [`WritableRegion::freeze`] without copying.
///
/// Use it when the data is produced over several calls (a decoder writing a frame row by
/// row, a loader reading a file in chunks); when one closure can do it,
/// [`Frozen::build`] is shorter.
///
/// The descriptor is never handed out, so nobody else can map the file writable, and the
/// mapping is marked `MADV_DONTFORK` (FreeBSD: `minherit(INHERIT_NONE)`; a child forked
/// meanwhile does not inherit it): that is
/// what lets [`freeze`](WritableRegion::freeze) add `F_SEAL_WRITE` without `EBUSY`. The
/// memory starts zeroed.
///
/// # In a forked child
///
/// A child forked while the region exists has the Rust value but not the mapping (see
/// above): the address is unmapped there, or used by a later mapping. So in such a child
/// every access panics (`Deref`, `DerefMut`, and the `AsRef`/`AsMut` built on them) with a
/// message naming the region, [`freeze`](WritableRegion::freeze) returns an error, and drop
/// leaves the address alone. Telling costs one relaxed atomic load per access: a
/// `pthread_atfork` child handler counts forks (see `docs/safety.md`, §6). A child made
/// with a raw `clone`/`vfork` syscall that bypasses libc's `fork` is not detected.
///
/// ```
/// use memfile::WritableRegion;
///
/// let mut region = WritableRegion::new("frame", 8)?;
/// region[..4].copy_from_slice(b"head");
/// region[4..].copy_from_slice(b"tail");
/// let frozen = region.freeze()?;
/// assert_eq!(&frozen[..], b"headtail");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct WritableRegion {
    /// `None` when `len == 0` (nothing to map).
    map: Option<WritableMap>,
    file: MemFile,
}

impl WritableRegion {
    /// Creates a sealable memfd named `name` of `len` zero bytes and maps it writable.
    ///
    /// # Errors
    ///
    /// Creating, sizing or mapping the memfd can fail (e.g. `ENOMEM`, `EMFILE`, an invalid
    /// `name`: see [`MemFile::create`]).
    pub fn new(name: &str, len: usize) -> io::Result<WritableRegion> {
        let (file, map) = create_mapped(name, len, "WritableRegion")?;
        Ok(WritableRegion { map, file })
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, WritableMap::len)
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Unmaps and seals (`Write | Shrink | Grow | Seal`); the same pages are mapped again,
    /// read-only, on the first read of the [`Frozen`] (see [`Frozen::try_as_slice`]), so a
    /// region that is only sent on is never mapped twice.
    ///
    /// Pages never written are allocated as zeros first, so the [`Frozen`] is fully
    /// allocated (see [`Frozen::from_fd_fully_allocated`]).
    ///
    /// # Errors
    ///
    /// Sealing can fail (`F_ADD_SEALS`, `F_GET_SEALS`); `EBUSY` only if a child forked by
    /// another thread in the instant between this region's `mmap` and `madvise` still holds
    /// the mapping after retrying for about 0.25 s (see `docs/safety.md`). Allocating the
    /// unwritten pages can fail (`ENOMEM`). In a child forked after the region was created
    /// (see above), an error of kind `Other` saying so, and nothing is sealed. No read-only
    /// mapping is made here, so no error of one is returned.
    pub fn freeze(self) -> io::Result<Frozen> {
        let len = self.len();
        let WritableRegion { map, file } = self;
        if let Some(map) = &map {
            map.check()?;
            map.populate_holes(file.as_fd())?;
        }
        // Unmap before sealing: F_SEAL_WRITE fails with EBUSY while it exists.
        drop(map);
        freeze_unmapped(file, len)
    }
}

impl Deref for WritableRegion {
    type Target = [u8];

    /// # Panics
    ///
    /// In a child forked after the region was created (see [`WritableRegion`]).
    fn deref(&self) -> &[u8] {
        self.map.as_ref().map_or(&[], WritableMap::bytes)
    }
}

impl DerefMut for WritableRegion {
    /// # Panics
    ///
    /// In a child forked after the region was created (see [`WritableRegion`]).
    fn deref_mut(&mut self) -> &mut [u8] {
        self.map.as_mut().map_or(&mut [], WritableMap::bytes_mut)
    }
}

impl AsRef<[u8]> for WritableRegion {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for WritableRegion {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl fmt::Debug for WritableRegion {
    /// Shows the descriptor and length, not the bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WritableRegion")
            .field("fd", &self.file.as_fd().as_raw_fd())
            .field("len", &self.len())
            .finish()
    }
}

/// A new sealable memfd named `name` of `len` zero bytes and its writable mapping (`None`
/// for 0 bytes, which cannot be mapped) for `owner` (a type name, for messages): the start
/// of a [`WritableRegion`] and of a [`LiveWriter`](crate::LiveWriter).
pub(crate) fn create_mapped(
    name: &str,
    len: usize,
    owner: &'static str,
) -> io::Result<(MemFile, Option<WritableMap>)> {
    let file = MemFile::create_sealable(name)?;
    file.set_len(len as u64)?;
    let map = if len == 0 {
        None
    } else {
        Some(WritableMap::new(&file, len, owner)?)
    };
    Ok((file, map))
}
