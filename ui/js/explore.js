// The explorer: query bar, time range, histogram, facets, events and the event panel; with
// commands (`| stats`, `| timechart`, `| top`) the same page draws the result as a chart and
// a table. All of its state is in the URL: q, the range, columns, the open event, the chart.

import { Component, html, useEffect, useMemo, useRef, useState } from '../vendor/preact-htm.mjs';
import { api, aborted } from './api.js';
import { href, navigate, Link } from './router.js';
import { QueryBar } from './querybar.js';
import { TimeChart, BarList, ResultTable, shape, pivot, compact } from './chart.js';
import { addTerm, hasTerm, splitPipes, fieldOf, DEFAULT_COLUMNS, EXTRACT, display, formatTime, quote, formatDuration } from './query.js';
import { RELATIVE, rangeParams, rangeOf, bounds, step, rfc3339, storeSpan, describe } from './time.js';

export const FACET_FIELDS = ['verb', 'resource', 'ns', 'user', 'group', 'user_kind', 'ip', 'code', 'client', 'ua', 'decision', 'stage', 'cluster'];
const ALL_COLUMNS = ['time', ...Object.keys(EXTRACT).filter((f) => f !== 'time'), 'cluster'];
const PAGE = 100;

/** The explorer's URL with some of its state changed. */
export function exploreHref(params, change = {}) {
  const next = { ...params, ...change };
  return href('/explore', next);
}

export function Explore({ params }) {
  const q = params.q || '';
  const range = rangeParams(params);
  const { pipes } = splitPipes(q);
  const set = (change, replace = false) => navigate(exploreHref(params, change), { replace });
  useEffect(() => { document.title = `${q || 'All events'} · kubetrail`; }, [q]);
  return html`<div>
    <h1 class="sr-only">Explore</h1>
    <div class="querybar">
      <${QueryBar} value=${q} rangeParams=${range} onSubmit=${(text) => set({ q: text, event: undefined })} />
      <${TimePicker} params=${params} onChange=${(r) => set({ since: undefined, from: undefined, to: undefined, range: undefined, ...r })} />
      <button class="primary" onClick=${() => { const el = document.getElementById('query'); set({ q: el ? el.value.trim() : q }); }}>Search</button>
    </div>
    ${pipes
      ? html`<${Analytics} params=${params} />`
      : html`<${Events} params=${params} set=${set} />`}
  </div>`;
}

/** The range control: relative choices, all time, or absolute from/to (UTC). */
export function TimePicker({ params, onChange }) {
  const absolute = !!(params.from || params.to);
  const [custom, setCustom] = useState(absolute);
  const value = absolute || custom ? 'custom' : params.range === 'all' ? 'all' : params.since || '24h';
  const [from, setFrom] = useState((params.from || '').replace(/Z$/, '').slice(0, 19));
  const [to, setTo] = useState((params.to || '').replace(/Z$/, '').slice(0, 19));
  useEffect(() => { setCustom(absolute); setFrom((params.from || '').replace(/Z$/, '').slice(0, 19)); setTo((params.to || '').replace(/Z$/, '').slice(0, 19)); }, [params.from, params.to]);
  const choose = (v) => {
    if (v === 'custom') { setCustom(true); return; }
    setCustom(false);
    onChange(v === 'all' ? { range: 'all' } : { since: v });
  };
  return html`<div class="timepicker">
    <select aria-label="Time range" value=${value} onChange=${(e) => choose(e.currentTarget.value)}>
      ${RELATIVE.map(([v, label]) => html`<option value=${v}>${label}</option>`)}
      <option value="all">All time</option>
      <option value="custom">Absolute (UTC)…</option>
    </select>
    ${(custom || absolute) && html`<fieldset>
      <legend class="sr-only">Absolute range in UTC</legend>
      <input type="datetime-local" step="1" aria-label="From (UTC)" value=${from} onInput=${(e) => setFrom(e.currentTarget.value)} />
      <input type="datetime-local" step="1" aria-label="To (UTC)" value=${to} onInput=${(e) => setTo(e.currentTarget.value)} />
      <button onClick=${() => onChange({ from: from ? withSeconds(from) + 'Z' : undefined, to: to ? withSeconds(to) + 'Z' : undefined })}>Apply</button>
    </fieldset>`}
  </div>`;
}

