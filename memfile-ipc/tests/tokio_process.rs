//! Async endpoints across real processes (feature `tokio`): this test binary re-executes
//! itself as the child (`--exact child`, role in `MEMFILE_IPC_TEST_CHILD`) through the
//! blocking `memfile_ipc::spawn`. The parent is async; the child uses the blocking API, or
//! starts with it and goes async. Every test runs on both runtime flavors.
#![cfg(feature = "tokio")]

use memfile_core::Frozen;
use memfile_ipc::tokio::{AsyncReceiver, AsyncSender, duplex_from_blocking};
use memfile_ipc::{ChildProcess, Error, Fd, Sender, from_parent, spawn};
use serde::{Deserialize, Serialize};

#[macro_use]
mod util_tokio;
use util_tokio::{ROLE, child_command, poll_once, within};

/// Starts the child with the blocking API and takes the parent's end async.
fn spawn_child<Tx, Rx>(role: &str) -> (ChildProcess, AsyncSender<Tx>, AsyncReceiver<Rx>) {
    let (child, tx, rx) = spawn(&mut child_command(role)).unwrap();
    let (tx, rx) = duplex_from_blocking(tx, rx).unwrap();
    (child, tx, rx)
}

/// Reaps the child without blocking the runtime's thread.
async fn expect_success(mut child: ChildProcess) {
    let status = within(tokio::task::spawn_blocking(move || child.wait()))
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "child failed: {status}");
}

/// The child side of every test: dispatches on the role. Ignored in normal runs.
#[test]
#[ignore = "entry point of the child processes the other tests spawn"]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    match role.as_str() {
        "blocking_worker" => child_blocking_worker(),
        "async_worker" => child_async_worker(),
        other => panic!("unknown role {other}"),
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum Job {
    /// Sum the bytes of a sealed buffer and reply on the given channel.
    Sum {
        id: u32,
        data: Fd<Frozen>,
        reply: Sender<(u32, u64)>,
    },
    /// Send back a buffer of `len` bytes of `fill` (spilled when large).
    Make {
        len: usize,
        fill: u8,
    },
    Quit,
}

#[derive(Debug, Serialize, Deserialize)]
struct Made {
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
    frozen: Fd<Frozen>,
}

fn sum(bytes: &[u8]) -> u64 {
    bytes.iter().map(|&b| u64::from(b)).sum()
}

fn make(len: usize, fill: u8) -> Made {
    Made {
        bytes: vec![fill; len],
        frozen: Frozen::from_bytes("made", &vec![fill; len]).unwrap().into(),
    }
}

/// Serves jobs with the blocking API.
fn child_blocking_worker() {
    let (tx, rx) = from_parent::<Made, Job>().unwrap();
    for job in &rx {
        match job.unwrap() {
            Job::Sum { id, data, reply } => reply.send(&(id, sum(&data))).unwrap(),
            Job::Make { len, fill } => tx.send(&make(len, fill)).unwrap(),
            Job::Quit => return,
        }
    }
}

/// Starts with the blocking API (`from_parent`), then goes async on its own runtime.
fn child_async_worker() {
    let (tx, rx) = from_parent::<Made, Job>().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, rx) = duplex_from_blocking(tx, rx).unwrap();
        loop {
            match rx.recv().await {
                Ok(Job::Sum { id, data, reply }) => {
                    let reply = AsyncSender::from_blocking(reply).unwrap();
                    reply.send(&(id, sum(&data))).await.unwrap();
                }
                Ok(Job::Make { len, fill }) => tx.send(&make(len, fill)).await.unwrap(),
                Ok(Job::Quit) | Err(Error::Disconnected { .. }) => return,
                Err(e) => panic!("{e}"),
            }
        }
    });
}

async fn serve_jobs(role: &str) {
    let (child, tx, rx) = spawn_child::<Job, Made>(role);
    let (reply_tx, reply_rx) = memfile_ipc::tokio::channel::<(u32, u64)>().unwrap();
    for id in 0..20u32 {
        let data = Frozen::build("job", 10_000 + id as usize, |b| b.fill(3)).unwrap();
        tx.send(&Job::Sum {
            id,
            data: data.into(),
            reply: reply_tx.get_ref().clone(),
        })
        .await
        .unwrap();
        let (got_id, total) = within(reply_rx.recv()).await.unwrap();
        assert_eq!((got_id, total), (id, 3 * (10_000 + u64::from(id))));
    }
    // Small and spilled replies.
    for (len, fill) in [(10, 1u8), (2 << 20, 2u8)] {
        tx.send(&Job::Make { len, fill }).await.unwrap();
        let made = within(rx.recv()).await.unwrap();
        assert_eq!(made.bytes.len(), len);
        assert!(made.bytes.iter().all(|&b| b == fill));
        assert_eq!(made.frozen.len(), len);
        assert!(made.frozen.iter().all(|&b| b == fill));
    }
    tx.send(&Job::Quit).await.unwrap();
    assert!(matches!(
        within(rx.recv()).await,
        Err(Error::Disconnected { .. })
    ));
    expect_success(child).await;
}

both_runtimes!(
    async_parent_blocking_child,
    super::serve_jobs("blocking_worker")
);
both_runtimes!(async_parent_async_child, super::serve_jobs("async_worker"));

// ---------------------------------------------------------------------------------------

/// A child that dies mid-conversation: an async `recv` that is waiting wakes up with
/// `Disconnected`, and `send` reports it too.
async fn child_dies() {
    let (mut child, tx, rx) = spawn_child::<Job, Made>("blocking_worker");
    tx.send(&Job::Make { len: 1, fill: 1 }).await.unwrap();
    within(rx.recv()).await.unwrap();
    // The receive is waiting (polled, pending) when the child dies.
    let mut waiting = Box::pin(rx.recv());
    assert!(poll_once(&mut waiting).await.is_pending());
    child.kill().unwrap();
    let r = within(waiting).await;
    assert!(matches!(r, Err(Error::Disconnected { .. })), "{r:?}");
    assert!(matches!(
        tx.send(&Job::Quit).await,
        Err(Error::Disconnected { .. })
    ));
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success());
}
both_runtimes!(child_killed, super::child_dies());
