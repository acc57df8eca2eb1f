//! Keeps a memory-mapped bundle file that someone truncates from killing the server.
//!
//! Reading a mapped page that lies past the end of a truncated file raises
//! `SIGBUS`, whose default action ends the process. A [`MappingGuard`] registers
//! a mapping's address range with a process-wide `SIGBUS` handler; on a fault
//! inside a registered range the handler maps zero pages over the whole range
//! (so the faulting read, restarted, reads 0.0) and marks the guard faulted.
//! The predictor then reports its table as changed, and the server answers 503
//! and unloads that version instead of answering from zeros. A fault anywhere
//! else is handed to the handler that was installed before ours (by default:
//! the process dies with `SIGBUS`, as it would have without us).

#[cfg(target_os = "linux")]
mod imp {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::OnceLock;

    /// Mapped versions a server can hold guarded at once (it keeps one or two).
    const SLOTS: usize = 64;

    struct Slot {
        /// Page-aligned start of the range; 0 = free.
        start: AtomicUsize,
        len: AtomicUsize,
        faulted: AtomicBool,
    }

    #[allow(clippy::declare_interior_mutable_const)] // only used to build the array below
    const FREE: Slot = Slot { start: AtomicUsize::new(0), len: AtomicUsize::new(0), faulted: AtomicBool::new(false) };
    static SLOT_TABLE: [Slot; SLOTS] = [FREE; SLOTS];

    /// The action that was installed before ours; faults outside our ranges go there.
    static PREVIOUS: OnceLock<Result<libc::sigaction, String>> = OnceLock::new();

    /// One guarded range; unregistered on drop (drop it before unmapping the range).
    pub struct MappingGuard {
        slot: usize,
    }

    impl MappingGuard {
        /// Guards `[start, start + len)`, the whole of one mapping (`start` page-aligned).
        pub fn new(start: *const u8, len: usize) -> anyhow::Result<Self> {
            install_handler()?;
            let start = start as usize;
            anyhow::ensure!(start != 0 && start.is_multiple_of(page_size()), "mapping at {start:#x} is not page-aligned");
            // One registration at a time; the handler never takes this lock, it reads
            // `start` first, and a slot's length and flag are set before its start is published.
            static REGISTER: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let _one_at_a_time = REGISTER.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((i, slot)) = SLOT_TABLE.iter().enumerate().find(|(_, s)| s.start.load(Ordering::Acquire) == 0) {
                slot.len.store(len, Ordering::Release);
                slot.faulted.store(false, Ordering::Release);
                slot.start.store(start, Ordering::Release);
                return Ok(MappingGuard { slot: i });
            }
            anyhow::bail!("more than {SLOTS} memory-mapped model versions loaded at once")
        }

        /// Whether a read of the range faulted (its file shrank): the range now reads zeros.
        pub fn faulted(&self) -> bool {
            SLOT_TABLE[self.slot].faulted.load(Ordering::Acquire)
        }
    }

    impl Drop for MappingGuard {
        fn drop(&mut self) {
            SLOT_TABLE[self.slot].start.store(0, Ordering::Release);
        }
    }

    fn page_size() -> usize {
        // SAFETY: sysconf has no preconditions.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if size > 0 {
            size as usize
        } else {
            4096
        }
    }

    fn install_handler() -> anyhow::Result<()> {
        let previous = PREVIOUS.get_or_init(|| {
            // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; we set
            // the handler and flags, and sigaction only reads `new` and writes `old`.
            unsafe {
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = on_sigbus as *const () as usize;
                new.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
                libc::sigemptyset(&mut new.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(libc::SIGBUS, &new, &mut old) == 0 {
                    Ok(old)
                } else {
                    Err(std::io::Error::last_os_error().to_string())
                }
            }
        });
        previous.as_ref().map(|_| ()).map_err(|e| anyhow::anyhow!("cannot install the SIGBUS handler that guards mapped tables: {e}"))
    }

    /// Runs in signal context: only atomics, `mmap` and `sigaction` (plain system calls).
    extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo_t for an SA_SIGINFO handler.
        let address = unsafe { (*info).si_addr() } as usize;
        for slot in &SLOT_TABLE {
            let start = slot.start.load(Ordering::Acquire);
            let len = slot.len.load(Ordering::Acquire);
            if start == 0 || address < start || address >= start + len {
                continue;
            }
            // SAFETY: [start, start + len) is a live mapping owned by a registered guard
            // (guards unregister before their mapping is unmapped); MAP_FIXED replaces it
            // in place with private zero pages, so the restarted read succeeds.
            let mapped = unsafe { libc::mmap(start as *mut libc::c_void, len, libc::PROT_READ, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED, -1, 0) };
            if mapped != libc::MAP_FAILED {
                slot.faulted.store(true, Ordering::Release);
                return;
            }
            break;
        }
        forward(signal, info, context);
    }

    /// Not one of ours: behave as if our handler were not there.
    fn forward(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
        let Some(Ok(previous)) = PREVIOUS.get() else { return };
        let handler = previous.sa_sigaction;
        if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
            // Put the previous action back and return: the faulting instruction runs
            // again and the kernel applies the default action (the process ends with SIGBUS).
            // SAFETY: `previous` is the action sigaction returned to us.
            unsafe { libc::sigaction(libc::SIGBUS, previous, std::ptr::null_mut()) };
        } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
            // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this signature.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = unsafe { std::mem::transmute(handler) };
            f(signal, info, context);
        } else {
            // SAFETY: a handler installed without SA_SIGINFO takes only the signal number.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
            f(signal);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    /// Elsewhere mapped tables are not guarded (the server's stat checks remain).
    pub struct MappingGuard;

    impl MappingGuard {
        pub fn new(_start: *const u8, _len: usize) -> anyhow::Result<Self> {
            Ok(MappingGuard)
        }
        pub fn faulted(&self) -> bool {
            false
        }
    }
}

pub use imp::MappingGuard;