const withSeconds = (t) => (t.length === 16 ? t + ':00' : t);

/** The search view: histogram, facets, the events and the open one. */
function Events({ params, set }) {
  const q = params.q || '';
  const range = rangeParams(params);
  const [selected, setSelected] = useState(null);
  const open = params.event || null;
  return html`<div>
    <${Histogram} params=${params} onZoom=${(from, to) => set({ from: rfc3339(from), to: rfc3339(to), since: undefined, range: undefined })} />
    <div class=${open ? 'explore with-panel' : 'explore'}>
      <${Facets} q=${q} range=${range} onFilter=${(field, value, exclude) => set({ q: addTerm(q, field, value, exclude), event: undefined })} />
      <${Results} params=${params} set=${set} onSelect=${(hit) => { setSelected(hit); set({ event: `${hit.auditID}/${hit.stage}` }, true); }} />
      ${open && html`<${EventPanel} id=${open} hit=${selected} params=${params}
        onFilter=${(field, value, exclude) => set({ q: addTerm(q, field, value, exclude), event: undefined })}
        onClose=${() => set({ event: undefined }, true)} />`}
    </div>
  </div>`;
}

/** Events over time for the query; drag to zoom into a range. */
function Histogram({ params, onZoom }) {
  const q = splitPipes(params.q || '').search;
  const [state, setState] = useState({ loading: true });
  const key = [q, params.since, params.from, params.to, params.range].join('\n');
  useEffect(() => {
    const controller = new AbortController();
    setState((s) => ({ ...s, loading: true }));
    // After the search's request: the server runs a few queries at a time, the events first.
    const later = new Promise((resolve) => setTimeout(resolve, 0));
    later.then(storeSpan).then((span) => {
      if (controller.signal.aborted) return undefined;
      const [from, to] = bounds(params, span);
      const [stepText, stepUs] = step(from, to);
      return api('query', { ...rangeParams(params), q: `${q} | timechart ${stepText} count()` }, { signal: controller.signal })
        .then((result) => {
          // Every bucket of the range, empty ones as zero, so the bars sit where the time is.
          const first = Math.floor(from / stepUs) * stepUs;
          const counts = new Map(result.rows.map((r) => [Date.parse(r.time) * 1000, r.count]));
          const x = [];
          const y = [];
          for (let t = first; t < to && x.length < 2000; t += stepUs) { x.push(t / 1e6); y.push(counts.get(t) || 0); }
          const total = result.rows.reduce((n, r) => n + r.count, 0);
          setState({ x, series: [{ label: 'events', data: y }], total, stepText, key });
        });
    }).catch((e) => { if (!aborted(e)) setState({ error: e.message, key }); });
    return () => controller.abort();
  }, [key]);
  return html`<section class="histogram" aria-label="Events over time" aria-busy=${state.key !== key}>
    <div class="summary">${state.error ? html`<span class="error">${state.error}</span>`
      : state.loading && !state.x ? 'Counting…'
      : html`${compact(state.total)} events · ${describe(params)} · one bar per ${state.stepText} · drag to zoom`}</div>
    ${state.x && html`<${TimeChart} x=${state.x} series=${state.series} kind="bar" height=${110} label="Histogram of matching events"
      onZoom=${(from, to) => onZoom(Math.floor(from) * 1e6, Math.ceil(to) * 1e6)} />`}
  </section>`;
}

/** Facets open when the page loads; the others are counted when opened. */
const OPEN_FACETS = ['verb', 'resource', 'user', 'code'];

/**
 * The facet sidebar: value counts of the audit fields for the query. Only open facets are
 * counted (one scan of the store each): on a large store the closed ones cost nothing until
 * someone opens them.
 */
