// Landmarks (facevox/landmarks.py): the network's 68 heatmaps → points (x, y, k) in crop pixels.

// (count × size × size) heatmaps and depth maps → count [x, y, k] points: each the peak cell refined by
// a weighted mean over its 3×3 neighbourhood, its depth read at that cell.
export function fromHeatmaps(heatmaps, depth, count, size, inputSize) {
  const stride = inputSize / size;
  const cells = size * size;
  const points = [];
  for (let n = 0; n < count; n += 1) {
    const base = n * cells;
    let best = 0;
    for (let c = 1; c < cells; c += 1) if (heatmaps[base + c] > heatmaps[base + best]) best = c;
    const i = Math.floor(best / size);
    const j = best % size;
    let total = 0; let sumI = 0; let sumJ = 0;
    for (let ii = Math.max(i - 1, 0); ii < Math.min(i + 2, size); ii += 1) {
      for (let jj = Math.max(j - 1, 0); jj < Math.min(j + 2, size); jj += 1) {
        const w = Math.max(heatmaps[base + ii * size + jj], 0);
        total += w; sumI += w * ii; sumJ += w * jj;
      }
    }
    const ci = total > 0 ? sumI / total : i;
    const cj = total > 0 ? sumJ / total : j;
    points.push([stride * cj + (stride - 1) / 2, stride * ci + (stride - 1) / 2, depth[base + best]]);
  }
  return points;
}

// How surely the network sees a face: the mean over the landmarks of each heatmap's peak.
export function faceEvidence(heatmaps, count, size) {
  const cells = size * size;
  let sum = 0;
  for (let n = 0; n < count; n += 1) {
    let peak = -Infinity;
    for (let c = 0; c < cells; c += 1) peak = Math.max(peak, heatmaps[n * cells + c]);
    sum += peak;
  }
  return sum / count;
}
