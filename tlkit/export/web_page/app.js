// The page's logic: load model.json and model.onnx, then classify each photo picked or dropped.
// Every file comes from this page's own folder (ONNX Runtime Web included): nothing from the internet.
import * as ort from './ort/ort.wasm.bundle.min.js';
import { preprocess, softmax } from './preprocess.js';

ort.env.wasm.numThreads = 1; // one thread: no SharedArrayBuffer, so no special server headers
ort.env.wasm.wasmPaths = { wasm: new URL('./ort/ort-wasm-simd-threaded.wasm', import.meta.url).href };

const $ = (id) => document.getElementById(id);
let meta, session;

async function load() {
  meta = await (await fetch('model.json')).json();
  session = await ort.InferenceSession.create('model.onnx', { executionProviders: ['wasm'] });
  $('status').textContent = `Ready: ${meta.backbone}, ${meta.image_size} px, classes ${meta.class_names.join(', ')}.`;
  document.body.dataset.ready = 'true';
}

/** The photo as RGB bytes, upright (EXIF), transparency on white, no colour management. */
async function pixels(file) {
  const bitmap = await createImageBitmap(file, {
    imageOrientation: 'from-image', colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const { width, height } = bitmap;
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
  }
  return { rgb, width, height };
}

function show(probabilities) {
  const order = probabilities.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]);
  const [best, top] = order[0];
  $('label').textContent = `${meta.class_names[top]} (${(100 * best).toFixed(1)}%)`;
  $('probs').replaceChildren(...order.map(([p, i]) => {
    const row = document.createElement('tr');
    row.innerHTML = `<td></td><td class="bar"><span style="width:${(100 * p).toFixed(1)}%"></span></td><td></td>`;
    row.cells[0].textContent = meta.class_names[i];
    row.cells[2].textContent = `${(100 * p).toFixed(1)}%`;
    return row;
  }));
  document.body.dataset.result = JSON.stringify({ label: meta.class_names[top], probabilities });
}

async function classify(file) {
  if (!session) return;
  $('status').textContent = `Classifying ${file.name}…`;
  delete document.body.dataset.result;
  try {
    $('preview').src = URL.createObjectURL(file);
    const { rgb, width, height } = await pixels(file);
    const size = meta.image_size;
    const input = new ort.Tensor('float32', preprocess(rgb, height, width, meta), [1, 3, size, size]);
    const output = await session.run({ [meta.input_name]: input });
    show(softmax(output[meta.output_name].data));
    $('status').textContent = `${file.name}: done.`;
  } catch (err) {
    $('status').textContent = `Could not classify ${file.name}: ${err.message || err}`;
    document.body.dataset.result = JSON.stringify({ error: String(err.message || err) });
  }
}

$('file').addEventListener('change', (e) => e.target.files[0] && classify(e.target.files[0]));
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  if (e.dataTransfer.files[0]) classify(e.dataTransfer.files[0]);
});
load().catch((err) => {
  $('status').textContent = `Could not load the model: ${err.message || err}. Serve this folder over HTTP ` +
    '(python -m http.server), do not open index.html as a file.';
  document.body.dataset.ready = 'error';
});
