//! Child processes: every case re-executes this binary with `__child ROLE SIZE ACK_EVERY
//! EXTRA`, so producer and consumers are real, separate processes.
//!
//! Three ways to connect a child, one per family of alternatives:
//! - ours: `memfile_ipc::spawn` (the crate's own way);
//! - hand-written baselines: sockets made here, inherited at fd 100, 101, ... (a `pre_exec`
//!   hook `dup2`s them there, which also clears close-on-exec on the copy only);
//! - ipc-channel: its one-shot server, the way its documentation bootstraps a child.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use ipc_channel::ipc::{self, IpcOneShotServer, IpcReceiver, IpcSender};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::syscalls::{SeqPacket, seqpacket_pair};
use crate::work::Res;

/// The first fd number inherited fds are placed at in a child.
const FIRST_INHERITED_FD: RawFd = 100;

/// What a child is told on its command line.
#[derive(Debug, Clone)]
pub struct ChildArgs {
    /// Which code to run, e.g. `large.ours`.
    pub role: String,
    /// The buffer size of the case.
    pub size: usize,
    /// Send an acknowledgement after this many operations.
    pub ack_every: usize,
    /// Role-specific: the ipc-channel server name, a stage number, ...
    pub extra: String,
}

impl ChildArgs {
    /// Parses `ROLE SIZE ACK_EVERY EXTRA` (what follows `__child`).
    pub fn parse(args: &[String]) -> Res<ChildArgs> {
        let [role, size, ack, extra] = args else {
            return Err(format!("__child expects ROLE SIZE ACK_EVERY EXTRA, got {args:?}").into());
        };
        Ok(ChildArgs {
            role: role.clone(),
            size: size.parse()?,
            ack_every: ack.parse()?,
            extra: extra.clone(),
        })
    }
}

/// A command that runs this very binary as a child in `role`.
pub fn self_command(role: &str, size: usize, ack_every: usize, extra: &str) -> Res<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("__child")
        .arg(role)
        .arg(size.to_string())
        .arg(ack_every.to_string())
        .arg(if extra.is_empty() { "-" } else { extra });
    Ok(cmd)
}

/// A child that is killed (and reaped) if it is dropped before [`Reaper::finish`]: an error
/// in the parent must not leave consumers running.
#[derive(Debug)]
pub struct Reaper(Option<Child>);

impl Reaper {
    /// Takes charge of `child`.
    pub fn new(child: Child) -> Reaper {
        Reaper(Some(child))
    }

