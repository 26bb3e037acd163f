"""Who is asking: learner credentials, issued and verified by the server.

- `tokens.py`: the server's own signed, expiring learner tokens (anonymous learners).
- `oidc.py`: bearer tokens from a deployment's identity provider, verified with its JWKS.
- `secret.py`: the signing secret (a setting, or generated once and shared through a file).
- `learners.py`: the `Identity` that turns a credential (or a caller's number) into a
  learner id, and refuses forgotten learners.
"""
