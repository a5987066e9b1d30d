"""Who may call the service and how often: API keys, per-client rate limits, and the response
headers every answer carries.

Keys come from a file (`--api-key-file`: one key per line, optionally `name:key`, `#` comments)
and/or `$FERLAB_API_KEYS` (comma-separated, same forms), so that a key can be added before the
old one is removed. Clients send `Authorization: Bearer <key>`; keys are compared in constant
time and never logged (logs and metrics name a key by its name, else by a short digest).
"""

import hashlib
import hmac
import ipaddress
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ferlab.errors import FerlabError

KEYS_VARIABLE = "FERLAB_API_KEYS"
MIN_KEY_LENGTH = 16
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "geolocation=(), microphone=(), camera=(self)",  # the page uses the webcam, nothing else
}
API_POLICY = "default-src 'none'; frame-ancestors 'none'"  # JSON answers: nothing to run or embed


def key_name(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def _parse(line: str, where: str) -> tuple[str, str] | None:
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    name, colon, key = line.rpartition(":")
    if not colon:
        name, key = "", line
    name, key = name.strip(), key.strip()
    if len(key) < MIN_KEY_LENGTH:
        raise FerlabError(f"an API key in {where} is shorter than {MIN_KEY_LENGTH} characters; use random keys (openssl rand -hex 24).")
    return key, name or key_name(key)


@dataclass(frozen=True)
class ApiKeys:
    """key -> name. Empty: the service is open (anonymous)."""

    names: Mapping[str, str]

    @classmethod
    def load(cls, file: str | os.PathLike | None = None, env: Mapping[str, str] = os.environ) -> "ApiKeys":
        found: dict[str, str] = {}
        if file is not None:
            try:
                lines = Path(file).read_text().splitlines()
            except (OSError, UnicodeDecodeError) as err:
                raise FerlabError(f"cannot read the API key file {file} ({getattr(err, 'strerror', None) or err}).") from None
            for line in lines:
                if (parsed := _parse(line, str(file))) is not None:
                    found[parsed[0]] = parsed[1]
            if not found:
                raise FerlabError(f"the API key file {file} holds no key; write one key per line.")
        for part in env.get(KEYS_VARIABLE, "").split(","):
            if (parsed := _parse(part, f"${KEYS_VARIABLE}")) is not None:
                found[parsed[0]] = parsed[1]
        return cls(found)

    def __bool__(self) -> bool:
        return bool(self.names)

    def check(self, authorization: str | None) -> str | None:
        """The name of the key an `Authorization: Bearer <key>` header carries, None if none matches.
        Every key is compared, in constant time, so the answer's timing tells nothing."""
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None
        given_bytes = given.strip().encode()
        match = None
        for key, name in self.names.items():
            if hmac.compare_digest(key.encode(), given_bytes):
                match = name
        return match


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class RateLimits:
    """Requests per client in a moving window (the `limits` library), one limit per kind of work."""

    def __init__(self, per_kind: Mapping[str, str | None]):
        from limits import parse
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._items = {}
        for kind, text in per_kind.items():
            if not text:
                continue
            try:
                self._items[kind] = parse(text)
            except ValueError:
                raise FerlabError(f"cannot read the rate limit {text!r}; write it as N/second, N/minute or N/hour.") from None
        self.described = {kind: str(item) for kind, item in self._items.items()}

    def hit(self, kind: str, client: str) -> float | None:
        """None if `client` may go on, else the seconds until it may retry."""
        item = self._items.get(kind)
        if item is None or self._limiter.hit(item, client):
            return None
        reset = self._limiter.get_window_stats(item, client).reset_time
        return max(1.0, math.ceil(reset - time.time()))
