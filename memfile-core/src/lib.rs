//! # memfile-core
//!
//! Linux memfds (`memfd_create`), file seals, and [`Frozen`]: a memfd whose contents can
//! never change again, verified by the kernel, readable as a plain `&[u8]`.
//!
//! (Crate overview and the soundness argument: see the sections below and `docs/safety.md`.)

#![cfg_attr(docsrs, feature(doc_auto_cfg))]

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
compile_error!(
    "memfile-core supports Linux, Android and FreeBSD only: it needs memfd_create and file sealing"
);

mod seal;
mod sys;

// --- owned by the MemFile work: memfile.rs, options.rs (add `pub use` lines here) ---
mod memfile;
mod options;

// --- owned by the Frozen work: frozen.rs, region.rs, live.rs (add `pub use` lines here) ---
mod frozen;
mod live;
mod region;

pub use seal::{Seal, Seals, SealsIter};
