//! Message-type fingerprints: a 32-bit hash of the *shape* of a message type, carried in
//! every version-2 packet header so that a receiver expecting another type says so
//! ([`Error::TypeMismatch`](crate::Error::TypeMismatch)) instead of decoding garbage.
//!
//! The shape is what serde's data model sees of the type, traced through its `Deserialize`
//! impl (the receiver's view of the bytes): struct, enum, variant and field names, primitive
//! types, sequences, maps, options, tuples and fd fields, in order. It depends only on the
//! type definitions, not on the crate paths, the compiler or the build, so two programs
//! built separately from the same definitions agree. `docs/protocol.md` ("Message-type
//! fingerprint") specifies the text and the hash precisely enough for a peer in another
//! language.
//!
//! Written by hand rather than with `serde-reflection`: that crate discovers the variants
//! of a nested enum only when the caller traces that enum type by name (a generic
//! `Receiver<T>` cannot name the types inside `T`), needs sample values for fd fields, and
//! brings four dependencies; this tracer explores every variant of every enum by tracing
//! the root type again until none is left, and knows this crate's fd fields.
//!
//! A type the tracer cannot describe (a `Deserialize` impl that calls `deserialize_any` or
//! rejects the sample values, a recursive type without a finite value, two different
//! containers with the same serde name, a type too large to trace, an impl that panics on
//! a sample value) gets fingerprint 0:
//! "not checked". Both
//! sides compute the same thing from the same definitions, so this never produces a false
//! mismatch; it only turns the check off for that type.

use std::any::type_name;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Mutex, OnceLock};

use serde::Deserialize;
use serde::de::value::U32Deserializer;
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

/// The fingerprint that means "not checked": sent by a sender with the type check turned
/// off (and by every version-1 peer), and computed for types the tracer cannot describe.
pub(crate) const UNCHECKED: u32 = 0;

/// Passes over the root type (each one explores at least one new enum variant).
const MAX_PASSES: usize = 4096;
/// Serde calls in one pass: bounds the work for huge arrays or deeply shared types.
const MAX_STEPS: usize = 1 << 20;
/// Serde calls in all passes together (many variants, each pass costly).
const MAX_TOTAL_STEPS: usize = 1 << 23;
/// Nesting of serde calls while tracing.
const MAX_DEPTH: usize = 256;

/// Prefix of the newtype-struct name through which an fd field announces itself to the
/// tracer (see [`trace_fd`]); never seen by any other deserializer.
const FD_MARK: &str = "\0memfile_ipc::fd::";

thread_local! {
    /// Set while this thread traces a type: fd fields then return placeholders.
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

/// Fingerprints computed in this process, by type, and the type names behind them (to name
/// the type a mismatching peer sent, when this process knows a type with that fingerprint).
struct Cache {
    by_type: HashMap<typeid::ConstTypeId, u32>,
    names: HashMap<u32, &'static str>,
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(|| {
        Mutex::new(Cache {
            by_type: HashMap::new(),
            names: HashMap::new(),
        })
    })
}

/// The fingerprint of `T` ([`UNCHECKED`] if its shape cannot be traced), computed once per
/// type and process.
pub(crate) fn of<T: Deserialize<'static>>() -> u32 {
    let id = typeid::ConstTypeId::of::<T>();
    if let Some(&fp) = lock(cache()).by_type.get(&id) {
        return fp;
    }
    // Traced outside the lock: a `Deserialize` impl may itself use a channel. The tracer
    // runs the impl on sample values no peer sent; one that panics on them (a
    // `deserialize_with` that unwraps, say) leaves the type unchecked, rather than making
    // every send and receive of valid messages panic.
    let traced = std::panic::catch_unwind(std::panic::AssertUnwindSafe(shape::<T>));
    let fp = traced
        .ok()
        .flatten()
        .map_or(UNCHECKED, |text| hash(text.as_bytes()));
    let mut cache = lock(cache());
    cache.by_type.insert(id, fp);
    if fp != UNCHECKED {
        cache.names.entry(fp).or_insert(type_name::<T>());
    }
    fp
}

