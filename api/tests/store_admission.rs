//! `Store::admit_ticket`: rate-limit buckets and a ticket born claimed in one group-committed
//! job, on SQLite and on PostgreSQL.

#[macro_use]
#[path = "store_harness.rs"]
mod harness;

use std::collections::BTreeSet;

use enclosure_api::store::{RateLimitHit, Store, StoreError, TicketAdmission};
use harness::{Kind, TestDb, ticket};

const T0: i64 = 1_800_000_000_000;

/// Admits a fresh ticket `id` of `owner`, issued and admitted at `at`.
async fn admit(
    store: &Store,
    id: &str,
    owner: &str,
    at: i64,
    hits: &[RateLimitHit],
) -> TicketAdmission {
    store
        .admit_ticket(&ticket(id, owner, at), hits, at)
        .await
        .expect("admit")
}

/// A bucket of `limit` operations that refills over a minute.
fn hit(bucket: &str, limit: u64) -> RateLimitHit {
    RateLimitHit {
        bucket: bucket.into(),
        limit,
        window_ms: 60_000,
    }
}

on_both!(store_admission_claims_a_fresh_ticket_once, |db| {
    let store = db.store().await;
    let hits = [hit("user:alice", 10), hit("identity:i", 10)];
    assert_eq!(
        store
            .admit_ticket(&ticket("t-1", "alice", T0), &hits, T0 + 1)
            .await
            .expect("admit"),
        TicketAdmission::Claimed
    );
    assert_eq!(
        store.ticket_used_at("alice", "t-1").await.expect("read"),
        Some(Some(T0 + 1)),
        "recorded already claimed"
    );
    assert!(
        !store.claim_ticket("t-1", T0 + 2).await.expect("claim"),
        "a ticket born claimed cannot be claimed again"
    );
    assert_eq!(
        store
            .admit_ticket(&ticket("t-1", "alice", T0), &hits, T0 + 3)
            .await
            .expect("admit"),
        TicketAdmission::NotClaimed,
        "an existing id is never claimed twice"
    );
    assert_eq!(
        store
            .admit_ticket(&ticket("t-2", "alice", T0), &hits, T0 + 60_000)
            .await
            .expect("admit"),
        TicketAdmission::NotClaimed,
        "not at or after expiry"
    );
    assert_eq!(
        store.ticket_used_at("alice", "t-2").await.expect("read"),
        None
    );
});

on_both!(store_admission_refuses_over_either_limit, |db| {
    let store = db.store().await;
    let hits = [hit("user:alice", 2), hit("identity:i", 3)];
    for id in ["t-1", "t-2"] {
        assert_eq!(
            store
                .admit_ticket(&ticket(id, "alice", T0), &hits, T0)
                .await
                .expect("admit"),
            TicketAdmission::Claimed
        );
    }
    // Two a minute refill one every 30 s: the wait is exact.
    assert_eq!(
        admit(&store, "t-3", "alice", T0, &hits).await,
        TicketAdmission::RateLimited {
            index: 0,
            retry_after_ms: 30_000
        }
    );
    assert_eq!(
        store.ticket_used_at("alice", "t-3").await.expect("read"),
        None,
        "a refused admission records no ticket"
    );
    // A refused admission takes from no bucket: the identity has one left, and another
    // user's request on it takes it.
    let other = [hit("user:bob", 5), hit("identity:i", 3)];
    assert_eq!(
        admit(&store, "t-4", "bob", T0, &other).await,
        TicketAdmission::Claimed
    );
    assert_eq!(
        admit(&store, "t-5", "bob", T0, &other).await,
        TicketAdmission::RateLimited {
            index: 1,
            retry_after_ms: 20_000
        }
    );
    // Both buckets empty: the first is named, the wait is the longer one.
    assert_eq!(
        admit(&store, "t-6", "alice", T0 + 1_000, &hits).await,
        TicketAdmission::RateLimited {
            index: 0,
            retry_after_ms: 29_000
        }
    );
    // The identity refills one every 20 s; Alice's own bucket a second later.
    let later = T0 + 20_000;
    assert_eq!(
        admit(&store, "t-7", "bob", later, &other).await,
        TicketAdmission::Claimed
    );
    let later = T0 + 30_000;
    assert_eq!(
        admit(&store, "t-8", "alice", later, &hits).await,
        TicketAdmission::RateLimited {
            index: 1,
            retry_after_ms: 10_000
        },
        "Alice's bucket has refilled, the identity's not yet again"
    );
    // Purging deletes only buckets that are full again; these are not.
    store.purge_full_buckets(later).await.expect("purge");
    assert!(matches!(
        admit(&store, "t-9", "bob", later, &other).await,
        TicketAdmission::RateLimited { index: 1, .. }
    ));
    let bad_window = [RateLimitHit {
        window_ms: 0,
        ..hit("user:alice", 2)
    }];
    assert!(matches!(
        store
            .admit_ticket(&ticket("t-10", "alice", T0), &bad_window, T0)
            .await,
        Err(StoreError::InvalidInput(_))
    ));
});

