//! A refused peer does not end a server's accept loop (issue 10 item 6): every accept form
//! closes it, counts it and goes on waiting; `report_refusals` shows refusals to callers
//! that want them.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use memfile_ipc::raw::{RawSocket, RecvMode};
use memfile_ipc::{
    CredentialPolicy, Credentials, Error, Listener, connect_abstract, connect_abstract_raw,
};

/// Long enough for a loaded machine; a hang fails instead of blocking CI.
const LONG: Duration = Duration::from_secs(30);

fn unique_name(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("memfile-accept-loop-{tag}-{}-{n}", std::process::id())
}

/// Waits (bounded) for what the listener did with `peer`'s connection: a closed connection
/// is `Err(Disconnected)`.
fn peer_outcome(peer: &RawSocket) -> memfile_ipc::Result<usize> {
    let mut buf = [0u8; 64];
    peer.recv(
        &mut buf,
        &mut Vec::new(),
        RecvMode::Deadline(Instant::now() + LONG),
    )
}

/// A policy that refuses the first `refuse` peers and admits the rest.
fn refuse_first(refuse: usize) -> CredentialPolicy {
    let seen = AtomicUsize::new(0);
    CredentialPolicy::Custom(Arc::new(move |_: &Credentials| {
        if seen.fetch_add(1, Ordering::SeqCst) < refuse {
            Err("one of the first peers".to_owned())
        } else {
            Ok(())
        }
    }))
}

/// A policy that refuses every other peer, starting with the first.
fn every_other() -> CredentialPolicy {
    let n = AtomicUsize::new(0);
    CredentialPolicy::Custom(Arc::new(move |_: &Credentials| {
        if n.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
            Err("an even connection".to_owned())
        } else {
            Ok(())
        }
    }))
}

/// The scenario of the issue: a process of another uid connects to an abstract name once;
/// the server's `accept()?` loop goes on and serves the next legitimate client.
///
/// Fails on the old code (accept returned `Err(PeerRejected)`, ending the loop): the
/// legitimate client's `recv_timeout` then times out and the server thread returns the
/// error.
#[test]
fn a_refused_peer_of_another_uid_does_not_end_the_server_loop() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root to run a child as uid 65534");
        return;
    }
    let name = unique_name("uid");
    let listener = Arc::new(Listener::bind_abstract(&name).unwrap());
    let server_listener = listener.clone();
    // The loop as the examples write it: any error ends it.
    let server = std::thread::spawn(move || -> memfile_ipc::Result<Vec<u32>> {
        let mut seen_uids = Vec::new();
        loop {
            let (tx, rx, peer) = server_listener.accept_with_credentials::<u32, u32>()?;
            seen_uids.push(peer.uid);
            let n = rx.recv()?;
            tx.send(&(n + 1))?;
            if n == 0 {
                return Ok(seen_uids);
            }
        }
    });

    // The hostile peer: uid 65534, connects once; it sees its connection closed.
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_connect_as_nobody", "--ignored"])
        .args(["--test-threads", "1", "--quiet"])
        .env("ACCEPT_LOOP_CHILD_NAME", &name)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the refused child did not see Disconnected"
    );
    // The child saw Disconnected, so the server has refused it already.
    assert_eq!(listener.refused_count(), 1);

    // The next legitimate clients are served by the same loop.
    for n in [41, 0] {
        let (tx, rx) = connect_abstract::<u32, u32>(&name).unwrap();
        tx.send(&n).unwrap();
        match rx.recv_timeout(LONG) {
            Ok(answer) => assert_eq!(answer, n + 1),
            Err(e) => panic!(
                "the server loop did not serve a client after a refusal ({e}); it ended with {:?}",
                server.join().unwrap().map(|_| ())
            ),
        }
    }
    assert_eq!(server.join().unwrap().unwrap(), [0, 0]);
    assert_eq!(listener.refused_count(), 1);
}

/// Not a test on its own: the uid-65534 peer of the test above.
#[test]
#[ignore = "helper process, started by a_refused_peer_of_another_uid_does_not_end_the_server_loop"]
fn child_connect_as_nobody() {
    let name = std::env::var("ACCEPT_LOOP_CHILD_NAME").expect("run only as a child process");
    nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).unwrap();
    nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).unwrap();
    let peer = connect_abstract_raw(name.as_bytes()).unwrap();
    let outcome = peer_outcome(&peer);
    assert!(
        matches!(outcome, Err(Error::Disconnected { .. })),
        "{outcome:?}"
    );
}

