//! A mapped model file that shrinks while in use (truncated, or rewritten in place by `cp` or
//! an editor) makes the next read of a page past its new end raise SIGBUS, which kills the
//! process without a word. This handler turns that into one line naming the file and exit
//! status 1. A file *replaced* by renaming a new one over it is safe and never gets here: the
//! mapping keeps the old file's data alive until it is unmapped (`lumen pull`, `convert` and
//! `quantize` all replace files that way).

use std::path::Path;
use std::sync::OnceLock;

/// The message the handler writes, prepared beforehand: a signal handler may not allocate.
static MESSAGE: OnceLock<Vec<u8>> = OnceLock::new();

/// Installs the handler for the model at `path` (the first call wins; one model per process).
pub fn report_shrunk_model_file(path: &Path) {
    let text = format!(
        "error: {}: the model file was truncated or rewritten while in use (it is memory-mapped); \
         replace model files by renaming a new file over them, or run with --no-mmap\n",
        path.display()
    );
    if MESSAGE.set(text.into_bytes()).is_err() {
        return;
    }
    // SAFETY: installs a handler that only calls async-signal-safe functions (write, _exit)
    // on data fully built before installation.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}

extern "C" fn on_sigbus(_signal: libc::c_int) {
    if let Some(message) = MESSAGE.get() {
        // SAFETY: write(2) and _exit(2) are async-signal-safe; `message` is never mutated.
        unsafe {
            libc::write(2, message.as_ptr().cast(), message.len());
        }
    }
    unsafe { libc::_exit(1) }
}
