//! The ops listener every service has: `/metrics` (Prometheus text), `/healthz` (the process is
//! alive) and `/readyz` (it can do its job; 503 with a JSON detail otherwise).

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return the same handle).
/// When another recorder is already installed (an embedding program's), metrics go there and
/// this handle renders an empty page.
pub fn metrics_handle() -> PrometheusHandle {
    METRICS
        .get_or_init(|| {
            // Histograms in seconds, from 100 µs (router overhead) to 2 minutes.
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    &[
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                    ],
                )
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::debug!("a metrics recorder was already installed");
            } else {
                spawn_upkeep(handle.clone());
            }
            handle
        })
        .clone()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Folds histogram samples into their buckets every [`UPKEEP_EVERY`], for as long as the
/// process lives (the recorder is process-wide too). The recorder keeps every sample until then:
/// without this, a process nobody scrapes grows by each sample it records, and one that is
/// scraped holds a scrape interval of them at its peak rate.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics upkeep not started: histograms drain only when scraped");
    }
}

/// Whether the service is ready, with a detail for operators.
pub type Readiness = Arc<dyn Fn() -> (bool, serde_json::Value) + Send + Sync>;

#[derive(Clone)]
struct Ops {
    metrics: PrometheusHandle,
    ready: Readiness,
}

/// The ops routes, to merge into a service's own HTTP routes.
pub fn routes(ready: Readiness) -> Router {
    let ops = Ops {
        metrics: metrics_handle(),
        ready,
    };
    Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(ops)
}

/// Serves the ops routes on `listener` until `shutdown`.
pub async fn serve_ops(listener: TcpListener, ready: Readiness, shutdown: CancellationToken) {
    let app = routes(ready);
    let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
    if let Err(e) = serve.await {
        tracing::warn!(error = %e, "ops listener failed");
    }
}

async fn render(State(ops): State<Ops>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        ops.metrics.render(),
    )
}

async fn readyz(State(ops): State<Ops>) -> impl IntoResponse {
    let (ready, detail) = (ops.ready)();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(detail))
}
