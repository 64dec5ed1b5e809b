//! `typed_vec` and `typed_bytes`: a 16 MiB byte field inside an ordinary typed message
//! (no `Frozen`: what a user gets without changing their types).

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cases::{Alt, Params, Role, Shared, drive_linked, ipc_consume, ours_consume};
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

/// Both message types have the fields `id` and `data`.
macro_rules! impl_msg {
    ($t:ident, $kind:literal) => {
        impl Msg for $t {
            const KIND: &'static str = $kind;
            fn new(data: Vec<u8>) -> Self {
                $t { id: 1, data }
            }
            fn data(&self) -> &[u8] {
                &self.data
            }
            fn data_mut(&mut self) -> &mut [u8] {
                &mut self.data
            }
        }
    };
}

impl_msg!(VecMsg, "vec");
impl_msg!(BytesMsg, "bytes");

/// The `typed_vec` alternatives, ours first.
pub const VEC_ALTS: &[Alt] = &[
    Alt::new("ours", ours::<VecMsg>),
    Alt::new("ipc_channel", ipc::<VecMsg>),
];

/// The `typed_bytes` alternatives, ours first.
pub const BYTES_ALTS: &[Alt] = &[
    Alt::new("ours", ours::<BytesMsg>),
    Alt::new("ipc_channel", ipc::<BytesMsg>),
];

/// Child roles of these cases: consumers that read every byte of the field.
pub const ROLES: &[Role] = &[
    Role::new("typed.ours.vec", ours_child::<VecMsg>),
    Role::new("typed.ours.bytes", ours_child::<BytesMsg>),
    Role::new("typed.ipc.vec", ipc_child::<VecMsg>),
    Role::new("typed.ipc.bytes", ipc_child::<BytesMsg>),
];

fn ours_child<M: Msg>(a: &ChildArgs) -> Res<()> {
    ours_consume::<M>(a.ack_every, |m| Ok(checksum(m.data())))
}

fn ipc_child<M: Msg>(a: &ChildArgs) -> Res<()> {
    ipc_consume::<M>(&a.extra, a.ack_every, |m| Ok(checksum(m.data())))
}

fn role<M: Msg>(kind: &str) -> String {
    format!("typed.{kind}.{}", M::KIND)
}

/// The message is built once (filled again per send) and sent by reference.
fn ours<M: Msg>(p: &Params) -> Res<f64> {
    let links = ours_spawn::<M, u64>(&role::<M>("ours"), p.size, 1, "")?;
    let mut msg = M::new(vec![0u8; p.size]);
    drive_linked(p, 1, links, |tx, s| {
        fill(msg.data_mut(), s);
        Ok(tx[0].send(&msg)?)
    })
}

/// ipc-channel's typed send of the same message (shared, not cloned, per send).
fn ipc<M: Msg>(p: &Params) -> Res<f64> {
    let links = ipc_spawn::<Shared<M>, u64>(&role::<M>("ipc"), p.size, 1)?;
    let mut msg = Arc::new(M::new(vec![0u8; p.size]));
    drive_linked(p, 1, links, |tx, s| {
        let m = Arc::get_mut(&mut msg).ok_or("message still shared")?;
        fill(m.data_mut(), s);
        Ok(tx[0].send(Shared(msg.clone()))?)
    })
}
