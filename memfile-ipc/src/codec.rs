//! The message codec: every bincode call of the crate is in this file, so that replacing the
//! codec touches nothing else.
//!
//! bincode 2 through its serde layer, `config::standard()` (little endian, variable-length
//! integers). Decoding always runs with a byte limit (bincode counts the in-memory size of
//! what it decodes), between 16 and 64 times the payload, and reads strings and byte buffers
//! through their borrowed form, so a length prefix that claims more than the message holds
//! fails before anything is allocated for it.

use bincode::config;
use bincode::enc::write::Writer;
use bincode::error::{DecodeError, EncodeError};
use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

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
    // serde hands a plain `Vec<u8>` over one byte at a time: an out-of-line call per byte
    // made encoding it 3–4× slower.
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let would_be = (self.out.len() - self.start) as u64 + bytes.len() as u64;
        if would_be > self.max {
            self.overflow = Some(would_be);
            return Err(EncodeError::Other(
                "message exceeds the maximum message size",
            ));
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
    let mut writer = CappedWriter {
        out,
        start,
        max,
        overflow: None,
    };
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
                Err(Error::Codec {
                    encoding: true,
                    detail: e.to_string(),
                    fd: None,
                })
            }
        }
    }
}

fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
) -> Result<(T, usize), DecodeError> {
    let config = config::standard().with_limit::<LIMIT>();
    bincode::serde::seed_decode_from_slice(Borrowing(PhantomData::<T>), bytes, config)
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
    let _elements = ElementBudget::set(len);
    let result = tiers!(16 18 20 22 24 26 28 30 32 34 36 38 40 42 44);
    match result {
        Ok((value, used)) if used == len => Ok(value),
        Ok((_value, used)) => Err(Error::Codec {
            encoding: false,
            detail: format!("{} trailing bytes after the message", len - used),
            fd: None,
        }),
        Err(e) => Err(scope.take_error().unwrap_or_else(|| Error::Codec {
            encoding: false,
            detail: match e {
                DecodeError::LimitExceeded => {
                    "a length in the message claims more bytes than the message holds".into()
                }
                e => e.to_string(),
            },
            fd: None,
        })),
    }
}

// ---------------------------------------------------------------------------------------
// Decoding strings and byte buffers without trusting their length prefix.
//
// bincode's owned `String` / `Vec<u8>` decoding allocates the claimed length before reading
// (`vec![0; len]`), so a peer could make us allocate far more than it sent (bounded only by
// the limit above). Its borrowed `&str` / `&[u8]` decoding instead checks the bytes are
// there first. `Borrowing` wraps the deserializer at every level so that
// `deserialize_string` / `deserialize_byte_buf` become their borrowed forms; the value is
// then copied out of the payload, exactly as many bytes as it really has.

/// Deserializes a `T` through [`De`].
struct Borrowing<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for Borrowing<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        T::deserialize(De(deserializer))
    }
}

/// A deserializer whose owned string/bytes requests are served from borrowed data.
struct De<D>(D);

/// A visitor whose nested deserializers are wrapped in [`De`] too.
struct Wrap<V>(V);

/// Like [`Wrap`], for a `deserialize_string`/`deserialize_byte_buf` that was turned into its
/// borrowed form: hands the visitor an owned copy, as the owned form would have.
struct Owned<V>(V);

/// A seed whose deserializer is wrapped in [`De`].
struct Seed<S>(S);

macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            let _level = Depth::enter()?;
            self.0.$method($($arg,)* Wrap(visitor))
        })*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for De<D> {
    type Error = D::Error;

    forward! {
        deserialize_any(); deserialize_bool(); deserialize_i8(); deserialize_i16();
        deserialize_i32(); deserialize_i64(); deserialize_i128(); deserialize_u8();
        deserialize_u16(); deserialize_u32(); deserialize_u64(); deserialize_u128();
        deserialize_f32(); deserialize_f64(); deserialize_char(); deserialize_str();
        deserialize_bytes(); deserialize_option(); deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq(); deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier(); deserialize_ignored_any();
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_str(Owned(visitor))
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_bytes(Owned(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(De(deserializer))
    }
}

macro_rules! visit {
    ($($method:ident($ty:ty);)*) => {
        $(fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.0.$method(v)
        })*
    };
}

/// The visitor methods both wrappers pass through unchanged.
macro_rules! visit_common {
    () => {
        type Value = V::Value;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.expecting(f)
        }

        visit! {
            visit_bool(bool); visit_i8(i8); visit_i16(i16); visit_i32(i32); visit_i64(i64);
            visit_i128(i128); visit_u8(u8); visit_u16(u16); visit_u32(u32); visit_u64(u64);
            visit_u128(u128); visit_f32(f32); visit_f64(f64); visit_char(char);
            visit_string(String); visit_byte_buf(Vec<u8>);
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            self.0.visit_none()
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            self.0.visit_unit()
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            self.0.visit_some(De(d))
        }

        fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            self.0.visit_newtype_struct(De(d))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            self.0.visit_seq(Wrap(seq))
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            self.0.visit_map(Wrap(map))
        }

        fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
            self.0.visit_enum(Wrap(data))
        }
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    visit_common!();

    visit! {
        visit_str(&str); visit_borrowed_str(&'de str);
        visit_bytes(&[u8]); visit_borrowed_bytes(&'de [u8]);
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Owned<V> {
    visit_common!();

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.0.visit_string(v.to_owned())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        self.0.visit_byte_buf(copy_to_vec(v))
    }
}

/// Byte buffers from this size up are copied into memory that asks for transparent huge
/// pages: the size of one x86-64/arm64 PMD huge page.
const HUGE_PAGE: usize = 2 << 20;

/// `bytes.to_vec()`, but for large buffers with `madvise(MADV_HUGEPAGE)` on the new `Vec`'s
/// memory before it is written: under the common anonymous THP setting `madvise`, the copy
/// then takes one fault per 2 MiB instead of one per 4 KiB.
fn copy_to_vec(bytes: &[u8]) -> Vec<u8> {
    if bytes.len() < 2 * HUGE_PAGE {
        return bytes.to_vec();
    }
    let mut vec = Vec::with_capacity(bytes.len());
    let spare = vec.spare_capacity_mut();
    let start = (spare.as_mut_ptr() as usize).next_multiple_of(HUGE_PAGE);
    let end = (spare.as_mut_ptr() as usize + spare.len()) / HUGE_PAGE * HUGE_PAGE;
    if end > start {
        // An error from madvise (a kernel without THP) just means no huge pages.
        // SAFETY: `start..end` lies inside the allocation `vec` owns, page-aligned; the
        // advice changes how untouched memory will be backed, never contents or permissions.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
    vec.extend_from_slice(bytes);
    vec
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Wrap<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        ElementBudget::take()?;
        self.0.next_element_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        // serde preallocates from this hint (up to 1 MiB); a claimed length can be no more
        // than the elements the payload's bytes can hold.
        self.0.size_hint().map(ElementBudget::cap_hint)
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Wrap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        ElementBudget::take()?;
        self.0.next_key_seed(Seed(seed))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        // serde preallocates from this hint (up to 1 MiB); a claimed length can be no more
        // than the elements the payload's bytes can hold.
        self.0.size_hint().map(ElementBudget::cap_hint)
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Wrap<A> {
    type Error = A::Error;
    type Variant = Wrap<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Wrap<A::Variant>), A::Error> {
        self.0
            .variant_seed(Seed(seed))
            .map(|(value, variant)| (value, Wrap(variant)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Wrap<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(Seed(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, Wrap(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(fields, Wrap(visitor))
    }
}

// ---------------------------------------------------------------------------------------
// Bounding the number of collection elements.
//
// Every element of a sequence or map costs at least one byte on the wire, except elements
// of zero-sized types (`Vec<()>`, `[(); N]`, unit structs): for those bincode reads nothing,
// so a 9-byte payload claiming 2^60 of them would keep the receiver busy for ever. Each
// decode gets a budget of one element per payload byte plus `ELEMENT_SLACK`, which no
// message with real data can exceed.

/// Elements allowed beyond one per payload byte (for small collections of zero-sized values).
const ELEMENT_SLACK: u64 = 1 << 16;

std::thread_local! {
    static ELEMENTS_LEFT: std::cell::Cell<u64> = const { std::cell::Cell::new(u64::MAX) };
}

/// Sets the element budget of one decode and restores the previous one when dropped.
struct ElementBudget(u64);

impl ElementBudget {
    fn set(payload_len: usize) -> ElementBudget {
        let budget = (payload_len as u64).saturating_add(ELEMENT_SLACK);
        ElementBudget(ELEMENTS_LEFT.with(|c| c.replace(budget)))
    }

    /// `hint` capped at the elements that the rest of the payload can encode (one per byte).
    fn cap_hint(hint: usize) -> usize {
        let left = ELEMENTS_LEFT
            .with(|c| c.get())
            .saturating_sub(ELEMENT_SLACK);
        hint.min(usize::try_from(left).unwrap_or(usize::MAX))
    }

    /// Counts one element against the budget of the running decode.
    fn take<E: de::Error>() -> Result<(), E> {
        ELEMENTS_LEFT.with(|c| match c.get() {
            0 => Err(E::custom(format_args!(
                "the message holds more collection elements than its bytes can encode \
                 (one per byte plus {ELEMENT_SLACK})"
            ))),
            n => {
                c.set(n - 1);
                Ok(())
            }
        })
    }
}

impl Drop for ElementBudget {
    fn drop(&mut self) {
        ELEMENTS_LEFT.with(|c| c.set(self.0));
    }
}

// ---------------------------------------------------------------------------------------
// Bounding the nesting depth.
//
// Each level of a recursive message type (`enum Tree { Leaf, Node(Box<Tree>) }`) costs one
// byte on the wire but several hundred bytes of stack while it is decoded: a 200 KB packet of
// nested variants overflowed a 2 MiB thread stack, which aborts the process. Like
// serde_json, the decoder stops at `MAX_DEPTH` levels.

/// The deepest nesting of values a received message may have.
const MAX_DEPTH: u32 = 128;

std::thread_local! {
    static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// One level of nesting, counted while it is decoded.
struct Depth;

impl Depth {
    fn enter<E: de::Error>() -> Result<Depth, E> {
        DEPTH.with(|d| match d.get() {
            depth if depth >= MAX_DEPTH => Err(E::custom(format_args!(
                "the message nests values deeper than {MAX_DEPTH} levels"
            ))),
            depth => {
                d.set(depth + 1);
                Ok(Depth)
            }
        })
    }
}

impl Drop for Depth {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bincode's standard varint for `n` (0xfd = u64 follows).
    fn varint_u64(n: u64) -> Vec<u8> {
        let mut v = vec![0xfd];
        v.extend_from_slice(&n.to_le_bytes());
        v
    }

    #[test]
    fn zero_sized_elements_cannot_keep_the_receiver_busy() {
        let scope = DecodeScope::begin(Vec::new(), 0);
        let payload = varint_u64(1 << 60);
        let start = std::time::Instant::now();
        let err = decode::<Vec<()>>(&payload, &scope).expect_err("2^60 units accepted");
        assert!(
            matches!(
                err,
                Error::Codec {
                    encoding: false,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("collection elements"), "{err}");
        // The budget is one element per byte plus the slack: nowhere near 2^60 steps.
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn small_collections_of_zero_sized_values_still_decode() {
        let scope = DecodeScope::begin(Vec::new(), 0);
        let payload = encode_plain(&vec![(); 1000]);
        assert_eq!(decode::<Vec<()>>(&payload, &scope).unwrap().len(), 1000);
        let payload = encode_plain(&vec![7u8; 100_000]);
        assert_eq!(decode::<Vec<u8>>(&payload, &scope).unwrap().len(), 100_000);
    }

    #[test]
    fn large_byte_buffers_are_copied_whole() {
        // Above 2 huge pages: the huge-page path, with an odd length and offset.
        let data: Vec<u8> = (0..(5 << 20) + 3).map(|i| (i * 7 + 1) as u8).collect();
        assert_eq!(copy_to_vec(&data[1..]), &data[1..]);
        assert_eq!(copy_to_vec(&data[..100]), &data[..100]);
    }

    fn encode_plain<T: Serialize>(value: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, config::standard()).unwrap()
    }
}
