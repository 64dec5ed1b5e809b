//! Runs every example as a user would, so the examples never rot.
//!
//! `cargo test` builds the examples of the package before it runs these tests; they sit in
//! `target/<profile>/examples/`, next to the `deps/` directory that holds this test binary.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    profile_dir.join("examples").join(name)
}

/// Runs an example with a time limit and returns its output; panics with its stderr if it fails.
fn run(name: &str, args: &[&str]) -> String {
    let path = example_path(name);
    assert!(
        path.exists(),
        "{} not built (run through `cargo test`)",
        path.display()
    );
    let mut child = Command::new(&path)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", path.display()));
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("example {name} still running after 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(
        status.success(),
        "example {name} failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

#[test]
fn producer_consumer_verifies_every_frame() {
    let out = run("producer_consumer", &["--frames", "12", "--size-mib", "1"]);
    assert!(out.contains("done: 12 frames"), "{out}");
    assert!(out.contains("checksums: all matched"), "{out}");
}

#[test]
fn producer_consumer_default_job_reports_progress_and_summary() {
    let out = run("producer_consumer", &[]);
    assert!(out.contains("64/64 frames verified"), "{out}");
    assert!(out.contains("done: 64 frames, 256.0 MiB"), "{out}");
    assert!(out.contains("checksums: all matched"), "{out}");
}

#[test]
fn producer_consumer_fails_on_a_checksum_mismatch() {
    let out = Command::new(example_path("producer_consumer"))
        .args(["--frames", "4", "--size-mib", "1", "--corrupt-frame", "2"])
        .output()
        .expect("spawn");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a mismatch exited 0\n{stdout}");
    assert!(stdout.contains("checksums: 1 MISMATCHED"), "{stdout}");
    assert!(stderr.contains("frame 2 failed verification"), "{stderr}");
}

/// The peak of shared memory in flight that the example prints, in MiB.
fn peak_in_flight_mib(out: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with("peak shared memory in flight:"))
        .unwrap_or_else(|| panic!("no peak line in\n{out}"));
    line.split_whitespace().nth(5).unwrap().parse().unwrap()
}

#[test]
fn producer_consumer_default_job_reports_latency_and_memory() {
    let out = run("producer_consumer", &[]);
    assert!(out.contains("pool on"), "{out}");
    assert!(
        out.contains("latency (fill start -> consumer verified): p50"),
        "{out}"
    );
    assert!(peak_in_flight_mib(&out) <= 256.0, "{out}");
}

/// A consumer that takes 20 ms per 8 MiB frame, with a 32 MiB window: the producer never
/// has more than the window in flight (without flow control, every frame would be).
#[test]
fn producer_consumer_slow_consumer_stays_within_the_window() {
    let out = run(
        "producer_consumer",
        &[
            "--frames",
            "24",
            "--size-mib",
            "8",
            "--window-mib",
            "32",
            "--consumer-delay-ms",
            "20",
        ],
    );
    assert!(out.contains("done: 24 frames"), "{out}");
    let peak = peak_in_flight_mib(&out);
    assert!((8.0..=32.0).contains(&peak), "peak {peak} MiB\n{out}");
}

#[test]
fn producer_consumer_fans_out_without_the_pool() {
    let out = run(
        "producer_consumer",
        &[
            "--frames",
            "16",
            "--size-mib",
            "1",
            "--consumers",
            "3",
            "--no-pool",
            "--rate",
            "200",
        ],
    );
    assert!(out.contains("done: 48 frames"), "{out}");
    assert!(out.contains("pool off"), "{out}");
    assert!(out.contains("checksums: all matched"), "{out}");
}

#[test]
fn producer_consumer_rejects_bad_arguments() {
    let status = Command::new(example_path("producer_consumer"))
        .arg("--frames")
        .arg("many")
        .output()
        .expect("spawn");
    assert!(!status.status.success());
}

#[test]
fn freeze_refuses_every_change() {
    let out = run("freeze", &[]);
    assert!(out.contains("ok: every change was refused"), "{out}");
    assert!(!out.contains("ALLOWED"), "{out}");
}

#[test]
fn request_reply_answers_on_reply_channels() {
    let out = run("request_reply", &[]);
    assert!(out.contains("sum of 1..=30: 465"), "{out}");
    assert!(out.contains("ok: 3 requests answered"), "{out}");
}

#[test]
fn broadcast_shares_one_file() {
    let out = run("broadcast", &[]);
    assert!(out.contains("ok: 3 consumers read the same"), "{out}");
}

#[test]
fn pipeline_forwards_without_copying() {
    let out = run("pipeline", &[]);
    assert!(
        out.contains("ok: the same buffer passed through 3 processes"),
        "{out}"
    );
}

#[test]
fn live_view_follows_updates_read_only() {
    let out = run("live_view", &[]);
    assert!(
        out.contains("ok: the reader followed 3 updates and could not write"),
        "{out}"
    );
}

#[test]
fn server_serves_many_clients_on_one_thread() {
    let out = run("server", &["--clients", "5", "--requests", "20"]);
    assert_eq!(out.matches("connected").count(), 5, "{out}");
    assert!(
        out.contains("ok: 5 clients, 100 requests served by one thread; 0 peers refused"),
        "{out}"
    );
}
