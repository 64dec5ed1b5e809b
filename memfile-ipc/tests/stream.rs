//! Streams (`memfile::ipc::stream`) within one process: slots reused and never loaned while
//! held, varying frame lengths, pool exhaustion in every form, fan-out and the slow-consumer
//! policies, in-place reading.

use std::time::{Duration, Instant};

use memfile_ipc::stream::{InPlace, StreamProducer, StreamReceiver, ToConsumer, ToProducer};
use memfile_ipc::{Error, FullPolicy, Operation, channel};

/// The producer's ends of one consumer's connection.
type ProducerEnds<M> = (
    memfile_ipc::Sender<ToConsumer<M>>,
    memfile_ipc::Receiver<ToProducer>,
);

fn pair<M>() -> (ProducerEnds<M>, StreamReceiver<M>) {
    let (to_consumer, from_producer) = channel().unwrap();
    let (to_producer, from_consumer) = channel().unwrap();
    (
        (to_consumer, from_consumer),
        StreamReceiver::new(to_producer, from_producer),
    )
}

fn consumer_of<M: serde::Serialize + serde::de::DeserializeOwned + 'static>(
    producer: &mut StreamProducer<M>,
) -> StreamReceiver<M> {
    let ((tx, rx), consumer) = pair();
    producer.add_consumer(tx, rx).unwrap();
    consumer
}

#[test]
fn frames_arrive_whole_with_their_metadata_and_slots_are_reused() {
    let mut producer = StreamProducer::<(u32, String)>::new(3, 64 << 10).unwrap();
    let mut consumer = consumer_of(&mut producer);
    let mut buf = Vec::new();
    let mut slots_seen = std::collections::BTreeSet::new();
    for n in 0..50u32 {
        let len = 1 + (n as usize * 977) % (64 << 10);
        let mut slot = producer.loan(len).unwrap();
        assert_eq!(slot.len(), len);
        for (i, b) in slot.iter_mut().enumerate() {
            *b = (i as u32 ^ n) as u8;
        }
        slot.publish((n, format!("frame {n}"))).unwrap();
        let frame = consumer.recv().unwrap();
        assert_eq!(frame.len(), len);
        assert_eq!(frame.meta(), &(n, format!("frame {n}")));
        slots_seen.insert(frame.slot());
        frame.copy_into(&mut buf);
        assert_eq!(buf.len(), len);
        assert!(
            buf.iter()
                .enumerate()
                .all(|(i, &b)| b == (i as u32 ^ n) as u8),
            "frame {n}"
        );
    }
    // Lock-step: the slot released last is the one loaned next (its pages are warm).
    assert_eq!(slots_seen.len(), 1, "{slots_seen:?}");
    assert_eq!(consumer.pool(), Some((3, 64 << 10)));
}

#[test]
fn a_held_slot_is_never_loaned_and_its_bytes_never_change() {
    let mut producer = StreamProducer::<u8>::new(4, 4096).unwrap();
    let (to_consumer, from_producer) = channel().unwrap();
    let (to_producer, from_consumer) = channel().unwrap();
    producer.add_consumer(to_consumer, from_consumer).unwrap();
    // SAFETY: the producer is this crate's `StreamProducer`.
    let mut consumer: StreamReceiver<u8, InPlace> =
        unsafe { StreamReceiver::new_in_place(to_producer, from_producer) };

    producer.send(&[0xAA; 4096], 0).unwrap();
    let held = consumer.recv().unwrap();
    let held_slot = held.slot();
    // Cycle many frames through the other three slots while one is held.
    for n in 1..=200u8 {
        let slot = producer.loan(4096).unwrap();
        assert_ne!(
            slot.slot() as usize,
            held_slot,
            "frame {n} loaned the held slot"
        );
        drop(slot); // unpublished: back to the free list
        producer.send(&[n; 4096], n).unwrap();
        let f = consumer.recv().unwrap();
        assert_ne!(f.slot(), held_slot);
        assert!(f.iter().all(|&b| b == n));
    }
    assert!(held.iter().all(|&b| b == 0xAA), "a held frame changed");
    drop(held);
    // Now it comes back.
    producer.poll_releases().unwrap();
    assert_eq!(producer.free_slots(), 4);
}

