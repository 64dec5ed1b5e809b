//! The message codec: every bincode call of the crate is in this file, so that replacing the
//! codec touches nothing else.
//!
//! bincode 2 through its serde layer, `config::standard()` (little endian, variable-length
//! integers). Decoding always runs with a byte limit (bincode counts the in-memory size of
//! what it decodes), between 16 and 64 times the payload, and reads strings and byte buffers
//! through their borrowed form, so a length prefix that claims more than the message holds
//! fails before anything is allocated for it. Wrappers around bincode's deserializer also
//! bound the collection elements, the heap and the nesting depth of one message (each in
//! its section below).

use bincode::config;
use bincode::enc::write::Writer;
use bincode::error::{DecodeError, EncodeError};
use std::cell::Cell;
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

/// Decodes one `T` that must fill `bytes` exactly, allocating at most about `heap_budget`
/// bytes for it (see "Bounding the heap" below; [`Limits::heap_budget`](crate::Limits)).
///
/// Must run inside `scope` (the decode fd table): a typed error raised by an fd field
/// (index out of range, unsealed buffer, ...) is returned as that error.
pub(crate) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    heap_budget: u64,
    scope: &DecodeScope,
) -> Result<T> {
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
    let budget = Budget::begin(len, heap_budget, std::mem::size_of::<T>());
    let result = tiers!(16 18 20 22 24 26 28 30 32 34 36 38 40 42 44);
    // A `Deserialize` impl may swallow the error of a refused charge: the message is refused
    // all the same.
    if let Some(excess) = budget.exceeded() {
        return Err(Error::HeapLimitExceeded {
            at_least: heap_budget.saturating_add(excess),
            max: heap_budget,
        });
    }
    drop(budget);
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
//
// The same wrappers keep the books of the three bounds below (collection elements, heap,
// nesting depth).

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

/// The visitor of a length-prefixed sequence or map: its elements are counted and charged
/// (see [`Elements`]).
struct Collection<V>(V);

/// A seed whose deserializer is wrapped in [`De`].
struct Seed<S>(S);

/// Values that contain no other value: no nesting level, nothing charged here (they live
/// inline in whatever holds them, which is charged).
macro_rules! forward_leaf {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(#[inline]
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.0.$method($($arg,)* Wrap(visitor))
        })*
    };
}