/// The message-type fingerprint of `T`: what a [`Sender<T>`](crate::Sender) writes into
/// bytes 12..16 of every packet header, and what a [`Receiver<T>`](crate::Receiver) compares
/// them with. 0 ("not checked") when `T`'s shape cannot be traced (see
/// [`message_shape`]).
///
/// For a peer written in another language: this is the 32-bit FNV-1a hash of
/// [`message_shape::<T>()`](message_shape), as `docs/protocol.md` specifies.
///
/// ```
/// assert_eq!(memfile::ipc::message_shape::<(u8, String)>().unwrap(), "tuple<u8,str>");
/// assert_eq!(memfile::ipc::message_fingerprint::<(u8, String)>(), 0xd9a2_c541);
/// ```
pub fn message_fingerprint<T: Deserialize<'static>>() -> u32 {
    of::<T>()
}

/// The canonical shape text of message type `T` that its fingerprint hashes
/// (`docs/protocol.md`, "Message-type fingerprint"), or `None` when it cannot be traced:
/// a `Deserialize` impl that calls `deserialize_any` (`#[serde(untagged)]`, `flatten`, ...,
/// which this crate's codec does not support either) or rejects the tracer's sample values,
/// a recursive type without a finite value, or two different types with the same serde
/// name in one message (two instantiations of a generic struct, say), or a type so large
/// that tracing it takes over a million serde calls (deeply nested tuples of structs, say).
/// Such a type is sent with fingerprint 0 and not checked.
///
/// ```
/// use memfile::Frozen;
/// use memfile::ipc::{Fd, Sender};
///
/// #[derive(serde::Deserialize)]
/// # #[allow(dead_code)]
/// struct Job {
///     id: u64,
///     kind: Kind,
///     input: Fd<Frozen>,
///     reply: Option<Sender<u64>>,
/// }
/// #[derive(serde::Deserialize)]
/// # #[allow(dead_code)]
/// enum Kind {
///     Stop,
///     Scale(f32),
///     Crop { width: u32, height: u32 },
/// }
///
/// assert_eq!(
///     memfile::ipc::message_shape::<Job>().unwrap(),
///     "Job;struct Job{id:u64,kind:Kind,input:fd<frozen>,reply:option<fd<socket>>};\
///      enum Kind{Stop,Scale(f32),Crop{width:u32,height:u32}}"
/// );
/// ```
pub fn message_shape<T: Deserialize<'static>>() -> Option<String> {
    shape::<T>()
}

/// The name of a type of this process whose fingerprint is `fp`, if this process has
/// computed one.
pub(crate) fn known_type(fp: u32) -> Option<&'static str> {
    lock(cache()).names.get(&fp).copied()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// 32-bit FNV-1a of `bytes`, with 0 (reserved for "not checked") mapped to 1.
///
/// Hand-written: five lines, and the exact function must be specified in `docs/protocol.md`
/// for foreign peers; a hashing crate would add a dependency for nothing.
pub(crate) fn hash(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    if h == UNCHECKED { 1 } else { h }
}

/// The canonical shape text of `T` (see `docs/protocol.md`), or `None` if it cannot be
/// traced.
pub(crate) fn shape<T: Deserialize<'static>>() -> Option<String> {
    let _tracing = TracingFlag::set();
    let mut state = State::default();
    for _ in 0..MAX_PASSES {
        state.progress = false;
        state.steps = 0;
        let mut root = Out::default();
        let tracer = Tracer {
            st: &mut state,
            out: Some(&mut root),
            depth: 0,
        };
        // The traced value (placeholders and sample values) is dropped right away.
        drop(T::deserialize(tracer).ok()?);
        if state.incomplete().is_none() {
            return Some(state.canonical(&root));
        }
        if !state.progress {
            return None;
        }
    }
    None
}

/// Sets [`TRACING`] for its lifetime (restoring the previous value, also on unwind).
struct TracingFlag(bool);

