//! `enclosure_api::store` behaviour, each test run on SQLite and on PostgreSQL (the audit
//! log has its own file, `store_audit.rs`).

#[macro_use]
#[path = "store_harness.rs"]
mod harness;

use enclosure_api::store::{
    IDEMPOTENCY_REPLAY_MS, IDEMPOTENCY_RETAIN_MS, IDEMPOTENCY_RUNNING_LEASE_MS, IdempotencyBegin,
    KeyRecord, StoreError,
};
use harness::{Kind, TestDb, ticket};

const T0: i64 = 1_800_000_000_000;

on_both!(store_connects_and_migrates_idempotently, |db| {
    let store = db.store().await;
    store.ping().await.expect("ping");
    let want = if db.kind == Kind::Sqlite {
        "sqlite"
    } else {
        "postgres"
    };
    assert_eq!(store.backend_name(), want);
    // A second start (another process, or a restart) finds the schema current.
    let again = db.store().await;
    again.ping().await.expect("ping after re-migration");
    if db.kind == Kind::Sqlite {
        assert!(
            db.sqlite_path().exists(),
            "the file and its directory are created"
        );
        let mut raw = db.sqlite_raw().await;
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut raw)
            .await
            .expect("journal mode");
        assert_eq!(mode, "wal");
    }
});

on_both!(store_identities_and_keys_are_owner_scoped, |db| {
    let store = db.store().await;
    let a1 = store
        .create_identity("alice", "payroll", T0)
        .await
        .expect("create");
    let a2 = store
        .create_identity("alice", "vendor", T0 + 1)
        .await
        .expect("create");
    store
        .create_identity("bob", "bobs", T0)
        .await
        .expect("create");
    assert_eq!(
        uuid::Uuid::parse_str(&a1.id)
            .map(|u| u.get_version_num())
            .ok(),
        Some(4)
    );
    assert!(matches!(
        store.create_identity("", "x", T0).await,
        Err(StoreError::InvalidInput(_))
    ));
    // Owners are opaque text: quotes and non-ASCII travel intact through the RLS settings.
    let odd = "o'hara'); DROP TABLE identities; -- ünï";
    let o = store.create_identity(odd, "odd", T0).await.expect("create");
    assert_eq!(store.list_identities(odd).await.expect("list"), vec![o]);
    let listed = store.list_identities("alice").await.expect("list");
    assert_eq!(listed, vec![a1.clone(), a2.clone()]);
    assert_eq!(
        store.get_identity("alice", &a1.id).await.expect("get"),
        Some(a1.clone())
    );
    assert_eq!(
        store.get_identity("bob", &a1.id).await.expect("get"),
        None,
        "not bob's"
    );

    let key = KeyRecord {
        key_id: uuid::Uuid::new_v4().to_string(),
        identity_id: a1.id.clone(),
        owner: "alice".into(),
        public_key_der: vec![0x30, 0x76, 1, 2, 3],
        key_certificate: vec![9; 70],
        created_at_ms: T0 + 5,
        destroyed_at_ms: None,
    };
    store.insert_key(&key).await.expect("insert key");
    assert_eq!(
        store.get_key("alice", &key.key_id).await.expect("get"),
        Some(key.clone())
    );
    assert_eq!(store.get_key("bob", &key.key_id).await.expect("get"), None);
    assert_eq!(
        store.list_keys("alice", &a1.id).await.expect("list"),
        vec![key.clone()]
    );

    // A key whose owner is not its identity's owner is refused by the database.
    let stolen = KeyRecord {
        key_id: uuid::Uuid::new_v4().to_string(),
        owner: "bob".into(),
        ..key.clone()
    };
    assert!(matches!(
        store.insert_key(&stolen).await,
        Err(StoreError::Database(_))
    ));

    assert!(
        !store
            .mark_key_destroyed("bob", &key.key_id, T0 + 9)
            .await
            .expect("bob"),
        "not bob's"
    );
    assert!(
        store
            .mark_key_destroyed("alice", &key.key_id, T0 + 10)
            .await
            .expect("destroy")
    );
    assert!(
        !store
            .mark_key_destroyed("alice", &key.key_id, T0 + 11)
            .await
            .expect("again")
    );
    assert_eq!(
        store.get_key("alice", &key.key_id).await.expect("get"),
        None
    );
    assert!(
        store
            .list_keys("alice", &a1.id)
            .await
            .expect("list")
            .is_empty()
    );
    // Destruction is one-way: bringing the key back is refused even outside the store.
    let revive = db
        .exec_as_app(&format!(
            "UPDATE keys SET destroyed_at_ms = NULL WHERE key_id = '{}'",
            key.key_id
        ))
        .await;
    assert!(revive.is_err(), "un-destroying a key must fail: {revive:?}");
});

