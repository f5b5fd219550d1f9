// Search parameter checks, paging links and entry decoration for the Medplum test peer.
//
// Medplum's MemoryRepository silently matches nothing for an unknown parameter or an unsupported
// parameter type (number, quantity, composite, special) and ignores most modifiers. A client bug
// must not look like "no data", so every search parameter is checked here and anything this peer
// cannot evaluate correctly is answered with 400 and an OperationOutcome.

import { OperationOutcomeError, Operator, badRequest, isResourceType } from '@medplum/core';

export const DEFAULT_COUNT = 20;
export const MAX_COUNT = 1000;

/** The R4 resource types this peer serves. */
export const resourceTypes = [];
/** resourceType -> Map(code -> SearchParameter) of the parameters this peer accepts. */
const allowed = new Map();
const SUPPORTED_TYPES = new Set(['string', 'token', 'reference', 'date', 'uri']);
const RESOURCE_LEVEL = ['_id', '_lastUpdated', '_profile', '_security', '_source', '_tag'];

export function loadSearchParameters(structureBundle, searchBundle) {
  for (const e of structureBundle.entry ?? []) {
    const sd = e.resource;
    // R4 (4.0.1) only: the bundle also carries R4B's SubscriptionStatus
    if (sd?.resourceType === 'StructureDefinition' && sd.kind === 'resource' && !sd.abstract && sd.fhirVersion === '4.0.1') {
      resourceTypes.push(sd.type);
      allowed.set(sd.type, new Map());
    }
  }
  resourceTypes.sort();
  const resourceLevel = [];
  for (const e of searchBundle.entry ?? []) {
    const sp = e.resource;
    if (sp?.resourceType !== 'SearchParameter') {
      continue;
    }
    for (const base of sp.base ?? []) {
      if (base === 'Resource' || base === 'DomainResource') {
        if (RESOURCE_LEVEL.includes(sp.code)) {
          resourceLevel.push(sp);
        }
      } else {
        allowed.get(base)?.set(sp.code, sp);
      }
    }
  }
  for (const params of allowed.values()) {
    for (const sp of resourceLevel) {
      params.set(sp.code, sp);
    }
  }
}

export function isServedType(type) {
  return allowed.has(type) && isResourceType(type);
}

/** The accepted parameters of a resource type (code -> SearchParameter). */
export function searchParamsOf(type) {
  return allowed.get(type) ?? new Map();
}

export function isSupportedParam(sp) {
  return SUPPORTED_TYPES.has(sp.type) && Boolean(sp.expression);
}

function fail(message, expression) {
  throw new OperationOutcomeError(badRequest(message, expression));
}

function lookup(type, code, key) {
  const sp = searchParamsOf(type).get(code);
  if (!sp) {
    fail(`Unknown search parameter '${code}' for resource type ${type}`, key);
  }
  if (!isSupportedParam(sp)) {
    fail(`Search parameter '${code}' (type ${sp.type}) of ${type} is not supported by this server`, key);
  }
  return sp;
}

const MODIFIERS = {
  string: new Set(['', 'contains', 'exact', 'missing']),
  token: new Set(['', 'not', 'missing']),
  reference: new Set(['', 'missing']),
  date: new Set(['', 'missing']),
  uri: new Set(['', 'missing']),
};

/**
 * Checks one filter parameter (name with optional modifier, chain or _has) against a resource
 * type. Returns the [key, value] to pass on (a reference type modifier is folded into the value).
 */
