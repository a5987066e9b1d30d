// The ferlab page: webcam frames or a chosen image -> POST /v1/predict -> boxes, labels, bars.
// Plain JavaScript, no build step. One request in flight at a time, at most one frame every FRAME_MS.
// "Explain" sends the current frame (or the chosen image) to POST /v1/explain and shows the largest
// face with its heat map.
"use strict";

const FRAME_MS = 200;        // the steady rate: at most 5 frames a second
const JPEG_QUALITY = 0.85;

const $ = (id) => document.getElementById(id);
const stage = $("stage"), video = $("video"), still = $("still"), overlay = $("overlay");
const frame = document.createElement("canvas");  // where camera frames are encoded to JPEG
const snapshot = document.createElement("canvas");  // the frame to explain, apart from the stream's
let stream = null, timer = null, limits = null, stillUrl = null, stillFile = null;
let generation = 0;  // bumped when the source changes: late answers for the old one are dropped

function setStatus(text, kind = "") {
  $("status").textContent = text;
  $("status").className = kind;
}

// ---- the API key, when the server wants one ----------------------------------------------

const KEY_ITEM = "ferlab-api-key";  // kept for this tab only (sessionStorage), sent as a Bearer token

// fetch() with the API key; a 401 asks for the key (once: a request refused while another
// one was asking retries with the key given there) and tries again with it.
async function api(path, options = {}) {
  const send = (key) => fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), ...(key ? { "Authorization": `Bearer ${key}` } : {}) },
  });
  const used = sessionStorage.getItem(KEY_ITEM);
  let response = await send(used);
  if (response.status === 401) {
    const now = sessionStorage.getItem(KEY_ITEM);
    const key = now && now !== used ? now : window.prompt(
      used ? "The API key was refused. Enter the server's API key:" : "This server needs an API key:");
    if (key && key.trim()) {
      sessionStorage.setItem(KEY_ITEM, key.trim());
      response = await send(key.trim());
    }
  }
  return response;
}

// ---- the model ---------------------------------------------------------------------------

