// facevox web page: reconstruct a photo on this device (device/worker.js: the pipeline in the browser,
// nothing uploaded) or on the server (upload), show the 3D head or surface (three.js) with the head's
// blendshapes on sliders, the photo with boxes and landmarks, downloads, and a <model-viewer> view for AR.
import * as THREE from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';

const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';

const FORMATS = {
  glb: { title: 'GLB', note: 'with colour · viewers, web, Blender', head: 'textured, 53 blendshapes · Blender, Unity, web' },
  obj: { title: 'OBJ', note: 'mesh with vertex colours' },
  stl: { title: 'STL', note: 'closed solid, for 3D printing' },
  ply: { title: 'PLY', note: 'mesh with vertex colours (MeshLab, Blender)' },
  json: { title: 'JSON', note: 'face box, landmarks, pose (and the head\'s coefficients)' },
};
// Expression sliders: each moves these blendshapes (ARKit's names, as facevox's GLB has them)
const EXPRESSIONS = [
  { key: 'smile', title: 'Smile', names: ['mouthSmileLeft', 'mouthSmileRight'] },
  { key: 'jaw', title: 'Jaw open', names: ['jawOpen'] },
  { key: 'blink', title: 'Blink', names: ['eyeBlinkLeft', 'eyeBlinkRight'] },
  { key: 'brows-up', title: 'Brows up', names: ['browInnerUp', 'browInnerUpLeft', 'browInnerUpRight', 'browOuterUpLeft', 'browOuterUpRight'] },
  { key: 'brows-down', title: 'Brows down', names: ['browDownLeft', 'browDownRight'] },
];
// Play: [seconds, slider, value] keyframes, each slider eased between its own keys
const PLAY = [
  [0, 'smile', 0], [0.8, 'smile', 1], [1.6, 'smile', 0],
  [1.4, 'blink', 0], [1.6, 'blink', 1], [1.8, 'blink', 0],
  [1.8, 'jaw', 0], [2.5, 'jaw', 0.8], [3.2, 'jaw', 0],
  [2.8, 'brows-up', 0], [3.4, 'brows-up', 1], [4.0, 'brows-up', 0],
  [3.9, 'brows-down', 0], [4.4, 'brows-down', 1], [5.0, 'brows-down', 0],
];
// iBUG-68 landmark contours (closed ones repeat their first point)
const CONTOURS = [
  [0, 17], [17, 22], [22, 27], [27, 31], [31, 36],
  [36, 42, true], [42, 48, true], [48, 60, true], [60, 68, true],
];
const TITLES = {
  no_face: 'No face found',
  not_an_image: 'Not an image',
  too_large: 'Too large',
  too_many_pixels: 'Too many pixels',
  empty: 'Empty file',
  damaged: 'Damaged image',
  busy: 'Busy',
  starting: 'Starting up',
  network: 'Cannot reach facevox',
  device: 'Could not run on this device',
  bad_image: 'Cannot use this photo',
};
const HAS_SERVER = document.body.dataset.server !== 'none'; // `facevox site` marks the static page "none"
// WebAssembly with SIMD (onnxruntime-web's build needs it), module workers and OffscreenCanvas
const CAN_RUN_HERE = (() => {
  try {
    const simd = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11]);
    return typeof Worker === 'function' && typeof OffscreenCanvas === 'function' && typeof createImageBitmap === 'function' &&
      WebAssembly.validate(simd);
  } catch (_) {
    return false;
  }
})();

let config = { max_upload_bytes: 15e6, max_pixels: 50e6, ttl_s: 1800 };
let current = null; // the answer of /api/reconstruct
let selected = 0;
let shown = 'head'; // the mesh on show: 'head' or 'surface'
let playing = null; // the Play animation's frame request
let viewer = null;
let request = null;
let zoomed = true; // the photo card shows the selected face, not the whole photo
let where = CAN_RUN_HERE || !HAS_SERVER ? 'device' : 'server'; // where the next photo is reconstructed
let worker = null; // the in-browser pipeline (device/worker.js), made on the first photo
let job = 0; // the number of the latest photo sent to the worker
let deviceUrls = []; // object URLs of the latest device result, revoked when the next one comes

window.facevox = {
  get state() { return document.body.dataset.state; },
  get viewer() { return viewer; },
  get mesh() { return shown; },
  get where() { return where; },
  get ran() { return current && current.ran; },
  get threads() { return current && current.threads; }, // onnxruntime-web's threads for the latest device result
  get timings() { return current && current.timings; }, // the in-browser pipeline's seconds by stage (decode, detect, faces)
};

