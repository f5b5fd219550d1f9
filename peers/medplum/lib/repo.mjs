// The in-memory repository of the Medplum test peer: Medplum's MemoryRepository with the pieces a
// test server needs and the in-memory store lacks (validation on write, transaction rollback,
// tombstones, correct _history order, _has, FHIR string matching, multi-key _sort).
//
// MemoryRepository keeps its data in the (TypeScript-private) fields `resources` and `history`
// and does every write through `createResourceSync` and every search through `searchSync`; the
// overrides below hook those. They are checked against @medplum/fhir-router 5.2.13 (pinned).

import {
  LRUCache,
  OperationOutcomeError,
  Operator,
  badRequest,
  deepClone,
  evalFhirPath,
  getSearchParameter,
  gone,
  matchesSearchRequest,
  parseSearchRequest,
  validateResource,
} from '@medplum/core';
import { MemoryRepository, getExtraEntries } from '@medplum/fhir-router';
import { SearchIndex, narrowedTablesActive, useNarrowedTables, withOriginalTables } from './speed.mjs';
import { checkRequiredBindings } from './terminology.mjs';

// parsed FHIRPath expressions (evalFhirPath without a cache parses the expression on every call)
const exprCache = new LRUCache(1000);

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
  const values = searchableStrings(evalFhirPath(searchParam.expression, resource, undefined, exprCache));
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
  const values = evalFhirPath(searchParam.expression, resource, undefined, exprCache).filter((v) => typeof v === 'string');
  const wanted = splitOnComma(filter.value);
  return values.some((v) => wanted.includes(v));
}

function referenceStrings(values) {
  return values
    .map((v) => (typeof v === 'string' ? v : v?.reference))
    .filter((v) => typeof v === 'string');
}

/** Marks an internal search request whose result entries need not be copies. */
const RAW = Symbol('raw');

function intersect(a, b) {
  const [small, large] = a.size <= b.size ? [a, b] : [b, a];
  const out = new Set();
  for (const x of small) {
    if (large.has(x)) {
      out.add(x);
    }
  }
  return out;
}

/**
 * One pass of MemoryRepository's sort (its comparator: JSON of the parameter's FHIRPath values,
 * localeCompare, negated for descending), with the keys computed once per resource.
 */
function sortByRule(resources, rule) {
  if (resources.length < 2) {
    return resources;
  }
  const expression = getSearchParameter(resources[0].resourceType, rule.code)?.expression;
  if (!expression) {
    return resources;
  }
  const sign = rule.descending ? -1 : 1;
  const keyed = resources.map((resource) => ({ resource, key: JSON.stringify(evalFhirPath(expression, resource, undefined, exprCache)) }));
  keyed.sort((a, b) => a.key.localeCompare(b.key) * sign);
  return keyed.map((k) => k.resource);
}

export class PeerRepository extends MemoryRepository {
  constructor() {
    super();
    /** Keys "Type/id" of deleted resources (read gives 410 Gone). */
    this.deleted = new Set();
    /** Reference/token index used to pre-filter searches (lib/speed.mjs); kept current on every write. */
    this.index = new SearchIndex((type) => this.resources.get(type));
    /** The speed path (narrowed expressions, reference index, page-only copies); see setSpeed. */
    this.speed = true;
    /** Inside withTransaction: the undo journal, and per nesting level the types copied so far. */
    this.journal = undefined;
    this.copiedTypes = undefined;
  }

  /**
   * Turns the speed path on or off. Off is Medplum's own evaluation: its original search parameter
   * tables and MemoryRepository's full scan. Results are the same either way (verify.mjs checks).
   */
  setSpeed(on) {
    this.speed = on;
    useNarrowedTables(on);
  }

  // ---- writes -------------------------------------------------------------------------------
  // Inside withTransaction every change is journaled first (see there).

  createResourceSync(resource, options, update = false) {
    if (!update && !options?.assignedId && resource?.id !== undefined) {
      // create (POST): the server assigns the id, a client-supplied one is ignored
      resource = { ...resource };
      delete resource.id;
    }
    validateOnWrite(resource);
    const entry = this.journal ? this.journalWrite(resource.resourceType, resource.id) : undefined;
    const result = super.createResourceSync(resource, options, update);
    if (entry) {
      entry.id = result.id;
    }
    this.deleted.delete(`${result.resourceType}/${result.id}`);
    this.index.put(result);
    return result;
  }

