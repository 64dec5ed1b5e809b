//! `ReceiverSet`: many receivers (of different message types) and listeners on one thread,
//! fairly, with disconnections reported once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use memfile_ipc::select::{Event, Key, ReceiverSet};
use memfile_ipc::{
    CredentialPolicy, Credentials, Error, Limits, Listener, Receiver, Sender, channel,
    connect_abstract, connect_abstract_raw,
};

const LONG: Duration = Duration::from_secs(30);

fn unique_name(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("memfile-select-{tag}-{}-{n}", std::process::id())
}

#[derive(Debug, PartialEq)]
enum Msg {
    Number(u64),
    Text(String),
}

/// Waits for the next event, failing the test instead of hanging.
fn next<M>(set: &mut ReceiverSet<M>) -> Event<M> {
    set.select_timeout(LONG).expect("select")
}

#[test]
fn receivers_of_different_types_deliver_through_one_enum() {
    let (num_tx, num_rx) = channel::<u64>().unwrap();
    let (text_tx, text_rx) = channel::<String>().unwrap();
    let mut set = ReceiverSet::new();
    let num = set.add(num_rx, Msg::Number);
    let text = set.add(text_rx, Msg::Text);
    assert_ne!(num, text);
    assert_eq!(set.len(), 2);

    num_tx.send(&7).unwrap();
    match next(&mut set) {
        Event::Message(key, Msg::Number(7)) => assert_eq!(key, num),
        other => panic!("{other:?}"),
    }
    text_tx.send(&"hi".to_owned()).unwrap();
    match next(&mut set) {
        Event::Message(key, Msg::Text(t)) => assert_eq!((key, t.as_str()), (text, "hi")),
        other => panic!("{other:?}"),
    }
    // Nothing queued: the three waiting forms say so, each its own way.
    assert!(matches!(set.try_select(), Err(Error::WouldBlock)));
    assert!(matches!(
        set.select_timeout(Duration::from_millis(10)),
        Err(Error::Timeout { .. })
    ));
    assert!(matches!(
        set.select_timeout(Duration::ZERO),
        Err(Error::Timeout { .. })
    ));
}

