-- Captures, their full-text index (FTS5, external content kept in sync by triggers)
-- and their embeddings. Applied once; PRAGMA user_version records the version.
CREATE TABLE IF NOT EXISTS captures (
    id INTEGER PRIMARY KEY,
    capture_id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    timestamp REAL NOT NULL,
    user_text TEXT NOT NULL,
    agent_text TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS captures_session_ts ON captures (session_id, timestamp);
CREATE INDEX IF NOT EXISTS captures_ts ON captures (timestamp);

CREATE VIRTUAL TABLE IF NOT EXISTS captures_fts USING fts5 (
    user_text, agent_text,
    content = 'captures', content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);

CREATE TRIGGER IF NOT EXISTS captures_ai AFTER INSERT ON captures BEGIN
    INSERT INTO captures_fts (rowid, user_text, agent_text)
    VALUES (new.id, new.user_text, new.agent_text);
END;
CREATE TRIGGER IF NOT EXISTS captures_ad AFTER DELETE ON captures BEGIN
    INSERT INTO captures_fts (captures_fts, rowid, user_text, agent_text)
    VALUES ('delete', old.id, old.user_text, old.agent_text);
END;
CREATE TRIGGER IF NOT EXISTS captures_au AFTER UPDATE ON captures BEGIN
    INSERT INTO captures_fts (captures_fts, rowid, user_text, agent_text)
    VALUES ('delete', old.id, old.user_text, old.agent_text);
    INSERT INTO captures_fts (rowid, user_text, agent_text)
    VALUES (new.id, new.user_text, new.agent_text);
END;

-- One row per embedded capture; captures without a row are waiting for the indexer.
CREATE TABLE IF NOT EXISTS capture_vectors (
    id INTEGER PRIMARY KEY REFERENCES captures (id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    vector BLOB NOT NULL
);
