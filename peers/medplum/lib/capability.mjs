// The CapabilityStatement of the Medplum test peer, built from the same tables the server uses to
// accept or reject search parameters, so it declares exactly what is served.

import { isSupportedParam, resourceTypes, searchParamsOf } from './search.mjs';

const TYPE_INTERACTIONS = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'];

export function buildCapabilityStatement({ baseUrl, versions, startedAt }) {
  const revIncludes = new Map(resourceTypes.map((t) => [t, []]));
  const includesOf = new Map();
  for (const type of resourceTypes) {
    const includes = [];
    for (const [code, sp] of searchParamsOf(type)) {
      if (sp.type !== 'reference' || !isSupportedParam(sp)) {
        continue;
      }
      includes.push(`${type}:${code}`);
      for (const target of sp.target ?? []) {
        revIncludes.get(target)?.push(`${type}:${code}`);
      }
    }
    includesOf.set(type, includes.sort());
  }

  const resource = resourceTypes.map((type) => ({
    type,
    profile: `http://hl7.org/fhir/StructureDefinition/${type}`,
    interaction: TYPE_INTERACTIONS.map((code) => ({ code })),
    versioning: 'versioned',
    readHistory: true,
    updateCreate: true,
    conditionalCreate: true,
    conditionalRead: 'not-supported',
    conditionalUpdate: true,
    conditionalDelete: 'single',
    searchInclude: includesOf.get(type),
    searchRevInclude: revIncludes.get(type).sort(),
    searchParam: [...searchParamsOf(type).values()]
      .filter(isSupportedParam)
      .sort((a, b) => a.code.localeCompare(b.code))
      .map((sp) => ({ name: sp.code, definition: sp.url, type: sp.type })),
  }));

  return {
    resourceType: 'CapabilityStatement',
    id: 'medplum-test-peer',
    status: 'active',
    date: startedAt,
    publisher: 'MEDCARE Screen (test peer)',
    kind: 'instance',
    software: {
      name: 'Medplum FHIR router over MemoryRepository (MEDCARE Screen test peer)',
      version: versions['@medplum/fhir-router'],
    },
    implementation: {
      description: `In-memory FHIR R4 server for tests: @medplum/fhir-router ${versions['@medplum/fhir-router']}, @medplum/core ${versions['@medplum/core']}, Node ${process.versions.node}`,
      url: baseUrl,
    },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    patchFormat: ['application/json-patch+json'],
    rest: [
      {
        mode: 'server',
        documentation:
          'Search: string, token, reference, date and uri parameters; modifiers :missing, :not (token), ' +
          ':contains and :exact (string), reference type modifiers; _has; one-level chaining; _include and ' +
          '_revinclude (with :iterate); _sort; _count (default 20, max 1000); _offset; _elements; ' +
          '_summary=count. Unknown or unsupported parameters are rejected with 400.',
        resource,
        interaction: [{ code: 'transaction' }, { code: 'batch' }],
        searchParam: [
          { name: '_count', type: 'number' },
          { name: '_offset', type: 'number' },
          { name: '_sort', type: 'string' },
          { name: '_elements', type: 'string' },
          { name: '_summary', type: 'token' },
        ],
      },
    ],
  };
}
