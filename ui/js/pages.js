// The pages besides the explorer: ready views for the questions operators ask, the reports,
// an object's history with field-level diffs, an actor's activity, RBAC denials, monitors,
// detections.

import { html, useEffect, useState } from '../vendor/preact-htm.mjs';
import { api, aborted } from './api.js';
import { href, Link, navigate } from './router.js';
import { TimeChart, ResultTable, shape, pivot } from './chart.js';
import { formatTime, quote } from './query.js';
import { rangeParams, rangeOf, bounds, step, storeSpan, describe } from './time.js';
import { TimePicker } from './explore.js';

/** Fetches `path` with `params` whenever `deps` change: `{data, error, loading}`. */
export function useApi(path, params, deps) {
  const [state, setState] = useState({ loading: true });
  const key = JSON.stringify([path, ...deps]);
  useEffect(() => {
    if (!path) { setState({ loading: false, key }); return undefined; }
    const controller = new AbortController();
    setState((s) => ({ ...s, loading: true }));
    api(path, params, { signal: controller.signal })
      .then((data) => setState({ data, loading: false, key }))
      .catch((e) => { if (!aborted(e)) setState({ error: e.message, loading: false, key }); });
    return () => controller.abort();
  }, [key]);
  // Busy until the answer to these very parameters is in (tests and screen readers wait on it).
  return { ...state, busy: state.key !== key };
}

const explore = (q, extra = {}) => href('/explore', { q, ...extra });

/** The seeds' questions, each a link to the explorer with its query and chart. */
export const READY_VIEWS = [
  { title: 'API latency per verb (p50, p90, p99)', text: 'How long the API server takes, by verb, over time. Watches are long-running and left out.',
    q: 'stage:ResponseComplete -verb:watch | timechart 5m p99(latency) by verb' },
  { title: 'Latency percentiles over time', text: 'p50, p90 and p99 of every completed request.',
    q: 'stage:ResponseComplete -verb:watch | timechart 5m p50(latency), p90(latency), p99(latency)' },
  { title: 'Slowest resources (p99)', text: 'Where the API server spends its time, by resource.',
    q: 'stage:ResponseComplete -verb:watch | stats p99(latency), count() by resource | sort -p99_latency' },
  { title: '403 Forbidden by user', text: 'Who is refused, over time.', q: 'code:403 | timechart 5m count() by user' },
  { title: '401 Unauthorized by source IP', text: 'Expired certificates and tokens show up here (the kubelet story).', q: 'code:401 | stats count() by ip | sort -count' },
  { title: '401/403 by cluster', text: 'Failures per cluster over time.', q: 'code:(401 OR 403) | timechart 5m count() by cluster' },
  { title: 'Anonymous requests: resource → namespace → source IP', text: 'Click a bar to go one level deeper.',
    q: 'user:system:anonymous | stats count() by resource', drill: 'resource,ns,ip' },
  { title: 'Changes by humans', text: 'Create, update, patch and delete by people: what a change freeze forbids.',
    q: 'mutating:true user_kind:human code<400 | stats count() by user, verb, resource | sort -count' },
  { title: 'Changes by controllers and service accounts', text: 'The same, for everything that is not a person.',
    q: 'mutating:true -user_kind:human code<400 | stats count() by user_kind, user | sort -count' },
  { title: 'Top talkers', text: 'Users and clients by request count.', q: '| stats count() by user, client | sort -count | limit 25' },
  { title: 'Secrets read', text: 'Who reads secrets, and from where.', q: 'resource:secrets verb:(get OR list OR watch) | stats count() by user, ns | sort -count' },
  { title: 'Exec and attach into pods', text: 'Interactive access to containers.', q: 'resource:pods subresource:(exec OR attach OR portforward)' },
];

export function Views({ params }) {
  useEffect(() => { document.title = 'Views · kubetrail'; }, []);
  const range = rangeOf(params);
  return html`<div>
    <h1>Ready views</h1>
    <div class="views">${READY_VIEWS.map((v) => html`<article class="card">
      <h2><${Link} to=${explore(v.q, { ...range, drill: v.drill })}>${v.title}</${Link}></h2>
      <p class="muted">${v.text}</p>
      <code>${v.q}</code>
    </article>`)}</div>
  </div>`;
}

