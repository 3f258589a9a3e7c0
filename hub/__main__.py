"""``python -m hub``: serve the hub with uvicorn on the configured address."""

from __future__ import annotations

import sys

import uvicorn

from edge.config import load_settings_or_exit
from edge.logs import setup_logging
from hub.app import create_app


def main() -> int:
    settings = load_settings_or_exit()
    setup_logging("hub", settings.log_level)
    app = create_app(settings)
    uvicorn.run(app, host=settings.http.host, port=settings.http.port, log_level=settings.log_level.lower())
    return 0


if __name__ == "__main__":
    sys.exit(main())
