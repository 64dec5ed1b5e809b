//! # memfile-bench
//!
//! Side-by-side benchmarks of memfile against the syscall floor, plain socket copies and
//! ipc-channel, in one run, with real processes:
//!
//! ```text
//! cargo run --release -p memfile-bench -- [--quick] [--json PATH] [--svg PATH]
//!     [--variants] [--only CASE,...] [--shmem-thp-advise] [--smoke]
//! ```
//!
//! Every alternative of a case runs in the same run, interleaved (the order rotates from one
//! repetition to the next, so drift on a noisy machine hits them all alike), several
//! repetitions each; the table shows medians with min–max and `ratio = baseline / ours`
//! (above 1: ours is faster). Children are this binary again, started with
//! `__child ROLE ...`.
//!
//! The harness changes no system setting unless asked: `--shmem-thp-advise` sets
//! `/sys/kernel/mm/transparent_hugepage/shmem_enabled` to `advise` for the run and puts the
//! old value back at the end (also on an error, a panic, or SIGINT/SIGTERM/SIGHUP).

mod cases;
mod machine;
mod micro;
mod proc;
mod report;
mod syscalls;
mod work;

use std::time::Instant;

use cases::{Alt, Params};
use machine::{Machine, ShmemThpAdvise};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;
use report::Measured;
use work::Res;

const MIB: usize = 1 << 20;

/// How long to run: the full run, `--quick` (under 3 minutes on 2 cores) or `--smoke`
/// (tiny sizes, seconds, for the test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Full,
    Quick,
    Smoke,
}

impl Mode {
    /// Picks the value for this mode from `(full, quick, smoke)`.
    fn pick<T>(self, full: T, quick: T, smoke: T) -> T {
        match self {
            Mode::Full => full,
            Mode::Quick => quick,
            Mode::Smoke => smoke,
        }
    }
}

/// One size of one case.
#[derive(Debug)]
struct Plan {
    case: &'static str,
    params: Params,
    reps: usize,
    alts: &'static [Alt],
    /// Run parent and children on one CPU (they inherit the affinity): a ping-pong across
    /// CPUs measures the machine's wake-up latency (here 8 µs or 45 µs, depending on where
    /// the scheduler happens to put the child), not the code.
    pin: bool,
}

fn plans(mode: Mode) -> Vec<Plan> {
    let m = mode;
    let reps = m.pick(7, 5, 2);
    let big_reps = m.pick(5, 3, 2);
    let mut v = Vec::new();
    let p = |size, iters, warmup| Params {
        size,
        iters,
        warmup,
    };
    v.push(Plan {
        case: "small_rtt",
        params: p(64, m.pick(20_000, 5_000, 200), m.pick(500, 200, 20)),
        reps,
        alts: cases::small::ALTS,
        pin: true,
    });
    let n4k = m.pick(4000, 1000, 50);
    v.push(Plan {
        case: "frozen_4k_fixed",
        // One warm-up batch as large as the timed one (the consumer acks once per batch).
        params: p(cases::frozen4k::SIZE, n4k, n4k),
        reps,
        alts: cases::frozen4k::ALTS,
        pin: false,
    });
    let large = [
        (m.pick(MIB, MIB, 64 << 10), m.pick(30, 10, 3), 1, reps),
        (m.pick(16 * MIB, 16 * MIB, MIB), m.pick(6, 3, 2), 1, reps),
        (
            m.pick(256 * MIB, 256 * MIB, 4 * MIB),
            m.pick(2, 1, 1),
            m.pick(1, 0, 1),
            big_reps,
        ),
    ];
    for (size, iters, warmup, reps) in large {
        v.push(Plan {
            case: "large_e2e",
            params: p(size, iters, warmup),
            reps,
            alts: cases::large::ALTS,
            pin: false,
        });
    }
    let typed = m.pick(16 * MIB, 16 * MIB, MIB);
    for (case, alts) in [
        ("typed_vec", cases::typed::VEC_ALTS),
        ("typed_bytes", cases::typed::BYTES_ALTS),
    ] {
        v.push(Plan {
            case,
            params: p(typed, m.pick(5, 3, 1), 1),
            reps,
            alts,
            pin: false,
        });
    }
    let shared = m.pick(64 * MIB, 64 * MIB, MIB);
    for (case, alts) in [
        ("fanout_4", cases::fanout::ALTS),
        ("pipeline_3", cases::pipeline::ALTS),
    ] {
        v.push(Plan {
            case,
            params: p(shared, m.pick(3, 2, 1), 1),
            reps: big_reps,
            alts,
            pin: false,
        });
    }
    v
}

