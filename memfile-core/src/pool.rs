//! [`FramePool`]: writable regions created, sized and faulted in ahead of time on a
//! background thread, so that a producer's critical path only writes pages that exist.
//!
//! A sealed file can never be rewritten, so every frame needs fresh pages; allocating them
//! (the first touch of each 4 KiB page of a new memfd) costs more than filling them. The
//! pool moves that cost to another thread: it keeps a few [`WritableRegion`]s of each size
//! the producer asked for recently, each one mapped and with every page already touched.
//!
//! Sound by construction: the pool only ever holds regions it created itself and nobody
//! else has seen (their fds never left the pool), and a region it hands out is the caller's
//! from then on; it is never handed out twice, and once frozen it is sealed for good.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Frozen, WritableRegion};

/// Bytes between two touches when faulting a region in: the smallest page size.
const PAGE: usize = 4096;

/// Settings of a [`FramePool`].
#[derive(Debug, Clone)]
pub struct FramePoolOptions {
    name: String,
    depth: usize,
    max_bytes: u64,
    idle: Duration,
}

impl Default for FramePoolOptions {
    fn default() -> FramePoolOptions {
        FramePoolOptions {
            name: "memfile-pool".to_owned(),
            depth: 2,
            max_bytes: 128 << 20,
            idle: Duration::from_secs(2),
        }
    }
}

impl FramePoolOptions {
    /// The memfd name of the regions (see [`WritableRegion::new`]); default `memfile-pool`.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> FramePoolOptions {
        self.name = name.into();
        self
    }

    /// Regions kept ready for each size in use; default 2 (one being filled, one more
    /// while the other is in flight). At least 1.
    #[must_use]
    pub fn depth(mut self, depth: usize) -> FramePoolOptions {
        self.depth = depth.max(1);
        self
    }

    /// Most bytes of ready regions the pool holds at once, all sizes together; default
    /// 128 MiB. A size larger than this is never prepared (always allocated inline).
    #[must_use]
    pub fn max_bytes(mut self, max_bytes: u64) -> FramePoolOptions {
        self.max_bytes = max_bytes;
        self
    }

    /// A size nobody asked for during this long has its ready regions released; default
    /// 2 s.
    #[must_use]
    pub fn idle(mut self, idle: Duration) -> FramePoolOptions {
        self.idle = idle;
        self
    }
}

/// How a pool has done so far ([`FramePool::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FramePoolStats {
    /// Regions handed out ready (created and faulted in ahead of time).
    pub hits: u64,
    /// Regions created on the caller's thread because none of that size was ready.
    pub misses: u64,
    /// Regions ready now.
    pub ready: usize,
    /// Their bytes.
    pub ready_bytes: u64,
    /// Ready regions released because their size went unused.
    pub released: u64,
}

#[derive(Debug)]
struct SizeState {
    ready: Vec<WritableRegion>,
    last_wanted: Instant,
}

#[derive(Debug)]
struct State {
    sizes: HashMap<usize, SizeState>,
    ready_bytes: u64,
    stats: FramePoolStats,
    shutdown: bool,
    /// The background thread failed to create a region (e.g. out of memory): why.
    last_error: Option<String>,
}

