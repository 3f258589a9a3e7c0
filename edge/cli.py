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

# The product's processes that `facematch up` runs, in start order: (name, python module).
PROCESSES: list[tuple[str, str]] = [("inference", "edge.inference"), ("hub", "hub")]


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def cmd_up(args: argparse.Namespace) -> int:
    from edge.supervisor import Supervisor

    settings = _settings(args)
    setup_logging("up", settings.log_level)
    return Supervisor(settings, PROCESSES).run()


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
    from edge.bench.lfw import calibrate

    settings = _settings(args)
    setup_logging("calibrate", "WARNING")
    print(f"wrote {calibrate(settings, args.lfw_dir, args.impostor_images)}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    settings = _settings(args)
    setup_logging("bench", "WARNING")
    if args.bench == "lfw":
        from edge.bench.lfw import run_lfw

        result = run_lfw(settings, args.lfw_dir, args.pairs, args.detector)
        if args.json:
            print(json.dumps(result, indent=1))
        else:
            at = result["at_default_threshold"]
            print(
                f"LFW {result['pairs_file']}: {result['pairs']} pairs, {result['images']} images, "
                f"model {result['model']}, detector {result['detector']}\n"
                f"accuracy {100 * result['accuracy_mean']:.2f} % ± {100 * result['accuracy_std']:.2f} (10-fold)\n"
                f"TAR at FAR 1e-3: {100 * result['tar_at_far_1e-3']:.2f} %   AUC: {result['auc']:.5f}\n"
                f"at similarity_score {at['threshold']}: FMR {100 * at['false_match_rate']:.3f} %, "
                f"FNMR {100 * at['false_non_match_rate']:.2f} %\n"
                f"no face found: {result['no_face_images']} images ({result['no_face_handling']})\n"
                f"poor quality: {result['poor_quality_images']} images ({result['poor_quality_handling']})\n"
                f"{result['ms_per_image']:.1f} ms per image (decode + detect + quality + embed, 2 threads)"
            )
        return 0
    if args.bench == "match":
        from edge.bench import match

        result = match.run((args.photo1, args.photo2), args.runs, args.url, args.api_key, args.detector)
        print(json.dumps(result, indent=1) if args.json else match.report(result))
        return 0
    if args.bench == "liveness":
        from edge.bench import liveness

        result = liveness.run(args.video, args.runs, args.url, args.api_key)
        print(json.dumps(result, indent=1) if args.json else liveness.report(result))
        return 0
    if args.bench == "pad" and args.video:
        from edge.bench import pad_video
        from edge.inference.liveness import scoring_params
        from edge.vision.engine import FaceEngine
        from models import model_path

        if not pad_video.recordings(args.data):
            print(f"no face videos under {args.data}/gaze/eyegaze or {args.data}/video", file=sys.stderr)
            return 2
        landmarker = model_path(settings.models.dir, "face_landmarker")
        params = scoring_params(settings.liveness)[1]
        result = pad_video.run(args.data, FaceEngine(settings), landmarker, params, seed=args.seed)
        print(json.dumps(result, indent=1) if args.json else pad_video.report(result))
        return 0
    if args.bench == "pad":
        from edge.bench import pad
        from edge.vision.antispoof import MiniFasNetEnsemble
        from edge.vision.engine import make_detector

        ensemble = MiniFasNetEnsemble(
            settings.models.dir, settings.models.onnx_providers, settings.liveness.antispoof_threshold,
            args.rule or settings.liveness.antispoof_rule,
        )  # fmt: skip
        result = pad.run(args.data, make_detector(settings.matching.detector, settings.models.dir), ensemble)
        print(json.dumps(result, indent=1) if args.json else pad.report(result))
        return 0
    if args.bench == "gaze":
        from edge.bench import gaze
        from edge.inference.liveness import FRAME_INTERVAL, scoring_params
        from edge.vision.engine import FaceEngine
        from models import model_path

        params, _ = scoring_params(settings.liveness)
        sessions = gaze.find_sessions(args.data)
        if not sessions:
            print(f"no game_video_<ts>.mp4 with its game_coordinates_<ts>.csv under {args.data}", file=sys.stderr)
            return 2
        people = gaze.group_by_person([video for video, _ in sessions], FaceEngine(settings))
        result = gaze.run(
            people, model_path(settings.models.dir, "face_landmarker"), settings.paths.state_dir / "cache" / "gaze",
            params, settings.liveness.area_duration, args.trials, args.photo_trials,
            interval=FRAME_INTERVAL if args.interval is None else args.interval, screen=args.screen,
        )  # fmt: skip
        print(json.dumps(result, indent=1) if args.json else gaze.report(result))
        return 0
    return 2


def cmd_liveness(args: argparse.Namespace) -> int:

    from edge.inference.liveness import score_video, scoring_params
    from edge.liveness.challenge import SequenceError, check_issued
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
    try:
        params, presentation = scoring_params(settings.liveness)
        result = score_video(
            args.video, sequence, args.area_duration or settings.liveness.area_duration,
            model_path(settings.models.dir, "face_landmarker"), params, FaceEngine(settings), presentation,
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


def cmd_page_token(args: argparse.Namespace) -> int:
    from edge.errors import FacematchError
    from edge.store import Store
    from hub.routers.page import page_link
    from hub.security import PageTokens

    settings = _settings(args)
    if not 0 < args.hours <= 24 * 7:
        print("--hours must be more than 0 and at most 168 (a week)", file=sys.stderr)
        return 2
    host = "127.0.0.1" if settings.http.host in ("0.0.0.0", "::") else settings.http.host
    base = args.base_url or f"http://{host}:{settings.http.port}"
    try:
        issued = PageTokens(Store(settings.redis.url, socket_timeout=2.0)).create(int(args.hours * 3600), "cli")
    except FacematchError as exc:
        print(f"cannot issue a page token: {exc.message} (is `facematch up` running?)", file=sys.stderr)
        return 1
    print(f"Open this link on the kiosk or phone (valid {args.hours:g} h; liveness challenges only):")
    print(f"  {page_link(base, issued.token)}")
    return 0


def screen_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    try:
        size = int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, like 2560x1340, not {text!r}") from None
    if min(size) <= 0:
        raise argparse.ArgumentTypeError(f"a screen size must be positive, not {text!r}")
    return size


def build_parser() -> argparse.ArgumentParser:
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
    calibrate.set_defaults(func=cmd_calibrate)

    bench = sub.add_parser("bench", help="benchmarks that print their figures")
    bench.set_defaults(func=cmd_bench)
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    lfw = bench_sub.add_parser("lfw", help="LFW 10-fold verification accuracy through the API's pipeline")
    lfw.add_argument("--lfw-dir", type=Path, required=True)
    lfw.add_argument("--pairs", type=Path, help="pairs file (default: LFW_DIR/pairs.txt, View 2)")
    lfw.add_argument("--detector", choices=["yunet", "mtcnn"], help="override matching.detector")
    lfw.add_argument("--json", action="store_true")
    match = bench_sub.add_parser("match", help="/match latency end to end, against face_recognition in the same run")
    match.add_argument("photo1", type=Path)
    match.add_argument("photo2", type=Path)
    match.add_argument("--runs", type=int, default=30)
    match.add_argument("--url", help="a running hub (default: start `facematch up` on free ports)")
    match.add_argument("--api-key", help="X-API-Key for --url")
    match.add_argument("--detector", choices=["yunet", "mtcnn"], help="detector of the stack it starts")
    match.add_argument("--json", action="store_true")
    live = bench_sub.add_parser("liveness", help="/submit-liveness processing time for a 9 s 640x480 WebM")
    live.add_argument("video", type=Path, help="a face recording to cut the 9 s challenge video from")
    live.add_argument("--runs", type=int, default=10)
    live.add_argument("--url", help="a running hub (default: start `facematch up` on free ports)")
    live.add_argument("--api-key", help="X-API-Key for --url")
    live.add_argument("--json", action="store_true")
    pad = bench_sub.add_parser("pad", help="anti-spoofing APCER/BPCER/AUC on a labels.csv data set")
    pad.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder with labels.csv (../shared/data/spoof); with --video, the data folder (../shared/data)",
    )
    pad.add_argument(
        "--video",
        action="store_true",
        help="video-level verdict: genuine recordings against simulated print and screen attacks",
    )
    pad.add_argument("--rule", choices=["min", "mean"], help="override liveness.antispoof_rule")
    pad.add_argument("--seed", type=int, default=5, help="with --video: the draw of the simulated attacks")
    pad.add_argument("--json", action="store_true")
    gaze = bench_sub.add_parser("gaze", help="simulated gaze challenges from the EyeGaze recordings")
    gaze.add_argument("--data", type=Path, required=True, help="the data folder (with gaze/eyegaze)")
    gaze.add_argument("--trials", type=int, default=400, help="genuine/replay/random challenges per person")
    gaze.add_argument("--photo-trials", type=int, default=20, help="photo attacks (still and moved) per person")
    gaze.add_argument("--interval", type=float, help="seconds between tracked frames (default: the scorer's 0.1)")
    gaze.add_argument(
        "--screen", type=screen_size, default=(2560, 1340), metavar="WxH",
        help="the size of the target window the coordinates refer to (EyeGaze: 2560x1340)",
    )  # fmt: skip
    gaze.add_argument("--json", action="store_true")

    keys = sub.add_parser("keys", help="API keys for the HTTP API")
    keys.set_defaults(func=cmd_keys)
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="generate a key, store its hash, print it once")
    create.add_argument("--name", default="default")
    create.add_argument("--if-none", action="store_true", help="only when no key exists yet (install.sh)")
    keys_sub.add_parser("list", help="names and creation dates of the stored keys")
    revoke = keys_sub.add_parser("revoke", help="remove a key (by name or sha256 prefix); refused at once")
    revoke.add_argument("which", help="the key's name, or the first 8+ characters of its sha256 (keys list)")

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
        "--any-sequence", action="store_true", help="also score a sequence the server never issues (with a warning)"
    )
    score.add_argument("--json", action="store_true")
    score.set_defaults(func=cmd_liveness)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
