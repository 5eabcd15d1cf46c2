// Time ranges as the URL holds them: `since=1h` (relative, moves with now), `from`/`to`
// (absolute, RFC 3339) or `range=all`. Every page passes them to the API as they are.

import { api } from './api.js';

export const RELATIVE = [
  ['15m', 'Last 15 minutes'], ['1h', 'Last hour'], ['4h', 'Last 4 hours'], ['24h', 'Last 24 hours'],
  ['7d', 'Last 7 days'], ['30d', 'Last 30 days'],
];

const UNIT = { s: 1e6, m: 60e6, h: 3600e6, d: 86400e6 };

/** µs of a duration written `15m`, `24h`, `7d`. */
export const durationMicros = (text) => {
  const m = /^(\d+)([smhd])$/.exec(text || '');
  return m ? Number(m[1]) * UNIT[m[2]] : null;
};

/** The API parameters of the URL's range. */
export function rangeParams(params) {
  if (params.from || params.to) return { from: params.from, to: params.to };
  if (params.range === 'all') return {};
  return { since: params.since || '24h' };
}

/** The URL parameters that carry a range (to copy from one view to another). */
export function rangeOf(params) {
  const out = {};
  for (const k of ['since', 'from', 'to', 'range']) if (params[k]) out[k] = params[k];
  return out;
}

/** [fromµs, toµs] of a range, the store's span filling in open ends. */
export function bounds(params, span) {
  const now = Date.now() * 1000;
  const newest = span && span.newest ? Date.parse(span.newest) * 1000 + 1e6 : now;
  const oldest = span && span.oldest ? Date.parse(span.oldest) * 1000 : newest - 86400e6;
  if (params.from || params.to) {
    return [params.from ? Date.parse(params.from) * 1000 : oldest, params.to ? Date.parse(params.to) * 1000 : now];
  }
  if (params.range === 'all') return [oldest, newest];
  return [now - (durationMicros(params.since || '24h') || 86400e6), now];
}

const STEPS = [['1s', 1e6], ['5s', 5e6], ['10s', 10e6], ['30s', 30e6], ['1m', 60e6], ['5m', 300e6],
  ['10m', 600e6], ['30m', 1800e6], ['1h', 3600e6], ['3h', 10800e6], ['6h', 21600e6], ['12h', 43200e6], ['1d', 86400e6]];

/** A bucket width giving about `buckets` buckets over [from, to]: `[text, µs]`. */
export function step(from, to, buckets = 90) {
  const want = Math.max(1, (to - from) / buckets);
  return STEPS.find(([, us]) => us >= want) || STEPS[STEPS.length - 1];
}

/** RFC 3339 of µs since the epoch, to the second when it is whole. */
export function rfc3339(us) {
  const iso = new Date(Math.floor(us / 1000)).toISOString();
  return us % 1e6 === 0 ? iso.replace(/\.\d{3}Z$/, 'Z') : iso;
}

let spanPromise = null;
let spanAt = 0;
/** The store's extent (`/api/v1/span`), fetched at most every 30 s. */
export function storeSpan() {
  if (!spanPromise || Date.now() - spanAt > 30000) {
    spanAt = Date.now();
    spanPromise = api('span').catch(() => ({ events: 0 }));
  }
  return spanPromise;
}

/**
 * The range a view opens with when its URL names none: the last 24 hours when the store has
 * events in them, else the whole store (a bundled fixture or an import of old logs).
 */
export async function defaultRange() {
  const span = await storeSpan();
  if (span.newest && Date.now() - Date.parse(span.newest) > 86400e3) return { range: 'all' };
  return { since: '24h' };
}

/** Describes a range for people. */
export function describe(params) {
  if (params.from || params.to) return `${(params.from || '…').replace('T', ' ')} → ${(params.to || 'now').replace('T', ' ')}`;
  if (params.range === 'all') return 'All time';
  const r = RELATIVE.find(([v]) => v === (params.since || '24h'));
  return r ? r[1] : `Last ${params.since}`;
}