impl TracingFlag {
    fn set() -> TracingFlag {
        TracingFlag(TRACING.with(|t| t.replace(true)))
    }
}

impl Drop for TracingFlag {
    fn drop(&mut self) {
        let previous = self.0;
        let _ = TRACING.try_with(|t| t.set(previous));
    }
}

/// Whether this thread is tracing a type (fd fields must then not touch the fd table).
pub(crate) fn tracing() -> bool {
    TRACING.with(Cell::get)
}

/// Traces an fd field whose kind's marker is `mark` (`FD_MARK` followed by `frozen`,
/// `memfile`, `fd` or `socket`: [`FdKind::SHAPE`](crate::fd::FdKind)) and returns
/// `placeholder()` as its value. Called by the fd fields' `Deserialize` impl while
/// [`tracing`] is true, where `deserializer` is this module's tracer.
pub(crate) fn trace_fd<'de, D, T>(
    deserializer: D,
    mark: &'static str,
    placeholder: impl FnOnce() -> crate::Result<T>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct FdVisitor<F>(F);
    impl<'de, T, F: FnOnce() -> crate::Result<T>> Visitor<'de> for FdVisitor<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an fd field")
        }
        fn visit_newtype_struct<D: Deserializer<'de>>(self, _: D) -> Result<T, D::Error> {
            (self.0)().map_err(de::Error::custom)
        }
    }
    debug_assert!(mark.starts_with(FD_MARK));
    deserializer.deserialize_newtype_struct(mark, FdVisitor(placeholder))
}

// ---------------------------------------------------------------------------------------
// The tracer.

/// The shape text of one position, and the named containers it refers to.
#[derive(Default, Clone, PartialEq, Eq)]
struct Out {
    text: String,
    refs: BTreeSet<&'static str>,
}

impl Out {
    fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }
}

/// What is known of a named container.
enum Def {
    /// A struct, tuple struct, newtype struct or unit struct: its full definition.
    Container(Out),
    /// An enum: its variant names and, for each variant traced so far, its shape.
    Enum {
        names: &'static [&'static str],
        variants: Vec<Option<Out>>,
    },
}

#[derive(Default)]
struct State {
    defs: BTreeMap<&'static str, Def>,
    /// Containers (not enums) being traced on the current path.
    stack: Vec<&'static str>,
    /// Enum variants being traced on the current path.
    active: BTreeSet<(&'static str, u32)>,
    /// A new enum variant was traced in this pass.
    progress: bool,
    steps: usize,
    total_steps: usize,
}

impl State {
    /// The first enum with a variant not traced yet.
    fn incomplete(&self) -> Option<&'static str> {
        self.defs.iter().find_map(|(name, def)| match def {
            Def::Enum { variants, .. } if variants.iter().any(Option::is_none) => Some(*name),
            _ => None,
        })
    }

    /// Whether tracing below `name` could still find untraced variants.
    fn needs_work(&self, name: &'static str, seen: &mut BTreeSet<&'static str>) -> bool {
        if !seen.insert(name) {
            return false;
        }
        match self.defs.get(name) {
            None => true,
            Some(Def::Container(out)) => out.refs.iter().any(|r| self.needs_work(r, seen)),
            Some(Def::Enum { variants, .. }) => variants.iter().any(|v| match v {
                None => true,
                Some(out) => out.refs.iter().any(|r| self.needs_work(r, seen)),
            }),
        }
    }

    fn out_needs_work(&self, out: &Out) -> bool {
        let mut seen = BTreeSet::new();
        out.refs.iter().any(|r| self.needs_work(r, &mut seen))
    }