const SERVER_FORMATS_NOTE = $('formats-note').textContent;

function setState(state) { document.body.dataset.state = state; }

function megabytes(n) {
  if (n < 1e6) return `${Math.max(1, Math.round(n / 1e3))} KB`;
  return n >= 10e6 ? `${Math.round(n / 1e6)} MB` : `${(n / 1e6).toFixed(1)} MB`;
}

// ---------------------------------------------------------------- upload

async function loadConfig() {
  if (!HAS_SERVER) return;
  try {
    const response = await fetch('/api/config');
    if (response.ok) config = await response.json();
  } catch (_) { /* defaults are fine */ }
  showWhere();
}

function showWhere() {
  for (const button of document.querySelectorAll('[data-where]')) {
    button.setAttribute('aria-checked', String(button.dataset.where === where));
    if (button.dataset.where === 'device') button.disabled = !CAN_RUN_HERE;
  }
  const minutes = Math.round(config.ttl_s / 60);
  if (where === 'device') {
    $('where-note').textContent = CAN_RUN_HERE
      ? 'Made in this browser: the photo is never uploaded. The face\'s surface only (the fitted, animatable head is made on the server).'
      : 'This browser cannot run facevox (it needs WebAssembly with SIMD).';
    $('limits').textContent = 'JPEG, PNG or WebP · the first photo loads the face models (about 33 MB, once)';
  } else {
    $('where-note').textContent = 'The photo is uploaded to this server, which makes the face and its fitted, animatable head.';
    $('limits').textContent = `JPEG, PNG, WebP or HEIC · up to ${megabytes(config.max_upload_bytes)} · ` +
      `results are kept here for ${minutes >= 2 ? `${minutes} minutes` : `${Math.round(config.ttl_s)} seconds`}, then deleted`;
  }
}

function showError(code, message) {
  $('error-title').textContent = TITLES[code] || 'Something went wrong';
  $('error-text').textContent = message;
  $('error').hidden = false;
  $('status').hidden = true;
  $('drop').hidden = false;
  if (code !== 'viewer') $('result').hidden = true;
  setState('error');
}

function clearError() { $('error').hidden = true; }

function reconstruct(file) {
  if (!file) return;
  clearError();
  if (file.size === 0) return showError('empty', 'The file is empty.');
  if (where === 'device') return runHere(file);
  return upload(file);
}

// The status panel with the photo, a title and a busy bar.
function showWorking(file, text) {
  setState('working');
  $('result').hidden = true;
  $('status').hidden = false;
  const preview = $('status-photo');
  if (preview.src.startsWith('blob:')) URL.revokeObjectURL(preview.src);
  preview.hidden = false;
  preview.onerror = () => { preview.hidden = true; };
  preview.src = URL.createObjectURL(file);
  $('status-text').textContent = text;
  $('status-sub').textContent = `${file.name || 'photo'} · ${megabytes(file.size)}`;
  const bar = $('bar-fill');
  bar.parentElement.classList.add('busy');
  bar.style.width = '';
}

// The photo through the in-browser pipeline (device/worker.js): nothing leaves the page.
function runHere(file) {
  if (request) request.abort();
  if (!worker) worker = new Worker(new URL('device/worker.js', import.meta.url), { type: 'module' });
  job += 1;
  const id = job;
  const started = performance.now();
  showWorking(file, 'Working on this device…');
  worker.onmessage = ({ data }) => {
    if (data.id !== id) return;
    if (data.type === 'progress') {
      $('status-text').textContent = data.text;
      $('status-sub').textContent = `${file.name || 'photo'} · ${((performance.now() - started) / 1000).toFixed(0)} s · on this device`;
    } else if (data.type === 'error') {
      showError(data.code, data.message);
    } else if (data.type === 'result') {
      show(deviceAnswer(data.answer, file, (performance.now() - started) / 1000));
    }
  };
  worker.onerror = (event) => showError('device', `The in-browser pipeline failed (${event.message || 'worker error'}).`);
  worker.postMessage({ type: 'reconstruct', id, file, modelsUrl: new URL('models/', document.baseURI).href });
}

const MEDIA_TYPES = { glb: 'model/gltf-binary', obj: 'text/plain', json: 'application/json' };

