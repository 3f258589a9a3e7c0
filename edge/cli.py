"""facematch: a face-recognition door appliance and its HTTP API.

Run everything on this machine with `facematch up`; check the installation with `facematch doctor`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge import __version__
from edge.config import ConfigError, Settings, load_settings
from edge.logs import setup_logging


def _benches() -> list:
    from edge.bench import fleet, gaze, gaze_calibration, identify, idle, lfw, live, liveness, load, match, pad

    return [lfw, match, liveness, pad, gaze, gaze_calibration, load, identify, live, idle, fleet]


# The product's processes that `facematch up` runs, in start order: (name, python module).
PROCESSES: list[tuple[str, str]] = [("inference", "edge.inference"), ("hub", "hub"), ("camera", "edge.camera")]
DISPLAY_PROCESS = ("display", "display")


def processes(settings: Settings) -> list[tuple[str, str]]:
    """What `up` runs: the display only where there is a screen to show it on (or when display.enabled says so)."""
    import glob
    import os

    wanted = settings.display.enabled
    if wanted is None:
        wanted = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or glob.glob("/dev/dri/card*")
                      or os.environ.get("SDL_VIDEODRIVER"))  # fmt: skip
    door = settings.door.relay.enabled or settings.door.osdp.enabled
    return PROCESSES + ([DISPLAY_PROCESS] if wanted else []) + ([("door", "edge.door")] if door else [])


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def cmd_up(args: argparse.Namespace) -> int:
    from edge.supervisor import Supervisor

    settings = _settings(args)
    setup_logging("up", settings.log_level)
    return Supervisor(settings, processes(settings)).run()


def cmd_doctor(args: argparse.Namespace) -> int:
    from edge.doctor import FAIL, report, run_checks

    checks = run_checks(_settings(args))
    print(report(checks))
    return 1 if any(c.level == FAIL for c in checks) else 0


def cmd_models(args: argparse.Namespace) -> int:
    from models import fetch

    settings = _settings(args)
    if args.models_command == "list":
        return fetch.list_models(settings)
    if args.models_command == "verify":
        return fetch.verify(settings)
    try:
        return fetch.fetch(settings, args.names, everything=args.all)
    except fetch.FetchError as exc:
        print(exc, file=sys.stderr)
        return 2


def cmd_calibrate(args: argparse.Namespace) -> int:
    from edge.bench.lfw import calibrate, profile_settings

    settings = _settings(args)
    if args.profile:
        settings = profile_settings(settings, args.profile)
    setup_logging("calibrate", "WARNING")
    print(f"wrote {calibrate(settings, args.lfw_dir, args.impostor_images)}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edge.bench.result import BenchError

    settings = _settings(args)
    setup_logging("bench", "WARNING")
    try:
        result = args.bench_main(args, settings)
    except BenchError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(result.to_json() if args.json else result.report())
    return 0


def cmd_liveness(args: argparse.Namespace) -> int:

    from edge.inference.liveness import score_video, scoring_params
    from edge.liveness.challenge import Challenge, SequenceError, check_issued
    from edge.vision.engine import FaceEngine
    from edge.vision.video import VideoError
    from models import model_path

    settings = _settings(args)
    setup_logging("liveness", "WARNING")
    try:
        sequence = [int(cell) for cell in args.sequence.split(",")]
    except ValueError:
        print(f"--sequence takes cells 1..6 separated by commas, like 3,1,5; not {args.sequence!r}", file=sys.stderr)
        return 2
    try:
        check_issued(sequence)
    except SequenceError as exc:
        if not args.any_sequence:
            print(f"refused: {exc}. The validator is designed and measured for those only; --any-sequence scores "
                  "it anyway.", file=sys.stderr)  # fmt: skip
            return 2
        print(f"warning: {exc}; scored anyway (--any-sequence), unlike /submit-liveness", file=sys.stderr)
    area_duration = args.area_duration or settings.liveness.area_duration
    durations = None
    if args.durations:
        try:  # checked now, by the challenge's own rule, rather than after the models have loaded
            durations = [float(seconds) for seconds in args.durations.split(",")]
            Challenge(tuple(sequence), area_duration, tuple(durations))
        except ValueError as exc:
            print(f"--durations takes one length in seconds per cell, like 2.7,3.3,3.0 for {len(sequence)} cells; "
                  f"not {args.durations!r} ({exc})", file=sys.stderr)  # fmt: skip
            return 2
    try:
        params, presentation = scoring_params(settings.liveness)
        result = score_video(
            args.video, sequence, area_duration, model_path(settings.models.dir, "face_landmarker"), params,
            FaceEngine(settings), presentation, durations=durations,
        )  # fmt: skip
    except (ValueError, VideoError) as exc:
        print(f"cannot score {args.video}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(result.model_dump_json(indent=1))
    else:
        print(f"{result.result.upper()}  overall accuracy {result.overall_accuracy:.3f}")
        for area in result.sequence_results:
            mark = "passed" if area.passed else "failed"
            print(f"  area {area.area}: accuracy {area.accuracy:.3f} over {area.frames_used} frames, {mark}")
        for reason in result.reasons:
            print(f"  reason: {reason.code}: {reason.message} (what to do: {reason.hint})")
        pad = result.anti_spoofing
        if pad.checked:
            print(f"  anti-spoofing: live probability {pad.live_probability} over {pad.frames_scored} frames")
        print(f"  {result.frames_processed} frames tracked in {result.tracking_time:.2f} s")
    return 0 if result.result == "pass" else 1


def cmd_keys(args: argparse.Namespace) -> int:
    import json

    from hub.security import create_key, revoke_keys

    settings = _settings(args)
    keys_file = settings.api.keys_file
    existing = json.loads(keys_file.read_text()).get("keys", []) if keys_file.exists() else []
    if args.keys_command == "revoke":
        gone = revoke_keys(keys_file, args.which)
        if not gone:
            print(f"no key named {args.which!r} or with a hash starting so in {keys_file}", file=sys.stderr)
            return 1
        for entry in gone:
            print(f"revoked {entry['name']} (sha256 {entry['sha256'][:12]}…): refused from now on")
        return 0
    if args.keys_command == "list":
        for entry in existing:
            print(f"{entry['name']:<20} created {entry['created']}  sha256 {entry['sha256'][:12]}…")
        if not existing:
            print(f"no keys in {keys_file} (create one: facematch keys create)")
        return 0
    if args.if_none and existing:
        print(f"{keys_file} already holds {len(existing)} key(s); none created")
        return 0
    key = create_key(keys_file, args.name)
    print(f"API key '{args.name}' (shown once; only its hash is kept in {keys_file}):")
    print(f"  {key}")
    return 0


def cmd_credentials(args: argparse.Namespace) -> int:
    from edge.credentials import credentials_path, ensure

    settings = _settings(args)
    path = credentials_path(settings)
    existed = path.exists()
    ensure(path, rotate=args.credentials_command == "rotate")
    if args.credentials_command == "rotate":
        print(f"new passwords in {path}; restart `facematch up` (or the units) for the broker and Redis to use them")
    else:
        print(f"{'kept' if existed else 'created'} {path} (mode 600): broker logins per component, Redis password")
    return 0


def cmd_door(args: argparse.Namespace) -> int:
    from edge.door.__main__ import osdp_key_path
    from edge.door.osdp import OsdpError, load_or_create_key

    settings = _settings(args)
    path = osdp_key_path(settings)
    existed = path.exists()
    try:
        key = load_or_create_key(path)
    except (OsdpError, OSError, ValueError) as exc:
        print(f"cannot read the OSDP key: {exc}", file=sys.stderr)
        return 1
    print(f"{'kept' if existed else 'created'} {path} (mode 600). Enter this secure-channel key (SCBK) for the reader "
          f"at address {settings.door.osdp.address} on the panel:")  # fmt: skip
    print(f"  {key.hex().upper()}")
    return 0


def cmd_bridge_config(args: argparse.Namespace) -> int:
    from edge.atomic import write_atomic
    from edge.credentials import BRIDGE_USER, credentials_path, ensure
    from edge.fleet.bridge import bridge_lines

    settings = _settings(args)
    if not settings.mqtt.central_url:
        if args.if_configured:
            # The unit runs at every boot: a device taken off the fleet loses its stale bridge too.
            if args.output is not None and args.output.exists():
                args.output.unlink()
                print(f"no central broker configured: removed {args.output}")
            return 0
        print("no central broker configured: set CENTRAL_MQTT_URL (mqtt.central_url)", file=sys.stderr)
        return 1
    creds = ensure(credentials_path(settings))
    text = "# facematch: the bridge to the central broker (facematch bridge-config)\n"
    text += "\n".join(bridge_lines(settings, creds.mqtt.get(BRIDGE_USER))) + "\n"
    if args.output is None:
        print(text, end="")
        return 0
    write_atomic(args.output, text, mode=0o640)  # it holds the bridge's passwords
    print(f"wrote {args.output}; restart mosquitto for it to take effect")
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    from edge.fleet import tool

    return tool.main(args)


def cmd_subjects(args: argparse.Namespace) -> int:
    from edge import subjects_cli

    return subjects_cli.main(args, _settings(args))


def cmd_page_token(args: argparse.Namespace) -> int:
    from edge.credentials import redis_url
    from edge.errors import FacematchError
    from edge.store import Store
    from hub.routers.page import page_link
    from hub.security import PageTokens

    settings = _settings(args)
    if not 1 / 60 <= args.hours <= 24 * 7:
        print("--hours must be at least 1/60 (a minute) and at most 168 (a week)", file=sys.stderr)
        return 2
    host = "127.0.0.1" if settings.http.host in ("0.0.0.0", "::") else settings.http.host
    base = args.base_url or f"http://{host}:{settings.http.port}"
    try:
        issued = PageTokens(Store(redis_url(settings), socket_timeout=2.0)).create(int(args.hours * 3600), "cli")
    except FacematchError as exc:
        print(f"cannot issue a page token: {exc.message} (is `facematch up` running?)", file=sys.stderr)
        return 1
    print(f"Open this link on the kiosk or phone (valid {args.hours:g} h; liveness challenges only):")
    print(f"  {page_link(base, issued.token)}")
    return 0


def build_parser(with_benches: bool = True) -> argparse.ArgumentParser:
    """The command line. The benches' own options need their modules (OpenCV, MediaPipe…: half a second), so
    ``main`` builds them only for a `bench` command."""
    parser = argparse.ArgumentParser(
        prog="facematch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"facematch {__version__}")
    parser.add_argument("--config", help="config file (default: $FACEMATCH_CONFIG or config.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "up",
        help="run everything on this machine (starts Redis/Mosquitto if needed)",
        description="Start the inference daemon and the HTTP hub, and Redis and Mosquitto when nothing answers at "
        "their configured local addresses (loopback only, data in the state directory). Restarts a process that "
        "dies; Ctrl-C or SIGTERM stops everything. Refuses to start when the HTTP port or the state directory is "
        "already in use.",
    ).set_defaults(func=cmd_up)
    sub.add_parser(
        "doctor",
        help="check what is installed, reachable or missing",
        description="Check Python, Redis, the broker, OpenCV, ONNX Runtime, the models, API keys, a live inference "
        "worker, the hub, the camera and the display; print the fix for each problem. Exit code 1 when something "
        "required fails.",
    ).set_defaults(func=cmd_doctor)
    models = sub.add_parser("models", help="fetch, list or verify model weights")
    models.set_defaults(func=cmd_models)
    models_sub = models.add_subparsers(dest="models_command", required=True)
    fetch = models_sub.add_parser("fetch", help="fetch the default models (or those named), verifying sha256")
    fetch.add_argument("names", nargs="*", help="models to fetch (default: every default model)")
    fetch.add_argument("--all", action="store_true", help="also the optional models")
    models_sub.add_parser("list", help="every model of the manifest: role, size, licence, fetched or not")
    models_sub.add_parser("verify", help="check the sha256 of every fetched model")
    calibrate = sub.add_parser("calibrate", help="fit the similarity-score calibration of the embedding model on LFW")
    calibrate.add_argument("--lfw-dir", type=Path, required=True, help="folder with images/, pairs*.txt")
    calibrate.add_argument("--impostor-images", type=int, default=3000, help="images sampled for impostor pairs")
    calibrate.add_argument("--profile", choices=["fast", "accurate"],
                           help="the matching profile to calibrate (default: matching.profile)")  # fmt: skip
    calibrate.set_defaults(func=cmd_calibrate)

    bench = sub.add_parser("bench", help="benchmarks that print their figures")
    bench.set_defaults(func=cmd_bench)
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    for module in _benches() if with_benches else []:
        module.add_parser(bench_sub)
    for bench_parser in bench_sub.choices.values():
        bench_parser.add_argument("--json", action="store_true", help="print the typed result as JSON")

    keys = sub.add_parser("keys", help="API keys for the HTTP API")
    keys.set_defaults(func=cmd_keys)
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="generate a key, store its hash, print it once")
    create.add_argument("--name", default="default")
    create.add_argument("--if-none", action="store_true", help="only when no key exists yet (install.sh)")
    keys_sub.add_parser("list", help="names and creation dates of the stored keys")
    revoke = keys_sub.add_parser("revoke", help="remove a key (by name or sha256 prefix); refused at once")
    revoke.add_argument("which", help="the key's name, or the first 8+ characters of its sha256 (keys list)")

    credentials = sub.add_parser(
        "credentials", help="the broker logins and Redis password of the services `facematch up` runs"
    )
    credentials.set_defaults(func=cmd_credentials)
    credentials_sub = credentials.add_subparsers(dest="credentials_command", required=True)
    credentials_sub.add_parser("init", help="create them unless they exist (install.sh does)")
    credentials_sub.add_parser("rotate", help="replace every password (takes effect when up restarts)")

    door = sub.add_parser("door", help="door outputs")
    door.set_defaults(func=cmd_door)
    door_sub = door.add_subparsers(dest="door_command", required=True)
    door_sub.add_parser("osdp-key", help="print (making it once) the OSDP reader's secure-channel key for the panel")
    from edge import subjects_cli, system
    from edge.fleet import tool as fleet_tool

    fleet_tool.add_parser(sub)
    sub.choices["fleet"].set_defaults(func=cmd_fleet)
    bridge = sub.add_parser("bridge-config", help="the Mosquitto bridge section for CENTRAL_MQTT_URL (a drop-in)")
    bridge.add_argument("--output", type=Path, help="write it here (atomically, mode 640) instead of printing it")
    bridge.add_argument("--if-configured", action="store_true",
                        help="no central broker: remove --output and succeed (for the systemd unit)")  # fmt: skip
    bridge.set_defaults(func=cmd_bridge_config)
    subjects_cli.add_parser(sub)
    sub.choices["subjects"].set_defaults(func=cmd_subjects)
    system.add_parser(sub)
    sub.choices["system"].set_defaults(func=cmd_system)
    page_token = sub.add_parser(
        "page-token", help="a link that lets the web page run liveness challenges for a while (kiosk, phone)"
    )
    page_token.add_argument("--hours", type=float, default=12.0, help="how long the link works (default 12)")
    page_token.add_argument("--base-url", help="the page's address as the browser sees it (default: this hub's)")
    page_token.set_defaults(func=cmd_page_token)

    liveness = sub.add_parser("liveness", help="liveness tools")
    liveness_sub = liveness.add_subparsers(dest="liveness_command", required=True)
    score = liveness_sub.add_parser("score", help="score a challenge video exactly as /submit-liveness does")
    score.add_argument("video", type=Path)
    score.add_argument("--sequence", required=True, help="the highlighted cells, e.g. 3,1,5")
    score.add_argument("--area-duration", type=float, help="seconds per cell (default AREA_DURATION)")
    score.add_argument(
        "--durations",
        help="each window's own length, as the challenge's schedule gave it (e.g. 2.7,3.3,3.0; default: every window "
        "lasts --area-duration)",
    )
    score.add_argument(
        "--any-sequence", action="store_true", help="also score a sequence the server never issues (with a warning)"
    )
    score.add_argument("--json", action="store_true")
    score.set_defaults(func=cmd_liveness)
    return parser


def cmd_system(args: argparse.Namespace) -> int:
    from edge import system

    return system.run(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(with_benches="bench" in (sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
