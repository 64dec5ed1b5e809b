//! `paced_8m`: the camera-like producer of issue 11. 8 MiB frames at 60 per second to a
//! consumer process that reads every byte; the latency of each frame from "start filling"
//! to "the consumer has verified it", p50/p99/max, with the producer's frames from a
//! [`FramePool`] (faulted in ahead of time on another thread) and without (a fresh
//! `WritableRegion` per frame); then the same unpaced, as throughput.
//!
//! It reports latencies rather than seconds per operation, so it has its own small table
//! (printed after the others) instead of a `Plan`.

use std::time::{Duration, Instant};

use memfile_core::{FramePool, Frozen, WritableRegion};
use memfile_ipc::Fd;

use super::Role;
use crate::proc::ours_spawn;
use crate::work::{Res, check, checksum, expected, fill};

const ROLE: &str = "paced.consume";

/// One run's numbers.
#[derive(Debug, Clone)]
pub struct Run {
    /// Latency percentiles, seconds.
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// Bytes per second over the run.
    pub throughput: f64,
    /// Every frame's latency, seconds, sorted.
    pub latencies: Vec<f64>,
}

/// Child: receives `(index, frame)`, reads every byte, answers `(index, checksum)`.
/// The child roles of this case.
pub const ROLES: &[Role] = &[Role::new(ROLE, |_| consume())];

