//! [`FrozenReader`]: a [`Frozen`] through `std::io` (`Read`, `BufRead`, `Seek`), written out
//! without a copy, and handed to a child process as its stdin.
//!
//! No `unsafe` here: everything reads the verified `&[u8]` of the mapping.

use std::fmt;
use std::io::{self, BufRead, IoSliceMut, Read, Seek, SeekFrom, Write};
#[cfg(any(target_os = "linux", target_os = "android"))]
use std::process::Stdio;

use crate::Frozen;

/// A cursor over a [`Frozen`]: [`Read`], [`BufRead`] and [`Seek`], straight from the
/// mapping.
///
/// `read` is one `memcpy` from the mapped pages into the caller's buffer, and
/// [`fill_buf`](BufRead::fill_buf) returns the rest of the mapping itself, so a consumer of
/// `BufRead` (a parser, `read_until`, `lines`) sees the bytes without any copy. Make one with
/// [`Frozen::reader`] (it shares the mapping: a clone of the `Frozen` is an `Arc` increment)
/// or [`FrozenReader::new`].
///
/// The position is the reader's own, like [`io::Cursor`]'s: it is not the file offset of the
/// descriptor, which no reader here moves. Seeking past the end is allowed; reads there
/// return 0 bytes.
///
/// ```
/// use memfile::Frozen;
/// use std::io::{BufRead, Read, Seek, SeekFrom};
///
/// let frozen = Frozen::from_bytes("lines", b"first\nsecond\n")?;
/// let mut reader = frozen.reader();
/// let lines: Vec<String> = reader.by_ref().lines().collect::<Result<_, _>>()?;
/// assert_eq!(lines, ["first", "second"]);
///
/// reader.seek(SeekFrom::Start(6))?;
/// let mut word = [0; 6];
/// reader.read_exact(&mut word)?;
/// assert_eq!(&word, b"second");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct FrozenReader {
    frozen: Frozen,
    pos: u64,
}

impl FrozenReader {
    /// A reader at position 0 of `frozen`.
    pub fn new(frozen: Frozen) -> FrozenReader {
        FrozenReader { frozen, pos: 0 }
    }

    /// The `Frozen` read from.
    pub fn get_ref(&self) -> &Frozen {
        &self.frozen
    }

    /// Gives the `Frozen` back.
    pub fn into_inner(self) -> Frozen {
        self.frozen
    }

    /// The position, in bytes from the start (may be past the end after a seek).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Sets the position, like [`io::Cursor::set_position`]; past the end is allowed.
    pub fn set_position(&mut self, pos: u64) {
        self.pos = pos;
    }

    /// The bytes from the position to the end (empty at or past the end), without moving.
    ///
    /// # Panics
    ///
    /// When the buffer is not mapped yet and mapping it fails, as [`Frozen::as_slice`];
    /// the `Read`/`BufRead` methods return that failure as an error instead.
    pub fn remaining_slice(&self) -> &[u8] {
        rest_from(self.frozen.as_slice(), self.pos)
    }

    /// [`remaining_slice`](Self::remaining_slice), failing instead of panicking when the
    /// lazy mapping cannot be made (`ENOMEM`, ...).
    fn try_remaining(&self) -> io::Result<&[u8]> {
        Ok(rest_from(self.frozen.try_as_slice()?, self.pos))
    }

    /// Moves the position forward by `n` bytes, which the caller has just taken from
    /// [`remaining_slice`](Self::remaining_slice) (so `n` fits: no overflow).
    fn advance(&mut self, n: usize) {
        self.pos += n as u64;
    }
}

/// The bytes of `bytes` from `pos` on (empty at or past the end).
fn rest_from(bytes: &[u8], pos: u64) -> &[u8] {
    let start = usize::try_from(pos).map_or(bytes.len(), |pos| pos.min(bytes.len()));
    &bytes[start..]
}

impl From<Frozen> for FrozenReader {
    /// [`FrozenReader::new`].
    fn from(frozen: Frozen) -> FrozenReader {
        FrozenReader::new(frozen)
    }
}

impl fmt::Debug for FrozenReader {
    /// Shows the `Frozen` (never its bytes) and the position.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrozenReader")
            .field("frozen", &self.frozen)
            .field("pos", &self.pos)
            .finish()
    }
}

impl Read for FrozenReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = self.try_remaining()?;
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.advance(n);
        Ok(n)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let mut total = 0;
        for buf in bufs {
            let n = self.read(buf)?;
            total += n;
            if n < buf.len() {
                break;
            }
        }
        Ok(total)
    }

    /// Fills `buf` or, when fewer bytes remain, copies them all, moves to the end and fails
    /// with `UnexpectedEof` (as `std`'s readers do).
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let n = self.read(buf)?;
        if n < buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} bytes wanted at offset {} of a frozen file of {} bytes",
                    buf.len(),
                    self.pos - n as u64,
                    self.frozen.len()
                ),
            ));
        }
        Ok(())
    }

    /// Appends the rest in one copy, reserving exactly its length first (an allocation
    /// failure is an `OutOfMemory` error, not an abort).
    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let rest = self.try_remaining()?;
        let n = rest.len();
        buf.try_reserve_exact(n)
            .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
        buf.extend_from_slice(rest);
        self.advance(n);
        Ok(n)
    }

    /// Appends the rest if it is valid UTF-8; otherwise fails with `InvalidData` and
    /// neither `buf` nor the position changes.
    fn read_to_string(&mut self, buf: &mut String) -> io::Result<usize> {
        let rest = std::str::from_utf8(self.try_remaining()?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let n = rest.len();
        buf.try_reserve_exact(n)
            .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
        buf.push_str(rest);
        self.advance(n);
        Ok(n)
    }
}

