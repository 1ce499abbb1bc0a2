"""Gateway credentials: Basic and Bearer headers, signed session cookies, safe redirects."""

from __future__ import annotations

import base64

import pytest
from itsdangerous import URLSafeTimedSerializer

from infra.gateway.session import (
    Sessions,
    header_credentials,
    login_form,
    login_page,
    safe_next,
    split_token,
)

KEY = "k" * 40


def test_basic_and_bearer_carry_name_and_secret() -> None:
    basic = "Basic " + base64.b64encode(b"alice:s3:cret").decode()
    assert header_credentials(basic) == ("alice", "s3:cret")
    assert header_credentials("Bearer ci:token") == ("ci", "token")
    assert header_credentials("bearer ci:token") == ("ci", "token")
    for bad in (None, "", "Bearer token-without-name", "Basic !!!", "Digest x",
                "Basic " + base64.b64encode(b"nocolon").decode(), "Bearer :secret"):
        assert header_credentials(bad) is None, bad
    assert split_token("a:b") == ("a", "b") and split_token(None) is None


def test_a_session_cookie_is_signed_and_expires() -> None:
    sessions = Sessions(KEY)
    cookie = sessions.issue("alice")
    assert sessions.read(cookie) == "alice"
    assert Sessions("x" * 40).read(cookie) is None  # another stack's key
    assert sessions.read(cookie[:-2] + "xx") is None
    forged = URLSafeTimedSerializer("guess" * 8, salt="mlops-gateway-session").dumps(
        {"sub": "ops"})
    assert sessions.read(forged) is None
    assert Sessions(KEY, max_age_s=-1).read(cookie) is None
    assert sessions.read(None) is None
    with pytest.raises(ValueError):
        Sessions("short")


def test_redirects_after_login_stay_on_the_gateway() -> None:
    assert safe_next("/v2/deployments?x=1") == "/v2/deployments?x=1"
    for bad in ("https://evil.example", "//evil.example", "/\\evil", "", None, "v2"):
        assert safe_next(bad) == "/"


def test_the_login_form_and_page() -> None:
    assert login_form(b"username=alice&password=p%26w&next=%2Fv2") == ("alice", "p&w", "/v2")
    assert login_form(b"") == ("", "", "")
    page = login_page("/v2?a=<b>", "Wrong name or password.")
    assert 'value="/v2?a=&lt;b&gt;"' in page and 'role="alert"' in page
    assert 'name="password" type="password"' in page
