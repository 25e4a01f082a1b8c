// The contract shared with the Python pipeline: models/pipeline.json (crop rule, detection sizes,
// thresholds, surface limits; facevox/rules.py reads the same file) and each model's own JSON.

async function getJson(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: ${response.status} ${response.statusText}`);
  return response.json();
}

// { rules, detector, network, urls: { detector, network } } from the folder that holds the models.
export async function loadContract(modelsUrl) {
  const base = new URL(modelsUrl, location.href);
  const rules = await getJson(new URL('pipeline.json', base));
  const names = rules.models;
  const [detector, network] = await Promise.all([
    getJson(new URL(`${names.detector}.json`, base)), getJson(new URL(`${names.network}.json`, base)),
  ]);
  return {
    rules, detector, network,
    urls: { detector: new URL(`${names.detector}.onnx`, base).href, network: new URL(`${names.network}.onnx`, base).href },
  };
}