on_both!(
    store_admission_is_shared_and_exact_under_concurrency,
    |db| {
        let (one, two) = (db.store().await, db.store().await);
        let mut jobs = tokio::task::JoinSet::new();
        for i in 0..40 {
            let store = if i % 2 == 0 { one.clone() } else { two.clone() };
            jobs.spawn(async move {
                let t = ticket(&format!("t-{i}"), "alice", T0);
                let hits = [hit("user:alice", 25), hit("identity:i", 1000)];
                (i, store.admit_ticket(&t, &hits, T0).await.expect("admit"))
            });
        }
        let results = jobs.join_all().await;
        let claimed: BTreeSet<_> = results
            .iter()
            .filter(|(_, a)| *a == TicketAdmission::Claimed)
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(
            claimed.len(),
            25,
            "exactly the limit is admitted: {results:?}"
        );
        assert!(results.iter().all(|(i, a)| claimed.contains(i)
            || *a
                == TicketAdmission::RateLimited {
                    index: 0,
                    retry_after_ms: 2_400
                }));
        for i in 0..40 {
            let used = one
                .ticket_used_at("alice", &format!("t-{i}"))
                .await
                .expect("read");
            assert_eq!(used.is_some(), claimed.contains(&i), "ticket t-{i}");
        }
        // The refused 15 took nothing: one refill later (60 s / 25) exactly one more is
        // admitted, whichever process it reaches.
        let later = T0 + 2_400;
        let hits = [hit("user:alice", 25), hit("identity:i", 1000)];
        assert_eq!(
            admit(&one, "t-40", "alice", later, &hits).await,
            TicketAdmission::Claimed
        );
        assert!(matches!(
            admit(&two, "t-41", "alice", later, &hits).await,
            TicketAdmission::RateLimited { index: 0, .. }
        ));

        // The same id admitted concurrently through two stores: exactly one claim.
        let mut races = tokio::task::JoinSet::new();
        for i in 0..20 {
            let store = if i % 2 == 0 { one.clone() } else { two.clone() };
            races.spawn(async move {
                let hits = [hit(&format!("user:u{i}"), 10)];
                admit(&store, "same", "alice", T0, &hits).await
            });
        }
        let wins = races
            .join_all()
            .await
            .into_iter()
            .filter(|a| *a == TicketAdmission::Claimed)
            .count();
        assert_eq!(wins, 1, "one id, one claim");
    }
);

on_both!(store_admission_refuses_bad_records_alone, |db| {
    let store = db.store().await;
    let hits = [hit("user:alice", 100)];
    let mut short = ticket("t-short", "alice", T0);
    short.payload_sha384.pop();
    let mut bad_op = ticket("t-op", "alice", T0);
    bad_op.operation = "export".into();
    let mut nul = ticket("t-nul", "alice", T0);
    nul.key_id = "k\0".into();
    let good = ticket("t-good", "alice", T0);
    // Refused before they reach the writer, so they cannot fail a batch they would share.
    let (a, b, c, d) = tokio::join!(
        store.admit_ticket(&short, &hits, T0),
        store.admit_ticket(&bad_op, &hits, T0),
        store.admit_ticket(&nul, &hits, T0),
        store.admit_ticket(&good, &hits, T0),
    );
    for refused in [a, b, c] {
        assert!(
            matches!(refused, Err(StoreError::InvalidInput(_))),
            "{refused:?}"
        );
    }
    assert_eq!(d.expect("admit"), TicketAdmission::Claimed);
    assert_eq!(
        store
            .admit_ticket(&ticket("t-anon", "", T0), &hits, T0)
            .await
            .map_err(|e| matches!(e, StoreError::InvalidInput(_))),
        Err(true),
        "an empty owner is refused"
    );
    if db.kind == Kind::Postgres {
        // The writer inserts as the store's own role; the row still belongs to its owner.
        assert_eq!(
            store.ticket_used_at("bob", "t-good").await.expect("read"),
            None
        );
    }
});