// The worker's answer in the server's shape: files as object URLs of their bytes, named for download.
function deviceAnswer(answer, file, seconds) {
  for (const url of deviceUrls) URL.revokeObjectURL(url);
  const photoUrl = URL.createObjectURL(file);
  deviceUrls = [photoUrl];
  const stem = (file.name || 'face').replace(/\.[^.]*$/, '').replace(/[^A-Za-z0-9_-]+/g, '_').replace(/^_+|_+$/g, '').slice(0, 40) || 'face';
  const faces = answer.faces.map((face) => {
    const files = {};
    const bytes = {};
    const names = {};
    for (const [fmt, data] of Object.entries(face.files)) {
      files[fmt] = URL.createObjectURL(new Blob([data], { type: MEDIA_TYPES[fmt] }));
      bytes[fmt] = data.byteLength;
      names[fmt] = `${stem}_face${face.index + 1}.${fmt}`;
      deviceUrls.push(files[fmt]);
    }
    const surface = { files, bytes, names, vertices: face.mesh.vertices, triangles: face.mesh.triangles };
    return { ...face, files, bytes, meshes: { surface } };
  });
  return { photo: { ...answer.photo, url: photoUrl }, faces, ran: 'device', seconds, threads: answer.threads, timings: answer.timings };
}

function upload(file) {
  if (file.size > config.max_upload_bytes) {
    return showError('too_large', `The file is too large (${megabytes(file.size)}); the limit is ${megabytes(config.max_upload_bytes)}.`);
  }
  if (request) request.abort();
  job += 1; // a device result still on its way is no longer wanted
  showWorking(file, 'Uploading…');
  const bar = $('bar-fill');
  bar.parentElement.classList.remove('busy');
  bar.style.width = '0%';

  const started = performance.now();
  let ticker = null;
  const working = () => {
    bar.parentElement.classList.add('busy');
    bar.style.width = '';
    $('status-text').textContent = 'Finding the face and building the 3D mesh…';
    ticker = setInterval(() => {
      $('status-sub').textContent = `${Math.round((performance.now() - started) / 1000)} s · usually a few seconds`;
    }, 500);
  };

  const form = new FormData();
  form.append('photo', file, file.name || 'photo.jpg');
  const xhr = new XMLHttpRequest();
  request = xhr;
  xhr.open('POST', '/api/reconstruct');
  xhr.responseType = 'json';
  xhr.upload.onprogress = (event) => {
    if (event.lengthComputable) bar.style.width = `${Math.round((100 * event.loaded) / event.total)}%`;
  };
  xhr.upload.onload = working;
  xhr.onload = () => {
    clearInterval(ticker);
    request = null;
    const body = xhr.response;
    if (xhr.status === 200 && body) return show({ ...body, ran: 'server', seconds: (performance.now() - started) / 1000 });
    const retry = xhr.getResponseHeader('Retry-After');
    let message = (body && body.detail) || `The server answered ${xhr.status} ${xhr.statusText}.`;
    if (xhr.status === 503 && retry) message += ` (try again in about ${retry} s)`;
    showError(body && body.error, message);
  };
  xhr.onerror = () => {
    clearInterval(ticker);
    request = null;
    showError('network', 'The upload failed: the server could not be reached or closed the connection.');
  };
  xhr.send(form);
}

// ---------------------------------------------------------------- result

function show(answer) {
  current = answer;
  $('status').hidden = true;
  $('drop').hidden = true;
  $('result').hidden = false;
  $('photo').setAttribute('href', answer.photo.url);
  zoomed = true;
  const seconds = `${answer.seconds.toFixed(1)} s`;
  $('ran').innerHTML = answer.ran === 'device'
    ? '<b>Made on this device</b><span class="ran-more"> · <span></span> · not uploaded</span>'
    : '<b>Made on the server</b><span class="ran-more"> · <span></span></span>';
  $('ran').querySelector('.ran-more span').textContent = seconds;
  $('ran').title = answer.ran === 'device'
    ? 'Made in this browser: the photo and its results never left it. The face\'s surface only (the fitted head is made on the server).'
    : 'The photo was uploaded to the server, which deletes it and its results after a while.';
  document.body.dataset.ran = answer.ran;
  $('formats-note').textContent = answer.ran === 'device'
    ? 'GLB and OBJ carry the photo\'s colours on the face\'s surface; JSON holds the face box, landmarks and pose. Sizes in millimetres, y up.'
    : SERVER_FORMATS_NOTE;
  buildChooser();
  if (!viewer) viewer = new Viewer($('viewer'));
  viewer.resize();
  select(0);
}

