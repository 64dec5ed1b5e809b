use memfile_ipc::raw::{RawSocket, RecvMode};
#[test]
fn eof() {
    let (a, b) = RawSocket::pair().unwrap();
    a.send(&[std::io::IoSlice::new(b"hi")], &[]).unwrap();
    drop(a);
    let mut buf = vec![0u8; 100];
    let mut fds = Vec::new();
    println!("{:?}", b.recv(&mut buf, &mut fds, RecvMode::Blocking));
    println!("{:?}", b.recv(&mut buf, &mut fds, RecvMode::Blocking));
}
