//! How a service stops without dropping work: on the signal it first reports itself not ready
//! (`/readyz` 503 with `"draining": true`, grpc.health.v1 NOT_SERVING) while it keeps serving for
//! a shutdown delay (routers: `--shutdown-delay-ms`; the other services:
//! `SWITCHYARD_SHUTDOWN_DELAY_MS`; default 0) so load balancers and clients move away, then it
//! stops accepting and lets the calls in flight finish.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::ops::Readiness;

/// The delay between "not ready" and closing the listeners.
pub const SHUTDOWN_DELAY_ENV: &str = "SWITCHYARD_SHUTDOWN_DELAY_MS";

/// A service's draining state.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    draining: CancellationToken,
    delay: Duration,
}

impl Drain {
    /// Not draining; [`Drain::begin`] will wait `delay`.
    pub fn new(delay: Duration) -> Self {
        Drain {
            draining: CancellationToken::new(),
            delay,
        }
    }

    /// With the delay from `SWITCHYARD_SHUTDOWN_DELAY_MS`.
    pub fn from_env() -> Self {
        Drain::new(
            std::env::var(SHUTDOWN_DELAY_ENV)
                .ok()
                .and_then(|v| v.parse().ok())
                .map_or(Duration::ZERO, Duration::from_millis),
        )
    }

    /// Fires when draining begins (for [`crate::grpc::grpc_server`]).
    pub fn token(&self) -> CancellationToken {
        self.draining.clone()
    }

    /// `ready`, reporting not ready once draining has begun.
    pub fn readiness(&self, ready: Readiness) -> Readiness {
        let draining = self.draining.clone();
        Arc::new(move || {
            let (ok, mut detail) = ready();
            let d = draining.is_cancelled();
            if let Some(map) = detail.as_object_mut() {
                map.insert("draining".into(), d.into());
            }
            (ok && !d, detail)
        })
    }

    /// Begins draining and waits out the shutdown delay.
    pub async fn begin(&self) {
        self.draining.cancel();
        tracing::info!(delay = ?self.delay, "draining: not ready any more");
        tokio::time::sleep(self.delay).await;
    }
}
