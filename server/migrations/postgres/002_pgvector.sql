-- pgvector when the server has it (an HNSW index per embedding model is created at
-- start-up for the configured model); otherwise search by meaning stays exact cosine.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS vector;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'pgvector is installed but this role cannot create it';
            RETURN;
        END;
        ALTER TABLE capture_vectors ADD COLUMN IF NOT EXISTS embedding_vec vector;
    END IF;
END
$$;
