//! Multi-process scenarios through the facade's paths (`memfile::...`, `memfile::ipc::...`).
//!
//! The child is this test binary, re-run with `--exact child --ignored` and its role in
//! `MEMFILE_FACADE_CHILD`.

use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use memfile::ipc::{self, Fd, Listener, Sender};
use memfile::{Frozen, Seal};
use serde::{Deserialize, Serialize};

const ROLE_ENV: &str = "MEMFILE_FACADE_CHILD";
const SOCKET_ENV: &str = "MEMFILE_FACADE_SOCKET";

fn child_command(role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args(["--exact", "child", "--ignored", "--test-threads=1"]);
    cmd.env(ROLE_ENV, role);
    // The child's own test harness output would only clutter ours; its panics go to stderr.
    cmd.stdout(std::process::Stdio::null());
    cmd
}

/// The child's entry point: does nothing unless run by one of the tests below.
#[test]
#[ignore = "entry point of the child processes of the other tests"]
fn child() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("verify") => child_verify(),
        Ok("produce") => child_produce(),
        Ok("connect") => child_connect(),
        _ => {}
    }
}

#[derive(Serialize, Deserialize)]
struct Batch {
    buffers: Vec<Fd<Frozen>>,
    sums: Vec<u64>,
    reply: Sender<Verdict>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Verdict {
    sums_ok: Vec<bool>,
    /// What happened when the child tried to write to each buffer through its own fd.
    writes_refused: Vec<bool>,
}

fn sum(data: &[u8]) -> u64 {
    data.iter().map(|&b| u64::from(b)).sum()
}

fn child_verify() {
    let (_tx, rx) = ipc::from_parent::<(), Batch>().expect("from_parent");
    let batch = rx.recv().expect("recv batch");
    let sums_ok = batch
        .buffers
        .iter()
        .zip(&batch.sums)
        .map(|(b, &s)| sum(b) == s)
        .collect();
    let writes_refused = batch
        .buffers
        .iter()
        .map(|b| {
            // Reopen the received file for writing through /proc (the open succeeds: seals
            // do not refuse opens): the write is refused with EPERM.
            let path = format!("/proc/self/fd/{}", b.as_raw_fd());
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .expect("reopen for writing");
            std::os::unix::fs::FileExt::write_at(&f, b"x", 0)
                .is_err_and(|e| e.raw_os_error() == Some(libc::EPERM))
        })
        .collect();
    batch
        .reply
        .send(&Verdict {
            sums_ok,
            writes_refused,
        })
        .expect("reply");
}

#[test]
fn frozen_buffers_and_a_reply_channel_cross_processes() {
    let (mut child, tx, _rx) = ipc::spawn::<Batch, ()>(&mut child_command("verify")).unwrap();
    let sizes = [0usize, 1, 4096, 3 << 20];
    let buffers: Vec<Frozen> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Frozen::build("batch", n, |b| b.fill(i as u8 + 1)).unwrap())
        .collect();
    let sums = buffers.iter().map(|b| sum(b)).collect();
    let (reply, verdicts) = ipc::channel::<Verdict>().unwrap();
    let batch = Batch {
        buffers: buffers.into_iter().map(Fd::new).collect(),
        sums,
        reply,
    };
    tx.send(&batch).unwrap();
    let verdict = verdicts.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(verdict.sums_ok, vec![true; sizes.len()], "{verdict:?}");
    assert_eq!(
        verdict.writes_refused,
        vec![true; sizes.len()],
        "{verdict:?}"
    );
    assert!(child.wait().unwrap().success());
}

fn child_produce() {
    let (tx, _rx) = ipc::from_parent::<Fd<Frozen>, ()>().expect("from_parent");
    let frozen = Frozen::build("from-child", 1 << 20, |b| {
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i % 253) as u8;
        }
    })
    .expect("build");
    tx.send(&Fd::new(frozen)).expect("send");
    // Exit at once: the parent must still read every byte.
}

#[test]
fn a_frozen_buffer_outlives_the_process_that_made_it() {
    let (mut child, _tx, rx) = ipc::spawn::<(), Fd<Frozen>>(&mut child_command("produce")).unwrap();
    let frozen = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap()
        .into_inner();
    assert!(child.wait().unwrap().success());
    assert_eq!(frozen.len(), 1 << 20);
    assert!(
        frozen
            .iter()
            .enumerate()
            .all(|(i, &x)| x == (i % 253) as u8)
    );
    let seals = frozen.seals();
    assert!(seals.contains(Seal::Write | Seal::Shrink), "{seals}");
}

fn child_connect() {
    let path = std::env::var(SOCKET_ENV).expect("socket path");
    let (tx, rx) = ipc::connect::<String, String>(&path).expect("connect");
    let question = rx.recv().expect("question");
    tx.send(&format!("pid {} got: {question}", std::process::id()))
        .expect("answer");
}

#[test]
fn unrelated_processes_meet_through_a_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("facade.sock");
    let listener = Listener::bind(&path).unwrap();
    let mut child = child_command("connect")
        .env(SOCKET_ENV, &path)
        .spawn()
        .unwrap();
    let (tx, rx) = listener
        .accept_timeout::<String, String>(Duration::from_secs(30))
        .unwrap();
    assert_eq!(rx.peer_credentials().unwrap().pid, child.id() as i32);
    tx.send(&"hello".to_string()).unwrap();
    let answer = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(answer, format!("pid {} got: hello", child.id()));
    assert!(child.wait().unwrap().success());
    drop(listener);
    assert!(!path.exists(), "the socket file outlived its listener");
}
