//! What the machine is, recorded with every run, and the one setting the harness may change
//! (only with `--shmem-thp-advise`): shmem transparent huge pages.

use std::ffi::CStr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::work::Res;

/// The sysctl-like file for shmem THP.
pub const SHMEM_THP: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
const SHMEM_THP_C: &CStr = c"/sys/kernel/mm/transparent_hugepage/shmem_enabled";

/// Facts about the machine a result depends on.
#[derive(Debug, Clone)]
pub struct Machine {
    kernel: String,
    cpus: String,
    cpu_model: String,
    mem_total: String,
    shmem_thp: String,
    anon_thp: String,
    hugepages_free: String,
    hugepage_size: String,
    rustc_profile: String,
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("?{e}"))
}

/// The selected word of a THP setting file (`always [never]` → `never`).
fn selected(setting: &str) -> String {
    match (setting.find('['), setting.find(']')) {
        (Some(a), Some(b)) if a < b => setting[a + 1..b].to_owned(),
        _ => setting.to_owned(),
    }
}

fn meminfo(key: &str) -> String {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| "?".to_owned())
}

impl Machine {
    /// Reads everything now (call it after any setting was changed, so it is what ran).
    pub fn probe() -> Machine {
        let uts = nix::sys::utsname::uname();
        let kernel = match &uts {
            Ok(u) => format!(
                "{} {} {}",
                u.sysname().to_string_lossy(),
                u.release().to_string_lossy(),
                u.machine().to_string_lossy()
            ),
            Err(e) => format!("?{e}"),
        };
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "?".to_owned());
        Machine {
            kernel,
            cpus: std::thread::available_parallelism()
                .map_or(0, |n| n.get())
                .to_string(),
            cpu_model,
            mem_total: meminfo("MemTotal"),
            shmem_thp: selected(&read_trim(SHMEM_THP)),
            anon_thp: selected(&read_trim("/sys/kernel/mm/transparent_hugepage/enabled")),
            hugepages_free: meminfo("HugePages_Free"),
            hugepage_size: meminfo("Hugepagesize"),
            rustc_profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .to_owned(),
        }
    }

    /// `(key, value)` pairs, in a stable order.
    pub fn fields(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("kernel", &self.kernel),
            ("cpus", &self.cpus),
            ("cpu_model", &self.cpu_model),
            ("mem_total", &self.mem_total),
            ("shmem_thp", &self.shmem_thp),
            ("anon_thp", &self.anon_thp),
            ("hugepages_free", &self.hugepages_free),
            ("hugepage_size", &self.hugepage_size),
            ("build", &self.rustc_profile),
        ]
    }

    /// One line for the top of the table.
    pub fn line(&self) -> String {
        let parts: Vec<String> = self
            .fields()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        parts.join(", ")
    }
}

/// The old shmem THP value (leaked bytes) for the signal handler; null when nothing to do.
static RESTORE_PTR: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static RESTORE_LEN: AtomicUsize = AtomicUsize::new(0);

/// Writes the saved value back; only async-signal-safe calls (open, write, close).
fn restore_raw() {
    let ptr = RESTORE_PTR.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if ptr.is_null() {
        return;
    }
    let len = RESTORE_LEN.load(Ordering::SeqCst);
    // SAFETY: open/write/close are async-signal-safe; the path is a static C string and
    // `ptr..ptr+len` is a leaked (never freed) buffer set before the pointer was published.
    unsafe {
        let fd = libc::open(SHMEM_THP_C.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::write(fd, ptr.cast(), len);
            libc::close(fd);
        }
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    restore_raw();
    // SAFETY: signal and raise are async-signal-safe; re-raising with the default action
    // ends the process the way the signal would have.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Sets shmem THP to `advise` for the lifetime of the guard and puts the old value back
/// when dropped, on panic (unwinding) and on SIGINT/SIGTERM/SIGHUP.
#[derive(Debug)]
pub struct ShmemThpAdvise {
    old: String,
}

impl ShmemThpAdvise {
    /// Changes the setting (needs root).
    pub fn set() -> Res<ShmemThpAdvise> {
        let old = selected(&read_trim(SHMEM_THP));
        if old.starts_with('?') {
            return Err(format!("cannot read {SHMEM_THP}: {old}").into());
        }
        let saved: &'static mut [u8] = Box::leak(old.clone().into_bytes().into_boxed_slice());
        RESTORE_LEN.store(saved.len(), Ordering::SeqCst);
        RESTORE_PTR.store(saved.as_mut_ptr(), Ordering::SeqCst);
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESETHAND,
            SigSet::empty(),
        );
        for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            // SAFETY: the handler only makes async-signal-safe calls (see restore_raw).
            unsafe { sigaction(sig, &action) }?;
        }
        std::fs::write(SHMEM_THP, "advise").map_err(|e| {
            restore_raw();
            format!("cannot write `advise` to {SHMEM_THP} (root needed): {e}")
        })?;
        eprintln!("shmem THP set to `advise` for this run (was `{old}`; restored at the end)");
        Ok(ShmemThpAdvise { old })
    }
}

impl Drop for ShmemThpAdvise {
    fn drop(&mut self) {
        restore_raw();
        eprintln!("shmem THP restored to `{}`", self.old);
    }
}
