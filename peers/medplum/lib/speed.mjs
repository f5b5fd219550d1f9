// The speed path of the Medplum test peer's searches. Two pieces, both invisible in results:
//
// 1. Per-type search parameter expressions. The R4 SearchParameters shared by many resource types
//    carry one FHIRPath union over all of them: `patient` is
//    "AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient) | ..." (30 branches,
//    1.4 KB). Medplum's matcher evaluates the whole union on every resource it tests, and a branch
//    for another type is not free (each one looks the type name up as a property, through every
//    choice-type suffix): 1.5-3 ms per resource for `patient`, against ~15 µs for the one branch
//    that can match. So for every resource type T this builds a table of the same SearchParameters
//    whose expression keeps only the branches that can yield anything on a T resource, and installs
//    it where Medplum looks parameters up (globalSchema.types[T].searchParams). A branch is dropped
//    only when it provably yields nothing on a T: it starts with another concrete resource type
//    name and then only navigates (properties, where, ofType, as, resolve, first, last, indexers),
//    which map an empty collection to an empty one. The kept branches are the original text; the
//    result is still a union (a single kept branch becomes "branch | {}"), so duplicates are
//    removed exactly as before. Each narrowed expression is checked to parse to exactly the kept
//    branches of the original parse; anything unexpected keeps the original expression.
//
// 2. A search index: resourceType -> reference or token parameter -> key -> ids, built lazily for
//    the (type, parameter) pairs searches use and kept current on every write. The key of a
//    reference is its last path segment (the id in "Patient/123"), which every reference Medplum's
//    matcher accepts for a value also has; the key of a token is its code, lower-cased. It only
//    pre-filters: the candidates still go through Medplum's matcher with all filters, so the
//    results are the same.

import {
  AsAtom,
  DotAtom,
  EmptySetAtom,
  FunctionAtom,
  IndexerAtom,
  LRUCache,
  Operator,
  SymbolAtom,
  UnionAtom,
  convertToSearchableReferences,
  convertToSearchableTokens,
  evalFhirPathTyped,
  getSearchParameter,
  globalSchema,
  parseFhirPath,
  splitSearchOnComma,
  toTypedValue,
} from '@medplum/core';

// ---- 1. per-type search parameter tables ----------------------------------------------------

/** resourceType -> { original, narrowed } searchParams tables. */
const tables = new Map();
let narrowedActive = false;

/** Functions that map an empty input collection to an empty result. */
const EMPTY_PRESERVING = new Set(['where', 'ofType', 'as', 'resolve', 'first', 'last']);

/** A structural dump of a parsed FHIRPath tree, to compare two parses exactly. */
function dump(x) {
  if (x === null || typeof x !== 'object') {
    return typeof x === 'string' ? JSON.stringify(x) : String(x);
  }
  if (Array.isArray(x)) {
    return `[${x.map(dump).join(',')}]`;
  }
  const keys = Object.keys(x)
    .filter((k) => typeof x[k] !== 'function')
    .sort();
  return `${x.constructor?.name ?? 'Object'}{${keys.map((k) => `${k}:${dump(x[k])}`).join(',')}}`;
}

/** The branches of a top-level union, left to right (a non-union is one branch). */
function unionBranches(atom, out = []) {
  if (atom instanceof UnionAtom) {
    unionBranches(atom.left, out);
    unionBranches(atom.right, out);
  } else {
    out.push(atom);
  }
  return out;
}

/**
 * Splits an expression's text at its top-level `|` (outside parentheses, brackets, braces,
 * 'strings' and `identifiers`). Returns undefined on anything unusual (comments, unbalanced).
 */
function splitTopLevelUnion(text) {
  const parts = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === "'" || ch === '`') {
      i++;
      while (i < text.length && text[i] !== ch) {
        i += text[i] === '\\' ? 2 : 1;
      }
      if (i >= text.length) {
        return undefined;
      }
    } else if (ch === '/' && (text[i + 1] === '/' || text[i + 1] === '*')) {
      return undefined;
    } else if (ch === '(' || ch === '[' || ch === '{') {
      depth++;
    } else if (ch === ')' || ch === ']' || ch === '}') {
      depth--;
      if (depth < 0) {
        return undefined;
      }
    } else if (ch === '|' && depth === 0) {
      parts.push(text.slice(start, i).trim());
      start = i + 1;
    }
  }
  if (depth !== 0) {
    return undefined;
  }
  parts.push(text.slice(start).trim());
  return parts;
}

