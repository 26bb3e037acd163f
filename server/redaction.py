"""Credentials inside URLs, hidden wherever a URL may be shown: the start-up config line, the
admin view of the settings, and every log line (whoever logged it, a library included).

Two places in a URL carry them: the userinfo (`scheme://user:PASSWORD@host`, the password
replaced, the user kept for debugging) and query or fragment parameters whose name says
what they are (`?password=`, `token`, `key`, `secret`, `signature`, `access_token`,
`api_key`, `X-Amz-Signature`, `sig`, `auth`, ...: any name ending in token, key, password,
passwd, pwd, secret, signature or credential(s)). The rules work on any text, so a URL
inside a sentence or a relative URL (`/path?token=...`) is redacted too.
"""

from __future__ import annotations

import re

MASK = "***"
#: `scheme://user:` then the password, up to the `@` (a `/` ends it: not userinfo).
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s/]+(?=@)")
_SECRET_NAME = (
    r"[a-z0-9_.\-\[\]]*(?:token|key|password|passwd|pwd|secret|signature|credentials?)"
    r"|sig|auth"
)
#: `?name=value`, `&name=value`, `;name=value` or `#name=value` with a secret-like name.
_SECRET_PARAM = re.compile(rf"(?P<head>[?&;#](?:{_SECRET_NAME})=)[^&#;\s\"'<>]+", re.IGNORECASE)


def redact_url(text: str) -> str:
    """postgresql://me:pw@db/x?password=pw -> postgresql://me:***@db/x?password=***;
    text without such credentials comes back unchanged."""
    if "=" not in text and "@" not in text:
        return text
    text = _USERINFO.sub(rf"\g<head>{MASK}", text)
    return _SECRET_PARAM.sub(rf"\g<head>{MASK}", text)


def looks_like_url(value: str) -> bool:
    """`scheme://...`: a setting holding a URL (or a list of them)."""
    return "://" in value