    /// Root shape, then `;` and the definition of every container it reaches, by name.
    fn canonical(&self, root: &Out) -> String {
        let mut reached = BTreeSet::new();
        let mut todo: Vec<&'static str> = root.refs.iter().copied().collect();
        while let Some(name) = todo.pop() {
            if !reached.insert(name) {
                continue;
            }
            match self.defs.get(name) {
                Some(Def::Container(out)) => todo.extend(out.refs.iter().copied()),
                Some(Def::Enum { variants, .. }) => {
                    todo.extend(
                        variants
                            .iter()
                            .flatten()
                            .flat_map(|v| v.refs.iter().copied()),
                    );
                }
                None => {}
            }
        }
        let mut text = root.text.clone();
        for name in reached {
            text.push(';');
            match &self.defs[name] {
                Def::Container(out) => text.push_str(&out.text),
                Def::Enum { variants, .. } => {
                    text.push_str("enum ");
                    text.push_str(name);
                    text.push('{');
                    for (i, v) in variants.iter().enumerate() {
                        if i > 0 {
                            text.push(',');
                        }
                        text.push_str(&v.as_ref().expect("complete").text);
                    }
                    text.push('}');
                }
            }
        }
        text
    }

    /// Records the definition `out` of container `name`; a different earlier one is a
    /// conflict (two types with one serde name).
    fn define(&mut self, name: &'static str, out: Out) -> Result<(), TraceError> {
        match self.defs.get(name) {
            None => {
                self.defs.insert(name, Def::Container(out));
                Ok(())
            }
            Some(Def::Container(known)) if *known == out => Ok(()),
            Some(_) => Err(TraceError::new(format!("two different types named {name}"))),
        }
    }
}

#[derive(Debug)]
struct TraceError(String);

impl TraceError {
    fn new(s: String) -> TraceError {
        TraceError(s)
    }
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        TraceError(msg.to_string())
    }
}

/// A serde `Deserializer` that records the shape of what is asked of it into `out` and
/// hands out sample values. Without `out` ("quiet": producing a value for a container that
/// is already being traced further up) sequences, maps and options are empty, so that
/// recursive types end.
struct Tracer<'s> {
    st: &'s mut State,
    out: Option<&'s mut Out>,
    depth: usize,
}

impl<'s> Tracer<'s> {
    fn write(&mut self, s: &str) {
        if let Some(out) = self.out.as_deref_mut() {
            out.push(s);
        }
    }

    fn step(&mut self) -> Result<(), TraceError> {
        self.st.steps += 1;
        self.st.total_steps += 1;
        if self.st.steps > MAX_STEPS
            || self.st.total_steps > MAX_TOTAL_STEPS
            || self.depth > MAX_DEPTH
        {
            return Err(TraceError::new(
                "type too large or too deep to trace".into(),
            ));
        }
        Ok(())
    }

    /// Writes a reference to container `name`.
    fn reference(&mut self, name: &'static str) {
        if let Some(out) = self.out.as_deref_mut() {
            out.push(name);
            out.refs.insert(name);
        }
    }

    fn child<'c>(&'c mut self, out: Option<&'c mut Out>) -> Tracer<'c> {
        Tracer {
            st: &mut *self.st,
            out,
            depth: self.depth + 1,
        }
    }

    /// A named container other than an enum: writes the reference; traces the definition
    /// (`head`, the inner shape from `visit`, `tail`) unless it is already being traced
    /// further up, where the value is produced quietly.
    fn container<V>(
        mut self,
        name: &'static str,
        head: &str,
        tail: &str,
        visit: impl FnOnce(Tracer<'_>) -> Result<V, TraceError>,
    ) -> Result<V, TraceError> {
        self.step()?;
        let quiet = self.out.is_none();
        self.reference(name);
        if quiet || self.st.stack.contains(&name) {
            return visit(self.child(None));
        }
        let mut def = Out::default();
        def.push(head);
        self.st.stack.push(name);
        let value = visit(self.child(Some(&mut def)));
        self.st.stack.pop();
        let value = value?;
        def.push(tail);
        self.st.define(name, def)?;
        Ok(value)
    }
}

macro_rules! primitive {
    ($method:ident, $visit:ident, $name:literal, $value:expr) => {
        fn $method<V: Visitor<'static>>(mut self, visitor: V) -> Result<V::Value, TraceError> {
            self.step()?;
            self.write($name);
            visitor.$visit($value)
        }
    };
}

