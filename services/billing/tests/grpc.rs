//! The billing service over real gRPC and a real redis-server, with a router's side played by a
//! separate store connection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_core::Money;
use switchyard_core::clock::now_ms;
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::billing_client::BillingClient;
use switchyard_state::{BudgetStore, HoldOutcome, HoldRequest, RedisBudgetStore, Scope};
use switchyard_testkit::RedisServer;
use tonic::transport::Channel;

fn usd_cents(c: i64) -> i64 {
    c * 10_000_000
}

fn org_scope() -> Option<pb::Scope> {
    Some(pb::Scope {
        kind: pb::ScopeKind::Org as i32,
        org_id: "acme".into(),
        id: String::new(),
    })
}

async fn budget(client: &mut BillingClient<Channel>) -> pb::Budget {
    client
        .get_budget(pb::GetBudgetRequest {
            scope: org_scope(),
            period: pb::Period::Day as i32,
        })
        .await
        .unwrap()
        .into_inner()
}

fn record(id: &str, hold: &str, cents: i64) -> pb::UsageRecord {
    pb::UsageRecord {
        request_id: id.into(),
        org_id: "acme".into(),
        api_key_id: "k1".into(),
        workflow: "support".into(),
        model: "demo-fast".into(),
        provider: "sim-openai".into(),
        endpoint: "demo-fast@sim-openai".into(),
        prompt_tokens: 100,
        completion_tokens: 20,
        cost_nano_usd: usd_cents(cents),
        hold_id: hold.into(),
        finished_unix_ms: now_ms() as i64,
        attempts: 1,
        outcome: "ok".into(),
        ..Default::default()
    }
}

