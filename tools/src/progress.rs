//! Progress display for the tool binaries: an indicatif bar when stderr is a terminal, one
//! plain line per step otherwise (logs, CI). The libraries only report events; this prints.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A byte-counting progress display.
pub enum Progress {
    Bar(ProgressBar),
    Lines { n_steps: usize },
}

impl Progress {
    /// `total_bytes` sizes the bar; `n_steps` numbers the plain lines.
    pub fn new(total_bytes: u64, n_steps: usize) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress::Lines { n_steps };
        }
        let bar = ProgressBar::new(total_bytes);
        // The template is a constant; a bad one would be a bug caught on first run.
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
        ) {
            bar.set_style(style);
        }
        Progress::Bar(bar)
    }

    /// Step `index` (0-based) finished, adding `bytes`; `label` describes it.
    pub fn step(&self, index: usize, bytes: u64, label: &str) {
        match self {
            Progress::Bar(bar) => {
                bar.inc(bytes);
                bar.set_message(label.to_string());
            }
            Progress::Lines { n_steps } => {
                let width = n_steps.to_string().len();
                eprintln!("[{:>width$}/{n_steps}] {label}", index + 1);
            }
        }
    }

    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
