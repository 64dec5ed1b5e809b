//! The packet header: what one `SOCK_SEQPACKET` packet of a typed channel looks like.
//!
//! Specified byte by byte in `docs/protocol.md`. Every field is checked against what
//! actually arrived before anything else happens with the packet.

use crate::{Error, Result};

/// `b"MFIP"`: the first four bytes of every packet.
pub(crate) const MAGIC: [u8; 4] = *b"MFIP";
/// The protocol version this crate sends.
pub(crate) const VERSION: u16 = 2;
/// The oldest version this crate still receives: version 1 is version 2 without the
/// message-type fingerprint (its bytes 12..16 are zero, "not checked").
pub(crate) const OLDEST_VERSION: u16 = 1;
/// Header size in bytes.
pub(crate) const HEADER_LEN: usize = 24;
/// Flag: the payload is not in the packet but in a sealed memfd, the packet's last fd.
pub(crate) const FLAG_SPILLED: u16 = 1;
/// Flag (protocol v2): a flow-control packet, not a message (`flow.rs`, `docs/protocol.md`).
pub(crate) const FLAG_CONTROL: u16 = 2;
/// Every flag this version knows; any other bit set is a protocol error.
const KNOWN_FLAGS: u16 = FLAG_SPILLED | FLAG_CONTROL;

/// Whether `packet` (at least its first 8 bytes) has the control flag set. Only the flag is
/// looked at: [`parse_control_header`] checks the rest.
pub(crate) fn is_control(packet: &[u8]) -> bool {
    packet.len() >= 8 && u16::from_le_bytes([packet[6], packet[7]]) & FLAG_CONTROL != 0
}

/// The header of a control packet with a `payload_len`-byte payload.
pub(crate) fn control_header(payload_len: u64) -> [u8; HEADER_LEN] {
    let mut b = Header {
        spilled: false,
        fd_count: 0,
        payload_len,
        fingerprint: 0,
    }
    .to_bytes();
    b[6..8].copy_from_slice(&FLAG_CONTROL.to_le_bytes());
    b
}

/// Validates the header of a control packet: a valid inline header with only the control
/// flag set and no fds.
pub(crate) fn parse_control_header(packet: &[u8], fds_received: usize) -> Result<()> {
    let header = Header::parse(packet, fds_received)?;
    if header.spilled || header.fd_count != 0 {
        return Err(Error::Protocol {
            detail: format!(
                "control packet must be inline and carry no fd (spilled: {}, fds: {})",
                header.spilled, header.fd_count
            ),
            fd: None,
        });
    }
    Ok(())
}

/// A decoded, validated header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Payload is in a sealed memfd (the last fd) instead of following the header.
    pub(crate) spilled: bool,
    /// Number of fds attached to the packet (including the spill memfd).
    pub(crate) fd_count: u32,
    /// Payload length in bytes.
    pub(crate) payload_len: u64,
    /// The fingerprint of the message's type (`fingerprint.rs`); 0: not checked (also every
    /// version-1 packet).
    pub(crate) fingerprint: u32,
}