#[test]
fn a_full_pool_waits_times_out_or_fails_at_once() {
    let mut producer = StreamProducer::<()>::new(2, 4096).unwrap();
    let mut consumer = consumer_of(&mut producer);
    producer.send(b"one", ()).unwrap();
    producer.send(b"two", ()).unwrap();
    let a = consumer.recv().unwrap();
    let b = consumer.recv().unwrap();
    assert!(matches!(producer.try_loan(10), Err(Error::Full)));
    assert!(matches!(producer.try_send(b"x", ()), Err(Error::Full)));
    let t = Instant::now();
    match producer.loan_timeout(10, Duration::from_millis(100)) {
        Err(Error::Timeout {
            op: Operation::Loan,
            ..
        }) => {}
        other => panic!("expected a loan timeout, got {other:?}"),
    }
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert!(matches!(
        producer.send_timeout(b"x", (), Duration::from_millis(10)),
        Err(Error::Timeout { .. })
    ));
    // A release from another thread ends a blocking loan.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        drop(a);
        b
    });
    let slot = producer.loan(3).unwrap();
    assert_eq!(slot.len(), 3);
    drop(slot);
    drop(releaser.join().unwrap());
}

#[test]
fn frames_above_the_slot_length_are_refused_clearly() {
    let mut producer = StreamProducer::<()>::new(1, 1000).unwrap();
    let e = producer.loan(1001).unwrap_err();
    assert!(
        matches!(
            e,
            Error::FrameTooLarge {
                len: 1001,
                slot_len: 1000
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "a stream frame of 1001 bytes does not fit the pool's slots of 1000 bytes"
    );
    let mut slot = producer.loan(1000).unwrap();
    assert!(matches!(
        slot.set_len(1001),
        Err(Error::FrameTooLarge { .. })
    ));
    slot.set_len(10).unwrap();
    assert_eq!(slot.len(), 10);
    assert_eq!(slot.capacity(), 1000);
    drop(slot);
    assert_eq!(producer.free_slots(), 1);
}

#[test]
fn bad_pool_sizes_are_refused() {
    for (slots, len) in [(0, 10), (1025, 10), (1, 0), (2, usize::MAX / 2)] {
        match StreamProducer::<()>::new(slots, len) {
            Err(Error::Io { source, .. }) => {
                assert_eq!(
                    source.kind(),
                    std::io::ErrorKind::InvalidInput,
                    "{slots} × {len}"
                )
            }
            other => panic!("{slots} × {len}: {other:?}"),
        }
    }
}

#[test]
fn fan_out_frees_a_slot_only_when_every_consumer_released_it() {
    let mut producer = StreamProducer::<u32>::new(2, 4096).unwrap();
    let mut c1 = consumer_of(&mut producer);
    let mut c2 = consumer_of(&mut producer);
    let report = producer.send(&[1; 4096], 1).unwrap();
    assert_eq!(report.delivered, 2);
    let f1 = c1.recv().unwrap();
    let f2 = c2.recv().unwrap();
    assert_eq!(f1.slot(), f2.slot());
    drop(f1);
    producer.poll_releases().unwrap();
    assert_eq!(producer.free_slots(), 1, "c2 still holds it");
    drop(f2);
    producer.poll_releases().unwrap();
    assert_eq!(producer.free_slots(), 2);
}

#[test]
fn a_consumer_that_goes_away_never_blocks_the_rest() {
    let mut producer = StreamProducer::<u32>::new(2, 4096).unwrap();
    let mut fast = consumer_of(&mut producer);
    let mut dying = consumer_of(&mut producer);
    producer.send(&[1; 4096], 1).unwrap();
    producer.send(&[2; 4096], 2).unwrap();
    let held = (dying.recv().unwrap(), dying.recv().unwrap());
    for n in 1..=2 {
        assert_eq!(*fast.recv().unwrap().meta(), n);
    }
    assert!(matches!(producer.try_loan(1), Err(Error::Full)));
    // Going away: its frames and its receiver dropped, its sockets close. (Death by
    // SIGKILL, with nothing released, is in stream_process.rs.)
    drop(dying);
    drop(held);
    let slot = producer.loan_timeout(1, Duration::from_secs(10)).unwrap();
    drop(slot);
    assert_eq!(producer.consumers().len(), 1);
    for n in 3..10 {
        producer.send(&[n as u8; 4096], n).unwrap();
        assert_eq!(*fast.recv().unwrap().meta(), n);
    }
}

#[test]
fn skip_policy_leaves_out_a_consumer_at_its_quota() {
    let mut producer = StreamProducer::<u32>::new(4, 4096)
        .unwrap()
        .with_policy(FullPolicy::Skip)
        .with_quota(2);
    let mut fast = consumer_of(&mut producer);
    let mut slow = consumer_of(&mut producer);
    let slow_id = producer.consumers()[1];
    let mut slow_frames = Vec::new();
    for n in 0..20u32 {
        let report = producer
            .loan_timeout(16, Duration::from_secs(10))
            .unwrap()
            .publish(n)
            .unwrap();
        assert!(report.removed.is_empty());
        assert_eq!(*fast.recv().unwrap().meta(), n);
        if n < 2 {
            slow_frames.push(slow.recv().unwrap());
        }
    }
    assert_eq!(producer.skipped(slow_id), Some(18));
    assert_eq!(
        slow_frames.iter().map(|f| *f.meta()).collect::<Vec<_>>(),
        [0, 1]
    );
    assert!(matches!(slow.try_recv(), Err(Error::WouldBlock)));
    drop(slow_frames);
    producer.send(b"x", 20).unwrap();
    assert_eq!(*slow.recv().unwrap().meta(), 20);
}

#[test]
fn disconnect_policy_drops_a_consumer_at_its_quota() {
    let mut producer = StreamProducer::<u32>::new(4, 4096)
        .unwrap()
        .with_policy(FullPolicy::Disconnect)
        .with_quota(1);
    let mut fast = consumer_of(&mut producer);
    let mut slow = consumer_of(&mut producer);
    let slow_id = producer.consumers()[1];
    producer.send(b"a", 0).unwrap();
    let kept = slow.recv().unwrap();
    drop(fast.recv().unwrap());
    let report = producer.send(b"b", 1).unwrap();
    assert_eq!(report.removed, [slow_id]);
    assert_eq!(producer.consumers().len(), 1);
    assert_eq!(*fast.recv().unwrap().meta(), 1);
    // The dropped consumer keeps the frame it had (copy-out: its own copy is sound), then
    // sees the end.
    assert_eq!(kept.to_vec(), b"a");
    assert!(matches!(slow.recv(), Err(Error::Disconnected { .. })));
}

#[test]
fn block_policy_paces_the_producer_by_the_slowest_consumer() {
    let mut producer = StreamProducer::<u32>::new(2, 4096).unwrap();
    let mut fast = consumer_of(&mut producer);
    let mut slow = consumer_of(&mut producer);
    producer.send(b"a", 0).unwrap();
    producer.send(b"b", 1).unwrap();
    drop(fast.recv().unwrap());
    drop(fast.recv().unwrap());
    let held = slow.recv().unwrap();
    assert!(
        matches!(producer.try_loan(1), Err(Error::Full)),
        "slow holds one, and one is in flight"
    );
    drop(held);
    drop(slow.recv().unwrap());
    assert!(producer.loan_timeout(1, Duration::from_secs(10)).is_ok());
}

#[test]
fn explicit_release_and_into_meta_release_once() {
    let mut producer = StreamProducer::<String>::new(2, 64).unwrap();
    let mut consumer = consumer_of(&mut producer);
    producer.send(b"x", "a".into()).unwrap();
    producer.send(b"y", "b".into()).unwrap();
    let a = consumer.recv().unwrap();
    let b = consumer.recv().unwrap();
    assert_eq!(consumer.held(), 2);
    a.release().unwrap();
    assert_eq!(b.into_meta(), "b");
    assert_eq!(consumer.held(), 0);
    producer.poll_releases().unwrap();
    assert_eq!(producer.free_slots(), 2);
    assert_eq!(producer.bad_releases(), 0, "a frame was released twice");
}

#[test]
fn read_at_stays_within_the_frame() {
    let mut producer = StreamProducer::<()>::new(2, 8192).unwrap();
    let mut consumer = consumer_of(&mut producer);
    producer.send(&[5; 100], ()).unwrap();
    let f = consumer.recv().unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(f.read_at(90, &mut buf), 10);
    assert_eq!(f.read_at(100, &mut buf), 0);
    assert_eq!(f.read_at(usize::MAX, &mut buf), 0);
    assert_eq!(f.to_vec(), vec![5; 100]);
}
