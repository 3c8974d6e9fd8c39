//! OpenTelemetry traces over OTLP, for kas and agentk.
//!
//! Off unless an endpoint is given (`--otlp-endpoint`, or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`):
//! without one no OpenTelemetry layer is installed and a span costs what
//! `tracing` alone costs. The endpoint means what the OpenTelemetry
//! specification says: a base URL, to which `/v1/traces` is appended for
//! HTTP; a signal-specific endpoint is used as it is. The protocol comes
//! from `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`: `http/protobuf` (the
//! specification's default) or `grpc`. Headers, timeouts, the batch
//! processor and the resource follow the other `OTEL_*` variables, read by
//! the SDK. The sampler too; left unset, Tether samples one trace in ten
//! (`parentbased_traceidratio`, 0.1) rather than the SDK's every trace, as
//! the proxy can carry many requests a second.
//!
//! Trace context crosses processes in W3C `traceparent` form: over HTTP
//! headers and in the agent channel's messages ([`inject`], [`extract`]).

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Where and how spans are exported; built by [`Settings::from_env`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The URL the exporter sends to, complete (for HTTP, with its
    /// `/v1/traces`).
    pub url: String,
    pub protocol: Protocol,
    /// `service.name` unless `OTEL_SERVICE_NAME` says otherwise.
    pub service: &'static str,
}

/// OTLP's transports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// Why tracing could not start; the program stops with it rather than run
/// without the traces its operator asked for.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP protocol {0:?} is not supported: use grpc or http/protobuf")]
    Protocol(String),
    #[error("OTLP endpoint {0:?} is not an http:// or https:// URL")]
    Endpoint(String),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("OTEL_EXPORTER_OTLP_CERTIFICATE {path}: {why}")]
    Certificate { path: String, why: String },
}

impl Settings {
    /// The settings `flag` (the program's `--otlp-endpoint`, which stands
    /// for `OTEL_EXPORTER_OTLP_ENDPOINT`) and the environment give, through
    /// `env`; `None` when tracing is off.
    pub fn from_env(
        flag: Option<&str>,
        service: &'static str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Settings>, TelemetryError> {
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none")
        {
            return Ok(None);
        }
        let protocol = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
        {
            None | Some("http/protobuf") => Protocol::HttpProtobuf,
            Some("grpc") => Protocol::Grpc,
            Some(other) => return Err(TelemetryError::Protocol(other.to_owned())),
        };
        let url = if let Some(url) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            url
        } else if let Some(base) = flag
            .map(str::to_owned)
            .filter(|v| !v.trim().is_empty())
            .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
        {
            match protocol {
                Protocol::Grpc => base,
                Protocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
            }
        } else {
            return Ok(None);
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(TelemetryError::Endpoint(url));
        }
        Ok(Some(Settings {
            url,
            protocol,
            service,
        }))
    }
}

impl Settings {
    /// The URL without a user or password, for the log.
    pub fn shown_url(&self) -> String {
        match self.url.split_once("://") {
            Some((scheme, rest)) => match rest.split_once('/').unwrap_or((rest, "")) {
                (authority, path) if authority.contains('@') => {
                    let host = authority.rsplit('@').next().unwrap_or_default();
                    let slash = if rest.contains('/') { "/" } else { "" };
                    format!("{scheme}://***@{host}{slash}{path}")
                }
                _ => self.url.clone(),
            },
            None => self.url.clone(),
        }
    }
}

/// The tracer provider while traces are exported; [`Tracing::shutdown`]
/// sends what is still batched.
#[derive(Debug, Default)]
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Exports the spans still batched (within the exporter's timeout),
    /// off the runtime's workers: the SDK blocks while it flushes.
    pub async fn shutdown(&self) {
        let Some(provider) = self.provider.clone() else {
            return;
        };
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "traces not all exported at shutdown"),
            Err(e) => tracing::warn!(error = %e, "traces not all exported at shutdown"),
        }
    }
}

