"""The dashboard's sign-in and its defences against cross-site requests.

**Sessions, without server state.**  A browser signs in by typing a bearer token once; it gets
back a cookie that proves it knew the token without holding it:

    jobd_session = v1.<expires>.<fingerprint>.<signature>
        fingerprint = HMAC(token, "jobd-ui-fingerprint")[:16 hex]   which token (not the token)
        signature   = HMAC(token, "v1.<expires>.<fingerprint>")      that its holder made it

The shim checks it against each configured token (constant time), so a session survives a
restart of the shim, ends when its token is removed from the configuration (the way to end
every session of a token at once), and grants what its token grants: a read-only token's
session is read-only.  HttpOnly (no script reads it), SameSite=Strict (no other site's request
carries it), Path=/ui/, Secure unless http.secure_cookie is false, for SESSION_SECONDS.

**CSRF.**  Every action (a POST) must carry a token matching the browser's own `jobd_csrf`
cookie (a random value set with the first page): `csrf = HMAC(key, cookie)`, the key derived
from the configured tokens, or drawn at start when there are none.  A page of another site can
neither read that cookie nor make the browser send it (SameSite=Strict), so it cannot forge the
field.  On top, a POST whose Origin or Sec-Fetch-Site names another site is refused before
anything else.  This holds with no tokens configured too: a loopback shim is reachable from
every page the browser opens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from email.message import Message
from urllib.parse import urlsplit

from jobd.http.access import Access, Tokens

SESSION_COOKIE = "jobd_session"
CSRF_COOKIE = "jobd_csrf"
SESSION_SECONDS = 12 * 3600
_VERSION = "v1"


def cookies_of(headers: Message) -> dict[str, str]:
    """The request's cookies (the first of each name); malformed pairs are skipped."""
    found: dict[str, str] = {}
    for header in headers.get_all("Cookie") or []:
        for pair in header.split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name and name not in found:
                found[name] = value.strip().strip('"')
    return found


def _sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def _fingerprint(token: bytes) -> str:
    return _sign(token, "jobd-ui-fingerprint")[:16]


class Sessions:
    def __init__(
        self, tokens: Tokens, secure: bool, clock: Callable[[], float] = time.time
    ) -> None:
        self.tokens = tokens
        self.secure = secure
        self.clock = clock
        material = b"\0".join(sorted(t for t, _ in tokens.all()))
        self._csrf_key = (
            hashlib.sha256(b"jobd-ui-csrf\0" + material).digest()
            if material
            else secrets.token_bytes(32)
        )

    @property
    def open(self) -> bool:
        """No token configured: no sign-in (loopback only); CSRF still applies."""
        return self.tokens.none

    # --- sessions -------------------------------------------------------------------------------

    def sign_in(self, token: str) -> tuple[Access, str | None]:
        """The access `token` grants and, if any, the session cookie's value."""
        access = self.tokens.of_secret(token.strip().encode("utf-8", "replace"))
        if not access.granted:
            return access, None
        expires = int(self.clock()) + SESSION_SECONDS
        secret = token.strip().encode("utf-8", "replace")
        head = f"{_VERSION}.{expires}.{_fingerprint(secret)}"
        return access, f"{head}.{_sign(secret, head)}"

    def check(self, value: str | None) -> Access:
        """What a session cookie grants: MISSING without one, WRONG if forged, expired or of
        a token no longer configured."""
        return self.holder(value)[0]

    def holder(self, value: str | None) -> tuple[Access, bytes | None]:
        """What a session cookie grants, and the token it was made with (None if none)."""
        if not value:
            return Access.MISSING, None
        parts = value.split(".")
        if len(parts) != 4 or parts[0] != _VERSION or not parts[1].isdigit():
            return Access.WRONG, None
        if int(parts[1]) < self.clock():
            return Access.WRONG, None
        head = ".".join(parts[:3])
        granted, holder = Access.WRONG, None
        for token, access in self.tokens.all():  # every token compared, whatever matches
            same = hmac.compare_digest(parts[2], _fingerprint(token))
            signed = hmac.compare_digest(parts[3], _sign(token, head))
            if same and signed:
                granted, holder = access, token
        return granted, holder

    def cookie(self, name: str, value: str, max_age: int) -> str:
        """A Set-Cookie value: HttpOnly, SameSite=Strict, Path=/ui/, Secure unless turned off."""
        attributes = [f"{name}={value}", "Path=/ui/", f"Max-Age={max_age}", "HttpOnly"]
        attributes.append("SameSite=Strict")
        if self.secure:
            attributes.append("Secure")
        return "; ".join(attributes)

    def session_cookie(self, value: str) -> str:
        return self.cookie(SESSION_COOKIE, value, SESSION_SECONDS)

    def expired_session_cookie(self) -> str:
        return self.cookie(SESSION_COOKIE, "", 0)

    # --- CSRF -----------------------------------------------------------------------------------

    @staticmethod
    def new_csrf_seed() -> str:
        return secrets.token_hex(16)

    def csrf_cookie(self, seed: str) -> str:
        return self.cookie(CSRF_COOKIE, seed, 30 * 24 * 3600)

    def csrf_token(self, seed: str) -> str:
        return _sign(self._csrf_key, seed)

    def csrf_ok(self, seed: str | None, given: str | None) -> bool:
        if not seed or not given:
            return False
        return hmac.compare_digest(self.csrf_token(seed), given)


def actor_of(token: bytes | None) -> str:
    """Who acts, for the audit trail: the token's fingerprint as the JSON API records it
    (jobd.http.queues_api.actor), `http` when no token is configured."""
    if token is None:
        return "http"
    return f"token:{hashlib.sha256(token).hexdigest()[:8]}"


def same_origin(headers: Mapping[str, str] | Message) -> bool:
    """Whether a POST comes from the dashboard's own pages, as far as the browser says: an
    Origin naming another host, or Sec-Fetch-Site naming another site, says it does not.
    (Clients that send neither, curl for one, are judged by the CSRF token alone.)"""
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("Origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    host = headers.get("Host")
    try:
        return host is not None and urlsplit(origin).netloc == host
    except ValueError:
        return False
