// fkp-serve's page: a photo or the webcam through the server's API (facial_keypoints/serve/app.py).
// What the page shows is also in window.fkp (the browser test reads it).
"use strict";

const $ = (id) => document.getElementById(id);
const fkp = window.fkp = {
  info: null, message: null,
  photo: { name: null, json: null, faces: [] },
  camera: { running: false, frames: 0, fps: 0, faces: [], track: [], error: null },
};

// -- messages ----------------------------------------------------------------------------
function say(text, kind = "error") {
  const box = $("message");
  fkp.message = text ? { text, kind } : null;
  box.hidden = !text;
  box.textContent = text || "";
  box.className = kind === "info" ? "info" : "";
}

async function reason(response) {   // the API's one-line reason for a refused request
  try { return String((await response.json()).detail); } catch { return `${response.status} ${response.statusText}`; }
}

// -- options -----------------------------------------------------------------------------
function query(extra = {}) {
  const q = new URLSearchParams({ detector: $("detector").value, markup: $("markup").value });
  for (const [k, v] of Object.entries(extra)) if (v) q.set(k, v);
  return q.toString();
}

function fill(select, values, chosen) {
  for (const v of values) select.add(new Option(v, v, false, v === chosen));
}

async function start() {
  const response = await fetch("/api/info");
  const info = fkp.info = await response.json();
  fill($("detector"), info.detectors, info.detectors[0]);
  fill($("markup"), info.markups, info.markup);
  fill($("filter"), info.filters, null);
  $("model").textContent = `model: ${info.model.split(/[\\/]/).pop()} (version ${info.version})`;
  for (const id of ["detector", "markup"]) $(id).addEventListener("change", () => { redoPhoto(); restartCamera(); });
  $("filter").addEventListener("change", () => { redoPhoto(); cameraFilter(); });
}

// -- drawing -----------------------------------------------------------------------------
function drawFaces(ctx, faces) {
  const colors = fkp.info.colors, regions = fkp.info.regions;
  for (const face of faces) {
    if (!face.keypoints) continue;
    const xs = face.keypoints.map((p) => p[0]);
    const r = Math.max(2, (Math.max(...xs) - Math.min(...xs)) / 70);
    ctx.lineWidth = Math.max(1, r / 2 + 1);
    ctx.strokeStyle = "rgb(0,255,0)";
    ctx.strokeRect(...face.box);
    for (const [region, idx] of Object.entries(regions)) {
      ctx.fillStyle = `rgb(${colors[region].join(",")})`;
      for (const i of idx) {
        const [x, y] = face.keypoints[i];
        ctx.beginPath(); ctx.arc(x + 0.5, y + 0.5, r, 0, 2 * Math.PI); ctx.fill();
      }
    }
    if (face.id !== undefined) {
      ctx.fillStyle = "rgb(0,255,0)";
      ctx.font = `${Math.max(12, face.box[3] / 8)}px sans-serif`;
      ctx.fillText(`#${face.id}`, face.box[0], face.box[1] - 4);
    }
  }
}

function fit(canvas, width, height) {   // resized only when it must be (resizing clears it)
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
}

function show(canvas, picture, faces) {   // the picture, and the faces drawn unless a filter did it
  fit(canvas, picture.width, picture.height);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(picture, 0, 0);
  if (faces) drawFaces(ctx, faces);
}

const fixed = (v, d) => (v === null || v === undefined ? "–" : v.toFixed(d));

// -- a photo -----------------------------------------------------------------------------
let photoFile = null;

async function post(path, file, extra) {
  const form = new FormData();
  form.append("file", file, file.name);
  return fetch(`${path}?${query(extra)}`, { method: "POST", body: form });
}

async function annotatedPicture(file) {
  const response = await post("/api/annotated", file, { filter: $("filter").value });
  if (!response.ok) throw new Error(await reason(response));
  return response.blob();
}

function clearPhoto() {   // nothing shown that is not the file just chosen
  photoFile = null;
  Object.assign(fkp.photo, { name: null, json: null, faces: [] });
  fit($("photo-canvas"), 0, 0);
  $("faces").hidden = true;
  $("photo-summary").textContent = "";
  $("download-json").disabled = $("download-picture").disabled = true;
}

