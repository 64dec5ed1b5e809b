//! Shared by the `tokio_*` tests: both runtime flavors from one body, a timeout guard, and
//! re-executing this test binary as a child process.
#![allow(dead_code)] // each test file uses a part

use std::future::Future;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The environment variable that tells a re-executed test binary which child role to play.
pub const ROLE: &str = "MEMFILE_IPC_TEST_CHILD";

/// Long enough for a loaded CI machine, short enough that a hang fails the test.
pub const LONG: Duration = Duration::from_secs(60);

/// Generates `$name::current_thread` and `$name::multi_thread`, two `#[tokio::test]`s that
/// await the same future expression.
#[allow(unused_macros)]
macro_rules! both_runtimes {
    ($name:ident, $body:expr) => {
        mod $name {
            #[tokio::test(flavor = "current_thread")]
            async fn current_thread() {
                $body.await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn multi_thread() {
                $body.await
            }
        }
    };
}

/// Awaits `f`, failing the test if it takes longer than [`LONG`].
pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LONG, f).await.expect("timed out")
}

/// Polls `f` once, in the calling task: `Pending` means it has registered to be woken (a
/// test that must know a future is waiting checks this instead of sleeping and hoping the
/// future got as far as waiting meanwhile).
pub async fn poll_once<F: Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *f).poll(cx))).await
}

/// A command that runs this test binary's ignored test `child` with `role` in [`ROLE`]
/// (its harness output goes nowhere; its panics still reach stderr).
pub fn child_command(role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE, role)
    .stdout(Stdio::null());
    cmd
}
