// Mesh stage (facevox/mesh.py): occupancy volume → front depth → the visible surface as a height field,
// moved to the photo frame and coloured from the photo. Maps are row-major (h × w) typed arrays.
import { invert } from './crop.js';

// (D × h × w) occupancy → { depth: Float64Array (h × w; Infinity off the face), mask: Uint8Array }: where
// each column first crosses `level`, interpolated between the two voxels that straddle it.
export function frontDepth(volume, depthCount, height, width, level) {
  const cells = height * width;
  const depth = new Float64Array(cells).fill(Infinity);
  const mask = new Uint8Array(cells);
  let left = cells;
  for (let k = 0; k < depthCount && left; k += 1) {
    const slice = k * cells;
    for (let p = 0; p < cells; p += 1) {
      if (mask[p] || !(volume[slice + p] > level)) continue;
      const after = volume[slice + p];
      const before = k > 0 ? volume[slice - cells + p] : 0;
      depth[p] = k - 1 + (level - before) / (after - before);
      mask[p] = 1;
      left -= 1;
    }
  }
  return { depth, mask };
}

// The depth with the columns near the outline pulled forward, ring by ring from `width` pixels inside it
// outwards, none more than `slope` behind its shallowest finished 8-neighbour (mesh.py limit_outline).
export function limitOutline(depth, mask, height, width, slope, ringWidth) {
  const row = width + 2;
  const cells = (height + 2) * row;
  const inside = new Uint8Array(cells);
  const depths = new Float64Array(cells).fill(Infinity);
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      inside[(y + 1) * row + x + 1] = mask[y * width + x];
      depths[(y + 1) * row + x + 1] = depth[y * width + x];
    }
  }
  let done = inside.slice();
  for (let n = 0; n < ringWidth; n += 1) {
    const next = new Uint8Array(cells);
    for (let y = 1; y <= height; y += 1) {
      for (let p = y * row + 1; p <= y * row + width; p += 1) {
        next[p] = done[p] & done[p - row] & done[p + row] & done[p - 1] & done[p + 1];
      }
    }
    done = next;
  }
  const known = new Float64Array(cells).fill(Infinity);
  for (let p = 0; p < cells; p += 1) if (done[p]) known[p] = depths[p];
  const sides = [-row, -1, 1, row];
  const around = [-row - 1, -row, -row + 1, -1, 1, row - 1, row, row + 1];
  let todo = [];
  for (let p = 0; p < cells; p += 1) if (inside[p] && !done[p]) todo.push(p);
  for (;;) {
    const ring = [];
    const rest = [];
    for (const p of todo) (sides.some((s) => done[p + s]) ? ring : rest).push(p);
    if (!ring.length) break;
    const limited = ring.map((p) => Math.min(depths[p], Math.min(...around.map((a) => known[p + a])) + slope));
    ring.forEach((p, i) => { depths[p] = limited[i]; known[p] = limited[i]; done[p] = 1; });
    todo = rest;
  }
  const out = new Float64Array(height * width);
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) out[y * width + x] = depths[(y + 1) * row + x + 1];
  }
  return out;
}

