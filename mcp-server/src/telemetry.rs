//! The binary's logging: text or JSON lines on stderr, and with the `otel`
//! feature spans exported over OTLP/HTTP when the standard `OTEL_*`
//! variables say where.

use tracing_subscriber::EnvFilter;

/// Logs to stderr as `format` says, and with the `otel` feature and
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) set, spans
/// exported over OTLP/HTTP too (returned, to flush at exit).
pub(crate) fn init_tracing(format: &str) -> Option<Exporting> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (otel, exporting) = otel_layer();
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    if format == "json" {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .init();
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init();
    }
    exporting
}

/// The span exporter to flush at exit.
#[cfg(feature = "otel")]
pub(crate) type Exporting = opentelemetry_sdk::trace::SdkTracerProvider;
#[cfg(not(feature = "otel"))]
pub(crate) type Exporting = std::convert::Infallible;

/// The OTLP layer, when the standard environment asks for one.
#[cfg(feature = "otel")]
fn otel_layer<S>() -> (Option<impl tracing_subscriber::Layer<S>>, Option<Exporting>)
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use opentelemetry::trace::TracerProvider as _;
    let wanted = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    if !wanted {
        return (None, None);
    }
    let endpoint = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok())
    .unwrap_or_default();
    if endpoint.starts_with("https:") {
        // The exporter's HTTP client is built without TLS here: say so
        // rather than export nothing in silence.
        eprintln!(
            "mcp-server: not exporting spans: the OTLP endpoint {endpoint} is https, and this \
             build exports over plain http only (to a collector beside it)"
        );
        return (None, None);
    }
    // JSON over HTTP (OTEL_EXPORTER_OTLP_PROTOCOL=http/json; this build has
    // no protobuf), the endpoint, headers and timeout from their OTEL_*
    // variables.
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("mcp-server: cannot export spans over OTLP: {e}");
            return (None, None);
        }
    };
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("mcp-server")
                .build(),
        )
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let tracer = provider.tracer("mcp-server");
    (
        Some(tracing_opentelemetry::layer().with_tracer(tracer)),
        Some(provider),
    )
}

#[cfg(not(feature = "otel"))]
fn otel_layer() -> (
    Option<tracing_subscriber::layer::Identity>,
    Option<Exporting>,
) {
    (None, None)
}
