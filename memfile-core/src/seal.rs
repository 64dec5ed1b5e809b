//! [`Seal`] and [`Seals`]: the file seals of `fcntl(F_ADD_SEALS)` / `fcntl(F_GET_SEALS)`.
//!
//! See [`fcntl(2)`](https://man7.org/linux/man-pages/man2/fcntl.2.html), "File Sealing".

use std::fmt;
use std::ops::{
    BitAnd, BitAndAssign, BitOr, BitOrAssign, BitXor, BitXorAssign, Not, Sub, SubAssign,
};

/// `F_SEAL_EXEC` (Linux 6.3+). Not every `libc` release names it, so it is spelled out here.
#[cfg(any(target_os = "linux", target_os = "android"))]
const F_SEAL_EXEC: u32 = 0x0020;

/// The bits of every seal this platform knows ([`Seal::ALL`] or-ed together), as a constant
/// so that [`Seals::all`] and the functions built on it can be `const fn`.
const ALL_BITS: u32 = {
    let common =
        (libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE) as u32;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let common = common | libc::F_SEAL_FUTURE_WRITE as u32 | F_SEAL_EXEC;
    common
};

/// A single file seal.
///
/// Seals are added with [`MemFile::add_seal`](crate::MemFile::add_seal) and can never be
/// removed. They belong to the file (the inode), so every descriptor of the file sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
#[non_exhaustive]
pub enum Seal {
    /// `F_SEAL_SEAL`: no more seals can be added.
    Seal = libc::F_SEAL_SEAL as u32,
    /// `F_SEAL_SHRINK`: the file can not shrink.
    Shrink = libc::F_SEAL_SHRINK as u32,
    /// `F_SEAL_GROW`: the file can not grow.
    Grow = libc::F_SEAL_GROW as u32,
    /// `F_SEAL_WRITE`: the contents can not change, through `write()` or any shared mapping.
    ///
    /// Adding it fails with `EBUSY` while a writable shared mapping of the file exists.
    Write = libc::F_SEAL_WRITE as u32,
    /// `F_SEAL_FUTURE_WRITE` (Linux 5.1+): no *new* writes. Mappings that were already
    /// writable keep writing, so this seal does **not** make the contents immutable.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    FutureWrite = libc::F_SEAL_FUTURE_WRITE as u32,
    /// `F_SEAL_EXEC` (Linux 6.3+): the execute permission bits can not change.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Exec = F_SEAL_EXEC,
}

impl Seal {
    /// Every seal this platform knows, in bit order.
    pub const ALL: &'static [Seal] = &[
        Seal::Seal,
        Seal::Shrink,
        Seal::Grow,
        Seal::Write,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Seal::FutureWrite,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Seal::Exec,
    ];

    /// The seal's bit as `fcntl` uses it.
    pub const fn bits(self) -> u32 {
        self as u32
    }

    /// The seal's name as used in `Display` (`"Write"`, `"FutureWrite"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Seal::Seal => "Seal",
            Seal::Shrink => "Shrink",
            Seal::Grow => "Grow",
            Seal::Write => "Write",
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Seal::FutureWrite => "FutureWrite",
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Seal::Exec => "Exec",
        }
    }

    fn from_bit(bit: u32) -> Option<Seal> {
        Seal::ALL.iter().copied().find(|s| s.bits() == bit)
    }
}

impl fmt::Display for Seal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`Seal`]s.
///
/// Built with `|` from seals (`Seal::Write | Seal::Shrink`), or from an iterator. A set
/// read from the kernel by [`MemFile::get_seals`](crate::MemFile::get_seals) keeps every bit
/// the kernel reported, also bits of seals newer than this crate; such bits show up as a hex
/// number in `Debug`/`Display` and are not yielded by [`Seals::iter`].
///
/// `!` complements within the known seals: `!Seals::empty() == Seals::all()`.
///
/// ```
/// use memfile::{Seal, Seals};
/// let s = Seal::Write | Seal::Shrink;
/// assert!(s.contains(Seal::Write));
/// assert!(!s.contains(Seal::Write | Seal::Grow));
/// assert_eq!(s.to_string(), "Shrink | Write");
/// assert_eq!(s - Seal::Write, Seals::from(Seal::Shrink));
/// ```
///
/// Sets order by their raw bits (`Ord`), so they can be keys of a `BTreeMap`/`BTreeSet`;
/// the order has no meaning beyond being total and stable.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seals {
    bits: u32,
}

impl Seals {
    /// The empty set.
    pub const fn empty() -> Seals {
        Seals { bits: 0 }
    }

    /// Every seal this platform knows.
    ///
    /// On Linux this includes `Exec` (6.3+) and `FutureWrite` (5.1+);
    /// [`MemFile::add_seals`](crate::MemFile::add_seals) drops `Exec` by itself on a kernel
    /// without it, so `add_seals(Seals::all())` works on every supported kernel.
    ///
    /// ```
    /// use memfile::{Seal, Seals};
    /// const ALL: Seals = Seals::all();
    /// assert!(ALL.contains(Seal::Write | Seal::Seal));
    /// ```
    pub const fn all() -> Seals {
        Seals { bits: ALL_BITS }
    }

