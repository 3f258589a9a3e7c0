"""Start a private ``redis-server`` or ``mosquitto`` on a loopback port, from the system packages.

Used by ``facematch up`` (when nothing answers at a local URL) and by the test fixtures.
"""

from __future__ import annotations

import ctypes
import getpass
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge.atomic import write_atomic

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


class ServiceError(Exception):
    """A service could not be started; the message says why and how to fix it."""


def die_with_parent() -> None:
    """In a child (``preexec_fn``): get SIGTERM when the parent dies, so a killed supervisor leaves no orphans."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux/glibc: the supervisor's own signal handling still stops children


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``. Returns True when it had to be killed."""
    if process is None or process.poll() is not None:
        return False
    process.terminate()
    try:
        process.wait(timeout)
        return False
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return True


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_local_host(host: str | None) -> bool:
    """True when ``host`` names this machine (loopback, its host name, or one of its addresses)."""
    if not host or host in ("localhost", socket.gethostname(), socket.getfqdn()):
        return True
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return False
    for address in addresses:
        if ipaddress.ip_address(address.split("%")[0]).is_loopback:
            return True
    try:
        own = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except socket.gaierror:
        own = set()
    return bool(addresses & own)


@dataclass
class LocalService:
    """A child server process with its config file and log in ``run_dir``."""

    name: str
    port: int
    run_dir: Path
    argv: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def start(self, timeout: float = 15.0) -> LocalService:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceError(f"{self.name} exited with code {self.process.returncode}: {self._log_tail()}")
            if port_open(LOOPBACK, self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise ServiceError(f"{self.name} did not listen on {LOOPBACK}:{self.port} within {timeout:g} s")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.process, timeout)

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:]) or "(empty log)"


def _binary(name: str, package: str) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)
    if not path:
        raise ServiceError(f"{name} is not installed: run ./install.sh (or apt-get install {package})")
    return path


def redis_service(port: int, run_dir: Path, *, persistent: bool, password: str | None = None) -> LocalService:
    """A loopback-only Redis; ``persistent`` keeps an append-only file in ``run_dir`` (the gallery lives there);
    ``password`` is required of every client (``requirepass``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "redis.conf"
    lines = [
        f"port {port}",
        f"bind {LOOPBACK}",
        "protected-mode yes",
        "daemonize no",
        f"dir {run_dir}",
        'logfile ""',  # stdout, which start() sends to redis.log
        'save ""',
        f"appendonly {'yes' if persistent else 'no'}",
    ]
    if password:
        lines.append(f"requirepass {password}")
    _write_private(config, "\n".join(lines) + "\n")
    binary = _binary("redis-server", "redis-server")
    return LocalService("redis", port, run_dir, [binary, str(config)])


def write_password_file(path: Path, logins: dict[str, str]) -> None:
    """A Mosquitto password file (mode 600) holding only the hashes of ``logins`` (user -> password)."""
    _write_private(path, "".join(f"{user}:{password}\n" for user, password in logins.items()))
    hashed = subprocess.run([_binary("mosquitto_passwd", "mosquitto"), "-U", str(path)], capture_output=True, text=True)
    if hashed.returncode != 0:
        path.unlink()
        raise ServiceError(f"mosquitto_passwd could not hash the passwords: {hashed.stderr.strip()}")


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds passwords), whole or not at all."""
    write_atomic(path, text, mode=0o600)


def mosquitto_service(
    port: int,
    run_dir: Path,
    *,
    logins: dict[str, str] | None = None,
    acl: str | None = None,
    bridge: list[str] | None = None,
    persistent: bool = False,
) -> LocalService:
    """A loopback-only Mosquitto. With ``logins`` (user -> password) every client must log in, and ``acl`` says what
    each user may read and write; without, anonymous clients may do anything (the test brokers). With a ``bridge`` or
    ``persistent``, sessions and queued messages are kept in ``run_dir`` across a restart."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "mosquitto.conf"
    auth = ["allow_anonymous true"]
    if logins:
        passwords = run_dir / "passwd"
        write_password_file(passwords, logins)
        auth = ["allow_anonymous false", f"password_file {passwords}"]
        if acl is not None:
            _write_private(run_dir / "acl", acl)
            auth.append(f"acl_file {run_dir / 'acl'}")
    lines = [
        f"listener {port} {LOOPBACK}",
        *auth,
        # With a bridge, QoS 1 messages queued for the central broker survive a restart of this one.
        *(["persistence true", f"persistence_location {run_dir}/"] if bridge or persistent else ["persistence false"]),
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
        # Mosquitto drops root privileges to its own user unless told to stay as the invoking one.
        f"user {getpass.getuser()}",
        *(["", *bridge] if bridge else []),
    ]
    _write_private(config, "\n".join(lines) + "\n")
    binary = _binary("mosquitto", "mosquitto")
    return LocalService("mosquitto", port, run_dir, [binary, "-c", str(config)])