/**
 * The leading symbol of a branch that only navigates from it (so that an empty start gives an
 * empty result), or undefined when the branch does anything else.
 */
function navigationRoot(atom) {
  if (atom instanceof SymbolAtom) {
    return atom.name;
  }
  if (atom instanceof DotAtom) {
    const step = atom.right;
    if (step instanceof SymbolAtom || (step instanceof FunctionAtom && EMPTY_PRESERVING.has(step.name))) {
      return navigationRoot(atom.left);
    }
    return undefined;
  }
  if (atom instanceof AsAtom || atom instanceof IndexerAtom) {
    return navigationRoot(atom.left);
  }
  return undefined;
}

/** Parses an expression once: its top-level branches with their original text, or undefined. */
function analyse(expression, cache) {
  if (cache.has(expression)) {
    return cache.get(expression);
  }
  let result;
  try {
    const branches = unionBranches(parseFhirPath(expression).child);
    const texts = splitTopLevelUnion(expression);
    if (branches.length > 1 && texts?.length === branches.length) {
      // (narrowExpression checks that the kept texts parse to exactly the kept branches)
      result = branches.map((atom, i) => ({ atom, text: texts[i], root: navigationRoot(atom) }));
    }
  } catch {
    result = undefined;
  }
  cache.set(expression, result);
  return result;
}

/** The expression of `sp` narrowed to the branches that can yield values on a `type` resource. */
function narrowExpression(type, sp, concreteTypes, cache) {
  // only a union can be narrowed (most expressions have no '|' at all)
  const items = sp.expression?.includes('|') ? analyse(sp.expression, cache) : undefined;
  if (!items) {
    return undefined;
  }
  const kept = items.filter((it) => !(it.root && it.root !== type && concreteTypes.has(it.root)));
  if (kept.length === items.length || kept.length === 0) {
    return undefined;
  }
  const parts = kept.map((it) => (it.text.includes('|') ? `(${it.text})` : it.text));
  const text = kept.length === 1 ? `${parts[0]} | {}` : parts.join(' | ');
  // check: the narrowed text parses to the union of exactly the kept branches
  const atoms = kept.map((it) => it.atom);
  let expected = atoms[0];
  for (let i = 1; i < atoms.length; i++) {
    expected = new UnionAtom(expected, atoms[i]);
  }
  if (kept.length === 1) {
    expected = new UnionAtom(expected, new EmptySetAtom());
  }
  try {
    if (dump(parseFhirPath(text).child) !== dump(expected)) {
      return undefined;
    }
  } catch {
    return undefined;
  }
  return text;
}

/**
 * Builds the narrowed search parameter table of every served resource type (once, at startup)
 * and installs it. Returns { types, narrowed, ms }.
 */
export function prepareSearchTables(resourceTypes) {
  const t0 = performance.now();
  const concreteTypes = new Set(resourceTypes);
  const cache = new Map();
  let narrowedCount = 0;
  for (const type of resourceTypes) {
    const schema = globalSchema.types[type];
    const original = schema?.searchParams;
    if (!original) {
      continue;
    }
    const narrowed = {};
    for (const [code, sp] of Object.entries(original)) {
      const expression = narrowExpression(type, sp, concreteTypes, cache);
      if (expression) {
        narrowed[code] = { ...sp, expression };
        narrowedCount++;
      } else {
        narrowed[code] = sp;
      }
    }
    tables.set(type, { original, narrowed });
  }
  useNarrowedTables(true);
  return { types: tables.size, narrowed: narrowedCount, ms: performance.now() - t0 };
}

/** Installs the narrowed (true) or Medplum's original (false) search parameter tables. */
export function useNarrowedTables(on) {
  if (on === narrowedActive) {
    return;
  }
  for (const [type, t] of tables) {
    globalSchema.types[type].searchParams = on ? t.narrowed : t.original;
  }
  narrowedActive = on;
}

export function narrowedTablesActive() {
  return narrowedActive;
}

/** Runs `fn` (sync or async) with Medplum's original tables installed. */
export async function withOriginalTables(fn) {
  const was = narrowedActive;
  useNarrowedTables(false);
  try {
    return await fn();
  } finally {
    useNarrowedTables(was);
  }
}

// ---- 2. search index ------------------------------------------------------------------------

const exprCache = new LRUCache(1000);

function lastSegment(reference) {
  return reference.slice(reference.lastIndexOf('/') + 1);
}

