"""The web challenge page in a real headless Chromium, fed a real face recording as its camera."""

import re
import subprocess
import time
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
BASE_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (install.sh --dev)"
)


@pytest.fixture(scope="module")
def fake_camera(data_dir, tmp_path_factory):
    """A y4m (what Chromium's fake camera reads) made from a real gaze recording."""
    source = data_dir / "gaze/eyegaze/both/game_video_1738773752.mp4"
    target = tmp_path_factory.mktemp("camera") / "camera.y4m"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-ss", "3", "-t", "16", "-i", str(source), "-r", "15", "-pix_fmt", "yuv420p",
         str(target)],
        check=True,
    )  # fmt: skip
    return target


@pytest.fixture(scope="module")
def playwright():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        yield p


def launch(playwright, *extra):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=BASE_ARGS + list(extra))


def launch_with_camera(playwright, video):
    """Chromium whose camera plays ``video`` (y4m) and whose permission prompt always says yes."""
    fake = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
    return launch(playwright, *fake, f"--use-file-for-fake-video-capture={video}")


def page_link(url: str, key: str) -> str:
    """What the operator does: issue a page token with a key and open the link it returns."""
    import httpx

    response = httpx.post(f"{url}/page-tokens", json={"hours": 1}, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    link = response.json()["url"]
    assert "#token=fmp_" in link
    return link


def test_the_challenge_runs_end_to_end_with_a_real_face(playwright, up_stack, fake_camera):
    url, key = up_stack
    ARTIFACTS.mkdir(exist_ok=True)
    browser = launch_with_camera(playwright, fake_camera)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(page_link(url, key))
        assert "#token" not in page.url  # taken out of the address bar
        assert "recorded" in page.text_content("#notice") and "sent" in page.text_content("#notice")
        page.click("#start")
        # The camera is previewed before anything is recorded.
        page.wait_for_selector("#camera-check:not([hidden])", timeout=15_000)
        page.wait_for_function("document.getElementById('camera-check').videoWidth > 0", timeout=15_000)
        page.screenshot(path=str(ARTIFACTS / "challenge-preview.png"))
        sent: list[tuple[float, str]] = []
        page.on("request", lambda request: sent.append((time.monotonic(), request.url)))
        page.click("#begin")
        page.wait_for_selector("#challenge:not([hidden])", timeout=15_000)
        page.wait_for_selector(".cell.lit", timeout=15_000)
        page.wait_for_timeout(1500)
        lit = page.eval_on_selector_all(".cell.lit", "cells => cells.map(c => Number(c.dataset.cell))")
        assert len(lit) == 1 and 1 <= lit[0] <= 6
        page.screenshot(path=str(ARTIFACTS / "challenge-grid.png"))
        page.wait_for_selector("body[data-result]", timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "challenge-result.png"))
        verdict = page.text_content("#verdict")
        assert verdict in ("Liveness confirmed", "Liveness not confirmed", "Please try again")
        assert page.locator("#areas tbody tr").count() == 3
        assert "Overall accuracy" in page.text_content("#accuracy")
        ticks = page.eval_on_selector_all("#areas tbody td:last-child", "cells => cells.map(c => c.textContent)")
        assert len(ticks) == 3
        if verdict != "Liveness confirmed":
            assert page.locator("#reasons li .hint").count() >= 1  # every failure says what to do next
        # The recording went to the server while the challenge ran, chunk after chunk, then its end.
        chunks = [(t, u) for t, u in sent if "/submit-liveness/stream/" in u and "index=" in u]
        ends = [t for t, u in sent if u.endswith("/end")]
        assert [re.search(r"index=(\d+)", u).group(1) for _, u in chunks] == [str(k) for k in range(len(chunks))]
        assert len(chunks) >= 10 and len(ends) == 1
        assert ends[0] - chunks[0][0] > 5  # the first chunk left seconds before the challenge ended
        assert not any(u.endswith("/submit-liveness") for _, u in sent)
    finally:
        browser.close()


def test_the_page_takes_no_api_key_and_asks_for_a_link_without_a_token(playwright, up_stack):
    url, key = up_stack
    browser = launch(playwright)
    try:
        page = browser.new_page()
        page.goto(f"{url}/?key={key}")  # the old way: a long-lived key in the query string, now ignored
        assert page.is_visible("#message") and "needs a link from the operator" in page.text_content("#message")
        assert page.is_disabled("#start") and page.locator("input").count() == 0
    finally:
        browser.close()


def message_after_start(browser, url: str, *, begin: bool = False) -> str:
    page = browser.new_context().new_page()
    page.goto(url)
    page.click("#start")
    if begin:
        page.wait_for_selector("#begin:not([hidden])", timeout=15_000)
        page.click("#begin")
    page.wait_for_selector("#message:not([hidden])", timeout=15_000)
    return page.text_content("#message")