export function Reports({ params }) {
  useEffect(() => { document.title = 'Reports · kubetrail'; }, []);
  const { data, error, busy } = useApi('reports', {}, []);
  return html`<div aria-busy=${busy}>
    <h1>Reports</h1>
    ${error && html`<p class="error">${error}</p>`}
    <div class="views">${data && data.reports.map((r) => html`<article class="card">
      <h2>${r.needsObject ? r.name : html`<${Link} to=${href(`/reports/${r.name}`, rangeOf(params))}>${r.name}</${Link}>`}</h2>
      <p class="muted">${r.description}</p>
      ${r.needsObject && html`<${ObjectForm} report=${r.name} />`}
    </article>`)}</div>
  </div>`;
}

function ObjectForm({ report }) {
  const [object, setObject] = useState('');
  const go = (e) => { e.preventDefault(); if (object.trim()) navigate(href(`/reports/${report}`, { object: object.trim() })); };
  return html`<form onSubmit=${go}>
    <label>Object <input type="text" placeholder=${report === 'rollout' ? 'deployments/NAMESPACE/NAME' : 'RESOURCE/NAMESPACE/NAME'} value=${object} onInput=${(e) => setObject(e.currentTarget.value)} /></label>
    <button>Open</button>
  </form>`;
}

/** A report: its findings, then each section as a table (and a chart when it is a series). */
export function Report({ name, params }) {
  useEffect(() => { document.title = `${name} · kubetrail`; }, [name]);
  const { data, error, loading, busy } = useApi(`reports/${encodeURIComponent(name)}`, { ...rangeParams(params), object: params.object, cluster: params.cluster },
    [name, params.object, params.since, params.from, params.to, params.range, params.cluster]);
  return html`<div aria-busy=${busy}>
    <div class="querybar"><h1>${data ? data.title : name}</h1><span class="spacer"></span>
      <${TimePicker} params=${params} onChange=${(r) => navigate(href(location.pathname, { object: params.object, cluster: params.cluster, ...r }))} /></div>
    ${loading && html`<p class="muted">Running the report…</p>`}
    ${error && html`<p class="error">${error}</p>`}
    ${data && html`<${ReportBody} report=${data} />`}
  </div>`;
}

function ReportBody({ report }) {
  return html`<div>
    <p class="muted">${formatTime(report.from)} → ${formatTime(report.to)}</p>
    ${report.findings && report.findings.length > 0 && html`<ul>${report.findings.map((f) => html`<li>${f}</li>`)}</ul>`}
    ${report.sections.map((s) => html`<${Section} section=${s} />`)}
  </div>`;
}

/** A chain of steps in time (the rollout trace): a timeline, each step with who did what. */
function Timeline({ rows }) {
  return html`<ol class="timeline">${rows.slice(0, 500).map((row) => html`<li>
    <div><strong>${formatTime(row.time)}</strong>${' · '}${row.step}</div>
    <div class="muted">${Object.entries(row).filter(([k, v]) => k !== 'time' && k !== 'step' && v !== '' && v !== null).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' · ')}</div>
  </li>`)}</ol>`;
}

function Section({ section }) {
  const rows = section.rows || [];
  if (rows.length && 'step' in rows[0] && 'time' in rows[0]) {
    return html`<section class="chart" aria-label=${section.title}><h2>${section.title}</h2><${Timeline} rows=${rows} /></section>`;
  }
  const columns = rows.length ? Object.keys(rows[0]) : [];
  const result = { columns, rows };
  const layout = shape(result);
  const series = layout.time && layout.groups.length === 0 && layout.values.length && rows.length > 1 ? pivot(result) : null;
  return html`<section class="chart" aria-label=${section.title}>
    <h2>${section.title}</h2>
    ${!rows.length && html`<p class="muted">Nothing.</p>`}
    ${series && html`<${TimeChart} x=${series.x} series=${series.series} kind="bar" height=${180} label=${section.title} />`}
    ${rows.length > 0 && html`<div class="results" tabindex="0"><${DataTable} rows=${rows} columns=${columns} label=${section.title} /></div>`}
  </section>`;
}

