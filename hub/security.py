"""Who may call the API: API keys (sha256 hashes in a file, compared in constant time, re-read when the file
changes), kiosk page tokens (short-lived, liveness only, in Redis) and rate limits (the `limits` library, counters in
Redis so that every hub process shares them)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from limits import parse, strategies
from limits.errors import StorageError
from limits.storage import RedisStorage

from edge.atomic import write_atomic
from edge.config import Settings, redact
from edge.credentials import redis_url
from edge.errors import AuthError, ErrorCode, RateLimited, RedisUnavailable
from edge.store import Store, keys


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# -- API keys -------------------------------------------------------------------------------------------------


def _read_keys(keys_file: Path) -> list[dict[str, str]]:
    return list(json.loads(keys_file.read_text()).get("keys", [])) if keys_file.exists() else []


def _write_keys(keys_file: Path, entries: list[dict[str, str]]) -> None:
    # Atomic: a hub reading the file (or a power cut) sees the old or the new list, never half of one.
    write_atomic(keys_file, json.dumps({"keys": entries}, indent=1) + "\n", mode=0o600)


def create_key(keys_file: Path, name: str) -> str:
    """Generate a key, store its hash in ``keys_file`` and return the key (shown once, never stored)."""
    key = "fm_" + secrets.token_urlsafe(32)
    entries = _read_keys(keys_file)
    entries.append({"name": name, "sha256": hash_key(key), "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    _write_keys(keys_file, entries)
    return key


def revoke_keys(keys_file: Path, which: str) -> list[dict[str, str]]:
    """Remove the keys named ``which`` or whose hash starts with it (at least 8 characters); return them."""
    entries = _read_keys(keys_file)
    gone = [e for e in entries if e["name"] == which or (len(which) >= 8 and e["sha256"].startswith(which))]
    if gone:
        _write_keys(keys_file, [e for e in entries if e not in gone])
    return gone


class ApiKeys:
    """The accepted key hashes: the keys file (re-read whenever it changes, so ``facematch keys create`` and
    ``revoke`` take effect at once) and ``FACEMATCH_API_KEYS``."""

    def __init__(self, settings: Settings, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        self._file = settings.api.keys_file
        self._env_hashes = [hash_key(k.strip()) for k in env.get("FACEMATCH_API_KEYS", "").split(",") if k.strip()]
        self._file_hashes: list[str] = []
        self._seen: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def _current(self) -> list[str]:
        try:
            stat = self._file.stat()
            seen = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            seen = None
        with self._lock:
            if seen != self._seen:
                self._file_hashes = [entry["sha256"] for entry in _read_keys(self._file)] if seen else []
                self._seen = seen
            return self._file_hashes + self._env_hashes

    @property
    def configured(self) -> bool:
        return bool(self._current())

    def identify(self, key: str | None) -> str:
        """The key's id (a hash prefix), or AuthError. Every stored hash is compared, in constant time."""
        if not key:
            raise AuthError("send an API key in the X-API-Key header", ErrorCode.MISSING_CREDENTIALS)
        offered = hash_key(key)
        found = False
        for stored in self._current():
            found |= hmac.compare_digest(offered, stored)
        if not found:
            raise AuthError("the API key is not valid (unknown or revoked)", ErrorCode.INVALID_API_KEY)
        return offered[:16]


# -- kiosk page tokens ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageToken:
    token: str
    expires_in: int


class PageTokens:
    """Short-lived tokens that let the web page run liveness challenges and nothing else.

    An operator makes one (``facematch page-token`` or ``POST /page-tokens`` with a key) and opens the page with it in
    the URL's fragment (``/#token=…``): a fragment never reaches the server, so it is in no access log, and the page
    moves it out of the address bar. Only the token's hash is stored, with the token's lifetime as TTL.
    """

    PREFIX = "fmp_"

    def __init__(self, store: Store):
        self._redis = store.client
        self._url = store.url

    def create(self, ttl: int, issued_by: str) -> PageToken:
        token = self.PREFIX + secrets.token_urlsafe(24)
        record = json.dumps({"issued_by": issued_by, "created": time.time()})
        try:
            self._redis.set(keys.page_token(hash_key(token)), record, ex=ttl)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailable(f"Redis at {redact(self._url)} is unreachable: {exc}") from None
        return PageToken(token, ttl)

    def identify(self, token: str) -> str:
        """The token's id (``page:`` + a hash prefix), or AuthError."""
        digest = hash_key(token)
        try:
            known = self._redis.exists(keys.page_token(digest))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailable(f"Redis at {redact(self._url)} is unreachable: {exc}") from None
        if not known:
            raise AuthError("the page token is unknown or expired: ask the operator for a new link",
                            ErrorCode.INVALID_PAGE_TOKEN)  # fmt: skip
        return "page:" + digest[:16]


# -- rate limits ----------------------------------------------------------------------------------------------


class RateLimits:
    """Moving-window limits per client address and per key, counted in Redis (shared by every hub process)."""

    def __init__(self, settings: Settings, **storage_options: Any):
        self._url = settings.redis.url
        self._storage = RedisStorage(
            redis_url(settings), wrap_exceptions=True, key_prefix=keys.RATE_LIMIT_PREFIX,
            socket_timeout=2.0, socket_connect_timeout=2.0, **storage_options,
        )  # fmt: skip
        self._limiter = strategies.MovingWindowRateLimiter(self._storage)
        self._per_key = parse(settings.api.rate_limit_per_key)
        self._per_address = parse(settings.api.rate_limit_per_address)

    def check(self, scope: str, ident: str) -> None:
        """Count one request of ``ident`` in ``scope`` (``address`` or ``key``); RateLimited past the limit."""
        item = self._per_address if scope == "address" else self._per_key
        try:
            if self._limiter.hit(item, scope, ident):
                return
            reset = self._limiter.get_window_stats(item, scope, ident).reset_time
        except StorageError as exc:
            raise RedisUnavailable(f"Redis at {redact(self._url)} is unreachable: {exc.storage_error}") from None
        retry = max(1, int(reset - time.time()) + 1)
        raise RateLimited(f"too many requests for this {scope}; retry in {retry} s", retry_after=retry)
