//! The message codec: every bincode call of the crate is in this file, so that replacing the
//! codec touches nothing else.
//!
//! bincode 2 through its serde layer, `config::standard()` (little endian, variable-length
//! integers). Decoding always runs with a byte limit no smaller than the payload and at most
//! four times it, so a length prefix that claims more than the message holds fails instead of
//! allocating without bound.

use bincode::config;
use bincode::enc::write::Writer;
use bincode::error::{DecodeError, EncodeError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::fd::{DecodeScope, EncodeScope};
use crate::{Error, Result};

/// Appends bincode writes to a `Vec`, refusing to grow past `max` payload bytes.
struct CappedWriter<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    max: u64,
    /// Set when the cap was hit: the size that would have been reached.
    overflow: Option<u64>,
}

impl Writer for CappedWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let would_be = (self.out.len() - self.start) as u64 + bytes.len() as u64;
        if would_be > self.max {
            self.overflow = Some(would_be);
            return Err(EncodeError::Other("message exceeds the maximum message size"));
        }
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

/// Encodes `msg`, appending its bytes to `out`. Fails with [`Error::MessageTooLarge`] as
/// soon as the encoding passes `max` bytes (without allocating further).
///
/// Must run inside `scope` (the encode fd table): a typed error raised by an fd field is
/// picked up from there.
pub(crate) fn encode<T: Serialize + ?Sized>(
    msg: &T,
    out: &mut Vec<u8>,
    max: u64,
    scope: &EncodeScope,
) -> Result<()> {
    let start = out.len();
    let mut writer = CappedWriter { out, start, max, overflow: None };
    let result = bincode::serde::encode_into_writer(msg, &mut writer, config::standard());
    let overflow = writer.overflow;
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            out.truncate(start);
            if let Some(typed) = scope.take_error() {
                Err(typed)
            } else if let Some(size) = overflow {
                Err(Error::MessageTooLarge { size, max })
            } else {
                Err(Error::Codec { encoding: true, detail: e.to_string() })
            }
        }
    }
}

fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
) -> Result<(T, usize), DecodeError> {
    let config = config::standard().with_limit::<LIMIT>();
    bincode::serde::decode_from_slice(bytes, config)
}

/// Decodes one `T` that must fill `bytes` exactly.
///
/// Must run inside `scope` (the decode fd table): a typed error raised by an fd field
/// (index out of range, unsealed buffer, ...) is returned as that error.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], scope: &DecodeScope) -> Result<T> {
    // bincode's limit is a const generic, so pick the smallest power of four that covers
    // what a genuine message can claim: bincode claims each primitive's in-memory size (up
    // to 16 bytes for a `u128` encoded in 1) and each string's or byte buffer's length.
    let len = bytes.len();
    let claims = (len as u64).saturating_mul(16);
    macro_rules! tiers {
        ($($shift:literal)*) => {
            'found: {
                $(if claims <= 1u64 << $shift {
                    break 'found decode_limited::<T, { 1usize << $shift }>(bytes);
                })*
                return Err(Error::MessageTooLarge { size: len as u64, max: 1 << 40 });
            }
        };
    }
    let result = tiers!(16 18 20 22 24 26 28 30 32 34 36 38 40 42 44);
    match result {
        Ok((value, used)) if used == len => Ok(value),
        Ok((_value, used)) => Err(Error::Codec {
            encoding: false,
            detail: format!("{} trailing bytes after the message", len - used),
        }),
        Err(e) => Err(scope.take_error().unwrap_or_else(|| Error::Codec {
            encoding: false,
            detail: match e {
                DecodeError::LimitExceeded => {
                    "a length in the message claims more bytes than the message holds".into()
                }
                e => e.to_string(),
            },
        })),
    }
}
