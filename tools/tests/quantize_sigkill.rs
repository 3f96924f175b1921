//! `lumen-quantize` killed with SIGKILL at spread-out moments of its run: the target path never
//! holds a partial file. It is either absent (or the previous complete output, when one was
//! there) or byte-identical to the output of an uninterrupted run. A kill may leave the
//! temporary sibling file behind (nothing runs to remove it); the next run must still succeed
//! and removes it. Ctrl-C (SIGINT) mid-write removes the temporary file itself and exits 130.
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lumen::gguf::writer::{GgufWriter, MetaValue, TensorData};
use lumen::kernels::GgmlType;

const TRIALS: u64 = 10;
/// Columns × rows of each weight matrix and how many there are: ~96 MiB of F32 input, which
/// quantizes to Q4_K_M in about a second on two cores (Q4_0 takes a few tens of milliseconds,
/// too short a window to aim kills into).
const COLS: usize = 2048;
const ROWS: usize = 2048;
const N_MATRICES: usize = 6;

fn pseudo_random_f32(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n * 4);
    for _ in 0..n {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let x = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// An F32 llama-like GGUF: `N_MATRICES` FFN matrices and a norm (which stays F32).
fn write_input(path: &Path) {
    let mut w = GgufWriter::new();
    w.add_meta("general.architecture", MetaValue::Str("llama".into()));
    w.add_meta("general.name", MetaValue::Str("sigkill".into()));
    w.add_meta("general.file_type", MetaValue::U32(0));
    w.add_meta("llama.block_count", MetaValue::U32(N_MATRICES as u32));
    w.add_meta("llama.attention.head_count", MetaValue::U32(16));
    w.add_meta("llama.attention.head_count_kv", MetaValue::U32(4));
    w.add_tensor(TensorData {
        name: "output_norm.weight".into(),
        ty: GgmlType::F32,
        shape: vec![COLS],
        data: pseudo_random_f32(COLS, 99),
    });
    for i in 0..N_MATRICES {
        w.add_tensor(TensorData {
            name: format!("blk.{i}.ffn_up.weight"),
            ty: GgmlType::F32,
            shape: vec![COLS, ROWS],
            data: pseudo_random_f32(COLS * ROWS, i as u64 + 1),
        });
    }
    w.write_atomic(path).unwrap();
}

fn spawn_quantize(input: &Path, output: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lumen-quantize"))
        .arg(input)
        .arg(output)
        .arg("Q4_K_M")
        .arg("--force")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs to completion; returns how long it took.
fn quantize_uninterrupted(input: &Path, output: &Path) -> Duration {
    let start = Instant::now();
    let status = spawn_quantize(input, output).wait().unwrap();
    assert!(status.success(), "lumen-quantize failed: {status}");
    start.elapsed()
}

/// Deterministic delays spread over `[0, 1.1 × run)`: early (reading, planning), during the
/// streaming write, around the fsync and rename, and (the last tenth) after completion.
fn kill_delays(run: Duration) -> Vec<Duration> {
    let mut state: u64 = 0x5EED_2026;
    (0..TRIALS)
        .map(|i| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let jitter = (state >> 33) as f64 / (1u64 << 31) as f64;
            // One kill per tenth of the span, at a pseudo-random point inside it.
            let fraction = (i as f64 + jitter) / TRIALS as f64 * 1.1;
            run.mul_f64(fraction)
        })
        .collect()
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect()
}

#[test]
fn sigkill_never_leaves_a_partial_output() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("model-f32.gguf");
    write_input(&input);
    let reference_path = tmp.path().join("reference.gguf");
    // The fastest of three runs: the first one pays for cold caches, and delays scaled from it
    // let most trials finish before their kill (the test then fails on its own premise).
    let run = (0..3)
        .map(|_| quantize_uninterrupted(&input, &reference_path))
        .min()
        .unwrap();
    let reference = std::fs::read(&reference_path).unwrap();
    assert!(
        run > Duration::from_millis(200),
        "the run is too short ({run:?}) for kills to land inside it"
    );
    println!(
        "uninterrupted run: {run:?}, output {} bytes",
        reference.len()
    );

    let out = tmp.path().join("out.gguf");
    let mut completed = 0;
    let mut killed_mid_write = false;
    for (trial, delay) in kill_delays(run).into_iter().enumerate() {
        // Every third trial starts with a complete output in place (the `--force` overwrite
        // path): a kill must leave that old file intact.
        if trial % 3 == 2 {
            std::fs::copy(&reference_path, &out).unwrap();
        } else if out.exists() {
            std::fs::remove_file(&out).unwrap();
        }
        let mut child = spawn_quantize(&input, &out);
        std::thread::sleep(delay);
        // SIGKILL (`Child::kill`); a child that already exited is simply reaped.
        let _ = child.kill();
        let status = child.wait().unwrap();
        let finished = status.success();
        completed += finished as u32;
        match std::fs::read(&out) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                assert!(!finished, "trial {trial}: exited 0 without an output");
            }
            Err(e) => panic!("trial {trial}: {e}"),
            Ok(bytes) => assert!(
                bytes == reference,
                "trial {trial} (killed after {delay:?}): {} holds {} bytes that are not the \
                 complete output ({} bytes)",
                out.display(),
                bytes.len(),
                reference.len()
            ),
        }
        let temps = temp_files(tmp.path());
        // Each run removes the temp files of writers that no longer exist: at most this kill's.
        assert!(
            temps.len() <= 1,
            "trial {trial}: stale temp files {temps:?}"
        );
        for t in &temps {
            let len = std::fs::metadata(t).unwrap().len();
            assert!(
                len <= reference.len() as u64,
                "{}: {len} bytes",
                t.display()
            );
            killed_mid_write |= len > 0;
        }
        println!(
            "trial {trial}: killed after {delay:?}: {}, output {}, {} temp file(s)",
            if finished { "had finished" } else { "killed" },
            if out.exists() { "complete" } else { "absent" },
            temp_files(tmp.path()).len()
        );
    }
    assert!(
        completed < TRIALS as u32 / 2,
        "most runs finished before the kill: the delays do not cover the run"
    );

    assert!(killed_mid_write, "no kill landed during the write");
    // The next run, with the leftovers still there, succeeds and writes the complete output.
    if out.exists() {
        std::fs::remove_file(&out).unwrap();
    }
    quantize_uninterrupted(&input, &out);
    assert!(std::fs::read(&out).unwrap() == reference);
    // ... and removes the last killed writer's temp file.
    assert!(
        temp_files(tmp.path()).is_empty(),
        "{:?}",
        temp_files(tmp.path())
    );
}