function Facets({ q, range, onFilter }) {
  const [open, setOpen] = useState(() => new Set(OPEN_FACETS));
  const [counted, setCounted] = useState({ key: null, fields: {} });
  const [error, setError] = useState(null);
  const search = splitPipes(q).search;
  const key = [search, range.since, range.from, range.to].join('\n');
  const count = (fields, merge) => {
    const controller = new AbortController();
    // After the search's request (see the histogram).
    const timer = setTimeout(() => api('facets', { ...range, q: search, fields: fields.join(','), limit: 10, total: false }, { signal: controller.signal })
      .then((answer) => {
        const values = Object.fromEntries(answer.facets.map((f) => [f.field, f.values]));
        setCounted((c) => ({ key, fields: merge && c.key === key ? { ...c.fields, ...values } : values }));
        setError(null);
      })
      .catch((e) => { if (!aborted(e)) { setError(e.message); setCounted((c) => ({ ...c, key })); } }), 0);
    return () => { clearTimeout(timer); controller.abort(); };
  };
  useEffect(() => count(FACET_FIELDS.filter((f) => open.has(f)), false), [key]);
  const toggle = (field, isOpen) => {
    const next = new Set(open);
    if (isOpen) next.add(field); else next.delete(field);
    setOpen(next);
    if (isOpen && !(counted.key === key && field in counted.fields)) count([field], true);
  };
  const busy = counted.key !== key || FACET_FIELDS.some((f) => open.has(f) && !(f in counted.fields));
  return html`<section class="facets" aria-label="Facets" aria-busy=${busy}>
    <h2 class="sr-only">Facets</h2>
    ${error && html`<p class="error">${error}</p>`}
    ${FACET_FIELDS.map((field) => html`<${Facet} key=${field} field=${field} open=${open.has(field)}
      values=${counted.key === key ? counted.fields[field] : undefined} onToggle=${toggle}
      q=${q} search=${search} range=${range} onFilter=${onFilter} />`)}
  </section>`;
}

function Facet({ field, open, values: counted, onToggle, q, search, range, onFilter }) {
  const [values, setValues] = useState(counted || []);
  const [limit, setLimit] = useState(10);
  const [filter, setFilter] = useState('');
  useEffect(() => { setValues(counted || []); setLimit(10); }, [counted]);
  // Searching a facet asks the server for matching values, not only the loaded ones.
  useEffect(() => {
    if (!filter) { return undefined; }
    const controller = new AbortController();
    const timer = setTimeout(() => {
      const term = `${field}:*${filter.replace(/[\\"*]/g, '')}*`;
      api('facets', { ...range, q: search ? `${search} ${term}` : term, fields: field, limit: 100 }, { signal: controller.signal })
        .then((answer) => setValues((answer.facets[0] || {}).values || []))
        .catch(() => {});
    }, 200);
    return () => { clearTimeout(timer); controller.abort(); };
  }, [filter]);
  const more = () => {
    const next = limit < 100 ? 100 : 1000;
    api('facets', { ...range, q: search, fields: field, limit: next })
      .then((answer) => { setValues((answer.facets[0] || {}).values || []); setLimit(next); })
      .catch(() => {});
  };
  const shown = filter ? values.filter((v) => String(v.value).toLowerCase().includes(filter.toLowerCase())) : values;
  return html`<details open=${open} onToggle=${(e) => e.currentTarget.open !== open && onToggle(field, e.currentTarget.open)} aria-busy=${open && !counted}>
    <summary>${field}<span class="muted">${counted ? (counted.length >= 10 ? '10+' : counted.length) : ''}</span></summary>
    ${open && !counted && html`<p class="muted">Counting…</p>`}
    ${open && counted && html`<div>
      <input type="search" aria-label=${`Search ${field} values`} placeholder=${`Search ${field}…`} value=${filter} onInput=${(e) => setFilter(e.currentTarget.value)} />
      <ul>${shown.map((v) => {
        const value = v.value === null ? null : String(v.value);
        const included = value !== null && hasTerm(q, field, value);
        const excluded = value !== null && hasTerm(q, field, value, true);
        return html`<li key=${value}>
          <button class="value" aria-pressed=${included} title=${value === null ? '(none)' : value}
            onClick=${() => value !== null && onFilter(field, value, false)}>${value === null ? html`<i>(none)</i>` : value === '' ? html`<i>(empty)</i>` : value}</button>
          <span class="count">${compact(v.count)}</span>
          <button class="exclude" aria-pressed=${excluded} aria-label=${`Exclude ${field} ${value}`} title="Exclude"
            onClick=${() => value !== null && onFilter(field, value, true)}>−</button>
        </li>`;
      })}</ul>
      ${!filter && values.length >= limit && limit < 1000 && html`<button class="more" onClick=${more}>Show ${limit < 100 ? 100 : 1000} values</button>`}
    </div>`}
  </details>`;
}

