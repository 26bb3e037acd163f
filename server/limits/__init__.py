"""Abuse resistance: who the client is at the edge, and how much one client may use."""
