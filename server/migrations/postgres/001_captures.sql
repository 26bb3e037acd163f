-- Captures with full-text search (generated tsvector + GIN) and room for embeddings.
CREATE TABLE IF NOT EXISTS captures (
    id bigserial PRIMARY KEY,
    capture_id text NOT NULL UNIQUE,
    session_id text NOT NULL,
    created_at timestamptz NOT NULL,
    user_text text NOT NULL,
    agent_text text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Exact-cosine path (no pgvector): unit vectors as real[].
    embedding real[],
    embedding_model text,
    -- Order in which vectors were saved, so every instance can load new ones.
    embedded_seq bigint,
    tsv tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', user_text), 'A')
        || setweight(to_tsvector('english', agent_text), 'B')
    ) STORED
);
CREATE INDEX IF NOT EXISTS captures_tsv ON captures USING gin (tsv);
CREATE INDEX IF NOT EXISTS captures_session_created ON captures (session_id, created_at);
CREATE INDEX IF NOT EXISTS captures_created ON captures (created_at);
CREATE INDEX IF NOT EXISTS captures_unembedded ON captures (id) WHERE embedding_model IS NULL;
CREATE INDEX IF NOT EXISTS captures_embedded_seq ON captures (embedded_seq)
    WHERE embedded_seq IS NOT NULL;
CREATE SEQUENCE IF NOT EXISTS capture_embed_seq;
