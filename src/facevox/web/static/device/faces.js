// Faces stage (facevox/faces.py): facevox's own ONNX detector on the photo → face boxes (the box of the
// 68 landmarks) in the photo's pixels, largest first.
import { reduce, rgbImage } from './photo.js';

// Python's round(): halves to even.
function roundHalfEven(v) {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

const FIXED = 2 ** 22;

// Pillow's BILINEAR resize (a triangle filter widened when shrinking), one axis at a time, rounded to
// bytes after each: the coefficients of precompute_coeffs and normalize_coeffs_8bpc in Pillow's Resample.c.
function resampleAxis(inSize, outSize) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filterScale;
  const taps = [];
  for (let o = 0; o < outSize; o += 1) {
    const centre = (o + 0.5) * scale;
    const start = Math.max(Math.trunc(centre - support + 0.5), 0);
    const stop = Math.min(Math.trunc(centre + support + 0.5), inSize);
    const weights = [];
    let total = 0;
    for (let i = start; i < stop; i += 1) {
      const w = Math.max(0, 1 - Math.abs((i - centre + 0.5) / filterScale));
      weights.push(w);
      total += w;
    }
    // in Pillow's fixed point: 22 fraction bits, rounded half up at the end of each pass
    taps.push({ start, weights: weights.map((w) => Math.trunc((total ? w / total : 0) * FIXED + (w >= 0 ? 0.5 : -0.5))) });
  }
  return taps;
}

export function resizeBilinear(image, width, height) {
  const horizontal = resampleAxis(image.width, width);
  const vertical = resampleAxis(image.height, height);
  const middle = rgbImage(width, image.height);
  for (let y = 0; y < image.height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const { start, weights } = horizontal[x];
      for (let c = 0; c < 3; c += 1) {
        let sum = FIXED / 2;
        for (let k = 0; k < weights.length; k += 1) sum += weights[k] * image.data[3 * (y * image.width + start + k) + c];
        middle.data[3 * (y * width + x) + c] = Math.min(255, Math.max(0, Math.floor(sum / FIXED)));
      }
    }
  }
  const out = rgbImage(width, height);
  for (let y = 0; y < height; y += 1) {
    const { start, weights } = vertical[y];
    for (let x = 0; x < width; x += 1) {
      for (let c = 0; c < 3; c += 1) {
        let sum = FIXED / 2;
        for (let k = 0; k < weights.length; k += 1) sum += weights[k] * middle.data[3 * ((start + k) * width + x) + c];
        out.data[3 * (y * width + x) + c] = Math.min(255, Math.max(0, Math.floor(sum / FIXED)));
      }
    }
  }
  return out;
}

// The detector's boxes and scores on an image, run at about rules.detection.pixels pixels (OnnxFaceDetector.detect_at).
export async function detect(image, session, ort, contract) {
  const { detector, rules } = contract;
  const { width, height } = image;
  const scale = Math.min(2, Math.sqrt(rules.detection.pixels / (width * height)));
  const sizeX = Math.max(1, roundHalfEven(width * scale));
  const sizeY = Math.max(1, roundHalfEven(height * scale));
  const small = sizeX !== width || sizeY !== height ? resizeBilinear(image, sizeX, sizeY) : image;
  const multiple = detector.multiple;
  const paddedW = Math.ceil(sizeX / multiple) * multiple;
  const paddedH = Math.ceil(sizeY / multiple) * multiple;
  const input = new Float32Array(3 * paddedW * paddedH);
  const plane = paddedW * paddedH;
  for (let y = 0; y < sizeY; y += 1) {
    for (let x = 0; x < sizeX; x += 1) {
      const i = 3 * (y * sizeX + x);
      for (let c = 0; c < 3; c += 1) input[c * plane + y * paddedW + x] = small.data[i + c] / 255;
    }
  }
  const output = await session.run({ image: new ort.Tensor('float32', input, [1, 3, paddedH, paddedW]) });
  const maps = output[session.outputNames[0]];
  const [, , rows, cols] = maps.dims;
  const found = decode(maps.data, rows, cols, detector, [sizeX / width, sizeY / height]);
  maps.dispose?.();
  return found;
}

// Peaks of the centre map above fallback_score → { box, score, fallback } in the image's pixels (OnnxFaceDetector.decode):
// those below min_score are fallback detections, checked only where no confident one is a face.
export function decode(maps, rows, cols, detector, [scaleX, scaleY]) {
  const lowest = Math.min(detector.min_score, detector.fallback_score ?? detector.min_score);
  const cells = rows * cols;
  const heat = new Float32Array(cells);
  for (let i = 0; i < cells; i += 1) heat[i] = 1 / (1 + Math.exp(-maps[i]));
  const stride = detector.stride;
  const found = [];
  for (let r = 0; r < rows; r += 1) {
    for (let c = 0; c < cols; c += 1) {
      const value = heat[r * cols + c];
      if (!(value >= lowest)) continue;
      let peak = true;
      for (let dr = -1; dr <= 1 && peak; dr += 1) {
        for (let dc = -1; dc <= 1; dc += 1) {
          const rr = r + dr;
          const cc = c + dc;
          if (rr >= 0 && cc >= 0 && rr < rows && cc < cols && heat[rr * cols + cc] > value) { peak = false; break; }
        }
      }
      if (!peak) continue;
      const at = (channel) => maps[channel * cells + r * cols + c];
      const cx = (c + at(3)) * stride;
      const cy = (r + at(4)) * stride;
      const w = Math.exp(at(1)) * stride;
      const h = Math.exp(at(2)) * stride;
      const box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2];
      found.push({ box: box.map((v, i) => (v + 0.5) / (i % 2 ? scaleY : scaleX) - 0.5), score: value, fallback: value < detector.min_score });
    }
  }
  return found;
}

export function boxIou(a, b) {
  const x0 = Math.max(a[0], b[0]);
  const y0 = Math.max(a[1], b[1]);
  const x1 = Math.min(a[2], b[2]);
  const y1 = Math.min(a[3], b[3]);
  const inter = Math.max(0, x1 - x0) * Math.max(0, y1 - y0);
  const area = (r) => (r[2] - r[0]) * (r[3] - r[1]);
  return inter / Math.max(area(a) + area(b) - inter, 1e-9);
}

// Non-maximum suppression by score, then largest face first.
export function merge(found, overlap) {
  const kept = [];
  for (const d of [...found].sort((a, b) => b.score - a.score)) {
    if (kept.every((k) => boxIou(d.box, k.box) < overlap)) kept.push(d);
  }
  const area = (d) => (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]);
  return kept.sort((a, b) => area(b) - area(a));
}

// The faces in an image, their boxes in its pixels: the detector sees it shrunk by a whole factor to at
// most rules.detection.side pixels on its longer side (faces.py detect_faces and shrink).
export async function detectFaces(image, session, ort, contract) {
  const factor = Math.ceil(Math.max(image.width, image.height) / contract.rules.detection.side);
  const small = factor > 1 ? reduce(image, factor, true) : image;
  const found = merge(await detect(small, session, ort, contract), contract.rules.detection.merge_overlap);
  return found.map((d) => ({ ...d, box: d.box.map((v) => v * Math.max(factor, 1)) }));
}
