//! Writes the seed corpus: valid packets captured from the crate's own `Sender`, in the
//! input formats of both targets, and the regression inputs of `memfile_fuzz::regressions`
//! (`regress-*`), into `fuzz/seeds/{packet,typed_fds}/`.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use memfile_core::{Frozen, MemFile};
use memfile_fuzz::{Msg, Shape, Tree};
use memfile_ipc::raw::{RawSocket, RecvMode};
use memfile_ipc::{Fd, Sender};

fn capture(msg: &Msg) -> (Vec<u8>, usize) {
    let (a, b) = RawSocket::pair().unwrap();
    Sender::<Msg>::from_raw(Arc::new(a)).send(msg).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut fds: Vec<OwnedFd> = Vec::new();
    let n = b.recv(&mut buf, &mut fds, RecvMode::NonBlocking).unwrap();
    buf.truncate(n);
    (buf, fds.len())
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let frozen = || Fd::new(Frozen::from_bytes("seed", b"sealed").unwrap());
    let base = || Msg {
        n: 7,
        text: "hello".into(),
        numbers: vec![1, 300, 65535],
        bytes: vec![0, 1, 2, 3],
        shape: Shape::Unit,
        buffer: None,
        file: None,
        others: Vec::new(),
        reply: None,
        wide: Vec::new(),
        units: Vec::new(),
        tree: None,
    };
    let mut msgs = vec![base()];
    msgs.push(Msg {
        shape: Shape::Pair(-3, 9),
        buffer: Some(frozen()),
        ..base()
    });
    msgs.push(Msg {
        shape: Shape::Named {
            x: u64::MAX,
            tag: Some('é'),
        },
        file: Some(Fd::new(MemFile::create_default("seed").unwrap())),
        ..base()
    });
    msgs.push(Msg {
        others: (0..2)
            .map(|_| Fd::new(std::fs::File::open("/dev/null").unwrap().into()))
            .collect(),
        reply: Some(Sender::from_raw(Arc::new(RawSocket::pair().unwrap().0))),
        buffer: Some(frozen()),
        ..base()
    });
    msgs.push(Msg {
        text: String::new(),
        numbers: Vec::new(),
        bytes: Vec::new(),
        ..base()
    });
    msgs.push(Msg {
        wide: vec![None, Some([u64::MAX; 32]), None],
        units: vec![(); 300],
        tree: Some(Box::new(Tree::Many(vec![
            Tree::Leaf,
            Tree::One(Box::new(Tree::Many(Vec::new()))),
        ]))),
        ..base()
    });
    for dir in ["packet", "typed_fds"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for (i, msg) in msgs.iter().enumerate() {
        let (packet, fds) = capture(msg);
        std::fs::write(root.join("packet").join(format!("valid-{i}")), &packet).unwrap();
        // typed_fds: fd count, then kinds: sealed memfd (0) for a buffer, a writable memfd
        // (1) for a MemFile, a socket (5) for a reply channel, in field order.
        let mut kinds = Vec::new();
        if msg.buffer.is_some() {
            kinds.push(0);
        }
        if msg.file.is_some() {
            kinds.push(1);
        }
        kinds.extend(std::iter::repeat_n(6, msg.others.len()));
        if msg.reply.is_some() {
            kinds.push(5);
        }
        assert_eq!(kinds.len(), fds);
        let mut input = vec![fds as u8];
        input.extend_from_slice(&kinds);
        input.extend_from_slice(&packet);
        std::fs::write(root.join("typed_fds").join(format!("valid-{i}")), &input).unwrap();
    }
    // The hostile cases of issue 10 that the targets can express (see `regressions`).
    let regressions = memfile_fuzz::regressions();
    for r in &regressions {
        std::fs::write(root.join(r.target).join(r.name), &r.input).unwrap();
    }
    println!(
        "wrote {} seeds per target and {} regression inputs to {}",
        msgs.len(),
        regressions.len(),
        root.display()
    );
}
