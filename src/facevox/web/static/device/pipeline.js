// The whole pipeline in the browser, as facevox/api.py's Reconstructor with Settings(mesh="surface"):
// photo → faces → crop → volume (refined crop, mirrored) → landmarks, pose, surface, colours.
import { loadContract } from './contract.js';
import { decodePhoto, reduce, reductionFor, toPhoto } from './photo.js';
import { detectFaces } from './faces.js';
import { apply, chain, cropImage, cropMatrix, reduction } from './crop.js';
import { runNetwork } from './volume.js';
import { faceEvidence, fromHeatmaps } from './landmarks.js';
import { colourFromPhoto, frontDepth, pointsToPhoto, surfaceFromDepth } from './mesh.js';
import { headPose } from './pose.js';

export class Reconstructor {
  // ort: the onnxruntime-web module; modelsUrl: the folder with models/pipeline.json and the models.
  static async load(ort, modelsUrl) {
    const contract = await loadContract(modelsUrl);
    const options = { executionProviders: ['wasm'], graphOptimizationLevel: 'all' };
    const [detector, network] = await Promise.all([
      ort.InferenceSession.create(contract.urls.detector, options), ort.InferenceSession.create(contract.urls.network, options),
    ]);
    return new Reconstructor(ort, contract, detector, network);
  }

  constructor(ort, contract, detector, network) {
    Object.assign(this, { ort, contract, detector, network });
    this.rules = contract.rules;
    this.size = contract.network.input_size;
  }

  // Every face in a photo (a Blob or File), largest first, as plain data (see reconstructFace);
  // onProgress(text) hears of each stage. Throws an Error whose message is one line.
  async reconstruct(blob, onProgress = () => {}) {
    const timings = {};
    let clock = performance.now();
    const lap = (name) => { const now = performance.now(); timings[name] = (timings[name] || 0) + (now - clock) / 1000; clock = now; };
    onProgress('Reading the photo…');
    const { image, jpeg } = await decodePhoto(blob, this.rules.max_pixels);
    lap('decode');
    const { photo, detections } = await this.findFaces(image, jpeg, onProgress);
    lap('detect');
    const faces = [];
    const confident = detections.filter((d) => !d.fallback);
    for (const tier of [confident, detections.filter((d) => d.fallback)]) {  // fallback ones only where no confident one is a face
      for (const [index, detection] of tier.entries()) {
        onProgress(`Building face ${index + 1} of ${tier.length}…`);
        const face = await this.reconstructFace(photo, detection, lap);
        if (face) faces.push(face);
      }
      if (faces.length) break;
    }
    return { width: image.width, height: image.height, faces, timings };
  }

  // The photo at the size Python's pipeline decodes it (a JPEG at 1/2 to 1/8 where its faces allow; here
  // by block means) and the faces' boxes in the photo's pixels, largest first (api.py find_faces).
  async findFaces(image, jpeg, onProgress = () => {}) {
    const { rules } = this;
    const longer = Math.max(image.width, image.height);
    const first = jpeg && longer > rules.detection.side ? reductionFor(longer, rules.detection.side / 2, rules.max_reduction) : 1;
    let pixels = reduce(image, first);
    onProgress('Finding faces…');
    const found = await detectFaces(pixels, this.detector, this.ort, this.contract);
    const detections = found.map((d) => {
      const [[x0, y0], [x1, y1]] = apply(toPhoto(first), [d.box.slice(0, 2), d.box.slice(2)]);
      return { ...d, box: [x0, y0, x1, y1] };
    });
    let r = first;
    const finest = Math.min(...detections.map((d) => reduction(d.box, this.size, rules)));
    if (detections.length && finest < first) {
      r = finest;
      pixels = reduce(image, r);
    }
    return { photo: { pixels, reduction: r }, detections };
  }

  // One face from a detection: null where the network sees no face there (rules.min_evidence);
  // lap(stage) is told when each stage ends.
  async reconstructFace(photo, detection, lap = () => {}) {
    const { size, rules } = this;
    const network = this.contract.network;
    const pixelsToPhoto = toPhoto(photo.reduction);
    const crop = (matrix) => cropImage(photo.pixels, chain(matrix, pixelsToPhoto), size);
    const run = (matrix, surface) => runNetwork(this.network, this.ort, crop(matrix), network, rules.mirror_68, { surface, mirror: true });
    const count = network.num_landmarks;
    const side = network.heatmap_size;
    let matrix = cropMatrix(detection.box, size, rules);
    let output = await run(matrix, false);
    if (faceEvidence(output.heatmaps, count, side) < rules.min_evidence) {
      lap('network');
      return null;
    }
    let points = fromHeatmaps(output.heatmaps, output.depth, count, side, size);
    // the network's landmarks give the face box by the crop rule's own convention: crop again from them
    const marks = pointsToPhoto(Float64Array.from(points.flat()), matrix);
    const xs = []; const ys = [];
    for (let i = 0; i < marks.length; i += 3) { xs.push(marks[i]); ys.push(marks[i + 1]); }
    matrix = cropMatrix([Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)], size, rules);
    output = await run(matrix, true);
    points = fromHeatmaps(output.heatmaps, output.depth, count, side, size);
    lap('network');
    const { depth, mask } = frontDepth(output.volume, network.volume_depth, size, size, rules.surface.level);
    const surface = surfaceFromDepth(depth, mask, size, size, rules.surface);
    lap('mesh');
    const colours = colourFromPhoto(pointsToPhoto(surface.vertices, chain(matrix, pixelsToPhoto)), photo.pixels);
    lap('colour');
    const landmarks = pointsToPhoto(Float64Array.from(points.flat()), matrix);
    const landmarks3d = [];
    for (let i = 0; i < landmarks.length; i += 3) landmarks3d.push([landmarks[i], landmarks[i + 1], landmarks[i + 2]]);
    const [yaw, pitch, roll] = headPose(points, network.mean_landmarks_3d);
    return {
      box: detection.box, score: detection.score, landmarks_3d: landmarks3d, yaw, pitch, roll, cropMatrix: matrix,
      mesh: { vertices: pointsToPhoto(surface.vertices, matrix), triangles: surface.triangles, colours },
      front: { depth, mask },
    };
  }
}
