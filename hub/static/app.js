// facematch web challenge: start a session, light the 3 areas in turn while recording the camera, upload, show.
"use strict";

const $ = (id) => document.getElementById(id);
const show = (id) => ["intro", "challenge", "result"].forEach((s) => { $(s).hidden = s !== id; });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const keyInput = $("api-key");
keyInput.value = new URLSearchParams(location.search).get("key") || localStorage.getItem("facematch-key") || "";

function fail(text) {
  show("intro");
  $("message").textContent = text;
  $("message").hidden = false;
  $("start").disabled = false;
}

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { "X-API-Key": keyInput.value, ...(options.headers || {}) } });
  } catch (error) {
    throw new Error("The server cannot be reached. Check the network and try again.");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = body.error ? body.error.message : `HTTP ${response.status}`;
    throw new Error(response.status === 401 ? "The API key is missing or not valid." : detail);
  }
  return body;
}

async function openCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("This browser cannot use a camera here (a secure https:// page is needed).");
  }
  try {
    return await navigator.mediaDevices.getUserMedia({
      video: { facingMode: "user", width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } },
      audio: false,
    });
  } catch (error) {
    if (error.name === "NotAllowedError" || error.name === "SecurityError") {
      throw new Error("Camera permission was denied. Allow the camera for this page and try again.");
    }
    if (error.name === "NotFoundError" || error.name === "OverconstrainedError") {
      throw new Error("No camera was found. Connect a camera and try again.");
    }
    throw new Error(`The camera could not be started: ${error.message}`);
  }
}

function recorderFor(stream) {
  const types = ["video/webm;codecs=vp8", "video/webm;codecs=vp9", "video/webm", "video/mp4"];
  const mimeType = types.find((t) => window.MediaRecorder && MediaRecorder.isTypeSupported(t));
  if (!mimeType) throw new Error("This browser cannot record video (MediaRecorder is missing).");
  return new MediaRecorder(stream, { mimeType, videoBitsPerSecond: 1_500_000 });
}

async function runChallenge(session, stream) {
  show("challenge");
  $("preview").srcObject = stream;
  const cells = [...document.querySelectorAll(".cell")];
  for (let n = 3; n > 0; n -= 1) { $("status").textContent = `Starting in ${n}…`; await sleep(1000); }
  const recorder = recorderFor(stream);
  const chunks = [];
  recorder.ondataavailable = (event) => { if (event.data.size) chunks.push(event.data); };
  const stopped = new Promise((resolve) => { recorder.onstop = resolve; });
  const ms = session.area_duration * 1000;
  // The recording and the first highlight start together: the server times the windows from the first frame.
  recorder.start(250);
  for (const [index, cell] of session.sequence.entries()) {
    cells.forEach((c) => c.classList.toggle("lit", Number(c.dataset.cell) === cell));
    const until = performance.now() + ms;
    while (performance.now() < until) {
      $("status").textContent = `Look here · ${index + 1}/3 · ${Math.ceil((until - performance.now()) / 1000)} s`;
      await sleep(100);
    }
  }
  cells.forEach((c) => c.classList.remove("lit"));
  recorder.stop();
  await stopped;
  stream.getTracks().forEach((t) => t.stop());
  $("status").textContent = "Checking…";
  return new Blob(chunks, { type: recorder.mimeType });
}

function render(result) {
  show("result");
  const passed = result.result === "pass";
  $("verdict").textContent = passed ? "Liveness confirmed" : "Liveness not confirmed";
  $("verdict").className = passed ? "pass" : "fail";
  $("accuracy").textContent = `Overall accuracy ${(100 * result.overall_accuracy).toFixed(0)} %` +
    ` (processed in ${result.processing_time.toFixed(2)} s)`;
  const rows = result.sequence_results.map((a) =>
    `<tr><td>${a.area}</td><td>${a.frames_used}</td><td>${(100 * a.accuracy).toFixed(0)} %</td>` +
    `<td class="${a.passed ? "pass" : "fail"}">${a.passed ? "✓" : "✗"}</td></tr>`);
  document.querySelector("#areas tbody").innerHTML = rows.join("");
  $("reasons").innerHTML = result.reasons.map((r) => `<li>${r.message}</li>`).join("");
  document.body.dataset.result = result.result;
}

$("start").addEventListener("click", async () => {
  $("message").hidden = true;
  $("start").disabled = true;
  localStorage.setItem("facematch-key", keyInput.value);
  let stream;
  try {
    stream = await openCamera();
    const session = await api("/initiate-liveness", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
    });
    const video = await runChallenge(session, stream);
    const form = new FormData();
    form.append("session_id", session.session_id);
    form.append("video", video, video.type.includes("mp4") ? "challenge.mp4" : "challenge.webm");
    render(await api("/submit-liveness", { method: "POST", body: form }));
  } catch (error) {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    fail(error.message.startsWith("The ") || error.message.startsWith("This ") || error.message.startsWith("No ")
      || error.message.startsWith("Camera") ? error.message : `Upload or check failed: ${error.message}`);
  }
});

$("again").addEventListener("click", () => { show("intro"); $("start").disabled = false; });