/// Two receivers with long queues are served in turn, and a third that gets one message
/// late is served within one round: no receiver starves another.
///
/// Fails with a set that always scans from its first source and polls again after each
/// event (the first busy receiver would be served 50 times in a row).
#[test]
fn busy_receivers_do_not_starve_the_others() {
    let (a_tx, a_rx) = channel::<u32>().unwrap();
    let (b_tx, b_rx) = channel::<u32>().unwrap();
    let (c_tx, c_rx) = channel::<u32>().unwrap();
    let mut set = ReceiverSet::new();
    let a = set.add(a_rx, |n| n);
    let b = set.add(b_rx, |n| n);
    let c = set.add(c_rx, |n| n);
    for n in 0..50 {
        a_tx.send(&n).unwrap();
        b_tx.send(&n).unwrap();
    }
    let mut served: Vec<Key> = Vec::new();
    for _ in 0..20 {
        match next(&mut set) {
            Event::Message(key, _) => served.push(key),
            other => panic!("{other:?}"),
        }
    }
    // Strict alternation between the two busy ones.
    for pair in served.chunks(2) {
        assert!(pair.contains(&a) && pair.contains(&b), "{served:?}");
    }
    // A late message on `c`: served before either busy receiver gets two more turns.
    c_tx.send(&99).unwrap();
    let mut until_c = 0;
    loop {
        match next(&mut set) {
            Event::Message(key, 99) if key == c => break,
            Event::Message(..) => until_c += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(
        until_c <= 2,
        "c waited {until_c} events behind the busy receivers"
    );
    // And each busy receiver still delivers its messages in order.
    let mut next_of: HashMap<Key, u32> = HashMap::from([(a, 0), (b, 0)]);
    for key in &served {
        *next_of.get_mut(key).unwrap() += 1;
    }
    while next_of.values().any(|&n| n < 50) {
        match next(&mut set) {
            Event::Message(key, n) => {
                let expected = next_of.get_mut(&key).unwrap();
                // Those taken while waiting for `c` were not recorded: catch up.
                assert!(n >= *expected, "{key:?}: {n} after {expected}");
                *expected = n + 1;
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A receiver whose peer closed delivers what was queued, then is reported closed once and
/// leaves the set; an empty set says `Disconnected` instead of waiting for ever.
#[test]
fn a_disconnected_receiver_is_reported_once_and_dropped() {
    let (tx, rx) = channel::<u8>().unwrap();
    let (other_tx, other_rx) = channel::<u8>().unwrap();
    let mut set = ReceiverSet::new();
    let key = set.add(rx, |n| n);
    let other = set.add(other_rx, |n| n);
    tx.send(&1).unwrap();
    tx.send(&2).unwrap();
    drop(tx);
    let mut got = Vec::new();
    loop {
        match next(&mut set) {
            Event::Message(k, n) => {
                assert_eq!(k, key);
                got.push(n);
            }
            Event::Closed(k, Error::Disconnected { .. }) => {
                assert_eq!(k, key);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, [1, 2]);
    assert!(!set.contains(key));
    assert!(!set.remove(key));
    assert!(matches!(set.try_select(), Err(Error::WouldBlock)));
    other_tx.send(&3).unwrap();
    assert!(matches!(next(&mut set), Event::Message(k, 3) if k == other));

    assert!(set.remove(other));
    assert!(set.is_empty());
    assert!(matches!(set.select(), Err(Error::Disconnected { .. })));
    assert!(matches!(set.try_select(), Err(Error::Disconnected { .. })));
}

/// A rejected message is an error event and the receiver stays, delivering the next one.
#[test]
fn a_rejected_message_keeps_the_receiver() {
    let (tx, rx) = channel::<String>().unwrap();
    let rx = rx.with_limits(Limits::default().max_message_bytes(64));
    let mut set = ReceiverSet::new();
    let key = set.add(rx, |s| s);
    tx.send(&"x".repeat(1000)).unwrap();
    tx.send(&"small".to_owned()).unwrap();
    match next(&mut set) {
        Event::Error(k, Error::MessageTooLarge { .. }) => assert_eq!(k, key),
        other => panic!("{other:?}"),
    }
    match next(&mut set) {
        Event::Message(k, s) => assert_eq!((k, s.as_str()), (key, "small")),
        other => panic!("{other:?}"),
    }
}

/// A source removed after the poll found it ready is not served.
#[test]
fn removing_a_ready_source_between_waits() {
    let (a_tx, a_rx) = channel::<u8>().unwrap();
    let (b_tx, b_rx) = channel::<u8>().unwrap();
    let mut set = ReceiverSet::new();
    let a = set.add(a_rx, |n| n);
    let b = set.add(b_rx, |n| n);
    a_tx.send(&1).unwrap();
    a_tx.send(&1).unwrap();
    b_tx.send(&2).unwrap();
    b_tx.send(&2).unwrap();
    // The first event comes from one of them; the other is queued as ready in this round.
    let first = match next(&mut set) {
        Event::Message(key, _) => key,
        other => panic!("{other:?}"),
    };
    let second = if first == a { b } else { a };
    assert!(set.remove(second));
    assert!(matches!(next(&mut set), Event::Message(k, _) if k == first));
    assert!(matches!(set.try_select(), Err(Error::WouldBlock)));
}

enum Server {
    Client(Sender<String>, Receiver<String>, Credentials),
    Request(String),
}

/// A listener in the set: connections come as events (refused peers never do), the
/// receivers of accepted connections join the set, and replies go out on their senders,
/// which share the receivers' sockets.
#[test]
fn a_listener_and_its_clients_on_one_thread() {
    let name = unique_name("server");
    // Refuse the first peer, admit the rest.
    let seen = AtomicUsize::new(0);
    let policy = CredentialPolicy::Custom(Arc::new(move |_: &Credentials| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            Err("the first one".to_owned())
        } else {
            Ok(())
        }
    }));
    let listener = Listener::bind_abstract(&name)
        .unwrap()
        .credential_policy(policy);
    let mut set = ReceiverSet::new();
    let listener_key = set.add_listener(listener, Server::Client);

    let refused = connect_abstract_raw(&name).unwrap();
    let clients: Vec<_> = (0..3)
        .map(|_| connect_abstract::<String, String>(&name).unwrap())
        .collect();
    for (i, (tx, _)) in clients.iter().enumerate() {
        tx.send(&format!("client {i}")).unwrap();
    }
    let mut replies: HashMap<Key, Sender<String>> = HashMap::new();
    let mut answered = 0;
    while answered < 3 {
        match next(&mut set) {
            Event::Message(key, Server::Client(tx, rx, peer)) => {
                assert_eq!(key, listener_key);
                assert_eq!(peer.pid, std::process::id() as i32);
                replies.insert(set.add(rx, Server::Request), tx);
            }
            Event::Message(key, Server::Request(text)) => {
                replies[&key].send(&format!("{text}: ok")).unwrap();
                answered += 1;
            }
            Event::Error(key, error) => panic!("{key:?}: {error}"),
            Event::Closed(key, error) => panic!("{key:?} closed: {error}"),
        }
    }
    for (i, (_, rx)) in clients.iter().enumerate() {
        assert_eq!(rx.recv_timeout(LONG).unwrap(), format!("client {i}: ok"));
    }
    assert_eq!(set.len(), 4);
    let mut buf = [0u8; 8];
    let r = refused.recv(
        &mut buf,
        &mut Vec::new(),
        memfile_ipc::raw::RecvMode::NonBlocking,
    );
    assert!(matches!(r, Err(Error::Disconnected { .. })), "{r:?}");

    // Clients leaving are reported closed, once each; the listener stays.
    drop(clients);
    let mut closed = 0;
    while closed < 3 {
        match next(&mut set) {
            Event::Closed(key, Error::Disconnected { .. }) => {
                assert!(replies.remove(&key).is_some());
                closed += 1;
            }
            Event::Message(..) => panic!("unexpected message"),
            Event::Error(key, error) => panic!("{key:?}: {error}"),
            Event::Closed(key, error) => panic!("{key:?} closed: {error}"),
        }
    }
    assert_eq!(set.len(), 1);
    assert!(set.contains(listener_key));
    assert!(matches!(set.try_select(), Err(Error::WouldBlock)));
}

/// With `report_refusals`, a refused peer is an error event and the listener stays.
#[test]
fn a_listener_reporting_refusals_yields_error_events() {
    let name = unique_name("report");
    let listener = Listener::bind_abstract(&name)
        .unwrap()
        .credential_policy(CredentialPolicy::Uids(vec![]))
        .report_refusals(true);
    let mut set: ReceiverSet<()> = ReceiverSet::new();
    let key = set.add_listener(listener, |_: Sender<()>, _: Receiver<()>, _| ());
    let _peer = connect_abstract_raw(&name).unwrap();
    match next(&mut set) {
        Event::Error(k, Error::PeerRejected { .. }) => assert_eq!(k, key),
        other => panic!("{other:?}"),
    }
    assert!(set.contains(key));
    assert!(matches!(set.try_select(), Err(Error::WouldBlock)));
}

enum Control {
    NewReceiver(Receiver<u32>),
    Number(u32),
}

/// Other threads add receivers by sending them over a channel that is in the set.
#[test]
fn receivers_sent_from_another_thread_join_the_set() {
    let (add_tx, add_rx) = channel::<Receiver<u32>>().unwrap();
    let mut set = ReceiverSet::new();
    set.add(add_rx, Control::NewReceiver);
    let producer = std::thread::spawn(move || {
        for n in 0..3u32 {
            let (tx, rx) = channel::<u32>().unwrap();
            add_tx.send(&rx).unwrap();
            tx.send(&n).unwrap();
        }
    });
    let mut got = Vec::new();
    let mut closed = 0;
    // Each new receiver delivers one number and is then closed (its sender is gone); the
    // control channel closes when the thread ends.
    while closed < 4 {
        match next(&mut set) {
            Event::Message(_, Control::NewReceiver(rx)) => {
                set.add(rx, Control::Number);
            }
            Event::Message(_, Control::Number(n)) => got.push(n),
            Event::Closed(_, Error::Disconnected { .. }) => closed += 1,
            Event::Error(key, error) => panic!("{key:?}: {error}"),
            Event::Closed(key, error) => panic!("{key:?} closed: {error}"),
        }
    }
    producer.join().unwrap();
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2]);
    assert!(set.is_empty());
}

/// A source found ready whose message another reader took before the set got to it
/// (here: a second receiver on the same socket) makes the set wait on: no spurious event,
/// no hang, and `try_select` returns.
#[test]
fn a_message_taken_elsewhere_is_not_waited_for() {
    let (a_tx, a_rx) = channel::<u8>().unwrap();
    let (b_tx, b_rx) = channel::<u8>().unwrap();
    let a_thief: Receiver<u8> = Receiver::from_raw(a_rx.raw().clone());
    let b_thief: Receiver<u8> = Receiver::from_raw(b_rx.raw().clone());
    let mut set = ReceiverSet::new();
    let a = set.add(a_rx, |n| n);
    set.add(b_rx, |n| n);
    a_tx.send(&1).unwrap();
    b_tx.send(&2).unwrap();
    // One poll finds both ready; the first is served, the other stays queued as ready...
    let first = match next(&mut set) {
        Event::Message(key, _) => key,
        other => panic!("{other:?}"),
    };
    // ... and its message is taken by another reader before the set gets to it.
    let stolen = if first == a {
        b_thief.recv()
    } else {
        a_thief.recv()
    };
    assert!(stolen.is_ok());
    assert!(matches!(set.try_select(), Err(Error::WouldBlock)));
    assert!(matches!(
        set.select_timeout(Duration::from_millis(20)),
        Err(Error::Timeout { .. })
    ));
    a_tx.send(&3).unwrap();
    assert!(matches!(next(&mut set), Event::Message(k, 3) if k == a));
}

/// Sources can be taken back out of the set, typed; a wrong type leaves the set as it was.
#[test]
fn sources_can_be_taken_back() {
    let name = unique_name("take");
    let (tx, rx) = channel::<u32>().unwrap();
    let mut set: ReceiverSet<u32> = ReceiverSet::new();
    let r = set.add(rx, |n| n);
    let l = set.add_listener(
        Listener::bind_abstract(&name).unwrap(),
        |_: Sender<()>, _: Receiver<()>, _| 0,
    );
    assert!(set.take_listener(r).is_none());
    assert!(set.take_receiver::<u32>(l).is_none());
    assert!(set.take_receiver::<u64>(r).is_none());
    assert_eq!(set.len(), 2);
    assert_eq!(set.listener_mut(l).unwrap().refused_count(), 0);
    assert!(set.listener_mut(r).is_none());

    let listener = set.take_listener(l).unwrap();
    let _client = connect_abstract::<(), ()>(&name).unwrap();
    assert!(listener.accept_timeout::<(), ()>(LONG).is_ok());
    let rx = set.take_receiver::<u32>(r).unwrap();
    assert!(set.is_empty());
    tx.send(&9).unwrap();
    assert_eq!(rx.recv().unwrap(), 9);
}