struct Shared {
    options: FramePoolOptions,
    state: Mutex<State>,
    /// Signals the background thread: a size was asked for, a region taken, or shutdown.
    work: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A producer-side pool of writable regions, prepared ahead of time on a background thread.
///
/// [`take`](Self::take) hands out a [`WritableRegion`] of the asked size whose pages are
/// already allocated and mapped, or creates one on the spot when none is ready (the first
/// frame of a size, or a producer faster than the pool); [`build`](Self::build) fills and
/// freezes it in one call. Either way the caller owns the region: fill it, then
/// [`freeze`](WritableRegion::freeze) it into a [`Frozen`] to send.
///
/// Memory: at most [`depth`](FramePoolOptions::depth) ready regions per size and
/// [`max_bytes`](FramePoolOptions::max_bytes) in all; the regions of a size unused for
/// [`idle`](FramePoolOptions::idle) are released. Dropping the pool stops its thread and
/// frees every ready region (regions already handed out are unaffected).
///
/// ```
/// use memfile::FramePool;
///
/// let pool = FramePool::new()?;
/// for n in 0..3u8 {
///     let frame = pool.build(1 << 20, |pixels| pixels.fill(n))?;
///     assert!(frame.iter().all(|&b| b == n));
/// }
/// let stats = pool.stats();
/// assert_eq!(stats.hits + stats.misses, 3);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct FramePool {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl FramePool {
    /// A pool with the default options.
    ///
    /// # Errors
    ///
    /// When the background thread cannot be started.
    pub fn new() -> io::Result<FramePool> {
        FramePool::with_options(FramePoolOptions::default())
    }

