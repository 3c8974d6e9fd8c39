//! `tracing` set-up for the binaries.
//!
//! The filter comes from `RUST_LOG` when set, else from the program's default
//! level, so an operator can raise one module's level without a rebuild.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Output format of log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, for terminals.
    #[default]
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// Installs the global subscriber, writing to stderr so that stdout stays free
/// for command output (`agentk generate` prints manifests there).
///
/// `default_directive` applies when `RUST_LOG` is unset, e.g. `"info"`.
/// Calling it twice is harmless: the second call keeps the first subscriber.
pub fn init(default_directive: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_directive));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a terminal; in a log file they break grep.
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
