-- The chain head, as on PostgreSQL: one row kept equal to the last audit row by a trigger,
-- so verification notices a deleted tail (rows that still chain, but end too early).
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB NOT NULL CHECK (length(hash) = 32)
);
INSERT INTO audit_head (id, seq, hash)
SELECT 1,
       COALESCE((SELECT MAX(seq) FROM audit), 0),
       COALESCE((SELECT hash FROM audit ORDER BY seq DESC LIMIT 1), zeroblob(32));

CREATE TRIGGER audit_head_follow AFTER INSERT ON audit
BEGIN
    UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1;
END;

-- The head only ever moves forward with the chain.
CREATE TRIGGER audit_head_forward BEFORE UPDATE ON audit_head
    WHEN NEW.seq <> OLD.seq + 1 OR NEW.hash IS NOT (SELECT hash FROM audit WHERE seq = NEW.seq)
BEGIN
    SELECT RAISE(ABORT, 'the audit head only follows appended rows');
END;
CREATE TRIGGER audit_head_keep BEFORE DELETE ON audit_head
BEGIN
    SELECT RAISE(ABORT, 'the audit head cannot be removed');
END;
