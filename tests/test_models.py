import hashlib

import pytest

from edge.config import load_settings
from models.fetch import FetchError, fetch_one, local_dirs
from models.manifest import ModelMissing, ModelSpec, Source, load_manifest, model_path


def test_manifest_pins_every_model():
    manifest = load_manifest()
    for name in ("yunet", "sface", "face_landmarker", "minifasnet_v2", "minifasnet_v1se"):
        spec = manifest.models[name]
        assert len(spec.sha256) == 64 and spec.license and spec.size > 0
        assert spec.sources[0].kind == "local"
        assert any(s.kind == "url" for s in spec.sources), f"{name} has no canonical URL"


@pytest.mark.parametrize("name", ["mbf", "gaze_net"])
def test_non_commercial_weights_are_never_fetched_by_default_and_say_so(name, capsys):
    from models.fetch import list_models, required_by

    spec = load_manifest().models[name]
    assert not spec.default and spec.restricted_use and "non-commercial" in spec.license.lower()
    default = load_settings(environ={})
    assert name not in required_by(default)
    list_models(default)
    (line,) = [row for row in capsys.readouterr().out.splitlines() if row.startswith(f"{name} ")]
    assert "non-commercial" in line
    if name == "mbf":  # only the accurate profile asks for it, and `models list` names that profile
        accurate = load_settings(environ={"FACEMATCH_MATCHING__PROFILE": "accurate"})
        assert "mbf" in required_by(accurate) and " accurate " in line


def spec_for(content: bytes, **extra) -> ModelSpec:
    return ModelSpec(
        name="toy", role="test", file="toy.bin", sha256=hashlib.sha256(content).hexdigest(), size=len(content),
        license="test", sources=[Source(kind="local")], **extra,
    )  # fmt: skip


def test_fetch_from_local_folder_verifies_the_hash(tmp_path):
    source, dest = tmp_path / "src", tmp_path / "dest"
    source.mkdir()
    (source / "toy.bin").write_bytes(b"weights")
    settings = load_settings(environ={"FACEMATCH_MODELS_DIR": str(source)})
    settings.models.dir = dest
    path = fetch_one(spec_for(b"weights"), settings, tmp_path / "work", say=lambda _: None)
    assert path == dest / "toy.bin" and path.read_bytes() == b"weights"
    # A second fetch finds it in place.
    messages = []
    fetch_one(spec_for(b"weights"), settings, tmp_path / "work", say=messages.append)
    assert "already present" in messages[0]


def test_a_file_with_another_hash_is_refused(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "toy.bin").write_bytes(b"tampered")
    settings = load_settings(environ={"FACEMATCH_MODELS_DIR": str(source)})
    settings.models.dir = tmp_path / "dest"
    with pytest.raises(FetchError, match=r"sha256 .* refused"):
        fetch_one(spec_for(b"weights"), settings, tmp_path / "work", say=lambda _: None)
    assert not (tmp_path / "dest" / "toy.bin").exists()


def test_local_dirs_put_the_configured_folder_first(tmp_path):
    settings = load_settings(environ={"FACEMATCH_MODELS_DIR": str(tmp_path)})
    assert local_dirs(settings)[0] == tmp_path


def test_missing_model_names_the_fetch_command(tmp_path):
    with pytest.raises(ModelMissing, match=r"model 'sface' .* run `facematch models fetch sface`"):
        model_path(tmp_path, "sface")
    with pytest.raises(ModelMissing, match="unknown model"):
        model_path(tmp_path, "nonsense")


def test_fetched_default_models_verify(model_settings, capsys):
    from models.fetch import verify

    assert verify(model_settings) == 0
    assert "sface            ok" in capsys.readouterr().out


def test_tensorrt_gets_an_engine_cache_in_the_state_directory_and_other_providers_pass_unchanged(tmp_path):
    from edge.vision.onnx import configured_providers

    cache = tmp_path / "tensorrt"
    providers = configured_providers(
        ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], cache
    )
    name, options = providers[0]
    assert name == "TensorrtExecutionProvider" and options["trt_engine_cache_enable"] is True
    assert options["trt_engine_cache_path"] == str(cache)
    assert providers[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