  async deleteResource(resourceType, id, options) {
    this.journal?.push(this.journalRemoval(resourceType, id));
    await super.deleteResource(resourceType, id, options);
    this.index.remove(resourceType, id);
    this.deleted.add(`${resourceType}/${id}`);
  }

  async expungeResources(resourceType, ids) {
    this.journal?.push(this.journalRemoval(resourceType, undefined, ids));
    await super.expungeResources(resourceType, ids);
    for (const id of ids) {
      this.index.remove(resourceType, id);
    }
  }

  clear() {
    super.clear();
    this.index.clear();
    this.deleted.clear();
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
  //
  // The undo information is a journal of the writes made inside the callback, not a copy of the
  // store (copying ~10,000 resources and their history on every transaction made loading data
  // quadratic). A create or update records what the id held before (resource, history length,
  // tombstone); the first delete of a resource type in a transaction records a copy of that
  // type's map, so that a rollback also restores the order of the map (the order of an unsorted
  // search result). Rollback undoes the journal newest first. Nested calls roll back to their own
  // start.
  async withTransaction(callback) {
    const outermost = this.journal === undefined;
    if (outermost) {
      this.journal = [];
      this.copiedTypes = [];
    }
    const mark = this.journal.length;
    this.copiedTypes.push(new Set());
    try {
      return await callback(this);
    } catch (err) {
      this.rollbackTo(mark);
      throw err;
    } finally {
      this.copiedTypes.pop();
      if (outermost) {
        this.journal = undefined;
        this.copiedTypes = undefined;
      }
    }
  }

  journalWrite(type, id) {
    const entry = {
      kind: 'write',
      type,
      id,
      hadType: this.resources.has(type),
      hadHistoryType: this.history.has(type),
      prior: id === undefined ? undefined : this.resources.get(type)?.get(id),
      historyLength: id === undefined ? undefined : this.history.get(type)?.get(id)?.length,
      wasDeleted: id !== undefined && this.deleted.has(`${type}/${id}`),
    };
    this.journal.push(entry);
    return entry;
  }

  journalRemoval(type, id, expunged) {
    const copied = this.copiedTypes[this.copiedTypes.length - 1];
    const byId = this.resources.get(type);
    let copy;
    if (byId && !copied.has(type)) {
      copy = new Map(byId);
      copied.add(type);
    }
    const histories = expunged?.map((x) => [x, this.history.get(type)?.get(x)]);
    return { kind: 'remove', type, id, expunged, copy, histories, wasDeleted: id !== undefined && this.deleted.has(`${type}/${id}`) };
  }

  rollbackTo(mark) {
    const touched = new Map();
    for (let i = this.journal.length - 1; i >= mark; i--) {
      const e = this.journal[i];
      const ids = e.expunged ?? (e.id === undefined ? [] : [e.id]);
      for (const id of ids) {
        touched.set(`${e.type}/${id}`, [e.type, id]);
      }
      if (e.kind === 'write') {
        if (e.id !== undefined) {
          const byId = this.resources.get(e.type);
          if (e.prior) {
            byId?.set(e.id, e.prior);
          } else {
            byId?.delete(e.id);
          }
          const history = this.history.get(e.type);
          if (e.historyLength === undefined) {
            history?.delete(e.id);
          } else if (history?.get(e.id)) {
            history.get(e.id).length = e.historyLength;
          }
        }
        if (!e.hadType) {
          this.resources.delete(e.type);
        }
        if (!e.hadHistoryType) {
          this.history.delete(e.type);
        }
      } else {
        if (e.copy) {
          this.resources.set(e.type, e.copy);
        }
        for (const [id, versions] of e.histories ?? []) {
          if (versions) {
            this.history.get(e.type)?.set(id, versions);
          }
        }
      }
      if (e.id !== undefined) {
        if (e.wasDeleted) {
          this.deleted.add(`${e.type}/${e.id}`);
        } else {
          this.deleted.delete(`${e.type}/${e.id}`);
        }
      }
    }
    this.journal.length = mark;
    for (const [type, id] of touched.values()) {
      const resource = this.resources.get(type)?.get(id);
      if (resource) {
        this.index.put(resource);
      } else {
        this.index.remove(type, id);
      }
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
    // Chained filters are resolved by MemoryRepository's own scan (its helpers are private).
    if (this.speed && !rest.some((f) => f.code.includes('.'))) {
      return this.fastSearch(searchRequest, rest, own, sortRules);
    }
    if (!own.length) {
      return super.searchSync({ ...searchRequest, filters: rest, sortRules });
    }

    const all = super.searchSync({ ...searchRequest, filters: rest, sortRules, offset: undefined, count: undefined });
    const matchesOwn = this.ownMatcher(own);
    const matched = (all.entry ?? []).filter(({ resource }) => matchesOwn(resource));
    const offset = searchRequest.offset ?? 0;
    const page = searchRequest.count === undefined ? matched.slice(offset) : matched.slice(offset, offset + searchRequest.count);
    return {
      resourceType: 'Bundle',
      type: 'searchset',
      entry: page.length ? page : undefined,
      total: matched.length,
    };
  }

  /** resource -> whether it passes the filters evaluated here (`_has` targets computed once, lazily). */
  ownMatcher(own) {
    const hasSets = new Map();
    return (resource) =>
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
      });
  }

