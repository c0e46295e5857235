//! The prober against the provider simulator over real HTTP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_config::Catalog;
use switchyard_core::{EndpointId, EndpointState};
use switchyard_health_prober::config::ProberConfig;
use switchyard_health_prober::prober::Prober;
use switchyard_provider_sim::SimHandle;
use switchyard_providers::{ClientOptions, ProviderClient};
use switchyard_state::{HealthRecord, HealthStore, MemoryHealthStore, Outcomes, bucket_of};
use switchyard_testkit::{SimControl, start_sim};
use tokio_util::sync::CancellationToken;

const INTERVAL_MS: u64 = 200;

pub fn catalog_for(sim: &SimHandle) -> String {
    format!(
        r#"
providers:
  - {{ id: a, format: openai, base_url: "{}", data_policy: {{ retains_prompts: false, trains_on_data: false, zero_retention: true }} }}
  - {{ id: b, format: openai, base_url: "{}", data_policy: {{ retains_prompts: false, trains_on_data: false, zero_retention: true }} }}
models:
  - {{ id: m, context_length: 8000, max_output: 1000 }}
endpoints:
  - {{ model: m, provider: a, upstream_model: x, price: {{ prompt: 1, completion: 1 }} }}
  - {{ model: m, provider: b, upstream_model: x, price: {{ prompt: 1, completion: 1 }} }}
"#,
        sim.base_url("a").unwrap(),
        sim.base_url("b").unwrap()
    )
}

fn config() -> ProberConfig {
    let mut c = ProberConfig::default();
    c.probe.interval_ms = INTERVAL_MS;
    c.probe.timeout_ms = 150;
    c.probe.jitter_ms = 0;
    c.evaluate_ms = 50;
    c.lease_ttl_ms = 1_000;
    c.thresholds.base_ejection_ms = 600;
    c.thresholds.degraded_latency_ms = 100.0;
    c.thresholds.min_volume = 5;
    c
}

struct Fixture {
    sim: SimHandle,
    store: Arc<MemoryHealthStore>,
    prober: Arc<Prober>,
    stop: CancellationToken,
}

impl Fixture {
    async fn new(cfg: ProberConfig) -> Self {
        let sim =
            start_sim("providers:\n  - { id: a, format: openai }\n  - { id: b, format: openai }\n")
                .await
                .unwrap();
        let catalog = Catalog::from_yaml("catalog", &catalog_for(&sim)).unwrap();
        let store = Arc::new(MemoryHealthStore::default());
        let prober = Arc::new(Prober::new(
            &catalog,
            store.clone(),
            None,
            ProviderClient::new(ClientOptions::default()).unwrap(),
            cfg,
            "p1".into(),
        ));
        let stop = CancellationToken::new();
        tokio::spawn(prober.clone().run(stop.clone()));
        Fixture {
            sim,
            store,
            prober,
            stop,
        }
    }

    async fn faults(&self, id: &str, faults: Value) {
        SimControl::new(self.sim.control_url())
            .set_faults(id, &faults)
            .await
            .unwrap();
    }