function checkFilter(type, key, value, depth = 0) {
  if (key.startsWith('_has:')) {
    const parts = key.split(':');
    if (parts.length < 4 || depth > 3) {
      fail(`Invalid _has parameter '${key}': expected _has:Type:reference-param:param`, key);
    }
    const [, srcType, refCode, ...rest] = parts;
    if (!isServedType(srcType)) {
      fail(`Invalid _has parameter '${key}': unknown resource type ${srcType}`, key);
    }
    const sp = lookup(srcType, refCode, key);
    if (sp.type !== 'reference') {
      fail(`Invalid _has parameter '${key}': ${srcType}:${refCode} is not a reference parameter`, key);
    }
    if (sp.target?.length && !sp.target.includes(type)) {
      fail(`Invalid _has parameter '${key}': ${srcType}:${refCode} cannot refer to ${type}`, key);
    }
    const [innerKey, innerValue] = checkFilter(srcType, rest.join(':'), value, depth + 1);
    return [`_has:${srcType}:${refCode}:${innerKey}`, innerValue];
  }

  const dot = key.indexOf('.');
  if (dot >= 0) {
    // forward chain: ref[:Type].param (one level, exact match semantics of Medplum's store)
    const left = key.slice(0, dot);
    const right = key.slice(dot + 1);
    const [code, targetType] = left.split(':');
    const sp = lookup(type, code, key);
    if (sp.type !== 'reference') {
      fail(`Invalid chained parameter '${key}': ${code} is not a reference parameter`, key);
    }
    const target = targetType ?? (sp.target?.length === 1 ? sp.target[0] : undefined);
    if (!target || !isServedType(target) || (sp.target?.length && !sp.target.includes(target))) {
      fail(`Invalid chained parameter '${key}': give the target type, e.g. ${code}:Patient.name`, key);
    }
    if (right.includes('.') || right.startsWith('_has')) {
      fail(`Chained parameter '${key}': only one level of chaining is supported`, key);
    }
    const [code2, modifier2] = right.split(':');
    lookup(target, code2, key);
    if (modifier2) {
      fail(`Chained parameter '${key}': modifiers on chained parameters are not supported`, key);
    }
    // Medplum's store matches a chained string parameter as "contains" (documented in README)
    return [key, value];
  }

  const colon = key.indexOf(':');
  const code = colon >= 0 ? key.slice(0, colon) : key;
  const modifier = colon >= 0 ? key.slice(colon + 1) : '';
  const sp = lookup(type, code, key);

  if (sp.type === 'reference' && modifier && modifier !== 'missing') {
    // type modifier: subject:Patient=123 -> subject=Patient/123
    if (!isServedType(modifier) || (sp.target?.length && !sp.target.includes(modifier))) {
      fail(`Unsupported modifier ':${modifier}' on reference parameter '${code}'`, key);
    }
    const v = value
      .split(',')
      .map((x) => (x.includes('/') ? x : `${modifier}/${x}`))
      .join(',');
    return [code, v];
  }
  if (!MODIFIERS[sp.type].has(modifier)) {
    fail(`Modifier ':${modifier}' on ${sp.type} parameter '${code}' is not supported by this server`, key);
  }
  if (modifier === 'missing' && value !== 'true' && value !== 'false') {
    fail(`':missing' takes true or false, got '${value}'`, key);
  }
  if (value === '' && modifier !== 'missing') {
    fail(`Empty value for search parameter '${key}'`, key);
  }
  return [key, value];
}

function checkInclude(type, key, value) {
  const [name, modifier] = key.split(':');
  if (modifier && modifier !== 'iterate') {
    fail(`Unsupported modifier on ${name}: ':${modifier}'`, key);
  }
  const parts = value.split(':');
  if (parts.length < 2 || parts.length > 3 || parts.includes('*')) {
    fail(`Invalid ${name} value '${value}': expected SourceType:reference-param[:TargetType]`, key);
  }
  const [srcType, code, targetType] = parts;
  if (!isServedType(srcType)) {
    fail(`Invalid ${name} value '${value}': unknown resource type ${srcType}`, key);
  }
  const sp = lookup(srcType, code, key);
  if (sp.type !== 'reference') {
    fail(`Invalid ${name} value '${value}': ${code} is not a reference parameter`, key);
  }
  if (targetType && (!isServedType(targetType) || (sp.target?.length && !sp.target.includes(targetType)))) {
    fail(`Invalid ${name} value '${value}': ${srcType}:${code} cannot refer to ${targetType}`, key);
  }
  if (!modifier) {
    if (name === '_include' && srcType !== type) {
      fail(`Invalid _include '${value}': the source type must be the searched type ${type}`, key);
    }
    if (name === '_revinclude' && sp.target?.length && !sp.target.includes(type)) {
      fail(`Invalid _revinclude '${value}': ${srcType}:${code} cannot refer to ${type}`, key);
    }
  }
}

