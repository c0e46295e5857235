//! Process plumbing shared by every Switchyard binary: how logs are set up, how a process
//! learns it should stop, and the ops endpoints (metrics, health, readiness). No service logic
//! lives here.

use std::io::IsTerminal;

pub mod drain;
pub mod grpc;
pub mod ops;
pub mod status;
pub mod tls;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); one JSON object per line when
/// `SWITCHYARD_LOG_FORMAT=json`, colours only on a terminal. With `SWITCHYARD_OTLP_ENDPOINT`
/// (an OTLP/gRPC collector, e.g. `http://collector:4317`) spans — a request, each of its
/// attempts — are also exported, in batches, as service `SWITCHYARD_SERVICE_NAME` (default
/// `switchyard`). Off by default. Call from within the Tokio runtime; keep the returned guard
/// until exit, when it flushes the spans still buffered.
pub fn init_logging() -> Telemetry {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var("SWITCHYARD_LOG_FORMAT").is_ok_and(|v| v == "json");
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.with_ansi(std::io::stderr().is_terminal()).boxed()
    };
    let (otel, provider, error) = match std::env::var("SWITCHYARD_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => match otlp(&endpoint) {
            Ok((layer, provider)) => (Some(layer), Some(provider), None),
            Err(e) => (
                None,
                None,
                Some(format!("OTLP export to {endpoint} is off: {e}")),
            ),
        },
        _ => (None, None, None),
    };
    let mut layers = vec![fmt];
    if let Some(otel) = otel {
        layers.push(otel.boxed());
    }
    // A second initialisation (tests, embedded use) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .try_init();
    if let Some(e) = error {
        tracing::warn!("{e}");
    }
    Telemetry { provider }
}

type BoxedLayer =
    Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static>;

trait Boxed {
    fn boxed(self) -> BoxedLayer;
}

impl<L> Boxed for L
where
    L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    fn boxed(self) -> BoxedLayer {
        Box::new(self)
    }
}

fn otlp(
    endpoint: &str,
) -> Result<
    (
        tracing_opentelemetry::OpenTelemetryLayer<
            tracing_subscriber::Registry,
            opentelemetry_sdk::trace::Tracer,
        >,
        opentelemetry_sdk::trace::SdkTracerProvider,
    ),
    String,
> {
    use opentelemetry::trace::TracerProvider;
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| e.to_string())?;
    let batch =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let name = std::env::var("SWITCHYARD_SERVICE_NAME").unwrap_or_else(|_| "switchyard".into());
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(name)
                .build(),
        )
        .build();
    let tracer = provider.tracer("switchyard");
    Ok((tracing_opentelemetry::layer().with_tracer(tracer), provider))
}

/// Keeps span export running; flushes what is buffered when dropped or shut down.
#[derive(Debug)]
#[must_use = "spans are flushed when this is dropped at exit"]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes buffered spans and stops exporting.
    pub fn shutdown(mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Resolves on the first of Ctrl-C (SIGINT) and SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// Writes `text` to stdout and flushes; unlike `println!`, a closed stdout (a reader that went
/// away) is an error to handle, not a panic.
pub fn print_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}
