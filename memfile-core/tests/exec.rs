//! Exec modes (Linux 6.3+): `MFD_NOEXEC_SEAL` by default, `MFD_EXEC` on request, and
//! `allow_sealing(false)` holding in both.

#![cfg(any(target_os = "linux", target_os = "android"))]

use std::io;
use std::os::unix::fs::PermissionsExt;

use memfile_core::{CreateOptions, MemFile, Seal};

/// `vm.memfd_noexec`, read only (tests never change sysctls); `None` before Linux 6.3.
fn memfd_noexec() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/vm/memfd_noexec")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether the running kernel knows the exec flags (6.3+), from `uname`.
fn kernel_has_exec_flags() -> bool {
    let release = nix::sys::utsname::uname()
        .unwrap()
        .release()
        .to_string_lossy()
        .into_owned();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>());
    let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) else {
        panic!("cannot parse kernel release {release:?}");
    };
    (major, minor) >= (6, 3)
}

fn mode(file: &MemFile) -> u32 {
    file.metadata().unwrap().permissions().mode() & 0o7777
}

#[test]
fn default_is_noexec_sealed() -> io::Result<()> {
    if !kernel_has_exec_flags() {
        println!("skipped: kernel older than 6.3 has no MFD_NOEXEC_SEAL");
        return Ok(());
    }
    for sealable in [false, true] {
        let file = CreateOptions::new()
            .allow_sealing(sealable)
            .create("noexec")?;
        assert_eq!(mode(&file), 0o666, "sealable: {sealable}");
        let seals = file.get_seals()?;
        assert!(
            seals.contains(Seal::Exec),
            "sealable: {sealable}, seals: {seals}"
        );
        assert_eq!(seals.contains(Seal::Seal), !sealable, "seals: {seals}");
        // F_SEAL_EXEC: the x bits can never be set.
        let err = file
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o777))
            .expect_err("chmod +x of a NOEXEC_SEAL file");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(mode(&file), 0o666);
    }
    Ok(())
}

#[test]
fn noexec_seal_does_not_make_an_unsealable_file_sealable() -> io::Result<()> {
    // MFD_NOEXEC_SEAL alone makes a file sealable on Linux 6.3+; allow_sealing(false) must
    // still mean that no seal can be added.
    let file = MemFile::create_default("unsealable")?;
    assert!(file.get_seals()?.contains(Seal::Seal));
    for &seal in Seal::ALL {
        let err = file.add_seal(seal).expect_err("add to an unsealable file");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    }
    Ok(())
}

#[test]
fn exec_on_request() -> io::Result<()> {
    if !kernel_has_exec_flags() {
        println!("skipped: kernel older than 6.3 has no MFD_EXEC");
        return Ok(());
    }
    let noexec = memfd_noexec();
    for sealable in [false, true] {
        let result = CreateOptions::new()
            .allow_sealing(sealable)
            .exec(true)
            .create("exec");
        if noexec == Some(2) {
            let err = result.expect_err("vm.memfd_noexec=2 forbids MFD_EXEC");
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
            assert!(err.to_string().contains("vm.memfd_noexec"), "{err}");
            println!("skipped: exec mode checks: vm.memfd_noexec = 2 (checked the refusal)");
            continue;
        }
        let file = result?;
        assert_eq!(mode(&file), 0o777);
        let seals = file.get_seals()?;
        assert!(!seals.contains(Seal::Exec), "seals: {seals}");
        assert_eq!(seals.contains(Seal::Seal), !sealable, "seals: {seals}");
        if sealable {
            // The exec seal can still be added by hand, and then pins the mode.
            file.add_seal(Seal::Exec)?;
            assert!(
                file.as_file()
                    .set_permissions(std::fs::Permissions::from_mode(0o644))
                    .is_err()
            );
        }
    }
    Ok(())
}
