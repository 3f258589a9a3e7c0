"""``facematch subjects …`` against a running ``facematch up``, with real photos."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def subjects(url: str, key: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FACEMATCH_API_KEY": key}
    return subprocess.run([sys.executable, "-m", "edge.cli", "subjects", "--url", url, *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_enrol_list_export_delete_import_from_the_command_line(up_stack, faces_dir, tmp_path):
    url, key = up_stack
    photos = sorted((faces_dir / "lfw_official/images/Hans_Blix").glob("*.jpg"))[:2]
    no_face = faces_dir / "insightface/cpp-package/inspireface/test_res/data/crop/no_face.png"
    added = subjects(url, key, "add", "Hans Blix", *map(str, photos), str(no_face))
    assert added.returncode == 0, added.stderr
    assert "photo 1: added" in added.stdout and "photo 3: rejected (no face was found)" in added.stdout
    subject_id = added.stdout.split()[0]
    listed = subjects(url, key, "list")
    assert "Hans Blix" in listed.stdout and subject_id in listed.stdout
    archive = tmp_path / "gallery.zip"
    assert subjects(url, key, "export", str(archive)).returncode == 0 and archive.stat().st_size > 0
    assert subjects(url, key, "delete", subject_id).returncode == 0
    gone = subjects(url, key, "show", subject_id)
    assert gone.returncode == 1 and "unknown_subject" in gone.stderr
    imported = subjects(url, key, "import", str(archive))
    assert imported.returncode == 0 and "imported 1 subjects" in imported.stdout
    assert "Hans Blix" in subjects(url, key, "show", subject_id).stdout
    refused = subjects(url, "wrong-key", "list")
    assert refused.returncode == 1 and "invalid_api_key" in refused.stderr
    nothing = subjects(url, key, "add", "Nobody", str(no_face))
    assert nothing.returncode == 1 and "no_usable_photo" in nothing.stderr and "photo 1: rejected" in nothing.stderr
