//! A buffer forwarded through a chain of three processes without being copied.
//!
//! ```text
//! cargo run --example pipeline
//! ```
//!
//! The first process spawns stage 1, which spawns stage 2, which spawns stage 3. The frozen
//! buffer goes down the chain as an fd; every stage checks it and forwards the same file.
//! The last stage's report comes back up the chain.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use memfile::Frozen;
use memfile::ipc::{self, Fd};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Packet {
    buffer: Fd<Frozen>,
    /// (pid, inode, byte sum) as seen by every stage so far.
    seen: Vec<(u32, u64, u64)>,
}

const STAGE_ENV: &str = "MEMFILE_EXAMPLE_STAGE";
const STAGES: u32 = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let stage: u32 = match std::env::var(STAGE_ENV) {
        Ok(s) => s.parse()?,
        Err(_) => 0,
    };
    if stage == 0 { source() } else { forward(stage) }
}

fn spawn_stage(
    stage: u32,
) -> ipc::Result<(
    ipc::ChildProcess,
    ipc::Sender<Packet>,
    ipc::Receiver<Packet>,
)> {
    let exe = std::env::current_exe().map_err(|e| ipc::Error::Io {
        op: "current_exe",
        fd: None,
        source: e,
    })?;
    let mut cmd = Command::new(exe);
    cmd.env(STAGE_ENV, stage.to_string());
    ipc::spawn::<Packet, Packet>(&mut cmd)
}

fn source() -> Result<(), Box<dyn std::error::Error>> {
    let buffer = Frozen::build("pipeline", 8 << 20, |buf| buf.fill(7))?;
    let sum = byte_sum(&buffer);
    let inode = inode_of(&buffer)?;
    let (mut child, tx, rx) = spawn_stage(1)?;
    tx.send(&Packet {
        buffer: Fd::new(buffer),
        seen: vec![(std::process::id(), inode, sum)],
    })?;
    let report = rx.recv()?;
    for (i, (pid, ino, s)) in report.seen.iter().enumerate() {
        println!("stage {i} (pid {pid}): inode {ino}, byte sum {s}");
    }
    assert_eq!(report.seen.len(), STAGES as usize + 1);
    assert!(
        report
            .seen
            .iter()
            .all(|&(_, ino, s)| ino == inode && s == sum)
    );
    assert!(child.wait()?.success());
    println!("ok: the same buffer passed through {STAGES} processes, never copied");
    Ok(())
}

fn forward(stage: u32) -> Result<(), Box<dyn std::error::Error>> {
    let (up_tx, up_rx) = ipc::from_parent::<Packet, Packet>()?;
    let mut packet = up_rx.recv()?;
    packet.seen.push((
        std::process::id(),
        inode_of(&packet.buffer)?,
        byte_sum(&packet.buffer),
    ));
    if stage == STAGES {
        up_tx.send(&packet)?;
        return Ok(());
    }
    let (mut child, down_tx, down_rx) = spawn_stage(stage + 1)?;
    down_tx.send(&packet)?;
    up_tx.send(&down_rx.recv()?)?;
    assert!(child.wait()?.success());
    Ok(())
}

/// The inode of the file behind `buffer` (`stat` through `/proc/self/fd`, no extra fd).
fn inode_of(buffer: &Frozen) -> std::io::Result<u64> {
    Ok(std::fs::metadata(format!("/proc/self/fd/{}", buffer.as_raw_fd()))?.ino())
}

fn byte_sum(data: &[u8]) -> u64 {
    data.iter().map(|&b| u64::from(b)).sum()
}