impl BufRead for FrozenReader {
    /// The rest of the mapping itself: the whole file is the buffer, nothing is copied.
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.try_remaining()
    }

    /// Moves forward by `amt` bytes, at most to the end (not at all if the buffer cannot be
    /// mapped: then `fill_buf` failed and returned nothing to consume).
    fn consume(&mut self, amt: usize) {
        let n = amt.min(self.try_remaining().map_or(0, <[u8]>::len));
        self.advance(n);
    }
}

impl Seek for FrozenReader {
    /// Like [`io::Cursor`]: `End` counts from the length of the file; a position before 0
    /// (or beyond `u64::MAX`) is an `InvalidInput` error and leaves the position as it was.
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let (base, offset) = match to {
            SeekFrom::Start(pos) => {
                self.pos = pos;
                return Ok(pos);
            }
            SeekFrom::End(offset) => (self.frozen.len() as u64, offset),
            SeekFrom::Current(offset) => (self.pos, offset),
        };
        match base.checked_add_signed(offset) {
            Some(pos) => {
                self.pos = pos;
                Ok(pos)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot seek by {offset} from {base}: before the start or overflowing"),
            )),
        }
    }

    fn stream_position(&mut self) -> io::Result<u64> {
        Ok(self.pos)
    }
}

impl Frozen {
    /// A [`FrozenReader`] at position 0: `Read`, `BufRead` and `Seek` over the mapping.
    ///
    /// Cheap: it shares this `Frozen`'s mapping (an `Arc` clone), and keeps it alive.
    /// Unlike [`Frozen::open_reader`] it opens no descriptor and makes no system call.
    pub fn reader(&self) -> FrozenReader {
        FrozenReader::new(self.clone())
    }

    /// Writes all the bytes to `w` with `write_all`, straight from the mapping: no
    /// intermediate buffer.
    ///
    /// This is the copy-free way to send a frozen file into a socket, a pipe or a file: the
    /// kernel copies from the mapped pages. `std::io::copy(&mut frozen.reader(), w)` works
    /// too, but `io::copy` can only specialize for `std`'s own types, so for writers other
    /// than `Vec<u8>` and `BufWriter` it bounces every 8 KiB through a stack buffer;
    /// `std::io::copy(&mut &frozen[..], w)` (a `&[u8]`, which `std` does specialize) writes
    /// straight from the mapping, like this method. For copies that stay inside the kernel
    /// (`copy_file_range`, `sendfile`, `splice`), pass [`Frozen::open_reader`] to
    /// `std::io::copy`, which uses them on Linux when the writer is a file, pipe or socket.
    ///
    /// # Errors
    ///
    /// Any error of `w.write_all`; some bytes may have been written.
    ///
    /// ```
    /// use memfile::Frozen;
    ///
    /// let frozen = Frozen::from_bytes("out", b"no bounce buffer")?;
    /// let mut out = Vec::new();
    /// frozen.write_to(&mut out)?;
    /// assert_eq!(out, b"no bounce buffer");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn write_to<W: Write + ?Sized>(&self, w: &mut W) -> io::Result<()> {
        w.write_all(self.try_as_slice()?)
    }

    /// The file as a child process's stdin (or any [`Stdio`]), read from offset 0.
    ///
    /// The child gets a new read-only descriptor of the file ([`Frozen::open_reader`]: a
    /// reopen through `/proc/self/fd`) with its own file offset, so its reads neither move
    /// nor depend on the offset of this `Frozen`'s descriptor or of any other child's. (A
    /// `dup`ed descriptor, which is what `Stdio::from(File)` passes on, shares the offset
    /// with every copy.) The child can read the whole file, and it cannot change it: the
    /// seals hold for it too.
    ///
    /// # Errors
    ///
    /// As [`Frozen::open_reader`]: `/proc` not mounted, or `EMFILE`.
    ///
    /// Linux and Android only, as [`Frozen::open_reader`].
    ///
    /// ```
    /// use memfile::Frozen;
    /// use std::process::Command;
    ///
    /// let frozen = Frozen::from_bytes("input", b"one\ntwo\nthree\n")?;
    /// let out = Command::new("wc").arg("-l").stdin(frozen.to_stdio()?).output()?;
    /// assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn to_stdio(&self) -> io::Result<Stdio> {
        Ok(Stdio::from(self.open_reader()?))
    }
}
