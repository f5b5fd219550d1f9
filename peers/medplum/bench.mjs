// Search timing of the Medplum test peer: loads the fixture patients (transaction Bundles, as the
// integration tests do) and times the per-patient searches the screening client runs.
//
//   node_modules/.bin/node bench.mjs [--copies N] [--patients N] [--fixtures DIR]
//   BASE_URL=http://127.0.0.1:8080/fhir node bench.mjs      (a running server; loads into it)
//
// --copies N loads the fixtures N times (copy k>0 renames every "fx-" id to "fxk-"), e.g.
// --copies 10 gives ~10,000 resources. --patients N times the searches of the first N patients
// (default: all of copy 0); then --rounds N (default 5) rounds of a few searches without a patient.
// Prints load time, then per-search medians and means in ms.

import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { startPeer } from './peer.mjs';

const here = fileURLToPath(new URL('.', import.meta.url));
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const copies = Number(opt('--copies', '1'));
const fixtureDir = opt('--fixtures', `${here}../../fixtures/patients`);
const patientLimit = Number(opt('--patients', '0'));

const { base, stop } = await startPeer();

async function call(method, path, body, { allowFail = false } = {}) {
  const res = await fetch(`${base}/${path}`, {
    method,
    headers: { 'Content-Type': 'application/fhir+json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  if (res.status >= 300 && !allowFail) {
    throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json).slice(0, 300)}`);
  }
  return { status: res.status, ...json };
}

const files = readdirSync(fixtureDir)
  .filter((f) => f.endsWith('.json') && !f.endsWith('.expected.json'))
  .sort();
const texts = files.map((f) => readFileSync(`${fixtureDir}/${f}`, 'utf8'));

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN;
};
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const fmt = (x) => x.toFixed(1);

try {
  let t = performance.now();
  let resources = 0;
  let rejected = 0;
  const loaded = new Set();
  for (let k = 0; k < copies; k++) {
    for (const text of texts) {
      const bundle = JSON.parse(k === 0 ? text : text.replaceAll('fx-', `fx${k}-`));
      // a few fixtures are invalid on purpose (the server must reject them)
      const r = await call('POST', '', bundle, { allowFail: true });
      if (r.status >= 300) {
        rejected++;
      } else {
        resources += bundle.entry?.length ?? 0;
        if (k === 0) {
          loaded.add(text);
        }
      }
    }
  }
  const loadMs = performance.now() - t;
  console.log(
    `loaded ${files.length * copies} bundles (${rejected} rejected), ${resources} resources in ${(loadMs / 1000).toFixed(1)} s ` +
      `(${fmt(loadMs / (files.length * copies))} ms per bundle)`
  );

  const patientIds = texts
    .filter((text) => loaded.has(text))
    .map((text) => JSON.parse(text).entry?.find((e) => e.resource?.resourceType === 'Patient')?.resource?.id)
    .filter(Boolean)
    .slice(0, patientLimit || undefined);

  const codes = [
    ...['2986-8', '89247-1', '59847-4', '97509-4', '89243-0', '14913-8', '2991-8', '49041-7', '2857-1', '10886-0', '35741-8', '19197-3', '83112-3', '21889-1', '21899-0', '33728-7'].map((c) => `http://loinc.org|${c}`),
    'https://medcare-screen.org/fhir/CodeSystem/screening|progressive-lesion-count',
    'https://medcare-screen.org/fhir/CodeSystem/screening|imaging-lesion',
  ].join(',');
  const searchesOf = (id) => [
    `Observation?patient=${id}&code=${codes}&_count=100`,
    `Condition?patient=${id}&_count=100`,
    `MedicationStatement?patient=${id}&_include=MedicationStatement:medication&_count=100`,
    `MedicationRequest?patient=${id}&_include=MedicationRequest:medication&_count=100`,
    `MedicationAdministration?patient=${id}&_include=MedicationAdministration:medication&_count=100`,
    `Procedure?patient=${id}&_count=100`,
  ];
  const times = new Map();
  const record = (name, ms) => {
    if (!times.has(name)) {
      times.set(name, []);
    }
    times.get(name).push(ms);
  };
  t = performance.now();
  let matched = 0;
  for (const id of patientIds) {
    for (const path of [...searchesOf(id), `Condition?patient=Patient/${id}`]) {
      const s = performance.now();
      const b = await call('GET', path);
      record(path.split('&')[0].replace(id, 'ID').replace(/^(\w+\?)patient=ID$/, '$1patient=ID'), performance.now() - s);
      matched += b.total;
    }
    const s = performance.now();
    const b = await call('POST', '', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [`Patient/${id}`, ...searchesOf(id)].map((url) => ({ request: { method: 'GET', url } })),
    });
    record('batch (Patient + 6 searches)', performance.now() - s);
    if (b.entry.some((e) => e.response.status !== '200')) {
      throw new Error(`batch for ${id}: ${JSON.stringify(b.entry.map((e) => e.response.status))}`);
    }
  }
  const total = performance.now() - t;
  // searches without a patient (no reference index; every resource of the type is tested)
  const broad = [
    'Observation?code=http://loinc.org|2986-8&_count=20',
    'Observation?code=http://loinc.org|2986-8&_sort=-date&_count=20',
    'Patient?_has:Condition:subject:code=http://snomed.info/sct|399490008&_count=100',
    'Patient?name=fixture&_count=20',
  ];
  const rounds = Number(opt('--rounds', '5'));
  const broadTotals = new Map();
  for (let i = 0; i < rounds; i++) {
    for (const path of broad) {
      const s = performance.now();
      const b = await call('GET', path);
      record(path, performance.now() - s);
      broadTotals.set(path, b.total);
    }
  }
  console.log(`${patientIds.length} patients: ${(total / 1000).toFixed(1)} s for the searches and batches (${matched} matches)`);
  for (const [name, xs] of times) {
    const suffix = broadTotals.has(name) ? `  (total ${broadTotals.get(name)}, ${xs.length} runs)` : '';
    console.log(`  ${name.padEnd(64)} median ${fmt(median(xs)).padStart(7)} ms  mean ${fmt(mean(xs)).padStart(7)} ms${suffix}`);
  }
} finally {
  await stop();
}