    /// Whether this set holds every known seal.
    pub const fn is_all(self) -> bool {
        self.bits & ALL_BITS == ALL_BITS
    }

    /// Whether the set is empty (no bits at all, known or not).
    pub const fn is_empty(self) -> bool {
        self.bits == 0
    }

    /// The raw bits, including any unknown bits the kernel reported.
    pub const fn bits(self) -> u32 {
        self.bits
    }

    /// A set from raw bits, dropping bits that are not known seals.
    pub const fn from_bits_truncate(bits: u32) -> Seals {
        Seals {
            bits: bits & ALL_BITS,
        }
    }

    /// A set from raw bits, keeping unknown bits (as [`MemFile::get_seals`](crate::MemFile::get_seals) does).
    pub const fn from_bits_retain(bits: u32) -> Seals {
        Seals { bits }
    }

    /// A set from raw bits, or `None` if any bit is not a known seal.
    pub const fn from_bits(bits: u32) -> Option<Seals> {
        if bits & !ALL_BITS == 0 {
            Some(Seals { bits })
        } else {
            None
        }
    }

    /// Bits that are set but name no seal this crate knows.
    pub const fn unknown_bits(self) -> u32 {
        self.bits & !ALL_BITS
    }

    /// Whether every seal of `other` is in `self`.
    pub fn contains(self, other: impl Into<Seals>) -> bool {
        let other = other.into();
        self.bits & other.bits == other.bits
    }

    /// Whether `self` and `other` share a seal.
    pub fn intersects(self, other: impl Into<Seals>) -> bool {
        self.bits & other.into().bits != 0
    }

    /// Adds the seals of `other`.
    pub fn insert(&mut self, other: impl Into<Seals>) {
        self.bits |= other.into().bits;
    }

    /// Removes the seals of `other`.
    pub fn remove(&mut self, other: impl Into<Seals>) {
        self.bits &= !other.into().bits;
    }

    /// The number of known seals in the set.
    pub const fn len(self) -> usize {
        (self.bits & ALL_BITS).count_ones() as usize
    }

    /// The known seals in the set, in bit order.
    pub fn iter(self) -> SealsIter {
        SealsIter {
            bits: self.bits & ALL_BITS,
        }
    }
}

impl From<Seal> for Seals {
    fn from(seal: Seal) -> Seals {
        Seals { bits: seal.bits() }
    }
}

impl fmt::Debug for Seals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seals({self})")
    }
}

impl fmt::Display for Seals {
    /// `Shrink | Write`, `(none)` for the empty set, unknown bits as hex (`Write | 0x100`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.bits == 0 {
            return f.write_str("(none)");
        }
        let mut first = true;
        for seal in self.iter() {
            if !first {
                f.write_str(" | ")?;
            }
            first = false;
            f.write_str(seal.name())?;
        }
        let unknown = self.unknown_bits();
        if unknown != 0 {
            if !first {
                f.write_str(" | ")?;
            }
            write!(f, "{unknown:#x}")?;
        }
        Ok(())
    }
}

/// Iterator over the seals of a [`Seals`], from [`Seals::iter`] or `for seal in &seals`.
#[derive(Debug, Clone)]
pub struct SealsIter {
    bits: u32,
}

impl Iterator for SealsIter {
    type Item = Seal;