/** The events, newest first, paged by cursor as the list scrolls; arrow keys move between rows. */
function Results({ params, set, onSelect }) {
  const q = params.q || '';
  const columns = params.cols ? params.cols.split(',').filter((c) => ALL_COLUMNS.includes(c)) : DEFAULT_COLUMNS;
  const [hits, setHits] = useState([]);
  const [next, setNext] = useState(null);
  const [state, setState] = useState('loading');
  const [error, setError] = useState(null);
  const [picker, setPicker] = useState(false);
  const body = useRef(null);
  const sentinel = useRef(null);
  const loading = useRef(false);
  const rangeKey = [params.since, params.from, params.to, params.range].join();
  const [loadedKey, setLoadedKey] = useState(null);
  const key = `${q}\n${rangeKey}`;

  useEffect(() => {
    const controller = new AbortController();
    setState('loading');
    api('search', { ...rangeParams(params), q, limit: PAGE }, { signal: controller.signal })
      .then((page) => { setHits(page.events); setNext(page.next); setState('done'); setError(null); setLoadedKey(key); })
      .catch((e) => { if (!aborted(e)) { setError(e.message); setState('error'); setHits([]); setLoadedKey(key); } });
    return () => controller.abort();
  }, [key]);

  const loadMore = () => {
    if (!next || loading.current) return;
    loading.current = true;
    api('search', { ...rangeParams(params), q, limit: PAGE, cursor: next })
      .then((page) => { setHits((h) => h.concat(page.events)); setNext(page.next); })
      .catch((e) => setError(e.message))
      .finally(() => { loading.current = false; });
  };

  useEffect(() => {
    if (!sentinel.current) return undefined;
    const observer = new IntersectionObserver((entries) => { if (entries[0].isIntersecting) loadMore(); });
    observer.observe(sentinel.current);
    return () => observer.disconnect();
  }, [next, hits.length]);

  // Live tail: the newest page every few seconds, new events on top.
  useEffect(() => {
    if (!params.live) return undefined;
    const timer = setInterval(() => {
      api('search', { ...rangeParams(params), q, limit: PAGE })
        .then((page) => setHits((h) => {
          const seen = new Set(h.map((x) => `${x.auditID}/${x.stage}`));
          const fresh = page.events.filter((x) => !seen.has(`${x.auditID}/${x.stage}`));
          return fresh.length ? fresh.concat(h) : h;
        }))
        .catch(() => {});
    }, 3000);
    return () => clearInterval(timer);
  }, [params.live, q, rangeKey]);

  const rowKey = (e) => {
    const rows = body.current ? [...body.current.querySelectorAll('tr')] : [];
    const i = rows.indexOf(e.target.closest('tr'));
    let to = i;
    if (e.key === 'ArrowDown') to = Math.min(rows.length - 1, i + 1);
    else if (e.key === 'ArrowUp') to = Math.max(0, i - 1);
    else if (e.key === 'Home') to = 0;
    else if (e.key === 'End') to = rows.length - 1;
    else if (e.key === 'PageDown') to = Math.min(rows.length - 1, i + 20);
    else if (e.key === 'PageUp') to = Math.max(0, i - 20);
    else if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); onSelect(hits[i]); return; }
    else return;
    e.preventDefault();
    moveFocus(rows[i], rows[to]);
    if (to >= rows.length - 5) loadMore();
  };

  const toggleColumn = (c) => {
    const now = columns.includes(c) ? columns.filter((x) => x !== c) : ALL_COLUMNS.filter((x) => x === c || columns.includes(x));
    set({ cols: now.join(',') }, true);
  };
  const selectedId = params.event;

  return html`<section class="results" aria-label="Events" aria-busy=${loadedKey !== key}>
    <div class="results-bar">
      <span aria-live="polite">${state === 'loading' ? 'Searching…' : `${hits.length}${next ? '+' : ''} events`}</span>
      <span class="spacer"></span>
      <label><input type="checkbox" checked=${!!params.live} onChange=${(e) => set({ live: e.currentTarget.checked ? '1' : undefined }, true)} /> Live tail</label>
      <div class="columns">
        <button aria-expanded=${picker} onClick=${() => setPicker(!picker)}>Columns</button>
        ${picker && html`<fieldset><legend class="sr-only">Columns</legend>
          ${ALL_COLUMNS.map((c) => html`<label><input type="checkbox" checked=${columns.includes(c)} onChange=${() => toggleColumn(c)} /> ${c}</label>`)}
        </fieldset>`}
      </div>
    </div>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${state === 'done' && !hits.length && html`<p class="muted pad">No event matches in ${describe(params)}.</p>`}
    <table class="grid" aria-label="Events" aria-rowcount=${hits.length}>
      <thead><tr>${columns.map((c) => html`<th scope="col" class=${c === 'code' || c === 'latency' ? 'num' : ''}>${c}</th>`)}</tr></thead>
      <tbody ref=${body} onKeyDown=${rowKey} onClick=${(e) => { const tr = e.target.closest('tr'); if (tr) onSelect(hits[[...body.current.children].indexOf(tr)]); }}
        onFocusIn=${(e) => { const tr = e.target.closest('tr'); const was = body.current.querySelector('tr[tabindex="0"]'); if (tr && was !== tr) moveFocus(was, tr, false); }}>
        <${Rows} hits=${hits} columns=${columns.join(',')} selected=${selectedId} />
      </tbody>
    </table>
    <div class="load-more" ref=${sentinel}>
      ${next && html`<button onClick=${loadMore}>Load more</button>`}
    </div>
  </section>`;
}

