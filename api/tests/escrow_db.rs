//! What the database itself enforces for escrow, below the services: the transition triggers
//! (every (from, to) pair of every machine, SQLite and PostgreSQL), and on PostgreSQL the app
//! role's privileges and row-level security.

#[macro_use]
#[path = "store_harness.rs"]
mod harness;
#[path = "escrow_fixtures.rs"]
mod fixtures;

use enclosure_policy::escrow::{
    MilestoneState, PaymentState, RoomState, milestone_pairs, payment_pairs, room_pairs,
};
use fixtures::*;
use harness::{Kind, TestDb, visible};
use sqlx::{Connection, Executor, PgConnection, Row, SqliteConnection};

/// A connection that bypasses everything but triggers: the PostgreSQL superuser (who owns
/// the tables here) or the SQLite file itself.
enum Raw {
    Pg(PgConnection),
    Lite(SqliteConnection),
}

impl Raw {
    async fn open(db: &TestDb) -> Raw {
        match db.kind {
            Kind::Postgres => Raw::Pg(db.pg_superuser().await),
            Kind::Sqlite => Raw::Lite(db.sqlite_raw().await),
        }
    }

    async fn exec(&mut self, sql: &str) -> Result<u64, sqlx::Error> {
        match self {
            Raw::Pg(c) => c.execute(sql).await.map(|r| r.rows_affected()),
            Raw::Lite(c) => c.execute(sql).await.map(|r| r.rows_affected()),
        }
    }

    /// Inserts rows in any state, past the initial-state triggers: PostgreSQL in replica
    /// mode (triggers off for this statement only); SQLite without those insert triggers
    /// (this test database only).
    async fn insert_any_state(&mut self, sql: &str) {
        match self {
            Raw::Pg(c) => {
                c.execute("SET session_replication_role = replica")
                    .await
                    .expect("replica");
                c.execute(sql).await.expect("insert");
                c.execute("SET session_replication_role = origin")
                    .await
                    .expect("origin");
            }
            Raw::Lite(c) => {
                c.execute(
                    "DROP TRIGGER IF EXISTS escrow_rooms_initial; \
                     DROP TRIGGER IF EXISTS escrow_milestones_initial; \
                     DROP TRIGGER IF EXISTS escrow_payments_initial;",
                )
                .await
                .expect("drop insert triggers");
                c.execute(sql).await.expect("insert");
            }
        }
    }
}

fn room_sql(id: &str, state: &str) -> String {
    format!(
        "INSERT INTO escrow_rooms (id, title, client, freelancer, currency, platform_fee_bps, \
         inspection_period_ms, max_revisions, state, client_accepted_at_ms, \
         freelancer_accepted_at_ms, created_at_ms, updated_at_ms, version) VALUES \
         ('{id}', 't', 'alice', 'bob', 'EUR', 0, 1000, 1, '{state}', 1, 1, 1, 1, 0)"
    )
}

fn milestone_sql(id: &str, room: &str, position: usize, state: &str) -> String {
    format!(
        "INSERT INTO escrow_milestones (id, room_id, position, title, price_minor, \
         funding_deadline_ms, delivery_deadline_ms, state, revisions_used, client_cancelled, \
         freelancer_cancelled, inspection_ends_ms, updated_at_ms, version) VALUES \
         ('{id}', '{room}', {position}, 't', 100, 10, 20, '{state}', 0, 0, 0, NULL, 1, 0)"
    )
}

fn payment_sql(id: &str, milestone: &str, room: &str, state: &str) -> String {
    format!(
        "INSERT INTO escrow_payments (id, milestone_id, room_id, provider, provider_payment_id, \
         amount_minor, currency, state, created_at_ms, updated_at_ms, version) VALUES \
         ('{id}', '{milestone}', '{room}', 'sandbox', '{id}', 100, 'EUR', '{state}', 1, 1, 0)"
    )
}

