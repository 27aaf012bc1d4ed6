-- Enclosure api schema, PostgreSQL. Runs as the owner role (DatabaseConfig::Postgres.owner_url).
-- Times are unix milliseconds (BIGINT), ids TEXT, blobs BYTEA.
-- The app role `enclosure_app` gets exactly the privileges listed at the end.

CREATE TABLE identities (
    id            TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    name          TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    -- Lets keys reference (id, owner), so a key's owner is always its identity's owner.
    UNIQUE (id, owner)
);
CREATE INDEX identities_by_owner ON identities (owner, created_at_ms);

CREATE TABLE keys (
    key_id          TEXT PRIMARY KEY,
    identity_id     TEXT NOT NULL,
    owner           TEXT NOT NULL,
    public_key_der  BYTEA NOT NULL,
    key_certificate BYTEA NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    destroyed_at_ms BIGINT,
    FOREIGN KEY (identity_id, owner) REFERENCES identities (id, owner)
);
CREATE INDEX keys_by_owner ON keys (owner, key_id);

CREATE TABLE tickets (
    ticket_id      TEXT PRIMARY KEY,
    operation      TEXT NOT NULL CHECK (operation IN ('generate_key', 'sign', 'destroy_key')),
    identity_id    TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    owner          TEXT NOT NULL,
    payload_sha384 BYTEA NOT NULL CHECK (length(payload_sha384) = 48),
    issued_at_ms   BIGINT NOT NULL,
    expires_at_ms  BIGINT NOT NULL CHECK (expires_at_ms > issued_at_ms),
    used_at_ms     BIGINT
);
CREATE INDEX tickets_by_expiry ON tickets (expires_at_ms);

CREATE TABLE rate_limits (
    bucket          TEXT NOT NULL,
    window_start_ms BIGINT NOT NULL,
    window_end_ms   BIGINT NOT NULL,
    count           BIGINT NOT NULL,
    PRIMARY KEY (bucket, window_start_ms)
);
CREATE INDEX rate_limits_by_end ON rate_limits (window_end_ms);

CREATE TABLE idempotency (
    caller          TEXT NOT NULL,
    idem_key        TEXT NOT NULL,
    request_hash    BYTEA NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('running', 'done')),
    status          BIGINT,
    body            BYTEA,
    created_at_ms   BIGINT NOT NULL,
    completed_at_ms BIGINT,
    PRIMARY KEY (caller, idem_key)
);
CREATE INDEX idempotency_by_age ON idempotency (created_at_ms);

CREATE TABLE audit (
    seq         BIGINT PRIMARY KEY CHECK (seq >= 1),
    at_ms       BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    actor_role  TEXT NOT NULL,
    action      TEXT NOT NULL,
    identity_id TEXT,
    key_id      TEXT,
    ticket_id   TEXT,
    outcome     TEXT NOT NULL CHECK (outcome IN ('ok', 'refused', 'error')),
    detail      TEXT,
    prev_hash   BYTEA NOT NULL CHECK (length(prev_hash) = 32),
    hash        BYTEA NOT NULL CHECK (length(hash) = 32)
);
CREATE INDEX audit_by_actor ON audit (actor, seq);

-- The chain head: one row, locked once per appended batch. Appenders in every api process
-- serialise on its row lock, and the link trigger below keeps it equal to the last row.
CREATE TABLE audit_head (
    id   BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    seq  BIGINT NOT NULL,
    hash BYTEA NOT NULL CHECK (length(hash) = 32)
);
INSERT INTO audit_head (id, seq, hash) VALUES (TRUE, 0, decode(repeat('00', 32), 'hex'));

