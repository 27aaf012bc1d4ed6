//! PostgreSQL-only rules of `enclosure_api::store`: row-level security, the app role's
//! privileges, and triggers that bind even the table owner.

#[path = "store_harness.rs"]
mod harness;

use enclosure_api::store::{DatabaseConfig, KeyRecord, Store, StoreError};
use harness::{Kind, TestDb, entry, ticket, visible};
use sqlx::{Connection, Executor, Row};

const T0: i64 = 1_800_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_pg_rls_hides_other_owners_rows() {
    let db = TestDb::new(Kind::Postgres).await;
    let store = db.store().await;
    let identity = store
        .create_identity("alice", "a", T0)
        .await
        .expect("identity");
    store
        .insert_key(&KeyRecord {
            key_id: "k-alice".into(),
            identity_id: identity.id.clone(),
            owner: "alice".into(),
            public_key_der: vec![1],
            key_certificate: vec![2],
            created_at_ms: T0,
            destroyed_at_ms: None,
        })
        .await
        .expect("key");
    store
        .insert_ticket(&ticket("t-alice", "alice", T0))
        .await
        .expect("ticket");
    store
        .append_audit(entry("alice", "key.create", T0))
        .await
        .expect("audit");
    store
        .append_audit(entry("bob", "key.sign", T0))
        .await
        .expect("audit");

    let mut app = db.pg_app().await;
    for table in ["identities", "keys", "tickets"] {
        assert_eq!(
            visible(&mut app, Some("alice"), "user", table).await,
            1,
            "alice sees her {table}"
        );
        assert_eq!(
            visible(&mut app, Some("bob"), "user", table).await,
            0,
            "bob cannot see alice's {table}"
        );
        assert_eq!(
            visible(&mut app, None, "user", table).await,
            0,
            "nobody set: no {table} rows"
        );
    }
    assert_eq!(
        visible(&mut app, Some("bob"), "user", "audit").await,
        1,
        "bob sees his own audit row"
    );
    assert_eq!(visible(&mut app, Some("carol"), "user", "audit").await, 0);
    assert_eq!(
        visible(&mut app, Some("carol"), "admin", "audit").await,
        2,
        "admins see all"
    );

    // Bob cannot write rows in alice's name either.
    let mut tx = app.begin().await.expect("begin");
    tx.execute("SELECT set_config('enclosure.user', 'bob', true)")
        .await
        .expect("set");
    let r = tx
        .execute(
            "INSERT INTO identities (id, owner, name, created_at_ms) VALUES ('x', 'alice', 'n', 0)",
        )
        .await;
    assert!(
        r.is_err(),
        "RLS WITH CHECK refuses a row for another owner: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_pg_app_role_has_only_the_privileges_it_needs() {
    let db = TestDb::new(Kind::Postgres).await;
    let store = db.store().await;
    store
        .create_identity("alice", "a", T0)
        .await
        .expect("identity");
    store
        .append_audit(entry("alice", "identity.create", T0))
        .await
        .expect("audit");

    let mut app = db.pg_app().await;
    let row =
        sqlx::query("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut app)
            .await
            .expect("role");
    assert_eq!(
        (row.get::<bool, _>(0), row.get::<bool, _>(1)),
        (false, false)
    );

    for sql in [
        "UPDATE audit SET detail = 'x'",
        "DELETE FROM audit",
        "TRUNCATE audit",
        "UPDATE audit_head SET seq = 0",
        "UPDATE identities SET name = 'renamed'",
        "DELETE FROM identities",
        "UPDATE keys SET owner = 'bob'",
        "UPDATE tickets SET expires_at_ms = 0",
        "DELETE FROM backups",
        "SELECT * FROM enclosure_migrations",
    ] {
        let err = db.exec_as_app(sql).await.expect_err(sql);
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(
            code.as_deref(),
            Some("42501"),
            "{sql}: permission denied expected, got {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_pg_audit_triggers_bind_the_owner_too() {
    let db = TestDb::new(Kind::Postgres).await;
    let store = db.store().await;
    store
        .append_audit(entry("alice", "identity.create", T0))
        .await
        .expect("audit");
    // The superuser owns the tables here and bypasses privileges and RLS, but not triggers.
    let mut owner = db.pg_superuser().await;
    for sql in [
        "UPDATE audit SET detail = 'x'",
        "DELETE FROM audit",
        "TRUNCATE audit",
    ] {
        let r = owner.execute(sql).await;
        assert!(r.is_err(), "{sql} as owner must fail: {r:?}");
    }
    assert!(
        store
            .verify_audit_chain()
            .await
            .expect("verify")
            .is_intact()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_pg_unreachable_server_is_a_connect_error() {
    let cfg = DatabaseConfig::Postgres {
        url: "postgres://enclosure_app:secret-pw@127.0.0.1:1/none".into(),
        owner_url: None,
    };
    let err = Store::connect(&cfg)
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(err, StoreError::Connect(_)), "{err:?}");
    assert!(!err.to_string().contains("secret-pw") && !format!("{cfg:?}").contains("secret-pw"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_pg_two_databases_migrate_concurrently() {
    // Migrations create the cluster-wide app role when missing; databases migrating at the
    // same moment must not trip over each other.
    let (a, b) = tokio::join!(TestDb::new(Kind::Postgres), TestDb::new(Kind::Postgres));
    let (ca, cb) = (a.config(), b.config());
    let (sa, sb) = tokio::join!(Store::connect(&ca), Store::connect(&cb));
    sa.expect("first").ping().await.expect("ping");
    sb.expect("second").ping().await.expect("ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_pg_failed_group_commit_leaves_no_trace() {
    let db = TestDb::new(Kind::Postgres).await;
    let store = db.store().await;
    store
        .append_audit(entry("alice", "a", T0))
        .await
        .expect("append");
    store
        .insert_ticket(&ticket("t-1", "alice", T0))
        .await
        .expect("ticket");
    // Make the next batch fail inside its transaction: the app may no longer insert audit rows.
    let mut owner = db.pg_superuser().await;
    owner
        .execute("REVOKE INSERT ON audit FROM enclosure_app")
        .await
        .expect("revoke");
    let (claim, append) = tokio::join!(
        store.claim_ticket("t-1", T0 + 1),
        store.append_audit(entry("alice", "b", T0 + 1))
    );
    assert!(
        matches!(append, Err(StoreError::GroupCommit(_))),
        "{append:?}"
    );
    // The claim may have shared the failed batch (then it failed too) or run alone before it.
    let claimed_alone = matches!(claim, Ok(true));
    owner
        .execute("GRANT INSERT ON audit TO enclosure_app")
        .await
        .expect("grant");
    let row = store
        .append_audit(entry("alice", "c", T0 + 2))
        .await
        .expect("append");
    assert_eq!(row.seq, 2, "the failed batch left no seq behind");
    assert_eq!(
        store.claim_ticket("t-1", T0 + 3).await.expect("claim"),
        !claimed_alone,
        "a claim in a failed batch is not recorded"
    );
    assert!(
        store
            .verify_audit_chain()
            .await
            .expect("verify")
            .is_intact()
    );
}