/**
 * The rows, rendered again only when the hits or the columns change: with 10,000 rows loaded,
 * moving the focus or selecting a row touches two rows' attributes, not the whole table.
 */
class Rows extends Component {
  shouldComponentUpdate(next) {
    const rerender = next.hits !== this.props.hits || next.columns !== this.props.columns;
    if (!rerender && next.selected !== this.props.selected) this.markSelected(next.selected);
    return rerender;
  }

  /** aria-selected on the open event's row, set directly (see above). */
  markSelected(selected) {
    const body = this.base && this.base.parentNode;
    if (!body) return;
    for (const tr of body.querySelectorAll('tr[aria-selected=true]')) tr.setAttribute('aria-selected', 'false');
    const row = selected && body.querySelector(`tr[data-id="${CSS.escape(selected)}"]`);
    if (row) row.setAttribute('aria-selected', 'true');
  }

  render({ hits, columns, selected }) {
    const list = columns.split(',');
    return hits.map((hit, i) => {
      const id = `${hit.auditID}/${hit.stage}`;
      return html`<tr key=${id} data-id=${id} tabindex=${i === 0 ? 0 : -1} aria-selected=${id === selected}>
        ${list.map((c) => html`<td class=${cellClass(c, hit)}>${cell(c, hit)}</td>`)}
      </tr>`;
    });
  }
}

/** Roving tabindex: `to` becomes the row Tab reaches, and takes the focus. */
function moveFocus(from, to, focus = true) {
  if (from) from.tabIndex = -1;
  to.tabIndex = 0;
  if (focus) to.focus();
}

function cell(column, hit) {
  const v = column === 'time' ? hit.time : fieldOf(hit, column);
  if (column === 'time') return formatTime(v);
  if (column === 'resource') {
    const sub = fieldOf(hit, 'subresource');
    return sub ? `${v || ''}/${sub}` : display(column, v);
  }
  return display(column, v);
}

function cellClass(column, hit) {
  if (column === 'code') {
    const c = fieldOf(hit, 'code');
    return `num ${c >= 500 ? 'code-5' : c >= 400 ? 'code-4' : ''}`;
  }
  return column === 'latency' ? 'num' : '';
}

