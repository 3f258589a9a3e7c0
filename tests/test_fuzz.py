"""Fuzzing: the hub against its own OpenAPI schema (schemathesis, bounded), and the decoders and bus message parsers
with arbitrary bytes (hypothesis). Nothing may answer 5xx or raise anything but the product's own errors."""

import io

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import hub_client, wait_for_inference

# A gallery archive is sent as raw bytes, like any binary body.
schemathesis.serializer.alias("application/zip", "application/octet-stream")

# derandomize: CI runs the same cases every time (a failure found here is reproducible, never a coin toss).
BOUNDED = hypothesis_settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@pytest.fixture
def fuzzed_hub(settings, inference_worker):
    settings.api.rate_limit_per_key = "100000/minute"  # the fuzzer is one client: let every case through
    settings.api.rate_limit_per_address = "100000/minute"
    client = hub_client(settings)
    wait_for_inference(client)
    yield client
    client.__exit__(None, None, None)


def _operations() -> list[str]:
    """The operations of the hub's schema (the app is built, nothing is started)."""
    from edge.config import load_settings
    from hub.app import create_app

    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(load_settings(environ={})))
    return [result.ok().label for result in schema.get_all_operations()]


# Invalid input is generated where there is input to spoil: a GET or DELETE has only path and query strings, any
# bytes are a valid body for the archive import (its checks are tested in test_gallery_*), the re-embedding takes
# no input at all, and a stream's end and a gaze calibration request take only an id in the path (any string: an
# unknown one is a 404).
NOTHING_TO_SPOIL = ("GET ", "DELETE ", "POST /gallery/import", "POST /gallery/reembed",
                    "POST /submit-liveness/stream/{session_id}/end",
                    "POST /subjects/{subject_id}/gaze-calibration")  # fmt: skip
CASES = [(label, mode) for label in _operations() for mode in ("positive", "negative")
         if mode == "positive" or not label.startswith(NOTHING_TO_SPOIL)]  # fmt: skip


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_the_hub_holds_to_its_own_schema(fuzzed_hub, label, mode):
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_hub.app)
    operation = next(r.ok() for r in schema.get_all_operations() if r.ok().label == label)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

    @given(operation.as_strategy(generation_mode=GenerationMode(mode)))
    @BOUNDED
    def holds(case):
        case.call_and_validate(headers={"X-API-Key": fuzzed_hub.headers["X-API-Key"]}, checks=checks)

    holds()


# -- decoders -------------------------------------------------------------------------------------------------


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 90, 60)).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 90, 60)).save(buffer, "JPEG")
    return buffer.getvalue()


@st.composite
def damaged(draw, original: bytes) -> bytes:
    """A real image file, cut short and with some bytes changed."""
    data = bytearray(original[: draw(st.integers(0, len(original)))])
    for _ in range(draw(st.integers(0, 8))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@given(st.one_of(st.binary(max_size=2048), damaged(_png()), damaged(_jpeg())))
@BOUNDED
def test_the_image_decoder_answers_pixels_or_its_own_error(data):
    from edge.vision.decode import ImageError, decode_image

    try:
        pixels = decode_image(data, 1024)
    except ImageError as exc:
        assert exc.code in ("invalid_image", "empty_image", "image_too_large") and "<" not in str(exc)
    else:
        assert pixels.ndim == 3 and pixels.shape[2] == 3


@given(st.binary(max_size=4096))
@hypothesis_settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_the_video_decoder_answers_frames_or_its_own_error(tmp_path_factory, data):
    from edge.vision.video import VideoError, read_frames

    path = tmp_path_factory.mktemp("fuzz") / "v.webm"
    path.write_bytes(data)
    try:
        frames = list(read_frames(path, max_frames=30))
    except VideoError as exc:
        assert exc.code == "invalid_video"
    else:
        assert all(f.rgb.ndim == 3 for f in frames)


# -- bus message parsers --------------------------------------------------------------------------------------


@given(st.one_of(st.binary(max_size=512), st.dictionaries(st.text(max_size=8), st.integers()).map(
    lambda d: __import__("json").dumps(d).encode())))  # fmt: skip
@BOUNDED
def test_a_worker_answers_any_request_bytes_with_a_reply(settings, data):
    from edge.bus import Bus, Component, Message
    from edge.bus.messages import HealthResult, MatchRequest, RpcReply

    bus = Bus(settings, Component.INFERENCE, instance="fuzz")
    sent = []
    bus.publish = lambda topic, payload, **kwargs: sent.append(payload)  # capture, no broker needed
    handler = lambda request: HealthResult(version="1", instance="fuzz", models={}, loaded_at=0.0)  # noqa: E731
    bus._answer("match", MatchRequest, handler, Message("t", data, response_topic="r", correlation=b"c"))
    (reply,) = sent
    assert isinstance(reply, RpcReply) and (reply.ok or reply.error.code == "bad_request")


@given(st.binary(max_size=512))
@BOUNDED
def test_a_caller_turns_any_reply_bytes_into_a_result_or_a_product_error(settings, data):
    from concurrent.futures import Future

    from edge.bus import Bus, Component, Message
    from edge.bus.client import _Pending
    from edge.bus.messages import HealthResult
    from edge.errors import FacematchError

    bus = Bus(settings, Component.HUB, instance="fuzz")
    future: Future = Future()
    bus._pending[b"c"] = _Pending(future, HealthResult, "health", lambda: None)
    bus._on_reply(Message("t", data, correlation=b"c"))
    assert future.done()
    if future.exception() is not None:
        assert isinstance(future.exception(), FacematchError)
