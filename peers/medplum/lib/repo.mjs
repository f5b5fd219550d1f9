// The in-memory repository of the Medplum test peer: Medplum's MemoryRepository with the pieces a
// test server needs and the in-memory store lacks (validation on write, transaction rollback,
// tombstones, correct _history order, _has, FHIR string matching, multi-key _sort).
//
// MemoryRepository keeps its data in the (TypeScript-private) fields `resources` and `history`
// and does every write through `createResourceSync` and every search through `searchSync`; the
// overrides below hook those. They are checked against @medplum/fhir-router 5.2.13 (pinned).

import {
  OperationOutcomeError,
  Operator,
  badRequest,
  evalFhirPath,
  getSearchParameter,
  gone,
  parseSearchRequest,
  validateResource,
} from '@medplum/core';
import { MemoryRepository } from '@medplum/fhir-router';
import { checkRequiredBindings } from './terminology.mjs';

/** Validates a resource on write: R4 structure (Medplum's validator) plus required bindings. */
export function validateOnWrite(resource) {
  if (!resource || typeof resource !== 'object' || Array.isArray(resource)) {
    throw new OperationOutcomeError(badRequest('Request body must be a FHIR resource'));
  }
  checkNoEmptyValues(resource);
  const tokens = {};
  // attachments may be large (requests up to 60 MB are accepted); Medplum defaults to 1 MiB
  validateResource(resource, { collect: { tokens }, base64BinaryMaxBytes: 64 * 1024 * 1024 });
  checkRequiredBindings(tokens);
}

/**
 * FHIR JSON forbids empty strings, empty arrays, empty objects and nulls. Medplum's validator lets
 * "" and [] through and its store then silently drops them; reject them instead, so a client that
 * sends them finds out.
 */
function checkNoEmptyValues(resource) {
  const issues = [];
  const visit = (value, path, nullItemsAllowed = false) => {
    if (issues.length >= 20) {
      return;
    }
    if (value === null || value === '') {
      issues.push(path);
    } else if (Array.isArray(value)) {
      if (value.length === 0) {
        issues.push(path);
      }
      value.forEach((v, i) => {
        // in a primitive array, null marks an item whose data is in the "_name" companion array
        if (v !== null || !nullItemsAllowed) {
          visit(v, `${path}[${i}]`);
        }
      });
    } else if (typeof value === 'object') {
      const keys = Object.keys(value);
      // the top-level meta may be empty: the server fills in versionId and lastUpdated
      if (keys.length === 0 && path !== `${resource.resourceType}.meta`) {
        issues.push(path);
      }
      for (const key of keys) {
        const companion = key.startsWith('_') ? key.slice(1) : `_${key}`;
        visit(value[key], `${path}.${key}`, Array.isArray(value[companion]));
      }
    }
  };
  visit(resource, resource.resourceType ?? 'Resource');
  if (issues.length) {
    throw new OperationOutcomeError({
      resourceType: 'OperationOutcome',
      issue: issues.map((path) => ({
        severity: 'error',
        code: 'structure',
        details: { text: 'Empty values are not allowed in FHIR JSON (empty string, array, object or null)' },
        expression: [path],
      })),
    });
  }
}

