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
    match init_traced(default_directive, format, None) {
        Ok((level, _)) => level,
        // Without OTLP settings nothing can fail.
        Err(_) => LogLevel { handle: None },
    }
}

/// [`init`], and with `otlp` settings, spans exported over OTLP as well
/// (see [`crate::telemetry`]); JSON lines then carry the trace and span
/// ids of the span they were written in. Must run inside a Tokio runtime
/// when `otlp` is given.
pub fn init_traced(
    default_directive: &str,
    format: LogFormat,
    otlp: Option<&crate::telemetry::Settings>,
) -> Result<(LogLevel, crate::telemetry::Tracing), crate::telemetry::TelemetryError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_directive));
    let (filter, handle) = reload::Layer::new(filter);
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour codes only help a terminal; in a log file they break grep.
        .with_ansi(std::io::stderr().is_terminal());
    let output = match format {
        LogFormat::Text => output.boxed(),
        // `json()` first: span fields must be recorded as JSON too.
        LogFormat::Json => output
            .json()
            .event_format(WithTraceIds(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(false),
            ))
            .boxed(),
    };
    let (otel, tracing) = match otlp {
        Some(settings) => {
            let (provider, tracer) =
                crate::telemetry::provider(settings, |k| std::env::var(k).ok())?;
            (
                Some(tracing_opentelemetry::layer().with_tracer(tracer)),
                crate::telemetry::tracing_for(provider),
            )
        }
        None => (None, crate::telemetry::Tracing::default()),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(output)
        .try_init()
        .is_ok();
    if installed {
        let _ = INSTALLED.set(tracing::dispatcher::get_default(Clone::clone));
    }
    Ok((
        LogLevel {
            handle: installed.then_some(handle),
        },
        tracing,
    ))
}

/// The subscriber [`init_traced`] installed, for [`WithTraceIds`].
static INSTALLED: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();

/// The JSON format, with `trace_id` and `span_id` added to a line written
/// inside a traced span, so that a log search finds the lines of a trace.
struct WithTraceIds<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        // The dispatcher cannot be asked for while it dispatches this
        // event (it answers with none): the one installed is kept.
        let ids = ctx.lookup_current().and_then(|span| {
            INSTALLED
                .get()
                .and_then(|d| crate::telemetry::current_ids(&span.id(), d))
        });
        match ids {
            Some((trace, span)) if line.ends_with("}\n") => {
                line.truncate(line.len() - 2);
                writeln!(
                    writer,
                    "{line},\"trace_id\":\"{trace}\",\"span_id\":\"{span}\"}}"
                )
            }
            _ => writer.write_str(&line),
        }
    }
}