function parseNonNegativeInt(key, value) {
  if (!/^\d+$/.test(value)) {
    fail(`${key} must be a non-negative integer, got '${value}'`, key);
  }
  return Number.parseInt(value, 10);
}

/** Lists a query object ({key: string|string[]}) as [key, value] pairs. */
export function queryPairs(query) {
  const pairs = [];
  for (const [key, value] of Object.entries(query ?? {})) {
    if (Array.isArray(value)) {
      for (const v of value) {
        pairs.push([key, String(v)]);
      }
    } else if (value !== undefined) {
      pairs.push([key, String(value)]);
    }
  }
  return pairs;
}

export function pairsToQuery(pairs) {
  const query = Object.create(null);
  for (const [k, v] of pairs) {
    const existing = query[k];
    if (existing === undefined) {
      query[k] = v;
    } else if (Array.isArray(existing)) {
      existing.push(v);
    } else {
      query[k] = [existing, v];
    }
  }
  return query;
}

/**
 * Checks the parameters of a search on `type`. With `conditional` set, only filter parameters are
 * allowed (If-None-Exist, conditional update/delete/patch).
 * Returns { pairs: the pairs to pass to Medplum (count and offset set), count, offset, elements }.
 */
export function checkSearch(type, pairsIn, { conditional = false } = {}) {
  let count = DEFAULT_COUNT;
  let offset = 0;
  let elements;
  let hasFilter = false;
  let summaryCount = false;
  const out = [];
  for (const [key, value] of pairsIn) {
    if (key === '_' || key === '_format' || key === '_pretty') {
      continue;
    }
    if (key.startsWith('_') && !key.startsWith('_has:') && !RESOURCE_LEVEL.includes(key.split(/[:.]/)[0])) {
      if (conditional) {
        fail(`Parameter '${key}' is not allowed in a conditional request`, key);
      }
      switch (key) {
        case '_count':
          count = Math.min(parseNonNegativeInt(key, value), MAX_COUNT);
          continue;
        case '_offset':
          offset = parseNonNegativeInt(key, value);
          continue;
        case '_sort':
          for (const field of value.split(',')) {
            lookup(type, field.startsWith('-') ? field.slice(1) : field, key);
          }
          out.push([key, value]);
          continue;
        case '_include':
        case '_include:iterate':
        case '_revinclude':
        case '_revinclude:iterate':
          checkInclude(type, key, value);
          out.push([key, value]);
          continue;
        case '_total':
          if (!['none', 'estimate', 'accurate'].includes(value)) {
            fail(`_total must be none, estimate or accurate, got '${value}'`, key);
          }
          continue;
        case '_summary':
          if (value === 'count') {
            summaryCount = true;
          } else if (value !== 'false') {
            fail(`_summary=${value} is not supported by this server (only count and false)`, key);
          }
          continue;
        case '_elements':
          elements = value
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean);
          continue;
        default:
          fail(`Search parameter '${key}' is not supported by this server`, key);
      }
    }
    hasFilter = true;
    out.push(checkFilter(type, key, value));
  }
  if (conditional && !hasFilter) {
    fail('A conditional request needs at least one search parameter');
  }
  if (summaryCount) {
    count = 0;
  }
  if (!conditional) {
    out.push(['_count', String(count)], ['_offset', String(offset)]);
  }
  return { pairs: out, count, offset, elements };
}

/**
 * Second line of defence, on parsed Medplum SearchRequests (this also covers searches Medplum
 * runs itself, e.g. resolving conditional entries of a Bundle): every filter must be one this
 * peer evaluates correctly.
 */