impl<'s> Deserializer<'static> for Tracer<'s> {
    type Error = TraceError;

    fn deserialize_any<V: Visitor<'static>>(self, _: V) -> Result<V::Value, TraceError> {
        Err(TraceError::new("deserialize_any is not supported".into()))
    }

    primitive!(deserialize_bool, visit_bool, "bool", false);
    primitive!(deserialize_i8, visit_i8, "i8", 1);
    primitive!(deserialize_i16, visit_i16, "i16", 1);
    primitive!(deserialize_i32, visit_i32, "i32", 1);
    primitive!(deserialize_i64, visit_i64, "i64", 1);
    primitive!(deserialize_i128, visit_i128, "i128", 1);
    primitive!(deserialize_u8, visit_u8, "u8", 1);
    primitive!(deserialize_u16, visit_u16, "u16", 1);
    primitive!(deserialize_u32, visit_u32, "u32", 1);
    primitive!(deserialize_u64, visit_u64, "u64", 1);
    primitive!(deserialize_u128, visit_u128, "u128", 1);
    primitive!(deserialize_f32, visit_f32, "f32", 0.0);
    primitive!(deserialize_f64, visit_f64, "f64", 0.0);
    primitive!(deserialize_char, visit_char, "char", 'a');
    primitive!(deserialize_str, visit_borrowed_str, "str", "");
    primitive!(deserialize_string, visit_borrowed_str, "str", "");
    primitive!(deserialize_bytes, visit_borrowed_bytes, "bytes", &[]);
    primitive!(deserialize_byte_buf, visit_borrowed_bytes, "bytes", &[]);

    fn deserialize_option<V: Visitor<'static>>(
        mut self,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.step()?;
        match self.out.take() {
            None => visitor.visit_none(),
            Some(out) => {
                out.push("option<");
                let value = visitor.visit_some(Tracer {
                    st: self.st,
                    out: Some(&mut *out),
                    depth: self.depth + 1,
                })?;
                out.push(">");
                Ok(value)
            }
        }
    }

    fn deserialize_unit<V: Visitor<'static>>(mut self, visitor: V) -> Result<V::Value, TraceError> {
        self.step()?;
        self.write("unit");
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'static>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let head = format!("unit_struct {name}");
        self.container(name, &head, "", |_| visitor.visit_unit())
    }

    fn deserialize_newtype_struct<V: Visitor<'static>>(
        mut self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        if let Some(kind) = name.strip_prefix(FD_MARK) {
            self.step()?;
            self.write(&format!("fd<{kind}>"));
            let quiet = self.child(None);
            return visitor.visit_newtype_struct(quiet);
        }
        let head = format!("newtype {name}(");
        self.container(name, &head, ")", |t| visitor.visit_newtype_struct(t))
    }

    fn deserialize_seq<V: Visitor<'static>>(mut self, visitor: V) -> Result<V::Value, TraceError> {
        self.step()?;
        let len = usize::from(self.out.is_some());
        self.write("seq<");
        let value = visitor.visit_seq(Elements::new(&mut self, len, None))?;
        self.write(">");
        Ok(value)
    }

    fn deserialize_tuple<V: Visitor<'static>>(
        mut self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.step()?;
        self.write("tuple<");
        let value = visitor.visit_seq(Elements::new(&mut self, len, None))?;
        self.write(">");
        Ok(value)
    }

    fn deserialize_tuple_struct<V: Visitor<'static>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let head = format!("tuple_struct {name}(");
        self.container(name, &head, ")", |mut t| {
            visitor.visit_seq(Elements::new(&mut t, len, None))
        })
    }

    fn deserialize_map<V: Visitor<'static>>(mut self, visitor: V) -> Result<V::Value, TraceError> {
        self.step()?;
        let len = usize::from(self.out.is_some());
        self.write("map<");
        let value = visitor.visit_map(Elements::new(&mut self, len * 2, None))?;
        self.write(">");
        Ok(value)
    }

    fn deserialize_struct<V: Visitor<'static>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let head = format!("struct {name}{{");
        self.container(name, &head, "}", |mut t| {
            visitor.visit_seq(Elements::new(&mut t, fields.len(), Some(fields)))
        })
    }

    fn deserialize_enum<V: Visitor<'static>>(
        mut self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.step()?;
        if variants.is_empty() {
            return Err(TraceError::new(format!("enum {name} has no variant")));
        }
        let quiet = self.out.is_none();
        self.reference(name);
        let known = match self.st.defs.entry(name).or_insert_with(|| Def::Enum {
            names: variants,
            variants: vec![None; variants.len()],
        }) {
            Def::Enum {
                names,
                variants: known,
            } if *names == variants => known.clone(),
            _ => return Err(TraceError::new(format!("two different types named {name}"))),
        };
        let free = |i: &usize| !self.st.active.contains(&(name, *i as u32));
        // An untraced variant first; then (unless producing a value quietly) one below which
        // untraced variants remain; then one known to end without recursion; then any.
        let explore = (0..variants.len()).find(|i| known[*i].is_none() && free(i));
        let descend = explore.or_else(|| {
            (!quiet)
                .then(|| {
                    (0..variants.len()).find(|i| {
                        free(i)
                            && known[*i]
                                .as_ref()
                                .is_some_and(|v| self.st.out_needs_work(v))
                    })
                })
                .flatten()
        });
        let (index, record) = match descend {
            Some(i) => (i, true),
            None => {
                let ends = (0..variants.len()).find(|i| {
                    free(i)
                        && known[*i].as_ref().is_some_and(|v| {
                            v.refs.iter().all(|r| !self.st.stack.contains(r))
                                && v.refs.iter().all(|r| *r != name)
                        })
                });
                match ends.or_else(|| (0..variants.len()).find(free)) {
                    Some(i) => (i, false),
                    None => {
                        return Err(TraceError::new(format!(
                            "recursive enum {name} has no finite value"
                        )));
                    }
                }
            }
        };
        if explore.is_some() {
            self.st.progress = true;
        }
        let mut shape = Out::default();
        shape.push(variants[index]);
        self.st.active.insert((name, index as u32));
        let depth = self.depth + 1;
        let value = visitor.visit_enum(Variant {
            st: &mut *self.st,
            out: record.then_some(&mut shape),
            index: index as u32,
            depth,
        });
        self.st.active.remove(&(name, index as u32));
        let value = value?;
        if record {
            if let Some(Def::Enum {
                variants: known, ..
            }) = self.st.defs.get_mut(name)
            {
                match &known[index] {
                    None => known[index] = Some(shape),
                    Some(k) if *k == shape => {}
                    Some(_) => {
                        return Err(TraceError::new(format!("two different types named {name}")));
                    }
                }
            }
        }
        Ok(value)
    }

    fn deserialize_identifier<V: Visitor<'static>>(self, _: V) -> Result<V::Value, TraceError> {
        Err(TraceError::new(
            "deserialize_identifier is not supported".into(),
        ))
    }

    fn deserialize_ignored_any<V: Visitor<'static>>(self, _: V) -> Result<V::Value, TraceError> {
        Err(TraceError::new(
            "deserialize_ignored_any is not supported".into(),
        ))
    }

    fn is_human_readable(&self) -> bool {
        // As bincode: types with a compact binary form (IP addresses, ...) choose it.
        false
    }
}