    fn next(&mut self) -> Option<Seal> {
        while self.bits != 0 {
            let bit = self.bits & self.bits.wrapping_neg();
            self.bits &= !bit;
            if let Some(seal) = Seal::from_bit(bit) {
                return Some(seal);
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.bits.count_ones() as usize;
        (n, Some(n))
    }
}

impl ExactSizeIterator for SealsIter {}
impl std::iter::FusedIterator for SealsIter {}

impl IntoIterator for Seals {
    type Item = Seal;
    type IntoIter = SealsIter;
    fn into_iter(self) -> SealsIter {
        self.iter()
    }
}

impl IntoIterator for &Seals {
    type Item = Seal;
    type IntoIter = SealsIter;
    fn into_iter(self) -> SealsIter {
        self.iter()
    }
}

/// The name the `memfile` crate gives [`SealsIter`], kept so code written against it
/// compiles unchanged.
pub type SealsIterator = SealsIter;

impl FromIterator<Seal> for Seals {
    fn from_iter<I: IntoIterator<Item = Seal>>(iter: I) -> Seals {
        let mut s = Seals::empty();
        s.extend(iter);
        s
    }
}

impl FromIterator<Seals> for Seals {
    fn from_iter<I: IntoIterator<Item = Seals>>(iter: I) -> Seals {
        let mut s = Seals::empty();
        s.extend(iter);
        s
    }
}

impl Extend<Seal> for Seals {
    fn extend<I: IntoIterator<Item = Seal>>(&mut self, iter: I) {
        for seal in iter {
            self.bits |= seal.bits();
        }
    }
}

impl Extend<Seals> for Seals {
    fn extend<I: IntoIterator<Item = Seals>>(&mut self, iter: I) {
        for seals in iter {
            self.bits |= seals.bits;
        }
    }
}

impl Not for Seals {
    type Output = Seals;
    fn not(self) -> Seals {
        Seals {
            bits: !self.bits & ALL_BITS,
        }
    }
}

impl Not for Seal {
    type Output = Seals;
    fn not(self) -> Seals {
        !Seals::from(self)
    }
}

macro_rules! set_ops {
    ($($tr:ident $m:ident $atr:ident $am:ident |$a:ident, $b:ident| $e:expr;)*) => {$(
        impl<T: Into<Seals>> $tr<T> for Seals {
            type Output = Seals;
            fn $m(self, rhs: T) -> Seals {
                let ($a, $b) = (self.bits, rhs.into().bits);
                Seals { bits: $e }
            }
        }
        impl<T: Into<Seals>> $tr<T> for Seal {
            type Output = Seals;
            fn $m(self, rhs: T) -> Seals {
                $tr::$m(Seals::from(self), rhs)
            }
        }
        impl<T: Into<Seals>> $atr<T> for Seals {
            fn $am(&mut self, rhs: T) {
                *self = $tr::$m(*self, rhs);
            }
        }
    )*};
}

set_ops! {
    BitOr bitor BitOrAssign bitor_assign |a, b| a | b;
    BitAnd bitand BitAndAssign bitand_assign |a, b| a & b;
    BitXor bitxor BitXorAssign bitxor_assign |a, b| a ^ b;
    Sub sub SubAssign sub_assign |a, b| a & !b;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_stays_within_known_seals() {
        assert_eq!(!Seals::empty(), Seals::all());
        assert_eq!(!Seals::all(), Seals::empty());
        assert!(Seals::all().is_all());
        assert_eq!(Seals::all().len(), Seal::ALL.len());
    }

    #[test]
    fn unknown_bits_are_kept_and_shown() {
        let s = Seals::from_bits_retain(Seal::Write.bits() | 0x1000);
        assert_eq!(s.unknown_bits(), 0x1000);
        assert_eq!(s.len(), 1);
        assert_eq!(s.to_string(), "Write | 0x1000");
        assert_eq!(Seals::from_bits(0x1000), None);
        assert_eq!(
            Seals::from_bits_truncate(s.bits()),
            Seals::from(Seal::Write)
        );
    }

    #[test]
    fn set_operations() {
        let ws = Seal::Write | Seal::Shrink;
        assert_eq!(ws & Seal::Write, Seals::from(Seal::Write));
        assert_eq!(ws ^ Seal::Write, Seals::from(Seal::Shrink));
        assert_eq!(ws - Seal::Shrink, Seals::from(Seal::Write));
        assert!(ws.intersects(Seal::Shrink | Seal::Grow));
        assert!(!ws.intersects(Seal::Grow));
        let collected: Seals = [Seal::Shrink, Seal::Write].into_iter().collect();
        assert_eq!(collected, ws);
        assert_eq!(
            ws.iter().collect::<Vec<_>>(),
            vec![Seal::Shrink, Seal::Write]
        );
        assert_eq!(format!("{:?}", Seals::empty()), "Seals((none))");
    }

    #[test]
    fn all_bits_matches_seal_list() {
        let from_list: Seals = Seal::ALL.iter().copied().collect();
        assert_eq!(from_list, Seals::all());
        assert_eq!(Seals::all().len(), Seal::ALL.len());
    }

    #[test]
    fn const_functions_work_in_const_context() {
        const ALL: Seals = Seals::all();
        const TRUNC: Seals = Seals::from_bits_truncate(0xffff_ffff);
        const LEN: usize = ALL.len();
        const FROM: Option<Seals> = Seals::from_bits(0x1000);
        const { assert!(ALL.is_all() && !Seals::empty().is_all()) };
        assert_eq!(TRUNC, ALL);
        assert_eq!(LEN, Seal::ALL.len());
        assert_eq!(FROM, None);
        assert!(!Seals::from_bits_retain(Seal::Write.bits()).is_all());
    }

    #[test]
    fn seals_are_ordered_and_iterable_by_reference() {
        use std::collections::BTreeSet;
        let set: BTreeSet<Seals> = [
            Seal::Write | Seal::Shrink,
            Seals::empty(),
            Seals::from(Seal::Seal),
            Seals::empty(),
        ]
        .into_iter()
        .collect();
        assert_eq!(set.len(), 3);
        assert_eq!(set.first(), Some(&Seals::empty()));
        assert!(Seals::from(Seal::Seal) < Seals::from(Seal::Shrink));

        let seals = Seal::Grow | Seal::Seal;
        let mut seen = Vec::new();
        for s in &seals {
            seen.push(s);
        }
        assert_eq!(seen, vec![Seal::Seal, Seal::Grow]);
        let it: SealsIterator = (&seals).into_iter();
        assert_eq!(it.len(), 2);
    }
}
