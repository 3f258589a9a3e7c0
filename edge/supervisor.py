"""``facematch up``: everything on one machine, supervised.

Starts Redis and Mosquitto when nothing answers at their configured local URLs, then the product's processes;
restarts a child that dies (exponential backoff, logged); on SIGINT/SIGTERM stops everything it started.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from edge.bus import BrokerAddress
from edge.config import Settings, redact
from edge.credentials import BRIDGE_USER, acl, credentials_path
from edge.credentials import ensure as ensure_credentials
from edge.daemon import Daemon
from edge.fleet.bridge import bridge_lines
from edge.services import (
    LOOPBACK,
    LocalService,
    ServiceError,
    die_with_parent,
    is_local_host,
    mosquitto_service,
    port_open,
    redis_service,
    stop_process,
)
from edge.store import Store

log = logging.getLogger("facematch.up")

MAX_BACKOFF = 30.0
# A child that ran this long before dying is considered healthy again: its backoff starts over.
STABLE_AFTER = 60.0


@dataclass
class Child:
    """One supervised process. ``launch`` starts it and returns the process."""

    name: str
    launch: Callable[[], subprocess.Popen[bytes]]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    stop_hook: Callable[[], None] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.process = self.launch()
        self.started_at = time.monotonic()
        self.restart_at = None

    def stop(self, timeout: float = 10.0) -> None:
        if self.stop_hook:
            self.stop_hook()
        elif stop_process(self.process, timeout):
            log.warning("%s did not stop within %g s; it was killed", self.name, timeout)


def python_child(name: str, module: str) -> Child:
    def launch() -> subprocess.Popen[bytes]:
        # Children inherit the environment (FACEMATCH_CONFIG and overrides), so they read the same settings.
        return subprocess.Popen([sys.executable, "-m", module], preexec_fn=die_with_parent, start_new_session=True)

    return Child(name, launch)


def service_child(service: LocalService) -> Child:
    def launch() -> subprocess.Popen[bytes]:
        service.start()
        assert service.process is not None
        return service.process

    return Child(service.name, launch, stop_hook=service.stop)


class AlreadyRunning(Exception):
    """Another `facematch up` holds what this one needs; the message is one line for the operator."""


def lock_state_dir(state_dir: os.PathLike[str]) -> int:
    """Hold an exclusive lock on the state directory for this process's lifetime (two stacks must never share
    one Redis dump, spool and logs). Returns the lock's file descriptor."""
    path = os.path.join(state_dir, "facematch-up.lock")
    os.makedirs(state_dir, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise AlreadyRunning(
                f"another facematch up (pid {holder}) already uses the state directory {state_dir}; stop it, or set "
                "FACEMATCH_STATE_DIR to another directory"
            ) from None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def check_port_free(host: str, port: int) -> None:
    """Raise AlreadyRunning when something already listens on the hub's address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise AlreadyRunning(
                f"the HTTP port {host}:{port} is already in use ({exc.strerror}); stop what uses it, or set PORT"
            ) from None


class Supervisor:
    def __init__(self, settings: Settings, modules: list[tuple[str, str]], daemon: Daemon | None = None):
        self.settings = settings
        self.modules = modules
        self.children: list[Child] = []
        self._stopping = False
        self._daemon = daemon or Daemon("up", settings)
        self._bus = None
        self._requests: queue.Queue = queue.Queue()

    # -- backends ---------------------------------------------------------------------------------------------

    def _backend_children(self) -> list[Child]:
        """Redis and Mosquitto when nothing answers at their local URLs, started with the credentials of
        ``credentials.json`` (made on first use): Redis with a password, the broker with a login per component and
        its ACL. The file records which ports are ours, so components log in to these and to nothing else."""
        children: list[Child] = []
        run_dir = self.settings.paths.state_dir
        path = credentials_path(self.settings)
        creds = ensure_credentials(path)
        creds.redis_port = creds.mqtt_port = None

        redis_url = urlsplit(self.settings.redis.url)
        redis_port = redis_url.port or 6379
        if redis_url.scheme == "redis" and port_open(redis_url.hostname or LOOPBACK, redis_port):
            log.info("using the Redis already answering at %s", redact(self.settings.redis.url))
        elif redis_url.scheme == "redis" and is_local_host(redis_url.hostname):
            log.info(
                "no Redis at %s: starting redis-server on 127.0.0.1:%d", redact(self.settings.redis.url), redis_port
            )
            service = redis_service(redis_port, run_dir / "redis", persistent=True, password=creds.redis)
            children.append(service_child(service))
            creds.redis_port = redis_port
        elif not Store(self.settings.redis.url, socket_timeout=1.0).ping():
            log.error("Redis at %s is unreachable and not on this host; the hub will report it", redis_url.hostname)

        broker = BrokerAddress.parse(self.settings.mqtt.url)
        if port_open(broker.host, broker.port):
            log.info("using the MQTT broker already answering at %s", redact(self.settings.mqtt.url))
        elif not broker.tls and is_local_host(broker.host):
            log.info("no broker at %s: starting mosquitto on 127.0.0.1:%d", broker, broker.port)
            bridge = bridge_lines(self.settings, creds.mqtt.get(BRIDGE_USER))
            if bridge:
                log.info("bridging to the central broker %s", redact(self.settings.mqtt.central_url or ""))
            service = mosquitto_service(
                broker.port, run_dir / "mosquitto", logins=creds.mqtt,
                acl=acl(self.settings.mqtt.topic_prefix, self.settings.mqtt.home_assistant_prefix),
                bridge=bridge,
            )  # fmt: skip
            children.append(service_child(service))
            creds.mqtt_port = broker.port
        else:
            log.error("MQTT broker %s is unreachable and not on this host; components will retry", broker.host)
        creds.save(path)
        return children

    # -- main loop --------------------------------------------------------------------------------------------

    def _request_stop(self, signum: int, frame: object) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        self._stopping = True

    def run(self) -> int:
        try:
            lock = lock_state_dir(self.settings.paths.state_dir)
            check_port_free(self.settings.http.host, self.settings.http.port)
        except AlreadyRunning as exc:
            log.error("%s", exc)
            return 1
        try:
            return self._run()
        finally:
            os.close(lock)

    def _run(self) -> int:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        try:
            self.children = self._backend_children()
            for child in self.children:
                child.start()
            for name, module in self.modules:
                child = python_child(name, module)
                child.start()
                self.children.append(child)
        except ServiceError as exc:
            log.error("%s", exc)
            self._stop_all()
            return 1
        log.info("started: %s", ", ".join(c.name for c in self.children))
        self._wait_ready()
        self._listen_for_restarts()
        last_ping = 0.0
        while not self._stopping:
            self._tend()
            self._restart_requested()
            if time.monotonic() - last_ping >= self._daemon.tick_interval:
                self._daemon.watchdog()
                last_ping = time.monotonic()
            time.sleep(0.2)
        self._daemon.stopping()
        if self._bus is not None:
            self._bus.stop()
        self._stop_all()
        return 0

    # -- the fleet's restart command ----------------------------------------------------------------------------

    def _listen_for_restarts(self) -> None:
        from edge.bus import Bus, Component

        self._bus = Bus(self.settings, Component.SUPERVISOR)
        self._bus.subscribe(self._bus.topics.command("restart"), self._requests.put, qos=1)
        self._bus.start(wait=5)

    def _restart_requested(self) -> None:
        from edge.bus.messages import CommandResult, ErrorBody, FleetCommand

        while not self._requests.empty():
            message = self._requests.get()
            if message.retain:
                continue
            try:
                name = str(FleetCommand.model_validate_json(message.payload or b"{}").args.get("component", ""))
            except ValueError:
                name = ""
            child = next((c for c in self.children if c.name == name and name in dict(self.modules)), None)
            if child is None:
                known = ", ".join(n for n, _ in self.modules)
                result = CommandResult(ok=False, error=ErrorBody(code="bad_request",
                                       message=f"component: one of {known}"))  # fmt: skip
            else:
                log.info("restarting %s (fleet command)", name)
                child.stop()
                child.start()
                child.failures = 0
                result = CommandResult(ok=True, result={"restarted": name})
            assert self._bus is not None
            self._bus.publish(self._bus.topics.command_result("restart"), result.to_bytes(), qos=1,
                              correlation=message.correlation)  # fmt: skip

    def _wait_ready(self) -> None:
        """Tell systemd (if any) that we are ready once the hub listens; log the address for the operator."""
        host = self.settings.http.host
        probe = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        deadline = time.monotonic() + 60
        while not self._stopping and time.monotonic() < deadline:
            if port_open(probe, self.settings.http.port):
                self._daemon.ready(f"facematch is up: http://{probe}:{self.settings.http.port}/")
                return
            self._tend()
            time.sleep(0.2)

    def _tend(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.process is None or child.process.poll() is None:
                if child.failures and now - child.started_at > STABLE_AFTER:
                    child.failures = 0
                continue
            if child.restart_at is None:
                delay = min(MAX_BACKOFF, 2.0**child.failures)
                child.failures += 1
                child.restart_at = now + delay
                log.warning("%s exited with code %s; restarting in %.0f s", child.name, child.process.returncode, delay)
            elif now >= child.restart_at:
                try:
                    child.start()
                    log.info("%s restarted", child.name)
                except (ServiceError, OSError) as exc:
                    log.error("could not restart %s: %s", child.name, exc)
                    child.restart_at = None

    def _stop_all(self) -> None:
        # Reverse order: the product's processes first, then the broker and Redis they talk to.
        for child in reversed(self.children):
            child.stop()
        log.info("all processes stopped")
