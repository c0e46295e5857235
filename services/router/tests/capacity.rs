//! The capacity view: what a provider reports reaches another router at once and ends at the
//! reset; declared capacity is counted across routers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use switchyard_config::catalog::Capacity;
use switchyard_providers::{CapacityObserver, RateLimits, Target};
use switchyard_router::capacity::{CapacityView, FLUSH};
use switchyard_routing::{CapacityTable, KeySource};
use switchyard_state::HealthStore;

use std::time::Duration;

use switchyard_providers::Window;
use switchyard_state::MemoryHealthStore;

fn target(endpoint: &str, owner: Option<&str>, capacity: Option<Capacity>) -> Target {
    Target {
        endpoint: endpoint.into(),
        provider: "p".into(),
        format: switchyard_config::catalog::WireFormat::Openai,
        base_url: "http://p".into(),
        upstream_model: "m".into(),
        key: None,
        max_output: 100,
        options: Default::default(),
        owner: owner.map(Into::into),
        capacity,
    }
}

fn limits(remaining: u64, reset_in: Duration) -> RateLimits {
    RateLimits {
        requests: Some(Window {
            limit: Some(10),
            remaining,
            reset_in: Some(reset_in),
        }),
        tokens: None,
    }
}

#[tokio::test]
async fn a_reported_exhaustion_reaches_another_router_and_ends_at_the_reset() {
    let store: Arc<dyn HealthStore> = Arc::new(MemoryHealthStore::default());
    let (a, b) = (
        CapacityView::spawn(store.clone()),
        CapacityView::spawn(store.clone()),
    );
    let t = target("m@p", None, None);
    assert_eq!(b.left("m@p", None), None, "nothing known: never limited");
    a.reserve(&t, 10);
    assert!(
        a.reported(&t, &limits(2, Duration::from_millis(600)))
            .is_none()
    );
    let left = a.left("m@p", None).unwrap().requests.unwrap();
    assert_eq!((left.remaining, left.limit), (2, Some(10)));
    // What this router sends after the observation counts down here.
    a.reserve(&t, 10);
    assert_eq!(a.left("m@p", None).unwrap().requests.unwrap().remaining, 1);
    let sharing = a.reported(&t, &limits(0, Duration::from_millis(600)));
    // Shared at once: once the answer's wait is over, the other router knows.
    sharing.expect("an exhaustion is shared at once").await;
    tokio::task::yield_now().await;
    let t0 = std::time::Instant::now();
    while b
        .left("m@p", None)
        .is_none_or(|l| l.requests.unwrap().remaining != 0)
    {
        assert!(t0.elapsed() < FLUSH, "not announced");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Another org's own key is another scope.
    assert_eq!(b.left("m@p", Some("acme")), None);
    tokio::time::sleep(Duration::from_millis(650)).await;
    let whole = b.left("m@p", None).unwrap().requests.unwrap();
    assert_eq!(
        (whole.remaining, whole.limit),
        (10, Some(10)),
        "whole again after the reset"
    );
    // A reply that left this router before the others' were counted does not give back what
    // was sent since, within the same window.
    b.reserve(&t, 10);
    b.reserve(&t, 10);
    assert!(
        b.reported(&t, &limits(9, Duration::from_millis(600)))
            .is_none()
    );
    assert_eq!(b.left("m@p", None).unwrap().requests.unwrap().remaining, 8);
    // Without a limit, a window past its reset says nothing.
    let c = CapacityView::spawn(store.clone());
    let u = target("m@u", None, None);
    let mut unlimited = limits(0, Duration::from_millis(50));
    unlimited.requests.as_mut().unwrap().limit = None;
    let _ = c.reported(&u, &unlimited);
    assert!(c.left("m@u", None).is_some());
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(c.left("m@u", None), None);
}

#[tokio::test]
async fn declared_capacity_is_counted_across_routers() {
    let store: Arc<dyn HealthStore> = Arc::new(MemoryHealthStore::default());
    let (a, b) = (
        CapacityView::spawn(store.clone()),
        CapacityView::spawn(store.clone()),
    );
    let declared = Some(Capacity {
        rpm: Some(5),
        tpm: Some(1_000),
    });
    let t = target("m@q", Some("acme"), declared);
    for _ in 0..2 {
        a.reserve(&t, 100);
    }
    for _ in 0..2 {
        b.reserve(&t, 300);
    }
    let left = a.left("m@q", Some("acme")).unwrap();
    assert_eq!(
        left.requests.unwrap().remaining,
        3,
        "before a flush: its own"
    );
    tokio::time::sleep(FLUSH * 3).await;
    for view in [&a, &b] {
        let left = view.left("m@q", Some("acme")).unwrap();
        assert_eq!(left.requests.unwrap().remaining, 1);
        assert_eq!(left.tokens.unwrap().remaining, 200);
        assert!(left.requests.unwrap().reset_in_ms <= 60_000);
    }
    assert_eq!(a.left("m@q", None), None, "the shared key is not the org's");
    let table = a.for_org("acme");
    assert!(
        table
            .left(&"m@q".into(), KeySource::Byok)
            .unwrap()
            .short_for(201)
            .is_some()
    );
}
