// facematch operator page: enrol people from the camera or from files, see and delete them, and look at the most
// recent identifications (with "this is not X" for a wrong name).
//
// Authorisation: an API key typed by the operator, kept in sessionStorage (this tab only), sent as X-API-Key. The page
// needs no CDN and no other origin: everything it loads is served by the hub.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "facematch-api-key";
const PAGE = 20;
let offset = 0;
let stream = null;
const shots = []; // base64 JPEGs taken from the camera or read from files

function say(text) {
  $("message").textContent = text || "";
  $("message").hidden = !text;
}

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
  return node;
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, {
      ...options,
      headers: { "X-API-Key": sessionStorage.getItem(KEY) || "", "Content-Type": "application/json",
                 ...(options.headers || {}) },
    });
  } catch (error) {
    throw new Error("The device cannot be reached.");
  }
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    signedIn(false);
    throw new Error("The API key is not valid (or was revoked). Sign in again.");
  }
  if (!response.ok) {
    const error = new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    error.body = body.error;
    throw error;
  }
  return body;
}

function signedIn(yes) {
  $("login").hidden = yes;
  $("workspace").hidden = !yes;
  if (yes) { refresh(); }
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("api-key").value.trim());
  $("api-key").value = "";
  try {
    await api("/subjects?limit=1");
    say("");
    signedIn(true);
  } catch (error) { say(error.message); }
});

// -- enrolment ----------------------------------------------------------------------------------------------------

$("camera-on").addEventListener("click", async () => {
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } } });
    $("camera").srcObject = stream;
    $("snap").disabled = false;
    $("identify").disabled = false;
    $("camera-on").hidden = true;
  } catch (error) {
    say("The camera cannot be used here: " + error.message);
  }
});

function frameAsJpeg() {
  const video = $("camera");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  return canvas.toDataURL("image/jpeg", 0.92);
}

function addShot(dataUrl) {
  shots.push(dataUrl);
  $("shots").append(el("img", null, { src: dataUrl, alt: `photo ${shots.length}` }));
}

$("snap").addEventListener("click", () => {
  if (!$("camera").videoWidth) { say("The camera has no picture yet."); return; }
  addShot(frameAsJpeg());
});

$("files").addEventListener("change", () => {
  Array.from($("files").files).forEach((file) => {
    const reader = new FileReader();
    reader.onload = () => addShot(reader.result);
    reader.readAsDataURL(file);
  });
  $("files").value = "";
});

function reportPhotos(photos) {
  const list = $("enrol-report");
  list.replaceChildren();
  photos.forEach((p) => {
    const why = (p.reasons || []).map((r) => r.message).join("; ");
    list.append(el("li", `photo ${p.index + 1}: ${p.status}${why ? " — " + why : ""}`, { class: p.status }));
  });
}

$("enrol-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!shots.length) { say("Take or choose at least one photo."); return; }
  $("enrol-submit").disabled = true;
  try {
    const body = await api("/subjects", { method: "POST",
      body: JSON.stringify({ name: $("name").value.trim(), photos: shots }) });
    reportPhotos(body.photos);
    say(`${body.subject.name} enrolled with ${body.faces} photo(s).`);
    shots.length = 0;
    $("shots").replaceChildren();
    $("name").value = "";
    refresh();
  } catch (error) {
    if (error.body && error.body.photos) reportPhotos(error.body.photos);
    say(error.message);
  } finally {
    $("enrol-submit").disabled = false;
  }
});

// -- people -------------------------------------------------------------------------------------------------------

