-- Escrow: rooms, milestones, payments, artifacts, reviewer notes, PostgreSQL.
-- Runs as the owner role. The rules here repeat the policy crate's state tables
-- (enclosure_policy::escrow) so that a bug in a service, or a stray statement from the app
-- role, cannot write a state the tables do not allow.
--
-- Design (invariant 6): the app role holds no UPDATE privilege on any escrow table. Every
-- state change goes through one SECURITY DEFINER function per machine
-- (enclosure_escrow_move_room / _milestone / _payment), which updates one row only when its
-- state and version are the ones the service read (optimistic concurrency) and the caller is
-- a member, admin or system. BEFORE UPDATE triggers then check every change against
-- escrow_transitions and the one-way columns; they bind the owner too, so the functions
-- themselves cannot write an illegal pair.

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
    currency                  TEXT NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    platform_fee_bps          BIGINT NOT NULL CHECK (platform_fee_bps BETWEEN 0 AND 10000),
    inspection_period_ms      BIGINT NOT NULL CHECK (inspection_period_ms > 0),
    max_revisions             BIGINT NOT NULL CHECK (max_revisions BETWEEN 0 AND 100),
    state                     TEXT NOT NULL CHECK (state IN ('draft', 'active', 'closed', 'cancelled')),
    client_accepted_at_ms     BIGINT,
    freelancer_accepted_at_ms BIGINT,
    created_at_ms             BIGINT NOT NULL,
    updated_at_ms             BIGINT NOT NULL,
    version                   BIGINT NOT NULL CHECK (version >= 0)
);
CREATE INDEX escrow_rooms_by_client ON escrow_rooms (client, created_at_ms);
CREATE INDEX escrow_rooms_by_freelancer ON escrow_rooms (freelancer, created_at_ms);

CREATE TABLE escrow_milestones (
    id                   TEXT PRIMARY KEY,
    room_id              TEXT NOT NULL REFERENCES escrow_rooms (id),
    position             BIGINT NOT NULL CHECK (position >= 0),
    title                TEXT NOT NULL,
    price_minor          BIGINT NOT NULL CHECK (price_minor > 0),
    funding_deadline_ms  BIGINT NOT NULL,
    delivery_deadline_ms BIGINT NOT NULL CHECK (delivery_deadline_ms > funding_deadline_ms),
    state                TEXT NOT NULL CHECK (state IN ('open', 'funded', 'submitted', 'validated',
                             'accepted', 'transferred', 'disputed', 'needs_admin', 'refunded', 'expired')),
    revisions_used       BIGINT NOT NULL CHECK (revisions_used >= 0),
    client_cancelled     BIGINT NOT NULL CHECK (client_cancelled IN (0, 1)),
    freelancer_cancelled BIGINT NOT NULL CHECK (freelancer_cancelled IN (0, 1)),
    inspection_ends_ms   BIGINT,
    updated_at_ms        BIGINT NOT NULL,
    version              BIGINT NOT NULL CHECK (version >= 0),
    UNIQUE (room_id, position)
);

CREATE TABLE escrow_payments (
    id                  TEXT PRIMARY KEY,
    milestone_id        TEXT NOT NULL UNIQUE REFERENCES escrow_milestones (id),
    room_id             TEXT NOT NULL REFERENCES escrow_rooms (id),
    provider            TEXT NOT NULL,
    provider_payment_id TEXT NOT NULL,
    amount_minor        BIGINT NOT NULL CHECK (amount_minor > 0),
    currency            TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('pending', 'escrowed', 'released', 'refunded', 'failed')),
    created_at_ms       BIGINT NOT NULL,
    updated_at_ms       BIGINT NOT NULL,
    version             BIGINT NOT NULL CHECK (version >= 0),
    UNIQUE (provider, provider_payment_id)
);

