-- Enclosure api schema, SQLite (the embedded default). Same tables and columns as the
-- PostgreSQL schema; SQLite has no roles or row-level security, so the rules the database
-- itself enforces here are the triggers: append-only audit, chain linkage, one-way state.
-- Times are unix milliseconds, ids TEXT, blobs BLOB.

CREATE TABLE identities (
    id            TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    name          TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (id, owner)
);
CREATE INDEX identities_by_owner ON identities (owner, created_at_ms);

CREATE TABLE keys (
    key_id          TEXT PRIMARY KEY,
    identity_id     TEXT NOT NULL,
    owner           TEXT NOT NULL,
    public_key_der  BLOB NOT NULL,
    key_certificate BLOB NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    destroyed_at_ms INTEGER,
    FOREIGN KEY (identity_id, owner) REFERENCES identities (id, owner)
);
CREATE INDEX keys_by_owner ON keys (owner, key_id);

CREATE TABLE tickets (
    ticket_id      TEXT PRIMARY KEY,
    operation      TEXT NOT NULL CHECK (operation IN ('generate_key', 'sign', 'destroy_key')),
    identity_id    TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    owner          TEXT NOT NULL,
    payload_sha384 BLOB NOT NULL CHECK (length(payload_sha384) = 48),
    issued_at_ms   INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL CHECK (expires_at_ms > issued_at_ms),
    used_at_ms     INTEGER
);
CREATE INDEX tickets_by_expiry ON tickets (expires_at_ms);

CREATE TABLE rate_limits (
    bucket          TEXT NOT NULL,
    window_start_ms INTEGER NOT NULL,
    window_end_ms   INTEGER NOT NULL,
    count           INTEGER NOT NULL,
    PRIMARY KEY (bucket, window_start_ms)
);
CREATE INDEX rate_limits_by_end ON rate_limits (window_end_ms);

CREATE TABLE idempotency (
    caller          TEXT NOT NULL,
    idem_key        TEXT NOT NULL,
    request_hash    BLOB NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('running', 'done')),
    status          INTEGER,
    body            BLOB,
    created_at_ms   INTEGER NOT NULL,
    completed_at_ms INTEGER,
    PRIMARY KEY (caller, idem_key)
);
CREATE INDEX idempotency_by_age ON idempotency (created_at_ms);

CREATE TABLE audit (
    seq         INTEGER PRIMARY KEY CHECK (seq >= 1),
    at_ms       INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    actor_role  TEXT NOT NULL,
    action      TEXT NOT NULL,
    identity_id TEXT,
    key_id      TEXT,
    ticket_id   TEXT,
    outcome     TEXT NOT NULL CHECK (outcome IN ('ok', 'refused', 'error')),
    detail      TEXT,
    prev_hash   BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash        BLOB NOT NULL CHECK (length(hash) = 32)
);
CREATE INDEX audit_by_actor ON audit (actor, seq);

CREATE TABLE backups (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    blob          BLOB NOT NULL,
    key_count     INTEGER NOT NULL,
    generation    INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
);

-- Audit rows are never changed or removed. (SQLite has no TRUNCATE; a DELETE without WHERE
-- fires these row triggers too.)
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit rows are append-only: UPDATE refused');
END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit rows are append-only: DELETE refused');
END;

-- Every inserted row must extend the chain: seq = last seq + 1, prev_hash = last hash
-- (32 zero bytes before the first row).
CREATE TRIGGER audit_link BEFORE INSERT ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit seq does not follow the chain head')
        WHERE NEW.seq <> COALESCE((SELECT MAX(seq) FROM audit), 0) + 1;
    SELECT RAISE(ABORT, 'audit row does not link to the chain head')
        WHERE NEW.prev_hash IS NOT COALESCE((SELECT hash FROM audit WHERE seq = NEW.seq - 1), zeroblob(32));
END;

-- Backups are append-only as well: the latest one is what a restarted enclave imports.
CREATE TRIGGER backups_no_update BEFORE UPDATE ON backups
BEGIN
    SELECT RAISE(ABORT, 'backups are append-only: UPDATE refused');
END;

-- One-way state columns: a key is destroyed once, a ticket used once and only before expiry.
CREATE TRIGGER keys_guard BEFORE UPDATE ON keys
    WHEN OLD.destroyed_at_ms IS NOT NULL OR NEW.destroyed_at_ms IS NULL
        OR NEW.key_id IS NOT OLD.key_id OR NEW.identity_id IS NOT OLD.identity_id
        OR NEW.owner IS NOT OLD.owner OR NEW.public_key_der IS NOT OLD.public_key_der
        OR NEW.key_certificate IS NOT OLD.key_certificate OR NEW.created_at_ms IS NOT OLD.created_at_ms
BEGIN
    SELECT RAISE(ABORT, 'a key may only be marked destroyed, once');
END;

CREATE TRIGGER tickets_guard BEFORE UPDATE ON tickets
    WHEN OLD.used_at_ms IS NOT NULL OR NEW.used_at_ms IS NULL
        OR NEW.used_at_ms >= OLD.expires_at_ms
        OR NEW.ticket_id IS NOT OLD.ticket_id OR NEW.operation IS NOT OLD.operation
        OR NEW.identity_id IS NOT OLD.identity_id OR NEW.key_id IS NOT OLD.key_id
        OR NEW.owner IS NOT OLD.owner OR NEW.payload_sha384 IS NOT OLD.payload_sha384
        OR NEW.issued_at_ms IS NOT OLD.issued_at_ms OR NEW.expires_at_ms IS NOT OLD.expires_at_ms
BEGIN
    SELECT RAISE(ABORT, 'a ticket may only be marked used, once, before it expires');
END;