async function usePhoto(file) {
  say(null);
  clearPhoto();
  $("photo-summary").textContent = `Reading ${file.name}…`;
  const response = await post("/api/faces", file);
  if (!response.ok) {   // e.g. not an image: the page keeps working for the next one
    const detail = await reason(response);
    say(detail.startsWith(`${file.name}:`) ? detail : `${file.name}: ${detail}`);
    $("photo-summary").textContent = "";
    return;
  }
  photoFile = file;
  const json = await response.json();
  const entry = json.images[0];
  const filter = $("filter").value;
  const picture = await createImageBitmap(filter ? await annotatedPicture(file) : file,
                                          { imageOrientation: "from-image" });
  show($("photo-canvas"), picture, filter ? null : entry.faces);
  const n = entry.faces.length;
  $("photo-summary").textContent = `${file.name}: ${entry.width} × ${entry.height} px, ${n} face${n === 1 ? "" : "s"}`;
  if (!n) say("No face was found in this picture.", "info");
  const body = $("faces").tBodies[0];
  body.replaceChildren(...entry.faces.map((f, i) => {
    const row = body.insertRow();
    for (const text of [`${i + 1}`, f.box.map((v) => v.toFixed(0)).join(", "), fixed(f.score, 2),
                        fixed(f.confidence, 2), f.roll === null ? "–" : `${f.roll.toFixed(1)}°`])
      row.insertCell().textContent = text;
    return row;
  }));
  $("faces").hidden = !n;
  $("download-json").disabled = $("download-picture").disabled = false;
  Object.assign(fkp.photo, { name: file.name, json, faces: entry.faces });   // shown: all done
}

function redoPhoto() { if (photoFile) usePhoto(photoFile).catch((e) => say(String(e.message || e))); }

function download(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob); a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

const stem = (name) => name.replace(/\.[^.]*$/, "");

// -- the webcam --------------------------------------------------------------------------
// One frame in flight per socket: the next camera frame is sent when the last one's answer is
// drawn. A socket's state lives in its own object, so an old socket (after Stop or a change of
// detector) can never send on, or draw over, the new one.
let session = null, stream = null, starting = false;
const replies = [];
const grab = document.createElement("canvas");   // the frame in flight, drawn under its faces

async function startCamera() {
  if (starting || fkp.camera.running) return;    // a second click while the camera starts
  starting = true;
  $("camera-start").disabled = true;
  say(null);
  try {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      return say("This browser gives the page no camera: open it as http://localhost:… or over https.");
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
    } catch (e) {
      fkp.camera.error = e.name;
      if (e.name === "NotAllowedError" || e.name === "SecurityError")
        return say("Camera access was denied: allow the camera for this page in the browser's site settings, then press Start camera again.");
      if (e.name === "NotFoundError" || e.name === "OverconstrainedError" || e.name === "NotReadableError")
        return say("No usable camera was found (absent, or in use by another program): connect one, or try a photo instead.");
      return say(`The camera could not start (${e.name}: ${e.message}).`);
    }
    const video = $("video");
    video.srcObject = stream;
    await video.play();
    fkp.camera.running = true;
    $("camera-stop").disabled = false;
    openSocket();
  } finally {
    starting = false;
    $("camera-start").disabled = fkp.camera.running;
  }
}

function openSocket() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const s = session = { ws: new WebSocket(`${scheme}://${location.host}/api/camera?${query({ filter: $("filter").value })}`),
                        waiting: false, sentAt: 0 };
  s.ws.binaryType = "blob";
  s.ws.onopen = () => sendFrame(s);
  s.ws.onmessage = (event) => received(s, event.data).catch((e) => { say(String(e.message || e)); nextFrame(s); });
  s.ws.onclose = (event) => {
    if (session !== s || !fkp.camera.running) return;
    say(event.code === 1008 && event.reason ? event.reason   // refused: the server says why
      : "The connection to the server was lost: press Stop, then Start camera again.");
  };
}

function sendFrame(s) {   // the camera's next new frame, once the previous one is answered
  if (session !== s || !fkp.camera.running || s.waiting) return;
  const video = $("video");
  if (s.ws.readyState !== WebSocket.OPEN || !video.videoWidth) {
    if (s.ws.readyState === WebSocket.CONNECTING || !video.videoWidth) requestAnimationFrame(() => sendFrame(s));
    return;
  }
  fit(grab, video.videoWidth, video.videoHeight);
  grab.getContext("2d").drawImage(video, 0, 0);
  s.waiting = true;
  s.sentAt = performance.now();
  grab.toBlob((blob) => {
    if (session === s && blob && s.ws.readyState === WebSocket.OPEN) s.ws.send(blob);
    else nextFrame(s);
  }, "image/jpeg", 0.85);
}

