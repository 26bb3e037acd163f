"""Versioned SQL migrations: sqlite/ (PRAGMA user_version) and postgres/ (schema_migrations)."""
