-- Escrow: rooms, milestones, payments, artifacts, reviewer notes, SQLite (the embedded
-- default). Same tables and columns as on PostgreSQL. SQLite has no roles, privileges or
-- row-level security: here the database's own rules are the triggers, which refuse any
-- state change not in escrow_transitions (the policy crate's pairs), any change of fixed
-- terms, and counters or acceptances that move backwards. The store's statements update one
-- row only from the state and version it read (optimistic concurrency).

-- The allowed (from, to) pairs: milestone_pairs(), room_pairs() and payment_pairs() of the
-- policy crate. A unit test (store::escrow) compares these lines with those functions.
CREATE TABLE escrow_transitions (
    machine    TEXT NOT NULL CHECK (machine IN ('room', 'milestone', 'payment')),
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    PRIMARY KEY (machine, from_state, to_state)
);
INSERT INTO escrow_transitions (machine, from_state, to_state) VALUES
    ('room', 'active', 'cancelled'),
    ('room', 'active', 'closed'),
    ('room', 'draft', 'active'),
    ('room', 'draft', 'cancelled'),
    ('milestone', 'accepted', 'disputed'),
    ('milestone', 'accepted', 'needs_admin'),
    ('milestone', 'accepted', 'transferred'),
    ('milestone', 'disputed', 'accepted'),
    ('milestone', 'disputed', 'refunded'),
    ('milestone', 'funded', 'disputed'),
    ('milestone', 'funded', 'refunded'),
    ('milestone', 'funded', 'submitted'),
    ('milestone', 'needs_admin', 'accepted'),
    ('milestone', 'needs_admin', 'refunded'),
    ('milestone', 'open', 'expired'),
    ('milestone', 'open', 'funded'),
    ('milestone', 'submitted', 'disputed'),
    ('milestone', 'submitted', 'validated'),
    ('milestone', 'validated', 'accepted'),
    ('milestone', 'validated', 'disputed'),
    ('milestone', 'validated', 'funded'),
    ('payment', 'escrowed', 'refunded'),
    ('payment', 'escrowed', 'released'),
    ('payment', 'pending', 'escrowed'),
    ('payment', 'pending', 'failed');

CREATE TABLE escrow_rooms (
    id                        TEXT PRIMARY KEY,
    title                     TEXT NOT NULL,
    client                    TEXT NOT NULL CHECK (client <> ''),
    freelancer                TEXT NOT NULL CHECK (freelancer <> '' AND freelancer <> client),
    currency                  TEXT NOT NULL CHECK (length(currency) = 3 AND currency GLOB '[A-Z][A-Z][A-Z]'),
    platform_fee_bps          INTEGER NOT NULL CHECK (platform_fee_bps BETWEEN 0 AND 10000),
    inspection_period_ms      INTEGER NOT NULL CHECK (inspection_period_ms > 0),
    max_revisions             INTEGER NOT NULL CHECK (max_revisions BETWEEN 0 AND 100),
    state                     TEXT NOT NULL CHECK (state IN ('draft', 'active', 'closed', 'cancelled')),
    client_accepted_at_ms     INTEGER,
    freelancer_accepted_at_ms INTEGER,
    created_at_ms             INTEGER NOT NULL,
    updated_at_ms             INTEGER NOT NULL,
    version                   INTEGER NOT NULL CHECK (version >= 0)
);
CREATE INDEX escrow_rooms_by_client ON escrow_rooms (client, created_at_ms);
CREATE INDEX escrow_rooms_by_freelancer ON escrow_rooms (freelancer, created_at_ms);

CREATE TABLE escrow_milestones (
    id                   TEXT PRIMARY KEY,
    room_id              TEXT NOT NULL REFERENCES escrow_rooms (id),
    position             INTEGER NOT NULL CHECK (position >= 0),
    title                TEXT NOT NULL,
    price_minor          INTEGER NOT NULL CHECK (price_minor > 0),
    funding_deadline_ms  INTEGER NOT NULL,
    delivery_deadline_ms INTEGER NOT NULL CHECK (delivery_deadline_ms > funding_deadline_ms),
    state                TEXT NOT NULL CHECK (state IN ('open', 'funded', 'submitted', 'validated',
                             'accepted', 'transferred', 'disputed', 'needs_admin', 'refunded', 'expired')),
    revisions_used       INTEGER NOT NULL CHECK (revisions_used >= 0),
    client_cancelled     INTEGER NOT NULL CHECK (client_cancelled IN (0, 1)),
    freelancer_cancelled INTEGER NOT NULL CHECK (freelancer_cancelled IN (0, 1)),
    inspection_ends_ms   INTEGER,
    updated_at_ms        INTEGER NOT NULL,
    version              INTEGER NOT NULL CHECK (version >= 0),
    UNIQUE (room_id, position)
);

CREATE TABLE escrow_payments (
    id                  TEXT PRIMARY KEY,
    milestone_id        TEXT NOT NULL UNIQUE REFERENCES escrow_milestones (id),
    room_id             TEXT NOT NULL REFERENCES escrow_rooms (id),
    provider            TEXT NOT NULL,
    provider_payment_id TEXT NOT NULL,
    amount_minor        INTEGER NOT NULL CHECK (amount_minor > 0),
    currency            TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('pending', 'escrowed', 'released', 'refunded', 'failed')),
    created_at_ms       INTEGER NOT NULL,
    updated_at_ms       INTEGER NOT NULL,
    version             INTEGER NOT NULL CHECK (version >= 0),
    UNIQUE (provider, provider_payment_id)
);

