// Query-language helpers the pages share: quoting values, adding terms from clicks, splitting a
// query into its search and its commands, and reading fields out of an event.

/** `value` as a query value: bare when the lexer reads it back unchanged, quoted otherwise. */
export function quote(value) {
  const text = String(value);
  if (/^[A-Za-z0-9_.:\/@-]+$/.test(text) && !/^(AND|OR|NOT)$/.test(text) && !text.startsWith('-')) {
    return text;
  }
  return '"' + text.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';
}

/** The search part (before the first `|` outside quotes) and the commands after it. */
export function splitPipes(q) {
  let inQuote = false;
  for (let i = 0; i < q.length; i++) {
    const c = q[i];
    if (c === '\\' && inQuote) { i++; continue; }
    if (c === '"') inQuote = !inQuote;
    if (c === '|' && !inQuote) return { search: q.slice(0, i).trim(), pipes: q.slice(i + 1).trim() };
  }
  return { search: q.trim(), pipes: '' };
}

/** `q` with `field:value` (or its negation) added to the search, commands kept. */
export function addTerm(q, field, value, exclude = false) {
  const { search, pipes } = splitPipes(q || '');
  const term = `${exclude ? '-' : ''}${field}:${value === null || value === undefined ? '*' : quote(value)}`;
  const negated = exclude ? `${field}:${quote(value)}` : `-${field}:${quote(value)}`;
  // Clicking the opposite of a term already there replaces it.
  let terms = search.split(/\s+/).filter((t) => t && t !== negated && t !== term);
  const base = terms.join(' ');
  const needsGroup = /\bOR\b/.test(base);
  const next = [needsGroup ? `(${base})` : base, term].filter(Boolean).join(' ');
  return pipes ? `${next} | ${pipes}` : next;
}

/** Whether `q` has `field:value` as a term (negated when `exclude`). */
export function hasTerm(q, field, value, exclude = false) {
  const { search } = splitPipes(q || '');
  const term = `${exclude ? '-' : ''}${field}:${quote(value)}`;
  return search.split(/\s+/).includes(term);
}

const annotation = (e, key) => (e.annotations || {})[key];

/** How to read each field of the query language from an event, for the table and panel. */
export const EXTRACT = {
  time: (e) => e.requestReceivedTimestamp,
  stage_time: (e) => e.stageTimestamp,
  id: (e) => e.auditID,
  stage: (e) => e.stage,
  level: (e) => e.level,
  verb: (e) => e.verb,
  user: (e) => e.user && e.user.username,
  group: (e) => e.user && e.user.groups,
  as: (e) => e.impersonatedUser && e.impersonatedUser.username,
  ip: (e) => e.sourceIPs,
  ua: (e) => e.userAgent,
  apigroup: (e) => e.objectRef && e.objectRef.apiGroup,
  apiversion: (e) => e.objectRef && e.objectRef.apiVersion,
  resource: (e) => e.objectRef && e.objectRef.resource,
  subresource: (e) => e.objectRef && e.objectRef.subresource,
  ns: (e) => e.objectRef && e.objectRef.namespace,
  name: (e) => e.objectRef && e.objectRef.name,
  uri: (e) => e.requestURI,
  code: (e) => e.responseStatus && e.responseStatus.code,
  status_reason: (e) => e.responseStatus && e.responseStatus.reason,
  message: (e) => e.responseStatus && e.responseStatus.message,
  decision: (e) => annotation(e, 'authorization.k8s.io/decision'),
  reason: (e) => annotation(e, 'authorization.k8s.io/reason'),
  latency: (e) => latencyMicros(e),
};

/** Fields shown as table columns when the URL names none. */
export const DEFAULT_COLUMNS = ['time', 'user', 'verb', 'resource', 'ns', 'name', 'code', 'ip'];

/** The value of `field` in a search hit (`{time, auditID, stage, cluster, event}`). */
export function fieldOf(hit, field) {
  if (field === 'cluster') return hit.cluster;
  const f = EXTRACT[field];
  return f ? f(hit.event) : undefined;
}

function latencyMicros(e) {
  const start = Date.parse(e.requestReceivedTimestamp);
  const end = Date.parse(e.stageTimestamp);
  if (Number.isNaN(start) || Number.isNaN(end)) return undefined;
  // Millisecond precision from Date; the microseconds are in the timestamps' text.
  return micros(e.stageTimestamp) - micros(e.requestReceivedTimestamp);
}

/** Microseconds since the epoch of an RFC 3339 timestamp (its fraction read to the µs). */
export function micros(text) {
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) return NaN;
  const fraction = /\.(\d+)/.exec(text);
  const us = fraction ? Number((fraction[1] + '000000').slice(3, 6)) : 0;
  return ms * 1000 + us;
}

/** A duration in µs as people read it: `850µs`, `12.3ms`, `1.52s`, `3m4s`. */
export function formatDuration(us) {
  if (us === null || us === undefined || Number.isNaN(us)) return '';
  const n = Number(us);
  if (n < 1000) return `${n}µs`;
  if (n < 1e6) return `${(n / 1000).toFixed(n < 1e4 ? 2 : n < 1e5 ? 1 : 0)}ms`;
  if (n < 60e6) return `${(n / 1e6).toFixed(2)}s`;
  const s = Math.round(n / 1e6);
  return `${Math.floor(s / 60)}m${s % 60}s`;
}

/** A display string of any field value. */
export function display(field, value) {
  if (value === undefined || value === null) return '';
  if (field === 'latency' || /latency/.test(field)) return typeof value === 'number' ? formatDuration(value) : String(value);
  if (Array.isArray(value)) return value.join(', ');
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/** `2026-03-02T08:00:01.123456Z` → `2026-03-02 08:00:01.123` (UTC, as the events are). */
export function formatTime(text) {
  if (!text) return '';
  const m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d{1,3})?/.exec(text);
  return m ? `${m[1]} ${m[2]}${m[3] || ''}` : text;
}
