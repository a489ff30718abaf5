// The page: a file picker, the camera, and ?image=URL for automation (its result goes to
// #edgevit-result as JSON, with data-state "done" or "error").
import { createClassifier, loadConfig } from './classify.mjs';

const $ = (id) => document.getElementById(id);
const result = $('edgevit-result');

function show(answer) {
  result.textContent = JSON.stringify(answer);
  $('top').replaceChildren(...answer.indices.slice(0, 5).map((index, i) => {
    const row = document.createElement('tr');
    for (const text of [answer.labels[i] || `class ${index}`, answer.scores[i].toFixed(4)]) {
      row.append(Object.assign(document.createElement('td'), { textContent: text }));
    }
    return row;
  }));
}

async function loaded(url) {
  const image = $('preview');
  image.src = url;
  image.hidden = false;
  await image.decode();
  return image;
}

async function main() {
  const config = await loadConfig();
  $('title').textContent = `${config.model} (${config.runtime})`;
  const classifier = await createClassifier(config);
  $('status').textContent = 'ready: pick an image or start the camera';
  $('file').addEventListener('change', async (event) => {
    const file = event.target.files[0];
    if (file) show(await classifier.classify(await loaded(URL.createObjectURL(file))));
  });
  $('start-camera').addEventListener('click', async () => {
    const video = $('camera');
    video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true });
    video.hidden = false;
    await video.play();
    const step = async () => {
      if (video.readyState >= 2) show(await classifier.classifyFrame(video, performance.now()));
      requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  });
  const url = new URLSearchParams(location.search).get('image');
  if (url) {
    show(await classifier.classify(await loaded(url)));
    result.dataset.state = 'done';
  }
}

main().catch((error) => {
  $('status').textContent = `error: ${error}`;
  result.textContent = JSON.stringify({ error: String(error?.stack ?? error) });
  result.dataset.state = 'error';
});
