// edgevit web bundle: classify images in the browser with the model that model.json names,
// through MediaPipe Tasks (.tflite) or onnxruntime-web (.onnx), both served from this
// folder's node_modules (no CDN). Every result is {runtime, indices, labels, scores}:
// all classes, best first; scores are the model's outputs (logits, or probabilities for a
// model exported with --with-softmax).

const here = (path) => new URL(path, document.baseURI).href;

/** model.json, written by `edgevit bundle --platform web`. */
export async function loadConfig() {
  const response = await fetch(here('model.json'));
  if (!response.ok) throw new Error(`model.json: HTTP ${response.status}`);
  return response.json();
}

/** A classifier with classify(image) and classifyFrame(video, timestampMs). */
export async function createClassifier(config) {
  if (config.runtime === 'mediapipe') return mediapipeClassifier(config);
  if (config.runtime === 'onnxruntime-web') return onnxClassifier(config);
  throw new Error(`unknown runtime ${config.runtime}`);
}

function ranked(scores, config, runtime) {
  const indices = Array.from(scores.keys()).sort((a, b) => scores[b] - scores[a] || a - b);
  const labels = indices.map((i) => (config.labels ? config.labels[i] ?? '' : ''));
  return { runtime, indices, labels, scores: indices.map((i) => scores[i]) };
}

async function mediapipeClassifier(config) {
  const { FilesetResolver, ImageClassifier } = await import('./node_modules/@mediapipe/tasks-vision/vision_bundle.mjs');
  const fileset = await FilesetResolver.forVisionTasks(here('node_modules/@mediapipe/tasks-vision/wasm'));
  // the model's own metadata frames and normalizes the image (the whole image, stretched)
  const options = { baseOptions: { modelAssetPath: here(config.model_file), delegate: 'CPU' }, maxResults: -1 };
  const still = await ImageClassifier.createFromOptions(fileset, { ...options, runningMode: 'IMAGE' });
  let video = null;
  const runtime = `@mediapipe/tasks-vision ${config.package_version}`;
  const toResult = (result) => {
    const scores = new Array(config.classes).fill(-Infinity);
    for (const category of result.classifications[0].categories) scores[category.index] = category.score;
    return ranked(scores, config, runtime);
  };
  return {
    classify: async (image) => toResult(still.classify(image)),
    classifyFrame: async (frame, timestampMs) => {
      video ??= await ImageClassifier.createFromOptions(fileset, { ...options, runningMode: 'VIDEO' });
      return toResult(video.classifyForVideo(frame, timestampMs));
    },
  };
}

async function onnxClassifier(config) {
  const ort = await import('./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs');
  ort.env.wasm.wasmPaths = here('node_modules/onnxruntime-web/dist/');
  const bytes = new Uint8Array(await (await fetch(here(config.model_file))).arrayBuffer());
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
  const { height, width, layout, image_input: imageInput, mean, std, shape } = config.input;
  const runtime = `onnxruntime-web ${config.package_version}`;
  const run = async (source) => {
    const pixels = stretch(rgba(source), height, width);  // (H, W, 3) 0-255, as MediaPipe frames it
    const data = new Float32Array(height * width * 3);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        for (let c = 0; c < 3; c++) {
          const value = pixels[(y * width + x) * 3 + c];
          const at = layout === 'NHWC' ? (y * width + x) * 3 + c : (c * height + y) * width + x;
          data[at] = imageInput ? value : (value / 255 - mean[c]) / std[c];
        }
      }
    }
    const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', data, shape) };
    const outputs = await session.run(feeds);
    return ranked(Array.from(outputs[session.outputNames[0]].data), config, runtime);
  };
  return { classify: run, classifyFrame: (frame) => run(frame) };
}

/** An image, video frame or canvas as RGBA ImageData at its own size. */
function rgba(source) {
  const width = source.naturalWidth ?? source.videoWidth ?? source.width;
  const height = source.naturalHeight ?? source.videoHeight ?? source.height;
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext('2d', { willReadFrequently: true });
  context.drawImage(source, 0, 0);
  return context.getImageData(0, 0, width, height);
}

/** MediaPipe's bilinear stretch (edgevit predict --resize stretch): source = dst * in / out
 * rounded to 1/32 pixel (ties to even), 15-bit weights, edge pixels repeated, 8-bit result. */
function stretch(image, height, width) {
  const { width: cols, height: rows, data } = image;
  const out = new Float32Array(height * width * 3);
  const rint = (v) => { const f = Math.floor(v), d = v - f; return d > 0.5 ? f + 1 : d < 0.5 ? f : f + (f & 1); };
  const row = (y) => Math.min(Math.max(y, 0), rows - 1);
  const col = (x) => Math.min(Math.max(x, 0), cols - 1);
  for (let oy = 0; oy < height; oy++) {
    const ys = rint(oy * (rows / height) * 32), y0 = ys >> 5, fy = ys & 31;
    for (let ox = 0; ox < width; ox++) {
      const xs = rint(ox * (cols / width) * 32), x0 = xs >> 5, fx = xs & 31;
      const p00 = (row(y0) * cols + col(x0)) * 4, p01 = (row(y0) * cols + col(x0 + 1)) * 4;
      const p10 = (row(y0 + 1) * cols + col(x0)) * 4, p11 = (row(y0 + 1) * cols + col(x0 + 1)) * 4;
      for (let c = 0; c < 3; c++) {
        const weighted = ((data[p00 + c] * (32 - fx) + data[p01 + c] * fx) * (32 - fy)
                        + (data[p10 + c] * (32 - fx) + data[p11 + c] * fx) * fy) * 32;
        out[(oy * width + ox) * 3 + c] = (weighted + (1 << 14)) >> 15;
      }
    }
  }
  return out;
}