// Whole degrees; a small negative angle reads 0°, not -0°.
const degrees = (value) => `${Math.round(value) || 0}°`;

function select(index) {
  selected = index;
  const face = current.faces[index];
  drawOverlay();
  for (const button of $('chooser-buttons').children) button.setAttribute('aria-checked', String(Number(button.dataset.index) === index));
  const facts = $('facts');
  facts.replaceChildren(...[
    ['Yaw', degrees(face.pose.yaw)], ['Pitch', degrees(face.pose.pitch)], ['Roll', degrees(face.pose.roll)],
  ].map(([name, value]) => {
    const item = document.createElement('div');
    item.innerHTML = '<dt></dt><dd></dd>';
    item.firstChild.textContent = name;
    item.lastChild.textContent = value;
    return item;
  }));
  const meshes = face.meshes || { surface: { files: face.files, bytes: face.bytes } };
  $('mesh-choice').hidden = !(meshes.head && meshes.surface);
  showMesh(meshes[shown] ? shown : Object.keys(meshes)[0]);
}

// Show the selected face's head or surface: the 3D view, its downloads, and (the head) its expression sliders.
function showMesh(which) {
  stopPlaying();
  shown = which;
  const face = current.faces[selected];
  const mesh = (face.meshes || { surface: { files: face.files, bytes: face.bytes } })[which];
  for (const button of document.querySelectorAll('[data-mesh]')) button.setAttribute('aria-checked', String(button.dataset.mesh === which));
  buildDownloads(mesh, which);
  $('expression').hidden = true;
  setState('working');
  viewer.load(mesh.files.glb, face.rotation).then(
    () => {
      buildSliders();
      setState('ready');
    },
    (error) => showError('viewer', `The 3D view could not be shown (${error.message || error}). The downloads still work.`),
  );
}

function buildChooser() {
  const faces = current.faces;
  $('chooser').hidden = faces.length < 2;
  $('chooser-label').textContent = `${faces.length} faces found`;
  const { width, height, url } = current.photo;
  $('chooser-buttons').replaceChildren(...faces.map((face, index) => {
    const button = document.createElement('button');
    button.type = 'button';
    button.setAttribute('role', 'radio');
    button.dataset.index = index;
    const thumb = document.createElement('span');
    thumb.className = 'thumb';
    const [x0, y0, x1, y1] = face.box;
    const size = 36 / Math.max(x1 - x0, y1 - y0, 1);
    thumb.style.backgroundImage = `url("${url}")`;
    thumb.style.backgroundSize = `${width * size}px ${height * size}px`;
    thumb.style.backgroundPosition = `${-x0 * size}px ${-y0 * size}px`;
    button.append(thumb, `Face ${index + 1}`);
    button.onclick = () => select(index);
    return button;
  }));
}

// The part of the photo to show: the selected face and some room around it, or the whole photo.
function photoView() {
  const { width, height } = current.photo;
  const [x0, y0, x1, y1] = current.faces[selected].box;
  const side = Math.max(x1 - x0, y1 - y0) * 2.6;
  if (!zoomed || side >= 0.8 * Math.min(width, height)) return [0, 0, width, height];
  const clamp = (v, size) => Math.min(Math.max(v, 0), Math.max(0, size - side));
  return [clamp((x0 + x1) / 2 - side / 2, width), clamp((y0 + y1) / 2 - side / 2.2, height), side, side];
}

