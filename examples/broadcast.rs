//! One frozen buffer sent to several consumer processes at once, with zero copies.
//!
//! ```text
//! cargo run --example broadcast
//! ```
//!
//! Every consumer maps the very same pages: they report the inode of the file they
//! received, which is the inode of the producer's file. The producer sends through a
//! [`Publisher`]: one `publish` reaches every subscriber over its own bounded channel.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use memfile::Frozen;
use memfile::ipc::{self, Fd, FullPolicy, Publisher};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Shared {
    buffer: Fd<Frozen>,
}

#[derive(Serialize, Deserialize)]
struct Report {
    pid: u32,
    inode: u64,
    sum: u64,
}

const ROLE_ENV: &str = "MEMFILE_EXAMPLE_ROLE";
const CONSUMERS: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os(ROLE_ENV).is_some_and(|r| r == "consumer") {
        return consumer();
    }
    let buffer = Frozen::build("broadcast", 16 << 20, |buf| {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
    })?;
    let expected = byte_sum(&buffer);
    let inode = inode_of(&buffer)?;

    let publisher = Publisher::new(FullPolicy::Block);
    let mut consumers = Vec::new();
    for _ in 0..CONSUMERS {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.env(ROLE_ENV, "consumer");
        let (child, tx, rx) = ipc::spawn::<Shared, Report>(&mut cmd)?;
        publisher.subscribe(tx);
        consumers.push((child, rx));
    }
    // `clone` is cheap: another handle to the same mapping; only the fd is sent, once per
    // subscriber.
    let published = publisher.publish(&Shared {
        buffer: Fd::new(buffer.clone()),
    })?;
    assert_eq!(published.delivered, CONSUMERS);
    for (mut child, rx) in consumers {
        let report = rx.recv()?;
        println!(
            "consumer pid {}: inode {} (producer's: {inode}), sum {}",
            report.pid, report.inode, report.sum
        );
        assert_eq!(
            report.inode, inode,
            "a consumer got a copy, not the same file"
        );
        assert_eq!(report.sum, expected);
        assert!(child.wait()?.success());
    }
    println!(
        "ok: {CONSUMERS} consumers read the same {} MiB buffer",
        buffer.len() >> 20
    );
    Ok(())
}

fn consumer() -> Result<(), Box<dyn std::error::Error>> {
    let (tx, rx) = ipc::from_parent::<Report, Shared>()?;
    let Shared { buffer } = rx.recv()?;
    let inode = inode_of(&buffer)?;
    tx.send(&Report {
        pid: std::process::id(),
        inode,
        sum: byte_sum(&buffer),
    })?;
    Ok(())
}

fn byte_sum(data: &[u8]) -> u64 {
    data.iter().map(|&b| u64::from(b)).sum()
}

/// The inode of the file behind `buffer` (`stat` through `/proc/self/fd`, no extra fd).
fn inode_of(buffer: &Frozen) -> std::io::Result<u64> {
    Ok(std::fs::metadata(format!("/proc/self/fd/{}", buffer.as_raw_fd()))?.ino())
}