/// Values that contain others: one nesting level each, and a charge when the value lives
/// behind a pointer (see [`Level::enter`]).
macro_rules! forward_nested {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            let _level = Level::enter::<V::Value, D::Error>()?;
            self.0.$method($($arg,)* Wrap(visitor))
        })*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for De<D> {
    type Error = D::Error;

    forward_leaf! {
        deserialize_bool(); deserialize_i8(); deserialize_i16();
        deserialize_i32(); deserialize_i64(); deserialize_i128(); deserialize_u8();
        deserialize_u16(); deserialize_u32(); deserialize_u64(); deserialize_u128();
        deserialize_f32(); deserialize_f64(); deserialize_char(); deserialize_str();
        deserialize_bytes(); deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_identifier();
    }

    forward_nested! {
        deserialize_any(); deserialize_option();
        deserialize_newtype_struct(name: &'static str);
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_ignored_any();
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let _level = Level::enter::<V::Value, D::Error>()?;
        self.0.deserialize_seq(Collection(visitor))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let _level = Level::enter::<V::Value, D::Error>()?;
        self.0.deserialize_map(Collection(visitor))
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

/// Like [`visit!`], charging the length of the string or byte slice: the visitor may copy it
/// (a `String` does).
macro_rules! visit_charged {
    ($($method:ident($ty:ty);)*) => {
        $(fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            charge(v.len())?;
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
            self.0.visit_seq(Fields(seq))
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            self.0.visit_map(Elements::from_map(map))
        }

        fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
            self.0.visit_enum(Wrap(data))
        }
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    visit_common!();

    visit_charged! {
        visit_str(&str); visit_borrowed_str(&'de str);
        visit_bytes(&[u8]); visit_borrowed_bytes(&'de [u8]);
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Owned<V> {
    visit_common!();

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        charge(v.len())?;
        self.0.visit_string(v.to_owned())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        charge(v.len())?;
        self.0.visit_byte_buf(copy_to_vec(v))
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Collection<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.0
            .visit_seq(Elements::from_seq(seq, grows_like_vec::<V::Value>()))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(Elements::from_map(map))
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

/// The fields of a tuple, array, struct or tuple/struct variant: fixed by the type, so
/// neither counted nor charged (they live inside the value that holds them).
struct Fields<A>(A);

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Fields<A> {
    type Error = A::Error;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        Slot::set::<T::Value>();
        self.0.next_element_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
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
        Slot::set::<T::Value>();
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
// of zero-sized types (`Vec<()>`, unit structs): for those bincode reads nothing, so a
// 9-byte payload claiming 2^60 of them would keep the receiver busy for ever. Each decode
// gets a budget of one element per payload byte plus `ELEMENT_SLACK`, which no message with
// real data can exceed. Only the elements of length-prefixed sequences and maps count (a
// map entry counts once); the fields of tuples, arrays and structs are fixed by the type.

/// Elements allowed beyond one per payload byte (for small collections of zero-sized values).
const ELEMENT_SLACK: u64 = 1 << 16;

std::thread_local! {
    static ELEMENTS_LEFT: Cell<u64> = const { Cell::new(u64::MAX) };
}

/// Counts one element against the budget of the running decode.
#[inline]
fn take_element<E: de::Error>() -> Result<(), E> {
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

/// `hint` capped at the elements that the rest of the payload can encode (one per byte).
fn cap_hint(hint: usize) -> usize {
    let left = ELEMENTS_LEFT.with(Cell::get).saturating_sub(ELEMENT_SLACK);
    hint.min(usize::try_from(left).unwrap_or(usize::MAX))
}

// ---------------------------------------------------------------------------------------
// Bounding the heap.
//
// A byte on the wire can become far more in memory: a `None` of an `Option<[u64; 32]>` is
// one byte and 264 in a `Vec`, and bincode's own limit never charges a collection element
// its size. So each decode gets a heap budget (`Limits::heap_budget`: by default 32 bytes
// per payload byte plus 1 MiB), and the wrappers charge against it, before it is allocated,
// what the standard `Deserialize` impls allocate:
//
// - a collection (a length-prefixed sequence or map), the storage its visitor allocates.
//   The element's in-memory size is known in `next_element_seed` (the seed's `Value`); the
//   wrapper models the storage as serde's visitors grow it: a preallocation of
//   `size_hint::cautious` elements (at most 1 MiB of them), then doubling, where a
//   reallocation holds the old and the new buffer at once. A `Vec`, `VecDeque` or
//   `BinaryHeap` is charged exactly that; any other collection (hash and B-tree maps and
//   sets, lists, and types this file does not know) 4 × size + 24 bytes per element with a
//   first capacity of at least 11: that covers a hash table's buckets, control bytes and its
//   resize (old and new table), a B-tree's half-full nodes (11 slots each) and a list's
//   nodes. The charge is made when an element needs more capacity than is charged, so the
//   one preallocation a visitor makes before its first element is charged at that element;
// - strings and byte buffers, their length (the copy out of the payload);
// - a value behind a pointer: `Box<T>` (and `Rc`/`Arc`) decode `T` where the field holds a
//   pointer, so a nested value larger than the position it was decoded into (`Slot`) is
//   charged its size. Boxes of at most 8 bytes and boxed primitives are not (at most 16
//   bytes per payload byte); nor are `Rc`/`Arc`'s two counters (16 bytes each).
//
// The bound that results, and the worst case per shape, is in docs/security.md.

/// What serde's `size_hint::cautious` preallocates at most, in bytes.
const PREALLOC_MAX: usize = 1 << 20;

/// The smallest first capacity charged for a collection that is not a `Vec`: a B-tree leaf
/// has 11 slots however few it holds.
const TABLE_MIN_CAPACITY: usize = 11;

std::thread_local! {
    static HEAP_LEFT: Cell<u64> = const { Cell::new(u64::MAX) };
    /// Set when a charge was refused: by how many bytes it exceeded what was left.
    static HEAP_EXCESS: Cell<u64> = const { Cell::new(0) };
    /// The in-memory size of the position being decoded into (see `Level::enter`).
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Charges `bytes` against the heap budget of the running decode.
#[inline]
fn charge<E: de::Error>(bytes: usize) -> Result<(), E> {
    HEAP_LEFT.with(|c| {
        let left = c.get();
        match left.checked_sub(bytes as u64) {
            Some(rest) => {
                c.set(rest);
                Ok(())
            }
            None => Err(heap_exceeded(c, bytes as u64 - left)),
        }
    })
}

#[cold]
fn heap_exceeded<E: de::Error>(left: &Cell<u64>, excess: u64) -> E {
    // Refuse every later charge too, should a `Deserialize` impl swallow this error.
    left.set(0);
    HEAP_EXCESS.with(|c| c.set(c.get().max(excess)));
    E::custom("decoding the message would exceed its heap budget")
}

/// Gives `bytes` back to the heap budget (a buffer that was freed).
fn refund(bytes: u64) {
    HEAP_LEFT.with(|c| c.set(c.get().saturating_add(bytes)));
}

/// The in-memory size of the position a value is decoded into: a collection element, a
/// field, a variant's content. A nested value larger than that is behind a pointer.
struct Slot;

impl Slot {
    #[inline]
    fn set<T>() {
        SLOT.with(|c| c.set(std::mem::size_of::<T>()));
    }
}

/// Whether a collection of type `T` is a `Vec` or grows like one (one buffer, doubled).
/// Anything else is charged as a hash table or tree, which costs more per element; a
/// type name this does not recognise (a future compiler may print them differently) is
/// charged the same way, so it can only cost too much, never too little.
fn grows_like_vec<T>() -> bool {
    let name = std::any::type_name::<T>();
    [
        "alloc::vec::Vec<",
        "alloc::collections::vec_deque::VecDeque<",
        "alloc::collections::binary_heap::BinaryHeap<",
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix))
}

/// The elements of a length-prefixed sequence or map: each is counted against the element
/// budget, and the storage its collection allocates is charged against the heap budget.
struct Elements<A> {
    access: A,
    /// Elements still to come (bincode knows it exactly; `usize::MAX` if unknown).
    remaining: usize,
    /// The size hint handed to the visitor (it preallocates from it).
    hint: Option<usize>,
    /// Elements decoded so far.
    count: usize,
    /// Capacity charged for, in elements (`usize::MAX`: nothing to charge).
    capacity: usize,
    /// Bytes charged for the current buffer and for the one before it (alive while a
    /// reallocation copies, freed once the next element is needed).
    current: u64,
    previous: u64,
    grows_like_vec: bool,
    /// The in-memory size of the last map key.
    key_size: usize,
}

impl<A> Elements<A> {
    fn new(access: A, grows_like_vec: bool, len: Option<usize>) -> Elements<A> {
        Elements {
            access,
            remaining: len.unwrap_or(usize::MAX),
            hint: len.map(cap_hint),
            count: 0,
            capacity: 0,
            current: 0,
            previous: 0,
            grows_like_vec,
            key_size: 0,
        }
    }

    /// Charges the storage for more elements of `size` bytes each, as the collection grows.
    #[cold]
    #[inline(never)]
    fn grow<E: de::Error>(&mut self, size: usize) -> Result<(), E> {
        let (unit, first, min) = if self.grows_like_vec {
            // `RawVec`'s smallest capacity once it allocates.
            let min = match size {
                1 => 8,
                2..=1024 => 4,
                _ => 1,
            };
            (size, 0, min)
        } else {
            let unit = size.saturating_mul(4).saturating_add(24);
            (unit, TABLE_MIN_CAPACITY, TABLE_MIN_CAPACITY)
        };
        if unit == 0 {
            // A `Vec` of zero-sized values never allocates.
            self.capacity = usize::MAX;
            return Ok(());
        }
        let capacity = if self.capacity == 0 {
            // What the visitor preallocated: serde's `size_hint::cautious`.
            let cautious = match size {
                0 => 0,
                size => self.hint.unwrap_or(0).min(PREALLOC_MAX / size),
            };
            match cautious.max(first) {
                0 => min,
                n => n,
            }
        } else {
            self.capacity.saturating_mul(2).max(min)
        };
        let bytes = (capacity as u64).saturating_mul(unit as u64);
        // The buffer before the current one was freed when the current one was filled.
        refund(self.previous);
        self.previous = 0;
        charge::<E>(usize::try_from(bytes).unwrap_or(usize::MAX))?;
        self.previous = self.current;
        self.current = bytes;
        self.capacity = capacity;
        Ok(())
    }
}

impl<A> Drop for Elements<A> {
    fn drop(&mut self) {
        // The collection is complete (or abandoned): only its last buffer is still allocated.
        refund(self.previous);
    }
}

impl<'de, A: SeqAccess<'de>> Elements<A> {
    fn from_seq(access: A, grows_like_vec: bool) -> Elements<A> {
        let len = access.size_hint();
        Elements::new(access, grows_like_vec, len)
    }
}

impl<'de, A: MapAccess<'de>> Elements<A> {
    fn from_map(access: A) -> Elements<A> {
        let len = access.size_hint();
        Elements::new(access, false, len)
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Elements<A> {
    type Error = A::Error;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        if self.remaining == 0 {
            // The end: bincode answers `None` without reading anything.
            return self.access.next_element_seed(Seed(seed));
        }
        self.remaining -= 1;
        take_element()?;
        if self.count == self.capacity {
            self.grow(std::mem::size_of::<T::Value>())?;
        }
        self.count += 1;
        Slot::set::<T::Value>();
        self.access.next_element_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        // serde preallocates from this hint (up to 1 MiB); a claimed length can be no more
        // than the elements the payload's bytes can hold.
        self.hint
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Elements<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        if self.remaining == 0 {
            return self.access.next_key_seed(Seed(seed));
        }
        self.remaining -= 1;
        take_element()?;
        self.key_size = std::mem::size_of::<K::Value>();
        Slot::set::<K::Value>();
        self.access.next_key_seed(Seed(seed))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        // The entry's storage is charged once its key and value types are both known, before
        // the value is decoded.
        if self.count == self.capacity {
            self.grow(self.key_size + std::mem::size_of::<T::Value>())?;
        }
        self.count += 1;
        Slot::set::<T::Value>();
        self.access.next_value_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.hint
    }
}

/// Sets the budgets of one decode, and restores the previous ones when dropped.
struct Budget {
    elements: u64,
    heap: u64,
    excess: u64,
    slot: usize,
}

impl Budget {
    fn begin(payload_len: usize, heap: u64, root_size: usize) -> Budget {
        let elements = (payload_len as u64).saturating_add(ELEMENT_SLACK);
        Budget {
            elements: ELEMENTS_LEFT.with(|c| c.replace(elements)),
            heap: HEAP_LEFT.with(|c| c.replace(heap)),
            excess: HEAP_EXCESS.with(|c| c.replace(0)),
            // The message itself is returned by value: not charged.
            slot: SLOT.with(|c| c.replace(root_size)),
        }
    }

    /// By how many bytes a refused charge exceeded the budget, if one was refused.
    fn exceeded(&self) -> Option<u64> {
        match HEAP_EXCESS.with(Cell::get) {
            0 => None,
            excess => Some(excess),
        }
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        ELEMENTS_LEFT.with(|c| c.set(self.elements));
        HEAP_LEFT.with(|c| c.set(self.heap));
        HEAP_EXCESS.with(|c| c.set(self.excess));
        SLOT.with(|c| c.set(self.slot));
    }
}

// ---------------------------------------------------------------------------------------
// Bounding the nesting depth.
//
// Each level of a recursive message type (`enum Tree { Leaf, Node(Box<Tree>) }`) costs one
// byte on the wire but several hundred bytes of stack while it is decoded: a 200 KB packet of
// nested variants overflowed a 2 MiB thread stack, which aborts the process. Like
// serde_json, the decoder stops at `MAX_DEPTH` levels. A level is a value that contains
// others: an option, a sequence, a map, a tuple or array, a struct, a newtype struct or an
// enum value. Primitives, strings, byte buffers and units are no level of their own.

/// The deepest nesting of values a received message may have.
const MAX_DEPTH: u32 = 128;

std::thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// One level of nesting, counted while it is decoded.
struct Level;

impl Level {
    /// Enters a value of type `T`: one more level, and `T`'s size is charged if it is larger
    /// than the position it is decoded into (it lives behind a pointer, as in a `Box<T>`).
    #[inline]
    fn enter<T, E: de::Error>() -> Result<Level, E> {
        DEPTH.with(|d| match d.get() {
            depth if depth >= MAX_DEPTH => Err(E::custom(format_args!(
                "the message nests values deeper than {MAX_DEPTH} levels"
            ))),
            depth => {
                d.set(depth + 1);
                Ok(())
            }
        })?;
        let level = Level;
        let size = std::mem::size_of::<T>();
        if size > SLOT.with(|c| c.replace(size)) {
            charge(size)?;
        }
        Ok(level)
    }
}

impl Drop for Level {
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
        let err = decode::<Vec<()>>(&payload, u64::MAX, &scope).expect_err("2^60 units accepted");
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
        assert_eq!(
            decode::<Vec<()>>(&payload, u64::MAX, &scope).unwrap().len(),
            1000
        );
        let payload = encode_plain(&vec![7u8; 100_000]);
        assert_eq!(
            decode::<Vec<u8>>(&payload, u64::MAX, &scope).unwrap().len(),
            100_000
        );
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