async function loadSubjects() {
  const body = await api(`/subjects?offset=${offset}&limit=${PAGE}`);
  $("total").textContent = `(${body.total})`;
  const rows = $("subjects").tBodies[0];
  rows.replaceChildren();
  for (const s of body.subjects) {
    const detail = (await api(`/subjects/${encodeURIComponent(s.subject_id)}`)).subject;
    const sharpness = detail.face_list.map((f) => f.quality.sharpness).filter((x) => x !== undefined);
    const quality = sharpness.length ? Math.round(Math.min(...sharpness)) + " (lowest)" : "—";
    const row = el("tr", null, { "data-subject": s.subject_id });
    // Faces made with another model or profile are not used: such a person needs new photos (or `subjects reembed`).
    const photos = s.faces_for_model === 0 && s.faces > 0 ? "0 — needs new photos (model changed)" : (s.faces_for_model ?? s.faces);
    row.append(el("td", s.name), el("td", photos), el("td", quality),
      el("td", new Date(s.created * 1000).toLocaleString()));
    const remove = el("button", "Delete", { type: "button", class: "small delete" });
    remove.addEventListener("click", async () => {
      if (!confirm(`Delete ${s.name} and every photo and record of them?`)) return;
      try { await api(`/subjects/${encodeURIComponent(s.subject_id)}`, { method: "DELETE" }); refresh(); }
      catch (error) { say(error.message); }
    });
    const calibrate = el("button", detail.gaze_calibration ? "Recalibrate gaze" : "Calibrate gaze",
      { type: "button", class: "small calibrate" });
    calibrate.addEventListener("click", () => calibrateGaze(s));
    const cell = el("td");
    cell.append(calibrate, " ", remove);
    row.append(cell);
    rows.append(row);
  }
  $("prev").disabled = offset === 0;
  $("next").disabled = offset + PAGE >= body.total;
}

// The person's gaze calibration runs on the device: they stand at its camera while its display lights each square.
async function calibrateGaze(subject) {
  const path = `/subjects/${encodeURIComponent(subject.subject_id)}/gaze-calibration`;
  try {
    await api(path, { method: "POST" });
  } catch (error) { say(error.message); return; }
  say(`Ask ${subject.name} to stand at the door's camera and look at each square as it lights up.`);
  const until = Date.now() + 150_000;
  while (Date.now() < until) {
    await new Promise((done) => setTimeout(done, 1000));
    let request;
    try { request = (await api(path)).request || {}; } catch (error) { say(error.message); return; }
    if (request.state === "saved") { say(`Gaze calibration saved for ${subject.name}.`); refresh(); return; }
    if (request.state === "failed") {
      say(`Gaze calibration for ${subject.name} did not work: ${request.reasons.join(", ").replaceAll("_", " ")}.`);
      return;
    }
    if (request.state === "running") say(`Calibrating ${subject.name}: the squares are lit on the door's display.`);
  }
  say(`No outcome yet for ${subject.name}; check again later.`);
}

$("prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); loadSubjects(); });
$("next").addEventListener("click", () => { offset += PAGE; loadSubjects(); });

// -- recent identifications ---------------------------------------------------------------------------------------

async function loadIdentifications() {
  const body = await api("/identifications?count=20");
  const rows = $("identifications").tBodies[0];
  rows.replaceChildren();
  for (const i of body.identifications) {
    const row = el("tr", null, { "data-identification": i.identification_id });
    const result = i.outcome === "identified" ? i.name : `unknown (${i.reason.replaceAll("_", " ")})`;
    const score = i.similarity_score === null ? "—" : i.similarity_score.toFixed(2);
    row.append(el("td", new Date(i.time * 1000).toLocaleTimeString()), el("td", result), el("td", score));
    const cell = el("td");
    if (i.outcome === "identified") {
      const wrong = el("button", `This is not ${i.name}`, { type: "button", class: "small not-this" });
      wrong.addEventListener("click", async () => {
        try {
          await api(`/subjects/${encodeURIComponent(i.subject_id)}/negatives`, { method: "POST",
            body: JSON.stringify({ identification_id: i.identification_id }) });
          say(`Noted: this face will not be given the name ${i.name} again.`);
        } catch (error) { say(error.message); }
      });
      cell.append(wrong);
    }
    row.append(cell);
    rows.append(row);
  }
}

$("identify").addEventListener("click", async () => {
  try {
    const body = await api("/identify", { method: "POST", body: JSON.stringify({ image: frameAsJpeg() }) });
    say(body.outcome === "identified" ? `Identified: ${body.subject.name}` : `Unknown: ${body.reason.message}`);
  } catch (error) { say(error.message); }
  loadIdentifications();
});

async function refresh() {
  try { await Promise.all([loadSubjects(), loadIdentifications()]); }
  catch (error) { say(error.message); }
}

signedIn(Boolean(sessionStorage.getItem(KEY)));
