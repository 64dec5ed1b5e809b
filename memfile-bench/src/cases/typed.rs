//! `typed_vec` and `typed_bytes`: a 16 MiB byte field inside an ordinary typed message
//! (no `Frozen`: what a user gets without changing their types).

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cases::{Alt, Params, Shared, drive, ipc_consume, ours_consume};
use crate::proc::{ChildArgs, ipc_spawn, ours_spawn};
use crate::work::{Res, checksum, fill};

/// A plain `Vec<u8>` field: serde hands it to the codec one byte at a time.
#[derive(Debug, Serialize, Deserialize)]
struct VecMsg {
    id: u64,
    data: Vec<u8>,
}

/// The same field marked `serde_bytes`: one bulk copy.
#[derive(Debug, Serialize, Deserialize)]
struct BytesMsg {
    id: u64,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

trait Msg: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The last part of the child role names (`typed.ours.vec`, ...).
    const KIND: &'static str;
    fn new(data: Vec<u8>) -> Self;
    fn data(&self) -> &[u8];
    fn data_mut(&mut self) -> &mut [u8];
}

impl Msg for VecMsg {
    const KIND: &'static str = "vec";
    fn new(data: Vec<u8>) -> Self {
        VecMsg { id: 1, data }
    }
    fn data(&self) -> &[u8] {
        &self.data
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

impl Msg for BytesMsg {
    const KIND: &'static str = "bytes";
    fn new(data: Vec<u8>) -> Self {
        BytesMsg { id: 1, data }
    }
    fn data(&self) -> &[u8] {
        &self.data
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

/// The `typed_vec` alternatives, ours first.
pub fn vec_alts() -> Vec<Alt> {
    vec![
        Alt {
            name: "ours",
            run: ours::<VecMsg>,
        },
        Alt {
            name: "ipc_channel",
            run: ipc::<VecMsg>,
        },
    ]
}

/// The `typed_bytes` alternatives, ours first.
pub fn bytes_alts() -> Vec<Alt> {
    vec![
        Alt {
            name: "ours",
            run: ours::<BytesMsg>,
        },
        Alt {
            name: "ipc_channel",
            run: ipc::<BytesMsg>,
        },
    ]
}

/// Child roles of these cases.
pub fn child(a: &ChildArgs) -> Option<Res<()>> {
    Some(match a.role.as_str() {
        "typed.ours.vec" => ours_consume::<VecMsg>(a.ack_every, |m| Ok(checksum(m.data()))),
        "typed.ours.bytes" => ours_consume::<BytesMsg>(a.ack_every, |m| Ok(checksum(m.data()))),
        "typed.ipc.vec" => ipc_consume::<VecMsg>(&a.extra, a.ack_every, |m| Ok(checksum(m.data()))),
        "typed.ipc.bytes" => {
            ipc_consume::<BytesMsg>(&a.extra, a.ack_every, |m| Ok(checksum(m.data())))
        }
        _ => return None,
    })
}

fn role<M: Msg>(kind: &str) -> String {
    format!("typed.{kind}.{}", M::KIND)
}

/// The message is built once (filled again per send) and sent by reference.
fn ours<M: Msg>(p: &Params) -> Res<f64> {
    let (child, tx, rx) = ours_spawn::<M, u64>(&role::<M>("ours"), p.size, 1, "")?;
    let mut msg = M::new(vec![0u8; p.size]);
    let secs = drive(
        p,
        1,
        1,
        |s| {
            fill(msg.data_mut(), s);
            tx.send(&msg)?;
            Ok(())
        },
        || Ok(rx.recv()?),
    )?;
    drop((tx, rx));
    child.finish()?;
    Ok(secs)
}

/// ipc-channel's typed send of the same message (shared, not cloned, per send).
fn ipc<M: Msg>(p: &Params) -> Res<f64> {
    let (child, tx, rx) = ipc_spawn::<Shared<M>, u64>(&role::<M>("ipc"), p.size, 1)?;
    let mut msg = Arc::new(M::new(vec![0u8; p.size]));
    let secs = drive(
        p,
        1,
        1,
        |s| {
            let m = Arc::get_mut(&mut msg).ok_or("message still shared")?;
            fill(m.data_mut(), s);
            tx.send(Shared(msg.clone()))?;
            Ok(())
        },
        || Ok(rx.recv()?),
    )?;
    drop((tx, rx));
    child.finish()?;
    Ok(secs)
}