on_both!(store_ticket_claimed_once, |db| {
    let store = db.store().await;
    store
        .insert_ticket(&ticket("t-1", "alice", T0))
        .await
        .expect("insert");
    assert!(store.claim_ticket("t-1", T0 + 1).await.expect("claim"));
    assert!(
        !store
            .claim_ticket("t-1", T0 + 2)
            .await
            .expect("second claim")
    );
    assert_eq!(
        store.ticket_used_at("alice", "t-1").await.expect("read"),
        Some(Some(T0 + 1))
    );
    assert_eq!(
        store.ticket_used_at("bob", "t-1").await.expect("read"),
        None,
        "not bob's"
    );

    store
        .insert_ticket(&ticket("t-2", "alice", T0))
        .await
        .expect("insert");
    assert!(
        !store
            .claim_ticket("t-2", T0 + 60_000)
            .await
            .expect("expired"),
        "expired at expiry"
    );
    assert!(!store.claim_ticket("no-such", T0).await.expect("unknown"));
    assert!(
        store
            .insert_ticket(&ticket("t-1", "alice", T0))
            .await
            .is_err(),
        "ids are unique"
    );
    let mut short = ticket("t-3", "alice", T0);
    short.payload_sha384.pop();
    assert!(matches!(
        store.insert_ticket(&short).await,
        Err(StoreError::InvalidInput(_))
    ));

    // A used ticket cannot be made usable again, even outside the store.
    let reset = db
        .exec_as_app("UPDATE tickets SET used_at_ms = NULL WHERE ticket_id = 't-1'")
        .await;
    assert!(reset.is_err(), "resetting used_at must fail: {reset:?}");
});

on_both!(store_ticket_claim_races_across_two_stores, |db| {
    // Two stores are two pools, as two api processes would have.
    let (one, two) = (db.store().await, db.store().await);
    for round in 0..3 {
        let id = format!("race-{round}");
        one.insert_ticket(&ticket(&id, "alice", T0))
            .await
            .expect("insert");
        let mut claims = tokio::task::JoinSet::new();
        for i in 0..50 {
            let store = if i % 2 == 0 { one.clone() } else { two.clone() };
            let id = id.clone();
            claims.spawn(async move { store.claim_ticket(&id, T0 + 10).await.expect("claim") });
        }
        let wins = claims
            .join_all()
            .await
            .into_iter()
            .filter(|won| *won)
            .count();
        assert_eq!(wins, 1, "exactly one of 50 concurrent claims wins");
    }
});

