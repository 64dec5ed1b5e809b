//! `Frozen` in the ecosystem: `std::io` (`FrozenReader`, `write_to`), a child's stdin
//! (`Frozen::to_stdio`, and the offset semantics of `MemFile` as `Stdio`), and `bytes::Bytes`
//! (feature `bytes`).

use std::io::{self, BufRead, IoSliceMut, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use memfile_core::{Frozen, FrozenReader, MemFile};

/// Bytes that differ at every offset of a page, so a misplaced copy shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[cfg(feature = "bytes")]
/// A name no other test (or process) uses, to find the file in `/proc/self`.
fn unique_name(what: &str) -> String {
    format!("ecosystem-{what}-{}", std::process::id())
}

// --- FrozenReader: Read ---

#[test]
fn read_in_small_chunks_returns_every_byte_in_order() {
    let data = pattern(10_000);
    let frozen = Frozen::from_bytes("chunks", &data).unwrap();
    let mut reader = frozen.reader();
    let mut out = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out, data);
    assert_eq!(reader.position(), 10_000);
    assert_eq!(reader.read(&mut buf).unwrap(), 0, "EOF stays EOF");
}

#[test]
fn read_vectored_fills_buffers_in_order_and_stops_at_the_end() {
    let frozen = Frozen::from_bytes("vectored", b"abcdefgh").unwrap();
    let mut reader = frozen.reader();
    let (mut a, mut b, mut c) = ([0u8; 3], [0u8; 3], [0u8; 3]);
    let mut bufs = [
        IoSliceMut::new(&mut a),
        IoSliceMut::new(&mut b),
        IoSliceMut::new(&mut c),
    ];
    assert_eq!(reader.read_vectored(&mut bufs).unwrap(), 8);
    assert_eq!((&a, &b, &c[..2]), (b"abc", b"def", &b"gh"[..]));
    assert_eq!(reader.position(), 8);
}

#[test]
fn read_exact_short_is_unexpected_eof_and_moves_to_the_end() {
    let frozen = Frozen::from_bytes("exact", b"12345").unwrap();
    let mut reader = frozen.reader();
    let mut two = [0u8; 2];
    reader.read_exact(&mut two).unwrap();
    assert_eq!(&two, b"12");
    let mut five = [0u8; 5];
    let err = reader.read_exact(&mut five).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    let msg = err.to_string();
    assert!(msg.contains("5 bytes wanted at offset 2"), "{msg}");
    assert!(msg.contains("of 5 bytes"), "{msg}");
    assert_eq!(reader.position(), 5);
}

#[test]
fn read_to_end_appends_the_rest() {
    let frozen = Frozen::from_bytes("to-end", b"0123456789").unwrap();
    let mut reader = frozen.reader();
    reader.set_position(4);
    let mut out = b"prefix:".to_vec();
    assert_eq!(reader.read_to_end(&mut out).unwrap(), 6);
    assert_eq!(out, b"prefix:456789");
    assert_eq!(reader.read_to_end(&mut out).unwrap(), 0);
}

#[test]
fn read_to_string_rejects_invalid_utf8_without_consuming() {
    let frozen = Frozen::from_bytes("utf8", b"ok \xff\xfe").unwrap();
    let mut reader = frozen.reader();
    let mut text = String::from("kept");
    let err = reader.read_to_string(&mut text).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(text, "kept");
    assert_eq!(reader.position(), 0);

    let good = Frozen::from_bytes("utf8-good", "grüße".as_bytes()).unwrap();
    let mut text = String::new();
    assert_eq!(good.reader().read_to_string(&mut text).unwrap(), 7);
    assert_eq!(text, "grüße");
}

// --- FrozenReader: BufRead ---

#[test]
fn fill_buf_is_the_mapping_itself() {
    let frozen = Frozen::from_bytes("fill-buf", &pattern(5000)).unwrap();
    let mut reader = frozen.reader();
    let buf = reader.fill_buf().unwrap();
    assert_eq!(buf.as_ptr(), frozen.as_ptr(), "fill_buf must not copy");
    assert_eq!(buf.len(), 5000);
    reader.consume(1000);
    let buf = reader.fill_buf().unwrap();
    assert_eq!(buf.as_ptr(), frozen[1000..].as_ptr());
    assert_eq!(buf, &frozen[1000..]);
    // Consuming more than there is stops at the end.
    reader.consume(usize::MAX);
    assert_eq!(reader.position(), 5000);
    assert!(reader.fill_buf().unwrap().is_empty());
}