function drawOverlay() {
  const { width, height } = current.photo;
  const svg = $('overlay');
  const [vx, vy, vw, vh] = photoView();
  svg.setAttribute('viewBox', `${vx} ${vy} ${vw} ${vh}`);
  $('photo-wrap').style.aspectRatio = `${vw} / ${vh}`;
  $('photo-wrap').style.width = `min(100%, calc(44vh * ${(vw / vh).toFixed(4)}))`;
  const whole = vw >= width && vh >= height;
  $('zoom').hidden = whole && !zoomed;
  $('zoom').textContent = whole ? 'Zoom to the face' : 'Whole photo';
  const photo = $('photo');
  photo.setAttribute('width', width);
  photo.setAttribute('height', height);
  const unit = Math.max(vw, vh) / 400;
  const nodes = [];
  current.faces.forEach((face, index) => {
    const [x0, y0, x1, y1] = face.box;
    const box = document.createElementNS(SVG, 'rect');
    box.setAttribute('class', index === selected ? 'box selected' : 'box');
    box.setAttribute('x', x0 + 0.5); box.setAttribute('y', y0 + 0.5);
    box.setAttribute('width', x1 - x0); box.setAttribute('height', y1 - y0);
    box.setAttribute('rx', unit * 2);
    box.setAttribute('stroke-width', unit * 1.5);
    box.setAttribute('stroke-dasharray', `${unit * 5} ${unit * 3}`);
    if (index === selected) box.removeAttribute('stroke-dasharray');
    box.addEventListener('click', () => select(index));
    nodes.push(box);
  });
  const points = current.faces[selected].landmarks_2d.map(([x, y]) => [x + 0.5, y + 0.5]);
  for (const [start, end, closed] of CONTOURS) {
    const line = document.createElementNS(SVG, closed ? 'polygon' : 'polyline');
    line.setAttribute('class', 'contour');
    line.setAttribute('points', points.slice(start, end).map((p) => p.join(',')).join(' '));
    line.setAttribute('stroke-width', unit * 0.7);
    nodes.push(line);
  }
  for (const [x, y] of points) {
    const dot = document.createElementNS(SVG, 'circle');
    dot.setAttribute('class', 'point');
    dot.setAttribute('cx', x); dot.setAttribute('cy', y); dot.setAttribute('r', unit * 1.1);
    dot.setAttribute('stroke-width', unit * 0.4);
    nodes.push(dot);
  }
  svg.replaceChildren(photo, ...nodes);
}

const DOWNLOAD_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M12 4v11m-5-5 5 5 5-5M5 20h14" fill="none" stroke="currentColor" stroke-width="2.2" stroke-linecap="round" stroke-linejoin="round"/></svg>';

function buildDownloads(mesh, which) {
  const links = Object.keys(FORMATS).filter((fmt) => mesh.files[fmt]).map((fmt) => {
    const link = document.createElement('a');
    link.className = fmt === 'glb' ? 'dl main' : 'dl';
    link.href = mesh.names ? mesh.files[fmt] : `${mesh.files[fmt]}?download=1`;
    link.setAttribute('download', mesh.names ? mesh.names[fmt] : '');
    link.dataset.format = fmt;
    const size = mesh.bytes && mesh.bytes[fmt] ? megabytes(mesh.bytes[fmt]) : '';
    const note = (which === 'head' && FORMATS[fmt].head) || FORMATS[fmt].note;
    link.title = `${FORMATS[fmt].title}: ${note}`;
    link.innerHTML = `<b>${DOWNLOAD_ICON}</b><span></span>`;
    link.firstChild.append(FORMATS[fmt].title);
    link.lastChild.textContent = fmt === 'glb' ? `${note} · ${size}` : size;
    return link;
  });
  $('downloads').replaceChildren(...links);
}

// ---------------------------------------------------------------- expression (the head's morph targets)

// One slider per expression the loaded mesh has blendshapes for; its value is their mean weight.
function buildSliders() {
  const found = EXPRESSIONS.filter((e) => viewer.targets(e.names).length);
  $('expression').hidden = !found.length;
  $('sliders').replaceChildren(...found.map((expression) => {
    const row = document.createElement('label');
    row.className = 'slider';
    const name = document.createElement('span');
    name.textContent = expression.title;
    const input = document.createElement('input');
    input.type = 'range';
    input.min = '0';
    input.max = '1';
    input.step = '0.01';
    input.dataset.expression = expression.key;
    input.addEventListener('input', () => {
      stopPlaying();
      viewer.setWeight(viewer.targets(expression.names), Number(input.value));
    });
    row.append(name, input);
    return row;
  }));
  syncSliders();
}

function syncSliders() {
  for (const input of $('sliders').querySelectorAll('input')) {
    const names = EXPRESSIONS.find((e) => e.key === input.dataset.expression).names;
    input.value = String(viewer.weight(viewer.targets(names)));
  }
}

function setExpression(key, value) {
  const input = $('sliders').querySelector(`[data-expression="${key}"]`);
  if (!input) return;
  input.value = String(value);
  viewer.setWeight(viewer.targets(EXPRESSIONS.find((e) => e.key === key).names), value);
}

