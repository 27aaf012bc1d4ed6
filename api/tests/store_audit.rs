//! The audit log of `enclosure_api::store` on SQLite and on PostgreSQL: the hash chain,
//! append-only rows, tamper detection and group commit across two stores.

#[macro_use]
#[path = "store_harness.rs"]
mod harness;

use std::collections::BTreeSet;

use enclosure_api::store::{ChainBreakReason, GENESIS_HASH, StoreError};
use harness::{Kind, TestDb, entry};

const T0: i64 = 1_800_000_000_000;

on_both!(store_audit_chain_verifies_and_scopes_reads, |db| {
    let store = db.store().await;
    assert!(
        store
            .verify_audit_chain()
            .await
            .expect("verify")
            .is_intact()
    );
    assert_eq!(store.audit_head().await.expect("head"), (0, GENESIS_HASH));
    let mut appends = tokio::task::JoinSet::new();
    for i in 0..30 {
        let store = store.clone();
        let actor = if i % 3 == 0 { "bob" } else { "alice" };
        appends.spawn(async move {
            store
                .append_audit(entry(actor, "key.sign", T0 + i))
                .await
                .expect("append")
        });
    }
    let rows = appends.join_all().await;
    let seqs: BTreeSet<i64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=30).collect(), "gapless from 1");

    let report = store.verify_audit_chain().await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.rows_checked, report.last_seq), (30, 30));

    let all = store
        .list_audit("admin-1", true, 0, 1000)
        .await
        .expect("list");
    assert_eq!(all.len(), 30);
    assert_eq!(store.audit_head().await.expect("head"), (30, all[29].hash));
    assert!(
        all.windows(2)
            .all(|w| w[1].prev_hash == w[0].hash && w[1].seq == w[0].seq + 1)
    );
    let mine = store.list_audit("bob", false, 0, 1000).await.expect("list");
    assert_eq!(mine.len(), 10);
    assert!(mine.iter().all(|r| r.actor == "bob"));
    let page = store
        .list_audit("admin-1", true, 10, 5)
        .await
        .expect("list");
    assert_eq!(
        page.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![11, 12, 13, 14, 15]
    );

    let mut bad = entry("alice", "key.sign", T0);
    bad.outcome = "fine".into();
    assert!(matches!(
        store.append_audit(bad).await,
        Err(StoreError::InvalidInput(_))
    ));
    let mut nul = entry("alice", "key.sign", T0);
    nul.detail = Some("a\0b".into());
    assert!(matches!(
        store.append_audit(nul).await,
        Err(StoreError::InvalidInput(_))
    ));
    assert_eq!(
        store
            .verify_audit_chain()
            .await
            .expect("verify")
            .rows_checked,
        30
    );
});

on_both!(store_audit_rows_are_append_only, |db| {
    let store = db.store().await;
    for i in 0..3 {
        store
            .append_audit(entry("alice", "identity.create", T0 + i))
            .await
            .expect("append");
    }
    for sql in [
        "UPDATE audit SET detail = 'forged' WHERE seq = 2",
        "DELETE FROM audit WHERE seq = 3",
        "DELETE FROM audit",
    ] {
        let r = db.exec_as_app(sql).await;
        assert!(r.is_err(), "{sql} must fail: {r:?}");
    }
    if db.kind == Kind::Postgres {
        let r = db.exec_as_app("TRUNCATE audit").await;
        assert!(r.is_err(), "TRUNCATE must fail: {r:?}");
    }
    // A row that does not extend the chain is refused by the database too.
    let forged = "INSERT INTO audit (seq, at_ms, actor, actor_role, action, outcome, prev_hash, hash) \
                  VALUES (9, 0, 'x', 'x', 'x', 'ok', X'00000000000000000000000000000000000000000000000000000000000000AA', \
                  X'00000000000000000000000000000000000000000000000000000000000000BB')";
    let forged = if db.kind == Kind::Postgres {
        forged.replace("X'", "'\\x")
    } else {
        forged.to_string()
    };
    let r = db.exec_as_app(&forged).await;
    assert!(r.is_err(), "a row with a gap must fail: {r:?}");
    let report = store.verify_audit_chain().await.expect("verify");
    assert!(report.is_intact() && report.rows_checked == 3, "{report:?}");
});

on_both!(store_audit_tampering_is_reported, |db| {
    let store = db.store().await;
    for i in 0..6 {
        store
            .append_audit(entry("alice", "key.sign", T0 + i))
            .await
            .expect("append");
    }
    db.tamper("UPDATE audit SET detail = 'nothing to see' WHERE seq = 3")
        .await;
    let report = store.verify_audit_chain().await.expect("verify");
    let broken = report.first_broken.expect("tampering detected");
    assert_eq!(
        (broken.seq, broken.reason),
        (3, ChainBreakReason::HashMismatch)
    );
    assert_eq!(report.rows_checked, 3);
});

