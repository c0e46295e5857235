//! gRPC `switchyard.v1.Health` over a [`Prober`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use switchyard_core::{EndpointId, EndpointState};
use switchyard_proto::v1 as pb;
use switchyard_runtime::status::state_status;
use switchyard_state::{HealthRecord, StateError};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::prober::Prober;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct HealthGrpc {
    prober: Arc<Prober>,
    shutdown: CancellationToken,
}

impl HealthGrpc {
    /// Serves `prober`; watch streams end at `shutdown`.
    pub fn new(prober: Arc<Prober>, shutdown: CancellationToken) -> Self {
        HealthGrpc { prober, shutdown }
    }
}

fn state(s: EndpointState) -> pb::EndpointState {
    match s {
        EndpointState::Healthy => pb::EndpointState::Healthy,
        EndpointState::Degraded => pb::EndpointState::Degraded,
        EndpointState::Ejected => pb::EndpointState::Ejected,
        EndpointState::Disabled => pb::EndpointState::Disabled,
        EndpointState::Unknown => pb::EndpointState::Unknown,
    }
}

/// A record on the wire.
pub fn to_proto(endpoint: &EndpointId, r: &HealthRecord) -> pb::EndpointHealth {
    pb::EndpointHealth {
        endpoint: endpoint.to_string(),
        state: state(r.state) as i32,
        ejected_until_unix_ms: r.ejected_until_ms as i64,
        error_rate: r.error_rate,
        latency_ms_ewma: r.latency_ms.unwrap_or(0.0),
        ttft_ms_ewma: r.ttft_ms.unwrap_or(0.0),
        tokens_per_second_ewma: r.tokens_per_s.unwrap_or(0.0),
        updated_unix_ms: r.updated_ms as i64,
        reason: r.reason.clone(),
        consecutive_failures: r.consecutive_failures,
        ejections: r.ejections,
        tool_validity: r.tool_validity,
        over_holds: r.over_holds,
        ..Default::default()
    }
}

fn percentiles(p: Option<switchyard_state::Percentiles>) -> Option<pb::Percentiles> {
    p.map(|p| pb::Percentiles {
        p50: p.p50,
        p75: p.p75,
        p90: p.p90,
        p99: p.p99,
    })
}

/// `e` with the live statistics of its endpoint.
fn with_stats(mut e: pb::EndpointHealth, s: switchyard_state::EndpointStats) -> pb::EndpointHealth {
    e.uptime_last_5m = s.uptime_5m;
    e.uptime_last_30m = s.uptime_30m;
    e.uptime_last_1d = s.uptime_1d;
    e.latency_last_30m = percentiles(s.latency_30m);
    e.ttft_last_30m = percentiles(s.ttft_30m);
    e.throughput_last_30m = percentiles(s.throughput_30m);
    e.last_30m_by_minute = s
        .by_minute
        .into_iter()
        .map(|m| pb::MinuteHealth {
            start_unix_ms: m.start_ms as i64,
            attempts: m.attempts,
            uptime: m.uptime,
            latency: percentiles(m.latency),
        })
        .collect();
    e
}

async fn list(prober: &Prober) -> Result<pb::ListEndpointsResponse, StateError> {
    let (version, records) = prober.store().records().await?;
    let targets = prober.targets();
    let now = switchyard_core::clock::now_ms();
    let store = prober.store().as_ref();
    let stats = futures::future::try_join_all(
        targets
            .list
            .iter()
            .map(|t| switchyard_state::endpoint_stats(store, &t.target.endpoint, now)),
    )
    .await?;
    let endpoints = targets
        .list
        .iter()
        .zip(stats)
        .map(|(t, s)| {
            let ep = &t.target.endpoint;
            with_stats(
                to_proto(ep, &records.get(ep).cloned().unwrap_or_default()),
                s,
            )
        })
        .collect();
    Ok(pb::ListEndpointsResponse {
        version,
        endpoints,
        catalog_version: targets.version.clone(),
    })
}

fn found(r: Option<HealthRecord>, endpoint: &str) -> Result<Response<pb::EndpointHealth>, Status> {
    r.map(|r| Response::new(to_proto(&EndpointId::from(endpoint), &r)))
        .ok_or_else(|| Status::not_found(format!("no endpoint `{endpoint}` in the catalog")))
}

type ChangeStream = Pin<Box<dyn Stream<Item = Result<pb::HealthChange, Status>> + Send>>;

#[tonic::async_trait]
impl pb::health_server::Health for HealthGrpc {
    type WatchStream = ChangeStream;

    async fn list_endpoints(
        &self,
        _: Request<pb::ListEndpointsRequest>,
    ) -> Result<Response<pb::ListEndpointsResponse>, Status> {
        list(&self.prober)
            .await
            .map(Response::new)
            .map_err(state_status)
    }

    async fn watch(
        &self,
        _: Request<pb::WatchHealthRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let changes = tokio_stream::wrappers::BroadcastStream::new(self.prober.store().subscribe());
        let prober = self.prober.clone();
        let first = futures::stream::once(futures::future::ready(()));
        let stream = first
            .chain(changes.map(|_| ()))
            .then(move |()| {
                let prober = prober.clone();
                async move {
                    list(&prober)
                        .await
                        .map(|l| pb::HealthChange {
                            version: l.version,
                            endpoints: l.endpoints,
                        })
                        .map_err(state_status)
                }
            })
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn probe_now(
        &self,
        request: Request<pb::ProbeNowRequest>,
    ) -> Result<Response<pb::EndpointHealth>, Status> {
        let ep = request.into_inner().endpoint;
        found(self.prober.probe_now(&ep).await.map_err(state_status)?, &ep)
    }

    async fn eject(
        &self,
        request: Request<pb::EjectRequest>,
    ) -> Result<Response<pb::EndpointHealth>, Status> {
        let r = request.into_inner();
        if r.duration_s == 0 {
            return Err(Status::invalid_argument("duration_s must be positive"));
        }
        if r.reason.trim().is_empty() {
            return Err(Status::invalid_argument(
                "an ejection needs a reason (it is recorded in the audit)",
            ));
        }
        let actor = actor_of(&r.actor);
        let why = format!("{} ({actor})", r.reason);
        let rec = self
            .prober
            .set_manual(
                &r.endpoint,
                Some(Duration::from_secs(u64::from(r.duration_s))),
                &why,
            )
            .await
            .map_err(state_status)?;
        if rec.is_some() {
            self.prober
                .audit(
                    actor,
                    "eject",
                    &format!("{} for {}s", r.endpoint, r.duration_s),
                    &r.reason,
                )
                .await;
        }
        found(rec, &r.endpoint)
    }

    async fn restore(
        &self,
        request: Request<pb::RestoreRequest>,
    ) -> Result<Response<pb::EndpointHealth>, Status> {
        let r = request.into_inner();
        let actor = actor_of(&r.actor);
        let why = if r.reason.trim().is_empty() {
            actor.to_string()
        } else {
            format!("{} ({actor})", r.reason)
        };
        let rec = self
            .prober
            .set_manual(&r.endpoint, None, &why)
            .await
            .map_err(state_status)?;
        if rec.is_some() {
            self.prober
                .audit(actor, "restore", &r.endpoint, &r.reason)
                .await;
        }
        found(rec, &r.endpoint)
    }
}

fn actor_of(actor: &str) -> &str {
    if actor.trim().is_empty() {
        "unknown"
    } else {
        actor
    }
}