/// The consumer: checksums every frame and sends the checksum back.
fn consume() -> Res<()> {
    let (tx, rx) = memfile_ipc::from_parent::<(u64, u64), (u64, Fd<Frozen>)>()?;
    tx.send(&(u64::MAX, 0))?; // ready
    loop {
        match rx.recv() {
            Ok((index, frame)) => tx.send(&(index, checksum(&frame)))?,
            Err(memfile_ipc::Error::Disconnected { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

fn seed(i: u64) -> u8 {
    (i % 251) as u8 + 1
}

/// Sends `frames` frames of `size` bytes, at `fps` (0: as fast as possible), each made in a
/// region from `pool` (or a fresh one); returns latencies and throughput.
pub fn run(size: usize, frames: u64, fps: f64, pool: Option<&FramePool>) -> Res<Run> {
    let mut linked = ours_spawn::<(u64, Fd<Frozen>), (u64, u64)>(ROLE, size, 1, "")?;
    let (tx, rx) = match (linked.tx.pop(), linked.rx.pop()) {
        (Some(tx), Some(rx)) => (tx, rx),
        _ => return Err("ours_spawn made no connection".into()),
    };
    let (ready, _) = rx.recv()?;
    check("ready", ready, u64::MAX)?;
    let mut started = vec![None::<Instant>; frames as usize];
    let mut latencies = Vec::with_capacity(frames as usize);
    let acks = std::thread::spawn(move || -> Res<Vec<(u64, u64, Instant)>> {
        (0..frames)
            .map(|_| {
                let (i, sum) = rx.recv()?;
                Ok((i, sum, Instant::now()))
            })
            .collect()
    });
    let period = (fps > 0.0).then(|| Duration::from_secs_f64(1.0 / fps));
    let begin = Instant::now();
    for i in 0..frames {
        if let Some(period) = period {
            let due = begin + period.mul_f64(i as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        started[i as usize] = Some(Instant::now());
        let mut region = match pool {
            Some(pool) => pool.take(size)?,
            None => WritableRegion::new("paced", size)?,
        };
        fill(&mut region, seed(i));
        tx.send(&(i, Fd::new(region.freeze()?)))?;
    }
    let acked = acks.join().map_err(|_| "ack thread panicked")??;
    let elapsed = begin.elapsed().as_secs_f64();
    drop(tx);
    linked.finish()?;
    for (i, sum, at) in acked {
        check("frame checksum", sum, expected(size, seed(i)))?;
        let t0 = started[i as usize].ok_or("ack for a frame never sent")?;
        latencies.push((at - t0).as_secs_f64());
    }
    latencies.sort_by(f64::total_cmp);
    let pick = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    Ok(Run {
        p50: pick(0.5),
        p99: pick(0.99),
        max: *latencies.last().ok_or("no frames")?,
        throughput: (size as u64 * frames) as f64 / elapsed,
        latencies,
    })
}

/// Runs the case: paced with and without the pool, then unpaced with and without; returns
/// the table to print, and writes the latency distributions as an SVG plot to `svg`.
pub fn report(
    size: usize,
    paced_frames: u64,
    unpaced_frames: u64,
    svg: Option<&str>,
) -> Res<String> {
    let mut out = format!(
        "\npaced_8m: {} KiB frames, 60 fps x {paced_frames}, then unpaced x {unpaced_frames}\n\
         {:<10} {:>10} {:>10} {:>10} {:>14}\n",
        size >> 10,
        "producer",
        "p50 ms",
        "p99 ms",
        "max ms",
        "unpaced GB/s"
    );
    let mut rows = Vec::new();
    for with_pool in [true, false] {
        let pool = if with_pool {
            // A producer knows its frame size: let the pool prepare before the first frame
            // (at most a second), as a real one would at start-up.
            let pool = FramePool::new()?;
            pool.prepare(size);
            let ready_by = Instant::now() + Duration::from_secs(1);
            while pool.stats().ready < 2 && Instant::now() < ready_by {
                std::thread::sleep(Duration::from_millis(1));
            }
            Some(pool)
        } else {
            None
        };
        let paced = run(size, paced_frames, 60.0, pool.as_ref())?;
        let unpaced = run(size, unpaced_frames, 0.0, pool.as_ref())?;
        rows.push((with_pool, paced, unpaced));
    }
    if let Some(path) = svg {
        let curves: Vec<(&str, &[f64])> = rows
            .iter()
            .map(|(p, paced, _)| (if *p { "pool" } else { "no pool" }, &paced.latencies[..]))
            .collect();
        std::fs::write(path, plot(size, &curves))?;
        eprintln!("wrote {path}");
    }
    for (with_pool, paced, unpaced) in &rows {
        out += &format!(
            "{:<10} {:>10.2} {:>10.2} {:>10.2} {:>14.2}\n",
            if *with_pool { "pool" } else { "no pool" },
            paced.p50 * 1e3,
            paced.p99 * 1e3,
            paced.max * 1e3,
            unpaced.throughput / 1e9
        );
    }
    if let [(_, p, u), (_, q, v)] = &rows[..] {
        out += &format!(
            "pool vs no pool: p50 {:.1}x lower, p99 {:.1}x lower, unpaced throughput {:.2}x\n",
            q.p50 / p.p50,
            q.p99 / p.p99,
            u.throughput / v.throughput
        );
    }
    Ok(out)
}

/// The latency distributions (share of frames at or below a latency) as a small SVG.
fn plot(size: usize, curves: &[(&str, &[f64])]) -> String {
    let (w, h, left, bottom) = (640.0, 360.0, 60.0, 40.0);
    let max_ms = curves
        .iter()
        .flat_map(|(_, l)| l.iter())
        .fold(1.0f64, |m, &s| m.max(s * 1e3))
        .min(100.0);
    let x = |ms: f64| left + (ms.min(max_ms) / max_ms) * (w - left - 20.0);
    let y = |frac: f64| (h - bottom) - frac * (h - bottom - 30.0);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>\n<text x=\"{left}\" y=\"18\">paced_8m: {} KiB frames at 60 fps, \
         fill start to consumer verified (share of frames within a latency)</text>\n",
        size >> 10
    );
    out += &format!(
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
        y(0.0),
        x(max_ms),
        y(0.0),
        y(0.0),
        y(1.0)
    );
    for i in 0..=5 {
        let ms = max_ms * f64::from(i) / 5.0;
        out += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{ms:.0} ms</text>\n",
            x(ms),
            y(0.0) + 16.0
        );
        let frac = f64::from(i) / 5.0;
        out += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}%</text>\n",
            left - 6.0,
            y(frac) + 4.0,
            frac * 100.0
        );
    }
    for (k, (name, lat)) in curves.iter().enumerate() {
        let color = ["#1f77b4", "#d62728"][k % 2];
        let n = lat.len().max(1) as f64;
        let points: Vec<String> = lat
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{:.1},{:.1}", x(s * 1e3), y((i + 1) as f64 / n)))
            .collect();
        out += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{name}</text>\n",
            points.join(" "),
            w - 120.0,
            y(0.3) + 16.0 * k as f64
        );
    }
    out + "</svg>\n"
}
