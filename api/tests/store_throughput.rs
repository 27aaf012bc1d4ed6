//! Throughput of the storage layer on both backends, for the benchmark notes; ignored by
//! default. Run: `cargo test --release -p enclosure-api --test store_throughput -- --ignored
//! --nocapture --test-threads 1`. Numbers depend heavily on the disk's flush latency.

#[path = "store_harness.rs"]
mod harness;

use std::time::Instant;

use enclosure_api::store::{KeyRecord, RateLimitHit, Store, TicketAdmission};
use harness::{Kind, TestDb, entry, ticket};

const T0: i64 = 1_800_000_000_000;

/// A bucket too large for the benchmark to empty.
fn rate_hit(bucket: &str) -> RateLimitHit {
    RateLimitHit {
        bucket: bucket.into(),
        limit: u64::MAX,
        window_ms: 60_000,
    }
}

/// Runs `per_task` iterations of `op` in each of `tasks` tasks and prints operations/s.
async fn measure<F, Fut>(label: &str, store: &Store, tasks: usize, per_task: usize, op: F)
where
    F: Fn(Store, String) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let (store, op) = (store.clone(), op.clone());
        let label = label.to_string();
        set.spawn(async move {
            for i in 0..per_task {
                op(store.clone(), format!("{label}-{t}-{i}")).await;
            }
        });
    }
    set.join_all().await;
    let rate = (tasks * per_task) as f64 / started.elapsed().as_secs_f64();
    println!("{:<8} {label:<40} {rate:>9.0}/s", store.backend_name());
}

async fn run(kind: Kind) {
    let db = TestDb::new(kind).await;
    let store = db.store().await;
    let identity = store
        .create_identity("alice", "bench", T0)
        .await
        .expect("identity");
    store
        .insert_key(&KeyRecord {
            key_id: "k".into(),
            identity_id: identity.id,
            owner: "alice".into(),
            public_key_der: vec![1; 120],
            key_certificate: vec![2; 300],
            created_at_ms: T0,
            destroyed_at_ms: None,
        })
        .await
        .expect("key");
    for tasks in [1, 16, 128] {
        let label = format!("append_audit, {tasks} concurrent");
        measure(
            &label,
            &store,
            tasks,
            4000 / tasks.max(16) * 4,
            |s, _| async move {
                s.append_audit(entry("alice", "key.sign", T0))
                    .await
                    .expect("append");
            },
        )
        .await;
    }
    measure(
        "the store calls of one sign request, 16 concurrent",
        &store,
        16,
        125,
        |s, id| async move {
            s.idempotency_begin("alice", &id, &[1; 32], T0)
                .await
                .expect("begin");
            s.get_key("alice", "k").await.expect("key");
            let hits = [rate_hit("user:alice"), rate_hit("identity:i")];
            assert_eq!(
                s.admit_ticket(&ticket(&id, "alice", T0), &hits, T0 + 1)
                    .await
                    .expect("admit"),
                TicketAdmission::Claimed
            );
            s.append_audit(entry("alice", "key.sign", T0))
                .await
                .expect("audit");
            s.idempotency_complete("alice", &id, 200, b"{}", T0)
                .await
                .expect("complete");
        },
    )
    .await;
    let started = Instant::now();
    let report = store.verify_audit_chain().await.expect("verify");
    println!(
        "{:<8} verify_audit_chain: {} rows in {:?}",
        store.backend_name(),
        report.rows_checked,
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --ignored --nocapture in release"]
async fn store_throughput_postgres() {
    run(Kind::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --ignored --nocapture in release"]
async fn store_throughput_sqlite() {
    run(Kind::Sqlite).await
}