CREATE TABLE escrow_artifacts (
    id            TEXT PRIMARY KEY,
    milestone_id  TEXT NOT NULL REFERENCES escrow_milestones (id),
    room_id       TEXT NOT NULL REFERENCES escrow_rooms (id),
    owner         TEXT NOT NULL,
    name          TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size_bytes    INTEGER NOT NULL CHECK (size_bytes >= 0),
    sha256        BLOB NOT NULL CHECK (length(sha256) = 32),
    storage_key   TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    frozen_at_ms  INTEGER
);
CREATE INDEX escrow_artifacts_by_milestone ON escrow_artifacts (milestone_id);

CREATE TABLE escrow_notes (
    id            TEXT PRIMARY KEY,
    room_id       TEXT NOT NULL REFERENCES escrow_rooms (id),
    milestone_id  TEXT REFERENCES escrow_milestones (id),
    author        TEXT NOT NULL,
    body          TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE escrow_audit_links (
    audit_seq    INTEGER PRIMARY KEY REFERENCES audit (seq),
    room_id      TEXT NOT NULL REFERENCES escrow_rooms (id),
    milestone_id TEXT
);
CREATE INDEX escrow_audit_links_by_room ON escrow_audit_links (room_id, audit_seq);

-- State changes: only pairs in escrow_transitions (or no change).
CREATE TRIGGER escrow_rooms_state BEFORE UPDATE ON escrow_rooms
    WHEN NEW.state <> OLD.state AND NOT EXISTS (
        SELECT 1 FROM escrow_transitions t
        WHERE t.machine = 'room' AND t.from_state = OLD.state AND t.to_state = NEW.state)
BEGIN
    SELECT RAISE(ABORT, 'illegal room transition');
END;
CREATE TRIGGER escrow_rooms_fixed BEFORE UPDATE ON escrow_rooms
    WHEN NEW.id IS NOT OLD.id OR NEW.title IS NOT OLD.title OR NEW.client IS NOT OLD.client
        OR NEW.freelancer IS NOT OLD.freelancer OR NEW.currency IS NOT OLD.currency
        OR NEW.platform_fee_bps IS NOT OLD.platform_fee_bps
        OR NEW.inspection_period_ms IS NOT OLD.inspection_period_ms
        OR NEW.max_revisions IS NOT OLD.max_revisions OR NEW.created_at_ms IS NOT OLD.created_at_ms
        OR NEW.version IS NOT OLD.version + 1
        OR (OLD.client_accepted_at_ms IS NOT NULL AND NEW.client_accepted_at_ms IS NOT OLD.client_accepted_at_ms)
        OR (OLD.freelancer_accepted_at_ms IS NOT NULL AND NEW.freelancer_accepted_at_ms IS NOT OLD.freelancer_accepted_at_ms)
        OR (OLD.state <> 'draft' AND (NEW.client_accepted_at_ms IS NOT OLD.client_accepted_at_ms
                                      OR NEW.freelancer_accepted_at_ms IS NOT OLD.freelancer_accepted_at_ms))
BEGIN
    SELECT RAISE(ABORT, 'room terms and acceptances are fixed once set');
END;
CREATE TRIGGER escrow_rooms_activate BEFORE UPDATE ON escrow_rooms
    WHEN NEW.state = 'active' AND OLD.state = 'draft'
        AND (NEW.client_accepted_at_ms IS NULL OR NEW.freelancer_accepted_at_ms IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'a room activates only when both parties accepted');
END;
CREATE TRIGGER escrow_rooms_cancel BEFORE UPDATE ON escrow_rooms
    WHEN NEW.state = 'cancelled' AND OLD.state <> 'cancelled' AND EXISTS (
        SELECT 1 FROM escrow_milestones m
        WHERE m.room_id = NEW.id AND m.state NOT IN ('open', 'expired'))
BEGIN
    SELECT RAISE(ABORT, 'a room with funded milestones cannot be cancelled');
END;
CREATE TRIGGER escrow_rooms_close BEFORE UPDATE ON escrow_rooms
    WHEN NEW.state = 'closed' AND OLD.state <> 'closed' AND EXISTS (
        SELECT 1 FROM escrow_milestones m
        WHERE m.room_id = NEW.id AND m.state NOT IN ('transferred', 'refunded', 'expired'))
BEGIN
    SELECT RAISE(ABORT, 'a room closes only when every milestone settled');
END;

CREATE TRIGGER escrow_milestones_state BEFORE UPDATE ON escrow_milestones
    WHEN NEW.state <> OLD.state AND NOT EXISTS (
        SELECT 1 FROM escrow_transitions t
        WHERE t.machine = 'milestone' AND t.from_state = OLD.state AND t.to_state = NEW.state)
BEGIN
    SELECT RAISE(ABORT, 'illegal milestone transition');
END;
CREATE TRIGGER escrow_milestones_fixed BEFORE UPDATE ON escrow_milestones
    WHEN NEW.id IS NOT OLD.id OR NEW.room_id IS NOT OLD.room_id OR NEW.position IS NOT OLD.position
        OR NEW.title IS NOT OLD.title OR NEW.price_minor IS NOT OLD.price_minor
        OR NEW.funding_deadline_ms IS NOT OLD.funding_deadline_ms
        OR NEW.delivery_deadline_ms IS NOT OLD.delivery_deadline_ms
        OR NEW.version IS NOT OLD.version + 1
        OR NEW.client_cancelled < OLD.client_cancelled
        OR NEW.freelancer_cancelled < OLD.freelancer_cancelled
        -- A revision is used exactly when a validated submission is rejected.
        OR NEW.revisions_used IS NOT OLD.revisions_used
               + (CASE WHEN OLD.state = 'validated' AND NEW.state = 'funded' THEN 1 ELSE 0 END)
BEGIN
    SELECT RAISE(ABORT, 'milestone terms are fixed and its counters only move forward');
END;
CREATE TRIGGER escrow_milestones_room_active BEFORE UPDATE ON escrow_milestones
    WHEN NEW.state <> OLD.state AND NOT EXISTS (
        SELECT 1 FROM escrow_rooms r WHERE r.id = NEW.room_id AND r.state = 'active')
BEGIN
    SELECT RAISE(ABORT, 'milestones move only in an active room');
END;

CREATE TRIGGER escrow_payments_state BEFORE UPDATE ON escrow_payments
    WHEN NEW.state <> OLD.state AND NOT EXISTS (
        SELECT 1 FROM escrow_transitions t
        WHERE t.machine = 'payment' AND t.from_state = OLD.state AND t.to_state = NEW.state)
BEGIN
    SELECT RAISE(ABORT, 'illegal payment transition');
END;
CREATE TRIGGER escrow_payments_fixed BEFORE UPDATE ON escrow_payments
    WHEN NEW.id IS NOT OLD.id OR NEW.milestone_id IS NOT OLD.milestone_id
        OR NEW.room_id IS NOT OLD.room_id OR NEW.provider IS NOT OLD.provider
        OR NEW.provider_payment_id IS NOT OLD.provider_payment_id
        OR NEW.amount_minor IS NOT OLD.amount_minor OR NEW.currency IS NOT OLD.currency
        OR NEW.created_at_ms IS NOT OLD.created_at_ms OR NEW.version IS NOT OLD.version + 1
BEGIN
    SELECT RAISE(ABORT, 'payment details are fixed');
END;

-- New rows start at the beginning of their machine.
CREATE TRIGGER escrow_rooms_initial BEFORE INSERT ON escrow_rooms
    WHEN NEW.state <> 'draft' OR NEW.version <> 0
BEGIN
    SELECT RAISE(ABORT, 'new rooms start in state draft');
END;
CREATE TRIGGER escrow_milestones_initial BEFORE INSERT ON escrow_milestones
    WHEN NEW.state <> 'open' OR NEW.version <> 0
BEGIN
    SELECT RAISE(ABORT, 'new milestones start in state open');
END;
CREATE TRIGGER escrow_payments_initial BEFORE INSERT ON escrow_payments
    WHEN NEW.state <> 'pending' OR NEW.version <> 0
BEGIN
    SELECT RAISE(ABORT, 'new payments start in state pending');
END;

-- Frozen artifacts never change; notes, links and the transition table never change.
CREATE TRIGGER escrow_artifacts_guard BEFORE UPDATE ON escrow_artifacts
    WHEN OLD.frozen_at_ms IS NOT NULL OR NEW.frozen_at_ms IS NULL
        OR NEW.id IS NOT OLD.id OR NEW.milestone_id IS NOT OLD.milestone_id
        OR NEW.room_id IS NOT OLD.room_id OR NEW.owner IS NOT OLD.owner
        OR NEW.name IS NOT OLD.name OR NEW.content_type IS NOT OLD.content_type
        OR NEW.size_bytes IS NOT OLD.size_bytes OR NEW.sha256 IS NOT OLD.sha256
        OR NEW.storage_key IS NOT OLD.storage_key OR NEW.created_at_ms IS NOT OLD.created_at_ms
BEGIN
    SELECT RAISE(ABORT, 'an artifact may only be frozen, once');
END;
CREATE TRIGGER escrow_notes_no_update BEFORE UPDATE ON escrow_notes
BEGIN
    SELECT RAISE(ABORT, 'escrow_notes is append-only');
END;
CREATE TRIGGER escrow_notes_no_delete BEFORE DELETE ON escrow_notes
BEGIN
    SELECT RAISE(ABORT, 'escrow_notes is append-only');
END;
CREATE TRIGGER escrow_audit_links_no_update BEFORE UPDATE ON escrow_audit_links
BEGIN
    SELECT RAISE(ABORT, 'escrow_audit_links is append-only');
END;
CREATE TRIGGER escrow_audit_links_no_delete BEFORE DELETE ON escrow_audit_links
BEGIN
    SELECT RAISE(ABORT, 'escrow_audit_links is append-only');
END;
CREATE TRIGGER escrow_transitions_no_insert BEFORE INSERT ON escrow_transitions
BEGIN
    SELECT RAISE(ABORT, 'escrow_transitions is fixed by migrations');
END;
CREATE TRIGGER escrow_transitions_no_update BEFORE UPDATE ON escrow_transitions
BEGIN
    SELECT RAISE(ABORT, 'escrow_transitions is fixed by migrations');
END;
CREATE TRIGGER escrow_transitions_no_delete BEFORE DELETE ON escrow_transitions
BEGIN
    SELECT RAISE(ABORT, 'escrow_transitions is fixed by migrations');
END;
