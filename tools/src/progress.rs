//! Progress display for the tool binaries: an indicatif bar when stderr is a terminal, one
//! plain line per step otherwise (logs, CI). The libraries only report events; this prints.

use std::io::IsTerminal;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use crate::output::Event;

/// A byte-counting progress display over `n_steps` numbered steps.
pub struct Progress {
    /// `None` when stderr is not a terminal: plain lines instead.
    bar: Option<ProgressBar>,
    n_steps: usize,
}

impl Progress {
    /// `total_bytes` sizes the bar; `n_steps` numbers the plain lines.
    pub fn new(total_bytes: u64, n_steps: usize) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None, n_steps };
        }
        let bar = ProgressBar::new(total_bytes);
        // The template is a constant; a bad one would be a bug caught on first run.
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
        ) {
            bar.set_style(style);
        }
        Progress {
            bar: Some(bar),
            n_steps,
        }
    }

    /// Announces the output (`writing OUT (TYPE, N tensors, X MiB)`) and starts the display.
    pub fn writing(output: &Path, file_type: &str, n_tensors: usize, total_bytes: u64) -> Self {
        eprintln!(
            "writing {} ({file_type}, {n_tensors} tensors, {:.1} MiB)",
            output.display(),
            total_bytes as f64 / (1u64 << 20) as f64
        );
        Self::new(total_bytes, n_tensors)
    }

    /// Step `index` (0-based) finished, adding `bytes`; `label` describes it (the bar's
    /// message on a terminal, a numbered line otherwise).
    pub fn step(&self, index: usize, bytes: u64, label: &str) {
        match &self.bar {
            Some(bar) => {
                bar.inc(bytes);
                bar.set_message(label.to_string());
            }
            None => eprintln!("{}", self.numbered(index, label)),
        }
    }

    /// Like [`Progress::step`], but `line` stays on screen above the bar too (per-step
    /// reports).
    pub fn step_line(&self, index: usize, bytes: u64, line: &str) {
        match &self.bar {
            Some(bar) => {
                bar.println(self.numbered(index, line));
                bar.inc(bytes);
            }
            None => eprintln!("{}", self.numbered(index, line)),
        }
    }

    /// `[  3/201] text`.
    fn numbered(&self, index: usize, text: &str) -> String {
        let n = self.n_steps;
        let width = n.to_string().len();
        format!("[{:>width$}/{n}] {text}", index + 1)
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Runs a tool's work with a display driven by its events: `writing …` and the bar on `Start`
/// (`type_name` names the file type), `on_tensor` for each tensor, the bar cleared at the end.
pub fn track<F, T, R>(
    run: impl FnOnce(&mut dyn FnMut(Event<F, T>)) -> R,
    type_name: impl Fn(&F) -> &'static str,
    on_tensor: impl Fn(&Progress, usize, &T),
) -> R {
    let mut progress: Option<Progress> = None;
    let result = run(&mut |event| match event {
        Event::Start {
            output,
            file_type,
            n_tensors,
            total_bytes,
        } => {
            let name = type_name(&file_type);
            progress = Some(Progress::writing(output, name, n_tensors, total_bytes));
        }
        Event::Tensor { index, tensor } => {
            if let Some(p) = &progress {
                on_tensor(p, index, tensor);
            }
        }
    });
    if let Some(p) = &progress {
        p.finish();
    }
    result
}