/** One event: its fields with filter/copy actions, links to the investigations, the JSON. */
function EventPanel({ id, hit, params, onFilter, onClose }) {
  const [loaded, setLoaded] = useState(null);
  const [error, setError] = useState(null);
  const [auditID, stage] = id.split('/');
  const current = hit && `${hit.auditID}/${hit.stage}` === id ? hit : loaded;
  useEffect(() => {
    if (hit && `${hit.auditID}/${hit.stage}` === id) return;
    api(`events/${encodeURIComponent(auditID)}`)
      .then((answer) => {
        const events = answer.events || [];
        const found = events.find((e) => e.stage === stage) || events[events.length - 1];
        setLoaded(found ? { auditID, stage: found.stage, cluster: found.cluster, time: found.time, event: found.event || found } : null);
      })
      .catch((e) => setError(e.message));
  }, [id]);
  useEffect(() => {
    const key = (e) => { if (e.key === 'Escape') onClose(); };
    window.addEventListener('keydown', key);
    return () => window.removeEventListener('keydown', key);
  }, []);
  if (error) return html`<aside class="panel" aria-label="Event"><p class="error">${error}</p><button onClick=${onClose}>Close</button></aside>`;
  if (!current) return html`<aside class="panel" aria-label="Event"><p class="muted">Loading ${auditID}…</p></aside>`;
  const e = current.event;
  const ref = e.objectRef || {};
  const user = e.user && e.user.username;
  const range = rangeOf(params);
  const objectPath = ref.resource && ref.name ? [ref.resource, ref.namespace, ref.name].filter(Boolean).join('/') : null;
  const fields = [...Object.keys(EXTRACT), 'cluster'].map((f) => [f, fieldOf(current, f)]).filter(([, v]) => v !== undefined && v !== null && v !== '');
  const json = JSON.stringify(e, null, 2);
  return html`<aside class="panel" aria-label="Event">
    <header>
      <h2>${e.verb} ${ref.resource || e.requestURI}${ref.name ? ` ${ref.name}` : ''}</h2>
      <button onClick=${onClose} aria-label="Close event">✕</button>
    </header>
    <nav aria-label="Investigate"><ul>
      ${objectPath && html`<li><${Link} to=${href('/object', { object: objectPath, cluster: current.cluster })}>Object history</${Link}></li>`}
      ${user && html`<li><${Link} to=${href('/actor', { user, ...range })}>User activity</${Link}></li>`}
      ${ref.resource === 'deployments' && ref.name && ref.namespace && html`<li><${Link} to=${href('/reports/rollout', { object: `deployments/${ref.namespace}/${ref.name}` })}>Rollout trace</${Link}></li>`}
      ${e.responseStatus && e.responseStatus.code === 403 && user && html`<li><${Link} to=${href('/denied', { user, ...range })}>Why was this denied?</${Link}></li>`}
      <li><${Link} to=${href('/explore', { q: `id:${quote(e.auditID)}`, range: 'all' })}>All stages</${Link}></li>
    </ul></nav>
    <dl>${fields.map(([f, v]) => html`
      <dt>${f}</dt><dd>${f === 'latency' ? formatDuration(v) : display(f, v)}</dd>
      <dd class="actions">
        ${f !== 'time' && f !== 'stage_time' && f !== 'latency' && html`
          <button aria-label=${`Filter on ${f}`} title="Filter on this value" onClick=${() => onFilter(f, Array.isArray(v) ? v[0] : v, false)}>+</button>
          <button aria-label=${`Exclude ${f}`} title="Exclude this value" onClick=${() => onFilter(f, Array.isArray(v) ? v[0] : v, true)}>-</button>`}
        <button aria-label=${`Copy ${f}`} title="Copy" onClick=${() => copy(display(f, v))}>copy</button>
      </dd>`)}
    </dl>
    <div class="chart-tools"><h3 class="sr-only">Event JSON</h3><button onClick=${() => copy(json)}>Copy JSON</button>
      <span class="muted">as stored (redacted)</span></div>
    <pre class="json" tabindex="0" aria-label="Event JSON">${json}</pre>
  </aside>`;
}

function copy(text) {
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).catch(() => {});
  }
}