    /// A pool with `options`.
    ///
    /// # Errors
    ///
    /// When the background thread cannot be started.
    pub fn with_options(options: FramePoolOptions) -> io::Result<FramePool> {
        let shared = Arc::new(Shared {
            options,
            state: Mutex::new(State {
                sizes: HashMap::new(),
                ready_bytes: 0,
                stats: FramePoolStats::default(),
                shutdown: false,
                last_error: None,
            }),
            work: Condvar::new(),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("memfile-pool".into())
            .spawn(move || prepare(&worker))?;
        Ok(FramePool {
            shared,
            thread: Some(thread),
        })
    }

    /// A writable region of `len` bytes: a ready one if there is one, else a new one
    /// created now (and the pool starts preparing regions of this size).
    ///
    /// # Errors
    ///
    /// As [`WritableRegion::new`], when one has to be created now.
    pub fn take(&self, len: usize) -> io::Result<WritableRegion> {
        let ready = {
            let mut s = self.shared.lock();
            let now = Instant::now();
            let size = s.sizes.entry(len).or_insert_with(|| SizeState {
                ready: Vec::new(),
                last_wanted: now,
            });
            size.last_wanted = now;
            let region = size.ready.pop();
            match &region {
                Some(_) => {
                    s.ready_bytes -= len as u64;
                    s.stats.hits += 1;
                }
                None => s.stats.misses += 1,
            }
            region
        };
        self.shared.work.notify_one();
        match ready {
            Some(region) => Ok(region),
            None => WritableRegion::new(&self.shared.options.name, len),
        }
    }

    /// Starts preparing regions of `len` bytes now, before the first [`take`](Self::take)
    /// of that size (which would otherwise be made inline): for a producer that knows its
    /// frame size up front.
    pub fn prepare(&self, len: usize) {
        {
            let mut s = self.shared.lock();
            let now = Instant::now();
            s.sizes
                .entry(len)
                .or_insert_with(|| SizeState {
                    ready: Vec::new(),
                    last_wanted: now,
                })
                .last_wanted = now;
        }
        self.shared.work.notify_one();
    }

    /// Takes a region of `len` bytes, lets `fill` write it, and freezes it.
    ///
    /// # Errors
    ///
    /// As [`take`](Self::take) and [`WritableRegion::freeze`].
    pub fn build(&self, len: usize, fill: impl FnOnce(&mut [u8])) -> io::Result<Frozen> {
        let mut region = self.take(len)?;
        fill(&mut region);
        region.freeze()
    }

    /// Counters and the memory held now.
    pub fn stats(&self) -> FramePoolStats {
        let s = self.shared.lock();
        FramePoolStats {
            ready: s.sizes.values().map(|z| z.ready.len()).sum(),
            ready_bytes: s.ready_bytes,
            ..s.stats
        }
    }

    /// The last error the background thread met creating a region (it then waits for the
    /// next request and tries again; [`take`](Self::take) falls back to creating inline).
    pub fn last_error(&self) -> Option<String> {
        self.shared.lock().last_error.clone()
    }
}

impl Drop for FramePool {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
        if let Some(thread) = self.thread.take() {
            // The thread only panics if the allocator does; nothing to report then.
            let _ = thread.join();
        }
        let mut s = self.shared.lock();
        s.sizes.clear();
        s.ready_bytes = 0;
    }
}

impl fmt::Debug for FramePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FramePool")
            .field("options", &self.shared.options)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Allocates and maps every page of `region` now, on this thread: one
/// `madvise(MADV_POPULATE_WRITE)` (Linux 5.14+) instead of a page fault per page, or a
/// write to each page where the kernel refuses the advice.
fn populate(region: &mut WritableRegion) {
    let len = region.len();
    let Some(start) = std::ptr::NonNull::new(region.as_mut_ptr()) else {
        return;
    };
    // SAFETY: `start .. start + len` is exactly the region's own writable shared mapping
    // (page-aligned, as mmap returns it), borrowed mutably for this call; the advice only
    // faults its pages in for writing, leaving their contents (zeros) as they are.
    let advised = unsafe {
        nix::sys::mman::madvise(
            start.cast(),
            len,
            nix::sys::mman::MmapAdvise::MADV_POPULATE_WRITE,
        )
    };
    if advised.is_err() {
        for page in region.chunks_mut(PAGE) {
            page[0] = 0;
        }
    }
}

/// The background thread: keeps every recently wanted size at `depth` ready regions
/// within `max_bytes`, releases idle sizes, until shutdown.
fn prepare(shared: &Shared) {
    // Work ahead at a lower priority, so that on a busy machine the producer and its
    // consumers, whose latency this thread exists to cut, run first. Failure is harmless.
    // SAFETY: gettid and setpriority take and return plain integers; PRIO_PROCESS with a
    // thread id changes the nice value of this thread only.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
    let options = &shared.options;
    let mut s = shared.lock();
    loop {
        if s.shutdown {
            return;
        }
        let now = Instant::now();
        // Release sizes nobody wanted lately.
        let idle: Vec<usize> = s
            .sizes
            .iter()
            .filter(|(_, z)| now.duration_since(z.last_wanted) >= options.idle)
            .map(|(&len, _)| len)
            .collect();
        for len in idle {
            if let Some(z) = s.sizes.remove(&len) {
                s.ready_bytes -= (z.ready.len() * len) as u64;
                s.stats.released += z.ready.len() as u64;
            }
        }
        // The neediest size that fits the cap.
        let ready_bytes = s.ready_bytes;
        let next = s
            .sizes
            .iter()
            .filter(|&(&len, z)| {
                z.ready.len() < options.depth
                    && ready_bytes.saturating_add(len as u64) <= options.max_bytes
            })
            .min_by_key(|(_, z)| z.ready.len())
            .map(|(&len, _)| len);
        let Some(len) = next else {
            // Nothing to do: wait for a request, or until the oldest size may go idle.
            let wake = s
                .sizes
                .values()
                .map(|z| z.last_wanted + options.idle)
                .min()
                .map_or(options.idle, |t| t.saturating_duration_since(now))
                .max(Duration::from_millis(1));
            s = shared
                .work
                .wait_timeout(s, wake)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
            continue;
        };
        drop(s);
        let made = WritableRegion::new(&options.name, len).map(|mut region| {
            populate(&mut region);
            region
        });
        s = shared.lock();
        match made {
            Ok(region) => {
                let shutdown = s.shutdown;
                // Still wanted (not released meanwhile) and not shut down: keep it.
                if let Some(z) = s.sizes.get_mut(&len).filter(|_| !shutdown) {
                    z.ready.push(region);
                    s.ready_bytes += len as u64;
                }
            }
            Err(e) => {
                s.last_error = Some(format!("creating a {len}-byte region: {e}"));
                // Wait for the next request rather than spin on a failing allocation.
                s = shared
                    .work
                    .wait_timeout(s, options.idle)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
        }
    }
}