    /// Waits for the child; an exit status other than 0 is an error.
    pub fn finish(mut self) -> Res<()> {
        if let Some(mut child) = self.0.take() {
            let status = child.wait()?;
            if !status.success() {
                return Err(format!("child {} failed: {status}", child.id()).into());
            }
        }
        Ok(())
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Consumer children and the producer's ends of their connections (`tx[i]`, `rx[i]` lead
/// to child `i`, except after [`Linked::from_parts`]). [`Linked::finish`] hangs up and waits for the children; dropping it
/// instead (on an error) kills them.
#[derive(Debug)]
pub struct Linked<Tx, Rx> {
    /// Where the producer sends, one per child.
    pub tx: Vec<Tx>,
    /// Where the producer receives (acks, replies), one per child.
    pub rx: Vec<Rx>,
    // Declared last: dropped after the ends, so children see the hang-up before the kill.
    children: Vec<Reaper>,
}

impl<Tx, Rx> Linked<Tx, Rx> {
    /// One child.
    pub fn new(child: Reaper, tx: Tx, rx: Rx) -> Self {
        Linked {
            tx: vec![tx],
            rx: vec![rx],
            children: vec![child],
        }
    }

    /// Children connected some other way (`tx`, `rx` need not be one per child).
    pub fn from_parts(children: Vec<Reaper>, tx: Vec<Tx>, rx: Vec<Rx>) -> Self {
        Linked { tx, rx, children }
    }

    /// `n` children, child `i` started by `spawn(i)`.
    pub fn spawn_n(n: usize, mut spawn: impl FnMut(usize) -> Res<Self>) -> Res<Self> {
        let mut all = Linked {
            tx: Vec::new(),
            rx: Vec::new(),
            children: Vec::new(),
        };
        for i in 0..n {
            let one = spawn(i)?;
            all.tx.extend(one.tx);
            all.rx.extend(one.rx);
            all.children.extend(one.children);
        }
        Ok(all)
    }

    /// The ends of the first child (of the only one, for most alternatives).
    pub fn first(&self) -> Res<(&Tx, &Rx)> {
        Ok((
            self.tx.first().ok_or("no child")?,
            self.rx.first().ok_or("no child")?,
        ))
    }

    /// Hangs up (drops the producer's ends) and waits for every child in order; the first
    /// failure wins.
    pub fn finish(self) -> Res<()> {
        let Linked { tx, rx, children } = self;
        drop((tx, rx));
        let mut first = Ok(());
        for c in children {
            let r = c.finish();
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

/// Spawns `cmd` with `fds` inherited at fd 100, 101, ... (see the module docs).
pub fn spawn_with_fds(mut cmd: Command, fds: &[&OwnedFd]) -> Res<Reaper> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    if raw.iter().any(|&f| f >= FIRST_INHERITED_FD) {
        return Err("fd numbers >= 100 in the parent: cannot place them at 100+".into());
    }
    let hook = move || -> std::io::Result<()> {
        for (i, &fd) in raw.iter().enumerate() {
            // SAFETY: dup2 between fd numbers of this (forked) process; it touches no
            // memory and is async-signal-safe. The sources are open: the parent holds them
            // until `spawn` returns.
            if unsafe { libc::dup2(fd, FIRST_INHERITED_FD + i as RawFd) } == -1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook only calls dup2 (async-signal-safe) and reads a Vec allocated before
    // the fork; it allocates nothing.
    unsafe { cmd.pre_exec(hook) };
    Ok(Reaper::new(cmd.spawn()?))
}

/// In a child: takes ownership of the `index`-th inherited fd.
pub fn inherited_fd(index: usize) -> Res<OwnedFd> {
    let fd = FIRST_INHERITED_FD + index as RawFd;
    // SAFETY: F_GETFD only reads the flags of an fd number; it fails on a closed one.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(format!("inherited fd {fd} is not open").into());
    }
    // SAFETY: the parent placed this fd here for this child alone (spawn_with_fds), it is
    // open (checked above), and each index is taken once by the role code.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Keep it from leaking into anything this child might start.
    nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    Ok(owned)
}

/// Starts a child in `role` connected with ipc-channel: send `Down`, receive `Up`.
pub fn ipc_spawn<Down, Up>(
    role: &str,
    size: usize,
    ack_every: usize,
) -> Res<Linked<IpcSender<Down>, IpcReceiver<Up>>>
where
    Down: Serialize + DeserializeOwned,
    Up: Serialize + DeserializeOwned,
{
    let (server, name) = IpcOneShotServer::<(IpcSender<Down>, IpcReceiver<Up>)>::new()?;
    let child = Reaper::new(self_command(role, size, ack_every, &name)?.spawn()?);
    let (_boot, (tx, rx)) = server.accept()?;
    Ok(Linked::new(child, tx, rx))
}

/// In a child started by [`ipc_spawn`]: connects back and returns its ends.
pub fn ipc_child<Down, Up>(name: &str) -> Res<(IpcReceiver<Down>, IpcSender<Up>)>
where
    Down: Serialize + DeserializeOwned,
    Up: Serialize + DeserializeOwned,
{
    let boot = IpcSender::<(IpcSender<Down>, IpcReceiver<Up>)>::connect(name.to_owned())?;
    let (down_tx, down_rx) = ipc::channel::<Down>()?;
    let (up_tx, up_rx) = ipc::channel::<Up>()?;
    boot.send((down_tx, up_rx))?;
    Ok((down_rx, up_tx))
}

/// A `memfile_ipc::spawn` of this binary in `role`.
pub fn ours_spawn<Tx, Rx>(
    role: &str,
    size: usize,
    ack_every: usize,
    extra: &str,
) -> Res<Linked<memfile_ipc::Sender<Tx>, memfile_ipc::Receiver<Rx>>> {
    let mut cmd = self_command(role, size, ack_every, extra)?;
    let (child, tx, rx) = memfile_ipc::spawn::<Tx, Rx>(&mut cmd)?;
    Ok(Linked::new(Reaper::new(child.into_child()), tx, rx))
}

/// Starts this binary in `role` with one end of a new `SOCK_SEQPACKET` pair (its fd 100).
/// The producer's end is duplicated for the replies.
pub fn raw_spawn(role: &str, size: usize, ack_every: usize) -> Res<Linked<SeqPacket, SeqPacket>> {
    let (mine, theirs) = seqpacket_pair()?;
    let child = spawn_with_fds(self_command(role, size, ack_every, "")?, &[&theirs])?;
    let replies = mine.try_clone()?;
    Ok(Linked::new(child, SeqPacket(mine), SeqPacket(replies)))
}

/// Starts this binary in `role` with one end of a new stream socket pair (its fd 100); the
/// producer's end is cloned for the acks.
pub fn stream_spawn(
    role: &str,
    size: usize,
    ack_every: usize,
    extra: &str,
) -> Res<Linked<UnixStream, UnixStream>> {
    let (mine, theirs) = UnixStream::pair()?;
    let theirs = OwnedFd::from(theirs);
    let child = spawn_with_fds(self_command(role, size, ack_every, extra)?, &[&theirs])?;
    let acks = mine.try_clone()?;
    Ok(Linked::new(child, mine, acks))
}
