//! Usage reports survive a billing outage: queued while billing is down (before it ever started,
//! and again after it stopped mid-run), delivered when it returns, each counted once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_proto::v1 as pb;
use switchyard_router::reporter::Reporter;
use switchyard_state::{BudgetStore, MemoryBudgetStore};
use tokio_util::sync::CancellationToken;

fn record(i: usize) -> pb::UsageRecord {
    pb::UsageRecord {
        request_id: format!("req-{i}"),
        org_id: "acme".into(),
        model: "m".into(),
        cost_nano_usd: 1_000,
        outcome: "ok".into(),
        ..Default::default()
    }
}

async fn start_billing(
    store: Arc<dyn BudgetStore>,
    port: u16,
) -> switchyard_billing::run::BillingHandle {
    let grpc = loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    switchyard_billing::run::start(store, Duration::from_secs(60), grpc, http)
        .await
        .unwrap()
}

async fn ledger_len(store: &Arc<dyn BudgetStore>) -> usize {
    store.ledger("acme", "", 100_000).await.unwrap().len()
}

async fn wait_for(store: &Arc<dyn BudgetStore>, n: usize) -> Duration {
    let started = Instant::now();
    while ledger_len(store).await < n {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "only {} of {n} delivered",
            ledger_len(store).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn reports_wait_out_a_billing_outage_and_count_once() {
    let port = switchyard_testkit::free_port().unwrap();
    let store: Arc<dyn BudgetStore> = Arc::new(MemoryBudgetStore::default());
    let stop = CancellationToken::new();
    let (reporter, task) = Reporter::spawn(
        format!("http://127.0.0.1:{port}"),
        10_000,
        stop.clone(),
        Duration::from_secs(5),
    );

    // Billing has never started: reports queue up.
    for i in 0..300 {
        reporter.report(record(i)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let billing = start_billing(store.clone(), port).await;
    wait_for(&store, 300).await;

    // Billing goes away mid-run and comes back on the same address.
    tokio::time::timeout(Duration::from_secs(5), billing.shutdown())
        .await
        .expect("billing shuts down with a client connected");
    for i in 300..500 {
        reporter.report(record(i)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        ledger_len(&store).await,
        300,
        "nothing delivered while billing is down"
    );
    let billing = start_billing(store.clone(), port).await;
    wait_for(&store, 500).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ledger = store.ledger("acme", "", 100_000).await.unwrap();
    let mut ids: Vec<_> = ledger.iter().map(|(_, e)| e.request_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        (ledger.len(), ids.len()),
        (500, 500),
        "every report delivered, each once"
    );

    // A report queued just before shutdown is still flushed.
    reporter.report(record(500)).unwrap();
    stop.cancel();
    task.await.unwrap();
    assert_eq!(ledger_len(&store).await, 501);
    billing.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_refuses_instead_of_blocking() {
    let port = switchyard_testkit::free_port().unwrap();
    let (reporter, _task) = Reporter::spawn(
        format!("http://127.0.0.1:{port}"),
        2,
        CancellationToken::new(),
        Duration::from_secs(1),
    );
    let mut refused = 0;
    for i in 0..20 {
        if reporter.report(record(i)).is_err() {
            refused += 1;
        }
    }
    assert!(refused > 0, "a bounded queue refuses when billing is gone");
}