// The mask's pixels whose height-field pieces have at least `share` of the largest piece's triangles
// (mesh.py large_pieces): pieces on the grid of 2×2 blocks with three or four masked pixels, side by side
// always joined, diagonal ones when the pixel they share is masked.
export function largePieces(mask, height, width, share) {
  const bw = width - 1;
  const bh = height - 1;
  const used = new Uint8Array(height * width);
  if (bw < 1 || bh < 1) return used;
  const blocks = bw * bh;
  const corners = new Uint8Array(blocks);
  for (let y = 0; y < bh; y += 1) {
    for (let x = 0; x < bw; x += 1) {
      const p = y * width + x;
      corners[y * bw + x] = mask[p] + mask[p + 1] + mask[p + width] + mask[p + width + 1];
    }
  }
  const parent = new Int32Array(blocks).map((_, i) => i);
  const find = (i) => { while (parent[i] !== i) { parent[i] = parent[parent[i]]; i = parent[i]; } return i; };
  const join = (a, b) => { const ra = find(a); const rb = find(b); if (ra !== rb) parent[Math.max(ra, rb)] = Math.min(ra, rb); };
  const kept = (b) => corners[b] >= 3;
  for (let y = 0; y < bh; y += 1) {
    for (let x = 0; x < bw; x += 1) {
      const b = y * bw + x;
      if (!kept(b)) continue;
      if (x + 1 < bw && kept(b + 1)) join(b, b + 1);
      if (y + 1 < bh && kept(b + bw)) join(b, b + bw);
      const shared = mask[(y + 1) * width + x + 1];
      if (shared && y + 1 < bh && x + 1 < bw && kept(b + bw + 1)) join(b, b + bw + 1);
      if (shared && y + 1 < bh && x + 1 < bw && kept(b + 1) && kept(b + bw)) join(b + 1, b + bw);
    }
  }
  const triangles = new Float64Array(blocks);
  for (let b = 0; b < blocks; b += 1) if (kept(b)) triangles[find(b)] += corners[b] - 2;
  let largest = 0;
  for (const count of triangles) largest = Math.max(largest, count);
  for (let y = 0; y < bh; y += 1) {
    for (let x = 0; x < bw; x += 1) {
      const b = y * bw + x;
      if (!kept(b) || triangles[find(b)] < share * largest) continue;
      const p = y * width + x;
      used[p] = used[p + 1] = used[p + width] = used[p + width + 1] = 1;
    }
  }
  for (let p = 0; p < used.length; p += 1) used[p] &= mask[p];
  return used;
}

// A mesh of a depth map: a vertex (x, y, depth) per masked pixel (row by row), two triangles per 2×2
// block of masked pixels, one per block of three; wound so that normals face the camera (mesh.py height_field).
export function heightField(depth, mask, height, width) {
  const row = width + 1;
  const flat = new Uint8Array((height + 1) * row);
  for (let y = 0; y < height; y += 1) for (let x = 0; x < width; x += 1) flat[y * row + x] = mask[y * width + x];
  const ids = new Int32Array(flat.length).fill(-1);
  const vertices = [];
  for (let p = 0; p < flat.length; p += 1) {
    if (!flat[p]) continue;
    const y = Math.floor(p / row);
    const x = p % row;
    ids[p] = vertices.length / 3;
    vertices.push(x, y, depth[y * width + x]);
  }
  const blocks = flat.length - row - 1;
  const triangles = [];
  const groups = [
    [[0, row, 1], (tl, tr, bl, br) => tl && bl && tr],
    [[1, row, row + 1], (tl, tr, bl, br) => tr && bl && br],
    [[0, row + 1, 1], (tl, tr, bl, br) => tl && br && tr && !bl],
    [[0, row, row + 1], (tl, tr, bl, br) => tl && bl && br && !tr],
  ];
  for (const [offsets, present] of groups) {
    for (let p = 0; p < blocks; p += 1) {
      if (present(flat[p], flat[p + 1], flat[p + row], flat[p + row + 1])) triangles.push(ids[p + offsets[0]], ids[p + offsets[1]], ids[p + offsets[2]]);
    }
  }
  return { vertices: Float64Array.from(vertices), triangles: Uint32Array.from(triangles) };
}

// The surface without its triangles whose corners' depths differ by more than maxJump voxels (they join
// two sides of a depth discontinuity) and without the vertices left unused, the rest keeping their order
// (mesh.py drop_jumps).
export function dropJumps(surface, maxJump) {
  const { vertices, triangles } = surface;
  const kept = [];
  for (let t = 0; t < triangles.length; t += 3) {
    const a = vertices[3 * triangles[t] + 2];
    const b = vertices[3 * triangles[t + 1] + 2];
    const c = vertices[3 * triangles[t + 2] + 2];
    if (Math.max(a, b, c) - Math.min(a, b, c) <= maxJump) kept.push(t);
  }
  if (kept.length * 3 === triangles.length) return surface;
  const ids = new Int32Array(vertices.length / 3).fill(-1);
  for (const t of kept) for (let k = 0; k < 3; k += 1) ids[triangles[t + k]] = 0;
  const outVertices = [];
  for (let v = 0, n = 0; v < ids.length; v += 1) {
    if (ids[v] < 0) continue;
    ids[v] = n;
    n += 1;
    outVertices.push(vertices[3 * v], vertices[3 * v + 1], vertices[3 * v + 2]);
  }
  const outTriangles = new Uint32Array(kept.length * 3);
  kept.forEach((t, i) => { for (let k = 0; k < 3; k += 1) outTriangles[3 * i + k] = ids[triangles[t + k]]; });
  return { vertices: Float64Array.from(outVertices), triangles: outTriangles };
}