/// Runs every alternative of `plan`, interleaved: repetition `r` starts with alternative
/// `r mod n` and goes round.
fn run_plan(plan: &Plan, alts: &[Alt]) -> Res<Vec<Measured>> {
    let _pinned = if plan.pin {
        Some(Pinned::to_current_cpu()?)
    } else {
        None
    };
    let n = alts.len();
    let mut out: Vec<Measured> = alts
        .iter()
        .map(|a| Measured {
            case: plan.case,
            size: plan.params.size,
            alt: a.name,
            secs: vec![],
        })
        .collect();
    for rep in 0..plan.reps {
        for k in 0..n {
            let i = (k + rep) % n;
            let alt = &alts[i];
            let secs = (alt.run)(&plan.params)
                .map_err(|e| format!("{} {} B, {}: {e}", plan.case, plan.params.size, alt.name))?;
            out[i].secs.push(secs);
        }
    }
    Ok(out)
}

/// Restricts this process (and the children it starts) to the CPU it runs on; restores the
/// old affinity when dropped.
#[derive(Debug)]
struct Pinned(CpuSet);

impl Pinned {
    fn to_current_cpu() -> Res<Pinned> {
        let me = Pid::from_raw(0);
        let old = sched_getaffinity(me)?;
        // SAFETY: sched_getcpu has no preconditions; it returns -1 on failure.
        let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).unwrap_or(0);
        let mut one = CpuSet::new();
        one.set(cpu)?;
        sched_setaffinity(me, &one)?;
        Ok(Pinned(old))
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = sched_setaffinity(Pid::from_raw(0), &self.0);
    }
}

#[derive(Debug, Default)]
struct Options {
    quick: bool,
    smoke: bool,
    variants: bool,
    thp_advise: bool,
    json: Option<String>,
    svg: Option<String>,
    paced_svg: Option<String>,
    only: Option<Vec<String>>,
    alts: Option<Vec<String>>,
}

const USAGE: &str = "usage: memfile-bench [--quick | --smoke] [--json PATH] [--svg PATH] \
[--variants] [--only CASE,...] [--alts NAME,...] [--shmem-thp-advise]

  --quick             fewer repetitions (under 3 minutes on 2 cores)
  --smoke             tiny sizes and counts (a few seconds; for tests)
  --json PATH         write {\"machine\", \"cases\": [{case, size_bytes, ours_s, baseline,
                      baseline_s, ratio}], \"variants\"} (ratio = baseline_s / ours_s)
  --svg PATH          write a plot of large_e2e throughput against size
  --paced-svg PATH    write a plot of paced_8m's latency distributions
  --variants          also time other ways to use memfile (from_bytes, MADV_HUGEPAGE, ...)
  --only CASES        run only these cases (comma-separated)
  --alts NAMES        run only these alternatives (comma-separated; for profiling)
  --shmem-thp-advise  set shmem_enabled to `advise` for the run (root; restored at the end)";

