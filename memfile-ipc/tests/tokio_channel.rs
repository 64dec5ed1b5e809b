//! Async endpoints within one process (feature `tokio`): round trips with fds and spilling,
//! `Stream`, backpressure, conversions both ways, limits and hostile packets, disconnects,
//! the async listener. Every test runs on the current-thread and the multi-thread runtime.
#![cfg(feature = "tokio")]

use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use memfile_core::Frozen;
use memfile_ipc::tokio::{
    AsyncListener, AsyncReceiver, AsyncSender, channel, connect, duplex_from_blocking,
};
use memfile_ipc::{CredentialPolicy, Error, Fd, Limits, Listener};
use serde::{Deserialize, Serialize};

#[macro_use]
mod util_tokio;
use util_tokio::{LONG, poll_once, within};

#[derive(Debug, Serialize, Deserialize)]
struct Frame {
    number: u64,
    pixels: Fd<Frozen>,
    #[serde(with = "serde_bytes")]
    inline: Vec<u8>,
}

fn frame(number: u64, inline_len: usize) -> Frame {
    let pixels = Frozen::build("pixels", 4096, |b| b.fill(number as u8)).unwrap();
    Frame {
        number,
        pixels: pixels.into(),
        inline: vec![number as u8 ^ 0x5A; inline_len],
    }
}

fn check(frame: &Frame, number: u64, inline_len: usize) {
    assert_eq!(frame.number, number);
    assert!(frame.pixels.iter().all(|&b| b == number as u8));
    assert_eq!(frame.inline.len(), inline_len);
    assert!(frame.inline.iter().all(|&b| b == number as u8 ^ 0x5A));
}

// ---------------------------------------------------------------------------------------

async fn round_trips_inline_and_spilled() {
    let (tx, rx) = channel::<Frame>().unwrap();
    let inline_limit = tx.get_ref().inline_limit();
    let sizes = [0, 100, inline_limit + 1, 3 << 20];
    for (i, &len) in sizes.iter().enumerate() {
        tx.send(&frame(i as u64, len)).await.unwrap();
        let got = within(rx.recv()).await.unwrap();
        check(&got, i as u64, len);
    }
}
both_runtimes!(round_trips, super::round_trips_inline_and_spilled());

// ---------------------------------------------------------------------------------------

async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    within(poll_fn(|cx| Pin::new(&mut *s).poll_next(cx))).await
}

async fn stream_yields_messages_errors_and_ends() {
    let (tx, rx) = channel::<u32>().unwrap();
    let mut rx = rx;
    let raw = tx.get_ref().raw().clone();
    tx.send(&1).await.unwrap();
    // A packet with a bad magic: one Err item, and the stream goes on.
    raw.send(&[IoSlice::new(&[b'X'; 24])], &[]).unwrap();
    tx.send(&2).await.unwrap();
    drop((tx, raw));
    assert_eq!(next(&mut rx).await.unwrap().unwrap(), 1);
    let e = next(&mut rx).await.unwrap().unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
    assert!(e.to_string().contains("magic"), "{e}");
    assert_eq!(next(&mut rx).await.unwrap().unwrap(), 2);
    assert!(next(&mut rx).await.is_none());
    assert!(next(&mut rx).await.is_none(), "stays ended");
}
both_runtimes!(stream, super::stream_yields_messages_errors_and_ends());

// ---------------------------------------------------------------------------------------

