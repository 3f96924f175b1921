//! Running a command that is handed a hostile file, and the contract it must keep: exit
//! status 1 with an `error:` line naming the file, within a time and a peak-RSS bound (a parser
//! that trusts a length allocates gigabytes or reads forever; the bounds catch both, which an
//! in-process `is_err()` check cannot). Shared by the GGUF and safetensors hostile-file tests.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const TIME_LIMIT: Duration = Duration::from_secs(1);
pub const RSS_LIMIT_KIB: u64 = 50 * 1024;
/// How long a child may run before it is killed as hung (well past `TIME_LIMIT`, so a slow
/// case reports its time instead of a bare "killed").
const HANG_LIMIT: Duration = Duration::from_secs(20);

pub struct Outcome {
    /// `None` when a signal ended the child.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stderr: String,
    pub elapsed: Duration,
    pub max_rss_kib: u64,
}

/// Runs `cmd` to completion, reaping it with `wait4` to read its own peak RSS (not its
/// siblings' — tests run in parallel threads). Linux carries the spawning process's RSS at
/// `exec` into the child's high-water mark, so this is an upper bound, meaningful while the
/// test process stays small (the tests only write small files or edit big ones in place, and
/// the high-water mark is reset before each spawn).
pub fn run_measured(mut cmd: Command, stderr_path: &Path) -> Outcome {
    let stderr_file = std::fs::File::create(stderr_path).unwrap();
    // Lower this process's RSS high-water mark to its current RSS, since the child inherits
    // it at `exec`. (A backtrace printed for a failing test keeps this process ~300 MiB large
    // for the rest of the run, inflating later measurements: read the first failure.)
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let start = Instant::now();
    #[allow(clippy::zombie_processes)] // reaped by `wait4` below, which `Child` cannot see
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file)
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our unreaped child; the out-pointers are valid for the call.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(r >= 0, "wait4: {}", std::io::Error::last_os_error());
        if r == pid {
            break;
        }
        if start.elapsed() > HANG_LIMIT {
            child.kill().unwrap();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = start.elapsed();
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else {
        (None, Some(libc::WTERMSIG(status)))
    };
    Outcome {
        code,
        signal,
        stderr: std::fs::read_to_string(stderr_path).unwrap(),
        elapsed,
        max_rss_kib: usage.ru_maxrss as u64,
    }
}

/// Checks the contract for `case`: exit 1, no panic, an `error:` line containing `names`,
/// within [`TIME_LIMIT`] and [`RSS_LIMIT_KIB`]. Returns the error line.
pub fn assert_refused_within_bounds(case: &str, o: &Outcome, names: &str) -> String {
    println!(
        "{case}: exit {:?}, {:.0} ms, max RSS {} KiB: {}",
        o.code,
        o.elapsed.as_secs_f64() * 1e3,
        o.max_rss_kib,
        o.stderr.trim()
    );
    assert_eq!(o.signal, None, "{case}: killed by a signal: {}", o.stderr);
    assert_eq!(o.code, Some(1), "{case}: {}", o.stderr);
    assert!(
        !o.stderr.contains("panicked"),
        "{case}: panicked: {}",
        o.stderr
    );
    let error_line = o
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{case}: no `error:` line: {}", o.stderr));
    assert!(
        error_line.contains(names),
        "{case}: the error does not name {names}: {error_line}"
    );
    assert!(
        o.elapsed < TIME_LIMIT,
        "{case}: took {:?} (limit {TIME_LIMIT:?})",
        o.elapsed
    );
    assert!(
        o.max_rss_kib < RSS_LIMIT_KIB,
        "{case}: peak RSS {} KiB (limit {RSS_LIMIT_KIB} KiB)",
        o.max_rss_kib
    );
    error_line.to_string()
}
