"""API keys (stored as sha256 hashes, compared in constant time) and rate limits (the `limits` library)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

from limits import parse, storage, strategies

from edge.config import Settings
from hub.errors import ApiError


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(keys_file: Path, name: str) -> str:
    """Generate a key, store its hash in ``keys_file`` and return the key (shown once, never stored)."""
    key = "fm_" + secrets.token_urlsafe(32)
    doc = json.loads(keys_file.read_text()) if keys_file.exists() else {"keys": []}
    doc["keys"].append({"name": name, "sha256": hash_key(key), "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    keys_file.parent.mkdir(parents=True, exist_ok=True)
    partial = keys_file.with_suffix(".part")
    partial.write_text(json.dumps(doc, indent=1) + "\n")
    partial.chmod(0o600)
    os.replace(partial, keys_file)
    return key


class ApiKeys:
    def __init__(self, settings: Settings, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        self._hashes: list[str] = []
        keys_file = settings.api.keys_file
        if keys_file.exists():
            self._hashes += [entry["sha256"] for entry in json.loads(keys_file.read_text()).get("keys", [])]
        self._hashes += [hash_key(k.strip()) for k in env.get("FACEMATCH_API_KEYS", "").split(",") if k.strip()]

    @property
    def configured(self) -> bool:
        return bool(self._hashes)

    def identify(self, key: str | None) -> str:
        """The key's id (a hash prefix) or ApiError 401. Every stored hash is compared, in constant time."""
        if not key:
            raise ApiError(401, "missing_api_key", "send an API key in the X-API-Key header")
        offered = hash_key(key)
        found = False
        for stored in self._hashes:
            found |= hmac.compare_digest(offered, stored)
        if not found:
            raise ApiError(401, "invalid_api_key", "the API key is not valid")
        return offered[:16]


class RateLimits:
    def __init__(self, settings: Settings):
        self._limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
        self._per_key = parse(settings.api.rate_limit_per_key)
        self._per_address = parse(settings.api.rate_limit_per_address)

    def check(self, key_id: str | None, address: str) -> None:
        for item, scope, ident in ((self._per_address, "address", address), (self._per_key, "key", key_id)):
            if ident is None:
                continue
            if not self._limiter.hit(item, scope, ident):
                reset = self._limiter.get_window_stats(item, scope, ident).reset_time
                retry = max(1, int(reset - time.time()) + 1)
                raise ApiError(429, "rate_limited", f"too many requests for this {scope}; retry in {retry} s",
                               retry_after=retry)  # fmt: skip
