"""Who a request is: a bearer token compared, in constant time, with every configured token.

Two sets of tokens (http.tokens, http.read_only_tokens): a token of the first may do anything
the shim serves, one of the second may read everything and change nothing (a change gets 403
`forbidden`, in the JSON API and the dashboard alike).  With no token configured at all the
shim listens on loopback only (HttpSettings.check) and every request may do everything.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Iterable


class Access(enum.Enum):
    MISSING = "missing"  # no credentials given (and some are needed)
    WRONG = "wrong"  # credentials given, matching no token
    READ = "read"  # a read-only token
    WRITE = "write"  # a token that may change things, or no token configured at all

    @property
    def granted(self) -> bool:
        return self in (Access.READ, Access.WRITE)


class Tokens:
    def __init__(self, tokens: Iterable[str], read_only: Iterable[str] = ()):
        self.write = tuple(t.encode() for t in tokens if t)
        self.read = tuple(t.encode() for t in read_only if t)

    @property
    def none(self) -> bool:
        """No token configured: every request may do everything (loopback only)."""
        return not (self.write or self.read)

    def of_secret(self, given: bytes) -> Access:
        """The access `given` grants.  Every token is compared, whatever matched first."""
        write = read = False
        for token in self.write:
            write |= hmac.compare_digest(given, token)
        for token in self.read:
            read |= hmac.compare_digest(given, token)
        return Access.WRITE if write else Access.READ if read else Access.WRONG

    def of_header(self, header: str | None) -> Access:
        """The access an Authorization header grants."""
        if self.none:
            return Access.WRITE
        if header is None:
            return Access.MISSING
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return Access.WRONG
        # Header values arrive decoded as Latin-1: encoding back gives the bytes as sent.
        return self.of_secret(credentials.strip().encode("latin-1", "replace"))

    def all(self) -> tuple[tuple[bytes, Access], ...]:
        """Every token with the access it grants (for the dashboard's session cookies)."""
        return tuple((t, Access.WRITE) for t in self.write) + tuple(
            (t, Access.READ) for t in self.read
        )
