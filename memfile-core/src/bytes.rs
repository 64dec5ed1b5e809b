//! `From<Frozen> for bytes::Bytes` (feature `bytes`): a frozen buffer into the `bytes`
//! ecosystem (hyper, tonic, tokio codecs) without a copy.

use ::bytes::Bytes;

use crate::Frozen;

#[cfg_attr(docsrs, doc(cfg(feature = "bytes")))]
impl From<Frozen> for Bytes {
    /// Wraps the mapping in a [`Bytes`] without copying ([`Bytes::from_owner`]).
    ///
    /// The `Bytes` points at the mapped pages and owns the `Frozen` (its mapping and
    /// descriptor), which are released when the last `Bytes` sharing it is dropped; slicing
    /// and cloning the `Bytes` never copy. This is sound for the same reason `Frozen`'s
    /// `&[u8]` is: the seals forbid every change of the bytes. Other clones of the `Frozen`
    /// stay usable.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use memfile::Frozen;
    ///
    /// let frozen = Frozen::from_bytes("payload", b"header|body")?;
    /// let start = frozen.as_ptr();
    /// let bytes = Bytes::from(frozen);
    /// assert_eq!(bytes.as_ptr(), start); // the mapping itself
    /// let body = bytes.slice(7..);
    /// assert_eq!(&body[..], b"body");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    fn from(frozen: Frozen) -> Bytes {
        Bytes::from_owner(frozen)
    }
}
