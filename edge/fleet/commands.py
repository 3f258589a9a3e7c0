"""Fleet commands a device answers (``cmd/<name>`` → exactly one ``cmd/<name>/result`` with the request's correlation).

Run by the hub (one per device answers: a shared subscription). Only the central broker can send a command: on the
device's broker no local component may write ``cmd/+``, only the bridge (``edge/credentials.py``), and on the central
broker only the fleet's identity may write a device's ``cmd/#`` (docs/FLEET.md). A retained command is stale by
definition and ignored; an unknown command or bad arguments get an error result.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from edge import __version__
from edge.bus import Bus, Component, RpcMethod
from edge.bus.client import Message
from edge.bus.messages import CommandResult, EnrollRequest, ErrorBody, FleetCommand
from edge.config import ConfigError, Settings, redact, write_fleet_overrides
from edge.errors import ErrorCode, FacematchError
from edge.identify.index import announce_change
from edge.store.archive import export_gallery, import_gallery
from edge.store.audit import Audit
from edge.store.gallery import Gallery

log = logging.getLogger("facematch.fleet")

SHARE_GROUP = "hub"
RESTART = "restart"
RESTARTABLE = (Component.INFERENCE, Component.HUB, Component.CAMERA, Component.DISPLAY, Component.DOOR)
# A command and its result travel as one MQTT message each; larger galleries go over HTTP.
MAX_ARCHIVE = 32 * 1024 * 1024
WATCHED = (Component.INFERENCE, Component.CAMERA, Component.DISPLAY, Component.DOOR)


class CommandAgent:
    def __init__(self, settings: Settings, bus: Bus, gallery: Gallery, audit: Audit,
                 online: Callable[[Component], list[str]],
                 local_pids: Callable[[Component, str], list[int]] | None = None):  # fmt: skip
        self.local_pids = local_pids or (lambda component, host: [])
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
            "subjects-enroll": self.subjects_enroll,
            "gallery-export": self.gallery_export,
            "gallery-import": self.gallery_import,
            "config-set": self.config_set,
            "restart": self.restart_without_supervisor,
        }

    def start(self) -> None:
        self.bus.subscribe(f"$share/{SHARE_GROUP}/{self.bus.topics.command('+')}", self.on_command, qos=1)

    def on_command(self, message: Message) -> None:
        if message.retain:
            log.warning("ignoring a retained command on %s: commands are never retained", message.topic)
            return
        name = message.topic.rsplit("/", 1)[-1]
        if name == RESTART and self.online(Component.SUPERVISOR):
            return  # `facematch up` restarts its children itself, and answers
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
        announce_change(self.bus, self.gallery.delete_subject(subject_id), subject_id)
        return {"deleted": subject_id}

    def subjects_enroll(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{"name", "photos": [base64, …], "credential"?, "metadata"?}``: as ``POST /subjects``."""

        photos = [str(p) for p in args["photos"]]
        if not photos:
            raise ValueError("photos: at least one")
        number = args.get("credential")
        credential = None if number is None else int(number)
        subject_id = self.gallery.create_subject(
            str(args["name"]), dict(args.get("metadata", {})), credential=credential, pending=True
        )
        try:
            result = self.bus.call(RpcMethod.ENROLL, EnrollRequest(subject_id=subject_id, photos=photos),
                                   timeout=self.settings.http.request_timeout + 2.0 * len(photos))  # fmt: skip
        except BaseException:
            self.gallery.delete_subject(subject_id)  # nothing enrolled: no empty subject left behind
            raise
        self.gallery.finish_subject(subject_id)
        return {"subject_id": subject_id, "faces": result.faces,
                "photos": [p.model_dump(exclude_none=True) for p in result.photos]}  # fmt: skip

    def gallery_export(self, args: dict[str, Any]) -> dict[str, Any]:
        """The whole gallery as a base64 zip (docs/IDENTIFY.md's archive), up to ``MAX_ARCHIVE`` bytes."""

        buffer = io.BytesIO()
        count = export_gallery(self.gallery, buffer, self.settings.device_id)
        data = buffer.getvalue()
        if len(data) > MAX_ARCHIVE:
            raise FacematchError(f"the archive is {len(data)} bytes, over the {MAX_ARCHIVE} a command carries: use "
                                 "GET /gallery/export on the device", ErrorCode.BODY_TOO_LARGE)  # fmt: skip
        return {"subjects": count, "archive": base64.b64encode(data).decode()}

    def gallery_import(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{"archive": base64 zip}``: push one gallery to many doors. Subjects with the same id are replaced."""

        try:
            data = base64.b64decode(str(args["archive"]), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("archive: not valid base64") from None
        report = import_gallery(self.gallery, io.BytesIO(data))
        announce_change(self.bus, self.gallery.version(), None)
        return report.to_dict()

    def config_set(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{"values": {"door.unlock_seconds": 8, …}}``: validated against the whole configuration and kept in the
        state directory's ``config.fleet.yaml`` (atomically); each component reads it when it (re)starts."""

        values = args.get("values")
        if not isinstance(values, dict) or not values:
            raise ValueError('values: a mapping of dotted keys, e.g. {"door.unlock_seconds": 8}')
        try:
            path, changed = write_fleet_overrides(values)
        except ConfigError as exc:
            raise FacematchError(str(exc), ErrorCode.BAD_REQUEST) from None
        return {"changed": changed, "file": str(path),
                "applies": "when each component restarts: send cmd/restart for the ones it concerns"}  # fmt: skip

    def restart_without_supervisor(self, args: dict[str, Any]) -> dict[str, Any]:
        """Without ``facematch up`` (systemd units): SIGHUP to the component's processes on this host; each stops
        cleanly and exits with the restart code, which its unit's ``Restart=on-failure`` starts again."""
        try:
            component = Component(str(args.get("component", "")))
        except ValueError:
            component = None
        if component not in RESTARTABLE:
            raise ValueError(f"component: one of {', '.join(c.value for c in RESTARTABLE)}")
        if component is Component.HUB:
            # This process: answer first, then restart.
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGHUP)).start()
            return {"restarted": component.value, "processes": 1}
        pids = self.local_pids(component, self.settings.host_id)
        if not pids:
            raise FacematchError(f"no {component.value} runs on this host", ErrorCode.NOT_SUPPORTED)
        for pid in pids:
            os.kill(pid, signal.SIGHUP)
        return {"restarted": component.value, "processes": len(pids)}

    def audit_recent(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"entries": self.audit.recent(min(int(args.get("count", 50)), 1000))}