/// `send().await` waits while the socket is full and completes once the receiver drains.
async fn send_waits_for_room() {
    let (tx, rx) = channel::<Vec<u8>>().unwrap();
    let msg = vec![7u8; 1000];
    let mut queued = 0u32;
    loop {
        match tx.try_send(&msg) {
            Ok(()) => queued += 1,
            Err(Error::WouldBlock) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(queued < 100_000, "socket never filled up");
    }
    let last_msg = vec![9u8; 10];
    let mut last = Box::pin(tx.send(&last_msg));
    assert!(
        poll_once(&mut last).await.is_pending(),
        "send completed on a full socket"
    );
    for _ in 0..queued {
        assert_eq!(within(rx.recv()).await.unwrap(), msg);
    }
    within(last).await.unwrap();
    assert_eq!(within(rx.recv()).await.unwrap(), vec![9u8; 10]);
    assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
}
both_runtimes!(backpressure, super::send_waits_for_room());

// ---------------------------------------------------------------------------------------

/// Blocking -> async -> blocking for both halves, also converted separately (the second
/// registration of the same socket then uses a duplicate fd).
async fn conversions_both_ways() {
    let dir = tempdir();
    let path = dir.join("sock");
    let listener = Listener::bind(&path).unwrap();
    let (client_tx, client_rx) = memfile_ipc::connect::<String, u64>(&path).unwrap();
    let (server_tx, server_rx) = listener.accept::<u64, String>().unwrap();

    // Separately: the halves share one socket fd.
    let atx = AsyncSender::from_blocking(client_tx).unwrap();
    let arx = AsyncReceiver::from_blocking(client_rx).unwrap();
    // Together.
    let (stx, srx) = duplex_from_blocking(server_tx, server_rx).unwrap();

    for i in 0..50u64 {
        atx.send(&"x".repeat(i as usize)).await.unwrap();
        let got = within(srx.recv()).await.unwrap();
        stx.send(&(got.len() as u64)).await.unwrap();
        assert_eq!(within(arx.recv()).await.unwrap(), i);
    }
    // Back to blocking, used from another thread while async ones keep going.
    let (tx, rx) = (atx.into_blocking(), arx.into_blocking());
    let worker = std::thread::spawn(move || {
        for _ in 0..10 {
            let n = rx.recv().unwrap();
            tx.send(&"y".repeat(n as usize)).unwrap();
        }
        (tx, rx)
    });
    for i in 0..10u64 {
        stx.send(&i).await.unwrap();
        assert_eq!(within(srx.recv()).await.unwrap(), "y".repeat(i as usize));
    }
    let (tx, rx) = worker.join().unwrap();
    // And async again, now in the other order.
    let arx = AsyncReceiver::from_blocking(rx).unwrap();
    let atx = AsyncSender::from_blocking(tx).unwrap();
    atx.send(&"again".into()).await.unwrap();
    assert_eq!(within(srx.recv()).await.unwrap(), "again");
    stx.send(&5).await.unwrap();
    assert_eq!(within(arx.recv()).await.unwrap(), 5);
    assert_eq!(
        arx.peer_credentials().unwrap().pid,
        std::process::id() as i32
    );
}
both_runtimes!(conversions, super::conversions_both_ways());

#[test]
fn conversion_outside_a_runtime_is_an_error() {
    let (tx, rx) = memfile_ipc::channel::<u8>().unwrap();
    let e = AsyncReceiver::from_blocking(rx).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("tokio"), "{e}");
    assert!(matches!(
        AsyncSender::from_blocking(tx),
        Err(Error::Io { .. })
    ));
}

// ---------------------------------------------------------------------------------------

/// The receiver's limits and checks are the blocking receiver's; a rejected message does
/// not end the channel.
async fn limits_and_rejections() {
    let (tx, rx) = channel::<String>().unwrap();
    let rx = rx.with_limits(Limits::default().max_message_bytes(64));
    tx.send(&"a".repeat(1000)).await.unwrap();
    tx.send(&"ok".into()).await.unwrap();
    let e = within(rx.recv()).await.unwrap_err();
    assert!(matches!(e, Error::MessageTooLarge { max: 64, .. }), "{e:?}");
    assert_eq!(within(rx.recv()).await.unwrap(), "ok");

    // A sender's own limits refuse before anything is sent.
    let tx = tx.with_limits(Limits::default().max_message_bytes(8));
    let e = tx.send(&"b".repeat(100)).await.unwrap_err();
    assert!(matches!(e, Error::MessageTooLarge { max: 8, .. }), "{e:?}");
    assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
}
both_runtimes!(limits, super::limits_and_rejections());

async fn disconnect_is_reported_both_ways() {
    let (tx, rx) = channel::<u8>().unwrap();
    let (tx2, rx2) = channel::<u8>().unwrap();
    // The receive is waiting (polled, pending) when its peer goes away.
    let mut waiter = Box::pin(rx2.recv());
    assert!(poll_once(&mut waiter).await.is_pending());
    drop(tx2);
    assert!(matches!(
        within(waiter).await,
        Err(Error::Disconnected { .. })
    ));
    drop(rx);
    assert!(matches!(tx.send(&1).await, Err(Error::Disconnected { .. })));
}
both_runtimes!(disconnect, super::disconnect_is_reported_both_ways());

