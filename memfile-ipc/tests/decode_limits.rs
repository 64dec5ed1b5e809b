//! Issue 10 item 8: the decode limits of docs/protocol.md ("What a receiver checks", 6),
//! pinned at their exact boundaries so that a peer written from the document alone can
//! rely on them: the element budget (one collection element per payload byte plus 65 536)
//! and the nesting depth (128 levels, counted as the document defines them).

use std::sync::Arc;
use std::time::Duration;

use memfile_ipc::raw::RawSocket;
use memfile_ipc::{Error, Limits, Receiver};
use serde::Deserialize;
use serde::de::DeserializeOwned;

mod util_wire;
use util_wire::{inline, lock, open_fds, send, varint};

/// What the receiver made of `payload` as a `T`: `Ok(())` or the error, with no fd leak
/// and nothing left queued.
fn receive<T: DeserializeOwned>(payload: &[u8]) -> Result<(), Error> {
    receive_with::<T>(Limits::default(), payload)
}

fn receive_with<T: DeserializeOwned>(limits: Limits, payload: &[u8]) -> Result<(), Error> {
    let (a, b) = RawSocket::pair().unwrap();
    let rx = Receiver::<T>::from_raw(Arc::new(b)).with_limits(limits);
    let before = open_fds();
    send(&a, &inline(payload, 0), &[]);
    let r = rx.recv_timeout(Duration::from_secs(20)).map(drop);
    assert_eq!(open_fds(), before, "fd leak");
    assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
    r
}

fn refused(r: &Result<(), Error>, what: &str) -> bool {
    matches!(r, Err(Error::Codec { encoding: false, detail, .. }) if detail.contains(what))
}

const SLACK: u64 = 65_536;

#[test]
fn element_budget_is_payload_bytes_plus_65536() {
    let _g = lock();
    // `Vec<()>`: the payload is just the count, 5 bytes (`fc` + u32) for these counts.
    let budget = 5 + SLACK;
    assert_eq!(varint(budget).len(), 5);
    assert!(
        receive::<Vec<()>>(&varint(budget)).is_ok(),
        "{budget} elements"
    );
    let r = receive::<Vec<()>>(&varint(budget + 1));
    assert!(
        refused(&r, "collection elements"),
        "{} elements: {r:?}",
        budget + 1
    );

    // Struct and tuple fields do not count: `(u8, Vec<()>)` is 6 bytes.
    let payload = |n: u64| [&[7u8][..], &varint(n)].concat();
    let budget = 6 + SLACK;
    assert!(receive::<(u8, Vec<()>)>(&payload(budget)).is_ok());
    let r = receive::<(u8, Vec<()>)>(&payload(budget + 1));
    assert!(refused(&r, "collection elements"), "{r:?}");

    // Elements of nested sequences all count: one outer element plus n inner ones.
    let payload = |n: u64| [varint(1), varint(n)].concat();
    let budget = 6 + SLACK;
    assert!(receive::<Vec<Vec<()>>>(&payload(budget - 1)).is_ok());
    let r = receive::<Vec<Vec<()>>>(&payload(budget));
    assert!(refused(&r, "collection elements"), "{r:?}");

    // A map entry counts once: `BTreeMap<(), ()>` (every key equal) of n entries. (Its heap
    // charge, 24 bytes per entry for a collection that is not a `Vec`, is lifted here.)
    type Map = std::collections::BTreeMap<(), ()>;
    let unlimited = Limits::default().max_heap_bytes(Some(u64::MAX));
    let budget = 5 + SLACK;
    assert!(receive_with::<Map>(unlimited, &varint(budget)).is_ok());
    let r = receive_with::<Map>(unlimited, &varint(budget + 1));
    assert!(refused(&r, "collection elements"), "{r:?}");
    assert!(matches!(
        receive::<Map>(&varint(budget)),
        Err(Error::HeapLimitExceeded { .. })
    ));
}

/// A recursive enum: each value, `Leaf` included, is one level; the `u64` is none.
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // only decoded
enum Tree {
    Leaf(u64),
    Node(Box<Tree>),
}

/// A recursive newtype around an option: two levels per link.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Chain(Option<Box<Chain>>);

/// A recursive newtype around a sequence: two levels per node.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Node(Vec<Node>);

#[test]
fn nesting_depth_is_128_levels() {
    let _g = lock();
    // n `Node` variants then a `Leaf(5)`: n + 1 enum values nested.
    let tree = |n: usize| [vec![1u8; n], vec![0, 5]].concat();
    assert!(receive::<Tree>(&tree(127)).is_ok(), "128 levels");
    let r = receive::<Tree>(&tree(128));
    assert!(refused(&r, "deeper than 128 levels"), "129 levels: {r:?}");

    // n `Some`s then a `None`: (n + 1) × (newtype struct + option).
    let chain = |n: usize| [vec![1u8; n], vec![0]].concat();
    assert!(receive::<Chain>(&chain(63)).is_ok(), "128 levels");
    let r = receive::<Chain>(&chain(64));
    assert!(refused(&r, "deeper than 128 levels"), "130 levels: {r:?}");

    // n nodes of one child each, then an empty one: (n + 1) × (newtype struct + sequence).
    let node = |n: usize| [vec![1u8; n], vec![0]].concat();
    assert!(receive::<Node>(&node(63)).is_ok(), "128 levels");
    let r = receive::<Node>(&node(64));
    assert!(refused(&r, "deeper than 128 levels"), "130 levels: {r:?}");

    // A struct holding the tree adds its own level.
    let r = receive::<(u8, Tree)>(&[vec![9], tree(126)].concat());
    assert!(r.is_ok(), "1 + 127 levels: {r:?}");
    let r = receive::<(u8, Tree)>(&[vec![9], tree(127)].concat());
    assert!(
        refused(&r, "deeper than 128 levels"),
        "1 + 128 levels: {r:?}"
    );
}
