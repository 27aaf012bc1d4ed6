-- Provider webhook events kept as evidence, and the settlement sagas (the swap's payout and
-- refunds), SQLite. See the PostgreSQL twin for the commentary.

CREATE TABLE escrow_provider_events (
    provider            TEXT NOT NULL,
    event_id            TEXT NOT NULL,
    event_type          TEXT NOT NULL,
    provider_payment_id TEXT NOT NULL,
    body_sha256         BLOB NOT NULL CHECK (length(body_sha256) = 32),
    outcome             TEXT NOT NULL CHECK (outcome IN ('applied', 'ignored')),
    detail              TEXT NOT NULL,
    received_at_ms      INTEGER NOT NULL,
    PRIMARY KEY (provider, event_id)
);
CREATE TRIGGER escrow_provider_events_no_update BEFORE UPDATE ON escrow_provider_events
BEGIN
    SELECT RAISE(ABORT, 'escrow_provider_events is append-only');
END;
CREATE TRIGGER escrow_provider_events_no_delete BEFORE DELETE ON escrow_provider_events
BEGIN
    SELECT RAISE(ABORT, 'escrow_provider_events is append-only');
END;

CREATE TABLE escrow_settlements (
    milestone_id       TEXT NOT NULL REFERENCES escrow_milestones (id),
    kind               TEXT NOT NULL CHECK (kind IN ('release', 'refund')),
    room_id            TEXT NOT NULL REFERENCES escrow_rooms (id),
    payment_id         TEXT NOT NULL REFERENCES escrow_payments (id),
    round              INTEGER NOT NULL CHECK (round >= 0),
    step               TEXT NOT NULL CHECK (step IN ('start', 'requested', 'done', 'stalled')),
    amount_minor       INTEGER NOT NULL CHECK (amount_minor >= 0),
    fee_minor          INTEGER NOT NULL CHECK (fee_minor >= 0),
    provider_object_id TEXT,
    attempts           INTEGER NOT NULL CHECK (attempts >= 0),
    last_error         TEXT,
    next_at_ms         INTEGER NOT NULL,
    lease_owner        TEXT,
    lease_until_ms     INTEGER NOT NULL,
    created_at_ms      INTEGER NOT NULL,
    updated_at_ms      INTEGER NOT NULL,
    version            INTEGER NOT NULL CHECK (version >= 0),
    PRIMARY KEY (milestone_id, kind)
);
CREATE INDEX escrow_settlements_due ON escrow_settlements (step, next_at_ms);

-- A saga never goes back: only these step changes, and `done` is final. Amounts are fixed.
CREATE TRIGGER escrow_settlements_guard BEFORE UPDATE ON escrow_settlements
    WHEN NOT (NEW.step = OLD.step
              OR (OLD.step = 'start' AND NEW.step IN ('requested', 'done', 'stalled'))
              OR (OLD.step = 'requested' AND NEW.step IN ('done', 'stalled'))
              OR (OLD.step = 'stalled' AND NEW.step = 'start' AND NEW.round = OLD.round + 1))
        OR OLD.step = 'done'
        OR NEW.milestone_id IS NOT OLD.milestone_id OR NEW.kind IS NOT OLD.kind
        OR NEW.room_id IS NOT OLD.room_id OR NEW.payment_id IS NOT OLD.payment_id
        OR NEW.amount_minor IS NOT OLD.amount_minor OR NEW.fee_minor IS NOT OLD.fee_minor
        OR NEW.created_at_ms IS NOT OLD.created_at_ms
        OR (NEW.round <> OLD.round AND NEW.step <> 'start')
BEGIN
    SELECT RAISE(ABORT, 'illegal settlement change');
END;
CREATE TRIGGER escrow_settlements_no_delete BEFORE DELETE ON escrow_settlements
BEGIN
    SELECT RAISE(ABORT, 'escrow_settlements rows are kept');
END;