CREATE TABLE backups (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    blob          BYTEA NOT NULL,
    key_count     BIGINT NOT NULL,
    generation    BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- Audit rows are never changed or removed, whoever asks: the app role lacks the privileges,
-- and these triggers refuse even the owner. (Only a superuser who disables triggers, or
-- sets session_replication_role, gets past them; the hash chain then shows the change.)
CREATE FUNCTION enclosure_audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit rows are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    FOR EACH ROW EXECUTE FUNCTION enclosure_audit_refuse();
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION enclosure_audit_refuse();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION enclosure_audit_refuse();

-- Every inserted row must extend the chain: seq = head + 1 and prev_hash = head hash.
-- Runs as the owner so it may move the head, which the app role cannot write.
CREATE FUNCTION enclosure_audit_link() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    head_seq  BIGINT;
    head_hash BYTEA;
BEGIN
    SELECT h.seq, h.hash INTO head_seq, head_hash FROM audit_head h WHERE h.id FOR UPDATE;
    IF NEW.seq <> head_seq + 1 THEN
        RAISE EXCEPTION 'audit seq % does not follow the chain head %', NEW.seq, head_seq
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.prev_hash <> head_hash THEN
        RAISE EXCEPTION 'audit row % does not link to the chain head', NEW.seq
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_link BEFORE INSERT ON audit
    FOR EACH ROW EXECUTE FUNCTION enclosure_audit_link();

-- Locks the chain head for the rest of the caller's transaction and returns it. The app role
-- may call this but has no UPDATE on audit_head, so it cannot move the head itself.
CREATE FUNCTION enclosure_audit_lock_head(OUT seq BIGINT, OUT hash BYTEA) LANGUAGE sql
    SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT h.seq, h.hash FROM audit_head h WHERE h.id FOR UPDATE
$$;
REVOKE ALL ON FUNCTION enclosure_audit_lock_head() FROM PUBLIC;

-- Reads the chain head without locking it, for verification: rows up to the head must all
-- be present, so a deleted tail shows even though the rows before it still chain.
CREATE FUNCTION enclosure_audit_head(OUT seq BIGINT, OUT hash BYTEA) LANGUAGE sql STABLE
    SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT h.seq, h.hash FROM audit_head h WHERE h.id
$$;
REVOKE ALL ON FUNCTION enclosure_audit_head() FROM PUBLIC;
REVOKE ALL ON FUNCTION enclosure_audit_link() FROM PUBLIC;

-- One-way state columns: a key is destroyed once, a ticket used once and only before it
-- expires. The app role may update only these columns; the triggers police the transition.
CREATE FUNCTION enclosure_keys_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.destroyed_at_ms IS NOT NULL OR NEW.destroyed_at_ms IS NULL
        OR (NEW.key_id, NEW.identity_id, NEW.owner, NEW.public_key_der, NEW.key_certificate, NEW.created_at_ms)
           IS DISTINCT FROM
           (OLD.key_id, OLD.identity_id, OLD.owner, OLD.public_key_der, OLD.key_certificate, OLD.created_at_ms)
    THEN
        RAISE EXCEPTION 'a key may only be marked destroyed, once'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER keys_guard BEFORE UPDATE ON keys
    FOR EACH ROW EXECUTE FUNCTION enclosure_keys_guard();

CREATE FUNCTION enclosure_tickets_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.used_at_ms IS NOT NULL OR NEW.used_at_ms IS NULL
        OR NEW.used_at_ms >= OLD.expires_at_ms
        OR (NEW.ticket_id, NEW.operation, NEW.identity_id, NEW.key_id, NEW.owner,
            NEW.payload_sha384, NEW.issued_at_ms, NEW.expires_at_ms)
           IS DISTINCT FROM
           (OLD.ticket_id, OLD.operation, OLD.identity_id, OLD.key_id, OLD.owner,
            OLD.payload_sha384, OLD.issued_at_ms, OLD.expires_at_ms)
    THEN
        RAISE EXCEPTION 'a ticket may only be marked used, once, before it expires'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER tickets_guard BEFORE UPDATE ON tickets
    FOR EACH ROW EXECUTE FUNCTION enclosure_tickets_guard();

-- Row-level security. Every owner-scoped store call runs in a transaction that first sets
-- enclosure.user (the JWT sub) and enclosure.role ('user', 'admin', or 'system' for the
-- store's own chain writer, verifier and ticket claims). FORCE makes the policies bind the
-- table owner too; only superusers and BYPASSRLS roles are exempt.
ALTER TABLE identities ENABLE ROW LEVEL SECURITY;
ALTER TABLE identities FORCE ROW LEVEL SECURITY;
CREATE POLICY identities_owner ON identities
    USING (owner = current_setting('enclosure.user', true))
    WITH CHECK (owner = current_setting('enclosure.user', true));

ALTER TABLE keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE keys FORCE ROW LEVEL SECURITY;
CREATE POLICY keys_owner ON keys
    USING (owner = current_setting('enclosure.user', true))
    WITH CHECK (owner = current_setting('enclosure.user', true));

ALTER TABLE tickets ENABLE ROW LEVEL SECURITY;
ALTER TABLE tickets FORCE ROW LEVEL SECURITY;
CREATE POLICY tickets_owner ON tickets
    USING (owner = current_setting('enclosure.user', true)
           OR current_setting('enclosure.role', true) = 'system')
    WITH CHECK (owner = current_setting('enclosure.user', true)
                OR current_setting('enclosure.role', true) = 'system');

ALTER TABLE audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_read ON audit FOR SELECT
    USING (actor = current_setting('enclosure.user', true)
           OR current_setting('enclosure.role', true) IN ('admin', 'system'));
-- Refusals are recorded for any actor, so inserts are not owner-bound; the link trigger
-- decides whether a row may join the chain.
CREATE POLICY audit_append ON audit FOR INSERT WITH CHECK (true);

-- The app role. Created when the migrating role may create roles; otherwise an operator
-- creates it (LOGIN NOSUPERUSER NOBYPASSRLS) and re-runs this migration's grants.
DO $$
DECLARE
    may_create BOOLEAN;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'enclosure_app') THEN
        SELECT rolsuper OR rolcreaterole INTO may_create FROM pg_roles WHERE rolname = current_user;
        IF may_create THEN
            BEGIN
                CREATE ROLE enclosure_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                -- Another database's migration created it at the same moment.
                NULL;
            END;
        ELSE
            RAISE WARNING 'role enclosure_app is missing and % may not create it', current_user;
        END IF;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'enclosure_app') THEN
        -- PUBLIC usually holds both already; a migrating role that does not own the
        -- database or schema may not grant them, which is worth a warning, not a failure.
        BEGIN
            EXECUTE format('GRANT CONNECT ON DATABASE %I TO enclosure_app', current_database());
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO enclosure_app', current_schema());
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'could not grant CONNECT/USAGE to enclosure_app: %', SQLERRM;
        END;
        GRANT SELECT, INSERT ON identities TO enclosure_app;
        GRANT SELECT, INSERT ON keys TO enclosure_app;
        GRANT UPDATE (destroyed_at_ms) ON keys TO enclosure_app;
        -- DELETE only purges old tickets; a missing ticket can never be claimed, so it fails closed.
        GRANT SELECT, INSERT, DELETE ON tickets TO enclosure_app;
        GRANT UPDATE (used_at_ms) ON tickets TO enclosure_app;
        GRANT SELECT, INSERT, UPDATE, DELETE ON rate_limits TO enclosure_app;
        GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency TO enclosure_app;
        GRANT SELECT, INSERT ON audit TO enclosure_app;
        GRANT SELECT, INSERT ON backups TO enclosure_app;
        GRANT EXECUTE ON FUNCTION enclosure_audit_lock_head() TO enclosure_app;
        GRANT EXECUTE ON FUNCTION enclosure_audit_head() TO enclosure_app;
    END IF;
END
$$;