on_both!(store_idempotency_lifecycle, |db| {
    let (one, two) = (db.store().await, db.store().await);
    let (h1, h2) = (vec![1u8; 32], vec![2u8; 32]);
    assert_eq!(
        one.idempotency_begin("alice", "k1", &h1, T0)
            .await
            .expect("begin"),
        IdempotencyBegin::Started
    );
    assert_eq!(
        two.idempotency_begin("alice", "k1", &h1, T0 + 1)
            .await
            .expect("begin"),
        IdempotencyBegin::InProgress
    );
    assert_eq!(
        two.idempotency_begin("alice", "k1", &h2, T0 + 1)
            .await
            .expect("begin"),
        IdempotencyBegin::Mismatch
    );
    // Keys are scoped to the caller.
    assert_eq!(
        two.idempotency_begin("bob", "k1", &h2, T0 + 1)
            .await
            .expect("begin"),
        IdempotencyBegin::Started
    );

    one.idempotency_complete("alice", "k1", 201, b"{\"id\":1}", T0 + 10)
        .await
        .expect("complete");
    let replay = IdempotencyBegin::Replay {
        status: 201,
        body: b"{\"id\":1}".to_vec(),
    };
    assert_eq!(
        two.idempotency_begin("alice", "k1", &h1, T0 + 20)
            .await
            .expect("begin"),
        replay,
        "other process replays"
    );
    assert_eq!(
        one.idempotency_begin("alice", "k1", &h1, T0 + 10 + IDEMPOTENCY_REPLAY_MS)
            .await
            .expect("begin"),
        replay,
        "still inside the window"
    );
    let late = T0 + 11 + IDEMPOTENCY_REPLAY_MS;
    assert_eq!(
        one.idempotency_begin("alice", "k1", &h1, late)
            .await
            .expect("begin"),
        IdempotencyBegin::Expired
    );
    assert_eq!(
        one.idempotency_begin("alice", "k1", &h2, T0 + 23 * 3_600_000)
            .await
            .expect("begin"),
        IdempotencyBegin::Mismatch,
        "a different body is caught for at least 24 hours"
    );
    assert_eq!(
        one.idempotency_begin("alice", "k1", &h2, T0 + IDEMPOTENCY_RETAIN_MS + 1)
            .await
            .expect("begin"),
        IdempotencyBegin::Started,
        "after retention the key starts afresh"
    );

    // An attempt that died while running (no completion, no release) expires after the
    // lease: its effect is unknown, so the key is never run a second time.
    assert_eq!(
        one.idempotency_begin("alice", "k3", &h1, T0)
            .await
            .expect("begin"),
        IdempotencyBegin::Started
    );
    assert_eq!(
        two.idempotency_begin("alice", "k3", &h1, T0 + IDEMPOTENCY_RUNNING_LEASE_MS)
            .await
            .expect("begin"),
        IdempotencyBegin::InProgress
    );
    assert_eq!(
        two.idempotency_begin("alice", "k3", &h1, T0 + IDEMPOTENCY_RUNNING_LEASE_MS + 1)
            .await
            .expect("begin"),
        IdempotencyBegin::Expired
    );

    // Released: the first attempt failed before any side effect, so the retry runs.
    assert_eq!(
        one.idempotency_begin("alice", "k2", &h1, T0)
            .await
            .expect("begin"),
        IdempotencyBegin::Started
    );
    one.idempotency_release("alice", "k2")
        .await
        .expect("release");
    assert!(matches!(
        one.idempotency_complete("alice", "k2", 200, b"", T0).await,
        Err(StoreError::IdempotencyNotRunning)
    ));
    assert_eq!(
        two.idempotency_begin("alice", "k2", &h1, T0 + 1)
            .await
            .expect("begin"),
        IdempotencyBegin::Started
    );
    // Releasing a completed record does nothing.
    two.idempotency_complete("alice", "k2", 204, b"", T0 + 2)
        .await
        .expect("complete");
    two.idempotency_release("alice", "k2")
        .await
        .expect("release");
    assert_eq!(
        one.idempotency_begin("alice", "k2", &h1, T0 + 3)
            .await
            .expect("begin"),
        IdempotencyBegin::Replay {
            status: 204,
            body: vec![]
        }
    );
});

on_both!(store_backups_latest_wins, |db| {
    let store = db.store().await;
    assert!(store.latest_backup().await.expect("latest").is_none());
    let first = store
        .store_backup(b"sealed-1", 1, 1, T0)
        .await
        .expect("store");
    let second = store
        .store_backup(&[0xff; 4096], 2, 2, T0 + 1)
        .await
        .expect("store");
    assert!(second > first);
    let latest = store.latest_backup().await.expect("latest").expect("one");
    assert_eq!(
        (latest.id, latest.key_count, latest.generation),
        (second, 2, 2)
    );
    assert_eq!(latest.blob, vec![0xff; 4096]);
    assert!(
        !format!("{latest:?}").contains("255, 255"),
        "Debug shows no blob bytes"
    );
});
