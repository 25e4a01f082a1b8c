// Photo stage (facevox/image.py): a file → RGB pixels upright as the camera saw them (EXIF orientation
// applied, alpha composited on white), and the same pixels at 1/r of their size.

// An RGB image: { width, height, data: Uint8Array(width * height * 3) }.
export function rgbImage(width, height, data = new Uint8Array(width * height * 3)) {
  return { width, height, data };
}

// The photo in a Blob/File → { image, jpeg }; throws an Error with a one-line reason.
export async function decodePhoto(blob, maxPixels) {
  const head = new Uint8Array(await blob.slice(0, 4).arrayBuffer());
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, { imageOrientation: 'from-image', colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch (_) {
    throw new Error('not an image this browser can read (or a damaged one)');
  }
  const { width, height } = bitmap;
  if (width * height > maxPixels) {
    bitmap.close();
    throw new Error(`too many pixels, ${width}×${height} (the limit is ${maxPixels / 1e6} megapixels)`);
  }
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext('2d', { willReadFrequently: true });
  context.fillStyle = '#fff';
  context.fillRect(0, 0, width, height);
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = context.getImageData(0, 0, width, height).data;
  const image = rgbImage(width, height);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    image.data[j] = rgba[i];
    image.data[j + 1] = rgba[i + 1];
    image.data[j + 2] = rgba[i + 2];
  }
  return { image, jpeg: head[0] === 0xff && head[1] === 0xd8 };
}

// The largest power of two up to maxReduction that shrinks `length` to no less than `least` (image.py reduction_for).
export function reductionFor(length, least, maxReduction) {
  let factor = 1;
  while (factor < maxReduction && length / (2 * factor) >= least) factor *= 2;
  return factor;
}

// The mean of each r × r block (pixel j stands for photo pixels r·j … r·j + r − 1): the stand-in for
// Python's JPEG decoding at 1/r, where the edge blocks average the pixels they have; whole: the edge
// rows and columns that fill no block are left out (PIL's Image.reduce over the whole blocks, faces.py shrink).
export function reduce(image, r, whole = false) {
  if (r === 1) return image;
  const round = whole ? Math.floor : Math.ceil;
  const width = round(image.width / r);
  const height = round(image.height / r);
  const out = rgbImage(width, height);
  for (let y = 0; y < height; y += 1) {
    const y1 = Math.min((y + 1) * r, image.height);
    for (let x = 0; x < width; x += 1) {
      const x1 = Math.min((x + 1) * r, image.width);
      let red = 0; let green = 0; let blue = 0; let count = 0;
      for (let yy = y * r; yy < y1; yy += 1) {
        for (let xx = x * r, i = 3 * (yy * image.width + xx); xx < x1; xx += 1, i += 3) {
          red += image.data[i]; green += image.data[i + 1]; blue += image.data[i + 2]; count += 1;
        }
      }
      const o = 3 * (y * width + x);
      out.data[o] = Math.round(red / count);
      out.data[o + 1] = Math.round(green / count);
      out.data[o + 2] = Math.round(blue / count);
    }
  }
  return out;
}

// The 2×3 matrix from the pixels of a 1/r image to the photo's (image.py Photo.to_photo).
export function toPhoto(r) {
  return [[r, 0, (r - 1) / 2], [0, r, (r - 1) / 2]];
}
