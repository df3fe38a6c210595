//! One module per subcommand, plus what they share.

pub mod cancel;
pub mod delete;
pub mod download;
pub mod list;
pub mod presets;
pub mod split_plan;
pub mod status;
pub mod submit;
pub mod wait;

use crate::client::ClientError;
use std::fmt;
use std::io::Write;

/// A mistake in how the command was invoked that clap cannot see (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Adds what was being done to errors the server answered with (`cannot cancel job X: conflict:
/// ...`); errors reaching the server already say what went wrong and are left as they are.
pub fn context(error: ClientError, doing: impl fmt::Display) -> anyhow::Error {
    if error.is_answer() {
        anyhow::Error::new(error).context(doing.to_string())
    } else {
        anyhow::Error::new(error)
    }
}

/// Writes one result line to stdout. Unlike `println!`, a closed pipe is an error to return
/// (handled in `main`), not a panic.
pub fn emit(text: impl fmt::Display) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}

/// Pretty JSON on stdout.
pub fn emit_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    emit(serde_json::to_string_pretty(value)?)?;
    Ok(())
}
