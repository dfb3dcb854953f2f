//! Logging and tracing set-up: `tracing` events as plain or JSON lines, an env-filter, and —
//! only when an OTLP endpoint is configured — spans exported to an OpenTelemetry collector over
//! gRPC.
//!
//! The environment is read in one place ([`TracingConfig::from_lookup`]) and everything else
//! takes a resolved [`TracingConfig`], so the decisions are unit-tested without touching the
//! process environment, and tests can install the same layers into their own subscriber
//! ([`layer`]) with a writer that captures the output.

use std::io::IsTerminal;
use std::time::Duration;

/// Log line format.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line (for log collectors).
    Json,
}

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// Overrides the `filter` argument of [`init`] when set (the usual Rust convention).
pub const RUST_LOG: &str = "RUST_LOG";
/// The OTLP endpoint for all signals (e.g. `http://otel-collector:4317`); tracing export is
/// on only when this or [`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`] is set.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The OTLP endpoint for traces only; wins over [`OTEL_EXPORTER_OTLP_ENDPOINT`].
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// Overrides the `service_name` argument of [`init`] when set.
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

/// How long dropping the guard waits for the last spans to reach the collector.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the logging and tracing set-up depends on, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingConfig {
    /// Line format of the log output.
    pub format: LogFormat,
    /// Filter directives in `RUST_LOG` syntax (`info`, `logcluster_node=debug,tower=warn`).
    pub filter: String,
    /// `service.name` of exported spans.
    pub service_name: String,
    /// gRPC endpoint of the OTLP collector; `None` turns span export off.
    pub otlp_endpoint: Option<String>,
    /// Colour the plain format (only when the output is a terminal).
    pub ansi: bool,
}

impl TracingConfig {
    /// Resolves the configuration from the process environment (see [`Self::from_lookup`]).
    pub fn from_env(format: LogFormat, filter: &str, service_name: &str) -> Self {
        let mut config = Self::from_lookup(format, filter, service_name, |name| {
            std::env::var(name).ok()
        });
        config.ansi = format == LogFormat::Plain && std::io::stdout().is_terminal();
        config
    }

    /// Resolves the configuration with `lookup` standing for the environment: `RUST_LOG` wins
    /// over `filter`, `OTEL_SERVICE_NAME` over `service_name`, and the OTLP endpoint comes from
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or else `OTEL_EXPORTER_OTLP_ENDPOINT`. Empty
    /// variables count as unset.
    pub fn from_lookup(
        format: LogFormat,
        filter: &str,
        service_name: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        Self {
            format,
            filter: get(RUST_LOG).unwrap_or_else(|| filter.to_owned()),
            service_name: get(OTEL_SERVICE_NAME).unwrap_or_else(|| service_name.to_owned()),
            otlp_endpoint: get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
                .or_else(|| get(OTEL_EXPORTER_OTLP_ENDPOINT)),
            ansi: false,
        }
    }
}

/// Keeps span export running; dropping it flushes the spans still queued and shuts the
/// exporter down. Hold it in `main` until the node has stopped.
#[must_use = "dropping the guard shuts span export down"]
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are exported over OTLP.
    pub fn exports_spans(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports every span ended so far now instead of at the next batch interval.
    ///
    /// NB: blocks the calling thread until the exporter answers; call it from
    /// `spawn_blocking` (or a plain thread) when on the runtime.
    pub fn flush(&self) -> anyhow::Result<()> {
        if let Some(provider) = &self.provider {
            provider
                .force_flush()
                .context("flushing spans to the OTLP collector")?;
        }
        Ok(())
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        let shutdown = move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
        // NB: the exporter's gRPC connection is driven by the tokio runtime, while shutdown
        // blocks this thread until the last batch is sent. On a multi-threaded runtime, hand
        // this worker's other tasks to another thread first so the export can progress.
        let result = match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(shutdown)
            }
            _ => shutdown(),
        };
        if let Err(error) = result {
            // The subscriber may already be gone; stderr is all that is left.
            eprintln!("shutting down OTLP span export: {error}");
        }
    }
}

/// The logging and tracing layers for `config`, writing log lines to `writer`, for a
/// subscriber the caller builds (tests capture the output this way). The env-filter is part of
/// the returned layer and applies to everything beneath it.
///
/// With an OTLP endpoint this must run inside a tokio runtime: the exporter's channel spawns
/// its connection task on it.
pub fn layer<S, W>(
    config: &TracingConfig,
    writer: W,
) -> anyhow::Result<(Box<dyn Layer<S> + Send + Sync>, TelemetryGuard)>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&config.filter)
        .with_context(|| format!("invalid log filter `{}`", config.filter))?;
    let output = match config.format {
        LogFormat::Plain => tracing_subscriber::fmt::layer()
            .with_ansi(config.ansi)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            // Event fields at the top level of the object, where log collectors look first.
            .flatten_event(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
    };
    let logs = filter.and_then(output);
    // NB: not `and_then(Option<_>)`: a `None` layer inside the stack reports a max level of
    // OFF, which would silence everything.
    match &config.otlp_endpoint {
        Some(endpoint) => {
            let provider = otlp_tracer_provider(endpoint, &config.service_name)?;
            let tracer = provider.tracer(config.service_name.clone());
            let spans = tracing_opentelemetry::layer().with_tracer(tracer);
            let guard = TelemetryGuard {
                provider: Some(provider),
            };
            Ok((logs.and_then(spans).boxed(), guard))
        }
        None => Ok((logs.boxed(), TelemetryGuard { provider: None })),
    }
}

