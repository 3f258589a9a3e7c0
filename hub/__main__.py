"""``python -m hub``: serve the hub with uvicorn on the configured address, under the daemon lifecycle.

READY=1 once uvicorn listens; WATCHDOG=1 from a task on the event loop, so a blocked loop stops the pings.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import uvicorn

from edge.daemon import Daemon
from hub.app import create_app
from hub.server import server_config


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


def main() -> int:
    daemon = Daemon("hub")
    settings = daemon.settings
    config = server_config(settings, create_app(settings))
    server = uvicorn.Server(config)  # uvicorn handles SIGTERM/SIGINT itself

    def restart(signum: int, frame: object) -> None:  # SIGHUP: the same clean stop, then the restart exit code
        daemon.restart_requested = True
        server.should_exit = True

    signal.signal(signal.SIGHUP, restart)
    # uvicorn stops gracefully on SIGTERM/SIGINT, then raises the signal again for the handler it found: with this
    # one, a clean stop exits 0 like every other component, instead of dying of the signal.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: None)
    asyncio.run(_serve(daemon, server))
    return daemon.exit_code(0 if server.started else 1)


if __name__ == "__main__":
    sys.exit(main())
