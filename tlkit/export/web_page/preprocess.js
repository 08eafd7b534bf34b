// Preprocessing of tlkit's eval transform, reproduced pixel for pixel in the browser:
//   torchvision Resize(shorter side to resize_to) on a PIL image = Pillow's bilinear resample
//   (a triangle filter widened by the scale factor, horizontal pass then vertical, 8-bit
//   fixed point with rounding, clipped to 0..255 between the passes), then CenterCrop(size)
//   (offsets with Python's round), ToTensor (/255) and Normalize ((x - mean) / std).
// Plain functions on arrays, so node can test them against Pillow without a browser.

const PRECISION_BITS = 32 - 8 - 2; // Pillow's Resample.c

/** Python's round() for x.5: to the even neighbour. */
export function pyRound(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** torchvision's output size for Resize(short): [height, width]. */
export function resizedSize(height, width, short) {
  if (width <= height) return [Math.trunc(short * height / width), short];
  return [short, Math.trunc(short * width / height)];
}

/** Pillow's bilinear coefficients: bounds [xmin, count] and fixed-point weights per output pixel. */
function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = 1.0 * filterscale; // the bilinear filter's support is 1
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const count = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let total = 0.0;
    for (let x = 0; x < count; x++) {
      const d = Math.abs((x + xmin - center + 0.5) / filterscale);
      k[x] = d < 1.0 ? 1.0 - d : 0.0;
      total += k[x];
    }
    for (let x = 0; x < count; x++) {
      const w = total !== 0.0 ? k[x] / total : k[x];
      weights[xx * ksize + x] = Math.trunc(w < 0 ? -0.5 + w * (1 << PRECISION_BITS) : 0.5 + w * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = count;
  }
  return { bounds, weights, ksize };
}

function clip8(v) {
  if (v >= (1 << PRECISION_BITS) * 256) return 255;
  if (v <= 0) return 0;
  return Math.floor(v / (1 << PRECISION_BITS));
}

/** One pass along x (horizontal) or y over an RGB uint8 image (height, width, 3). */
function resamplePass(src, height, width, outSize, horizontal) {
  const { bounds, weights, ksize } = coefficients(horizontal ? width : height, outSize);
  const outH = horizontal ? height : outSize, outW = horizontal ? outSize : width;
  const out = new Uint8ClampedArray(outH * outW * 3);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const i = horizontal ? x : y;
      const start = bounds[i * 2], count = bounds[i * 2 + 1];
      for (let c = 0; c < 3; c++) {
        let acc = 1 << (PRECISION_BITS - 1);
        for (let j = 0; j < count; j++) {
          const p = horizontal ? (y * width + start + j) * 3 + c : ((start + j) * width + x) * 3 + c;
          acc += src[p] * weights[i * ksize + j];
        }
        out[(y * outW + x) * 3 + c] = clip8(acc);
      }
    }
  }
  return out;
}

/** Pillow's Image.resize((outW, outH), BILINEAR) of an RGB uint8 image. */
export function resizeBilinear(rgb, height, width, outH, outW) {
  let img = rgb, h = height;
  if (outW !== width) img = resamplePass(img, h, width, outW, true);
  if (outH !== height) { img = resamplePass(img, h, outW, outH, false); h = outH; }
  return img;
}

/** RGB uint8 (height, width) -> Float32Array (1, 3, size, size), as tlkit's eval transform. */
export function preprocess(rgb, height, width, meta) {
  const size = meta.image_size;
  const [rh, rw] = resizedSize(height, width, meta.resize_to);
  const resized = resizeBilinear(rgb, height, width, rh, rw);
  const top = pyRound((rh - size) / 2.0), left = pyRound((rw - size) / 2.0);
  const out = new Float32Array(3 * size * size);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const v = resized[((y + top) * rw + x + left) * 3 + c] / 255;
        out[(c * size + y) * size + x] = (v - meta.mean[c]) / meta.std[c];
      }
    }
  }
  return out;
}

/** Softmax of logits, in double precision. */
export function softmax(logits) {
  const m = Math.max(...logits);
  const e = Array.from(logits, (v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}