export function checkSearchRequest(searchRequest) {
  const type = searchRequest.resourceType;
  if (!isServedType(type)) {
    fail(`Unknown resource type '${type}'`);
  }
  const unsupported = new Set([
    Operator.TEXT,
    Operator.ABOVE,
    Operator.BELOW,
    Operator.IN,
    Operator.NOT_IN,
    Operator.OF_TYPE,
    Operator.IDENTIFIER,
  ]);
  for (const filter of searchRequest.filters ?? []) {
    if (filter.code.startsWith('_has:') || filter.code.includes('.')) {
      continue;
    }
    const sp = lookup(type, filter.code, filter.code);
    if (unsupported.has(filter.operator)) {
      fail(`Modifier ':${filter.operator}' on '${filter.code}' is not supported by this server`, filter.code);
    }
    if (sp.type === 'token' && ![Operator.EQUALS, Operator.NOT, Operator.NOT_EQUALS, Operator.MISSING, Operator.PRESENT].includes(filter.operator)) {
      fail(`Invalid use of token parameter '${filter.code}'`, filter.code);
    }
  }
  for (const rule of searchRequest.sortRules ?? []) {
    lookup(type, rule.code, '_sort');
  }
}

// ---- response decoration ------------------------------------------------------------------

// like URLSearchParams, but leaves the characters of FHIR search syntax (: | , /) readable
function encodePart(s) {
  return encodeURIComponent(s).replace(/%3A/gi, ':').replace(/%7C/gi, '|').replace(/%2C/gi, ',').replace(/%2F/gi, '/');
}

function linkUrl(baseUrl, type, pairs) {
  return `${baseUrl}${type}?${pairs.map(([k, v]) => `${encodePart(k)}=${encodePart(v)}`).join('&')}`;
}

/** Adds Bundle.link (self, first, previous, next) to a searchset Bundle. */
export function addSearchLinks(bundle, baseUrl, type, pairs, count, offset) {
  const filters = pairs.filter(([k]) => k !== '_count' && k !== '_offset');
  const at = (o) => linkUrl(baseUrl, type, [...filters, ['_count', String(count)], ['_offset', String(o)]]);
  const link = [{ relation: 'self', url: at(offset) }, { relation: 'first', url: at(0) }];
  if (offset > 0 && count > 0) {
    link.push({ relation: 'previous', url: at(Math.max(0, offset - count)) });
  }
  if (count > 0 && typeof bundle.total === 'number' && offset + count < bundle.total) {
    link.push({ relation: 'next', url: at(offset + count) });
  }
  bundle.link = link;
}

const SUBSETTED = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED' };

function applyElements(resource, elements) {
  const keep = new Set(['resourceType', 'id', 'meta']);
  const out = {};
  for (const [k, v] of Object.entries(resource)) {
    const base = k.startsWith('_') ? k.slice(1) : k;
    const choice = elements.some((e) => base.startsWith(e) && /^[A-Z]/.test(base.slice(e.length)));
    if (keep.has(k) || elements.includes(base) || choice) {
      out[k] = v;
    }
  }
  out.meta = { ...(out.meta ?? {}), tag: [...(out.meta?.tag ?? []), SUBSETTED] };
  return out;
}

/** Adds fullUrl to the entries of a searchset or history Bundle and applies _elements. */
export function decorateEntries(bundle, baseUrl, elements) {
  for (const entry of bundle.entry ?? []) {
    const r = entry.resource;
    if (r?.resourceType && r.id) {
      entry.fullUrl ??= `${baseUrl}${r.resourceType}/${r.id}`;
      if (elements?.length && entry.search?.mode === 'match') {
        entry.resource = applyElements(r, elements);
      }
    }
  }
  // put fullUrl first for readability
  if (bundle.entry) {
    bundle.entry = bundle.entry.map(({ fullUrl, ...rest }) => (fullUrl ? { fullUrl, ...rest } : rest));
  }
}
