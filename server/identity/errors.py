"""The one error every credential check raises: a code for the client and a safe message."""

from __future__ import annotations


class CredentialError(Exception):
    """A credential is missing, malformed, expired, wrongly signed or revoked. The message
    never contains the credential itself."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
