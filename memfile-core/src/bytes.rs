//! `TryFrom<Frozen> for bytes::Bytes` (feature `bytes`): a frozen buffer into the `bytes`
//! ecosystem (hyper, tonic, tokio codecs) without a copy.

use std::io;

use ::bytes::Bytes;

use crate::Frozen;

#[cfg_attr(docsrs, doc(cfg(feature = "bytes")))]
impl TryFrom<Frozen> for Bytes {
    type Error = io::Error;

    /// Wraps the mapping in a [`Bytes`] without copying ([`Bytes::from_owner`]).
    ///
    /// The `Bytes` points at the mapped pages and owns the `Frozen` (its mapping and
    /// descriptor), which are released when the last `Bytes` sharing it is dropped; slicing
    /// and cloning the `Bytes` never copy. This is sound for the same reason `Frozen`'s
    /// `&[u8]` is: the seals forbid every change of the bytes. Other clones of the `Frozen`
    /// stay usable.
    ///
    /// A `Frozen` this process froze itself is mapped on its first read; the conversion
    /// makes that mapping first (so it is `TryFrom`, not `From`: it never panics).
    ///
    /// # Errors
    ///
    /// The `mmap` error when the buffer is not mapped yet and cannot be (`ENOMEM`, ...), as
    /// [`Frozen::try_as_slice`]; the `Frozen` is dropped then (clone it first to keep it).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use memfile::Frozen;
    ///
    /// let frozen = Frozen::from_bytes("payload", b"header|body")?;
    /// let bytes = Bytes::try_from(frozen.clone())?;
    /// assert_eq!(bytes.as_ptr(), frozen.as_ptr()); // the mapping itself
    /// let body = bytes.slice(7..);
    /// assert_eq!(&body[..], b"body");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    fn try_from(frozen: Frozen) -> io::Result<Bytes> {
        // Map now: `from_owner` reads the slice through `AsRef`, which would panic on a
        // failed lazy mapping. Once mapped, the mapping stays for the `Frozen`'s lifetime.
        frozen.try_as_slice()?;
        Ok(Bytes::from_owner(frozen))
    }
}
