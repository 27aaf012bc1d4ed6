//! Idempotency records under concurrency, on SQLite (where they join the writer's batches)
//! and on PostgreSQL: one start per key however requests race, and a retry queued beside its
//! first attempt's completion sees either the running record or the stored response.

#[macro_use]
#[path = "store_harness.rs"]
mod harness;

use enclosure_api::store::IdempotencyBegin;
use harness::{Kind, TestDb};

const T0: i64 = 1_800_000_000_000;

on_both!(store_idempotency_racing_begins_start_a_key_once, |db| {
    let (one, two) = (db.store().await, db.store().await);
    let mut jobs = tokio::task::JoinSet::new();
    // Thirty requests race for one key (ten with another body) and thirty for keys of
    // their own, from two stores sharing the database.
    for i in 0..60u8 {
        let store = if i % 2 == 0 { one.clone() } else { two.clone() };
        jobs.spawn(async move {
            let (key, hash) = match i {
                0..20 => ("shared".to_string(), vec![1u8; 32]),
                20..30 => ("shared".to_string(), vec![2u8; 32]),
                _ => (format!("own-{i}"), vec![i; 32]),
            };
            let got = store
                .idempotency_begin("alice", &key, &hash, T0)
                .await
                .expect("begin");
            (i, got)
        });
    }
    let results = jobs.join_all().await;
    let shared_started: Vec<u8> = results
        .iter()
        .filter(|(i, b)| *i < 30 && *b == IdempotencyBegin::Started)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(shared_started.len(), 1, "one start for the shared key");
    let winner_body = if shared_started[0] < 20 { 1 } else { 2 };
    for (i, got) in &results {
        let expected = match *i {
            30.. => IdempotencyBegin::Started,
            i if i == shared_started[0] => IdempotencyBegin::Started,
            // The same body as the winner's is told to wait; another body is a mismatch.
            0..20 if winner_body == 1 => IdempotencyBegin::InProgress,
            20..30 if winner_body == 2 => IdempotencyBegin::InProgress,
            _ => IdempotencyBegin::Mismatch,
        };
        assert_eq!(got, &expected, "request {i}");
    }
});

on_both!(store_idempotency_retry_beside_completion, |db| {
    let (one, two) = (db.store().await, db.store().await);
    let h = vec![7u8; 32];
    for round in 0..20 {
        let key = format!("k-{round}");
        assert_eq!(
            one.idempotency_begin("bob", &key, &h, T0)
                .await
                .expect("begin"),
            IdempotencyBegin::Started
        );
        // The first attempt completes while its retry arrives at the other store.
        let (done, retry) = tokio::join!(
            one.idempotency_complete("bob", &key, 201, b"{\"ok\":true}", T0 + 5),
            two.idempotency_begin("bob", &key, &h, T0 + 5)
        );
        done.expect("complete");
        let retry = retry.expect("retry");
        assert!(
            retry == IdempotencyBegin::InProgress
                || retry
                    == IdempotencyBegin::Replay {
                        status: 201,
                        body: b"{\"ok\":true}".to_vec()
                    },
            "round {round}: {retry:?}"
        );
        // Once completed, every retry gets the stored response, and completing again fails.
        assert_eq!(
            two.idempotency_begin("bob", &key, &h, T0 + 6)
                .await
                .expect("late retry"),
            IdempotencyBegin::Replay {
                status: 201,
                body: b"{\"ok\":true}".to_vec()
            }
        );
        assert!(
            two.idempotency_complete("bob", &key, 500, b"", T0 + 7)
                .await
                .is_err(),
            "a completed record cannot be completed again"
        );
    }
});