function normalizeString(s) {
  return s
    .normalize('NFD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase();
}

/** The strings a FHIR string search parameter matches against (HumanName and Address parts too). */
function searchableStrings(values) {
  const out = [];
  const visit = (v) => {
    if (v === undefined || v === null) {
      return;
    }
    if (typeof v === 'string') {
      out.push(v);
    } else if (Array.isArray(v)) {
      v.forEach(visit);
    } else if (typeof v === 'object') {
      for (const key of ['text', 'family', 'given', 'prefix', 'suffix', 'line', 'city', 'district', 'state', 'postalCode', 'country', 'value', 'display']) {
        visit(v[key]);
      }
    }
  };
  values.forEach(visit);
  return out;
}

function splitOnComma(value) {
  // FHIR: a comma separates OR values unless escaped as \,
  const parts = [];
  let current = '';
  for (let i = 0; i < value.length; i++) {
    const ch = value[i];
    if (ch === '\\' && i + 1 < value.length) {
      current += value[i + 1];
      i++;
    } else if (ch === ',') {
      parts.push(current);
      current = '';
    } else {
      current += ch;
    }
  }
  parts.push(current);
  return parts;
}

function matchesStringFilter(resource, searchParam, filter) {
  const values = searchableStrings(evalFhirPath(searchParam.expression, resource));
  const wanted = splitOnComma(filter.value);
  return values.some((raw) =>
    wanted.some((w) => {
      if (filter.operator === Operator.EXACT) {
        return raw === w;
      }
      const v = normalizeString(raw);
      const x = normalizeString(w);
      return filter.operator === Operator.CONTAINS ? v.includes(x) : v.startsWith(x);
    })
  );
}

function matchesUriFilter(resource, searchParam, filter) {
  const values = evalFhirPath(searchParam.expression, resource).filter((v) => typeof v === 'string');
  const wanted = splitOnComma(filter.value);
  return values.some((v) => wanted.includes(v));
}

function referenceStrings(values) {
  return values
    .map((v) => (typeof v === 'string' ? v : v?.reference))
    .filter((v) => typeof v === 'string');
}

export class PeerRepository extends MemoryRepository {
  constructor() {
    super();
    /** Keys "Type/id" of deleted resources (read gives 410 Gone). */
    this.deleted = new Set();
  }

  // ---- writes -------------------------------------------------------------------------------

  createResourceSync(resource, options, update = false) {
    if (!update && !options?.assignedId && resource?.id !== undefined) {
      // create (POST): the server assigns the id, a client-supplied one is ignored
      resource = { ...resource };
      delete resource.id;
    }
    validateOnWrite(resource);
    const result = super.createResourceSync(resource, options, update);
    this.deleted.delete(`${result.resourceType}/${result.id}`);
    return result;
  }

  async deleteResource(resourceType, id, options) {
    await super.deleteResource(resourceType, id, options);
    this.deleted.add(`${resourceType}/${id}`);
  }

  async readResource(resourceType, id) {
    try {
      return await super.readResource(resourceType, id);
    } catch (err) {
      if (this.deleted.has(`${resourceType}/${id}`)) {
        throw new OperationOutcomeError(gone);
      }
      throw err;
    }
  }

  /** Whether a live resource exists (used to answer 201 vs 200 on PUT). */
  exists(resourceType, id) {
    return Boolean(this.resources.get(resourceType)?.has(id));
  }

  // MemoryRepository.readHistory reverses the stored array in place on every call, so the order of
  // versions flips between calls; this returns newest first without touching the store.
  async readHistory(resourceType, id, options) {
    await this.readResource(resourceType, id);
    const versions = [...(this.history.get(resourceType)?.get(id) ?? [])].reverse();
    const offset = Math.max(0, options?.offset ?? 0);
    const limit = options?.limit ?? versions.length;
    const page = versions.slice(offset, offset + Math.max(0, limit));
    const entry = page.map((version, i) => {
      const first = offset + i === versions.length - 1;
      return {
        resource: structuredClone(version),
        request: { method: first ? 'POST' : 'PUT', url: first ? resourceType : `${resourceType}/${id}` },
        response: {
          status: first ? '201' : '200',
          etag: `W/"${version.meta?.versionId}"`,
          lastModified: version.meta?.lastUpdated,
        },
      };
    });
    return { resourceType: 'Bundle', type: 'history', total: versions.length, ...(entry.length ? { entry } : {}) };
  }

  // ---- transactions -------------------------------------------------------------------------

  // MemoryRepository.withTransaction just runs the callback. Here a failed callback restores the
  // store as it was before, so a failed transaction Bundle leaves nothing written. Requests are
  // serialized by the HTTP adapter, so no other write can interleave.
  async withTransaction(callback) {
    const resources = new Map([...this.resources].map(([type, byId]) => [type, new Map(byId)]));
    const history = new Map(
      [...this.history].map(([type, byId]) => [type, new Map([...byId].map(([id, list]) => [id, [...list]]))])
    );
    const deleted = new Set(this.deleted);
    try {
      return await callback(this);
    } catch (err) {
      this.resources.clear();
      for (const [k, v] of resources) {
        this.resources.set(k, v);
      }
      this.history.clear();
      for (const [k, v] of history) {
        this.history.set(k, v);
      }
      this.deleted = deleted;
      throw err;
    }
  }

  // ---- search -------------------------------------------------------------------------------

  // Filters MemoryRepository evaluates wrongly or not at all are evaluated here: _has (reverse
  // chaining), string parameters (FHIR: case- and accent-insensitive starts-with; :contains;
  // :exact) and uri parameters (exact match). Sort keys are applied in FHIR order (the store
  // applies them one after another, which makes the last key the primary one).
  searchSync(searchRequest) {
    const own = [];
    const rest = [];
    for (const filter of searchRequest.filters ?? []) {
      const sp = filter.code.includes('.') ? undefined : getSearchParameter(searchRequest.resourceType, filter.code);
      if (filter.code.startsWith('_has:')) {
        own.push({ filter, kind: 'has' });
      } else if (
        sp &&
        (sp.type === 'string' || sp.type === 'uri') &&
        filter.operator !== Operator.MISSING &&
        filter.operator !== Operator.PRESENT
      ) {
        own.push({ filter, kind: sp.type, sp });
      } else {
        rest.push(filter);
      }
    }
    const sortRules = searchRequest.sortRules ? [...searchRequest.sortRules].reverse() : undefined;
    if (!own.length) {
      return super.searchSync({ ...searchRequest, filters: rest, sortRules });
    }

    const all = super.searchSync({ ...searchRequest, filters: rest, sortRules, offset: undefined, count: undefined });
    const hasSets = new Map();
    const matched = (all.entry ?? []).filter(({ resource }) =>
      own.every(({ filter, kind, sp }) => {
        if (kind === 'string') {
          return matchesStringFilter(resource, sp, filter);
        }
        if (kind === 'uri') {
          return matchesUriFilter(resource, sp, filter);
        }
        let refs = hasSets.get(filter);
        if (!refs) {
          refs = this.reverseChainTargets(filter);
          hasSets.set(filter, refs);
        }
        return refs.has(`${resource.resourceType}/${resource.id}`);
      })
    );
    const offset = searchRequest.offset ?? 0;
    const page = searchRequest.count === undefined ? matched.slice(offset) : matched.slice(offset, offset + searchRequest.count);
    return {
      resourceType: 'Bundle',
      type: 'searchset',
      entry: page.length ? page : undefined,
      total: matched.length,
    };
  }

  /**
   * `_has:Observation:patient:code=1234` -> the set of "Type/id" strings referenced through
   * Observation.patient by Observations with code 1234. Nested _has works by recursion.
   */
  reverseChainTargets(filter) {
    const parts = filter.code.split(':');
    // _has : Type : refParam : rest...
    if (parts.length < 4) {
      throw new OperationOutcomeError(badRequest(`Invalid _has parameter: ${filter.code}`));
    }
    const [, type, refParam, ...restParts] = parts;
    const sp = getSearchParameter(type, refParam);
    if (!sp || sp.type !== 'reference') {
      throw new OperationOutcomeError(badRequest(`Invalid _has parameter: ${type}:${refParam} is not a reference parameter`));
    }
    const inner = parseSearchRequest(type, { [restParts.join(':')]: filter.value });
    const bundle = this.searchSync(inner);
    const refs = new Set();
    for (const { resource } of bundle.entry ?? []) {
      for (const ref of referenceStrings(evalFhirPath(sp.expression, resource))) {
        refs.add(ref);
      }
    }
    return refs;
  }
}
