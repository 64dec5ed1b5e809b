//! [`Limits`]: how much a peer may make an endpoint send, receive or map.

/// Bounds applied to every message an endpoint sends or receives.
///
/// A receiver checks every incoming packet against these before decoding it, so a hostile
/// peer cannot make it allocate or map without bound. A sender checks its own messages
/// against the same numbers and refuses with [`Error::MessageTooLarge`](crate::Error) or
/// [`Error::TooManyFds`](crate::Error) before anything is sent.
///
/// | limit | default | valid range |
/// |---|---|---|
/// | [`max_message_bytes`](Limits::max_message_bytes) | 2 GiB ([`Limits::DEFAULT_MAX_MESSAGE_BYTES`]) | any `u64` |
/// | [`max_fds`](Limits::max_fds) | 253 (the kernel's `SCM_MAX_FD`) | 0 ..= 253, larger is clamped |
/// | [`max_mapped_bytes`](Limits::max_mapped_bytes) | 16 GiB ([`Limits::DEFAULT_MAX_MAPPED_BYTES`]) | any `u64` |
/// | [`inline_limit`](Limits::inline_limit) | derived from the socket's `SO_SNDBUF` | 0 ..= [`Limits::MAX_INLINE_LIMIT`], larger is clamped |
///
/// No value makes an endpoint overflow or panic: the setters clamp what is out of range
/// (and the getters return the clamped value), they never fail.
///
/// ```
/// use memfile_ipc::Limits;
///
/// let limits = Limits::default().max_message_bytes(1 << 20).max_fds(4);
/// assert_eq!(limits.get_max_message_bytes(), 1 << 20);
/// assert_eq!(limits.get_max_fds(), 4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    max_message_bytes: u64,
    max_fds: usize,
    max_mapped_bytes: u64,
    inline_limit: Option<usize>,
}

impl Limits {
    /// Default for [`max_message_bytes`](Limits::max_message_bytes): 2 GiB, so that a
    /// 1 GiB `Vec<u8>` goes through with room to spare.
    pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 2 << 30;
    /// Default for [`max_mapped_bytes`](Limits::max_mapped_bytes): 16 GiB. Mapping a
    /// sealed buffer costs address space, not memory, until it is read.
    pub const DEFAULT_MAX_MAPPED_BYTES: u64 = 16 << 30;
    /// The largest [`inline_limit`](Limits::inline_limit): 1 GiB. A receiver allocates a
    /// receive buffer of the inline limit (plus the 24-byte header), and the kernel never
    /// accepts a `SOCK_SEQPACKET` packet near that size unless `SO_SNDBUF` was forced far
    /// above every default, so nothing useful lies beyond; larger values are clamped to it.
    pub const MAX_INLINE_LIMIT: usize = 1 << 30;

    /// The largest encoded message (the bincode payload, inline or spilled into a memfd).
    ///
    /// Does not count the bytes of `Frozen` fields: those are limited by
    /// [`max_mapped_bytes`](Limits::max_mapped_bytes).
    #[must_use]
    pub fn max_message_bytes(mut self, bytes: u64) -> Limits {
        self.max_message_bytes = bytes;
        self
    }

    /// The most fds one message may carry in its fields (at most 253, the kernel's
    /// `SCM_MAX_FD`; a larger value is clamped). The memfd of a spilled message does not
    /// count, so at most 252 fields fit into a message that spills.
    #[must_use]
    pub fn max_fds(mut self, fds: usize) -> Limits {
        self.max_fds = fds.min(crate::raw::MAX_FDS_PER_PACKET);
        self
    }

    /// The most bytes of `Frozen` buffers one received message may map, summed over all its
    /// `Frozen` fields. A message over budget is rejected and every fd it brought closed.
    #[must_use]
    pub fn max_mapped_bytes(mut self, bytes: u64) -> Limits {
        self.max_mapped_bytes = bytes;
        self
    }

    /// Payloads up to this many bytes travel inside the packet; larger ones are written to
    /// a sealed memfd and sent as an fd. `None` (the default) derives it from the socket's
    /// send buffer (`SO_SNDBUF`), the largest packet the kernel accepts.
    ///
    /// A receiver uses it to size its receive buffer: if a sender raises it above the
    /// socket's send buffer, raise it on the receiver too.
    ///
    /// At most [`Limits::MAX_INLINE_LIMIT`] (1 GiB); a larger value is clamped to it.
    /// `Some(0)` spills every non-empty message.
    ///
    /// ```
    /// use memfile_ipc::Limits;
    ///
    /// let limits = Limits::default().inline_limit(Some(usize::MAX));
    /// assert_eq!(limits.get_inline_limit(), Some(Limits::MAX_INLINE_LIMIT));
    /// ```
    #[must_use]
    pub fn inline_limit(mut self, bytes: Option<usize>) -> Limits {
        self.inline_limit = bytes.map(|b| b.min(Limits::MAX_INLINE_LIMIT));
        self
    }

    /// The current [`max_message_bytes`](Limits::max_message_bytes).
    pub fn get_max_message_bytes(&self) -> u64 {
        self.max_message_bytes
    }

    /// The current [`max_fds`](Limits::max_fds).
    pub fn get_max_fds(&self) -> usize {
        self.max_fds
    }

    /// The current [`max_mapped_bytes`](Limits::max_mapped_bytes).
    pub fn get_max_mapped_bytes(&self) -> u64 {
        self.max_mapped_bytes
    }

    /// The current [`inline_limit`](Limits::inline_limit).
    pub fn get_inline_limit(&self) -> Option<usize> {
        self.inline_limit
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_bytes: Limits::DEFAULT_MAX_MESSAGE_BYTES,
            max_fds: crate::raw::MAX_FDS_PER_PACKET,
            max_mapped_bytes: Limits::DEFAULT_MAX_MAPPED_BYTES,
            inline_limit: None,
        }
    }
}
