// facematch web challenge: preview the camera, start a session, light the 3 areas in turn while recording and
// streaming the recording to the server, show the verdict with what to do next.
//
// Authorisation: the operator opens the page with a short-lived page token in the URL's fragment (/#token=…, made by
// `facematch page-token`). A fragment is never sent to the server, so the token is in no access log; the page keeps it
// in sessionStorage and takes it out of the address bar. No API key is ever typed into or stored by this page.
"use strict";

const $ = (id) => document.getElementById(id);
const show = (id) => ["intro", "challenge", "result"].forEach((s) => { $(s).hidden = s !== id; });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const NEEDS_LINK = "This page needs a link from the operator (facematch page-token). Ask for one and open it here.";

function pageToken() {
  const fromFragment = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromFragment) {
    sessionStorage.setItem("facematch-page-token", fromFragment);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("facematch-page-token");
}

const token = pageToken();
let stream = null;

function fail(text) {
  show("intro");
  $("message").textContent = text;
  $("message").hidden = false;
  $("start").disabled = false;
  $("begin").disabled = false;
}

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { "X-Page-Token": token || "", ...(options.headers || {}) } });
  } catch (error) {
    throw new Error("The server cannot be reached. Check the network and try again.");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = body.error ? body.error.message : `HTTP ${response.status}`;
    throw new Error(response.status === 401 ? "The page link is not valid or has expired. " +
      "Ask the operator for a new one." : detail);
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

// The recording goes to the server while the challenge runs, in the recorder's own chunks (in order, one request at a
// time), so the verdict is ready a moment after the last highlight instead of after a whole upload and scoring.
function chunkUploader(session) {
  const base = `/submit-liveness/stream/${encodeURIComponent(session.session_id)}`;
  let index = 0;
  let queue = Promise.resolve();
  let failure = null;
  return {
    send(chunk) {
      const k = index++;
      queue = queue.then(() => failure || api(`${base}?index=${k}`, {
        method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: chunk,
      })).catch((error) => { failure = failure || error; });
    },
    async finish() {
      await queue;
      if (failure) throw failure;
      return api(`${base}/end`, { method: "POST" });
    },
  };
}

async function runChallenge(session) {
  show("challenge");
  $("preview").srcObject = stream;
  const cells = [...document.querySelectorAll(".cell")];
  for (let n = 3; n > 0; n -= 1) { $("status").textContent = `Starting in ${n}…`; await sleep(1000); }
  const recorder = recorderFor(stream);
  const upload = chunkUploader(session);
  recorder.ondataavailable = (event) => { if (event.data.size) upload.send(event.data); };
  const stopped = new Promise((resolve) => { recorder.onstop = resolve; });
  // Each window's length is drawn by the server (schedule); an older server sends the sequence and area_duration.
  const schedule = session.schedule || session.sequence.map((cell, k) =>
    ({ cell, start: k * session.area_duration, end: (k + 1) * session.area_duration }));
  // The recording and the first highlight start together: the server times the windows from the first frame.
  recorder.start(500);
  const began = performance.now();
  for (const [index, window] of schedule.entries()) {
    cells.forEach((c) => c.classList.toggle("lit", Number(c.dataset.cell) === window.cell));
    const until = began + window.end * 1000;
    while (performance.now() < until) {
      $("status").textContent = `Look here · ${index + 1}/3 · ${Math.ceil((until - performance.now()) / 1000)} s`;
      await sleep(Math.min(100, Math.max(0, until - performance.now())));
    }
  }
  cells.forEach((c) => c.classList.remove("lit"));
  recorder.stop();
  await stopped;
  stopCamera();
  $("status").textContent = "Checking…";
  return upload.finish();
}

function render(result) {
  show("result");
  const passed = result.result === "pass";
  // try_again: the picture could not be read (too dark, too far, face lost); the reasons say what to change.
  const retry = result.outcome === "try_again";
  $("verdict").textContent = passed ? "Liveness confirmed" : retry ? "Please try again" : "Liveness not confirmed";
  $("verdict").className = passed ? "pass" : retry ? "retry" : "fail";
  $("accuracy").textContent = `Overall accuracy ${(100 * result.overall_accuracy).toFixed(0)} %` +
    ` (processed in ${result.processing_time.toFixed(2)} s)`;
  const rows = result.sequence_results.map((a) =>
    `<tr><td>${a.area}</td><td>${a.frames_used}</td><td>${(100 * a.accuracy).toFixed(0)} %</td>` +
    `<td class="${a.passed ? "pass" : "fail"}">${a.passed ? "✓" : "✗"}</td></tr>`);
  document.querySelector("#areas tbody").innerHTML = rows.join("");
  const reasons = $("reasons");
  reasons.replaceChildren(...result.reasons.map((r) => {
    const item = document.createElement("li");
    item.textContent = r.message;
    if (r.hint) {
      const hint = document.createElement("span");
      hint.className = "hint";
      hint.textContent = `What to do: ${r.hint}`;
      item.append(hint);
    }
    return item;
  }));
  document.body.dataset.result = result.result;
}

function stopCamera() {
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = null;
  $("camera-check").hidden = true;
  $("begin").hidden = true;
  $("start").hidden = false;
}

function friendly(error) {
  const text = error.message;
  return ["The ", "This ", "No ", "Camera"].some((p) => text.startsWith(p)) ? text : `Upload or check failed: ${text}`;
}

// Step 1: the camera preview, so the person can see they are in view before anything is recorded.
$("start").addEventListener("click", async () => {
  $("message").hidden = true;
  $("start").disabled = true;
  try {
    stream = await openCamera();
    $("camera-check").srcObject = stream;
    $("camera-check").hidden = false;
    $("start").hidden = true;
    $("begin").hidden = false;
    $("begin").disabled = false;
  } catch (error) {
    stopCamera();
    fail(friendly(error));
  }
});

// Step 2: the challenge itself; recording starts with the first highlighted area.
$("begin").addEventListener("click", async () => {
  $("message").hidden = true;
  $("begin").disabled = true;
  try {
    const session = await api("/initiate-liveness", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
    });
    render(await runChallenge(session));
  } catch (error) {
    stopCamera();
    fail(friendly(error));
  }
});

$("again").addEventListener("click", () => { stopCamera(); show("intro"); $("start").disabled = false; });

if (!token) {
  $("start").disabled = true;
  $("message").textContent = NEEDS_LINK;
  $("message").hidden = false;
}