/// Builds the provider and the `tracing` layer that feeds it. Must run
/// inside a Tokio runtime: the batch processor and the exporters run on
/// it.
pub(crate) fn provider(
    settings: &Settings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(SdkTracerProvider, opentelemetry_sdk::trace::Tracer), TelemetryError> {
    // A private CA for the back end, as the specification names it; the
    // web's roots otherwise.
    let ca = match env("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE")
        .or_else(|| env("OTEL_EXPORTER_OTLP_CERTIFICATE"))
        .filter(|p| !p.is_empty())
    {
        Some(path) => Some(
            std::fs::read(&path).map_err(|e| TelemetryError::Certificate {
                path: path.clone(),
                why: e.to_string(),
            })?,
        ),
        None => None,
    };
    let exporter = match settings.protocol {
        Protocol::Grpc => {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&settings.url);
            if settings.url.starts_with("https://") {
                let tls = tonic::transport::ClientTlsConfig::new();
                builder = builder.with_tls_config(match &ca {
                    Some(pem) => tls.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                    None => tls.with_webpki_roots(),
                });
            }
            builder.build()?
        }
        Protocol::HttpProtobuf => {
            let connector = crate::https::connector(ca.as_deref()).map_err(|e| {
                TelemetryError::Certificate {
                    path: "(the CA given)".into(),
                    why: e.to_string(),
                }
            })?;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(&settings.url)
                .with_http_client(OtlpHttp {
                    client: hyper_util::client::legacy::Client::builder(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .build(connector),
                })
                .build()?
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if env("OTEL_SERVICE_NAME").is_none_or(|v| v.is_empty()) {
        resource = resource.with_service_name(settings.service);
    }
    resource = resource.with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    // Replicas of one service told apart (the pod, else the host, and the
    // process), unless the operator names the instance.
    if !env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.instance.id")) {
        let host = env("POD_NAME")
            .filter(|p| !p.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .unwrap_or_default();
        resource = resource.with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            format!("{host}/{}", std::process::id()),
        ));
    }
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let mut builder = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource.build());
    if env("OTEL_TRACES_SAMPLER").is_none_or(|v| v.is_empty()) {
        builder = builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            0.1,
        ))));
    }
    let provider = builder.build();
    let tracer = provider.tracer(settings.service);
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok((provider, tracer))
}

/// Exports over HTTP(S) with the connector every other outgoing call uses
/// (rustls; the web's roots or the CA given), bounded in time and size.
#[derive(Clone, Debug)]
struct OtlpHttp {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        http_body_util::Full<bytes::Bytes>,
    >,
}

/// An export's longest wait, for the answer and its body.
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The most of an answer read (the back end says little).
const ANSWER_BYTES: usize = 1 << 20;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpHttp {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        use http_body_util::BodyExt;
        let request = request.map(http_body_util::Full::new);
        let answer = tokio::time::timeout(EXPORT_TIMEOUT, async {
            let response = self.client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = http_body_util::Limited::new(body, ANSWER_BYTES)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, opentelemetry_http::HttpError>(http::Response::from_parts(parts, body))
        })
        .await;
        match answer {
            Ok(answer) => answer,
            Err(_) => Err("the OTLP back end did not answer in time".into()),
        }
    }
}

pub(crate) fn tracing_for(provider: SdkTracerProvider) -> Tracing {
    Tracing {
        provider: Some(provider),
    }
}

/// The W3C `traceparent` of `span`, for another process to continue its
/// trace; empty when the span is not traced (tracing off).
pub fn inject(span: &tracing::Span) -> String {
    inject_context(&span.context())
}

