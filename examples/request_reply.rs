//! A request that carries its own reply channel.
//!
//! ```text
//! cargo run --example request_reply
//! ```
//!
//! The client makes a fresh channel per request and sends its `Sender` half inside the
//! request: the server answers on it. The reply channel travels as an fd (`SCM_RIGHTS`).

use std::process::Command;

use memfile::ipc::{self, Sender};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Request {
    numbers: Vec<u64>,
    /// Where to send the answer.
    reply: Sender<Reply>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    sum: u64,
    server_pid: u32,
}

const ROLE_ENV: &str = "MEMFILE_EXAMPLE_ROLE";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os(ROLE_ENV).is_some_and(|r| r == "server") {
        return server();
    }
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(ROLE_ENV, "server");
    // The server gets requests from us; it never sends on the spawn channel itself.
    let (mut child, requests, _unused) = ipc::spawn::<Option<Request>, ()>(&mut cmd)?;

    for n in 1..=3u64 {
        let (reply, answers) = ipc::channel::<Reply>()?;
        let numbers: Vec<u64> = (1..=n * 10).collect();
        let expected: u64 = numbers.iter().sum();
        requests.send(&Some(Request { numbers, reply }))?;
        let answer = answers.recv()?;
        println!(
            "sum of 1..={}: {} (from server pid {})",
            n * 10,
            answer.sum,
            answer.server_pid
        );
        assert_eq!(answer.sum, expected);
    }
    requests.send(&None)?;
    let status = child.wait()?;
    assert!(status.success(), "server failed: {status}");
    println!("ok: 3 requests answered on their own reply channels");
    Ok(())
}

fn server() -> Result<(), Box<dyn std::error::Error>> {
    let (_unused, requests) = ipc::from_parent::<(), Option<Request>>()?;
    while let Some(req) = requests.recv()? {
        let reply = Reply {
            sum: req.numbers.iter().sum(),
            server_pid: std::process::id(),
        };
        req.reply.send(&reply)?;
    }
    Ok(())
}
