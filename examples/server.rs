//! A blocking server that serves many clients on one thread.
//!
//! ```text
//! cargo run --example server -- [--clients N] [--requests M]
//! ```
//!
//! The server puts its `Listener` and every client's `Receiver` into one
//! `ipc::select::ReceiverSet` and handles whatever is ready, fairly, one event at a time:
//! a new connection, a request, or a client leaving. The clients are separate processes,
//! started *before* the server binds its socket: they wait for it with `ipc::retry_connect`.
//! Each request carries a sealed buffer (`Fd<Frozen>`); the server answers with its sum.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use memfile::Frozen;
use memfile::ipc::select::{Event, ReceiverSet};
use memfile::ipc::{self, CredentialPolicy, Credentials, Fd, Listener, Receiver, Sender};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Request {
    seq: u32,
    payload: Fd<Frozen>,
}

#[derive(Serialize, Deserialize)]
struct Reply {
    seq: u32,
    sum: u64,
}

/// What the server's set delivers: a new client, or a request from one.
enum In {
    Client(Sender<Reply>, Receiver<Request>, Credentials),
    Request(Request),
}

const ROLE_ENV: &str = "MEMFILE_EXAMPLE_ROLE";
const PATH_ENV: &str = "MEMFILE_EXAMPLE_SOCKET";
const LONG: Duration = Duration::from_secs(30);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |flag: &str, default: u32| -> Result<u32, Box<dyn std::error::Error>> {
        match args.iter().position(|a| a == flag) {
            None => Ok(default),
            Some(i) => Ok(args.get(i + 1).ok_or("missing value")?.parse()?),
        }
    };
    let requests = number("--requests", 10)?;
    if std::env::var_os(ROLE_ENV).is_some_and(|r| r == "client") {
        let path = PathBuf::from(std::env::var_os(PATH_ENV).ok_or("no socket path")?);
        return client(&path, requests);
    }
    let clients = number("--clients", 4)?;

    let dir = std::env::temp_dir().join(format!("memfile-server-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("server.sock");
    let result = serve(&path, clients, requests);
    std::fs::remove_dir_all(&dir)?;
    result
}

fn serve(path: &Path, clients: u32, requests: u32) -> Result<(), Box<dyn std::error::Error>> {
    // The clients start first, and wait for the socket.
    let mut children = Vec::new();
    for _ in 0..clients {
        let child = Command::new(std::env::current_exe()?)
            .args(["--requests", &requests.to_string()])
            .env(ROLE_ENV, "client")
            .env(PATH_ENV, path)
            .spawn()?;
        children.push(child);
    }

    // Ready for `connect` as soon as `bind` returns. Peers of another uid are refused
    // (closed, counted) without ever reaching the loop below.
    let listener = Listener::bind(path)?;
    let mut set = ReceiverSet::new();
    let listener_key = set.add_listener(listener, In::Client);
    let mut replies = HashMap::new();
    let (mut connected, mut served, mut finished) = (0, 0, 0);
    while finished < clients {
        match set.select()? {
            Event::Message(_, In::Client(tx, rx, peer)) => {
                connected += 1;
                println!("client pid {} connected", peer.pid);
                replies.insert(set.add(rx, In::Request), tx);
            }
            Event::Message(key, In::Request(request)) => {
                let sum = request.payload.iter().map(|&b| u64::from(b)).sum();
                let reply = Reply {
                    seq: request.seq,
                    sum,
                };
                // Bounded: a client that stops reading its replies cannot stall the others.
                if let Err(e) = replies[&key].send_timeout(&reply, Duration::from_secs(1)) {
                    eprintln!("dropping client {key:?}: {e}");
                    replies.remove(&key);
                    set.remove(key);
                    finished += 1;
                    continue;
                }
                served += 1;
            }
            // A bad message from one client: reported, the client stays.
            Event::Error(key, e) => eprintln!("client {key:?}: {e}"),
            Event::Closed(key, _) => {
                replies.remove(&key);
                finished += 1;
            }
        }
    }
    for mut child in children {
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("a client failed: {status}").into());
        }
    }
    // The set still holds the listener; its socket file goes when the set is dropped.
    let refused = set
        .listener_mut(listener_key)
        .map_or(0, |listener| listener.refused_count());
    println!(
        "ok: {connected} clients, {served} requests served by one thread; {refused} peers refused"
    );
    Ok(())
}

fn client(path: &Path, requests: u32) -> Result<(), Box<dyn std::error::Error>> {
    // The server may not have bound its socket yet: retry until it has (ENOENT,
    // ECONNREFUSED), checking that it runs as our own user before sending anything.
    let (tx, rx) = ipc::retry_connect(LONG, || {
        ipc::connect_with_policy::<Request, Reply>(path, CredentialPolicy::SameUid)
    })?;
    let me = std::process::id();
    for seq in 0..requests {
        let fill = (me as u8).wrapping_add(seq as u8);
        let payload = Frozen::build("request", 4096, |buf| buf.fill(fill))?;
        tx.send(&Request {
            seq,
            payload: payload.into(),
        })?;
        let reply = rx.recv_timeout(LONG)?;
        if reply.seq != seq || reply.sum != 4096 * u64::from(fill) {
            return Err(format!("wrong reply to request {seq}").into());
        }
    }
    Ok(())
}
