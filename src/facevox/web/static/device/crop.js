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

// The (size, size) RGB crop of an RGB image by a matrix from image pixels to crop pixels: bilinear,
// outside the image black (samples across its edge blend into black), rounded: as scipy's
// ndimage.affine_transform(order=1, mode='grid-constant') in crop.py.
export function cropImage(image, matrix, size) {
  const back = invert(matrix);
  const { width, height, data } = image;
  const out = new Uint8Array(size * size * 3);
  const pixel = (x, y, c) => (x >= 0 && y >= 0 && x < width && y < height ? data[3 * (y * width + x) + c] : 0);
  for (let y = 0; y < size; y += 1) {
    for (let x = 0; x < size; x += 1) {
      const px = back[0][0] * x + back[0][1] * y + back[0][2];
      const py = back[1][0] * x + back[1][1] * y + back[1][2];
      const ix = Math.floor(px);
      const iy = Math.floor(py);
      const fx = px - ix;
      const fy = py - iy;
      if (ix < -1 || iy < -1 || ix >= width || iy >= height) continue;
      for (let c = 0; c < 3; c += 1) {
        const top = pixel(ix, iy, c) * (1 - fx) + pixel(ix + 1, iy, c) * fx;
        const bottom = pixel(ix, iy + 1, c) * (1 - fx) + pixel(ix + 1, iy + 1, c) * fx;
        out[3 * (y * size + x) + c] = Math.min(255, Math.max(0, Math.round(top * (1 - fy) + bottom * fy)));
      }
    }
  }
  return out;
}
