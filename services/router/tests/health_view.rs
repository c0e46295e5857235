//! The health view follows the shared records within a second, survives a Redis outage on the
//! last snapshot (marked stale), recovers without restart, and overlays local penalties.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_core::{EndpointId, EndpointState};
use switchyard_router::health_view::HealthView;
use switchyard_state::{HealthRecord, HealthStore, RedisHealthStore};
use switchyard_testkit::{RedisOptions, RedisServer};
use tokio_util::sync::CancellationToken;

use switchyard_core::clock::now_ms;

async fn until(view: &HealthView, what: impl Fn(&HealthView) -> bool, limit: Duration) -> Duration {
    let started = Instant::now();
    while !what(view) {
        assert!(started.elapsed() < limit, "not within {limit:?}: {view:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn follows_survives_an_outage_and_penalizes() {
    let mut redis = RedisServer::start_with(RedisOptions {
        aof: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let prober: Arc<dyn HealthStore> = Arc::new(
        RedisHealthStore::open(&redis.url(), stop.clone())
            .await
            .unwrap(),
    );
    let router_store: Arc<dyn HealthStore> = Arc::new(
        RedisHealthStore::open(&redis.url(), stop.clone())
            .await
            .unwrap(),
    );
    let view = HealthView::spawn(
        router_store,
        Duration::from_secs(30),
        Duration::from_millis(200),
        stop.clone(),
    );
    until(&view, |v| !v.is_stale(), Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let ep = EndpointId::from("m@a");
    let ejected = HealthRecord {
        state: EndpointState::Ejected,
        updated_ms: now_ms(),
        ..Default::default()
    };
    prober.put_record(&ep, &ejected).await.unwrap();
    let took = until(
        &view,
        |v| v.snapshot().get("m@a").state == EndpointState::Ejected,
        Duration::from_secs(1),
    )
    .await;
    assert!(took < Duration::from_secs(1));

    // Redis goes away: the last snapshot keeps serving, marked stale.
    redis.kill().await.unwrap();
    until(&view, HealthView::is_stale, Duration::from_secs(3)).await;
    assert_eq!(view.snapshot().get("m@a").state, EndpointState::Ejected);

    // It comes back: the view recovers by itself and sees changes made meanwhile.
    redis.restart().await.unwrap();
    until(&view, |v| !v.is_stale(), Duration::from_secs(5)).await;
    let back = HealthRecord {
        state: EndpointState::Healthy,
        updated_ms: now_ms(),
        ..Default::default()
    };
    let mut written = false;
    for _ in 0..50 {
        if prober.put_record(&ep, &back).await.is_ok() {
            written = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(written);
    until(
        &view,
        |v| v.snapshot().get("m@a").state == EndpointState::Healthy,
        Duration::from_secs(3),
    )
    .await;

    // A local penalty degrades the endpoint here at once, and wears off.
    view.penalize(&ep, Duration::from_millis(300));
    assert_eq!(view.snapshot().get("m@a").state, EndpointState::Degraded);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(view.snapshot().get("m@a").state, EndpointState::Healthy);
    stop.cancel();
}

#[tokio::test]
async fn without_a_fresh_shared_record_the_router_ejects_on_its_own() {
    let stop = CancellationToken::new();
    let store: Arc<dyn HealthStore> = Arc::new(switchyard_state::MemoryHealthStore::default());
    let view = HealthView::spawn(
        store.clone(),
        Duration::from_secs(30),
        Duration::from_millis(50),
        stop.clone(),
    );
    until(&view, |v| !v.is_stale(), Duration::from_secs(2)).await;
    let (lonely, watched) = (EndpointId::from("m@a"), EndpointId::from("m@b"));
    // m@b has a fresh shared record: the prober decides for it.
    let healthy = HealthRecord {
        state: EndpointState::Healthy,
        updated_ms: now_ms(),
        ..Default::default()
    };
    store.put_record(&watched, &healthy).await.unwrap();
    until(
        &view,
        |v| v.snapshot().get("m@b").state == EndpointState::Healthy,
        Duration::from_secs(2),
    )
    .await;

    for ep in [&lonely, &watched] {
        view.observe(ep, true);
        view.observe(ep, true);
    }
    // Two failures in a row, then a success: nothing happens.
    view.observe(&lonely, false);
    view.observe(&lonely, true);
    view.observe(&lonely, true);
    assert_eq!(view.snapshot().get("m@a").state, EndpointState::Unknown);
    view.observe(&lonely, true);
    view.observe(&watched, true);
    let s = view.snapshot();
    assert_eq!(s.get("m@a").state, EndpointState::Ejected);
    assert_eq!(s.get("m@b").state, EndpointState::Healthy);
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_local_ejection_ends_with_one_trial_that_restores_or_doubles_it() {
    let stop = CancellationToken::new();
    let store: Arc<dyn HealthStore> = Arc::new(switchyard_state::MemoryHealthStore::default());
    let view = HealthView::spawn(
        store,
        Duration::from_secs(30),
        Duration::from_millis(50),
        stop.clone(),
    );
    until(&view, |v| !v.is_stale(), Duration::from_secs(2)).await;
    let ep = EndpointId::from("m@a");
    let state = |s: &switchyard_core::HealthSnapshot| s.get("m@a").state;
    for _ in 0..3 {
        view.observe(&ep, true);
    }
    assert_eq!(state(&view.snapshot()), EndpointState::Ejected);
    // A late answer to a request sent before the ejection does not end it.
    view.observe(&ep, false);
    assert_eq!(state(&view.snapshot()), EndpointState::Ejected);

    // The ejection ends: one request gets the trial, the others still plan without it.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(state(&view.snapshot()), EndpointState::Ejected);
    let (s, trial) = view.snapshot_with_trial();
    assert_eq!(
        (state(&s), trial.as_ref()),
        (EndpointState::Unknown, Some(&ep))
    );
    let (s, trial) = view.snapshot_with_trial();
    assert_eq!((state(&s), trial), (EndpointState::Ejected, None));

    // The trial fails: ejected again, for twice as long.
    view.observe(&ep, true);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(view.snapshot_with_trial().1, None);
    tokio::time::advance(Duration::from_secs(10)).await;
    // A trial given back (its request went elsewhere first) is the next request's.
    assert_eq!(view.snapshot_with_trial().1.as_ref(), Some(&ep));
    view.release_trial(&ep);
    assert_eq!(view.snapshot_with_trial().1.as_ref(), Some(&ep));

    // The trial succeeds: restored for everyone, and the backoff starts over.
    view.observe(&ep, false);
    assert_eq!(state(&view.snapshot()), EndpointState::Unknown);
    for _ in 0..3 {
        view.observe(&ep, true);
    }
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(view.snapshot_with_trial().1.as_ref(), Some(&ep));

    // A trial whose request never reports back is offered again after an ejection period.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(view.snapshot_with_trial().1.as_ref(), Some(&ep));
    stop.cancel();
}