async fn metrics(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Billing on a fresh redis-server, reconciling every `reconcile`, and a client of it.
async fn billing(
    reconcile: Duration,
) -> (
    RedisServer,
    switchyard_billing::run::BillingHandle,
    BillingClient<Channel>,
) {
    let redis = RedisServer::start().await.unwrap();
    let store: Arc<dyn BudgetStore> = Arc::new(RedisBudgetStore::open(&redis.url()).await.unwrap());
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = switchyard_billing::run::start(store, reconcile, grpc, http)
        .await
        .unwrap();
    let client = BillingClient::connect(format!("http://{}", handle.grpc_addr))
        .await
        .unwrap();
    (redis, handle, client)
}

#[tokio::test]
async fn budgets_reports_alerts_reconciler_usage_and_ledger() {
    let (redis, handle, mut client) = billing(Duration::from_millis(100)).await;

    // grpc.health.v1 reports the service serving on the same port.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", handle.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "switchyard.v1.Billing".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let set = client
        .set_budget(pb::SetBudgetRequest {
            scope: org_scope(),
            period: pb::Period::Day as i32,
            limit_nano_usd: usd_cents(100),
            hard: true,
            alert_thresholds_percent: vec![50, 80],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (set.limit_nano_usd, set.spent_nano_usd, set.hard),
        (usd_cents(100), 0, true)
    );
    let listed = client
        .list_budgets(pb::ListBudgetsRequest {
            org_id: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.budgets.len(), 1);
    let bad = client
        .set_budget(pb::SetBudgetRequest {
            scope: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let missing = client
        .get_budget(pb::GetBudgetRequest {
            scope: org_scope(),
            period: pb::Period::Month as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // A router holds the maximum cost on its own connection, then reports the actual cost; the
    // report is retried three times and counts once.
    let router = RedisBudgetStore::open(&redis.url()).await.unwrap();
    let hold = HoldRequest {
        org: "acme".into(),
        hold_id: "req-1".into(),
        amount: Money::from_nanos(usd_cents(40)),
        scopes: vec![Scope::org()],
        now_ms: now_ms(),
        ttl_ms: 60_000,
        tokens: 0,
        limits: Vec::new(),
    };
    assert_eq!(router.hold(&hold).await.unwrap(), HoldOutcome::Held);
    assert_eq!(budget(&mut client).await.held_nano_usd, usd_cents(40));
    for _ in 0..3 {
        let ack = client
            .report_usage(pb::ReportUsageRequest {
                records: vec![record("req-1", "req-1", 55)],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ack.acknowledged, ["req-1"]);
    }
    let b = budget(&mut client).await;
    assert_eq!((b.spent_nano_usd, b.held_nano_usd), (usd_cents(55), 0));
    // Crossing 50 % raised one alert.
    let m = metrics(handle.http_addr).await;
    assert!(
        m.contains("switchyard_budget_alerts_total{org=\"acme\",scope=\"org\",threshold=\"50\"} 1"),
        "{m}"
    );
    assert!(!m.contains("threshold=\"80\""), "{m}");

    // Usage without a hold, reported three times, counts once.
    for _ in 0..3 {
        client
            .report_usage(pb::ReportUsageRequest {
                records: vec![record("req-2", "", 5)],
            })
            .await
            .unwrap();
    }
    assert_eq!(budget(&mut client).await.spent_nano_usd, usd_cents(60));

    // A router dies holding budget: after the hold's TTL the reconciler settles it at the held
    // amount, marked unreconciled.
    let lost = HoldRequest {
        hold_id: "req-3".into(),
        amount: Money::from_nanos(usd_cents(30)),
        ttl_ms: 200,
        tokens: 0,
        limits: Vec::new(),
        now_ms: now_ms(),
        ..hold.clone()
    };
    {
        let dying = RedisBudgetStore::open(&redis.url()).await.unwrap();
        assert_eq!(dying.hold(&lost).await.unwrap(), HoldOutcome::Held);
    }
    let started = Instant::now();
    loop {
        let b = budget(&mut client).await;
        if b.held_nano_usd == 0 {
            assert_eq!(
                b.spent_nano_usd,
                usd_cents(90),
                "settled at the held amount"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the reconciler did not settle the hold"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = metrics(handle.http_addr).await;
    assert!(
        m.contains("threshold=\"80\"} 1"),
        "the reconciled spend crossed 80 %: {m}"
    );

    // Usage by model and the ledger, in order, resumable.
    let usage = client
        .get_usage(pb::GetUsageRequest {
            org_id: "acme".into(),
            group_by: pb::UsageGroupBy::Model as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let demo = usage.rows.iter().find(|r| r.key == "demo-fast").unwrap();
    assert_eq!(
        (demo.requests, demo.cost_nano_usd, demo.prompt_tokens),
        (2, usd_cents(60), 200)
    );
    let mut stream = client
        .export_ledger(pb::ExportLedgerRequest {
            org_id: "acme".into(),
            after_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut entries = Vec::new();
    while let Some(e) = stream.message().await.unwrap() {
        entries.push(e);
    }
    let ids: Vec<_> = entries
        .iter()
        .map(|e| e.record.as_ref().unwrap().request_id.clone())
        .collect();
    assert_eq!(ids, ["req-1", "req-2", "unreconciled:req-3"]);
    assert!(entries[2].unreconciled && !entries[0].unreconciled);
    assert_eq!(
        entries[2].record.as_ref().unwrap().cost_nano_usd,
        usd_cents(30)
    );
    let mut rest = client
        .export_ledger(pb::ExportLedgerRequest {
            org_id: "acme".into(),
            after_id: entries[0].id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while rest.message().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 2);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_report_naming_a_hold_never_taken_is_charged_once() {
    let (_redis, handle, mut client) = billing(Duration::from_secs(60)).await;
    client
        .set_budget(pb::SetBudgetRequest {
            scope: org_scope(),
            period: pb::Period::Day as i32,
            limit_nano_usd: usd_cents(100),
            hard: true,
            alert_thresholds_percent: vec![],
        })
        .await
        .unwrap();
    // A router failed open: its hold never reached the store, its report still names it.
    let r = record("req-open-1", "req-open-1", 7);
    for _ in 0..3 {
        client
            .report_usage(pb::ReportUsageRequest {
                records: vec![r.clone()],
            })
            .await
            .unwrap();
    }
    let b = budget(&mut client).await;
    assert_eq!((b.spent_nano_usd, b.held_nano_usd), (usd_cents(7), 0));
    let mut ledger = client
        .export_ledger(pb::ExportLedgerRequest {
            org_id: "acme".into(),
            after_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(e) = ledger.message().await.unwrap() {
        assert_eq!(e.record.unwrap().request_id, "req-open-1");
        n += 1;
    }
    assert_eq!(n, 1);
    handle.shutdown().await;
}
