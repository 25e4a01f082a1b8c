// File stage (facevox/export/files.py) for the surface: GLB, OBJ and JSON bytes in the viewer frame
// (y up, z towards the viewer, centred on the face, millimetres with the outer eye corners eyeCornersMm apart).

// Flat (n × 3) Float32Array of the face's surface vertices in the viewer frame.
export function viewerFrame(face, eyeCornersMm) {
  const [a, b] = [face.landmarks_3d[36], face.landmarks_3d[45]];
  const eyes = Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);
  const scale = eyeCornersMm / Math.max(eyes, 1e-9);
  const v = face.mesh.vertices;
  const out = new Float32Array(v.length);
  const flip = [1, -1, -1];
  for (let j = 0; j < 3; j += 1) {
    let lo = Infinity; let hi = -Infinity;
    for (let i = j; i < v.length; i += 3) { lo = Math.min(lo, v[i]); hi = Math.max(hi, v[i]); }
    const centre = v.length ? (lo + hi) / 2 : 0;
    for (let i = j; i < v.length; i += 3) out[i] = (v[i] - centre) * (scale * flip[j]);
  }
  return out;
}

// Binary glTF 2.0 of the surface: uint32 indices, float32 positions, RGBA uint8 colours (files.py to_glb).
export function toGlb(face, eyeCornersMm) {
  const { triangles, colours } = face.mesh;
  const gltf = { asset: { version: '2.0', generator: 'facevox' }, scene: 0, scenes: [{ nodes: [0] }], nodes: [{}] };
  if (!triangles.length) return glb(gltf, []);
  const positions = viewerFrame(face, eyeCornersMm);
  const count = positions.length / 3;
  const rgba = new Uint8Array(count * 4).fill(255);
  for (let i = 0; i < count; i += 1) rgba.set(colours.subarray(3 * i, 3 * i + 3), 4 * i);
  const arrays = [Uint32Array.from(triangles), positions, rgba];
  const min = [0, 1, 2].map((j) => { let m = Infinity; for (let i = j; i < positions.length; i += 3) m = Math.min(m, positions[i]); return m; });
  const max = [0, 1, 2].map((j) => { let m = -Infinity; for (let i = j; i < positions.length; i += 3) m = Math.max(m, positions[i]); return m; });
  let offset = 0;
  const views = arrays.map((a) => { const view = { buffer: 0, byteOffset: offset, byteLength: a.byteLength }; offset += a.byteLength; return view; });
  gltf.nodes[0].mesh = 0;
  Object.assign(gltf, {
    meshes: [{ primitives: [{ attributes: { POSITION: 1, COLOR_0: 2 }, indices: 0, mode: 4 }] }],
    accessors: [
      { bufferView: 0, componentType: 5125, count: triangles.length, type: 'SCALAR' },
      { bufferView: 1, componentType: 5126, count, type: 'VEC3', min, max },
      { bufferView: 2, componentType: 5121, normalized: true, count, type: 'VEC4' },
    ],
    bufferViews: views,
    buffers: [{ byteLength: offset }],
  });
  return glb(gltf, arrays);
}

// The GLB container: header, JSON chunk (padded with spaces), binary chunk (every array a multiple of 4 bytes).
function glb(gltf, arrays) {
  let text = new TextEncoder().encode(JSON.stringify(gltf));
  const padded = new Uint8Array(Math.ceil(text.length / 4) * 4).fill(0x20);
  padded.set(text);
  text = padded;
  const binary = arrays.reduce((n, a) => n + a.byteLength, 0);
  const length = 12 + 8 + text.length + (arrays.length ? 8 + binary : 0);
  const out = new Uint8Array(length);
  const view = new DataView(out.buffer);
  view.setUint32(0, 0x46546c67, true); // "glTF"
  view.setUint32(4, 2, true);
  view.setUint32(8, length, true);
  view.setUint32(12, text.length, true);
  view.setUint32(16, 0x4e4f534a, true); // "JSON"
  out.set(text, 20);
  if (arrays.length) {
    let at = 20 + text.length;
    view.setUint32(at, binary, true);
    view.setUint32(at + 4, 0x004e4942, true); // "BIN\0"
    at += 8;
    for (const a of arrays) { out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), at); at += a.byteLength; }
  }
  return out;
}

// Wavefront OBJ with per-vertex colours ('v x y z r g b'), as files.py to_obj.
export function toObj(face, eyeCornersMm) {
  const positions = viewerFrame(face, eyeCornersMm);
  const { triangles, colours } = face.mesh;
  const lines = ['# facevox mesh: y up, z towards the viewer, millimetres'];
  for (let i = 0; i < positions.length / 3; i += 1) {
    const xyz = [0, 1, 2].map((j) => positions[3 * i + j].toFixed(4));
    const rgb = [0, 1, 2].map((j) => (colours[3 * i + j] / 255).toFixed(4));
    lines.push(`v ${xyz.join(' ')} ${rgb.join(' ')}`);
  }
  for (let i = 0; i < triangles.length; i += 3) lines.push(`f ${triangles[i] + 1} ${triangles[i + 1] + 1} ${triangles[i + 2] + 1}`);
  return new TextEncoder().encode(`${lines.join('\n')}\n`);
}

const round = (v, digits) => Math.round(v * 10 ** digits) / 10 ** digits;

// The face's box, score, landmarks and pose (files.py to_json, the surface's fields).
export function toJson(face, model) {
  const record = {
    box: face.box.map((v) => round(v, 2)),
    score: round(face.score, 4),
    pose: { yaw: round(face.yaw, 2), pitch: round(face.pitch, 2), roll: round(face.roll, 2) },
    landmarks_2d: face.landmarks_3d.map(([x, y]) => [round(x, 2), round(y, 2)]),
    landmarks_3d: face.landmarks_3d.map((p) => p.map((v) => round(v, 2))),
    mesh: { vertices: face.mesh.vertices.length / 3, triangles: face.mesh.triangles.length / 3 },
    model,
  };
  return new TextEncoder().encode(`${JSON.stringify(record, null, 1)}\n`);
}