/**
 * The index keys of a resource for one parameter, from the same values Medplum's matcher compares:
 * reference parameter: the last path segment of each searchable reference (the matcher accepts a
 * value "Type/id" only for that exact reference and a bare "id" only for references ending in
 * "/id"); token parameter: each token's value, lower-cased (the matcher compares codes
 * case-insensitively, with or without a system).
 */
function keysOf(resource, sp) {
  const values = evalFhirPathTyped(sp.expression, [toTypedValue(resource)], undefined, exprCache);
  const keys = new Set();
  if (sp.type === 'reference') {
    for (const ref of convertToSearchableReferences(values)) {
      if (typeof ref === 'string') {
        keys.add(lastSegment(ref));
      }
    }
  } else {
    for (const token of convertToSearchableTokens(values)) {
      if (typeof token.value === 'string') {
        keys.add(token.value.toLowerCase());
      }
    }
  }
  return keys;
}

/**
 * The keys a filter value can match, or undefined when the value can match resources without
 * any key (a token "system|" matches every code of the system).
 */
function filterKeys(sp, value) {
  if (sp.type === 'reference') {
    return [lastSegment(value)];
  }
  if (value.includes('|')) {
    const [system, code] = value.split('|').map((x) => x.toLowerCase());
    if (!system && !code) {
      return []; // "|" matches nothing
    }
    return code ? [code] : undefined;
  }
  return [value.toLowerCase()];
}

export class SearchIndex {
  /** @param {(type: string) => Map<string, object> | undefined} storeOf the live resources of a type */
  constructor(storeOf) {
    this.storeOf = storeOf;
    /** resourceType -> Map(code -> { byKey: Map(key -> Set(id)), keysById: Map(id -> Set(key)) }) */
    this.tables = new Map();
  }

  clear() {
    this.tables.clear();
  }

  link(table, id, keys) {
    table.keysById.set(id, keys);
    for (const key of keys) {
      let ids = table.byKey.get(key);
      if (!ids) {
        ids = new Set();
        table.byKey.set(key, ids);
      }
      ids.add(id);
    }
  }

  unlink(table, id) {
    const keys = table.keysById.get(id);
    if (!keys) {
      return;
    }
    table.keysById.delete(id);
    for (const key of keys) {
      const ids = table.byKey.get(key);
      ids?.delete(id);
      if (ids?.size === 0) {
        table.byKey.delete(key);
      }
    }
  }

  table(type, code, sp) {
    let byCode = this.tables.get(type);
    if (!byCode) {
      byCode = new Map();
      this.tables.set(type, byCode);
    }
    let table = byCode.get(code);
    if (!table) {
      table = { byKey: new Map(), keysById: new Map() };
      for (const [id, resource] of this.storeOf(type) ?? []) {
        this.link(table, id, keysOf(resource, sp));
      }
      byCode.set(code, table);
    }
    return table;
  }

  /** After a create or update: re-index the stored resource in every table of its type. */
  put(resource) {
    const byCode = this.tables.get(resource.resourceType);
    if (!byCode) {
      return;
    }
    for (const [code, table] of byCode) {
      this.unlink(table, resource.id);
      this.link(table, resource.id, keysOf(resource, getSearchParameter(resource.resourceType, code)));
    }
  }

  /** After a delete or expunge. */
  remove(type, id) {
    for (const table of this.tables.get(type)?.values() ?? []) {
      this.unlink(table, id);
    }
  }

  /**
   * The ids that can match `filter` on `type` (a superset of the matches), or undefined when the
   * index does not serve the filter: only plain equality filters on reference and token
   * parameters (no modifier, chain, :not or :missing).
   */
  candidates(type, filter) {
    if (filter.operator !== Operator.EQUALS || !filter.value || filter.code.includes('.') || filter.code.includes(':')) {
      return undefined;
    }
    const sp = getSearchParameter(type, filter.code);
    if ((sp?.type !== 'reference' && sp?.type !== 'token') || !sp.expression) {
      return undefined;
    }
    const keys = [];
    for (const value of splitSearchOnComma(filter.value)) {
      const k = filterKeys(sp, value);
      if (!k) {
        return undefined;
      }
      keys.push(...k);
    }
    const table = this.table(type, filter.code, sp);
    if (keys.length === 1) {
      return table.byKey.get(keys[0]) ?? new Set();
    }
    const out = new Set();
    for (const key of keys) {
      for (const id of table.byKey.get(key) ?? []) {
        out.add(id);
      }
    }
    return out;
  }
}
