// Volume stage (facevox/volume.py): a crop → the network's occupancy volume, landmark heatmaps and depths.
// With the surface asked for and mirror on, the maps are the means of the crop's and its mirror image's.

// crop: (size × size × 3) RGB bytes. → { volume (D×s×s) or null, heatmaps, depth (68×H×H) }, Float32Arrays.
export async function runNetwork(session, ort, crop, network, mirrorOrder, { surface = true, mirror = true } = {}) {
  const size = network.input_size;
  const plane = size * size;
  const both = surface && mirror;
  const input = new Float32Array((both ? 2 : 1) * 3 * plane);
  for (let y = 0; y < size; y += 1) {
    for (let x = 0; x < size; x += 1) {
      for (let c = 0; c < 3; c += 1) {
        const value = crop[3 * (y * size + x) + c] / 255;
        input[c * plane + y * size + x] = value;
        if (both) input[(3 + c) * plane + y * size + (size - 1 - x)] = value;
      }
    }
  }
  const names = [...(surface ? ['volume'] : []), 'heatmaps', 'landmark_depth'];
  const output = await session.run({ image: new ort.Tensor('float32', input, [both ? 2 : 1, 3, size, size]) }, names);
  const count = network.num_landmarks;
  const cells = network.heatmap_size ** 2;
  let heatmaps = output.heatmaps.data.slice(0, count * cells);
  let depth = output.landmark_depth.data.slice(0, count * cells);
  let volume = null;
  if (surface) {
    const voxels = network.volume_depth * plane;
    const data = output.volume.data;
    volume = both ? new Float32Array(voxels) : data.slice(0, voxels);
    if (both) {
      for (let row = 0; row < voxels; row += size) {
        for (let x = 0; x < size; x += 1) volume[row + x] = (data[row + x] + data[voxels + row + size - 1 - x]) / 2;
      }
    }
  }
  if (both) {
    const side = network.heatmap_size;
    const average = (data) => {
      const out = new Float32Array(count * cells);
      for (let n = 0; n < count; n += 1) {
        const other = (count + mirrorOrder[n]) * cells;
        for (let row = 0; row < cells; row += side) {
          for (let j = 0; j < side; j += 1) out[n * cells + row + j] = (data[n * cells + row + j] + data[other + row + side - 1 - j]) / 2;
        }
      }
      return out;
    };
    heatmaps = average(output.heatmaps.data);
    depth = average(output.landmark_depth.data);
  }
  for (const tensor of Object.values(output)) tensor.dispose?.();
  return { volume, heatmaps, depth };
}