function play() {
  stopPlaying();
  const tracks = {};
  for (const [time, key, value] of PLAY) (tracks[key] = tracks[key] || []).push([time, value]);
  const end = Math.max(...PLAY.map(([time]) => time));
  const start = performance.now();
  const ease = (t) => t * t * (3 - 2 * t);
  const frame = () => {
    const t = (performance.now() - start) / 1000;
    for (const [key, keys] of Object.entries(tracks)) {
      let value = keys[keys.length - 1][1];
      for (let i = 0; i + 1 < keys.length; i += 1) {
        const [t0, v0] = keys[i];
        const [t1, v1] = keys[i + 1];
        if (t < t0) { value = v0; break; }
        if (t <= t1) { value = v0 + (v1 - v0) * ease((t - t0) / (t1 - t0)); break; }
      }
      setExpression(key, value);
    }
    playing = t < end ? requestAnimationFrame(frame) : null;
  };
  frame();
}

function stopPlaying() {
  if (playing) cancelAnimationFrame(playing);
  playing = null;
}

// ---------------------------------------------------------------- 3D / AR view (<model-viewer>, loaded on first use)

async function openAr() {
  const face = current.faces[selected];
  const mesh = (face.meshes || { surface: { files: face.files } })[shown];
  const dialog = $('ar-dialog');
  dialog.showModal();
  await import('@google/model-viewer');
  let element = $('ar-slot').querySelector('model-viewer');
  if (!element) {
    element = document.createElement('model-viewer');
    for (const [name, value] of Object.entries({
      ar: '', 'ar-modes': 'webxr scene-viewer quick-look', 'camera-controls': '', 'touch-action': 'pan-y',
      'shadow-intensity': '0.6', exposure: '1.1', alt: 'The 3D face from the photo',
    })) element.setAttribute(name, value);
    $('ar-slot').append(element);
  }
  if (element.getAttribute('src') !== mesh.files.glb) element.setAttribute('src', mesh.files.glb);
}

// ---------------------------------------------------------------- 3D viewer