/// Blocking `accept` waits past refused peers and returns the first admitted one; each
/// refused peer has been closed and counted.
#[test]
fn accept_waits_past_refused_peers() {
    let name = unique_name("blocking");
    let listener = Listener::bind_abstract(&name)
        .unwrap()
        .credential_policy(refuse_first(3));
    let refused: Vec<_> = (0..3)
        .map(|_| connect_abstract_raw(&name).unwrap())
        .collect();
    let (client_tx, _client_rx) = connect_abstract::<u8, u8>(&name).unwrap();
    client_tx.send(&7).unwrap();

    let (_tx, rx) = listener.accept::<u8, u8>().unwrap();
    assert_eq!(rx.recv().unwrap(), 7);
    assert_eq!(listener.refused_count(), 3);
    for peer in &refused {
        assert!(matches!(
            peer_outcome(peer),
            Err(Error::Disconnected { .. })
        ));
    }
}

/// `try_accept` closes the refused peers that were pending and says `WouldBlock` when no
/// admitted one was; `accept_timeout` goes on past refusals until its deadline.
#[test]
fn try_and_timeout_forms_keep_their_promises_past_refusals() {
    let name = unique_name("forms");
    let listener = Listener::bind_abstract(&name)
        .unwrap()
        .credential_policy(CredentialPolicy::Uids(vec![]));
    let a = connect_abstract_raw(&name).unwrap();
    let b = connect_abstract_raw(&name).unwrap();
    assert!(matches!(
        listener.try_accept::<(), ()>(),
        Err(Error::WouldBlock)
    ));
    assert_eq!(listener.refused_count(), 2);
    assert!(matches!(peer_outcome(&a), Err(Error::Disconnected { .. })));
    assert!(matches!(peer_outcome(&b), Err(Error::Disconnected { .. })));
    assert!(matches!(listener.try_accept_raw(), Err(Error::WouldBlock)));

    let c = connect_abstract_raw(&name).unwrap();
    let started = Instant::now();
    let r = listener.accept_with_credentials_timeout::<(), ()>(Duration::from_millis(100));
    assert!(
        matches!(r, Err(Error::Timeout { .. })),
        "{:?}",
        r.map(|_| ())
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(listener.refused_count(), 3);
    assert!(matches!(peer_outcome(&c), Err(Error::Disconnected { .. })));

    // An admitted peer after a refused one: the timed accept returns it.
    let listener = listener.credential_policy(refuse_first(1));
    let _d = connect_abstract_raw(&name).unwrap();
    let _e = connect_abstract_raw(&name).unwrap();
    let (_tx, _rx, peer) = listener
        .accept_with_credentials_timeout::<(), ()>(LONG)
        .unwrap();
    assert_eq!(peer.pid, std::process::id() as i32);
    assert_eq!(listener.refused_count(), 4);
}

/// With `report_refusals`, every form returns `PeerRejected` for each refused peer (and
/// still counts it); the listener goes on.
#[test]
fn report_refusals_shows_each_refusal_to_every_form() {
    let name = unique_name("report");
    let mut listener = Listener::bind_abstract(&name)
        .unwrap()
        .credential_policy(CredentialPolicy::Uids(vec![]))
        .report_refusals(true);
    assert!(listener.reports_refusals());
    let _peers: Vec<_> = (0..5)
        .map(|_| connect_abstract_raw(&name).unwrap())
        .collect();
    let rejected = |r: memfile_ipc::Result<()>| matches!(r, Err(Error::PeerRejected { pid, .. }) if pid == std::process::id() as i32);
    assert!(rejected(listener.accept::<(), ()>().map(|_| ())));
    assert!(rejected(listener.try_accept::<(), ()>().map(|_| ())));
    assert!(rejected(
        listener.accept_timeout::<(), ()>(LONG).map(|_| ())
    ));
    assert!(rejected(listener.accept_raw().map(|_| ())));
    let mut incoming = listener.incoming::<(), ()>();
    assert!(rejected(incoming.next().unwrap().map(|_| ())));
    assert_eq!(listener.refused_count(), 5);
    assert!(matches!(listener.try_accept_raw(), Err(Error::WouldBlock)));

    listener.set_report_refusals(false);
    let _peer = connect_abstract_raw(&name).unwrap();
    assert!(matches!(listener.try_accept_raw(), Err(Error::WouldBlock)));
    assert_eq!(listener.refused_count(), 6);
}

/// `incoming` yields admitted peers only, with their credentials, and goes on.
#[test]
fn incoming_skips_refused_peers() {
    let name = unique_name("incoming");
    let listener = Arc::new(
        Listener::bind_abstract(&name)
            .unwrap()
            .credential_policy(every_other()),
    );
    let server_listener = listener.clone();
    let server = std::thread::spawn(move || -> memfile_ipc::Result<Vec<u32>> {
        let mut got = Vec::new();
        for connection in server_listener.incoming::<(), u32>().take(3) {
            let (_tx, rx, peer) = connection?;
            assert_eq!(peer.pid, std::process::id() as i32);
            got.push(rx.recv()?);
        }
        Ok(got)
    });
    let mut refused = Vec::new();
    let mut admitted = Vec::new();
    for n in 0..3 {
        refused.push(connect_abstract_raw(&name).unwrap());
        let (tx, rx) = connect_abstract::<u32, ()>(&name).unwrap();
        tx.send(&n).unwrap();
        admitted.push((tx, rx));
    }
    assert_eq!(server.join().unwrap().unwrap(), [0, 1, 2]);
    assert_eq!(listener.refused_count(), 3);
    for peer in &refused {
        assert!(matches!(
            peer_outcome(peer),
            Err(Error::Disconnected { .. })
        ));
    }
}

/// The async forms: `AsyncListener::accept` and the `incoming` stream go on past refused
/// peers.
#[cfg(feature = "tokio")]
#[tokio::test(flavor = "current_thread")]
async fn async_accept_and_incoming_go_on_past_refused_peers() {
    use futures_core::Stream;
    use memfile_ipc::tokio::AsyncListener;
    use std::future::poll_fn;
    use std::pin::Pin;

    let name = unique_name("async");
    let listener = Listener::bind_abstract(&name)
        .unwrap()
        .credential_policy(every_other());
    let mut listener = AsyncListener::from_blocking(listener).unwrap();
    let refused_a = connect_abstract_raw(&name).unwrap();
    let (tx, _rx) = connect_abstract::<u32, ()>(&name).unwrap();
    tx.send(&1).unwrap();
    let (_stx, srx) = tokio::time::timeout(LONG, listener.accept::<(), u32>())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(srx.recv().await.unwrap(), 1);
    assert_eq!(listener.get_ref().refused_count(), 1);
    assert!(matches!(
        peer_outcome(&refused_a),
        Err(Error::Disconnected { .. })
    ));

    let refused_b = connect_abstract_raw(&name).unwrap();
    let (tx, _rx) = connect_abstract::<u32, ()>(&name).unwrap();
    tx.send(&2).unwrap();
    {
        let mut incoming = listener.incoming::<(), u32>();
        let next = tokio::time::timeout(LONG, poll_fn(|cx| Pin::new(&mut incoming).poll_next(cx)))
            .await
            .unwrap();
        let (_stx, srx, peer) = next.expect("the stream never ends").unwrap();
        assert_eq!(peer.pid, std::process::id() as i32);
        assert_eq!(srx.recv().await.unwrap(), 2);
    }
    assert_eq!(listener.get_ref().refused_count(), 2);
    assert!(matches!(
        peer_outcome(&refused_b),
        Err(Error::Disconnected { .. })
    ));

    // Reported refusals come out of the stream as errors, and the stream goes on.
    listener.set_report_refusals(true);
    listener.set_credential_policy(CredentialPolicy::Uids(vec![]));
    let _refused_c = connect_abstract_raw(&name).unwrap();
    let mut incoming = listener.incoming::<(), u32>();
    let next = poll_fn(|cx| Pin::new(&mut incoming).poll_next(cx)).await;
    assert!(matches!(next, Some(Err(Error::PeerRejected { .. }))));
}
