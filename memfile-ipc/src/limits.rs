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
/// | [`allow_sparse_buffers`](Limits::allow_sparse_buffers) | `false`: received `Frozen` fields must be fully allocated | `true` or `false` |
/// | [`max_heap_bytes`](Limits::max_heap_bytes) | 32 bytes per payload byte + 1 MiB ([`Limits::heap_budget`]) | `None` or any `u64` |
///
/// No value makes an endpoint overflow or panic: the setters clamp what is out of range
/// (and the getters return the clamped value), they never fail.
///
/// ```
/// use memfile::ipc::Limits;
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
    allow_sparse_buffers: bool,
    max_heap_bytes: Option<u64>,
}

impl Limits {
    /// Default for [`max_message_bytes`](Limits::max_message_bytes): 2 GiB, so that a
    /// 1 GiB `Vec<u8>` goes through with room to spare.
    pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 2 << 30;
    /// Default for [`max_mapped_bytes`](Limits::max_mapped_bytes): 16 GiB. Mapping a
    /// sealed buffer costs address space, not memory, until it is read.
    pub const DEFAULT_MAX_MAPPED_BYTES: u64 = 16 << 30;
    /// The default heap budget of a received message, per byte of its payload: see
    /// [`heap_budget`](Limits::heap_budget).
    pub const DEFAULT_HEAP_BYTES_PER_PAYLOAD_BYTE: u64 = 32;
    /// The default heap budget's fixed allowance, 1 MiB: see
    /// [`heap_budget`](Limits::heap_budget).
    pub const DEFAULT_HEAP_ALLOWANCE: u64 = 1 << 20;
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
    /// use memfile::ipc::Limits;
    ///
    /// let limits = Limits::default().inline_limit(Some(usize::MAX));
    /// assert_eq!(limits.get_inline_limit(), Some(Limits::MAX_INLINE_LIMIT));
    /// ```
    #[must_use]
    pub fn inline_limit(mut self, bytes: Option<usize>) -> Limits {
        self.inline_limit = bytes.map(|b| b.min(Limits::MAX_INLINE_LIMIT));
        self
    }

    /// Whether a received `Frozen` field may be a sparse file (holes below its end).
    ///
    /// By default (`false`) every `Frozen` field is checked with memfile-core's
    /// `Frozen::from_fd_fully_allocated`: a file with a hole (found with
    /// `lseek(SEEK_HOLE)`), or a hugetlb file (whose holes cannot be found), is refused
    /// with [`Error::BadBuffer`](crate::Error::BadBuffer) of kind `Sparse`. A sparse
    /// sealed file costs its sender nothing, and every hole the receiver reads becomes a
    /// page of zeros charged to the receiver (under `vm.overcommit_memory = 2`, or for a
    /// hugetlb file with no free huge page, the read can even be `SIGBUS`). The crate's
    /// own producers (`MemFile::freeze`, `Frozen::build`, `Frozen::from_bytes`,
    /// `WritableRegion::freeze`) always make fully allocated buffers.
    ///
    /// `true` accepts sparse buffers (still bounded by
    /// [`max_mapped_bytes`](Limits::max_mapped_bytes)): for peers you trust that send
    /// large, mostly empty buffers on purpose. The spilled payload of a large message is
    /// checked either way, as the receiver reads all of it.
    ///
    /// ```
    /// use memfile::ipc::Limits;
    ///
    /// assert!(!Limits::default().get_allow_sparse_buffers());
    /// let trusting = Limits::default().allow_sparse_buffers(true);
    /// assert!(trusting.get_allow_sparse_buffers());
    /// ```
    #[must_use]
    pub fn allow_sparse_buffers(mut self, allow: bool) -> Limits {
        self.allow_sparse_buffers = allow;
        self
    }

    /// The current [`allow_sparse_buffers`](Limits::allow_sparse_buffers).
    pub fn get_allow_sparse_buffers(&self) -> bool {
        self.allow_sparse_buffers
    }

    /// The most heap memory that decoding one received message may charge, or `None` (the
    /// default) for `32 × payload length + 1 MiB`: see [`heap_budget`](Limits::heap_budget).
    ///
    /// A message whose decoding would need more is refused with
    /// [`Error::HeapLimitExceeded`](crate::Error) (its fds closed, the connection usable)
    /// before the memory is allocated. Raise it for message types that are much larger in
    /// memory than on the wire (long sequences of `None`s of a large `Option`, say). Every
    /// value is valid: `Some(0)` refuses every message whose decoding allocates, and
    /// `Some(u64::MAX)` turns the check off.
    ///
    /// ```
    /// use memfile::ipc::Limits;
    ///
    /// let limits = Limits::default().max_heap_bytes(Some(64 << 20));
    /// assert_eq!(limits.heap_budget(10), 64 << 20);
    /// assert_eq!(Limits::default().heap_budget(1000), 32 * 1000 + (1 << 20));
    /// ```
    #[must_use]
    pub fn max_heap_bytes(mut self, bytes: Option<u64>) -> Limits {
        self.max_heap_bytes = bytes;
        self
    }

    /// The heap budget of a received message whose payload is `payload_len` bytes:
    /// [`max_heap_bytes`](Limits::max_heap_bytes) if set, otherwise
    /// `DEFAULT_HEAP_BYTES_PER_PAYLOAD_BYTE × payload_len + DEFAULT_HEAP_ALLOWANCE`
    /// (32 bytes per payload byte plus 1 MiB).
    ///
    /// The decoder charges against it, before allocating, the storage of every sequence and
    /// map as it grows (a `Vec`'s buffer, with the old and new buffer of a reallocation;
    /// other collections 4 × the element size + 24 bytes per element), every string and
    /// byte buffer, and every value decoded behind a pointer (`Box`) larger than the
    /// pointer. What a message can cost beyond the budget is small and bounded (see
    /// docs/security.md, "Heap per message").
    pub fn heap_budget(&self, payload_len: u64) -> u64 {
        self.max_heap_bytes.unwrap_or_else(|| {
            payload_len
                .saturating_mul(Limits::DEFAULT_HEAP_BYTES_PER_PAYLOAD_BYTE)
                .saturating_add(Limits::DEFAULT_HEAP_ALLOWANCE)
        })
    }

    /// The current [`max_heap_bytes`](Limits::max_heap_bytes).
    pub fn get_max_heap_bytes(&self) -> Option<u64> {
        self.max_heap_bytes
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
            allow_sparse_buffers: false,
            max_heap_bytes: None,
        }
    }
}
