"""Credentials at the gateway: the login page's signed session cookie for people, and the
``Authorization`` header for CI and services.

- A person logs in with name and password (``/login``) and gets a session cookie: signed
  with the stack's key (itsdangerous), HttpOnly (no script reads it), SameSite=Strict (no
  other site's page sends it), Secure behind https, valid ``SESSION_MAX_AGE_S``. It holds
  only the name: roles are read from the teams file at each request, so a removed member
  is locked out at once.
- CI and services send ``Authorization: Basic base64(name:secret)`` (what Prefect's client
  sends for ``PREFECT_API_AUTH_STRING=name:secret``, also on its WebSockets) or
  ``Authorization: Bearer name:secret`` (``PREFECT_API_KEY=name:secret``).
"""

from __future__ import annotations

import base64
import binascii
import html
from urllib.parse import parse_qs, quote

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "mlops_session"
SESSION_MAX_AGE_S = 12 * 3600
_SALT = "mlops-gateway-session"


class Sessions:
    """Issue and read session cookies signed with one key."""

    def __init__(self, key: str, max_age_s: int = SESSION_MAX_AGE_S) -> None:
        if len(key) < 32:
            raise ValueError("the session key must have at least 32 characters")
        self._serializer = URLSafeTimedSerializer(key, salt=_SALT)
        self.max_age_s = max_age_s

    def issue(self, name: str) -> str:
        return self._serializer.dumps({"sub": name})

    def read(self, value: str | None) -> str | None:
        """The name a valid, unexpired cookie holds, else None."""
        if not value:
            return None
        try:
            data = self._serializer.loads(value, max_age=self.max_age_s)
        except BadSignature:
            return None
        name = data.get("sub") if isinstance(data, dict) else None
        return name if isinstance(name, str) else None


def header_credentials(header: str | None) -> tuple[str, str] | None:
    """(name, secret) from a Basic or Bearer ``Authorization`` header, else None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        try:
            value = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
    elif scheme.lower() != "bearer":
        return None
    return split_token(value)


def split_token(token: str | None) -> tuple[str, str] | None:
    """(name, secret) from ``name:secret``."""
    if not isinstance(token, str):
        return None
    name, colon, secret = token.partition(":")
    return (name, secret) if colon and name and secret else None


def login_form(body: bytes) -> tuple[str, str, str]:
    """(name, password, next) from the login page's urlencoded form."""
    fields = parse_qs(body.decode(errors="replace"), keep_blank_values=True)
    return tuple(fields.get(key, [""])[0] for key in ("username", "password", "next"))


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this gateway only (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login_page(next_path: str = "/", error: str | None = None) -> str:
    """The login page: name and password, posted to ``/login``."""
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in - MLOps platform</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,sans-serif;background:#f4f5f7;display:flex;justify-content:center;
padding-top:12vh;margin:0}}
form{{background:#fff;padding:2rem 2.5rem;border-radius:8px;box-shadow:0 1px 4px #0002;
min-width:18rem}}
label{{display:block;margin:.8rem 0 .3rem}} input{{width:100%;padding:.5rem;box-sizing:border-box}}
button{{margin-top:1.2rem;width:100%;padding:.6rem}} .error{{color:#b00020}}
</style></head>
<body><form method="post" action="/login">
<h1>MLOps platform</h1><p>Sign in to the Prefect UI and API.</p>{message}
<input type="hidden" name="next" value="{html.escape(next_path)}">
<label for="username">Name</label>
<input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form></body></html>"""


def login_url(path: str, query: str) -> str:
    target = f"{path}?{query}" if query else path
    return f"/login?next={quote(target, safe='')}"