#[test]
fn buf_read_lines_and_read_until() {
    let frozen = Frozen::from_bytes("lines", b"alpha\nbeta\n\ngamma").unwrap();
    let lines: Vec<String> = frozen.reader().lines().collect::<Result<_, _>>().unwrap();
    assert_eq!(lines, ["alpha", "beta", "", "gamma"]);

    let mut reader = frozen.reader();
    let mut field = Vec::new();
    assert_eq!(reader.read_until(b'\n', &mut field).unwrap(), 6);
    assert_eq!(field, b"alpha\n");
    assert_eq!(reader.position(), 6);
}

// --- FrozenReader: Seek ---

#[test]
fn seek_from_start_end_and_current() {
    let frozen = Frozen::from_bytes("seek", b"0123456789").unwrap();
    let mut reader = frozen.reader();
    let mut one = [0u8; 1];

    assert_eq!(reader.seek(SeekFrom::End(-3)).unwrap(), 7);
    reader.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"7");
    assert_eq!(reader.seek(SeekFrom::Current(-5)).unwrap(), 3);
    reader.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"3");
    assert_eq!(reader.seek(SeekFrom::Start(9)).unwrap(), 9);
    assert_eq!(reader.stream_position().unwrap(), 9);
    reader.rewind().unwrap();
    assert_eq!(reader.position(), 0);
}

#[test]
fn seek_before_the_start_or_overflowing_fails_and_keeps_the_position() {
    let frozen = Frozen::from_bytes("seek-bad", b"0123456789").unwrap();
    let mut reader = frozen.reader();
    reader.set_position(4);
    for to in [
        SeekFrom::Current(-5),
        SeekFrom::End(-11),
        SeekFrom::End(i64::MIN),
    ] {
        let err = reader.seek(to).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{to:?}");
        assert_eq!(reader.position(), 4, "{to:?}");
    }
    reader.set_position(u64::MAX);
    let err = reader.seek(SeekFrom::Current(1)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(reader.position(), u64::MAX);
}

#[test]
fn past_the_end_reads_nothing() {
    let frozen = Frozen::from_bytes("past-end", b"abc").unwrap();
    let mut reader = frozen.reader();
    assert_eq!(reader.seek(SeekFrom::End(100)).unwrap(), 103);
    let mut buf = [0u8; 8];
    assert_eq!(reader.read(&mut buf).unwrap(), 0);
    assert!(reader.fill_buf().unwrap().is_empty());
    assert!(reader.remaining_slice().is_empty());
    reader.consume(10);
    assert_eq!(reader.position(), 103, "consume past the end does not move");
    reader.set_position(u64::MAX);
    assert_eq!(reader.read(&mut buf).unwrap(), 0);
    assert_eq!(reader.read_to_end(&mut Vec::new()).unwrap(), 0);
}

// --- FrozenReader: ownership, empty files ---

#[test]
fn reader_keeps_the_mapping_alive_after_the_frozen_is_dropped() {
    let data = pattern(9000);
    let frozen = Frozen::from_bytes("outlive", &data).unwrap();
    let ptr = frozen.as_ptr();
    let mut reader = frozen.reader();
    drop(frozen);
    assert_eq!(reader.fill_buf().unwrap().as_ptr(), ptr);
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    assert_eq!(out, data);
    let frozen = reader.into_inner();
    assert_eq!(frozen.as_ptr(), ptr);
}

#[test]
fn readers_of_one_frozen_have_their_own_positions() {
    let frozen = Frozen::from_bytes("positions", b"abcdef").unwrap();
    let mut first = frozen.reader();
    let mut second = FrozenReader::from(frozen.clone());
    let mut buf = [0u8; 4];
    first.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"abcd");
    second.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"abcd", "the second reader starts at 0");
    let mut cloned = first.clone();
    assert_eq!(cloned.position(), 4);
    cloned.read_exact(&mut buf[..2]).unwrap();
    assert_eq!(&buf[..2], b"ef");
    assert_eq!(first.position(), 4);
    assert!(std::ptr::eq(first.get_ref().as_ptr(), frozen.as_ptr()));
    let debug = format!("{first:?}");
    assert!(
        debug.contains("pos: 4") && !debug.contains("abcd"),
        "{debug}"
    );
}

