-- Captures with full-text search (generated tsvector + GIN), and their embeddings in a
-- table of their own: saving a vector must not rewrite the capture row (and its GIN
-- entries), which would make embedding many times slower than writing.
CREATE TABLE IF NOT EXISTS captures (
    id bigserial PRIMARY KEY,
    capture_id text NOT NULL UNIQUE,
    session_id text NOT NULL,
    created_at timestamptz NOT NULL,
    user_text text NOT NULL,
    agent_text text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    tsv tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', user_text), 'A')
        || setweight(to_tsvector('english', agent_text), 'B')
    ) STORED
);
CREATE INDEX IF NOT EXISTS captures_tsv ON captures USING gin (tsv);
CREATE INDEX IF NOT EXISTS captures_session_created ON captures (session_id, created_at);
CREATE INDEX IF NOT EXISTS captures_created ON captures (created_at);

-- Order in which vectors were saved, so every instance can load the new ones.
CREATE SEQUENCE IF NOT EXISTS capture_embed_seq;

CREATE TABLE IF NOT EXISTS capture_vectors (
    id bigint PRIMARY KEY REFERENCES captures (id) ON DELETE CASCADE,
    model text NOT NULL,
    -- Exact-cosine path (no pgvector): a unit vector as real[].
    embedding real[],
    embedded_seq bigint NOT NULL DEFAULT nextval('capture_embed_seq')
);
CREATE INDEX IF NOT EXISTS capture_vectors_seq ON capture_vectors (model, embedded_seq);