impl Header {
    /// Serializes the header into its 24 bytes.
    pub(crate) fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        let flags = if self.spilled { FLAG_SPILLED } else { 0 };
        b[6..8].copy_from_slice(&flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.fd_count.to_le_bytes());
        b[12..16].copy_from_slice(&self.fingerprint.to_le_bytes());
        b[16..24].copy_from_slice(&self.payload_len.to_le_bytes());
        b
    }

    /// Parses and validates the header of a packet of which `packet` is every byte that
    /// arrived and `fds_received` the number of fds that came with it.
    ///
    /// # Errors
    ///
    /// [`Error::VersionMismatch`] for a version other than 1 or 2, [`Error::Protocol`] for
    /// anything else that does not add up (short packet, bad magic, unknown flags, a
    /// version-1 packet with bytes 12..16 not zero, a length or fd count that differs from
    /// what arrived).
    pub(crate) fn parse(packet: &[u8], fds_received: usize) -> Result<Header> {
        let proto = |detail: String| Err(Error::Protocol { detail, fd: None });
        if packet.len() < HEADER_LEN {
            return proto(format!(
                "packet of {} bytes is shorter than the {HEADER_LEN}-byte header",
                packet.len()
            ));
        }
        if packet[0..4] != MAGIC {
            return proto(format!(
                "bad magic {:02x?}, expected {:02x?} (\"MFIP\")",
                &packet[0..4],
                MAGIC
            ));
        }
        let version = u16::from_le_bytes([packet[4], packet[5]]);
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(Error::VersionMismatch {
                ours: VERSION,
                theirs: version,
                fd: None,
            });
        }
        let flags = u16::from_le_bytes([packet[6], packet[7]]);
        // Control packets are a version-2 addition: version 1 knows only the spill flag.
        let known = if version == 1 {
            FLAG_SPILLED
        } else {
            KNOWN_FLAGS
        };
        if flags & !known != 0 {
            return proto(format!(
                "unknown flags {:#06x} (version {version} knows {known:#06x})",
                flags & !known
            ));
        }
        let spilled = flags & FLAG_SPILLED != 0;
        let fd_count = u32::from_le_bytes(packet[8..12].try_into().expect("4 bytes"));
        let fingerprint = u32::from_le_bytes(packet[12..16].try_into().expect("4 bytes"));
        if version == 1 && fingerprint != 0 {
            return proto(format!(
                "reserved header field of a version-1 packet is {fingerprint:#x}, must be 0"
            ));
        }
        let payload_len = u64::from_le_bytes(packet[16..24].try_into().expect("8 bytes"));
        if fd_count as usize != fds_received {
            return proto(format!(
                "header announces {fd_count} fds but {fds_received} arrived with the packet"
            ));
        }
        let after_header = (packet.len() - HEADER_LEN) as u64;
        if spilled {
            if fd_count == 0 {
                return proto("spilled payload but the packet carries no fd".into());
            }
            if after_header != 0 {
                return proto(format!(
                    "spilled packet carries {after_header} bytes after the header, must be 0"
                ));
            }
        } else if payload_len != after_header {
            return proto(format!(
                "header announces a {payload_len}-byte payload but {after_header} bytes arrived"
            ));
        }
        Ok(Header {
            spilled,
            fd_count,
            payload_len,
            fingerprint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = Header {
            spilled: true,
            fd_count: 3,
            payload_len: 1 << 40,
            fingerprint: 0xdead_beef,
        };
        let b = h.to_bytes();
        assert_eq!(&b[0..4], b"MFIP");
        assert_eq!(&b[4..6], &[2, 0]);
        assert_eq!(&b[12..16], &0xdead_beef_u32.to_le_bytes());
        assert_eq!(Header::parse(&b, 3).unwrap(), h);
        let h = Header {
            spilled: false,
            fd_count: 0,
            payload_len: 5,
            fingerprint: 0,
        };
        let mut p = h.to_bytes().to_vec();
        p.extend_from_slice(b"hello");
        assert_eq!(Header::parse(&p, 0).unwrap(), h);
    }

    #[test]
    fn rejects() {
        let good = Header {
            spilled: false,
            fd_count: 1,
            payload_len: 0,
            fingerprint: 7,
        }
        .to_bytes();
        let bad = |f: &dyn Fn(&mut [u8; HEADER_LEN]), fds: usize| {
            let mut b = good;
            f(&mut b);
            Header::parse(&b, fds).unwrap_err()
        };
        assert!(matches!(bad(&|_| {}, 0), Error::Protocol { .. }));
        assert!(matches!(bad(&|b| b[0] = b'X', 1), Error::Protocol { .. }));
        assert!(matches!(
            bad(&|b| b[4] = 9, 1),
            Error::VersionMismatch {
                ours: 2,
                theirs: 9,
                ..
            }
        ));
        assert!(matches!(
            bad(&|b| b[4] = 0, 1),
            Error::VersionMismatch {
                ours: 2,
                theirs: 0,
                ..
            }
        ));
        assert!(matches!(bad(&|b| b[6] = 4, 1), Error::Protocol { .. }));
        // Version 1: bytes 12..16 are reserved and must be zero.
        assert!(matches!(bad(&|b| b[4] = 1, 1), Error::Protocol { .. }));
        // Version 1 has no control packets: the same empty control header that version 2
        // accepts is refused as an unknown flag.
        let mut control = control_header(0);
        assert!(Header::parse(&control, 0).is_ok());
        control[4..6].copy_from_slice(&1u16.to_le_bytes());
        assert!(matches!(
            Header::parse(&control, 0),
            Err(Error::Protocol { detail, .. }) if detail.contains("unknown flags 0x0002")
        ));
        assert!(matches!(bad(&|b| b[16] = 1, 1), Error::Protocol { .. }));
        assert!(matches!(
            Header::parse(&good[..10], 1),
            Err(Error::Protocol { .. })
        ));
        // Spilled without an fd.
        let s = Header {
            spilled: true,
            fd_count: 0,
            payload_len: 1,
            fingerprint: 0,
        }
        .to_bytes();
        assert!(matches!(Header::parse(&s, 0), Err(Error::Protocol { .. })));
    }

    #[test]
    fn version_1_is_fingerprint_0() {
        let mut b = Header {
            spilled: false,
            fd_count: 0,
            payload_len: 0,
            fingerprint: 0,
        }
        .to_bytes();
        b[4] = 1;
        let h = Header::parse(&b, 0).unwrap();
        assert_eq!(h.fingerprint, 0);
        // Any fingerprint in version 2, including 0.
        b[4] = 2;
        b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Header::parse(&b, 0).unwrap().fingerprint, u32::MAX);
    }
}