/// The elements of a sequence, tuple, struct (with field names) or map (key, value, ...).
struct Elements<'t, 's> {
    tracer: &'t mut Tracer<'s>,
    remaining: usize,
    fields: Option<&'static [&'static str]>,
    index: usize,
}

impl<'t, 's> Elements<'t, 's> {
    fn new(
        tracer: &'t mut Tracer<'s>,
        len: usize,
        fields: Option<&'static [&'static str]>,
    ) -> Self {
        Elements {
            tracer,
            remaining: len,
            fields,
            index: 0,
        }
    }

    fn next<T: DeserializeSeed<'static>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TraceError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        if self.index > 0 {
            self.tracer.write(",");
        }
        if let Some(name) = self.fields.and_then(|f| f.get(self.index)) {
            self.tracer.write(name);
            self.tracer.write(":");
        }
        self.index += 1;
        let t = &mut *self.tracer;
        let depth = t.depth + 1;
        seed.deserialize(Tracer {
            st: &mut *t.st,
            out: t.out.as_deref_mut(),
            depth,
        })
        .map(Some)
    }
}

impl<'t, 's> SeqAccess<'static> for Elements<'t, 's> {
    type Error = TraceError;
    fn next_element_seed<T: DeserializeSeed<'static>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TraceError> {
        self.next(seed)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.remaining)
    }
}

