//! Progress bars (indicatif). They draw on stderr and stay hidden when stderr is not a terminal,
//! so scripted use only sees the results on stdout.

use crate::format;
use indicatif::{ProgressBar, ProgressStyle};
use reelay_protocol::JobView;
use std::time::Duration;

const TICK: Duration = Duration::from_millis(120);

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Bytes moving over the network: `uploading [=====>    ] 12.0 MiB/40.2 MiB 8.1 MiB/s eta 3s`.
pub fn bytes_bar(total: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(total).with_style(style(
        "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
    ));
    bar.set_message(message.to_string());
    bar.enable_steady_tick(TICK);
    bar
}

/// A job being followed: `⠋ [=========>          ]  42% running  00:01:05`.
pub fn job_bar() -> ProgressBar {
    let bar = ProgressBar::new(100).with_style(
        style("{spinner} [{bar:30}] {percent:>3}% {msg}  {elapsed_precise}")
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
    );
    bar.set_message("connecting");
    bar.enable_steady_tick(TICK);
    bar
}

/// Shows a job's state on a `job_bar`.
pub fn show_job(bar: &ProgressBar, view: &JobView) {
    bar.set_position(format::percent(view.progress));
    let mut message = view.status.to_string();
    if view.attempts > 1 {
        message.push_str(&format!(" (attempt {})", view.attempts));
    }
    bar.set_message(message);
}