function nextFrame(s) {   // a frame is sent once, so frames/s counts the camera's own frames
  s.waiting = false;
  if (session !== s) return;
  const video = $("video");
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(() => sendFrame(s));
  else requestAnimationFrame(() => sendFrame(s));
}

async function received(s, data) {
  if (session !== s) return;
  if (typeof data !== "string") {   // the filtered frame that follows its JSON
    try { show($("camera-canvas"), await createImageBitmap(data), null); } finally { nextFrame(s); }
    return;
  }
  const reply = JSON.parse(data);
  if (reply.frame === undefined) {   // a settings reply
    if (reply.error) say(reply.error);
    return;
  }
  const cam = fkp.camera;
  cam.frames += 1; cam.faces = reply.faces; cam.last = reply;
  const now = performance.now();
  replies.push(now);
  while (replies.length && replies[0] < now - 1000) replies.shift();
  cam.fps = replies.length;
  cam.track.push({ t: now, frame: reply.frame, ms: reply.ms, rtt: now - s.sentAt, faces: reply.faces.map((f) => ({ id: f.id, box: f.box, keypoints: f.keypoints })) });
  if (cam.track.length > 600) cam.track.shift();
  $("fps").textContent = `${cam.fps} frames/s`;
  $("camera-summary").textContent = `${reply.faces.length} face(s); server ${reply.ms ?? "–"} ms per frame`;
  if (reply.error) say(reply.error);
  if (reply.picture) return;          // drawn when the picture comes
  show($("camera-canvas"), grab, reply.faces);   // one frame in flight: grab still holds it
  nextFrame(s);
}

function stopCamera() {
  fkp.camera.running = false;
  if (session) { const s = session; session = null; s.ws.close(); }
  if (stream) { for (const track of stream.getTracks()) track.stop(); stream = null; }
  $("camera-start").disabled = starting; $("camera-stop").disabled = true;
  $("fps").textContent = "";
}

function restartCamera() {   // a new socket with the new detector or mark-up
  if (!fkp.camera.running) return;
  const old = session;
  openSocket();
  if (old) old.ws.close();
}

function cameraFilter() {
  if (session && session.ws.readyState === WebSocket.OPEN) session.ws.send(JSON.stringify({ filter: $("filter").value || null }));
}

// -- wiring ------------------------------------------------------------------------------
function tab(name) {
  const photo = name === "photo";
  $("photo-panel").hidden = !photo; $("camera-panel").hidden = photo;
  $("tab-photo").setAttribute("aria-pressed", photo); $("tab-camera").setAttribute("aria-pressed", !photo);
  if (photo) stopCamera();
  say(null);
}

$("tab-photo").addEventListener("click", () => tab("photo"));
$("tab-camera").addEventListener("click", () => tab("camera"));
$("file").addEventListener("change", (e) => {
  if (e.target.files.length) usePhoto(e.target.files[0]).catch((err) => say(String(err.message || err)));
  e.target.value = "";   // the same file can be chosen again
});
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) usePhoto(e.dataTransfer.files[0]).catch((err) => say(String(err.message || err)));
});
$("download-json").addEventListener("click", () => {
  download(new Blob([JSON.stringify(fkp.photo.json, null, 1)], { type: "application/json" }), `${stem(fkp.photo.name)}.json`);
});
$("download-picture").addEventListener("click", async () => {
  try {
    const blob = await annotatedPicture(photoFile);
    download(blob, `${stem(photoFile.name)}_keypoints.${blob.type === "image/png" ? "png" : "jpg"}`);
  } catch (e) { say(String(e.message || e)); }
});
$("camera-start").addEventListener("click", () => startCamera().catch((e) => say(String(e.message || e))));
$("camera-stop").addEventListener("click", stopCamera);
start().then(() => { fkp.ready = true; }).catch((e) => say(`The server did not answer (${e.message || e}): is fkp-serve running?`));