/** A query with commands: its result as a chart and a table, with drill-down. */
function Analytics({ params }) {
  const q = params.q || '';
  const { search, pipes } = splitPipes(q);
  const [result, setResult] = useState(null);
  const [error, setError] = useState(null);
  const [loading, setLoading] = useState(true);
  const [loadedKey, setLoadedKey] = useState(null);
  const rangeKey = [params.since, params.from, params.to, params.range].join();
  const key = `${q}\n${rangeKey}`;
  useEffect(() => {
    const controller = new AbortController();
    setLoading(true);
    api('query', { ...rangeParams(params), q }, { signal: controller.signal })
      .then((r) => { setResult(r); setError(null); setLoading(false); setLoadedKey(key); })
      .catch((e) => { if (!aborted(e)) { setError(e.message); setLoading(false); setLoadedKey(key); } });
    return () => controller.abort();
  }, [key]);
  const layout = result ? shape(result) : null;
  const timechart = layout && layout.time && /(^|\s)timechart\s/.test(pipes);
  const kinds = timechart ? ['line', 'area', 'bar', 'table'] : layout && layout.values.length && layout.groups.length ? ['bar', 'table'] : ['table'];
  const chart = kinds.includes(params.chart) ? params.chart : kinds[0];
  const span = timechart ? (/timechart\s+(\d+[smhd])/.exec(pipes) || [])[1] : null;
  const drill = params.drill ? params.drill.split(',') : [];

  // A bar or a table row: its group's events, or the next level of a drill-down chain.
  const pickRow = (row) => {
    let next = search;
    for (const g of layout.groups) next = addTerm(next, g, row[g]);
    const by = (/\bby\s+([\w.]+)\s*$/.exec(pipes) || [])[1];
    const at = drill.indexOf(by);
    if (at >= 0 && at + 1 < drill.length) {
      const deeper = pipes.replace(/\bby\s+[\w.]+\s*$/, `by ${drill[at + 1]}`);
      navigate(exploreHref(params, { q: `${next} | ${deeper}` }));
    } else {
      navigate(exploreHref(params, { q: next, chart: undefined, drill: undefined }));
    }
  };
  // A point of a series: that series' events in that bucket.
  const pickPoint = (plot, seriesIndex, bucket) => {
    const s = seriesIndex === null ? null : plot.series[seriesIndex];
    let next = search;
    if (s && s.group) for (const [g, v] of Object.entries(s.group)) next = addTerm(next, g, v);
    const from = Math.round(plot.x[bucket] * 1e6);
    const width = (span && (Number(span.slice(0, -1)) * { s: 1, m: 60, h: 3600, d: 86400 }[span.slice(-1)])) || 60;
    navigate(exploreHref(params, { q: next, chart: undefined, drill: undefined, since: undefined, range: undefined, from: rfc3339(from), to: rfc3339(from + width * 1e6) }));
  };
  const plot = useMemo(() => (timechart ? pivot(result) : null), [result, timechart]);
  const latency = layout && layout.values.some((v) => /latency/.test(v));
  return html`<section aria-label="Query result" aria-busy=${loadedKey !== key}>
    <div class="chart">
      <div class="chart-tools">
        <span aria-live="polite">${loading ? 'Running…' : result ? `${result.rows.length} rows` : ''}</span>
        <span role="group" aria-label="Chart type">${kinds.map((k) => html`<button aria-pressed=${k === chart} onClick=${() => navigate(exploreHref(params, { chart: k }), { replace: true })}>${k}</button>`)}</span>
        <${Link} to=${exploreHref(params, { q: search, chart: undefined, drill: undefined })}>Events of this search</${Link}>
        ${drill.length > 0 && html`<span class="muted">Click a bar to drill down: ${drill.join(' → ')}</span>`}
      </div>
      ${error && html`<p class="error" role="alert">${error}</p>`}
      ${result && !result.rows.length && html`<p class="muted">No rows in ${describe(params)}.</p>`}
      ${result && result.rows.length > 0 && chart !== 'table' && timechart && html`<${TimeChart} x=${plot.x} series=${plot.series} kind=${chart}
        label=${`${plot.valueColumn} over time`} format=${latency ? formatDuration : undefined}
        onPick=${(si, bucket) => pickPoint(plot, si, bucket)}
        onZoom=${(from, to) => navigate(exploreHref(params, { from: rfc3339(Math.floor(from) * 1e6), to: rfc3339(Math.ceil(to) * 1e6), since: undefined, range: undefined }))} />`}
      ${result && result.rows.length > 0 && chart === 'bar' && !timechart && html`<${BarList} rows=${result.rows} groups=${layout.groups} value=${layout.values[0]}
        format=${/latency/.test(layout.values[0]) ? formatDuration : undefined} onPick=${pickRow} />`}
    </div>
    ${result && result.rows.length > 0 && html`<div class="results" tabindex="0"><${ResultTable} result=${result} onPick=${timechart ? null : pickRow} /></div>`}
  </section>`;
}