fn parse_args(args: &[String]) -> Res<Options> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--smoke" => o.smoke = true,
            "--variants" => o.variants = true,
            "--shmem-thp-advise" => o.thp_advise = true,
            "--json" => o.json = Some(it.next().ok_or("--json needs a path")?.clone()),
            "--svg" => o.svg = Some(it.next().ok_or("--svg needs a path")?.clone()),
            "--paced-svg" => {
                o.paced_svg = Some(it.next().ok_or("--paced-svg needs a path")?.clone());
            }
            "--only" => {
                let list = it.next().ok_or("--only needs a list of cases")?;
                o.only = Some(list.split(',').map(str::to_owned).collect());
            }
            "--alts" => {
                let list = it.next().ok_or("--alts needs a list of alternatives")?;
                o.alts = Some(list.split(',').map(str::to_owned).collect());
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    Ok(o)
}

fn run(args: &[String]) -> Res<()> {
    let o = parse_args(args)?;
    let mode = if o.smoke {
        Mode::Smoke
    } else if o.quick {
        Mode::Quick
    } else {
        Mode::Full
    };
    // Restores the setting when dropped at the end of this function (or on unwinding).
    let _thp = if o.thp_advise {
        Some(ShmemThpAdvise::set()?)
    } else {
        None
    };
    let machine = Machine::probe();
    let command = format!("memfile-bench {}", args.join(" "));
    println!("machine: {}", machine.line());
    println!("command: {command}");
    let started = Instant::now();
    let mut all = Vec::new();
    for plan in plans(mode) {
        if o.only
            .as_ref()
            .is_some_and(|only| !only.iter().any(|c| c == plan.case))
        {
            continue;
        }
        let alts: Vec<Alt> = plan
            .alts
            .iter()
            .filter(|a| o.variants || !a.is_variant())
            .filter(|a| {
                o.alts
                    .as_ref()
                    .is_none_or(|keep| keep.iter().any(|k| k == a.name))
            })
            .copied()
            .collect();
        let t = Instant::now();
        eprint!("{} {} B ...", plan.case, plan.params.size);
        let results = run_plan(&plan, &alts)?;
        eprintln!(" {:.1} s", t.elapsed().as_secs_f64());
        all.extend(results);
    }
    println!();
    print!("{}", report::table(&all));
    // The paced case reports latencies: its own table (`--only paced_8m` runs it alone).
    if o.only
        .as_ref()
        .is_none_or(|l| l.iter().any(|c| c == "paced_8m"))
    {
        let t = Instant::now();
        eprint!("paced_8m ...");
        let (size, paced, unpaced) = mode.pick((8 * MIB, 240, 60), (8 * MIB, 180, 40), (MIB, 6, 4));
        let svg = o.paced_svg.as_deref();
        print!("{}", cases::paced::report(size, paced, unpaced, svg)?);
        eprintln!(" {:.1} s", t.elapsed().as_secs_f64());
    }
    println!("\ntotal {:.1} s", started.elapsed().as_secs_f64());
    if let Some(path) = &o.json {
        std::fs::write(path, report::json(&machine, &command, &all))?;
        eprintln!("wrote {path}");
    }
    if let Some(path) = &o.svg {
        let title = format!(
            "large_e2e: producer fills, consumer reads (shmem THP: {})",
            {
                let f = machine.fields();
                f.iter()
                    .find(|(k, _)| *k == "shmem_thp")
                    .map_or("?", |(_, v)| *v)
                    .to_owned()
            }
        );
        std::fs::write(path, report::svg(&all, "large_e2e", &title))?;
        eprintln!("wrote {path}");
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("__micro") {
        micro::run().and_then(|()| micro::codec())
    } else if args.first().map(String::as_str) == Some("__micro_seal") {
        let thp = args.get(1).map(String::as_str) == Some("--shmem-thp-advise");
        match thp.then(ShmemThpAdvise::set).transpose() {
            Ok(_guard) => micro::seal_ebusy(),
            Err(e) => Err(e),
        }
    } else if args.first().map(String::as_str) == Some("__child") {
        proc::ChildArgs::parse(&args[1..]).and_then(|a| cases::run_child(&a))
    } else {
        run(&args)
    };
    if let Err(e) = result {
        eprintln!("memfile-bench: {e}");
        std::process::exit(1);
    }
}
