"""Image inputs of the API: base64 (with or without a ``data:`` prefix) or an http(s) URL.

URLs are fetched with a timeout and a size cap. Every address a host name resolves to is checked before connecting
(private, loopback, link-local, multicast and reserved addresses are refused unless allowed in config), the
connection goes to the checked address (so DNS cannot change its answer in between), and every redirect is checked
the same way.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from edge.config import Settings
from edge.errors import ErrorCode, ImageInputError

MAX_REDIRECTS = 5


# Global by the IANA registries but able to carry any IPv4 address inside (6to4, NAT64): refused like private ones.
TUNNELLING = [ipaddress.ip_network("2002::/16"), ipaddress.ip_network("64:ff9b::/96")]


def _address_allowed(address: str, allowed: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if any(ip in network for network in allowed):
        return True
    # is_global is false for private, loopback, link-local, shared (100.64/10), reserved, documentation and
    # unspecified addresses alike; multicast is refused on its own.
    return ip.is_global and not ip.is_multicast and not any(ip in network for network in TUNNELLING)


class ImageLoader:
    def __init__(self, settings: Settings, client: httpx.AsyncClient | None = None):
        self.max_bytes = settings.http.max_image_size
        self.timeout = settings.http.request_timeout
        self.allowed = [ipaddress.ip_network(n, strict=False) for n in settings.http.url_allow_networks]
        self.client = client or httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)

    def _too_large(self, field: str) -> ImageInputError:
        return ImageInputError(field, f"the image is larger than {self.max_bytes} bytes", ErrorCode.IMAGE_TOO_LARGE)

    async def close(self) -> None:
        await self.client.aclose()

    async def load(self, field: str, value: str) -> bytes:
        text = value.strip()
        if text.startswith(("http://", "https://")):
            try:
                data = await asyncio.wait_for(self._fetch(field, text), self.timeout)
            except asyncio.TimeoutError:
                raise ImageInputError(
                    field, f"the URL did not deliver the image within {self.timeout:g} s", ErrorCode.URL_TIMEOUT
                ) from None
        elif "://" in text[:16]:
            raise ImageInputError(field, "only http and https URLs are fetched", ErrorCode.UNSUPPORTED_URL_SCHEME)
        else:
            data = self._decode_base64(field, text)
        if not data:
            raise ImageInputError(field, "the image is empty", ErrorCode.EMPTY_IMAGE)
        return data

    def _decode_base64(self, field: str, text: str) -> bytes:
        if text.startswith("data:"):
            header, _, text = text.partition(",")
            if ";base64" not in header:
                raise ImageInputError(field, "a data: URL must be base64-encoded", ErrorCode.INVALID_BASE64)
        # 4 base64 characters carry 3 bytes: refuse an oversized image before decoding it.
        if len(text) * 3 // 4 > self.max_bytes + 3:
            raise self._too_large(field)
        try:
            data = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise ImageInputError(field, "neither an http(s) URL nor valid base64", ErrorCode.INVALID_BASE64) from None
        if len(data) > self.max_bytes:
            raise self._too_large(field)
        return data

    async def _resolve_checked(self, field: str, host: str, port: int) -> str:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (UnicodeError, ValueError):  # an empty or over-long label (a..b, 64 characters)
            raise ImageInputError(field, f"the host name {host!r} is malformed", ErrorCode.INVALID_URL) from None
        except socket.gaierror:
            raise ImageInputError(field, f"the host {host!r} cannot be resolved", ErrorCode.URL_UNRESOLVABLE) from None
        addresses = [info[4][0] for info in infos]
        refused = [a for a in addresses if not _address_allowed(a, self.allowed)]
        if refused or not addresses:
            shown = refused[0] if refused else "-"
            message = f"the host {host!r} resolves to a private, loopback or link-local address ({shown})"
            raise ImageInputError(field, message, ErrorCode.URL_NOT_ALLOWED)
        return addresses[0]

    async def _fetch(self, field: str, url: str) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                parts = urlsplit(url)
                port = parts.port or (443 if parts.scheme == "https" else 80)  # .port raises on "abc", 99999
            except ValueError as exc:
                raise ImageInputError(field, f"the URL is malformed ({exc})", ErrorCode.INVALID_URL) from None
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ImageInputError(field, "only http and https URLs are fetched", ErrorCode.UNSUPPORTED_URL_SCHEME)
            address = await self._resolve_checked(field, parts.hostname, port)
            literal = f"[{address}]" if ":" in address else address
            pinned = urlunsplit((parts.scheme, f"{literal}:{port}", parts.path or "/", parts.query, ""))
            headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "Accept": "image/*"}
            try:
                async with self.client.stream(
                    "GET", pinned, headers=headers, extensions={"sni_hostname": parts.hostname}
                ) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise ImageInputError(
                            field, f"the URL answered HTTP {response.status_code}", ErrorCode.URL_FETCH_FAILED
                        )
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > self.max_bytes:
                        raise self._too_large(field)
                    chunks, size = [], 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise self._too_large(field)
                        chunks.append(chunk)
                    return b"".join(chunks)
            except httpx.HTTPError as exc:
                raise ImageInputError(field, f"fetching the URL failed: {exc}", ErrorCode.URL_FETCH_FAILED) from None
        raise ImageInputError(field, f"more than {MAX_REDIRECTS} redirects", ErrorCode.TOO_MANY_REDIRECTS)
