//! The type fingerprint traces a message type by running its `Deserialize` impl on sample
//! values that no peer sent. A user's impl that panics on such a value (a `deserialize_with`
//! that unwraps a parse, say) must not make `send`/`recv` of perfectly valid messages panic:
//! the type is just not checked (fingerprint 0).

use serde::{Deserialize, Deserializer, Serialize};

fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    // Careless, but true of every message this program sends.
    assert!(!s.is_empty(), "a non-empty name");
    Ok(s)
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Config {
    #[serde(deserialize_with = "non_empty")]
    name: String,
}

#[test]
fn a_deserialize_impl_that_panics_on_sample_values_does_not_crash_send_and_recv() {
    let result = std::panic::catch_unwind(|| {
        let (tx, rx) = memfile_ipc::channel::<Config>().unwrap();
        tx.send(&Config { name: "x".into() }).unwrap();
        rx.recv().unwrap()
    });
    match result {
        Ok(got) => assert_eq!(got, Config { name: "x".into() }),
        Err(_) => panic!("send/recv of a valid message panicked inside the type tracer"),
    }
}

/// A recursive type: the tracer stops at its depth bound; on a thread with the default
/// 2 MiB stack it must not overflow the stack first.
#[derive(Serialize, Deserialize, Debug)]
struct Tree {
    name: String,
    children: Vec<Tree>,
    extra: Option<Box<(Tree, Tree)>>,
}

#[test]
fn recursive_type_does_not_overflow_a_default_thread_stack() {
    let fp = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(memfile_ipc::message_fingerprint::<Tree>)
        .unwrap()
        .join()
        .unwrap();
    let _ = fp;
}