class Viewer {
  constructor(container) {
    this.container = container;
    this.renderer = new THREE.WebGLRenderer({ antialias: true, alpha: true, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    this.renderer.outputColorSpace = THREE.SRGBColorSpace;
    container.append(this.renderer.domElement);

    this.scene = new THREE.Scene();
    this.camera = new THREE.PerspectiveCamera(30, 1, 1, 10000);
    this.scene.add(this.camera);
    this.scene.add(new THREE.HemisphereLight(0xf4f6ff, 0x3a3330, 1.3));
    // key, fill and rim lights ride with the camera, so the face stays well lit from any side
    const key = new THREE.DirectionalLight(0xfff4e8, 2.0);
    key.position.set(-0.7, 0.9, 1.2);
    const fill = new THREE.DirectionalLight(0xe8f0ff, 0.7);
    fill.position.set(1.0, 0.1, 0.8);
    const rim = new THREE.DirectionalLight(0xc8d8ff, 0.9);
    rim.position.set(0.3, 0.8, -1.2);
    this.camera.add(key, fill, rim);

    this.controls = new OrbitControls(this.camera, this.renderer.domElement);
    this.controls.enableDamping = true;
    this.controls.dampingFactor = 0.12;
    this.controls.addEventListener('change', () => this.render());

    this.materials = {
      colour: new THREE.MeshStandardMaterial({ vertexColors: true, roughness: 0.78, metalness: 0, side: THREE.DoubleSide }),
      shaded: new THREE.MeshStandardMaterial({ color: 0xb9b2aa, roughness: 0.6, metalness: 0, side: THREE.DoubleSide }),
      base: new THREE.MeshStandardMaterial({
        color: 0x59627a, roughness: 0.8, metalness: 0, side: THREE.DoubleSide,
        polygonOffset: true, polygonOffsetFactor: 1, polygonOffsetUnits: 1,
      }),
      wire: new THREE.MeshBasicMaterial({ color: 0xa9c2ff, wireframe: true, transparent: true, opacity: 0.22 }),
    };
    this.look = 'colour';
    this.loader = new GLTFLoader();
    this.group = null;
    this.home = null;
    this.rendered = 0;

    new ResizeObserver(() => this.resize()).observe(container);
    const tick = () => {
      if (this.controls.update()) this.render();
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  }

  resize() {
    const { clientWidth: width, clientHeight: height } = this.container;
    if (!width || !height) return;
    this.renderer.setSize(width, height, false);
    this.camera.aspect = width / height;
    this.camera.updateProjectionMatrix();
    this.render();
  }

  async load(url, rotation) {
    const gltf = await this.loader.loadAsync(url);
    let found = null;
    gltf.scene.updateMatrixWorld(true);
    gltf.scene.traverse((node) => { if (node.isMesh && !found) found = node; });
    if (!found) throw new Error('the file has no mesh');
    const geometry = found.geometry;
    geometry.applyMatrix4(found.matrixWorld);
    prepareColours(geometry);
    if (!geometry.attributes.normal) geometry.computeVertexNormals();

    if (this.group) {
      this.scene.remove(this.group);
      this.group.children.forEach((child) => child.geometry.dispose());
    }
    if (this.materials.texture) this.materials.texture.dispose();
    this.materials.texture = found.material.map ? new THREE.MeshStandardMaterial({
      map: found.material.map, roughness: 0.72, metalness: 0, side: THREE.DoubleSide,
    }) : null;
    this.group = new THREE.Group();
    this.surface = new THREE.Mesh(geometry, this.materials.colour);
    this.wire = new THREE.Mesh(geometry, this.materials.wire);
    // the head's blendshapes: the GLB's weights (its fitted expression) to start, shared by both views
    this.fitted = found.morphTargetInfluences ? found.morphTargetInfluences.slice() : null;
    if (this.fitted) {
      this.surface.morphTargetDictionary = { ...found.morphTargetDictionary };
      this.surface.morphTargetInfluences = this.fitted.slice();
      this.wire.morphTargetDictionary = this.surface.morphTargetDictionary;
      this.wire.morphTargetInfluences = this.surface.morphTargetInfluences;
    }
    this.group.add(this.surface, this.wire);
    this.scene.add(this.group);
    this.setLook(this.look);

    geometry.computeBoundingBox();
    geometry.computeBoundingSphere();
    const framed = this.fitted ? headBox(geometry) : geometry.boundingBox;
    const centre = framed.getCenter(new THREE.Vector3());
    const radius = this.fitted ? framed.getSize(new THREE.Vector3()).length() / 2 : geometry.boundingSphere.radius;
    // start where the face looks: the head pose turns the frontal direction (0, 0, 1)
    const forward = new THREE.Vector3(0, 0, 1);
    if (rotation) {
      forward.set(rotation[0][2], rotation[1][2], rotation[2][2]);
      if (forward.z < 0.2) forward.set(0, 0, 1); // a pose that would put the camera behind: stay frontal
      forward.normalize();
    }
    this.home = { target: centre, forward, radius };
    this.resetView();
  }

  // Far enough for the whole face to fit the view, across and up-down, with a margin.
  homeDistance() {
    const half = THREE.MathUtils.degToRad(this.camera.fov / 2);
    const across = Math.atan(Math.tan(half) * Math.max(this.camera.aspect, 0.1));
    return (this.home.radius / Math.sin(Math.min(half, across))) * 1.08;
  }

  resetView() {
    if (!this.home) return;
    this.controls.enableDamping = false; // drop what is left of a spin, so the view really comes home
    this.controls.update();
    this.controls.enableDamping = true;
    const distance = this.homeDistance();
    this.camera.near = distance / 50;
    this.camera.far = distance * 20;
    this.controls.minDistance = this.home.radius * 0.8;
    this.controls.maxDistance = distance * 4;
    this.camera.position.copy(this.home.target).addScaledVector(this.home.forward, distance);
    this.controls.target.copy(this.home.target);
    this.camera.up.set(0, 1, 0);
    this.camera.lookAt(this.home.target);
    this.camera.updateProjectionMatrix();
    this.controls.update();
    this.render();
  }

  // The morph target numbers of those of these blendshape names the mesh has.
  targets(names) {
    const dictionary = (this.surface && this.surface.morphTargetDictionary) || {};
    return names.filter((name) => name in dictionary).map((name) => dictionary[name]);
  }

  weight(targets) {
    if (!targets.length) return 0;
    return targets.reduce((sum, i) => sum + this.surface.morphTargetInfluences[i], 0) / targets.length;
  }

  setWeight(targets, value) {
    for (const i of targets) this.surface.morphTargetInfluences[i] = value;
    this.render();
  }

  // Every blendshape back to the fitted expression (or to 0: neutral).
  resetExpression(neutral = false) {
    if (!this.fitted) return;
    this.fitted.forEach((w, i) => { this.surface.morphTargetInfluences[i] = neutral ? 0 : w; });
    this.render();
  }

  setLook(look) {
    this.look = look;
    if (!this.surface) return;
    const colour = this.materials.texture || this.materials.colour;
    this.surface.material = look === 'colour' ? colour : look === 'shaded' ? this.materials.shaded : this.materials.base;
    this.wire.visible = look === 'wireframe';
    this.render();
  }

  render() {
    this.renderer.render(this.scene, this.camera);
    this.rendered += 1;
    this.container.dataset.rendered = String(this.rendered);
  }
}

// The head's box without the lowest 30 % of its height (the neck and the top of the shoulders): the view frames the head.
function headBox(geometry) {
  const { min, max } = geometry.boundingBox;
  const floor = min.y + 0.3 * (max.y - min.y);
  const box = new THREE.Box3();
  const point = new THREE.Vector3();
  const position = geometry.attributes.position;
  for (let i = 0; i < position.count; i += 1) {
    point.fromBufferAttribute(position, i);
    if (point.y >= floor) box.expandByPoint(point);
  }
  return box;
}

// The GLB's vertex colours are the photo's sRGB bytes; three.js treats COLOR_0 as linear, so convert once.
function prepareColours(geometry) {
  const colour = geometry.attributes.color;
  if (!colour) return;
  const toLinear = (c) => (c < 0.04045 ? c * 0.0773993808 : Math.pow(c * 0.9478672986 + 0.0521327014, 2.4));
  const linear = new Float32Array(colour.count * 3);
  for (let i = 0; i < colour.count; i += 1) {
    linear[3 * i] = toLinear(colour.getX(i));
    linear[3 * i + 1] = toLinear(colour.getY(i));
    linear[3 * i + 2] = toLinear(colour.getZ(i));
  }
  geometry.setAttribute('color', new THREE.BufferAttribute(linear, 3));
}

// ---------------------------------------------------------------- wiring

function firstImage(list) {
  const files = Array.from(list || []);
  return files.find((file) => file.type.startsWith('image/')) || files[0];
}

function wire() {
  for (const id of ['file', 'camera']) {
    $(id).addEventListener('change', (event) => {
      reconstruct(event.target.files[0]);
      event.target.value = '';
    });
  }
  $('drop').addEventListener('click', (event) => {
    if (event.target.closest('label, input, button')) return;
    $('file').click();
  });
  let depth = 0;
  window.addEventListener('dragenter', (event) => {
    if (!event.dataTransfer || !Array.from(event.dataTransfer.types).includes('Files')) return;
    depth += 1;
    document.body.classList.add('dragging');
  });
  window.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (!depth) document.body.classList.remove('dragging');
  });
  window.addEventListener('dragover', (event) => event.preventDefault());
  window.addEventListener('drop', (event) => {
    event.preventDefault();
    depth = 0;
    document.body.classList.remove('dragging');
    reconstruct(firstImage(event.dataTransfer && event.dataTransfer.files));
  });
  window.addEventListener('paste', (event) => {
    const file = firstImage(event.clipboardData && event.clipboardData.files);
    if (file) reconstruct(file);
  });
  for (const button of document.querySelectorAll('[data-look]')) {
    button.addEventListener('click', () => {
      for (const other of document.querySelectorAll('[data-look]')) other.setAttribute('aria-checked', String(other === button));
      if (viewer) viewer.setLook(button.dataset.look);
    });
  }
  $('reset-view').addEventListener('click', () => viewer && viewer.resetView());
  for (const button of document.querySelectorAll('[data-mesh]')) {
    button.addEventListener('click', () => { if (button.dataset.mesh !== shown) showMesh(button.dataset.mesh); });
  }
  $('expression-play').addEventListener('click', play);
  $('expression-photo').addEventListener('click', () => { stopPlaying(); viewer.resetExpression(); syncSliders(); });
  $('expression-neutral').addEventListener('click', () => { stopPlaying(); viewer.resetExpression(true); syncSliders(); });
  $('ar-open').addEventListener('click', () => openAr().catch((error) => {
    $('ar-dialog').close();
    showError('viewer', `The 3D / AR view could not be opened (${error.message || error}).`);
  }));
  $('ar-close').addEventListener('click', () => $('ar-dialog').close());
  $('again').addEventListener('click', () => $('file').click());
  for (const button of document.querySelectorAll('[data-where]')) {
    button.addEventListener('click', () => { where = button.dataset.where; showWhere(); });
  }
  $('zoom').addEventListener('click', () => { zoomed = !zoomed; drawOverlay(); });
}

wire();
showWhere();
loadConfig();
