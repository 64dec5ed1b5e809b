//! Streams between real processes: this test binary re-executes itself as the consumer
//! (`--exact child`, role in `MEMFILE_IPC_STREAM_CHILD`) through `memfile_ipc::spawn`.
//! Frames of varying length verified byte for byte by copy-out and in-place consumers, one
//! or several at once, and a consumer killed by SIGKILL while it holds slots: its slots come
//! back and the other consumer goes on.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use memfile_ipc::stream::{InPlace, StreamProducer, StreamReceiver, ToConsumer, ToProducer};
use memfile_ipc::{ChildProcess, Receiver, Sender, from_parent, spawn};

const ROLE: &str = "MEMFILE_IPC_STREAM_CHILD";
const FRAMES: u32 = 60;
const SLOT: usize = 1 << 20;

type Ends = (ChildProcess, Sender<ToConsumer<u32>>, Receiver<ToProducer>);

fn spawn_child(role: &str, stdout: Stdio) -> Ends {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE, role)
    .stdout(stdout);
    spawn(&mut cmd).unwrap()
}

fn len_of(n: u32) -> usize {
    1 + (n as usize * 40_503) % SLOT
}

fn byte(n: u32, i: usize) -> u8 {
    (i as u32).wrapping_mul(31).wrapping_add(n) as u8
}

#[test]
#[ignore = "entry point of the child processes the other tests spawn"]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let (tx, rx) = from_parent::<ToProducer, ToConsumer<u32>>().unwrap();
    match role.as_str() {
        "copy" => {
            let mut consumer = StreamReceiver::<u32>::new(tx, rx);
            let mut buf = Vec::new();
            for _ in 0..FRAMES {
                let frame = consumer.recv().unwrap();
                let n = *frame.meta();
                frame.copy_into(&mut buf);
                drop(frame);
                assert_eq!(buf.len(), len_of(n));
                assert!(
                    buf.iter().enumerate().all(|(i, &b)| b == byte(n, i)),
                    "frame {n}"
                );
            }
        }
        "in_place" => {
            // SAFETY: the parent is this crate's `StreamProducer`.
            let mut consumer: StreamReceiver<u32, InPlace> =
                unsafe { StreamReceiver::new_in_place(tx, rx) };
            for _ in 0..FRAMES {
                let frame = consumer.recv().unwrap();
                let n = *frame.meta();
                assert_eq!(frame.len(), len_of(n));
                assert!(
                    frame.iter().enumerate().all(|(i, &b)| b == byte(n, i)),
                    "frame {n}"
                );
            }
        }
        "hold" => {
            // Takes two frames, says so, and holds them until killed.
            let mut consumer = StreamReceiver::<u32>::new(tx, rx);
            let held = (consumer.recv().unwrap(), consumer.recv().unwrap());
            println!("holding {} {}", held.0.slot(), held.1.slot());
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn produce(producer: &mut StreamProducer<u32>) {
    for n in 0..FRAMES {
        let mut slot = producer
            .loan_timeout(len_of(n), Duration::from_secs(60))
            .unwrap();
        for (i, b) in slot.iter_mut().enumerate() {
            *b = byte(n, i);
        }
        slot.publish(n).unwrap();
    }
}

fn run_consumers(roles: &[&str]) {
    let mut producer = StreamProducer::<u32>::new(3, SLOT).unwrap();
    let mut children = Vec::new();
    for role in roles {
        let (child, tx, rx) = spawn_child(role, Stdio::null());
        producer.add_consumer(tx, rx).unwrap();
        children.push(child);
    }
    produce(&mut producer);
    for mut child in children {
        let status = child.wait().unwrap();
        assert!(status.success(), "consumer failed: {status}");
    }
}

#[test]
fn copy_out_consumer_in_another_process_sees_every_frame_whole() {
    run_consumers(&["copy"]);
}

#[test]
fn in_place_consumer_in_another_process_sees_every_frame_whole() {
    run_consumers(&["in_place"]);
}

#[test]
fn fan_out_to_both_kinds_of_consumer() {
    run_consumers(&["copy", "in_place", "copy"]);
}

#[test]
fn a_consumer_killed_while_holding_slots_gives_them_back() {
    let mut producer = StreamProducer::<u32>::new(3, SLOT).unwrap();
    let (mut victim, tx, rx) = spawn_child("hold", Stdio::piped());
    let victim_id = producer.add_consumer(tx, rx).unwrap();
    let (mut survivor, stx, srx) = spawn_child("copy", Stdio::null());
    producer.add_consumer(stx, srx).unwrap();
    let publish = |producer: &mut StreamProducer<u32>, n: u32| {
        let mut slot = producer
            .loan_timeout(len_of(n), Duration::from_secs(60))
            .unwrap();
        for (i, b) in slot.iter_mut().enumerate() {
            *b = byte(n, i);
        }
        slot.publish(n).unwrap();
    };
    publish(&mut producer, 0);
    publish(&mut producer, 1);
    let stdout = victim.child_mut().stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        // The harness prints "test child ... " before the child's own line.
        let line = lines.next().expect("the victim's stdout ended").unwrap();
        if line.contains("holding ") {
            break;
        }
    }
    producer.poll_releases().unwrap();
    assert!(
        producer.free_slots() <= 1,
        "the victim holds two of the three slots"
    );
    victim.kill().unwrap(); // SIGKILL: nothing released
    victim.wait().unwrap();
    for n in 2..FRAMES {
        publish(&mut producer, n);
    }
    assert!(!producer.consumers().contains(&victim_id));
    let status = survivor.wait().unwrap();
    assert!(status.success(), "{status}");
    // With the survivor done and gone too, every slot is free: the victim's two as well.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while producer.free_slots() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        producer.poll_releases().unwrap();
    }
    assert_eq!(
        producer.free_slots(),
        3,
        "the killed consumer's slots never came back"
    );
    assert_eq!(producer.consumers(), []);
}
