// The crop rule (facevox/crop.py): a face box → the 2×3 matrix from photo pixels to the square network
// input, and the crop itself. Pixel centres at integer coordinates.
import { reductionFor } from './photo.js';

export function cropMatrix(box, size, rules) {
  const [x0, y0, x1, y1] = box;
  const width = x1 - x0;
  const height = y1 - y0;
  if (!(width > 0 && height > 0)) throw new Error(`empty face box ${box}`);
  const side = rules.crop.scale * Math.max(width, height);
  const centreX = 0.5 * (x0 + x1);
  const centreY = 0.5 * (y0 + y1) + rules.crop.shift_y * height;
  const scale = size / side;
  const offset = (size - 1) / 2;
  return [[scale, 0, offset - scale * centreX], [0, scale, offset - scale * centreY]];
}

// How many times smaller the photo may be decoded with this face's crop still `size` pixels of it across.
export function reduction(box, size, rules) {
  const [x0, y0, x1, y1] = box;
  return reductionFor(rules.crop.scale * Math.max(x1 - x0, y1 - y0), size, rules.max_reduction);
}

// The matrix that applies `inner`, then `outer`.
export function chain(outer, inner) {
  const m = [[0, 0, 0], [0, 0, 0]];
  for (let i = 0; i < 2; i += 1) {
    for (let j = 0; j < 3; j += 1) m[i][j] = outer[i][0] * inner[0][j] + outer[i][1] * inner[1][j];
    m[i][2] += outer[i][2];
  }
  return m;
}

export function invert(m) {
  const [[a, b, c], [d, e, f]] = m;
  const det = a * e - b * d;
  return [[e / det, -b / det, (b * f - c * e) / det], [-d / det, a / det, (c * d - a * f) / det]];
}

// [x, y] pairs (an array of arrays) through a 2×3 matrix.
export function apply(m, points) {
  return points.map(([x, y]) => [m[0][0] * x + m[0][1] * y + m[0][2], m[1][0] * x + m[1][1] * y + m[1][2]]);
}

// Round half to even, as OpenCV's cvRound.
function roundEven(v) {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// OpenCV's bilinear weights in 15-bit fixed point for each 1/32-pixel offset (initInterTab2D), with its
// correction of a sum off 32768 (which reaches only the bottom-right weight; the rest it misses).
const BILINEAR = (() => {
  const table = new Int32Array(32 * 32 * 4);
  const side = (k) => [Math.fround(1 - Math.fround(k / 32)), Math.fround(k / 32)];
  for (let i = 0; i < 32; i += 1) {
    for (let j = 0; j < 32; j += 1) {
      const cell = table.subarray((i * 32 + j) * 4, (i * 32 + j) * 4 + 4);
      let sum = 0;
      for (let k1 = 0; k1 < 2; k1 += 1) {
        for (let k2 = 0; k2 < 2; k2 += 1) {
          cell[k1 * 2 + k2] = roundEven(Math.fround(Math.fround(side(i)[k1] * side(j)[k2]) * 32768));
          sum += cell[k1 * 2 + k2];
        }
      }
      const diff = sum - 32768;
      if (diff < 0 || (diff > 0 && cell[3] <= 0)) cell[3] -= diff;
    }
  }
  return table;
})();

// The inverse of a 2×3 affine matrix as OpenCV's invertAffineTransform computes it.
function invertLikeOpenCV([[m0, m1, m2], [m3, m4, m5]]) {
  let d = m0 * m4 - m1 * m3;
  d = d !== 0 ? 1 / d : 0;
  const a11 = m4 * d; const a22 = m0 * d; const a12 = -m1 * d; const a21 = -m3 * d;
  return [[a11, a12, -a11 * m2 - a12 * m5], [a21, a22, -a21 * m2 - a22 * m5]];
}

// The (size, size) RGB crop of an RGB image by a matrix from image pixels to crop pixels, as crop.py's
// cv2.warpAffine(INTER_LINEAR, BORDER_CONSTANT 0) makes it: source positions in 1/32 pixel (from 1/1024
// fixed point), 15-bit weights, neighbours outside the image black.
export function cropImage(image, matrix, size) {
  const [[a, b, c], [d, e, f]] = invertLikeOpenCV(matrix);
  const { width, height, data } = image;
  const out = new Uint8Array(size * size * 3);
  const pixel = (x, y, ch) => (x >= 0 && y >= 0 && x < width && y < height ? data[3 * (y * width + x) + ch] : 0);
  const columnX = Array.from({ length: size }, (_, x) => roundEven(a * x * 1024));
  const columnY = Array.from({ length: size }, (_, x) => roundEven(d * x * 1024));
  for (let y = 0; y < size; y += 1) {
    const rowX = roundEven((b * y + c) * 1024) + 16;
    const rowY = roundEven((e * y + f) * 1024) + 16;
    for (let x = 0; x < size; x += 1) {
      const fixedX = (rowX + columnX[x]) >> 5;
      const fixedY = (rowY + columnY[x]) >> 5;
      const sx = fixedX >> 5;
      const sy = fixedY >> 5;
      if (sx >= width || sy >= height || sx + 1 < 0 || sy + 1 < 0) continue;
      const w = BILINEAR.subarray(((fixedY & 31) * 32 + (fixedX & 31)) * 4);
      for (let ch = 0; ch < 3; ch += 1) {
        const value = pixel(sx, sy, ch) * w[0] + pixel(sx + 1, sy, ch) * w[1] + pixel(sx, sy + 1, ch) * w[2] + pixel(sx + 1, sy + 1, ch) * w[3];
        out[3 * (y * size + x) + ch] = Math.min(255, Math.max(0, (value + 16384) >> 15));
      }
    }
  }
  return out;
}