#[test]
fn empty_frozen_reads_as_empty() {
    let frozen = Frozen::from_bytes("empty", b"").unwrap();
    let mut reader = frozen.reader();
    assert_eq!(reader.read(&mut [0u8; 4]).unwrap(), 0);
    assert!(reader.fill_buf().unwrap().is_empty());
    assert_eq!(reader.seek(SeekFrom::End(0)).unwrap(), 0);
    let mut out = Vec::new();
    frozen.write_to(&mut out).unwrap();
    assert!(out.is_empty());
}

// --- writing out: write_to and io::copy ---

/// Accepts at most `chunk` bytes per `write` and records where each came from.
struct RecordingWriter {
    chunk: usize,
    out: Vec<u8>,
    sources: Vec<(usize, usize)>,
}

impl Write for RecordingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk);
        self.sources.push((buf.as_ptr() as usize, n));
        self.out.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn write_to_writes_straight_from_the_mapping() {
    let data = pattern(100_000);
    let frozen = Frozen::from_bytes("write-to", &data).unwrap();
    let mut w = RecordingWriter {
        chunk: 4096,
        out: Vec::new(),
        sources: Vec::new(),
    };
    frozen.write_to(&mut w).unwrap();
    assert_eq!(w.out, data);
    // Every write was handed a pointer into the mapping, at the right offset: no bounce
    // buffer in between.
    let base = frozen.as_ptr() as usize;
    let mut offset = 0;
    for (ptr, n) in w.sources {
        assert_eq!(
            ptr,
            base + offset,
            "write at offset {offset} came from elsewhere"
        );
        offset += n;
    }
    assert_eq!(offset, data.len());
}

#[test]
fn write_to_reports_the_writers_error() {
    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let frozen = Frozen::from_bytes("write-err", b"data").unwrap();
    let err = frozen.write_to(&mut Full).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
}