impl<'t, 's> MapAccess<'static> for Elements<'t, 's> {
    type Error = TraceError;
    fn next_key_seed<K: DeserializeSeed<'static>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        self.next(seed)
    }
    fn next_value_seed<V: DeserializeSeed<'static>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, TraceError> {
        self.next(seed)?
            .ok_or_else(|| TraceError::new("map value without key".into()))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.remaining / 2)
    }
}

/// The variant being traced: its index goes to the enum's visitor like bincode's `u32`.
struct Variant<'s> {
    st: &'s mut State,
    out: Option<&'s mut Out>,
    index: u32,
    depth: usize,
}

impl<'s> Variant<'s> {
    fn tracer(&mut self) -> Tracer<'_> {
        Tracer {
            st: &mut *self.st,
            out: self.out.as_deref_mut(),
            depth: self.depth,
        }
    }
}

impl<'s> EnumAccess<'static> for Variant<'s> {
    type Error = TraceError;
    type Variant = Self;
    fn variant_seed<S: DeserializeSeed<'static>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self), TraceError> {
        let index: U32Deserializer<TraceError> = self.index.into_deserializer();
        Ok((seed.deserialize(index)?, self))
    }
}

impl<'s> VariantAccess<'static> for Variant<'s> {
    type Error = TraceError;
    fn unit_variant(self) -> Result<(), TraceError> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'static>>(
        mut self,
        seed: T,
    ) -> Result<T::Value, TraceError> {
        let mut t = self.tracer();
        t.write("(");
        let value = seed.deserialize(t.child_same())?;
        t.write(")");
        Ok(value)
    }
    fn tuple_variant<V: Visitor<'static>>(
        mut self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let mut t = self.tracer();
        t.write("(");
        let value = visitor.visit_seq(Elements::new(&mut t, len, None))?;
        t.write(")");
        Ok(value)
    }
    fn struct_variant<V: Visitor<'static>>(
        mut self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let mut t = self.tracer();
        t.write("{");
        let value = visitor.visit_seq(Elements::new(&mut t, fields.len(), Some(fields)))?;
        t.write("}");
        Ok(value)
    }
}