-- Artifact metadata. The storage key locates the object; only the room's members and the
-- system may read rows at all (admins never: threat T3/T4). Frozen on submit, then immutable.
CREATE TABLE escrow_artifacts (
    id            TEXT PRIMARY KEY,
    milestone_id  TEXT NOT NULL REFERENCES escrow_milestones (id),
    room_id       TEXT NOT NULL REFERENCES escrow_rooms (id),
    owner         TEXT NOT NULL,
    name          TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL CHECK (size_bytes >= 0),
    sha256        BYTEA NOT NULL CHECK (length(sha256) = 32),
    storage_key   TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL,
    frozen_at_ms  BIGINT
);
CREATE INDEX escrow_artifacts_by_milestone ON escrow_artifacts (milestone_id);

-- Reviewer notes: informational only, append-only (threat T6).
CREATE TABLE escrow_notes (
    id            TEXT PRIMARY KEY,
    room_id       TEXT NOT NULL REFERENCES escrow_rooms (id),
    milestone_id  TEXT REFERENCES escrow_milestones (id),
    author        TEXT NOT NULL,
    body          TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- Which audit rows concern which room: the index behind a room's audit trail. The audit row
-- itself (its detail names the room too) is the evidence.
CREATE TABLE escrow_audit_links (
    audit_seq    BIGINT PRIMARY KEY REFERENCES audit (seq),
    room_id      TEXT NOT NULL REFERENCES escrow_rooms (id),
    milestone_id TEXT
);
CREATE INDEX escrow_audit_links_by_room ON escrow_audit_links (room_id, audit_seq);

-- The transition check, shared by the three state triggers.
CREATE FUNCTION enclosure_escrow_pair_allowed(p_machine TEXT, p_from TEXT, p_to TEXT)
    RETURNS BOOLEAN LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT p_from = p_to OR EXISTS (
        SELECT 1 FROM escrow_transitions t
        WHERE t.machine = p_machine AND t.from_state = p_from AND t.to_state = p_to)
$$;
REVOKE ALL ON FUNCTION enclosure_escrow_pair_allowed(TEXT, TEXT, TEXT) FROM PUBLIC;

CREATE FUNCTION enclosure_escrow_refuse(msg TEXT) RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', msg USING ERRCODE = 'integrity_constraint_violation';
END
$$;

CREATE FUNCTION enclosure_escrow_rooms_guard() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF NOT enclosure_escrow_pair_allowed('room', OLD.state, NEW.state) THEN
        PERFORM enclosure_escrow_refuse(format('illegal room transition %s -> %s', OLD.state, NEW.state));
    END IF;
    IF (NEW.id, NEW.title, NEW.client, NEW.freelancer, NEW.currency, NEW.platform_fee_bps,
        NEW.inspection_period_ms, NEW.max_revisions, NEW.created_at_ms)
       IS DISTINCT FROM
       (OLD.id, OLD.title, OLD.client, OLD.freelancer, OLD.currency, OLD.platform_fee_bps,
        OLD.inspection_period_ms, OLD.max_revisions, OLD.created_at_ms)
       OR NEW.version <> OLD.version + 1
       OR (OLD.client_accepted_at_ms IS NOT NULL AND NEW.client_accepted_at_ms IS DISTINCT FROM OLD.client_accepted_at_ms)
       OR (OLD.freelancer_accepted_at_ms IS NOT NULL AND NEW.freelancer_accepted_at_ms IS DISTINCT FROM OLD.freelancer_accepted_at_ms)
       OR (OLD.state <> 'draft' AND ((NEW.client_accepted_at_ms, NEW.freelancer_accepted_at_ms)
                                      IS DISTINCT FROM (OLD.client_accepted_at_ms, OLD.freelancer_accepted_at_ms)))
    THEN
        PERFORM enclosure_escrow_refuse('room terms and acceptances are fixed once set');
    END IF;
    IF NEW.state = 'active' AND OLD.state = 'draft'
       AND (NEW.client_accepted_at_ms IS NULL OR NEW.freelancer_accepted_at_ms IS NULL) THEN
        PERFORM enclosure_escrow_refuse('a room activates only when both parties accepted');
    END IF;
    IF NEW.state = 'cancelled' AND OLD.state <> 'cancelled' AND EXISTS (
        SELECT 1 FROM escrow_milestones m
        WHERE m.room_id = NEW.id AND m.state NOT IN ('open', 'expired')) THEN
        PERFORM enclosure_escrow_refuse('a room with funded milestones cannot be cancelled');
    END IF;
    IF NEW.state = 'closed' AND OLD.state <> 'closed' AND EXISTS (
        SELECT 1 FROM escrow_milestones m
        WHERE m.room_id = NEW.id AND m.state NOT IN ('transferred', 'refunded', 'expired')) THEN
        PERFORM enclosure_escrow_refuse('a room closes only when every milestone settled');
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER escrow_rooms_guard BEFORE UPDATE ON escrow_rooms
    FOR EACH ROW EXECUTE FUNCTION enclosure_escrow_rooms_guard();

CREATE FUNCTION enclosure_escrow_milestones_guard() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF NOT enclosure_escrow_pair_allowed('milestone', OLD.state, NEW.state) THEN
        PERFORM enclosure_escrow_refuse(format('illegal milestone transition %s -> %s', OLD.state, NEW.state));
    END IF;
    IF (NEW.id, NEW.room_id, NEW.position, NEW.title, NEW.price_minor, NEW.funding_deadline_ms,
        NEW.delivery_deadline_ms)
       IS DISTINCT FROM
       (OLD.id, OLD.room_id, OLD.position, OLD.title, OLD.price_minor, OLD.funding_deadline_ms,
        OLD.delivery_deadline_ms)
       OR NEW.version <> OLD.version + 1
       OR NEW.client_cancelled < OLD.client_cancelled
       OR NEW.freelancer_cancelled < OLD.freelancer_cancelled
       -- A revision is used exactly when a validated submission is rejected.
       OR NEW.revisions_used <> OLD.revisions_used
              + (CASE WHEN OLD.state = 'validated' AND NEW.state = 'funded' THEN 1 ELSE 0 END)
    THEN
        PERFORM enclosure_escrow_refuse('milestone terms are fixed and its counters only move forward');
    END IF;
    IF NEW.state <> OLD.state AND NOT EXISTS (
        SELECT 1 FROM escrow_rooms r WHERE r.id = NEW.room_id AND r.state = 'active') THEN
        PERFORM enclosure_escrow_refuse('milestones move only in an active room');
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER escrow_milestones_guard BEFORE UPDATE ON escrow_milestones
    FOR EACH ROW EXECUTE FUNCTION enclosure_escrow_milestones_guard();

CREATE FUNCTION enclosure_escrow_payments_guard() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF NOT enclosure_escrow_pair_allowed('payment', OLD.state, NEW.state) THEN
        PERFORM enclosure_escrow_refuse(format('illegal payment transition %s -> %s', OLD.state, NEW.state));
    END IF;
    IF (NEW.id, NEW.milestone_id, NEW.room_id, NEW.provider, NEW.provider_payment_id,
        NEW.amount_minor, NEW.currency, NEW.created_at_ms)
       IS DISTINCT FROM
       (OLD.id, OLD.milestone_id, OLD.room_id, OLD.provider, OLD.provider_payment_id,
        OLD.amount_minor, OLD.currency, OLD.created_at_ms)
       OR NEW.version <> OLD.version + 1
    THEN
        PERFORM enclosure_escrow_refuse('payment details are fixed');
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER escrow_payments_guard BEFORE UPDATE ON escrow_payments
    FOR EACH ROW EXECUTE FUNCTION enclosure_escrow_payments_guard();

-- New rows start at the beginning of their machine, whoever inserts them.
CREATE FUNCTION enclosure_escrow_initial_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.version <> 0 OR NEW.state <> TG_ARGV[0] THEN
        PERFORM enclosure_escrow_refuse(format('new %s rows start in state %s', TG_TABLE_NAME, TG_ARGV[0]));
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER escrow_rooms_initial BEFORE INSERT ON escrow_rooms
    FOR EACH ROW EXECUTE FUNCTION enclosure_escrow_initial_state('draft');
CREATE TRIGGER escrow_milestones_initial BEFORE INSERT ON escrow_milestones
    FOR EACH ROW EXECUTE FUNCTION enclosure_escrow_initial_state('open');
CREATE TRIGGER escrow_payments_initial BEFORE INSERT ON escrow_payments
    FOR EACH ROW EXECUTE FUNCTION enclosure_escrow_initial_state('pending');

-- Frozen artifacts never change; notes, links and the transition table never change.
CREATE FUNCTION enclosure_escrow_artifacts_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.frozen_at_ms IS NOT NULL OR NEW.frozen_at_ms IS NULL
       OR (NEW.id, NEW.milestone_id, NEW.room_id, NEW.owner, NEW.name, NEW.content_type,
           NEW.size_bytes, NEW.sha256, NEW.storage_key, NEW.created_at_ms)
          IS DISTINCT FROM
          (OLD.id, OLD.milestone_id, OLD.room_id, OLD.owner, OLD.name, OLD.content_type,
           OLD.size_bytes, OLD.sha256, OLD.storage_key, OLD.created_at_ms) THEN
        PERFORM enclosure_escrow_refuse('an artifact may only be frozen, once');
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER escrow_artifacts_guard BEFORE UPDATE ON escrow_artifacts
    FOR EACH ROW EXECUTE FUNCTION enclosure_escrow_artifacts_guard();
CREATE FUNCTION enclosure_escrow_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER escrow_notes_append_only BEFORE UPDATE OR DELETE ON escrow_notes
    FOR EACH ROW EXECUTE FUNCTION enclosure_escrow_append_only();
CREATE TRIGGER escrow_audit_links_append_only BEFORE UPDATE OR DELETE ON escrow_audit_links
    FOR EACH ROW EXECUTE FUNCTION enclosure_escrow_append_only();
CREATE TRIGGER escrow_transitions_fixed BEFORE INSERT OR UPDATE OR DELETE ON escrow_transitions
    FOR EACH ROW EXECUTE FUNCTION enclosure_escrow_append_only();

-- Whether the session's caller may move rows of this room: a member, an admin or the system.
-- (The service decides which role may take which action; this is the database's backstop.)
CREATE FUNCTION enclosure_escrow_may_move(p_room TEXT) RETURNS BOOLEAN LANGUAGE sql STABLE
    SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT current_setting('enclosure.role', true) IN ('admin', 'system')
        OR EXISTS (SELECT 1 FROM escrow_rooms r WHERE r.id = p_room
                   AND ((current_setting('enclosure.role', true) = 'client'
                         AND current_setting('enclosure.user', true) = r.client)
                     OR (current_setting('enclosure.role', true) = 'freelancer'
                         AND current_setting('enclosure.user', true) = r.freelancer)))
$$;
REVOKE ALL ON FUNCTION enclosure_escrow_may_move(TEXT) FROM PUBLIC;

-- The state-changing functions: one row, only from the state and version the caller read.
-- They answer how many rows moved (0: someone else moved it first, or not allowed).
CREATE FUNCTION enclosure_escrow_move_room(p_id TEXT, p_from TEXT, p_version BIGINT, p_to TEXT,
    p_client_accepted_at_ms BIGINT, p_freelancer_accepted_at_ms BIGINT, p_now_ms BIGINT)
    RETURNS BIGINT LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    moved BIGINT;
BEGIN
    UPDATE escrow_rooms SET state = p_to, client_accepted_at_ms = p_client_accepted_at_ms,
           freelancer_accepted_at_ms = p_freelancer_accepted_at_ms,
           updated_at_ms = p_now_ms, version = version + 1
     WHERE id = p_id AND state = p_from AND version = p_version
       AND enclosure_escrow_may_move(p_id);
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END
$$;

CREATE FUNCTION enclosure_escrow_move_milestone(p_id TEXT, p_from TEXT, p_version BIGINT, p_to TEXT,
    p_revisions_used BIGINT, p_inspection_ends_ms BIGINT, p_client_cancelled BIGINT,
    p_freelancer_cancelled BIGINT, p_now_ms BIGINT)
    RETURNS BIGINT LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    moved BIGINT;
BEGIN
    UPDATE escrow_milestones m SET state = p_to, revisions_used = p_revisions_used,
           inspection_ends_ms = p_inspection_ends_ms, client_cancelled = p_client_cancelled,
           freelancer_cancelled = p_freelancer_cancelled, updated_at_ms = p_now_ms,
           version = m.version + 1
     WHERE m.id = p_id AND m.state = p_from AND m.version = p_version
       AND enclosure_escrow_may_move(m.room_id);
    GET DIAGNOSTICS moved = ROW_COUNT;
    -- A submission freezes the milestone's artifacts: what is validated is what was submitted.
    IF moved = 1 AND p_to = 'submitted' AND p_from <> 'submitted' THEN
        UPDATE escrow_artifacts SET frozen_at_ms = p_now_ms
         WHERE milestone_id = p_id AND frozen_at_ms IS NULL;
    END IF;
    RETURN moved;
END
$$;

CREATE FUNCTION enclosure_escrow_move_payment(p_id TEXT, p_from TEXT, p_version BIGINT, p_to TEXT,
    p_now_ms BIGINT)
    RETURNS BIGINT LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    moved BIGINT;
BEGIN
    -- Payments move only on verified provider events, which only the system applies (T7).
    IF current_setting('enclosure.role', true) IS DISTINCT FROM 'system' THEN
        RETURN 0;
    END IF;
    UPDATE escrow_payments SET state = p_to, updated_at_ms = p_now_ms, version = version + 1
     WHERE id = p_id AND state = p_from AND version = p_version;
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END
$$;
REVOKE ALL ON FUNCTION enclosure_escrow_move_room(TEXT, TEXT, BIGINT, TEXT, BIGINT, BIGINT, BIGINT) FROM PUBLIC;
REVOKE ALL ON FUNCTION enclosure_escrow_move_milestone(TEXT, TEXT, BIGINT, TEXT, BIGINT, BIGINT, BIGINT, BIGINT, BIGINT) FROM PUBLIC;
REVOKE ALL ON FUNCTION enclosure_escrow_move_payment(TEXT, TEXT, BIGINT, TEXT, BIGINT) FROM PUBLIC;

-- Row-level security: a room and everything in it is visible to its client and freelancer,
-- to the system, and (metadata only) to admins, who resolve disputes, and reviewers, who
-- read and annotate. Artifacts are visible to members and the system only.
ALTER TABLE escrow_rooms ENABLE ROW LEVEL SECURITY;
ALTER TABLE escrow_rooms FORCE ROW LEVEL SECURITY;
CREATE POLICY escrow_rooms_read ON escrow_rooms FOR SELECT
    USING (current_setting('enclosure.user', true) IN (client, freelancer)
           OR current_setting('enclosure.role', true) IN ('system', 'admin', 'reviewer'));
CREATE POLICY escrow_rooms_create ON escrow_rooms FOR INSERT
    WITH CHECK (client = current_setting('enclosure.user', true)
                AND current_setting('enclosure.role', true) = 'client');
-- Updates happen only inside the move functions (the app role has no UPDATE privilege).
CREATE POLICY escrow_rooms_move ON escrow_rooms FOR UPDATE USING (true);

ALTER TABLE escrow_milestones ENABLE ROW LEVEL SECURITY;
ALTER TABLE escrow_milestones FORCE ROW LEVEL SECURITY;
CREATE POLICY escrow_milestones_read ON escrow_milestones FOR SELECT
    USING (EXISTS (SELECT 1 FROM escrow_rooms r WHERE r.id = room_id));
CREATE POLICY escrow_milestones_create ON escrow_milestones FOR INSERT
    WITH CHECK (EXISTS (SELECT 1 FROM escrow_rooms r WHERE r.id = room_id AND r.state = 'draft'
                        AND r.client = current_setting('enclosure.user', true)));
CREATE POLICY escrow_milestones_move ON escrow_milestones FOR UPDATE USING (true);

ALTER TABLE escrow_payments ENABLE ROW LEVEL SECURITY;
ALTER TABLE escrow_payments FORCE ROW LEVEL SECURITY;
CREATE POLICY escrow_payments_read ON escrow_payments FOR SELECT
    USING (EXISTS (SELECT 1 FROM escrow_rooms r WHERE r.id = room_id));
CREATE POLICY escrow_payments_create ON escrow_payments FOR INSERT
    WITH CHECK (current_setting('enclosure.role', true) = 'system');
CREATE POLICY escrow_payments_move ON escrow_payments FOR UPDATE USING (true);

ALTER TABLE escrow_artifacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE escrow_artifacts FORCE ROW LEVEL SECURITY;
CREATE POLICY escrow_artifacts_read ON escrow_artifacts FOR SELECT
    USING (current_setting('enclosure.role', true) = 'system'
           OR EXISTS (SELECT 1 FROM escrow_rooms r WHERE r.id = room_id
                      AND ((current_setting('enclosure.role', true) = 'client'
                            AND current_setting('enclosure.user', true) = r.client)
                        OR (current_setting('enclosure.role', true) = 'freelancer'
                            AND current_setting('enclosure.user', true) = r.freelancer))));
CREATE POLICY escrow_artifacts_create ON escrow_artifacts FOR INSERT
    WITH CHECK (EXISTS (SELECT 1 FROM escrow_rooms r WHERE r.id = room_id
                        AND r.freelancer = owner
                        AND owner = current_setting('enclosure.user', true)));
CREATE POLICY escrow_artifacts_freeze ON escrow_artifacts FOR UPDATE USING (true);

ALTER TABLE escrow_notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE escrow_notes FORCE ROW LEVEL SECURITY;
CREATE POLICY escrow_notes_read ON escrow_notes FOR SELECT
    USING (EXISTS (SELECT 1 FROM escrow_rooms r WHERE r.id = room_id));
CREATE POLICY escrow_notes_create ON escrow_notes FOR INSERT
    WITH CHECK (current_setting('enclosure.role', true) = 'reviewer'
                AND author = current_setting('enclosure.user', true)
                AND EXISTS (SELECT 1 FROM escrow_rooms r WHERE r.id = room_id));

ALTER TABLE escrow_audit_links ENABLE ROW LEVEL SECURITY;
ALTER TABLE escrow_audit_links FORCE ROW LEVEL SECURITY;
CREATE POLICY escrow_audit_links_read ON escrow_audit_links FOR SELECT
    USING (EXISTS (SELECT 1 FROM escrow_rooms r WHERE r.id = room_id));
CREATE POLICY escrow_audit_links_create ON escrow_audit_links FOR INSERT
    WITH CHECK (EXISTS (SELECT 1 FROM escrow_rooms r WHERE r.id = room_id));

-- A room's members read every audit row linked to their room, the other party's included.
CREATE POLICY audit_escrow_room_members ON audit FOR SELECT
    USING (EXISTS (SELECT 1 FROM escrow_audit_links l JOIN escrow_rooms r ON r.id = l.room_id
                   WHERE l.audit_seq = audit.seq
                   AND current_setting('enclosure.user', true) IN (r.client, r.freelancer)));

ALTER TABLE escrow_transitions ENABLE ROW LEVEL SECURITY;
CREATE POLICY escrow_transitions_read ON escrow_transitions FOR SELECT USING (true);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'enclosure_app') THEN
        GRANT SELECT ON escrow_transitions TO enclosure_app;
        GRANT SELECT, INSERT ON escrow_rooms, escrow_milestones, escrow_payments,
            escrow_artifacts, escrow_notes, escrow_audit_links TO enclosure_app;
        GRANT EXECUTE ON FUNCTION enclosure_escrow_move_room(TEXT, TEXT, BIGINT, TEXT, BIGINT, BIGINT, BIGINT) TO enclosure_app;
        GRANT EXECUTE ON FUNCTION enclosure_escrow_move_milestone(TEXT, TEXT, BIGINT, TEXT, BIGINT, BIGINT, BIGINT, BIGINT, BIGINT) TO enclosure_app;
        GRANT EXECUTE ON FUNCTION enclosure_escrow_move_payment(TEXT, TEXT, BIGINT, TEXT, BIGINT) TO enclosure_app;
    END IF;
END
$$;