fn otlp_tracer_provider(endpoint: &str, service_name: &str) -> anyhow::Result<SdkTracerProvider> {
    // Fail with a reason instead of the panic tonic's lazy channel gives outside a runtime.
    tokio::runtime::Handle::try_current()
        .context("OTLP span export must be set up inside the tokio runtime")?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .with_context(|| format!("building the OTLP span exporter for {endpoint}"))?;
    let resource = Resource::builder_empty()
        .with_service_name(service_name.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Installs the process-wide subscriber: log lines on stdout in `format`, filtered by
/// `RUST_LOG` or else `filter`, and spans exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT`
/// is set. `log` records of dependencies are forwarded too. Call it once, early, inside the
/// tokio runtime; keep the guard until shutdown.
pub fn init(format: LogFormat, filter: &str, service_name: &str) -> anyhow::Result<TelemetryGuard> {
    let config = TracingConfig::from_env(format, filter, service_name);
    let (layer, guard) = layer(&config, std::io::stdout)?;
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .context("a global tracing subscriber is already installed")?;
    if let Some(endpoint) = &config.otlp_endpoint {
        tracing::info!(endpoint = %endpoint, service = %config.service_name, "exporting spans over OTLP");
    }
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;

    fn resolve(env: &[(&str, &str)]) -> TracingConfig {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TracingConfig::from_lookup(LogFormat::Json, "info", "lognode", |name| {
            env.get(name).cloned()
        })
    }

    #[test]
    fn without_otel_variables_span_export_is_off_and_arguments_apply() {
        let config = resolve(&[]);
        assert_eq!(config.filter, "info");
        assert_eq!(config.service_name, "lognode");
        assert_eq!(config.otlp_endpoint, None);
        assert_eq!(
            resolve(&[(OTEL_EXPORTER_OTLP_ENDPOINT, " ")]).otlp_endpoint,
            None
        );
    }

    #[test]
    fn rust_log_wins_over_the_filter_argument() {
        assert_eq!(
            resolve(&[(RUST_LOG, "debug,h2=warn")]).filter,
            "debug,h2=warn"
        );
        assert_eq!(resolve(&[(RUST_LOG, "")]).filter, "info");
    }

    #[test]
    fn the_otlp_endpoint_turns_export_on_and_the_traces_endpoint_wins() {
        let config = resolve(&[
            (OTEL_EXPORTER_OTLP_ENDPOINT, "http://collector:4317"),
            (OTEL_SERVICE_NAME, "lognode-eu"),
        ]);
        assert_eq!(
            config.otlp_endpoint.as_deref(),
            Some("http://collector:4317")
        );
        assert_eq!(config.service_name, "lognode-eu");
        let config = resolve(&[
            (OTEL_EXPORTER_OTLP_ENDPOINT, "http://collector:4317"),
            (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "http://traces:4317"),
        ]);
        assert_eq!(config.otlp_endpoint.as_deref(), Some("http://traces:4317"));
    }

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn capture(format: LogFormat, emit: impl FnOnce()) -> String {
        let mut config = resolve(&[]);
        config.format = format;
        config.filter = "info".to_owned();
        let buffer = Buffer::default();
        let (layer, guard) = layer(&config, buffer.clone()).expect("layers");
        assert!(!guard.exports_spans());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
        String::from_utf8(buffer.0.lock().clone()).expect("utf-8")
    }

    fn emit_sample_events() {
        let span = tracing::info_span!("rpc", method = "log.v1.Log/Produce");
        let _entered = span.enter();
        tracing::debug!("filtered out");
        tracing::info!(offset = 5u64, "appended");
    }

    #[test]
    fn plain_lines_carry_span_and_event_fields_and_the_filter_applies() {
        let text = capture(LogFormat::Plain, emit_sample_events);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(" INFO "), "{text}");
        assert!(
            text.contains(r#"rpc{method="log.v1.Log/Produce"}"#),
            "{text}"
        );
        assert!(text.contains("appended offset=5"), "{text}");
    }

    #[test]
    fn json_lines_are_one_object_with_the_event_fields_at_the_top() {
        let text = capture(LogFormat::Json, emit_sample_events);
        assert_eq!(text.lines().count(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON object");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "appended");
        assert_eq!(line["offset"], 5);
        assert_eq!(line["span"]["method"], "log.v1.Log/Produce");
    }

    #[test]
    fn an_invalid_filter_is_an_error_that_names_it() {
        let mut config = resolve(&[]);
        config.filter = "info,[unclosed".to_owned();
        let error = layer::<tracing_subscriber::Registry, _>(&config, std::io::sink)
            .err()
            .expect("invalid filter");
        assert!(error.to_string().contains("[unclosed"), "{error:#}");
    }

    #[test]
    fn otlp_export_outside_a_runtime_is_an_error_not_a_panic() {
        let mut config = resolve(&[]);
        config.otlp_endpoint = Some("http://127.0.0.1:4317".to_owned());
        let error = layer::<tracing_subscriber::Registry, _>(&config, std::io::sink)
            .err()
            .expect("no runtime");
        assert!(format!("{error:#}").contains("tokio runtime"), "{error:#}");
    }
}
