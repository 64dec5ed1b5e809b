//! [`WritableRegion`]: a private writable memfd mapping, filled over several calls, then
//! frozen in place.

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::AsRawFd;

use memmap2::MmapMut;

use crate::frozen::{freeze_unmapped, map_writable};
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
    map: Option<MmapMut>,
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
        let (file, map) = create_mapped(name, len)?;
        Ok(WritableRegion { map, file })
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Unmaps and seals (`Write | Shrink | Grow | Seal`); the same pages are mapped again,
    /// read-only, on the first read of the [`Frozen`] (see [`Frozen::try_as_slice`]), so a
    /// region that is only sent on is never mapped twice.
    ///
    /// # Errors
    ///
    /// Sealing can fail (`F_ADD_SEALS`, `F_GET_SEALS`); `EBUSY` only if a child forked by
    /// another thread in the instant between this region's `mmap` and `madvise` still holds
    /// the mapping after a short retry (see `docs/safety.md`). No mapping is made here, so
    /// no mapping error is returned.
    pub fn freeze(self) -> io::Result<Frozen> {
        let len = self.len();
        let WritableRegion { map, file } = self;
        // Unmap before sealing: F_SEAL_WRITE fails with EBUSY while it exists.
        drop(map);
        freeze_unmapped(file, len)
    }
}

impl Deref for WritableRegion {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

impl DerefMut for WritableRegion {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.map.as_deref_mut().unwrap_or(&mut [])
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
/// for 0 bytes, which cannot be mapped): the start of a [`WritableRegion`] and of a
/// [`LiveWriter`](crate::LiveWriter).
pub(crate) fn create_mapped(name: &str, len: usize) -> io::Result<(MemFile, Option<MmapMut>)> {
    let file = MemFile::create_sealable(name)?;
    file.set_len(len as u64)?;
    let map = if len == 0 {
        None
    } else {
        Some(map_writable(&file, len)?)
    };
    Ok((file, map))
}