    async fn record(&self, ep: &str) -> HealthRecord {
        self.store
            .records()
            .await
            .unwrap()
            .1
            .get(ep)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `ep` is in `state`; returns how long it took.
    async fn until(&self, ep: &str, state: EndpointState, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let r = self.record(ep).await;
            if r.state == state {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "{ep} not {state:?} within {limit:?}: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn outages_are_ejected_within_two_probe_intervals_and_recover() {
    for (kind, faults) in [
        ("500s", json!({"errors": [{"status": 500, "rate": 1.0}]})),
        ("hangs", json!({"hang_rate": 1.0})),
        ("resets", json!({"reset_rate": 1.0})),
    ] {
        let f = Fixture::new(config()).await;
        f.until("m@a", EndpointState::Healthy, Duration::from_secs(2))
            .await;
        f.faults("a", faults).await;
        let took = f
            .until("m@a", EndpointState::Ejected, Duration::from_secs(3))
            .await;
        // Two failed probes, one interval apart; plus one evaluation tick and one probe timeout.
        let budget = Duration::from_millis(2 * INTERVAL_MS + 50 + 150 + 100);
        assert!(
            took <= budget,
            "{kind}: ejected after {took:?}, budget {budget:?}"
        );
        eprintln!("{kind}: ejected {took:?} after the outage began");
        let r = f.record("m@a").await;
        assert!(r.reason.contains("failed probes"), "{kind}: {}", r.reason);
        assert_eq!(
            f.record("m@b").await.state,
            EndpointState::Healthy,
            "{kind}: the other endpoint is untouched"
        );

        f.faults("a", json!({})).await;
        let back = f
            .until("m@a", EndpointState::Healthy, Duration::from_secs(3))
            .await;
        assert!(
            back <= Duration::from_millis(600 + 2 * INTERVAL_MS + 300),
            "{kind}: recovered after {back:?}"
        );
        assert!(f.record("m@a").await.reason.starts_with("recovered"));
        f.stop.cancel();
    }
}

#[tokio::test]
async fn a_latency_rise_shows_as_degraded() {
    let mut cfg = config();
    cfg.probe.timeout_ms = 2_000;
    let f = Fixture::new(cfg).await;
    f.until("m@a", EndpointState::Healthy, Duration::from_secs(2))
        .await;
    f.faults("a", json!({"latency": {"ttft_ms": 300}})).await;
    f.until("m@a", EndpointState::Degraded, Duration::from_secs(5))
        .await;
    let r = f.record("m@a").await;
    assert!(r.reason.starts_with("latency"), "{}", r.reason);
    assert!(r.latency_ms.unwrap() > 100.0);
    f.stop.cancel();
}

#[tokio::test]
async fn an_ejection_during_a_probe_round_is_not_written_over() {
    let mut cfg = config();
    cfg.probe.timeout_ms = 2_000;
    cfg.thresholds.degraded_latency_ms = 5_000.0;
    let f = Fixture::new(cfg).await;
    f.until("m@a", EndpointState::Healthy, Duration::from_secs(2))
        .await;
    // Every probe now takes 300 ms: each round reads the records, waits for its probes, then
    // writes what it decided from what it read.
    f.faults("a", json!({"latency": {"ttft_ms": 300}})).await;
    for round in 0..6u64 {
        tokio::time::sleep(Duration::from_millis(70 * round)).await;
        let set = f
            .prober
            .set_manual("m@a", Some(Duration::from_secs(60 + round)), "operator")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(set.state, EndpointState::Ejected);
        // Past the round that was in flight: still this ejection, not the one before.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let r = f.record("m@a").await;
        assert_eq!(
            (r.state, r.ejected_until_ms),
            (EndpointState::Ejected, set.ejected_until_ms),
            "{r:?}"
        );
        let back = f.prober.set_manual("m@a", None, "operator").await.unwrap();
        assert_eq!(back.unwrap().state, EndpointState::Healthy);
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(f.record("m@a").await.state, EndpointState::Healthy);
    }
    f.stop.cancel();
}

#[tokio::test]
async fn the_ejection_cap_keeps_one_endpoint_of_the_model() {
    let f = Fixture::new(config()).await;
    f.until("m@a", EndpointState::Healthy, Duration::from_secs(2))
        .await;
    f.faults("a", json!({"errors": [{"status": 503, "rate": 1.0}]}))
        .await;
    f.faults("b", json!({"errors": [{"status": 503, "rate": 1.0}]}))
        .await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    // While one is ejected the other may only degrade; check over a few evaluations.
    for _ in 0..10 {
        let (a, b) = (f.record("m@a").await, f.record("m@b").await);
        let now = switchyard_core::clock::now_ms();
        let ejected = [&a, &b]
            .iter()
            .filter(|r| r.state == EndpointState::Ejected && r.ejected_until_ms > now)
            .count();
        assert!(ejected <= 1, "both ejected: {a:?} {b:?}");
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let (a, b) = (f.record("m@a").await, f.record("m@b").await);
    let capped = [a, b]
        .into_iter()
        .any(|r| r.reason.contains("ejection cap"));
    assert!(capped, "one endpoint held back by the cap");
    f.stop.cancel();
}

#[tokio::test]
async fn passive_failures_eject_without_probes() {
    let mut cfg = config();
    cfg.probe.interval_ms = 60_000;
    cfg.lease_ttl_ms = 120_000;
    let f = Fixture::new(cfg).await;
    f.until("m@b", EndpointState::Healthy, Duration::from_secs(2))
        .await;
    let now = switchyard_core::clock::now_ms();
    let mut o = Outcomes {
        ok: 2,
        failed: 8,
        latency_ms_sum: 500,
        ..Default::default()
    };
    o.by_class.insert("unavailable".into(), 8);
    // Routers report failures in the very bucket in which the prober first saw the endpoint
    // healthy: a first sighting is no recovery, so they count.
    f.store
        .add_outcomes(&[(EndpointId::from("m@b"), bucket_of(now), o)])
        .await
        .unwrap();
    let took = f
        .until("m@b", EndpointState::Ejected, Duration::from_secs(12))
        .await;
    assert!(
        f.record("m@b").await.reason.contains("error rate"),
        "after {took:?}"
    );
    f.stop.cancel();
}