// The surface in crop coordinates (x, y, k) from a front depth map and its mask (mesh.py surface_from_depth):
// outline limited, large pieces only, no triangle across a depth discontinuity, made on the mask's bounding box.
export function surfaceFromDepth(depth, mask, height, width, surfaceRules) {
  let r0 = height; let r1 = -1; let c0 = width; let c1 = -1;
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      if (!mask[y * width + x]) continue;
      r0 = Math.min(r0, y); r1 = Math.max(r1, y); c0 = Math.min(c0, x); c1 = Math.max(c1, x);
    }
  }
  if (r1 < 0) return { vertices: new Float64Array(0), triangles: new Uint32Array(0) };
  const h = r1 - r0 + 1;
  const w = c1 - c0 + 1;
  const boxDepth = new Float64Array(h * w);
  const boxMask = new Uint8Array(h * w);
  for (let y = 0; y < h; y += 1) {
    for (let x = 0; x < w; x += 1) {
      boxDepth[y * w + x] = depth[(y + r0) * width + x + c0];
      boxMask[y * w + x] = mask[(y + r0) * width + x + c0];
    }
  }
  const limited = limitOutline(boxDepth, boxMask, h, w, surfaceRules.outline_slope, surfaceRules.outline_width);
  const surface = dropJumps(heightField(limited, largePieces(boxMask, h, w, surfaceRules.piece_share), h, w), surfaceRules.max_jump);
  for (let i = 0; i < surface.vertices.length; i += 3) {
    surface.vertices[i] += c0;
    surface.vertices[i + 1] += r0;
  }
  return surface;
}

// Flat (n × 3) crop coordinates (x, y, k) → the photo frame (x, y pixels; z: depth in photo pixels).
export function pointsToPhoto(points, matrix) {
  const back = invert(matrix);
  const scale = Math.sqrt(Math.abs(matrix[0][0] * matrix[1][1] - matrix[0][1] * matrix[1][0]));
  const out = new Float64Array(points.length);
  for (let i = 0; i < points.length; i += 3) {
    const [x, y] = [points[i], points[i + 1]];
    out[i] = back[0][0] * x + back[0][1] * y + back[0][2];
    out[i + 1] = back[1][0] * x + back[1][1] * y + back[1][2];
    out[i + 2] = points[i + 2] / scale;
  }
  return out;
}

// RGB bytes (n × 3) sampled bilinearly from an RGB image at each flat (n × 3) vertex's (x, y) in its pixels.
export function colourFromPhoto(vertices, image) {
  const { width, height, data } = image;
  const n = vertices.length / 3;
  const colours = new Uint8Array(n * 3);
  const clip = (v, hi) => Math.min(Math.max(v, 0), hi);
  for (let i = 0; i < n; i += 1) {
    const x = clip(vertices[3 * i], width - 1);
    const y = clip(vertices[3 * i + 1], height - 1);
    const x0 = clip(Math.min(Math.trunc(x), width - 2), Infinity);
    const y0 = clip(Math.min(Math.trunc(y), height - 2), Infinity);
    const fx = x - x0; const fy = y - y0;
    const x1 = Math.min(x0 + 1, width - 1); const y1 = Math.min(y0 + 1, height - 1);
    for (let c = 0; c < 3; c += 1) {
      const at = (yy, xx) => data[3 * (yy * width + xx) + c];
      const top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx;
      const bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx;
      colours[3 * i + c] = Math.floor(clip(top * (1 - fy) + bottom * fy + 0.5, 255));
    }
  }
  return colours;
}