/// The `traceparent` of an OpenTelemetry context.
pub fn inject_context(cx: &opentelemetry::Context) -> String {
    if !cx.span().span_context().is_valid() {
        return String::new();
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove("traceparent").unwrap_or_default()
}

/// Makes `span` a child of the trace `traceparent` names; a malformed or
/// empty one leaves `span` a root.
pub fn extract(span: &tracing::Span, traceparent: &str) {
    if let Some(cx) = context_of(traceparent) {
        let _ = span.set_parent(cx);
    }
}

/// The context a `traceparent` names, if it names one.
pub fn context_of(traceparent: &str) -> Option<opentelemetry::Context> {
    // A traceparent is 55 characters; anything longer is not one.
    if traceparent.is_empty() || traceparent.len() > 128 {
        return None;
    }
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The trace id of `span` in hex, if the trace is sampled (exported): an
/// unsampled trace's id would link to nothing.
pub fn sampled_trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let span = cx.span();
    let sc = span.span_context();
    (sc.is_valid() && sc.is_sampled()).then(|| sc.trace_id().to_string())
}

/// The trace and span ids of the current span, for a log line.
pub(crate) fn current_ids(
    id: &tracing::span::Id,
    dispatch: &tracing::Dispatch,
) -> Option<(String, String)> {
    let cx = tracing_opentelemetry::get_otel_context(id, dispatch)?;
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_endpoint_is_a_base_url_for_http_and_as_given_for_grpc() {
        let http = Settings::from_env(Some("http://127.0.0.1:4318/"), "kas", env(&[]))
            .expect("a test value")
            .expect("a test value");
        assert_eq!(http.url, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(http.protocol, Protocol::HttpProtobuf);
        let grpc = Settings::from_env(
            None,
            "agentk",
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ]),
        )
        .expect("a test value")
        .expect("a test value");
        assert_eq!(grpc.url, "http://127.0.0.1:4317");
        assert_eq!(grpc.protocol, Protocol::Grpc);
        let signal = Settings::from_env(
            Some("http://ignored:4318"),
            "kas",
            env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom")]),
        )
        .expect("a test value")
        .expect("a test value");
        assert_eq!(signal.url, "http://c:4318/custom");
    }

    #[test]
    fn off_without_an_endpoint_or_when_disabled_and_strict_on_bad_values() {
        assert_eq!(
            Settings::from_env(None, "kas", env(&[])).expect("a test value"),
            None
        );
        assert_eq!(
            Settings::from_env(
                Some("http://127.0.0.1:4318"),
                "kas",
                env(&[("OTEL_SDK_DISABLED", "true")])
            )
            .expect("a test value"),
            None
        );
        assert_eq!(
            Settings::from_env(
                Some("http://127.0.0.1:4318"),
                "kas",
                env(&[("OTEL_TRACES_EXPORTER", "none")])
            )
            .expect("a test value"),
            None
        );
        let err = Settings::from_env(
            Some("http://127.0.0.1:4318"),
            "kas",
            env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]),
        )
        .expect_err("refused");
        assert!(err.to_string().contains("http/json"), "{err}");
        let err = Settings::from_env(Some("127.0.0.1:4318"), "kas", env(&[])).expect_err("refused");
        assert!(err.to_string().contains("not an http"), "{err}");
    }

    #[test]
    fn a_password_in_the_endpoint_is_not_shown() {
        let s = Settings::from_env(Some("https://user:pw@otel.example:4318"), "kas", env(&[]))
            .expect("a test value")
            .expect("a test value");
        assert_eq!(s.shown_url(), "https://***@otel.example:4318/v1/traces");
        let plain = Settings::from_env(Some("http://127.0.0.1:4318"), "kas", env(&[]))
            .expect("a test value")
            .expect("a test value");
        assert_eq!(plain.shown_url(), "http://127.0.0.1:4318/v1/traces");
    }

    #[test]
    fn a_traceparent_round_trips_and_garbage_is_no_parent() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = context_of(tp).expect("a valid traceparent");
        assert_eq!(inject_context(&cx), tp);
        assert!(context_of("").is_none());
        assert!(context_of("00-zz-yy-01").is_none());
        assert!(context_of(&"0".repeat(4000)).is_none());
        assert_eq!(inject_context(&opentelemetry::Context::new()), "");
    }
}
