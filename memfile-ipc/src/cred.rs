//! Peer credentials (`SO_PEERCRED`) and the policy a [`Listener`](crate::Listener) applies
//! to them.

use std::fmt;
use std::sync::Arc;

/// The process at the other end of a Unix socket, as the kernel recorded it.
///
/// For a connected socket this is the peer's pid, effective uid and effective gid at the
/// time it called `connect` (or `socketpair`); see `SO_PEERCRED` in
/// [unix(7)](https://man7.org/linux/man-pages/man7/unix.7.html). The kernel fills it in,
/// so the peer cannot lie about it. The pid may have been reused if the peer has exited
/// since, and it is 0 when the peer lives in a pid namespace that is not visible from ours.
///
/// `#[non_exhaustive]`: more fields (supplementary groups, a pidfd) may come; build one
/// with [`Credentials::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Credentials {
    /// Process id of the peer.
    pub pid: i32,
    /// Effective user id of the peer.
    pub uid: u32,
    /// Effective group id of the peer.
    pub gid: u32,
}

impl Credentials {
    /// Credentials with these ids, e.g. to test a [`CredentialPolicy`].
    ///
    /// ```
    /// use memfile::ipc::{CredentialPolicy, Credentials};
    ///
    /// let stranger = Credentials::new(1234, 4242, 4242);
    /// assert!(CredentialPolicy::Uids(vec![1000]).check(&stranger).is_err());
    /// ```
    pub fn new(pid: i32, uid: u32, gid: u32) -> Credentials {
        Credentials { pid, uid, gid }
    }

    /// Converts what `getsockopt(SO_PEERCRED)` returned. Not a public `From` impl, so that
    /// no `nix` type is part of this crate's API.
    pub(crate) fn from_nix(c: nix::sys::socket::UnixCredentials) -> Credentials {
        Credentials {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
        }
    }
}

/// A caller-supplied credential check for [`CredentialPolicy::Custom`]: `Ok(())` admits
/// the peer, `Err(reason)` rejects it.
pub type CredentialCheck = dyn Fn(&Credentials) -> Result<(), String> + Send + Sync;

/// Which peers a [`Listener`](crate::Listener) accepts, judged by their [`Credentials`].
///
/// The default, [`SameUid`](CredentialPolicy::SameUid), admits only processes running as
/// the listener's own effective uid. This matters most for abstract socket names, which
/// have no file permissions at all; for a path listener it backs up the socket file's
/// mode 0600.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum CredentialPolicy {
    /// Only peers whose effective uid equals ours (`geteuid()` at accept time).
    #[default]
    SameUid,
    /// Every peer. Only sensible for a path listener whose directory restricts access.
    AnyUid,
    /// Peers whose effective uid is in this list (our own uid is not added implicitly).
    Uids(Vec<u32>),
    /// A caller-supplied check: `Ok(())` admits the peer, `Err(reason)` rejects it and the
    /// reason ends up in [`Error::PeerRejected`](crate::Error::PeerRejected).
    Custom(Arc<CredentialCheck>),
}

impl CredentialPolicy {
    /// Decides whether a peer with these credentials may connect.
    ///
    /// # Errors
    ///
    /// A human-readable reason when the policy refuses the peer.
    pub fn check(&self, peer: &Credentials) -> Result<(), String> {
        match self {
            CredentialPolicy::SameUid => {
                let ours = nix::unistd::geteuid().as_raw();
                if peer.uid == ours {
                    Ok(())
                } else {
                    Err(format!("uid {} is not our uid {ours}", peer.uid))
                }
            }
            CredentialPolicy::AnyUid => Ok(()),
            CredentialPolicy::Uids(uids) => {
                if uids.contains(&peer.uid) {
                    Ok(())
                } else {
                    Err(format!(
                        "uid {} is not in the allowed list {uids:?}",
                        peer.uid
                    ))
                }
            }
            CredentialPolicy::Custom(check) => check(peer),
        }
    }
}

impl fmt::Debug for CredentialPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialPolicy::SameUid => f.write_str("SameUid"),
            CredentialPolicy::AnyUid => f.write_str("AnyUid"),
            CredentialPolicy::Uids(uids) => f.debug_tuple("Uids").field(uids).finish(),
            CredentialPolicy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}
