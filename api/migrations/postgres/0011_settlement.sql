-- Provider webhook events kept as evidence, and the settlement sagas (the swap's payout and
-- refunds), PostgreSQL.
--
-- Every verified webhook event id is recorded once, forever, with what was done about it:
-- redeliveries are recognised, and the record is evidence of what the provider told us.
-- A settlement is one persisted saga per milestone and kind: `release` pays the escrow out
-- to the freelancer (less the fee) when a milestone is accepted; `refund` returns it to the
-- client when a funded milestone is refunded. Each step is written before the next provider
-- call, and every provider call carries an idempotency key derived from (milestone, kind,
-- round), so a saga resumed after a crash has each effect exactly once.

CREATE TABLE escrow_provider_events (
    provider            TEXT NOT NULL,
    event_id            TEXT NOT NULL,
    event_type          TEXT NOT NULL,
    provider_payment_id TEXT NOT NULL,
    body_sha256         BYTEA NOT NULL CHECK (length(body_sha256) = 32),
    outcome             TEXT NOT NULL CHECK (outcome IN ('applied', 'ignored')),
    detail              TEXT NOT NULL,
    received_at_ms      BIGINT NOT NULL,
    PRIMARY KEY (provider, event_id)
);
CREATE TRIGGER escrow_provider_events_append_only BEFORE UPDATE OR DELETE ON escrow_provider_events
    FOR EACH ROW EXECUTE FUNCTION enclosure_escrow_append_only();
CREATE TRIGGER escrow_provider_events_no_truncate BEFORE TRUNCATE ON escrow_provider_events
    FOR EACH STATEMENT EXECUTE FUNCTION enclosure_escrow_append_only();

CREATE TABLE escrow_settlements (
    milestone_id       TEXT NOT NULL REFERENCES escrow_milestones (id),
    kind               TEXT NOT NULL CHECK (kind IN ('release', 'refund')),
    room_id            TEXT NOT NULL REFERENCES escrow_rooms (id),
    payment_id         TEXT NOT NULL REFERENCES escrow_payments (id),
    round              BIGINT NOT NULL CHECK (round >= 0),
    step               TEXT NOT NULL CHECK (step IN ('start', 'requested', 'done', 'stalled')),
    amount_minor       BIGINT NOT NULL CHECK (amount_minor >= 0),
    fee_minor          BIGINT NOT NULL CHECK (fee_minor >= 0),
    provider_object_id TEXT,
    attempts           BIGINT NOT NULL CHECK (attempts >= 0),
    last_error         TEXT,
    next_at_ms         BIGINT NOT NULL,
    lease_owner        TEXT,
    lease_until_ms     BIGINT NOT NULL,
    created_at_ms      BIGINT NOT NULL,
    updated_at_ms      BIGINT NOT NULL,
    version            BIGINT NOT NULL CHECK (version >= 0),
    PRIMARY KEY (milestone_id, kind)
);
CREATE INDEX escrow_settlements_due ON escrow_settlements (step, next_at_ms);

-- A saga never goes back: only these step changes, and `done` is final. Amounts are fixed.
CREATE FUNCTION enclosure_escrow_settlements_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM enclosure_escrow_refuse('escrow_settlements rows are kept');
    END IF;
    IF OLD.step = 'done'
       OR NOT (NEW.step = OLD.step
               OR (OLD.step = 'start' AND NEW.step IN ('requested', 'done', 'stalled'))
               OR (OLD.step = 'requested' AND NEW.step IN ('done', 'stalled'))
               OR (OLD.step = 'stalled' AND NEW.step = 'start' AND NEW.round = OLD.round + 1))
       OR (NEW.round <> OLD.round AND NEW.step <> 'start')
       OR (NEW.milestone_id, NEW.kind, NEW.room_id, NEW.payment_id, NEW.amount_minor,
           NEW.fee_minor, NEW.created_at_ms)
          IS DISTINCT FROM
          (OLD.milestone_id, OLD.kind, OLD.room_id, OLD.payment_id, OLD.amount_minor,
           OLD.fee_minor, OLD.created_at_ms) THEN
        PERFORM enclosure_escrow_refuse('illegal settlement change');
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER escrow_settlements_guard BEFORE UPDATE OR DELETE ON escrow_settlements
    FOR EACH ROW EXECUTE FUNCTION enclosure_escrow_settlements_guard();

-- Both tables are the system's own bookkeeping: only the system role reads or writes them.
ALTER TABLE escrow_provider_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE escrow_provider_events FORCE ROW LEVEL SECURITY;
CREATE POLICY escrow_provider_events_system ON escrow_provider_events
    USING (current_setting('enclosure.role', true) = 'system')
    WITH CHECK (current_setting('enclosure.role', true) = 'system');

ALTER TABLE escrow_settlements ENABLE ROW LEVEL SECURITY;
ALTER TABLE escrow_settlements FORCE ROW LEVEL SECURITY;
CREATE POLICY escrow_settlements_system ON escrow_settlements
    USING (current_setting('enclosure.role', true) = 'system')
    WITH CHECK (current_setting('enclosure.role', true) = 'system');

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'enclosure_app') THEN
        GRANT SELECT, INSERT ON escrow_provider_events TO enclosure_app;
        GRANT SELECT, INSERT, UPDATE ON escrow_settlements TO enclosure_app;
    END IF;
END
$$;