  /**
   * The same search as MemoryRepository.searchSync plus the filters above, with three savings:
   * reference filters (patient=, subject=, ...) pick the candidates from the reference index
   * instead of testing every resource of the type; every candidate still goes through Medplum's
   * matcher (matchesSearchRequest) with all filters. Sort keys are computed once per resource
   * instead of once per comparison (same comparator, same stable sorts in the same order). And
   * only the returned page is copied, not every match.
   */
  fastSearch(searchRequest, rest, own, sortRules) {
    const type = searchRequest.resourceType;
    const store = this.resources.get(type);
    let resources = store?.values() ?? [];
    if (store) {
      let ids;
      for (const filter of rest) {
        const found = this.index.candidates(type, filter);
        if (found) {
          ids = ids === undefined ? found : intersect(ids, found);
        }
      }
      if (ids !== undefined) {
        // keep the store's order (the order of an unsorted result)
        const picked = [];
        if (ids.size) {
          for (const [id, resource] of store) {
            if (ids.has(id)) {
              picked.push(resource);
            }
          }
        }
        resources = picked;
      }
    }
    const base = { ...searchRequest, filters: rest };
    const matchesOwn = own.length ? this.ownMatcher(own) : undefined;
    let matched = [];
    for (const resource of resources) {
      if (matchesSearchRequest(resource, base) && (!matchesOwn || matchesOwn(resource))) {
        matched.push(resource);
      }
    }
    for (const rule of sortRules ?? []) {
      matched = sortByRule(matched, rule);
    }
    let page = matched;
    if (searchRequest.offset !== undefined) {
      page = page.slice(searchRequest.offset);
    }
    if (searchRequest.count !== undefined) {
      page = page.slice(0, searchRequest.count);
    }
    // RAW: an internal search (the inner search of _has) that only reads the results
    const copy = searchRequest[RAW] ? (r) => r : deepClone;
    return {
      resourceType: 'Bundle',
      type: 'searchset',
      entry: page.length ? page.map((resource) => ({ search: { mode: 'match' }, resource: copy(resource) })) : undefined,
      total: matched.length,
    };
  }

  // MemoryRepository.search, except that _include/_revinclude with :iterate (whose rounds evaluate
  // a parameter on resources of other types) run on Medplum's original search parameter tables.
  async search(searchRequest) {
    const bundle = this.searchSync(searchRequest);
    if ((searchRequest.include || searchRequest.revInclude) && bundle.entry?.length) {
      const entries = bundle.entry;
      const resources = entries.map((e) => e.resource);
      const mixed =
        [...(searchRequest.include ?? []), ...(searchRequest.revInclude ?? [])].some((p) => p.modifier === Operator.ITERATE) ||
        (searchRequest.include ?? []).some((p) => p.resourceType !== searchRequest.resourceType);
      const run = () => getExtraEntries(this, searchRequest, resources, entries);
      await (mixed && narrowedTablesActive() ? withOriginalTables(run) : run());
      bundle.entry = entries;
    }
    return bundle;
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
    const inner = { ...parseSearchRequest(type, { [restParts.join(':')]: filter.value }), [RAW]: true };
    const bundle = this.searchSync(inner);
    const refs = new Set();
    for (const { resource } of bundle.entry ?? []) {
      for (const ref of referenceStrings(evalFhirPath(sp.expression, resource, undefined, exprCache))) {
        refs.add(ref);
      }
    }
    return refs;
  }
}
