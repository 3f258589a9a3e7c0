"""``python -m hub``: serve the hub with uvicorn on the configured address, under the daemon lifecycle.

READY=1 once uvicorn listens; WATCHDOG=1 from a task on the event loop, so a blocked loop stops the pings.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import uvicorn

from edge.config import Settings
from edge.daemon import Daemon
from hub.app import create_app


async def _serve(daemon: Daemon, server: uvicorn.Server) -> None:
    async def lifecycle() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.05)
        daemon.ready(f"listening on http://{daemon.settings.http.host}:{daemon.settings.http.port}/")
        while not server.should_exit:
            daemon.watchdog()
            await asyncio.sleep(daemon.tick_interval)

    watcher = asyncio.create_task(lifecycle())
    try:
        await server.serve()
    finally:
        watcher.cancel()
        daemon.stopping()


def server_config(settings: Settings, app: Any) -> uvicorn.Config:
    """uvicorn's settings for the hub. Forwarding headers are believed only from configured proxies: uvicorn's own
    default trusts them from 127.0.0.1, which let any local client choose its address for the rate limits."""
    trusted = settings.http.trusted_proxies
    return uvicorn.Config(
        app, host=settings.http.host, port=settings.http.port, log_level=settings.log_level.lower(),
        proxy_headers=bool(trusted), forwarded_allow_ips=",".join(trusted) if trusted else "",
    )  # fmt: skip


def main() -> int:
    daemon = Daemon("hub")
    settings = daemon.settings
    config = server_config(settings, create_app(settings))
    server = uvicorn.Server(config)  # uvicorn handles SIGTERM/SIGINT itself
    asyncio.run(_serve(daemon, server))
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
