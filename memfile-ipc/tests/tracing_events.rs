//! `tracing` events (feature `tracing`): a rejected message, a refused or accepted peer and a
//! disconnect each produce an event an operator can act on. A hand-written subscriber
//! collects the events of the current thread. Without the feature, no event at all.
// Without the feature only the last test runs; the helpers of the others go unused.
#![cfg_attr(not(feature = "tracing"), allow(dead_code, unused_imports))]

use std::io::IoSlice;
use std::sync::{Arc, Mutex};

use memfile_ipc::{CredentialPolicy, Error, Listener, channel, connect_abstract};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One collected event: its level, target and fields as `name=value` (the message is the
/// field `message`).
#[derive(Debug, Clone)]
struct Seen {
    level: Level,
    target: String,
    fields: Vec<String>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}=");
        self.fields.iter().find_map(|f| f.strip_prefix(&prefix))
    }
}

#[derive(Default, Clone)]
struct Collector(Arc<Mutex<Vec<Seen>>>);

struct Fields(Vec<String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push(format!("{}={value:?}", field.name()));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push(format!("{}={value}", field.name()));
    }
}

impl Subscriber for Collector {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(Seen {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            fields: fields.0,
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Runs `f` with a collecting subscriber on this thread; returns the events it produced.
fn collect(f: impl FnOnce()) -> Vec<Seen> {
    let collector = Collector::default();
    tracing::subscriber::with_default(collector.clone(), f);
    collector.0.lock().unwrap().clone()
}

fn bad_magic_then_hangup() -> Vec<Seen> {
    collect(|| {
        let (tx, rx) = channel::<u32>().unwrap();
        tx.raw().send(&[IoSlice::new(&[b'Z'; 24])], &[]).unwrap();
        let e = rx.recv().unwrap_err();
        assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
        // Not a rejection: nothing queued yet.
        assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
        drop(tx);
        assert!(matches!(rx.recv(), Err(Error::Disconnected { .. })));
    })
}

#[cfg(feature = "tracing")]
#[test]
fn rejected_message_is_a_warning_with_the_reason_and_the_peer() {
    let seen = bad_magic_then_hangup();
    let warnings: Vec<_> = seen.iter().filter(|s| s.level == Level::WARN).collect();
    assert_eq!(warnings.len(), 1, "{seen:#?}");
    let w = warnings[0];
    assert_eq!(w.target, "memfile_ipc");
    assert_eq!(w.field("message"), Some("rejected a message"));
    let reason = w.field("reason").expect("a reason field");
    assert!(reason.contains("bad magic"), "{reason}");
    assert_eq!(
        w.field("pid"),
        Some(std::process::id().to_string().as_str()),
        "{w:?}"
    );
    // The hang-up is a debug event; WouldBlock is no event at all.
    let closes: Vec<_> = seen
        .iter()
        .filter(|s| s.field("message") == Some("peer closed the connection"))
        .collect();
    assert_eq!(closes.len(), 1, "{seen:#?}");
    assert_eq!(closes[0].level, Level::DEBUG);
    assert_eq!(seen.len(), 2, "{seen:#?}");
}

#[cfg(feature = "tracing")]
#[test]
fn accepted_and_refused_peers_are_reported() {
    let name = format!("memfile-ipc-tracing-{}", std::process::id());
    let seen = collect(|| {
        let mut listener = Listener::bind_abstract(&name).unwrap();
        let _client = connect_abstract::<u8, u8>(&name).unwrap();
        listener.accept::<u8, u8>().unwrap();
        listener.set_credential_policy(CredentialPolicy::Uids(vec![]));
        let _client = connect_abstract::<u8, u8>(&name).unwrap();
        // Refused peers do not end an accept, but they are traced (and counted).
        let e = listener.try_accept::<u8, u8>().unwrap_err();
        assert!(matches!(e, Error::WouldBlock));
        assert_eq!(listener.refused_count(), 1);
    });
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[0].level, Level::INFO);
    assert_eq!(seen[0].field("message"), Some("accepted a connection"));
    let uid = nix::unistd::geteuid().as_raw().to_string();
    assert_eq!(seen[0].field("uid"), Some(uid.as_str()));
    assert_eq!(seen[1].level, Level::WARN);
    assert_eq!(seen[1].field("message"), Some("refused a connection"));
    let reason = seen[1].field("reason").unwrap();
    assert!(reason.contains("not in the allowed list"), "{reason}");
    assert!(reason.contains(&format!("uid {uid}")), "{reason}");
}

#[cfg(not(feature = "tracing"))]
#[test]
fn no_events_without_the_feature() {
    let seen = bad_magic_then_hangup();
    assert!(seen.is_empty(), "{seen:#?}");
}
