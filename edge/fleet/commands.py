"""Fleet commands a device answers (``cmd/<name>`` → exactly one ``cmd/<name>/result`` with the request's correlation).

Run by the hub (one per device answers: a shared subscription). Only the central broker can send a command: on the
device's broker no local component may write ``cmd/+``, only the bridge (``edge/credentials.py``), and on the central
broker only the fleet's identity may write a device's ``cmd/#`` (docs/FLEET.md). A retained command is stale by
definition and ignored; an unknown command or bad arguments get an error result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from edge import __version__
from edge.bus import Bus, Component
from edge.bus.client import Message
from edge.bus.messages import CommandResult, ErrorBody, FleetCommand
from edge.config import Settings, redact
from edge.errors import ErrorCode, FacematchError
from edge.store.audit import Audit
from edge.store.gallery import Gallery

log = logging.getLogger("facematch.fleet")

SHARE_GROUP = "hub"
WATCHED = (Component.INFERENCE, Component.CAMERA, Component.DISPLAY, Component.DOOR)


class CommandAgent:
    def __init__(self, settings: Settings, bus: Bus, gallery: Gallery, audit: Audit,
                 online: Callable[[Component], list[str]]):  # fmt: skip
        self.settings = settings
        self.bus = bus
        self.gallery = gallery
        self.audit = audit
        self.online = online
        self.handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "ping": self.ping,
            "config-get": self.config_get,
            "subjects-list": self.subjects_list,
            "subjects-delete": self.subjects_delete,
            "audit": self.audit_recent,
        }

    def start(self) -> None:
        self.bus.subscribe(f"$share/{SHARE_GROUP}/{self.bus.topics.command('+')}", self.on_command, qos=1)

    def on_command(self, message: Message) -> None:
        if message.retain:
            log.warning("ignoring a retained command on %s: commands are never retained", message.topic)
            return
        name = message.topic.rsplit("/", 1)[-1]
        try:
            command = FleetCommand.model_validate_json(message.payload or b"{}")
            handler = self.handlers.get(name)
            if handler is None:
                raise FacematchError(f"no command {name!r}; known: {', '.join(sorted(self.handlers))}",
                                     ErrorCode.UNKNOWN_COMMAND)  # fmt: skip
            result = CommandResult(ok=True, result=handler(command.args))
        except FacematchError as exc:
            result = CommandResult(ok=False, error=ErrorBody(code=exc.code.value, message=exc.message))
        except (ValueError, TypeError, KeyError) as exc:
            result = CommandResult(ok=False, error=ErrorBody(code=ErrorCode.BAD_REQUEST.value, message=str(exc)))
        self.bus.publish(self.bus.topics.command_result(name), result.to_bytes(), qos=1,
                         correlation=message.correlation)  # fmt: skip

    # -- the commands ---------------------------------------------------------------------------------------------

    def ping(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "device_id": self.settings.device_id,
            "version": __version__,
            "time": time.time(),
            "online": {c.value: self.online(c) for c in WATCHED},
        }

    def config_get(self, args: dict[str, Any]) -> dict[str, Any]:
        config = self.settings.model_dump(mode="json")
        config["redis"]["url"] = redact(config["redis"]["url"])
        for key in ("url", "central_url"):
            if config["mqtt"].get(key):
                config["mqtt"][key] = redact(config["mqtt"][key])
        return config

    def subjects_list(self, args: dict[str, Any]) -> dict[str, Any]:
        offset, limit = int(args.get("offset", 0)), min(int(args.get("limit", 100)), 1000)
        ids = self.gallery.subject_ids(offset, limit)
        loaded = self.gallery.load(ids)
        return {"total": self.gallery.count(), "subjects": [loaded[s].summary() for s in ids if s in loaded]}

    def subjects_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        subject_id = str(args["subject_id"])
        version = self.gallery.delete_subject(subject_id)
        from edge.bus.messages import GalleryChanged

        self.bus.publish(self.bus.topics.gallery_changed, GalleryChanged(version=version, subject_id=subject_id)
                         .to_bytes(), qos=1)  # fmt: skip
        return {"deleted": subject_id}

    def audit_recent(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"entries": self.audit.recent(min(int(args.get("count", 50)), 1000))}