#[test]
fn io_copy_from_a_reader_copies_everything() {
    let data = pattern(300_000);
    let frozen = Frozen::from_bytes("io-copy", &data).unwrap();
    let mut out = Vec::new();
    assert_eq!(
        io::copy(&mut frozen.reader(), &mut out).unwrap(),
        data.len() as u64
    );
    assert_eq!(out, data);

    // From the middle, into a writer that takes small pieces.
    let mut reader = frozen.reader();
    reader.seek(SeekFrom::Start(123_457)).unwrap();
    let mut w = RecordingWriter {
        chunk: 1000,
        out: Vec::new(),
        sources: Vec::new(),
    };
    assert_eq!(
        io::copy(&mut reader, &mut w).unwrap(),
        (data.len() - 123_457) as u64
    );
    assert_eq!(w.out, &data[123_457..]);
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn io_copy_from_open_reader_into_a_file() {
    let data = pattern(200_000);
    let frozen = Frozen::from_bytes("kernel-copy", &data).unwrap();
    let mut out = tempfile::tempfile().unwrap();
    let n = io::copy(&mut frozen.open_reader().unwrap(), &mut out).unwrap();
    assert_eq!(n, data.len() as u64);
    out.rewind().unwrap();
    let mut back = Vec::new();
    out.read_to_end(&mut back).unwrap();
    assert_eq!(back, data);
}

// --- a child's stdin ---

/// The file offset of `fd` (`lseek(fd, 0, SEEK_CUR)`).
fn offset_of(fd: impl AsFd) -> i64 {
    nix::unistd::lseek(fd.as_fd(), 0, nix::unistd::Whence::SeekCur).unwrap()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn frozen_as_stdin_of_cat_and_wc() {
    let data = pattern(1 << 20);
    let frozen = Frozen::from_bytes("stdin-cat", &data).unwrap();
    let out = Command::new("cat")
        .stdin(frozen.to_stdio().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout == data, "cat saw different bytes");

    let out = Command::new("wc")
        .arg("-c")
        .stdin(frozen.to_stdio().unwrap())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1048576");
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn frozen_stdin_starts_at_zero_whatever_the_shared_offset() {
    let frozen = Frozen::from_bytes("stdin-offset", b"0123456789").unwrap();
    // Move the offset shared by the Frozen's descriptor and its dups.
    let mut dup = std::fs::File::from(frozen.try_clone_fd().unwrap());
    dup.read_exact(&mut [0u8; 4]).unwrap();
    assert_eq!(offset_of(&frozen), 4);

    for _ in 0..2 {
        let out = Command::new("cat")
            .stdin(frozen.to_stdio().unwrap())
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"0123456789", "each child reads from 0");
    }
    // The children's reads moved only their own offsets.
    assert_eq!(offset_of(&frozen), 4);
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn frozen_stdin_is_read_only_for_the_child() {
    let frozen = Frozen::from_bytes("stdin-ro", b"unchanged").unwrap();
    let status = Command::new("sh")
        .args(["-c", "printf changed >&0"])
        .stdin(frozen.to_stdio().unwrap())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "writing to the frozen stdin must fail");
    assert_eq!(&frozen[..], b"unchanged");
    assert_eq!(
        &Frozen::from_fd(frozen.try_clone_fd().unwrap()).unwrap()[..],
        b"unchanged"
    );
}

#[test]
fn memfile_as_stdin_shares_the_offset() {
    let mut file = MemFile::create_default("stdin-memfile").unwrap();
    file.write_all(b"hello\n").unwrap();

    // Without a rewind the child starts where the writes ended: at the end.
    let out = Command::new("cat")
        .stdin(Stdio::from(file.try_clone().unwrap()))
        .output()
        .unwrap();
    assert!(out.stdout.is_empty(), "{out:?}");

    file.rewind().unwrap();
    let out = Command::new("cat")
        .stdin(Stdio::from(file.try_clone().unwrap()))
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"hello\n");
    // The child's reads moved the offset of our descriptor too: it is one file description.
    assert_eq!(offset_of(&file), 6);
    assert_eq!(file.stream_position().unwrap(), 6);
}

// --- bytes::Bytes (feature `bytes`) ---

/// Whether this process holds a descriptor or a mapping of the memfd named `name`.
#[cfg(feature = "bytes")]
fn memfd_in_use(name: &str) -> (bool, bool) {
    let target = format!("/memfd:{name} (deleted)");
    let fd = std::fs::read_dir("/proc/self/fd").unwrap().any(|entry| {
        let link = std::fs::read_link(entry.unwrap().path());
        link.is_ok_and(|l| l.as_os_str() == target.as_str())
    });
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mapped = maps.lines().any(|line| line.ends_with(&target));
    (fd, mapped)
}

#[cfg(feature = "bytes")]
#[test]
fn bytes_points_at_the_mapping_and_outlives_the_frozen() {
    use bytes::Bytes;

    let data = pattern(70_000);
    let name = unique_name("bytes");
    let frozen = Frozen::from_bytes(&name, &data).unwrap();
    let ptr = frozen.as_ptr();
    let other = frozen.clone();
    let bytes = Bytes::try_from(frozen).unwrap();
    assert_eq!(
        bytes.as_ptr(),
        ptr,
        "Bytes must point at the mapping, not a copy"
    );
    assert_eq!(bytes.len(), data.len());
    assert_eq!(bytes, data);

    // Slices and clones share the pages too.
    let tail = bytes.slice(65_536..);
    assert_eq!(tail.as_ptr(), ptr.wrapping_add(65_536));
    assert_eq!(&tail[..], &data[65_536..]);
    let copy = bytes.clone();
    assert_eq!(copy.as_ptr(), ptr);

    // Every Frozen gone: the Bytes keeps mapping and descriptor alive.
    drop(other);
    drop(bytes);
    assert_eq!(memfd_in_use(&name), (true, true));
    assert_eq!(&tail[..], &data[65_536..]);
    assert_eq!(copy, data);
    drop(copy);
    assert_eq!(&tail[..4], &data[65_536..65_540]);

    // The last Bytes releases both.
    drop(tail);
    assert_eq!(memfd_in_use(&name), (false, false));
}

#[cfg(feature = "bytes")]
#[test]
fn bytes_of_an_empty_frozen_is_empty() {
    let frozen = Frozen::from_bytes("bytes-empty", b"").unwrap();
    let bytes = bytes::Bytes::try_from(frozen).unwrap();
    assert!(bytes.is_empty());
    assert_eq!(bytes.slice(..), bytes::Bytes::new());
}

#[cfg(feature = "bytes")]
#[test]
fn bytes_moves_to_another_thread() {
    let frozen = Frozen::from_bytes("bytes-thread", b"across threads").unwrap();
    let ptr = frozen.as_ptr() as usize;
    let bytes = bytes::Bytes::try_from(frozen).unwrap();
    let (p, text) = std::thread::spawn(move || (bytes.as_ptr() as usize, bytes.to_vec()))
        .join()
        .unwrap();
    assert_eq!(p, ptr);
    assert_eq!(text, b"across threads");
}