on_both!(store_audit_deletion_is_reported, |db| {
    let store = db.store().await;
    for i in 0..5 {
        store
            .append_audit(entry("alice", "key.sign", T0 + i))
            .await
            .expect("append");
    }
    db.tamper("DELETE FROM audit WHERE seq = 2").await;
    let broken = store
        .verify_audit_chain()
        .await
        .expect("verify")
        .first_broken
        .expect("gap detected");
    assert_eq!(
        (broken.seq, broken.reason),
        (3, ChainBreakReason::Gap { expected: 2 })
    );
});

on_both!(store_audit_appends_from_two_stores_interleave, |db| {
    let (one, two) = (db.store().await, db.store().await);
    let mut appends = tokio::task::JoinSet::new();
    for i in 0..400 {
        let store = if i % 2 == 0 { one.clone() } else { two.clone() };
        appends.spawn(async move {
            store
                .append_audit(entry("alice", "key.sign", T0 + i))
                .await
                .expect("append")
        });
    }
    let seqs: BTreeSet<i64> = appends.join_all().await.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=400).collect(),
        "every append got its own seq, none lost"
    );
    let report = two.verify_audit_chain().await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.rows_checked, 400);
});

on_both!(store_audit_verifies_while_appends_continue, |db| {
    let store = db.store().await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                store
                    .append_audit(entry("alice", "key.sign", T0 + i))
                    .await
                    .expect("append");
            }
        })
    };
    for _ in 0..10 {
        let report = store.verify_audit_chain().await.expect("verify");
        assert!(report.is_intact(), "{report:?}");
    }
    writer.await.expect("writer");
    assert_eq!(
        store
            .verify_audit_chain()
            .await
            .expect("verify")
            .rows_checked,
        300
    );
});

on_both!(store_audit_deleted_tail_is_reported, |db| {
    let store = db.store().await;
    for i in 0..5 {
        store
            .append_audit(entry("alice", "key.sign", T0 + i))
            .await
            .expect("append");
    }
    // Rows 1..3 still chain perfectly; only the recorded head shows what is gone.
    db.tamper("DELETE FROM audit WHERE seq >= 4").await;
    let report = store.verify_audit_chain().await.expect("verify");
    let broken = report.first_broken.expect("missing tail detected");
    assert_eq!(
        (broken.seq, broken.reason),
        (4, ChainBreakReason::MissingTail { head_seq: 5 })
    );
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_sqlite_upgrade_seeds_the_chain_head_from_existing_rows() {
    use sha2::{Digest, Sha256};
    use sqlx::Executor;

    // A database at schema version 1 (before `audit_head` existed), holding three rows.
    let db = TestDb::new(Kind::Sqlite).await;
    std::fs::create_dir_all(db.sqlite_path().parent().expect("dir")).expect("mkdir");
    let url = format!("sqlite://{}?mode=rwc", db.sqlite_path().display());
    let mut raw = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("open");
    let v1 = include_str!("../migrations/sqlite/0001_init.sql");
    raw.execute(v1).await.expect("schema v1");
    raw.execute(
        "CREATE TABLE enclosure_migrations (version BIGINT PRIMARY KEY, checksum BYTEA NOT NULL)",
    )
    .await
    .expect("migrations table");
    sqlx::query("INSERT INTO enclosure_migrations VALUES (1, ?)")
        .bind(Sha256::digest(v1.as_bytes()).to_vec())
        .execute(&mut raw)
        .await
        .expect("v1 recorded");
    let mut prev = GENESIS_HASH;
    for seq in 1..=3i64 {
        let e = entry("alice", "key.sign", T0 + seq);
        let hash = enclosure_api::store::audit_hash(&prev, seq, &e);
        sqlx::query(
            "INSERT INTO audit (seq, at_ms, actor, actor_role, action, identity_id, outcome, \
             prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(seq)
        .bind(e.at_ms)
        .bind(&e.actor)
        .bind(&e.actor_role)
        .bind(&e.action)
        .bind(&e.identity_id)
        .bind(&e.outcome)
        .bind(prev.to_vec())
        .bind(hash.to_vec())
        .execute(&mut raw)
        .await
        .expect("row");
        prev = hash;
    }
    drop(raw);

    let store = db.store().await;
    assert_eq!(store.audit_head().await.expect("head"), (3, prev));
    let next = store
        .append_audit(entry("alice", "key.sign", T0 + 4))
        .await
        .expect("append");
    assert_eq!((next.seq, next.prev_hash), (4, prev));
    let report = store.verify_audit_chain().await.expect("verify");
    assert!(report.is_intact() && report.rows_checked == 4, "{report:?}");
}