async function showModel() {
  for (;;) {
    try {
      const response = await api("/v1/model");
      if (response.ok) {
        const info = await response.json();
        limits = info.limits;
        const parts = [`Model: ${info.name || info.source}`];
        if (info.version) parts.push(`version ${info.version}${info.alias ? ` (${info.alias})` : ""}`);
        if (info.test_metrics) {
          parts.push(`test accuracy ${(100 * info.test_metrics.accuracy).toFixed(1)}%, ` +
                     `macro-F1 ${info.test_metrics.macro_f1.toFixed(3)}`);
        }
        parts.push(`detector ${info.detector}`);
        $("model").textContent = parts.join(" · ");
        return;
      }
      if (response.status === 401) {
        $("model").textContent = "This server needs an API key: reload the page to enter it.";
        return;
      }
      if (response.status !== 503) throw new Error(`HTTP ${response.status}`);
      $("model").textContent = "The model is loading…";
    } catch (err) {
      $("model").textContent = `The server does not answer (${err.message}).`;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// ---- one request -------------------------------------------------------------------------

async function analyse(body, contentType) {
  const mine = generation;
  const headers = contentType ? { "Content-Type": contentType } : {};  // a FormData sets its own
  const started = performance.now();
  let response;
  try {
    response = await api("/v1/predict", { method: "POST", headers, body });
  } catch (err) {
    if (mine !== generation) return null;
    setStatus(`The server does not answer (${err.message}).`, "error");
    return null;
  }
  let data;
  try {
    data = await response.json();
  } catch {
    data = { detail: response.statusText };
  }
  const rtt = performance.now() - started;
  if (mine !== generation) return null;
  $("rtt").textContent = `${Math.round(rtt)} ms`;
  if (!response.ok) {
    clearResult();
    const kind = response.status === 503 ? "warn" : "error";
    setStatus(response.status === 503 ? `Waiting for the server: ${data.detail}`
                                      : `The server refused the image (HTTP ${response.status}): ${data.detail}`, kind);
    return null;
  }
  $("server-time").textContent = `(server ${Math.round(data.timing_ms.total)} ms)`;
  render(data);
  return data;
}

// ---- drawing -----------------------------------------------------------------------------

function percent(p) {
  return `${Math.round(100 * p)}%`;
}

function clearResult() {
  overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height);
  stage.dataset.faces = "";
  $("faces-list").replaceChildren();
  $("bars").replaceChildren();
}

function render(data) {
  const faces = data.faces;
  $("last-result").textContent = JSON.stringify(data);
  stage.dataset.faces = String(faces.length);

  // The overlay has the image's own pixel size; CSS stretches it over the video or image.
  if (overlay.width !== data.width || overlay.height !== data.height) {
    overlay.width = data.width;
    overlay.height = data.height;
  }
  const ctx = overlay.getContext("2d");
  ctx.clearRect(0, 0, overlay.width, overlay.height);
  const line = Math.max(2, Math.round(data.width / 240));
  const fontSize = Math.max(14, Math.round(data.width / 32));
  ctx.font = `bold ${fontSize}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  faces.forEach((face, i) => {
    const { x, y, w, h } = face.box;
    const color = i === 0 ? "#ffb000" : "#00c8ff";
    ctx.lineWidth = line;
    ctx.strokeStyle = color;
    ctx.strokeRect(x, y, w, h);
    const label = `${face.emotion} ${percent(face.probabilities[face.emotion])}`;
    const width = ctx.measureText(label).width + 8;
    const top = y - fontSize - 6 >= 0 ? y - fontSize - 6 : y + h;  // above the box, or below at the top edge
    ctx.fillStyle = color;
    ctx.fillRect(x - line / 2, top, width, fontSize + 6);
    ctx.fillStyle = "#000";
    ctx.fillText(label, x + 4, top + fontSize + 3);
  });

  $("faces-list").replaceChildren(...faces.map((face, i) => {
    const item = document.createElement("li");
    item.dataset.emotion = face.emotion;
    item.textContent = `${face.emotion} ${percent(face.probabilities[face.emotion])}` +
                       ` at (${face.box.x}, ${face.box.y}), ${face.box.w}×${face.box.h} px${i === 0 ? " (largest)" : ""}`;
    return item;
  }));
  drawBars(faces[0]);

  const where = stage.dataset.source === "camera" ? "Face the camera, with light on your face." : "Try another image.";
  if (faces.length === 0) setStatus(`No face found. ${where}`, "warn");
  else setStatus(`${faces.length} face${faces.length > 1 ? "s" : ""} found.`);
}

function drawBars(face) {
  if (!face) {
    $("bars").replaceChildren();
    return;
  }
  // the emotions in the model's order, as the API lists them (GET /v1/model: `emotions`)
  $("bars").replaceChildren(...Object.keys(face.probabilities).map((emotion) => {
    const p = face.probabilities[emotion];
    const row = document.createElement("div");
    row.className = emotion === face.emotion ? "bar top" : "bar";
    row.dataset.emotion = emotion;
    row.dataset.probability = p.toFixed(4);
    const name = document.createElement("span");
    name.textContent = emotion;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = percent(p);
    row.append(name, track, value);
    return row;
  }));
}

// ---- why: the heat map of the largest face ------------------------------------------------

const METHOD_NAMES = { gradcam: "Grad-CAM", occlusion: "occlusion" };

function showExplanation(state, text, png = null) {
  $("explain").dataset.state = state;
  $("explain-caption").textContent = text;
  $("explain-image").hidden = png === null;
  if (png !== null) $("explain-image").src = `data:image/png;base64,${png}`;
  else $("explain-image").removeAttribute("src");
}

function resetExplanation() {
  $("explain-button").disabled = !(stream || stillFile);
  showExplanation("", "Explain shows which regions of the largest face moved its emotion.");
}

async function currentImage() {
  if (stream && video.videoWidth > 0) {
    snapshot.width = video.videoWidth;
    snapshot.height = video.videoHeight;
    snapshot.getContext("2d").drawImage(video, 0, 0);
    const blob = await new Promise((resolve) => snapshot.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
    return blob ? { body: blob, headers: { "Content-Type": "image/jpeg" } } : null;
  }
  if (stillFile) {
    const form = new FormData();
    form.append("file", stillFile, stillFile.name);
    return { body: form, headers: {} };
  }
  return null;
}

async function explainCurrent() {
  const mine = generation;
  const image = await currentImage();
  if (!image) return;
  $("explain-button").disabled = true;
  showExplanation("busy", "Explaining…");
  let response, data;
  try {
    response = await api("/v1/explain", { method: "POST", ...image });
    data = await response.json().catch(() => ({ detail: response.statusText }));
  } catch (err) {
    data = { detail: `the server does not answer (${err.message})` };
  } finally {
    $("explain-button").disabled = !(stream || stillFile);
  }
  if (mine !== generation) return;  // the source changed meanwhile
  if (!response || !response.ok) {
    const status = response ? ` (HTTP ${response.status})` : "";
    showExplanation("error", `No explanation${status}: ${data.detail}`);
    return;
  }
  const face = data.faces[0];
  if (!face) {
    showExplanation("none", "No face to explain in this image.");
    return;
  }
  showExplanation("shown", `${face.emotion} ${percent(face.probabilities[face.emotion])}, by ` +
                           `${METHOD_NAMES[face.method] || face.method}: red marks the regions that moved ` +
                           `"${face.emotion}" most, blue those that did not.`, face.heatmap_png);
}

// ---- the camera --------------------------------------------------------------------------

function cameraProblem(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "The camera is not allowed. Allow it in the browser's site settings and press \"Use the camera\", or choose an image.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No camera is available. Choose an image instead.";
    case "NotReadableError":
      return "The camera is in use by another application, or cannot be read. Close it there, or choose an image.";
    default:
      return `The camera could not start (${(err && (err.name || err.message)) || "unknown error"}). Choose an image instead.`;
  }
}

async function startCamera() {
  stopCamera();
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("No camera is available here: browsers give the camera to https:// or localhost pages only. Choose an image instead.", "error");
    return;
  }
  setStatus("Asking for the camera…", "warn");
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
  } catch (err) {
    stream = null;
    setStatus(cameraProblem(err), "error");
    return;
  }
  video.srcObject = stream;
  try {
    await video.play();
  } catch (err) {
    stopCamera();
    setStatus(cameraProblem(err), "error");
    return;
  }
  showMedia("camera");
  clearResult();
  stillFile = null;
  resetExplanation();
  $("camera-stop").disabled = false;
  setStatus("Camera on; looking for faces…");
  nextFrame();
}

function stopCamera() {
  generation += 1;
  clearTimeout(timer);
  timer = null;
  if (stream) stream.getTracks().forEach((track) => track.stop());
  stream = null;
  video.srcObject = null;
  $("camera-stop").disabled = true;
  resetExplanation();
}

async function nextFrame() {
  const current = stream;
  if (!current) return;
  const started = performance.now();
  if (video.videoWidth > 0) {
    frame.width = video.videoWidth;
    frame.height = video.videoHeight;
    frame.getContext("2d").drawImage(video, 0, 0);
    const blob = await new Promise((resolve) => frame.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
    if (blob && stream === current) await analyse(blob, "image/jpeg");
  }
  if (stream === current) timer = setTimeout(nextFrame, Math.max(0, FRAME_MS - (performance.now() - started)));
}

// ---- a still image -----------------------------------------------------------------------

function showMedia(source) {
  stage.dataset.source = source;
  video.hidden = source !== "camera";
  still.hidden = source !== "file";
}

async function analyseFile(file) {
  stillFile = null;
  stopCamera();  // also drops any answer still coming for the camera
  clearResult();
  if (limits && file.size > limits.max_upload_bytes) {
    setStatus(`${file.name} is ${(file.size / 1048576).toFixed(1)} MB, above the server's limit of ` +
              `${(limits.max_upload_bytes / 1048576).toFixed(1)} MB. Choose a smaller image.`, "error");
    return;
  }
  if (stillUrl) URL.revokeObjectURL(stillUrl);
  stillUrl = URL.createObjectURL(file);
  still.src = stillUrl;
  stillFile = file;
  resetExplanation();
  showMedia("file");
  setStatus(`Looking for faces in ${file.name}…`, "warn");
  const form = new FormData();
  form.append("file", file, file.name);
  await analyse(form, null);
}

// ---- wiring ------------------------------------------------------------------------------

$("camera-start").addEventListener("click", startCamera);
$("camera-stop").addEventListener("click", () => {
  stopCamera();
  setStatus("Camera stopped.");
});
$("explain-button").addEventListener("click", explainCurrent);
$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) analyseFile(file);
});
showModel();
startCamera();
