"""The conversation engine: one Session per conversation, providers behind small Protocols."""