impl<'s> Tracer<'s> {
    /// A tracer for the same position one level down (same output).
    fn child_same(&mut self) -> Tracer<'_> {
        let depth = self.depth + 1;
        Tracer {
            st: &mut *self.st,
            out: self.out.as_deref_mut(),
            depth,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memfile_core::Frozen;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Request {
        id: u64,
        kind: Kind,
        tags: Vec<String>,
        extra: Option<(u8, i32)>,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Kind {
        Ping,
        Put(Inner),
        Get { key: String },
        Pair(u8, bool),
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Inner {
        A,
        B(f64),
    }

    #[test]
    fn nested_enums_are_explored_in_full() {
        assert_eq!(
            shape::<Request>().unwrap(),
            "Request;enum Inner{A,B(f64)};enum Kind{Ping,Put(Inner),Get{key:str},Pair(u8,bool)};\
             struct Request{id:u64,kind:Kind,tags:seq<str>,extra:option<tuple<u8,i32>>}"
        );
    }

    #[test]
    fn primitives_and_collections() {
        assert_eq!(shape::<(u8, String)>().unwrap(), "tuple<u8,str>");
        assert_eq!(shape::<()>().unwrap(), "unit");
        assert_eq!(shape::<[u16; 3]>().unwrap(), "tuple<u16,u16,u16>");
        assert_eq!(
            shape::<BTreeMap<String, Vec<u8>>>().unwrap(),
            "map<str,seq<u8>>"
        );
        assert_eq!(
            shape::<(i8, i16, i32, i64, i128, u128, f32, char, bool)>().unwrap(),
            "tuple<i8,i16,i32,i64,i128,u128,f32,char,bool>"
        );
        assert_eq!(shape::<Box<str>>().unwrap(), "str");
        assert_eq!(shape::<std::num::NonZeroU32>().unwrap(), "u32");
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Tree {
        value: u32,
        children: Vec<Tree>,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum List {
        Cons(u8, Box<List>),
        Nil,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Unit;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Meters(f64);

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Point(i32, i32);

    #[test]
    fn recursive_and_named_types() {
        assert_eq!(
            shape::<Tree>().unwrap(),
            "Tree;struct Tree{value:u32,children:seq<Tree>}"
        );
        assert_eq!(
            shape::<List>().unwrap(),
            "List;enum List{Cons(u8,List),Nil}"
        );
        assert_eq!(
            shape::<(Unit, Meters, Point)>().unwrap(),
            "tuple<Unit,Meters,Point>;newtype Meters(f64);tuple_struct Point(i32,i32);\
             unit_struct Unit"
        );
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Frame {
        number: u64,
        pixels: crate::Fd<Frozen>,
        #[serde(with = "crate::fd")]
        raw: std::os::fd::OwnedFd,
        log: Option<crate::Fd<memfile_core::MemFile>>,
        reply: crate::Sender<u64>,
    }

    #[test]
    fn fd_fields() {
        assert_eq!(
            shape::<Frame>().unwrap(),
            "Frame;struct Frame{number:u64,pixels:fd<frozen>,raw:fd<fd>,\
             log:option<fd<memfile>>,reply:fd<socket>}"
        );
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Wrapper<T> {
        inner: T,
    }

    #[test]
    fn untraceable_types_are_unchecked() {
        // Two different containers named `Wrapper`.
        assert_eq!(shape::<(Wrapper<u8>, Wrapper<String>)>(), None);
        assert_eq!(of::<(Wrapper<u8>, Wrapper<String>)>(), UNCHECKED);
        // The same instantiation twice is fine.
        assert!(shape::<(Wrapper<u8>, Wrapper<u8>)>().is_some());
    }

    macro_rules! doubling {
        ($leaf:ident; $($name:ident $next:ident),*) => {
            #[derive(Deserialize)]
            #[allow(dead_code)]
            struct $leaf(u8);
            $(
                #[derive(Deserialize)]
                #[allow(dead_code)]
                struct $name(Box<$next>, Box<$next>);
            )*
        };
    }
    // D21's shape has 2^21 `u8`s (every occurrence of a container is traced, to catch two
    // types with one name): the trace stops at its budget.
    doubling!(D0; D1 D0, D2 D1, D3 D2, D4 D3, D5 D4, D6 D5, D7 D6, D8 D7, D9 D8, D10 D9,
        D11 D10, D12 D11, D13 D12, D14 D13, D15 D14, D16 D15, D17 D16, D18 D17, D19 D18,
        D20 D19, D21 D20);

    #[test]
    fn huge_types_are_unchecked_not_hung() {
        assert!(shape::<D10>().is_some());
        assert_eq!(shape::<D21>(), None);
    }

    #[test]
    fn fnv1a() {
        // Reference values of 32-bit FNV-1a.
        assert_eq!(hash(b""), 0x811c_9dc5);
        assert_eq!(hash(b"a"), 0xe40c_292c);
        assert_eq!(hash(b"foobar"), 0xbf9c_f968);
        assert_eq!(of::<(u8, String)>(), hash(b"tuple<u8,str>"));
        assert_eq!(known_type(of::<Request>()), Some(type_name::<Request>()));
    }
}
