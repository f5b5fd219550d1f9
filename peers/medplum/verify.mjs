// Self-check of the Medplum test peer: starts `./run 0` (or uses BASE_URL when given), runs the
// behaviours the MEDCARE Screen tests rely on over HTTP and prints "N passed, N failed".
//
//   node_modules/.bin/node verify.mjs            (after ./build)
//   BASE_URL=http://127.0.0.1:8080/fhir node verify.mjs

import { startPeer } from './peer.mjs';

const { base, stop } = await startPeer();

let passed = 0;
let failed = 0;
function check(name, ok, detail) {
  if (ok) {
    passed++;
    console.log(`ok   ${name}`);
  } else {
    failed++;
    console.log(`FAIL ${name}${detail === undefined ? '' : `: ${typeof detail === 'string' ? detail : JSON.stringify(detail).slice(0, 400)}`}`);
  }
}

async function call(method, path, body, headers = {}) {
  const res = await fetch(path.startsWith('http') ? path : `${base}/${path}`, {
    method,
    headers: { 'Content-Type': 'application/fhir+json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, headers: res.headers, body: json };
}
const get = (path) => call('GET', path);
const errText = (r) => r.body?.issue?.map((i) => i.details?.text).join('; ');
const isOO = (r) => r.body?.resourceType === 'OperationOutcome';

const subject = (status, extra = {}) => ({
  resourceType: 'ResearchSubject',
  status,
  study: { reference: 'ResearchStudy/study-1' },
  individual: { reference: 'Patient/fx-1' },
  ...extra,
});

try {
  // metadata
  let r = await get('metadata');
  const rs = r.body?.rest?.[0];
  const subj = rs?.resource?.find((x) => x.type === 'ResearchSubject');
  check('metadata: 200 CapabilityStatement fhirVersion 4.0.1', r.status === 200 && r.body.resourceType === 'CapabilityStatement' && r.body.fhirVersion === '4.0.1');
  check('metadata: batch and transaction declared', ['batch', 'transaction'].every((c) => rs?.interaction?.some((i) => i.code === c)));
  check('metadata: ResearchSubject with search params', subj && ['identifier', 'status', 'individual', 'study'].every((p) => subj.searchParam.some((s) => s.name === p)));
  check('metadata: content type', r.headers.get('content-type')?.startsWith('application/fhir+json'));

  // create / read / update / vread / history
  r = await call('PUT', 'Patient/fx-1', { resourceType: 'Patient', id: 'fx-1', name: [{ family: 'Fixture' }], identifier: [{ system: 'urn:mrn', value: 'fx-1' }] });
  check('PUT Patient/fx-1 (client id, new): 201 + Location + ETag', r.status === 201 && /\/Patient\/fx-1\/_history\//.test(r.headers.get('location') ?? '') && /^W\/"[^"]+"$/.test(r.headers.get('etag') ?? ''), r.status);
  const v1 = r.body.meta?.versionId;
  r = await call('PUT', 'Patient/fx-1', { resourceType: 'Patient', id: 'fx-1', name: [{ family: 'Fixture' }], gender: 'female', identifier: [{ system: 'urn:mrn', value: 'fx-1' }] });
  check('PUT Patient/fx-1 (existing): 200, new version', r.status === 200 && r.body.meta.versionId !== v1 && r.headers.get('etag') === `W/"${r.body.meta.versionId}"`);
  r = await call('POST', 'Patient', { resourceType: 'Patient', id: 'ignored', name: [{ family: 'Smith', given: ['Anna'] }] });
  check('POST Patient: 201, server id, Location', r.status === 201 && r.body.id !== 'ignored' && r.headers.get('location')?.startsWith(`${base}/Patient/${r.body.id}/_history/`));
  r = await get('Patient/fx-1');
  check('read: 200 + ETag', r.status === 200 && r.body.gender === 'female' && r.headers.get('etag') === `W/"${r.body.meta.versionId}"`);
  r = await get(`Patient/fx-1/_history/${v1}`);
  check('vread: first version', r.status === 200 && r.body.gender === undefined && r.body.meta.versionId === v1);
  r = await get('Patient/fx-1/_history');
  check('history: 2 versions, newest first', r.status === 200 && r.body.type === 'history' && r.body.total === 2 && r.body.entry[1].resource.meta.versionId === v1);
  r = await get('Patient/nope');
  check('read missing: 404 OperationOutcome', r.status === 404 && isOO(r));

  // validation
  r = await call('POST', 'ResearchSubject', subject('bogus'));
  check('invalid ResearchSubject.status: 400 OperationOutcome', r.status === 400 && isOO(r) && /research-subject-status/.test(errText(r)), errText(r));
  const codes = ['candidate', 'eligible', 'follow-up', 'ineligible', 'not-registered', 'off-study', 'on-study', 'on-study-intervention', 'on-study-observation', 'pending-on-study', 'potential-candidate', 'screening', 'withdrawn'];
  let all = true;
  for (const c of codes) {
    const x = await call('POST', 'ResearchSubject', subject(c, { identifier: [{ system: 'urn:rs', value: `all-${c}` }] }));
    all &&= x.status === 201;
  }
  check('all 13 R4 ResearchSubject.status codes accepted', all);
  r = await call('POST', 'ResearchSubject', subject('candidate', { extension: [{ url: 'http://medcare.example/unknown-extension', valueString: 'x' }] }));
  check('unknown extension URL accepted', r.status === 201, errText(r));
  r = await call('POST', 'Observation', { resourceType: 'Observation', status: 'done', code: { text: 'x' } });
  check('invalid Observation.status: 400', r.status === 400 && isOO(r));
  r = await call('POST', 'Condition', { resourceType: 'Condition', subject: { reference: 'Patient/fx-1' }, clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'bogus' }] } });
  check('invalid Condition.clinicalStatus: 400', r.status === 400 && isOO(r));
  r = await call('POST', 'Condition', { resourceType: 'Condition', subject: { reference: 'Patient/fx-1' }, verificationStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-ver-status', code: 'maybe' }] } });
  check('invalid Condition.verificationStatus: 400', r.status === 400 && isOO(r));
  r = await call('POST', 'MedicationStatement', { resourceType: 'MedicationStatement', status: 'taking', medicationCodeableConcept: { text: 'x' }, subject: { reference: 'Patient/fx-1' } });
  check('invalid MedicationStatement.status: 400', r.status === 400 && isOO(r));
  r = await call('POST', 'MedicationRequest', { resourceType: 'MedicationRequest', status: 'active', intent: 'wish', medicationCodeableConcept: { text: 'x' }, subject: { reference: 'Patient/fx-1' } });
  check('invalid MedicationRequest.intent: 400', r.status === 400 && isOO(r));
  r = await call('POST', 'Observation', { resourceType: 'Observation', status: 'final', code: { text: 'x' }, valueFoo: 1 });
  check('unknown element: 400', r.status === 400 && isOO(r));
  r = await call('POST', 'Patient', { resourceType: 'Patient', birthDate: '' });
  check('empty string: 400', r.status === 400 && isOO(r));
  r = await call('POST', 'Patient', 'not json');
  check('malformed JSON: 400', r.status === 400 && isOO(r));

  // seed data for searches
  const tx = {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      { fullUrl: 'urn:uuid:11111111-1111-4111-8111-111111111111', resource: { resourceType: 'Patient', identifier: [{ system: 'urn:mrn', value: 'p1' }], name: [{ family: 'Müller' }] }, request: { method: 'POST', url: 'Patient', ifNoneExist: 'identifier=urn:mrn|p1' } },
      { fullUrl: 'urn:uuid:22222222-2222-4222-8222-222222222222', resource: { resourceType: 'Medication', code: { coding: [{ system: 'http://www.nlm.nih.gov/research/umls/rxnorm', code: '860975' }] } }, request: { method: 'POST', url: 'Medication' } },
      { resource: { resourceType: 'MedicationRequest', status: 'active', intent: 'order', subject: { reference: 'urn:uuid:11111111-1111-4111-8111-111111111111' }, medicationReference: { reference: 'urn:uuid:22222222-2222-4222-8222-222222222222' } }, request: { method: 'POST', url: 'MedicationRequest' } },
      { resource: { resourceType: 'Observation', status: 'final', code: { coding: [{ system: 'http://loinc.org', code: '4548-4' }] }, subject: { reference: 'urn:uuid:11111111-1111-4111-8111-111111111111' }, effectiveDateTime: '2024-05-01' }, request: { method: 'POST', url: 'Observation' } },
      { resource: { resourceType: 'Observation', status: 'final', code: { coding: [{ system: 'http://loinc.org', code: '2345-7' }] }, subject: { reference: 'urn:uuid:11111111-1111-4111-8111-111111111111' }, effectiveDateTime: '2022-05-01' }, request: { method: 'POST', url: 'Observation' } },
    ],
  };
  r = await call('POST', '', tx);
  check('transaction: 200 transaction-response, entries 201', r.status === 200 && r.body.type === 'transaction-response' && r.body.entry.every((e) => e.response.status === '201'), r.body);
  const pid = r.body.entry[0].response.location.split('/')[1];
  r = await get(`MedicationRequest?patient=${pid}`);
  check('urn:uuid references rewritten', r.body.entry?.[0]?.resource?.subject?.reference === `Patient/${pid}`);
  r = await call('POST', '', { ...tx, entry: [tx.entry[0]] });
  check('transaction again: ifNoneExist matches (200), no duplicate Patient', r.status === 200 && r.body.entry[0].response.status === '200' && r.body.entry[0].response.location === `Patient/${pid}`);
  r = await get('Patient?identifier=urn:mrn|p1');
  check('search token system|code', r.status === 200 && r.body.total === 1);

  // conditional create (header) / conditional update
  const h = { 'If-None-Exist': 'identifier=urn:ine|1' };
  const c1 = await call('POST', 'Patient', { resourceType: 'Patient', identifier: [{ system: 'urn:ine', value: '1' }] }, h);
  const c2 = await call('POST', 'Patient', { resourceType: 'Patient', identifier: [{ system: 'urn:ine', value: '1' }] }, h);
  check('If-None-Exist: 201 then 200 same id', c1.status === 201 && c2.status === 200 && c1.body.id === c2.body.id);
  const rsBody = (status) => subject(status, { identifier: [{ system: 'urn:medcare:rs', value: 'v1' }] });
  const u1 = await call('PUT', 'ResearchSubject?identifier=urn:medcare:rs|v1', rsBody('candidate'));
  const u2 = await call('PUT', 'ResearchSubject?identifier=urn:medcare:rs|v1', rsBody('eligible'));
  r = await get('ResearchSubject?identifier=urn:medcare:rs|v1');
  check('conditional update: 201 then 200, one resource', u1.status === 201 && u2.status === 200 && u1.body.id === u2.body.id && r.body.total === 1 && r.body.entry[0].resource.status === 'eligible');

  // searches
  r = await get(`Observation?code=http://loinc.org|4548-4,http://loinc.org|2345-7&patient=${pid}`);
  check('token comma-OR + patient=', r.body.total === 2);
  r = await get(`Observation?patient=Patient/${pid}&date=ge2024-01-01`);
  check('date prefix ge', r.body.total === 1 && r.body.entry[0].resource.effectiveDateTime === '2024-05-01');
  r = await get(`Observation?patient=${pid}&date=lt2024-01-01`);
  check('date prefix lt', r.body.total === 1 && r.body.entry[0].resource.effectiveDateTime === '2022-05-01');
  r = await get(`Observation?patient=${pid}&_sort=-date`);
  check('_sort=-date', r.body.entry?.map((e) => e.resource.effectiveDateTime).join() === '2024-05-01,2022-05-01');
  r = await get(`MedicationRequest?patient=${pid}&_include=MedicationRequest:medication`);
  check('_include=MedicationRequest:medication', r.body.total === 1 && r.body.entry.some((e) => e.search.mode === 'include' && e.resource.resourceType === 'Medication'));
  r = await get(`Patient?_id=${pid}&_revinclude=Observation:subject`);
  check('_revinclude=Observation:subject', r.body.total === 1 && r.body.entry.filter((e) => e.search.mode === 'include').length === 2);
  r = await get('Patient?_has:Observation:patient:code=4548-4');
  check('_has:Observation:patient:code', r.body.total === 1 && r.body.entry[0].resource.id === pid);
  r = await get('Patient?name=mull');
  check('string search: accent-insensitive starts-with', r.body.total === 1);
  check('searchset entries have fullUrl', r.body.entry?.[0]?.fullUrl === `${base}/Patient/${pid}`);

  // unknown / unsupported parameters
  for (const q of ['ResearchStudy?foo=bar', 'Observation?value-quantity=5', 'Observation?code:text=x', 'Observation?_sort=nope', 'Patient?_has:Observation:patient:bogus=1', 'Observation?_include=Observation:nope']) {
    r = await get(q);
    check(`400 for ${q}`, r.status === 400 && isOO(r), r.status);
  }
  r = await call('PUT', 'ResearchSubject?identfier=urn:medcare:rs|v1', rsBody('candidate'));
  check('400 for unknown param in conditional update', r.status === 400 && isOO(r));

  // paging
  const many = { resourceType: 'Bundle', type: 'batch', entry: [] };
  for (let i = 0; i < 45; i++) {
    many.entry.push({ resource: { resourceType: 'Observation', status: 'final', code: { coding: [{ system: 'urn:page', code: 'x' }] }, subject: { reference: 'Patient/fx-1' } }, request: { method: 'POST', url: 'Observation' } });
  }
  r = await call('POST', '', many);
  check('batch: 200 batch-response, bare "201" statuses', r.status === 200 && r.body.type === 'batch-response' && r.body.entry.every((e) => e.response.status === '201'));
  let url = `${base}/Observation?code=urn:page|x`;
  const seen = new Set();
  let pages = 0;
  let firstPage;
  while (url && pages < 10) {
    r = await get(url);
    firstPage ??= r.body;
    pages++;
    for (const e of r.body.entry ?? []) {
      seen.add(e.resource.id);
    }
    url = r.body.link?.find((l) => l.relation === 'next')?.url;
  }
  check('paging: default page size 20, self link, next links to the end', firstPage.entry.length === 20 && firstPage.total === 45 && firstPage.link.some((l) => l.relation === 'self') && pages === 3 && seen.size === 45, { pages, n: seen.size });
  check('paging: next link is absolute on the same origin', firstPage.link.find((l) => l.relation === 'next')?.url.startsWith(`${base}/Observation?`));

  // batch with a failing entry
  r = await call('POST', '', { resourceType: 'Bundle', type: 'batch', entry: [
    { resource: subject('bogus'), request: { method: 'POST', url: 'ResearchSubject' } },
    { request: { method: 'GET', url: 'Patient?identifier=urn:mrn|p1' } },
  ] });
  check('batch: failing entry gets 400 + outcome, others run', r.status === 200 && r.body.entry[0].response.status === '400' && r.body.entry[0].response.outcome?.resourceType === 'OperationOutcome' && r.body.entry[1].resource?.total === 1);

  // transaction rollback
  r = await call('POST', '', { resourceType: 'Bundle', type: 'transaction', entry: [
    { fullUrl: 'urn:uuid:33333333-3333-4333-8333-333333333333', resource: { resourceType: 'Patient', identifier: [{ system: 'urn:rollback', value: 'r1' }] }, request: { method: 'POST', url: 'Patient' } },
    { request: { method: 'DELETE', url: 'Patient/fx-1' } },
    { resource: { resourceType: 'ResearchSubject', status: 'bogus', study: { reference: 'ResearchStudy/s' }, individual: { reference: 'urn:uuid:33333333-3333-4333-8333-333333333333' } }, request: { method: 'POST', url: 'ResearchSubject' } },
  ] });
  const after = await get('Patient?identifier=urn:rollback|r1');
  const fx = await get('Patient/fx-1');
  check('transaction with invalid entry: 400 OperationOutcome', r.status === 400 && isOO(r));
  check('transaction rollback: created Patient absent, deleted Patient still there', after.body.total === 0 && fx.status === 200);

  // speed path (lib/speed.mjs: per-type expressions, search index, journaled rollback): every search
  // gives the same response with it and without it (X-Medplum-Peer-Speed: off = Medplum's own scan)
  const slowHeaders = { 'X-Medplum-Peer-Speed': 'off' };
  async function bothWays(path) {
    const fast = await get(path);
    const slow = await call('GET', path, undefined, slowHeaders);
    const same = fast.status === slow.status && JSON.stringify(fast.body) === JSON.stringify(slow.body);
    return { same, fast, slow, detail: same ? undefined : { path, fast: fast.body, slow: slow.body } };
  }
  const speedSearches = [
    `Observation?patient=${pid}`,
    `Observation?subject=Patient/${pid}&code=http://loinc.org|4548-4,http://loinc.org|2345-7`,
    `Observation?patient=${pid}&_sort=-date`,
    `Observation?patient=${pid}&date=ge2024-01-01`,
    `Observation?subject:Patient=${pid}`,
    `Observation?patient=${pid},fx-1&_count=100`,
    `Observation?patient=${pid}&code:not=http://loinc.org|4548-4`,
    'Observation?subject=Patient/fx-1&_count=7&_offset=14',
    'Observation?code=urn:page|x&_sort=date,-_lastUpdated&_count=10&_offset=5',
    'Observation?code=URN:PAGE|X&_count=3',
    'Observation?code=4548-4',
    'Observation?code=http://loinc.org|',
    'Observation?patient=Patient/nope',
    'Observation?subject:Patient.identifier=urn:mrn|p1',
    `MedicationRequest?patient=${pid}&_include=MedicationRequest:medication`,
    `Patient?_id=${pid}&_revinclude=Observation:subject`,
    `Patient?_id=${pid}&_revinclude=MedicationRequest:subject&_include:iterate=MedicationRequest:medication`,
    'Patient?_has:Observation:patient:code=4548-4',
    'Patient?name=mull',
    'Patient?identifier=urn:mrn|p1',
    'ResearchSubject?identifier=urn:medcare:rs|v1&status=eligible',
    'Condition?patient=fx-1',
    'Observation?_summary=count&patient=fx-1',
  ];
  const differing = [];
  for (const q of speedSearches) {
    const x = await bothWays(q);
    if (!x.same) {
      differing.push(x.detail);
    }
  }
  check(`speed path: ${speedSearches.length} searches give the same responses with and without it`, differing.length === 0, differing[0]);
  const batchOf = (urls) => ({ resourceType: 'Bundle', type: 'batch', entry: urls.map((url) => ({ request: { method: 'GET', url } })) });
  const b1 = await call('POST', '', batchOf(speedSearches.slice(0, 8)));
  const b2 = await call('POST', '', batchOf(speedSearches.slice(0, 8)), slowHeaders);
  check('speed path: a batch of searches gives the same response with and without it', b1.status === 200 && JSON.stringify(b1.body) === JSON.stringify(b2.body));

  // the index follows updates, deletes and rolled-back transactions
  const ixObs = (id, patient) => ({ resourceType: 'Observation', id, status: 'final', code: { coding: [{ system: 'urn:ix', code: 'c' }] }, subject: { reference: `Patient/${patient}` } });
  await call('PUT', 'Observation/ix-1', ixObs('ix-1', 'ix-a'));
  await call('PUT', 'Observation/ix-2', ixObs('ix-2', 'ix-a'));
  const totals = async () => {
    const out = [];
    for (const q of ['Observation?patient=ix-a', 'Observation?patient=ix-b', 'Observation?code=urn:ix|c']) {
      const x = await bothWays(q);
      out.push(x.same ? x.fast.body.total : `differs: ${JSON.stringify(x.detail).slice(0, 200)}`);
    }
    return out.join(',');
  };
  let t1 = await totals();
  await call('PUT', 'Observation/ix-1', ixObs('ix-1', 'ix-b'));
  let t2 = await totals();
  await call('DELETE', 'Observation/ix-2');
  let t3 = await totals();
  check('speed path: index follows update and delete (a,b,code totals 2,0,2 -> 1,1,2 -> 0,1,1)', t1 === '2,0,2' && t2 === '1,1,2' && t3 === '0,1,1', [t1, t2, t3]);
  const orderOf = async (q) => (await get(q)).body.entry?.map((e) => `${e.resource.id}@${e.resource.meta.versionId}`).join();
  const pageOrder = await orderOf('Observation?code=urn:page|x&_count=100');
  const firstPageObs = (await get('Observation?code=urn:page|x&_count=1')).body.entry[0].resource;
  const histBefore = (await get('Observation/ix-1/_history')).body.total;
  r = await call('POST', '', { resourceType: 'Bundle', type: 'transaction', entry: [
    { request: { method: 'DELETE', url: `Observation/${firstPageObs.id}` } },
    { resource: ixObs('ix-1', 'ix-a'), request: { method: 'PUT', url: 'Observation/ix-1' } },
    { resource: ixObs('ix-3', 'ix-a'), request: { method: 'PUT', url: 'Observation/ix-3' } },
    { resource: { ...ixObs('ix-4', 'ix-a'), status: 'bogus' }, request: { method: 'PUT', url: 'Observation/ix-4' } },
  ] });
  t1 = await totals();
  const pageOrderAfter = await orderOf('Observation?code=urn:page|x&_count=100');
  const histAfter = (await get('Observation/ix-1/_history')).body.total;
  const ix3 = await get('Observation/ix-3');
  check('speed path: a failed transaction leaves index, store order and history as they were', r.status === 400 && t1 === '0,1,1' && pageOrderAfter === pageOrder && histAfter === histBefore && ix3.status === 404, { status: r.status, t1, same: pageOrderAfter === pageOrder, histBefore, histAfter, ix3: ix3.status });

  // delete
  r = await call('DELETE', `Patient/${c1.body.id}`);
  const gone = await get(`Patient/${c1.body.id}`);
  check('delete: 200, then read 410', r.status === 200 && gone.status === 410);

  // big body
  const data = Buffer.alloc(42 * 1024 * 1024, 7).toString('base64');
  r = await call('POST', 'Binary', { resourceType: 'Binary', contentType: 'application/octet-stream', data });
  check('60 MB request body accepted', r.status === 201, r.status);
} catch (err) {
  failed++;
  console.log(`FAIL unexpected error: ${err.stack}`);
} finally {
  await stop();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