// ---------------------------------------------------------------------------------------

/// Several tasks wait on one receiver: every message goes to exactly one of them.
async fn many_waiters_share_the_messages() {
    let (tx, rx) = channel::<u32>().unwrap();
    let rx = Arc::new(rx);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let rx = rx.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    match rx.recv().await {
                        Ok(n) => got.push(n),
                        Err(Error::Disconnected { .. }) => return got,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for i in 0..2000 {
        tx.send(&i).await.unwrap();
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    drop(tx);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(within(t).await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..2000).collect::<Vec<_>>());
}
both_runtimes!(many_waiters, super::many_waiters_share_the_messages());

// ---------------------------------------------------------------------------------------

fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "memfile-ipc-tokio-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn listener_accepts_and_refuses() {
    let dir = tempdir();
    let path = dir.join("sock");
    let mut listener = AsyncListener::bind(&path).unwrap();
    assert_eq!(listener.get_ref().local_path(), Some(path.as_path()));

    // A peer connecting from another thread (connect is blocking) while accept waits.
    let p = path.clone();
    let client = std::thread::spawn(move || {
        let (tx, rx) = memfile_ipc::connect::<String, String>(&p).unwrap();
        tx.send(&"ping".into()).unwrap();
        rx.recv().unwrap()
    });
    let (tx, rx) = within(listener.accept::<String, String>()).await.unwrap();
    let ping = within(rx.recv()).await.unwrap();
    tx.send(&format!("{ping} pong")).await.unwrap();
    assert_eq!(client.join().unwrap(), "ping pong");

    // A refused peer is an error for that accept (when refusals are reported); the
    // listener goes on.
    listener.set_report_refusals(true);
    listener.set_credential_policy(CredentialPolicy::Custom(Arc::new(|c| {
        Err(format!("nobody, not even pid {}", c.pid))
    })));
    let (_ctx, crx) = connect::<u8, u8>(&path).unwrap();
    let e = within(listener.accept_raw()).await.unwrap_err();
    assert!(matches!(e, Error::PeerRejected { .. }), "{e:?}");
    assert!(matches!(
        within(crx.recv()).await,
        Err(Error::Disconnected { .. })
    ));
    listener.set_credential_policy(CredentialPolicy::SameUid);
    let (_ctx2, _crx2) = connect::<u8, u8>(&path).unwrap();
    let (_sock, peer) = within(listener.accept_raw()).await.unwrap();
    assert_eq!(peer.pid, std::process::id() as i32);

    // With nobody connecting, accept waits (and the timeout drops it).
    let pending = tokio::time::timeout(Duration::from_millis(20), listener.accept_raw()).await;
    assert!(pending.is_err(), "nobody connected");
    // Back to blocking: same socket, same file.
    let blocking = listener.into_blocking();
    let (_c3tx, _c3rx) = memfile_ipc::connect::<u8, u8>(&path).unwrap();
    blocking.accept_timeout::<u8, u8>(LONG).unwrap();
    drop(blocking);
    assert!(
        !path.exists(),
        "the socket file is removed with the listener"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
both_runtimes!(listener, super::listener_accepts_and_refuses());

// ---------------------------------------------------------------------------------------

/// The async endpoints' futures are `Send` (so `tokio::spawn` takes them on a multi-thread
/// runtime), and the endpoints are `Send + Sync`.
#[test]
fn futures_and_endpoints_are_send() {
    fn send_sync<T: Send + Sync>() {}
    fn is_send<F: std::future::Future + Send>(f: F) -> F {
        f
    }
    send_sync::<AsyncSender<Frame>>();
    send_sync::<AsyncReceiver<Frame>>();
    send_sync::<AsyncListener>();
    #[allow(clippy::let_underscore_future)]
    fn check(tx: &AsyncSender<Frame>, rx: &AsyncReceiver<Frame>, l: &AsyncListener, f: &Frame) {
        let _ = is_send(tx.send(f));
        let _ = is_send(rx.recv());
        let _ = is_send(l.accept::<u8, u8>());
    }
    let _ = check;
}
