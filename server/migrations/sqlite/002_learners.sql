-- Learners own their data: every capture and session belongs to a learner. Rows written
-- before this version belong to the legacy learner.
--
-- captures is rebuilt with AUTOINCREMENT, keeping every id: now that captures are
-- deleted, a plain rowid table would hand a deleted newest id to the next capture, which
-- the embedding indexer (it works in id order) and a vector computed for the deleted
-- text would take for already embedded. The runner applies migrations with foreign keys
-- off, so dropping the old table does not cascade to capture_vectors, whose rows keep
-- pointing at the same ids; the FTS index (keyed by the same ids) stays valid.
CREATE TABLE captures_v2 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    capture_id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    timestamp REAL NOT NULL,
    user_text TEXT NOT NULL,
    agent_text TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    learner_id TEXT NOT NULL DEFAULT 'legacy'
);
INSERT INTO captures_v2 (id, capture_id, session_id, timestamp, user_text, agent_text, metadata)
SELECT id, capture_id, session_id, timestamp, user_text, agent_text, metadata FROM captures;
DROP TABLE captures;
ALTER TABLE captures_v2 RENAME TO captures;
CREATE INDEX captures_session_ts ON captures (session_id, timestamp);
CREATE INDEX captures_ts ON captures (timestamp);
CREATE INDEX captures_learner_ts ON captures (learner_id, timestamp);

CREATE TRIGGER captures_ai AFTER INSERT ON captures BEGIN
    INSERT INTO captures_fts (rowid, user_text, agent_text)
    VALUES (new.id, new.user_text, new.agent_text);
END;
CREATE TRIGGER captures_ad AFTER DELETE ON captures BEGIN
    INSERT INTO captures_fts (captures_fts, rowid, user_text, agent_text)
    VALUES ('delete', old.id, old.user_text, old.agent_text);
END;
CREATE TRIGGER captures_au AFTER UPDATE ON captures BEGIN
    INSERT INTO captures_fts (captures_fts, rowid, user_text, agent_text)
    VALUES ('delete', old.id, old.user_text, old.agent_text);
    INSERT INTO captures_fts (rowid, user_text, agent_text)
    VALUES (new.id, new.user_text, new.agent_text);
END;

-- Who owns each session: the first learner to claim it (or to write a capture in it).
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    learner_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    title TEXT
);
CREATE INDEX sessions_learner ON sessions (learner_id);
INSERT INTO sessions (session_id, learner_id, created_at)
SELECT session_id, 'legacy', min(timestamp) FROM captures GROUP BY session_id;

-- Deleted sessions: a capture of one that arrives later (a journal replayed, another
-- instance still serving it) is dropped, and nobody else can claim the id.
-- (Times default to now in epoch seconds, like every timestamp in this file.)
CREATE TABLE deleted_sessions (
    session_id TEXT PRIMARY KEY,
    learner_id TEXT,
    deleted_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);

-- Learners who asked to be forgotten: their captures are refused from then on.
CREATE TABLE forgotten_learners (
    learner_id TEXT PRIMARY KEY,
    forgotten_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
