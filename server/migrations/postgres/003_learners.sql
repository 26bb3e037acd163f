-- Learners own their data: every capture and session belongs to a learner. Rows written
-- before this version belong to the legacy learner (a constant default: no table rewrite).
ALTER TABLE captures ADD COLUMN IF NOT EXISTS learner_id text NOT NULL DEFAULT 'legacy';
CREATE INDEX IF NOT EXISTS captures_learner_created ON captures (learner_id, created_at);

-- Who owns each session: the first learner to claim it (or to write a capture in it).
CREATE TABLE IF NOT EXISTS sessions (
    session_id text PRIMARY KEY,
    learner_id text NOT NULL,
    created_at timestamptz NOT NULL,
    title text
);
CREATE INDEX IF NOT EXISTS sessions_learner ON sessions (learner_id);
INSERT INTO sessions (session_id, learner_id, created_at)
SELECT session_id, 'legacy', min(created_at) FROM captures GROUP BY session_id
ON CONFLICT (session_id) DO NOTHING;

-- Deleted sessions: a capture of one that arrives later (a journal replayed, another
-- instance still serving it) is dropped, and nobody else can claim the id.
CREATE TABLE IF NOT EXISTS deleted_sessions (
    session_id text PRIMARY KEY,
    learner_id text,
    deleted_at timestamptz NOT NULL DEFAULT now()
);

-- Learners who asked to be forgotten: their captures are refused from then on.
CREATE TABLE IF NOT EXISTS forgotten_learners (
    learner_id text PRIMARY KEY,
    forgotten_at timestamptz NOT NULL DEFAULT now()
);