on_both!(
    escrow_db_triggers_refuse_every_pair_not_in_the_policy,
    |db| {
        let _store = db.store().await;
        let mut raw = Raw::open(&db).await;
        // One active room holds every milestone and payment under test.
        raw.insert_any_state(&room_sql("r-main", "active")).await;
        let mut position = 0;
        let mut checked = 0;

        let rooms = room_pairs();
        for &from in RoomState::ALL {
            for &to in RoomState::ALL {
                if from == to {
                    continue;
                }
                let id = format!("r-{from}-{to}");
                raw.insert_any_state(&room_sql(&id, from.as_str())).await;
                let r = raw
                .exec(&format!(
                    "UPDATE escrow_rooms SET state = '{to}', version = version + 1 WHERE id = '{id}'"
                ))
                .await;
                let legal = rooms.contains(&(from.as_str(), to.as_str()));
                assert_eq!(r.is_ok(), legal, "room {from} -> {to}: {r:?}");
                checked += 1;
            }
        }

        let milestones = milestone_pairs();
        for &from in MilestoneState::ALL {
            for &to in MilestoneState::ALL {
                if from == to {
                    continue;
                }
                let id = format!("m-{from}-{to}");
                position += 1;
                raw.insert_any_state(&milestone_sql(&id, "r-main", position, from.as_str()))
                    .await;
                let r = raw
                    .exec(&format!(
                        "UPDATE escrow_milestones SET state = '{to}', version = version + 1, \
                     revisions_used = revisions_used + {} WHERE id = '{id}'",
                        i32::from(
                            from == MilestoneState::Validated && to == MilestoneState::Funded
                        )
                    ))
                    .await;
                let legal = milestones.contains(&(from.as_str(), to.as_str()));
                assert_eq!(r.is_ok(), legal, "milestone {from} -> {to}: {r:?}");
                checked += 1;
            }
        }

        let payments = payment_pairs();
        for &from in PaymentState::ALL {
            for &to in PaymentState::ALL {
                if from == to {
                    continue;
                }
                let id = format!("p-{from}-{to}");
                let mid = format!("pm-{from}-{to}");
                position += 1;
                raw.insert_any_state(&milestone_sql(&mid, "r-main", position, "open"))
                    .await;
                raw.insert_any_state(&payment_sql(&id, &mid, "r-main", from.as_str()))
                    .await;
                let r = raw
                .exec(&format!(
                    "UPDATE escrow_payments SET state = '{to}', version = version + 1 WHERE id = '{id}'"
                ))
                .await;
                let legal = payments.contains(&(from.as_str(), to.as_str()));
                assert_eq!(r.is_ok(), legal, "payment {from} -> {to}: {r:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, 4 * 3 + 10 * 9 + 5 * 4);

        // The other rules: fixed terms, forward-only counters, the version, activation,
        // milestones of an inactive room, new rows in a later state.
        raw.insert_any_state(&room_sql("r-draft", "draft")).await;
        raw.insert_any_state(&milestone_sql("m-draft", "r-draft", 0, "open"))
            .await;
        for sql in [
            "UPDATE escrow_rooms SET platform_fee_bps = 1, version = version + 1 WHERE id = 'r-main'",
            "UPDATE escrow_rooms SET title = 'x', version = version + 1 WHERE id = 'r-main'",
            "UPDATE escrow_rooms SET state = 'closed' WHERE id = 'r-main'",
            "UPDATE escrow_milestones SET price_minor = 1, version = version + 1 WHERE id = 'm-open-funded'",
            "UPDATE escrow_milestones SET revisions_used = 5, version = version + 1 WHERE id = 'm-open-expired'",
            "UPDATE escrow_milestones SET state = 'funded', version = version + 1 WHERE id = 'm-draft'",
            "UPDATE escrow_transitions SET to_state = 'transferred'",
            "DELETE FROM escrow_transitions",
        ] {
            let r = raw.exec(sql).await;
            assert!(r.is_err(), "{sql} must be refused: {r:?}");
        }
        let mut strict = Raw::open(&db).await;
        for sql in [
            room_sql("r-born-active", "active"),
            milestone_sql("m-born-funded", "r-main", 999, "funded"),
        ] {
            if db.kind == Kind::Postgres {
                let r = strict.exec(&sql).await;
                assert!(r.is_err(), "{sql}: {r:?}");
            }
        }
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escrow_pg_rls_and_privileges() {
    let db = TestDb::new(Kind::Postgres).await;
    let store = db.store().await;
    let room = active_room(&store, 1).await;
    let mid = room.milestones[0].id.clone();
    fund(&store, &mid).await;
    let mut owner = db.pg_superuser().await;
    owner
        .execute(
            format!(
                "INSERT INTO escrow_artifacts (id, milestone_id, room_id, owner, name, content_type, \
                 size_bytes, sha256, storage_key, created_at_ms) VALUES ('a1', '{mid}', '{}', 'bob', \
                 'logo.svg', 'image/svg+xml', 10, decode(repeat('ab', 32), 'hex'), 'objects/a1', 1)",
                room.id
            )
            .as_str(),
        )
        .await
        .expect("artifact");

    let mut app = db.pg_app().await;
    let tables = [
        "escrow_rooms",
        "escrow_milestones",
        "escrow_payments",
        "escrow_artifacts",
        "escrow_audit_links",
    ];
    for table in tables {
        assert_eq!(
            visible(&mut app, Some("mallory"), "client", table).await,
            0,
            "another user's direct SELECT on {table} returns nothing"
        );
        assert_eq!(visible(&mut app, None, "client", table).await, 0, "{table}");
        assert!(
            visible(&mut app, Some("alice"), "client", table).await >= 1,
            "the client sees {table}"
        );
        assert!(
            visible(&mut app, Some("bob"), "freelancer", table).await >= 1,
            "the freelancer sees {table}"
        );
    }
    // Admins and reviewers see metadata, never artifacts (nor their storage keys).
    assert_eq!(
        visible(&mut app, Some("root"), "admin", "escrow_rooms").await,
        1
    );
    assert_eq!(
        visible(&mut app, Some("root"), "admin", "escrow_artifacts").await,
        0
    );
    assert_eq!(
        visible(&mut app, Some("rita"), "reviewer", "escrow_artifacts").await,
        0
    );
    // A member's role claim must match: alice as a freelancer sees no artifacts.
    assert_eq!(
        visible(&mut app, Some("alice"), "freelancer", "escrow_artifacts").await,
        0
    );
    // Members read the other party's audit rows about their room; strangers do not.
    let bob_rows = |user: &'static str| {
        format!("(SELECT a.seq FROM audit a WHERE a.actor = 'bob' AND '{user}' <> '') AS t")
    };
    assert!(visible(&mut app, Some("alice"), "client", &bob_rows("alice")).await >= 1);
    assert_eq!(
        visible(&mut app, Some("mallory"), "client", &bob_rows("mallory")).await,
        0
    );

    // The app role may not update state (or anything) directly, whoever it claims to be.
    for sql in [
        "UPDATE escrow_rooms SET state = 'closed'",
        "UPDATE escrow_milestones SET state = 'transferred'",
        "UPDATE escrow_payments SET state = 'released'",
        "UPDATE escrow_artifacts SET frozen_at_ms = 1",
        "DELETE FROM escrow_milestones",
        "DELETE FROM escrow_audit_links",
        "INSERT INTO escrow_transitions VALUES ('milestone', 'open', 'transferred')",
    ] {
        let err = db.exec_as_app(sql).await.expect_err(sql);
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{sql}: {err}");
    }
    // Its one way to move state refuses an illegal pair even for the system...
    let mut tx = app.begin().await.expect("begin");
    tx.execute("SELECT set_config('enclosure.user', '', true), set_config('enclosure.role', 'system', true)")
        .await
        .expect("set");
    let seen = current(&store, &mid).await;
    let r = sqlx::query(
        "SELECT enclosure_escrow_move_milestone($1, 'funded', $2, 'transferred', 0, NULL, 0, 0, 1)",
    )
    .bind(&mid)
    .bind(seen.version)
    .fetch_one(&mut *tx)
    .await;
    assert!(r.is_err(), "funded -> transferred: {r:?}");
    tx.rollback().await.expect("rollback");
    // ...and moves nothing for a stranger, even along a legal pair.
    let mut tx = app.begin().await.expect("begin");
    tx.execute("SELECT set_config('enclosure.user', 'mallory', true), set_config('enclosure.role', 'freelancer', true)")
        .await
        .expect("set");
    let moved: i64 = sqlx::query(
        "SELECT enclosure_escrow_move_milestone($1, 'funded', $2, 'submitted', 0, NULL, 0, 0, 1)",
    )
    .bind(&mid)
    .bind(seen.version)
    .fetch_one(&mut *tx)
    .await
    .expect("call")
    .get(0);
    assert_eq!(moved, 0);
    // Payments move for the system only.
    let moved: i64 = sqlx::query("SELECT enclosure_escrow_move_payment(id, state, version, 'released', 1) FROM escrow_payments")
        .fetch_optional(&mut *tx)
        .await
        .expect("call")
        .map(|r| r.get(0))
        .unwrap_or(0);
    assert_eq!(moved, 0);
    tx.rollback().await.expect("rollback");
    assert_eq!(current(&store, &mid).await.state, "funded");
}
