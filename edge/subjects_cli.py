"""``facematch subjects …``: the gallery from the command line, through the hub's HTTP API (the same checks, the same
errors, the same change events as the operator page). Needs an API key: ``--api-key`` or ``FACEMATCH_API_KEY``."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from edge.config import Settings


class CliError(Exception):
    pass


def _client(args: argparse.Namespace, settings: Settings) -> httpx.Client:
    key = args.api_key or os.environ.get("FACEMATCH_API_KEY")
    if not key:
        raise CliError("an API key is needed: --api-key KEY or FACEMATCH_API_KEY (facematch keys create makes one)")
    host = "127.0.0.1" if settings.http.host in ("0.0.0.0", "::") else settings.http.host
    url = args.url or f"http://{host}:{settings.http.port}"
    return httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=args.timeout)


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise CliError(f"the hub at {client.base_url} cannot be reached ({exc}); is `facematch up` running?") from None
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError):
            raise CliError(f"HTTP {response.status_code}: {response.text[:200]}") from None
        lines = [f"{error['code']}: {error['message']}"]
        for photo in error.get("photos", []):
            lines.append(_photo_line(photo))
        raise CliError("\n".join(lines))
    return response


def _photos(paths: list[Path]) -> list[str]:
    encoded = []
    for path in paths:
        try:
            encoded.append(base64.b64encode(path.read_bytes()).decode())
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror}") from None
    return encoded


def _photo_line(photo: dict[str, Any]) -> str:
    why = "; ".join(r["message"] for r in photo.get("reasons", []))
    return f"  photo {photo['index'] + 1}: {photo['status']}" + (f" ({why})" if why else "")


def _print_subject(subject: dict[str, Any]) -> None:
    print(f"{subject['subject_id']}  {subject['name']}  faces {subject['faces']}  negatives {subject['negatives']}")


def _calibrate(client: httpx.Client, subject_id: str, wait: float) -> None:
    """Queue a gaze calibration and follow it until it is saved or failed (or ``wait`` seconds pass)."""
    path = f"/subjects/{subject_id}/gaze-calibration"
    _call(client, "POST", path)
    print("calibration requested: the person stands at the camera and looks at each square as it lights up")
    deadline, said = time.monotonic() + wait, None
    while time.monotonic() < deadline:
        request = _call(client, "GET", path).json()["request"] or {}
        state = request.get("state")
        if state != said:
            said = state
            print(f"  {state}" + (f": {', '.join(request['reasons'])}" if request.get("reasons") else ""))
        if state == "saved":
            result = request["result"]
            print(f"saved: gain {result['gain']:.4f} per column, row gap {result['row_gap']:.4f}")
            return
        if state == "failed":
            raise CliError(f"calibration failed: {', '.join(request.get('reasons') or ['unknown'])}")
        time.sleep(0.5)
    raise CliError(f"no outcome within {wait:.0f} s; `facematch subjects calibrate` can be run again")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.subjects_command == "keygen":
        from edge.store.sealing import create_key_file

        try:
            create_key_file(args.path)
        except FileExistsError:
            raise CliError(f"{args.path} exists; it is never overwritten (that would lock the gallery)") from None
        print(f"wrote a new gallery key to {args.path} (mode 600); set gallery.key_file to it before enrolling")
        return 0
    with _client(args, settings) as client:
        command = args.subjects_command
        if command == "list":
            body = _call(client, "GET", "/subjects", params={"offset": args.offset, "limit": args.limit}).json()
            for subject in body["subjects"]:
                _print_subject(subject)
            print(f"{len(body['subjects'])} of {body['total']} subjects (from {body['offset']})")
        elif command in ("add", "add-photos"):
            payload = {"photos": _photos(args.photos), "allow_mixup": args.allow_mixup}
            if command == "add":
                body = _call(client, "POST", "/subjects", json={"name": args.name, **payload}).json()
            else:
                body = _call(client, "POST", f"/subjects/{args.subject_id}/faces", json=payload).json()
            _print_subject(body["subject"])
            for photo in body["photos"]:
                print(_photo_line(photo))
        elif command == "show":
            print(json.dumps(_call(client, "GET", f"/subjects/{args.subject_id}").json()["subject"], indent=1))
        elif command == "rename":
            _print_subject(_call(client, "PATCH", f"/subjects/{args.subject_id}", json={"name": args.name}).json()
                           ["subject"])  # fmt: skip
        elif command == "delete":
            _call(client, "DELETE", f"/subjects/{args.subject_id}")
            print(f"erased {args.subject_id}: faces, photos, negatives and identifications naming it")
        elif command == "not":
            body = {"identification_id": args.identification} if args.identification else \
                {"image": _photos([args.photo])[0]}  # fmt: skip
            result = _call(client, "POST", f"/subjects/{args.subject_id}/negatives", json=body).json()
            print(f"marked: {result['negatives']} face(s) are now 'not {args.subject_id}'")
        elif command == "export":
            with client.stream("GET", "/gallery/export") as response:
                if response.status_code >= 400:
                    response.read()
                    raise CliError(f"HTTP {response.status_code}: {response.text[:200]}")
                with args.file.open("wb") as target:
                    for chunk in response.iter_bytes():
                        target.write(chunk)
            print(f"wrote {args.file} ({args.file.stat().st_size} bytes); it holds biometric templates: keep it safe")
        elif command == "import":
            data = args.file.read_bytes()
            body = _call(client, "POST", "/gallery/import", content=data,
                         headers={"Content-Type": "application/zip"}).json()  # fmt: skip
            print(f"imported {body['subjects']} subjects ({body['replaced']} replaced), {body['faces']} faces")
            for subject in body.get("needs_new_photos", []):
                print(f"  needs new photos (no face for this model): {subject['name']} ({subject['subject_id']})")
            if body.get("reembed_pending"):
                print(f"  {body['reembed_pending']}")
        elif command == "calibrate":
            _calibrate(client, args.subject_id, args.wait)
        elif command == "reembed":
            body = _call(client, "POST", "/gallery/reembed").json()
            print(f"model {body['model']}: {sum(body['reembedded'].values())} faces of {len(body['reembedded'])} "
                  "subjects embedded from kept photos")  # fmt: skip
            for subject in body["needs_new_photos"]:
                print(f"  needs new photos (no face for this model): {subject['name']} ({subject['subject_id']})")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    subjects = sub.add_parser("subjects", help="enrolled people: list, add, rename, delete, export, import")
    subjects.add_argument("--url", help="the hub (default: this device's, from the config)")
    subjects.add_argument("--api-key", help="default: $FACEMATCH_API_KEY")
    subjects.add_argument("--timeout", type=float, default=120.0)
    commands = subjects.add_subparsers(dest="subjects_command", required=True)
    listing = commands.add_parser("list", help="subjects, a page at a time")
    listing.add_argument("--offset", type=int, default=0)
    listing.add_argument("--limit", type=int, default=100)
    add = commands.add_parser("add", help="enrol a person from photos (each photo's fate is printed)")
    add.add_argument("name")
    add.add_argument("photos", type=Path, nargs="+")
    add.add_argument("--allow-mixup", action="store_true", help="add faces that already look like another subject")
    more = commands.add_parser("add-photos", help="add photos to a subject")
    more.add_argument("subject_id")
    more.add_argument("photos", type=Path, nargs="+")
    more.add_argument("--allow-mixup", action="store_true")
    commands.add_parser("show", help="one subject and its faces").add_argument("subject_id")
    rename = commands.add_parser("rename", help="give a subject another name")
    rename.add_argument("subject_id")
    rename.add_argument("name")
    commands.add_parser("delete", help="erase a subject and every trace of it").add_argument("subject_id")
    negative = commands.add_parser("not", help="'this is not X': a face that must not be given this name")
    negative.add_argument("subject_id")
    which = negative.add_mutually_exclusive_group(required=True)
    which.add_argument("--identification", help="a recent identification's id (GET /identifications)")
    which.add_argument("--photo", type=Path, help="a photo of the person who is not the subject")
    commands.add_parser("export", help="the whole gallery to a zip archive").add_argument("file", type=Path)
    commands.add_parser("import", help="a gallery archive (same ids are replaced)").add_argument("file", type=Path)
    calibrate = commands.add_parser(
        "calibrate", help="the person's gaze calibration on this device (they look at each lit cell on the display)"
    )
    calibrate.add_argument("subject_id")
    calibrate.add_argument("--wait", type=float, default=150.0, help="seconds to follow it (default 150)")
    commands.add_parser("reembed", help="after a profile or model change: embed kept photos; list who needs new ones")
    commands.add_parser("keygen", help="a new key file for encrypting the gallery at rest").add_argument(
        "path", type=Path
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return run(args, settings)
    except CliError as exc:
        print(str(exc), file=sys.stderr)
        return 1