/** A table of report rows; users link to their activity, times are shortened. */
function DataTable({ rows, columns, label }) {
  return html`<table class="grid" aria-label=${label}>
    <thead><tr>${columns.map((c) => html`<th scope="col" class=${typeof rows[0][c] === 'number' ? 'num' : ''}>${c}</th>`)}</tr></thead>
    <tbody>${rows.slice(0, 2000).map((row, i) => html`<tr key=${i}>${columns.map((c) => html`<td class=${typeof row[c] === 'number' ? 'num' : ''}>${value(c, row[c])}</td>`)}</tr>`)}</tbody>
  </table>`;
}

function value(column, v) {
  if (v === null || v === undefined) return '';
  if (column === 'user' && typeof v === 'string' && v) return html`<${Link} to=${href('/actor', { user: v, range: 'all' })}>${v}</${Link}>`;
  if (typeof v === 'string' && /^\d{4}-\d\d-\d\dT/.test(v)) return formatTime(v);
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** What touched one object, and what each change changed (field-level diff of the bodies). */
export function ObjectHistory({ params }) {
  const object = params.object || '';
  useEffect(() => { document.title = `${object} · kubetrail`; }, [object]);
  const report = useApi(object ? `objects/${object.split('/').map(encodeURIComponent).join('/')}` : null, { ...rangeParams(params), cluster: params.cluster },
    [object, params.since, params.from, params.to, params.range]);
  const [resource, ns, name] = object.split('/').length === 3 ? object.split('/') : [object.split('/')[0], '', object.split('/')[1]];
  const search = `resource:${quote(resource)} ${ns ? `ns:${quote(ns)} ` : ''}name:${quote(name || '')} mutating:true code<400`;
  const changes = useApi(object ? 'search' : null, { ...rangeParams(params), q: search, limit: 500 }, [object, params.since, params.from, params.to, params.range]);
  return html`<div aria-busy=${report.busy || changes.busy}>
    <div class="querybar"><h1>History of ${object}</h1><span class="spacer"></span>
      <${TimePicker} params=${params} onChange=${(r) => navigate(href('/object', { object, ...r }))} /></div>
    <p><${Link} to=${explore(`resource:${quote(resource)} ${ns ? `ns:${quote(ns)} ` : ''}name:${quote(name || '')}`, rangeOf(params))}>Every request in the explorer</${Link}></p>
    ${changes.data && html`<section class="chart" aria-label="Changes">
      <h2>Changes, oldest first</h2>
      <${Diffs} hits=${changes.data.events} />
    </section>`}
    ${report.error && html`<p class="error">${report.error}</p>`}
    ${report.data && html`<${ReportBody} report=${report.data} />`}
  </div>`;
}

/** Paths that change on every write and say nothing about the change. */
const NOISE = /^metadata\.(managedFields|resourceVersion|generation)([.[]|$)|^status\.observedGeneration$/;

function flatten(value, prefix = '', out = {}) {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else if (Array.isArray(value) && value.length && value.every((v) => v && typeof v === 'object')) {
    value.forEach((v, i) => flatten(v, `${prefix}[${v.name ?? v.type ?? i}]`, out));
  } else {
    out[prefix] = JSON.stringify(value);
  }
  return out;
}

/** Successive versions of the object (response bodies, or request bodies without them). */
function Diffs({ hits }) {
  const ordered = [...hits].filter((h) => h.stage === 'ResponseComplete').reverse();
  let previous = null;
  let kind = null;
  const entries = [];
  for (const hit of ordered) {
    const e = hit.event;
    // The object itself: not a Status, and not another kind a subresource answers (a Scale).
    const answer = e.responseObject && e.responseObject.kind !== 'Status' ? e.responseObject : null;
    if (answer && !kind) kind = answer.kind;
    const body = answer && answer.kind === kind ? answer : null;
    const entry = { hit, changes: [], note: null };
    if (body) {
      const now = flatten(body);
      if (previous) {
        for (const [k, v] of Object.entries(now)) {
          if (NOISE.test(k)) continue;
          if (!(k in previous)) entry.changes.push(['add', k, v]);
          else if (previous[k] !== v) entry.changes.push(['chg', k, `${previous[k]} → ${v}`]);
        }
        for (const k of Object.keys(previous)) if (!(k in now) && !NOISE.test(k)) entry.changes.push(['del', k, previous[k]]);
      } else {
        entry.note = e.verb === 'create' ? 'created' : 'first version seen';
      }
      previous = e.verb === 'delete' ? null : now;
    } else if (e.requestObject) {
      entry.note = answer ? `${e.verb} of its ${answer.kind}: what the request sent` : `${e.verb}: what the request sent (no response body at this audit level)`;
      entry.changes = Object.entries(flatten(e.requestObject)).filter(([k]) => !NOISE.test(k)).slice(0, 40).map(([k, v]) => ['chg', k, v]);
    } else {
      entry.note = 'no body at this audit level (Metadata)';
    }
    entries.push(entry);
  }
  if (!entries.length) return html`<p class="muted">No successful change in this range.</p>`;
  return html`<ol class="timeline">${entries.map(({ hit, changes, note }) => html`<li>
    <div><strong>${formatTime(hit.time)}</strong>${' · '}${hit.event.verb}${hit.event.objectRef && hit.event.objectRef.subresource ? `/${hit.event.objectRef.subresource}` : ''}${' by '}<${Link} to=${href('/actor', { user: (hit.event.user || {}).username, range: 'all' })}>${(hit.event.user || {}).username}</${Link}>${' · '}<${Link} to=${href('/explore', { q: `id:${quote(hit.auditID)}`, range: 'all', event: `${hit.auditID}/${hit.stage}` })}>event</${Link}></div>
    ${note && html`<div class="muted">${note}</div>`}
    ${changes.length > 0 && html`<ul class="diff">${changes.slice(0, 60).map(([kind, path, text]) => html`<li class=${kind}>${kind === 'add' ? '+' : kind === 'del' ? '−' : '~'} ${path}: ${text}</li>`)}
      ${changes.length > 60 && html`<li class="muted">… ${changes.length - 60} more</li>`}</ul>`}
    ${!note && !changes.length && html`<div class="muted">no field changed (besides bookkeeping)</div>`}
  </li>`)}</ol>`;
}

/** Everything one user did: verb × resource, activity over time, first and last seen. */
export function Actor({ params }) {
  const user = params.user || '';
  useEffect(() => { document.title = `${user} · kubetrail`; }, [user]);
  const range = rangeParams(params);
  const deps = [user, params.since, params.from, params.to, params.range];
  const matrix = useApi(user ? 'query' : null, { ...range, q: `user:${quote(user)} | stats count(), min(time) as first_seen, max(time) as last_seen by verb, resource | sort first_seen` }, deps);
  const [spanState, setSpan] = useState(null);
  useEffect(() => { storeSpan().then(setSpan); }, []);
  const [from, to] = bounds(params, spanState);
  const [stepText] = step(from, to, 60);
  const activity = useApi(user && spanState ? 'query' : null, { ...range, q: `user:${quote(user)} | timechart ${stepText} count() by verb` }, [...deps, stepText]);
  const plot = activity.data && activity.data.rows.length ? pivot(activity.data) : null;
  return html`<div aria-busy=${matrix.busy || activity.busy || !spanState}>
    <div class="querybar"><h1>Activity of ${user}</h1><span class="spacer"></span>
      <${TimePicker} params=${params} onChange=${(r) => navigate(href('/actor', { user, ...r }))} /></div>
    <p><${Link} to=${explore(`user:${quote(user)}`, rangeOf(params))}>Every request in the explorer</${Link}> ·
      <${Link} to=${href('/denied', { user, ...rangeOf(params) })}>Refused requests and the rules that would allow them</${Link}></p>
    <section class="chart" aria-label="Requests over time">
      <h2>Requests over time, by verb</h2>
      ${plot ? html`<${TimeChart} x=${plot.x} series=${plot.series} kind=${plot.series.length > 1 ? 'line' : 'bar'} height=${180} label="Requests over time by verb" />` : html`<p class="muted">${activity.loading ? 'Counting…' : 'No request.'}</p>`}
    </section>
    <section class="chart" aria-label="Actions">
      <h2>Actions (verb × resource), first seen first</h2>
      ${matrix.error && html`<p class="error">${matrix.error}</p>`}
      ${matrix.data && html`<div class="results" tabindex="0"><${ResultTable} result=${matrix.data}
        onPick=${(row) => navigate(explore(`user:${quote(user)} verb:${quote(row.verb)}${row.resource ? ` resource:${quote(row.resource)}` : ''}`, rangeOf(params)))} /></div>`}
    </section>
  </div>`;
}

/** Refused requests and the RBAC rule that would allow each. */
export function Denied({ params }) {
  useEffect(() => { document.title = 'RBAC denials · kubetrail'; }, []);
  const { data, error, loading, busy } = useApi('rbac/denied', { ...rangeParams(params), cluster: params.cluster }, [params.since, params.from, params.to, params.range]);
  const denied = data ? data.denied.filter((d) => !params.user || d.user === params.user) : [];
  return html`<div aria-busy=${busy}>
    <div class="querybar"><h1>Why was it denied?${params.user ? ` — ${params.user}` : ''}</h1><span class="spacer"></span>
      <${TimePicker} params=${params} onChange=${(r) => navigate(href('/denied', { user: params.user, ...r }))} /></div>
    ${loading && html`<p class="muted">Reading refusals…</p>`}
    ${error && html`<p class="error">${error}</p>`}
    ${data && !denied.length && html`<p class="muted">No request refused by RBAC in ${describe(params)}.</p>`}
    ${data && data.refusedByAdmission > 0 && html`<p class="muted">${data.refusedByAdmission} 403s were allowed by RBAC and refused by admission.</p>`}
    ${denied.map((d) => html`<article class="card chart">
      <h2>${d.user}: ${d.verb} ${d.resource || d.path}${d.namespace ? ` in ${d.namespace}` : ''} — ${d.requests} refused</h2>
      <p class="muted">${formatTime(d.first)} → ${formatTime(d.last)} · from ${(d.sourceIps || []).join(', ')}</p>
      ${d.rule && html`<p>A ${d.roleKind} with this rule would allow it:</p><pre class="json">${JSON.stringify(d.rule, null, 2)}</pre>`}
      ${d.kubectl && html`<pre class="json">${d.kubectl}</pre>`}
      <${Link} to=${explore(`user:${quote(d.user)} verb:${quote(d.verb)} code:403${d.resource ? ` resource:${quote(d.resource)}` : ''}`, rangeOf(params))}>The refused requests</${Link}>
    </article>`)}
  </div>`;
}

/** Monitors, their alert state, and the history of transitions. */
export function Monitors({ params }) {
  useEffect(() => { document.title = 'Monitors · kubetrail'; }, []);
  const list = useApi('monitors', {}, []);
  const transitions = useApi('monitors/transitions', {}, []);
  const monitors = list.data ? list.data.monitors : [];
  return html`<div aria-busy=${list.busy || transitions.busy}>
    <h1>Monitors</h1>
    ${list.error && html`<p class="error">${list.error}</p>`}
    ${list.data && list.data.problems && list.data.problems.length > 0 && html`<div class="error" role="alert">${list.data.problems.map((p) => html`<div>${typeof p === 'string' ? p : JSON.stringify(p)}</div>`)}</div>`}
    ${list.data && !monitors.length && html`<p class="muted">No monitor is defined. See docs/monitors.md: a <code>monitors:</code> section of the configuration, <code>--monitors DIR</code>, or the ready pack (<code>pack: forbidden-spike</code>).</p>`}
    ${monitors.length > 0 && html`<div class="results" tabindex="0"><table class="grid" aria-label="Monitors">
      <thead><tr><th scope="col">monitor</th><th scope="col">state</th><th scope="col">query</th><th scope="col">health</th><th scope="col">next evaluation</th></tr></thead>
      <tbody>${monitors.map((m) => html`<tr>
        <td>${m.name}${m.enabled === false ? html` <span class="muted">(off)</span>` : ''}</td>
        <td>${(m.alerts || []).length ? m.alerts.map((a) => html`<div><span class=${`state-${a.state}`}>${a.state}</span> ${groupText(a.group)} ${a.value !== null && a.value !== undefined ? `= ${a.value}` : ''}</div>`) : html`<span class="state-ok">ok</span>`}</td>
        <td><${Link} to=${explore(m.query, { range: 'all' })}><code>${m.query}</code></${Link}></td>
        <td>${m.health}${m.message ? `: ${m.message}` : ''}</td>
        <td>${formatTime(m.next_evaluation)}</td>
      </tr>`)}</tbody>
    </table></div>`}
    <h2>Transitions</h2>
    ${transitions.data && !transitions.data.transitions.length && html`<p class="muted">No transition yet.</p>`}
    ${transitions.data && transitions.data.transitions.length > 0 && html`<div class="results" tabindex="0"><table class="grid" aria-label="Transitions">
      <thead><tr><th scope="col">at</th><th scope="col">monitor</th><th scope="col">group</th><th scope="col">state</th><th scope="col">value</th><th scope="col">events</th></tr></thead>
      <tbody>${[...transitions.data.transitions].reverse().slice(0, 500).map((t) => html`<tr>
        <td>${formatTime(t.at)}</td><td>${t.monitor}</td><td>${groupText(t.group)}</td>
        <td><span class=${`state-${t.state}`}>${t.state}</span></td><td class="num">${t.value === null || t.value === undefined ? '' : t.value}</td>
        <td>${relatedLink(t, monitors)}</td>
      </tr>`)}</tbody>
    </table></div>`}
  </div>`;
}

const groupText = (group) => Object.entries(group || {}).map(([k, v]) => `${k}=${v}`).join(' ');

/** The events behind a transition: the monitor's search with the group, around its time. */
function relatedLink(t, monitors) {
  const m = monitors.find((x) => x.name === t.monitor);
  if (!m || !t.at) return '';
  let q = m.query.split('|')[0].trim();
  for (const [k, v] of Object.entries(t.group || {})) q += ` ${k}:${quote(v)}`;
  const at = Date.parse(t.at);
  const from = new Date(at - 15 * 60e3).toISOString();
  const to = new Date(at + 60e3).toISOString();
  return html`<${Link} to=${explore(q.trim(), { from, to })}>related events</${Link}>`;
}


const SEVERITIES = ['info', 'low', 'medium', 'high', 'critical'];

/** A finding's object: ` ns/name`, ` name`, ` in ns` or nothing. */
function objectText(f) {
  if (f.name) return ` ${f.namespace ? `${f.namespace}/` : ''}${f.name}`;
  return f.namespace ? ` in ${f.namespace}` : '';
}

/**
 * What the detection rules found: findings newest first, filtered by lowest severity, rule and a
 * search over their events, each with what matched and links to the event and the actor; and
 * the rules that run, with their findings since the server started.
 */
export function Detections({ params }) {
  useEffect(() => { document.title = 'Detections · kubetrail'; }, []);
  const severity = params.severity || 'low';
  const query = { ...rangeParams(params), severity, rule: params.rule, q: params.q, limit: 500 };
  const deps = [params.since, params.from, params.to, params.range, severity, params.rule, params.q];
  const found = useApi('findings', query, deps);
  const rules = useApi('rules', {}, []);
  const [text, setText] = useState(params.q || '');
  const go = (change) => navigate(href('/detections', { ...rangeOf(params), severity, rule: params.rule, q: params.q, ...change }));
  const list = found.data ? found.data.findings : [];
  const ruleList = rules.data ? rules.data.rules : [];
  return html`<div aria-busy=${found.busy || rules.busy}>
    <div class="querybar"><h1>Detections</h1><span class="spacer"></span>
      <${TimePicker} params=${params} onChange=${(r) => navigate(href('/detections', { severity, rule: params.rule, q: params.q, ...r }))} /></div>
    <form class="filters" onSubmit=${(e) => { e.preventDefault(); go({ q: text.trim() || undefined }); }}>
      <label>Lowest severity <select value=${severity} onChange=${(e) => go({ severity: e.currentTarget.value })}>
        ${SEVERITIES.map((s) => html`<option value=${s}>${s}</option>`)}</select></label>
      <label>Rule <select value=${params.rule || ''} onChange=${(e) => go({ rule: e.currentTarget.value || undefined })}>
        <option value="">every rule</option>
        ${ruleList.map((r) => html`<option value=${r.id}>${r.id}</option>`)}</select></label>
      <label>Events matching <input type="search" value=${text} placeholder="user:alice ns:payments" onInput=${(e) => setText(e.currentTarget.value)} /></label>
      <button>Filter</button>
    </form>
    ${found.error && html`<p class="error" role="alert">${found.error}</p>`}
    ${found.data && !list.length && html`<p class="muted">No finding at ${severity} or above in ${describe(params)}.</p>`}
    ${list.length > 0 && html`<div class="results" tabindex="0"><table class="grid" aria-label="Findings">
      <thead><tr><th scope="col">time</th><th scope="col">severity</th><th scope="col">rule</th><th scope="col">user</th><th scope="col">request</th><th scope="col">what matched</th><th scope="col">ATT&CK</th><th scope="col">event</th></tr></thead>
      <tbody>${list.map((f) => html`<tr>
        <td>${formatTime(f.time)}</td>
        <td><span class=${`severity-${f.severity}`}>${f.severity}</span></td>
        <td title=${f.rule}><${Link} to=${href('/detections', { ...rangeOf(params), severity, rule: f.rule })}>${f.title}</${Link}></td>
        <td>${f.user ? html`<${Link} to=${href('/actor', { user: f.user, range: 'all' })}>${f.user}</${Link}>` : html`<span class="muted">${(f.group || []).map(([k, v]) => `${k}=${v}`).join(' ') || 'unknown'}</span>`}</td>
        <td>${f.verb} ${f.resource}${objectText(f)}${f.code ? ` → ${f.code}` : ''}</td>
        <td title=${f.explanation}>${f.explanation}</td>
        <td>${(f.mitre.techniques || []).join(', ')}</td>
        <td><${Link} to=${explore(`id:${quote(f.auditID)}`, { range: 'all' })}>event</${Link}></td>
      </tr>`)}</tbody>
    </table></div>`}
    <h2>Rules</h2>
    ${rules.error && html`<p class="muted">${rules.error}</p>`}
    ${ruleList.length > 0 && html`<div class="results" tabindex="0"><table class="grid" aria-label="Rules">
      <thead><tr><th scope="col">rule</th><th scope="col">severity</th><th scope="col">title</th><th scope="col">ATT&CK</th><th scope="col" class="num">findings</th><th scope="col">condition</th></tr></thead>
      <tbody>${ruleList.map((r) => html`<tr>
        <td>${r.id}${r.enabled === false ? html` <span class="muted">(off)</span>` : ''}</td>
        <td><span class=${`severity-${r.severity}`}>${r.severity}</span></td>
        <td>${r.title}</td>
        <td>${[...(r.mitre.tactics || []), ...(r.mitre.techniques || [])].join(', ')}</td>
        <td class="num">${r.findings > 0 ? html`<${Link} to=${href('/detections', { ...rangeOf(params), severity: 'info', rule: r.id })}>${r.findings}</${Link}>` : 0}</td>
        <td><${Link} to=${explore(r.condition, { range: 'all' })}><code>${r.condition}</code></${Link}></td>
      </tr>`)}</tbody>
    </table></div>`}
  </div>`;
}