def test_a_denied_camera_gets_a_clear_message(playwright, up_stack):
    url, key = up_stack
    # No camera permission granted and no fake consent UI: getUserMedia is denied.
    browser = launch(playwright, "--use-fake-device-for-media-stream")
    try:
        assert "Camera permission was denied" in message_after_start(browser, page_link(url, key))
    finally:
        browser.close()


def test_no_camera_gets_a_clear_message(playwright, up_stack):
    url, key = up_stack
    if list(Path("/dev").glob("video*")):
        pytest.skip("this machine has a camera")
    browser = launch(playwright, "--use-fake-ui-for-media-stream")  # consent given, but no device at all
    try:
        assert "No camera was found" in message_after_start(browser, page_link(url, key))
    finally:
        browser.close()


def test_a_wrong_or_expired_link_gets_a_clear_message(playwright, up_stack, fake_camera):
    url, _ = up_stack
    browser = launch_with_camera(playwright, fake_camera)
    try:
        message = message_after_start(browser, f"{url}/#token=fmp_not_a_token", begin=True)
        assert "page link is not valid or has expired" in message
    finally:
        browser.close()


def test_the_page_fits_a_phone(playwright, up_stack):
    url, key = up_stack
    browser = launch(playwright)
    try:
        page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
        page.goto(page_link(url, key))
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390
        assert page.is_visible("#start")
    finally:
        browser.close()


def test_no_external_resources():
    """The device may be offline: the page loads nothing from other hosts."""
    static = Path(__file__).resolve().parent.parent / "hub" / "static"
    for path in static.iterdir():
        assert not re.search(r"(src|href)=\"(https?:)?//", path.read_text()), path
        assert not re.search(r"fetch\(\s*[\"'`]https?://", path.read_text()), path


def test_the_operator_page_enrols_identifies_marks_and_deletes(playwright, up_stack, fake_camera, faces_dir):
    """The operator's page with a real face on the fake camera and a real photo from a file."""
    url, key = up_stack
    blair = sorted((faces_dir / "lfw_official/images/Tony_Blair").glob("*.jpg"))[0]
    browser = launch_with_camera(playwright, fake_camera)
    try:
        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(f"{url}/operator")
        page.fill("#api-key", "not-a-key")
        page.click("#login-form button")
        page.wait_for_selector("#message:not([hidden])")
        assert "not valid" in page.text_content("#message") and page.is_hidden("#workspace")
        page.fill("#api-key", key)
        page.click("#login-form button")
        page.wait_for_selector("#workspace:not([hidden])")
        # The person in front of the camera, from two camera shots.
        page.click("#camera-on")
        page.wait_for_function("document.getElementById('camera').videoWidth > 0", timeout=15_000)
        page.wait_for_timeout(500)
        page.click("#snap")
        page.wait_for_timeout(700)
        page.click("#snap")
        page.fill("#name", "Camera Person")
        page.click("#enrol-submit")
        page.wait_for_function("document.getElementById('message').textContent.includes('enrolled')", timeout=30_000)
        assert page.locator("#enrol-report li.added").count() >= 1
        # Another person from a file.
        page.set_input_files("#files", str(blair))
        page.wait_for_selector("#shots img")
        page.fill("#name", "Tony Blair")
        page.click("#enrol-submit")
        page.wait_for_function("document.getElementById('message').textContent.includes('Tony Blair enrolled')",
                               timeout=30_000)  # fmt: skip
        page.wait_for_function("document.querySelectorAll('#subjects tbody tr').length === 2")
        page.screenshot(path=str(ARTIFACTS / "operator-enrolled.png"), full_page=True)
        # Identify the camera person, then say that was not them.
        page.click("#identify")
        page.wait_for_function("document.getElementById('message').textContent.startsWith('Identified: Camera Person')",
                               timeout=30_000)  # fmt: skip
        page.wait_for_selector("#identifications button.not-this")
        page.screenshot(path=str(ARTIFACTS / "operator-identified.png"), full_page=True)
        page.click("#identifications button.not-this")
        page.wait_for_function("document.getElementById('message').textContent.startsWith('Noted')")
        # A gaze calibration is asked of the device's door flow (its outcome: tests/test_device_mode.py).
        page.click("#subjects tr:has-text('Camera Person') button.calibrate")
        page.wait_for_function("document.getElementById('message').textContent.includes('look at each square')")
        # Delete Tony Blair (the confirmation is accepted).
        page.click("#subjects tr:has-text('Tony Blair') button.delete")
        page.wait_for_function("document.querySelectorAll('#subjects tbody tr').length === 1")
        assert "Camera Person" in page.text_content("#subjects")
        page.screenshot(path=str(ARTIFACTS / "operator-after-delete.png"), full_page=True)
    finally:
        browser.close()
