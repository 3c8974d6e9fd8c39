//! `tracing` set-up for the binaries.
//!
//! The filter comes from `RUST_LOG` when set, else from the program's default
//! level, so an operator can raise one module's level without a rebuild. The
//! level can also change while the program runs ([`LogLevel::set`]): agentk
//! takes it from its config file.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// Output format of log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, for terminals.
    #[default]
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

impl LogFormat {
    /// `json`, or anything else (`text`, what the flags allow) as text.
    pub fn named(name: &str) -> Self {
        match name {
            "json" => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

/// Why a log level was not changed.
#[derive(Debug, thiserror::Error)]
pub enum LevelError {
    /// The directive is not a filter `tracing_subscriber` reads.
    #[error(transparent)]
    Directive(#[from] tracing_subscriber::filter::ParseError),
    /// The subscriber the filter belongs to is gone.
    #[error(transparent)]
    Reload(#[from] reload::Error),
}

/// Changes the level of the installed subscriber.
#[derive(Clone, Debug)]
pub struct LogLevel {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
}

impl LogLevel {
    /// Replaces the filter with `directive` (`info`, `debug`,
    /// `warn,kube=debug`). A no-op when another subscriber was installed
    /// first.
    pub fn set(&self, directive: &str) -> Result<(), LevelError> {
        let filter = EnvFilter::try_new(directive)?;
        match &self.handle {
            Some(handle) => Ok(handle.reload(filter)?),
            None => Ok(()),
        }
    }
}

/// Installs the global subscriber, writing to stderr so that stdout stays free
/// for command output (`agentk generate` prints manifests there).
///
/// `default_directive` applies when `RUST_LOG` is unset, e.g. `"info"`.
/// Calling it twice is harmless: the second call keeps the first subscriber
/// and returns a handle that changes nothing.
pub fn init(default_directive: &str, format: LogFormat) -> LogLevel {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_directive));
    let (filter, handle) = reload::Layer::new(filter);
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour codes only help a terminal; in a log file they break grep.
        .with_ansi(std::io::stderr().is_terminal());
    let output = match format {
        LogFormat::Text => output.boxed(),
        LogFormat::Json => output.json().boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok();
    LogLevel {
        handle: installed.then_some(handle),
    }
}