/// Waits until a temporary output file exists and has data in it.
fn wait_for_temp_with_data(dir: &Path, child: &mut Child) -> PathBuf {
    let start = Instant::now();
    loop {
        if let Some(t) = temp_files(dir)
            .into_iter()
            .find(|t| std::fs::metadata(t).is_ok_and(|m| m.len() > 0))
        {
            return t;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before writing was seen"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no temp file appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn ctrl_c_mid_write_removes_the_temp_file_and_exits_130() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("model-f32.gguf");
    write_input(&input);
    let input_bytes = std::fs::read(&input).unwrap();
    let out = tmp.path().join("out.gguf");
    for trial in 0..3 {
        // The last trial overwrites an existing (complete) output with --force.
        let previous = (trial == 2).then(|| {
            std::fs::write(&out, b"previous complete output").unwrap();
            std::fs::read(&out).unwrap()
        });
        let mut child = spawn_quantize(&input, &out);
        let temp = wait_for_temp_with_data(tmp.path(), &mut child);
        // SAFETY: signals our own child.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "trial {trial}: {status}");
        assert!(
            !temp.exists(),
            "trial {trial}: {} left behind",
            temp.display()
        );
        assert!(temp_files(tmp.path()).is_empty(), "trial {trial}");
        match &previous {
            None => assert!(!out.exists(), "trial {trial}: an output appeared"),
            Some(bytes) => assert_eq!(&std::fs::read(&out).unwrap(), bytes, "trial {trial}"),
        }
        assert_eq!(
            std::fs::read(&input).unwrap(),
            input_bytes,
            "the input changed"
        );
        println!(
            "trial {trial}: interrupted while {} was being written; cleaned up",
            temp.display()
        );
    }
}
