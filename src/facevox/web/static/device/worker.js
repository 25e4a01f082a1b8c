// The in-browser pipeline in a worker, so that the page stays responsive. Messages in:
//   { type: 'reconstruct', id, file, modelsUrl }
// out: { type: 'progress', id, text }, { type: 'result', id, answer } (the files' bytes transferred),
// { type: 'error', id, code, message }. The models load on the first photo and stay loaded.
import * as ort from '../vendor/onnxruntime-web/ort.wasm.min.mjs';
import { Reconstructor } from './pipeline.js';
import { toGlb, toJson, toObj } from './export.js';
import { rotationMatrix } from './pose.js';

// Threads need SharedArrayBuffer, which only a cross-origin isolated page has; elsewhere one thread.
ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
let loading = null;

async function reconstruct(id, file, modelsUrl) {
  const progress = (text) => postMessage({ type: 'progress', id, text });
  if (!loading) {
    progress('Loading the face models (once)…');
    loading = Reconstructor.load(ort, modelsUrl);
  }
  let reconstructor;
  const waiting = performance.now();
  try {
    reconstructor = await loading;
  } catch (error) {
    loading = null;
    throw Object.assign(new Error(`The face models could not be loaded (${error.message || error}).`), { code: 'device' });
  }
  const waited = (performance.now() - waiting) / 1000; // loading the models, on the first photo
  let result;
  try {
    result = await reconstructor.reconstruct(file, progress);
  } catch (error) {
    throw Object.assign(new Error(`This photo cannot be used: ${error.message || error}.`), { code: 'bad_image' });
  }
  if (waited > 0.001) result.timings = { load: waited, ...result.timings };
  if (!result.faces.length) {
    throw Object.assign(new Error('No face was found in this photo. Try a clear, well-lit photo where the face is visible.'), { code: 'no_face' });
  }
  const exporting = performance.now();
  const eyeCornersMm = reconstructor.rules.eye_corners_mm;
  const model = reconstructor.contract.network.name;
  const transfer = [];
  const faces = result.faces.map((face, index) => {
    const files = { glb: toGlb(face, eyeCornersMm), obj: toObj(face, eyeCornersMm), json: toJson(face, model) };
    transfer.push(...Object.values(files).map((bytes) => bytes.buffer));
    const round = (v, digits = 2) => Math.round(v * 10 ** digits) / 10 ** digits;
    return {
      index,
      box: face.box.map((v) => round(v)),
      score: round(face.score, 4),
      pose: { yaw: round(face.yaw), pitch: round(face.pitch), roll: round(face.roll) },
      rotation: rotationMatrix(face.yaw, face.pitch, face.roll),
      landmarks_2d: face.landmarks_3d.map(([x, y]) => [round(x), round(y)]),
      landmarks_3d: face.landmarks_3d,
      mesh: { vertices: face.mesh.vertices.length / 3, triangles: face.mesh.triangles.length / 3 },
      files,
    };
  });
  result.timings.export = (performance.now() - exporting) / 1000;
  return { answer: { photo: { width: result.width, height: result.height }, faces, timings: result.timings, threads: ort.env.wasm.numThreads }, transfer };
}

self.onmessage = async ({ data }) => {
  if (data.type !== 'reconstruct') return;
  try {
    const { answer, transfer } = await reconstruct(data.id, data.file, data.modelsUrl);
    postMessage({ type: 'result', id: data.id, answer }, transfer);
  } catch (error) {
    postMessage({ type: 'error', id: data.id, code: error.code || 'device', message: error.message || String(error) });
  }
};
