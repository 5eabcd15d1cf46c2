// The kubetrail UI: login with an API token, then the explorer, ready views, reports and
// investigations. Plain ES modules (Preact + htm, uPlot), served by `kubetrail serve`.

import { html, render, useEffect, useState } from '../vendor/preact-htm.mjs';
import { api, session, onExpired } from './api.js';
import { href, navigate, useLocation, Link } from './router.js';
import { Explore } from './explore.js';
import { Views, Reports, Report, ObjectHistory, Actor, Denied, Monitors, Detections } from './pages.js';
import { defaultRange } from './time.js';

const NAV = [
  ['/explore', 'Explore'], ['/views', 'Views'], ['/reports', 'Reports'], ['/detections', 'Detections'], ['/monitors', 'Monitors'], ['/denied', 'RBAC denials'],
];

function Login({ next }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => { document.title = 'Log in · kubetrail'; }, []);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    try {
      const answer = await api('session', {}, { token: token.trim() });
      session.set(token.trim(), answer.role);
      navigate(next && next.startsWith('/') && !next.startsWith('//') ? next : '/explore', { replace: true });
    } catch (err) {
      setError(err.status === 401 ? 'This token is not valid for this server.' : err.message);
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="login card">
    <h1>kubetrail</h1>
    <form onSubmit=${submit}>
      <label for="token">API token</label>
      <input id="token" type="password" autocomplete="current-password" value=${token} onInput=${(e) => setToken(e.currentTarget.value)} required />
      <p>The token of <code>api.tokens</code> or <code>api.viewerTokens</code> in the configuration, or the one the server generated in <code>&lt;data&gt;/api-token</code>. It stays in this tab only.</p>
      ${error && html`<p class="error" role="alert">${error}</p>`}
      <button class="primary" disabled=${busy}>Log in</button>
    </form>
  </main>`;
}

function Shell({ loc, children }) {
  const logout = () => { session.clear(); navigate('/login'); };
  return html`<div>
    <header class="top">
      <span class="brand">kubetrail</span>
      <nav aria-label="Main"><ul>${NAV.map(([path, label]) => html`<li><${Link} to=${path} aria-current=${loc.path.startsWith(path) ? 'page' : undefined}>${label}</${Link}></li>`)}</ul></nav>
      <span class="spacer"></span>
      <span>${session.role() === 'viewer' ? 'viewer (read-only)' : ''}</span>
      <button onClick=${logout}>Log out</button>
    </header>
    <main>${children}</main>
  </div>`;
}

/** Pages that take a time range get one in their URL before they load, so links are exact. */
const RANGED = ['/explore', '/actor', '/denied', '/reports/', '/object', '/detections'];

/** Goes to `to` once rendered (navigation must not happen during a render). */
function Redirect({ to }) {
  useEffect(() => navigate(to, { replace: true }), [to]);
  return null;
}

/** Puts the default time range into the URL, then renders the page with it. */
function WithRange({ loc }) {
  useEffect(() => {
    defaultRange().then((range) => navigate(href(loc.path, { ...loc.params, ...range }), { replace: true }));
  }, [loc.path]);
  return html`<p class="muted">Loading…</p>`;
}

function App() {
  const loc = useLocation();
  useEffect(() => onExpired(() => navigate(href('/login', { next: location.pathname + location.search }), { replace: true })), []);
  if (loc.path === '/login') return html`<${Login} next=${loc.params.next} />`;
  if (!session.token()) return html`<${Redirect} to=${href('/login', { next: loc.path + window.location.search })} />`;
  const p = loc.params;
  if (loc.path === '/') return html`<${Redirect} to="/explore" />`;
  if (RANGED.some((r) => loc.path.startsWith(r)) && !p.since && !p.from && !p.to && !p.range) {
    return html`<${Shell} loc=${loc}><${WithRange} loc=${loc} /></${Shell}>`;
  }
  let page;
  if (loc.path === '/explore') page = html`<${Explore} params=${p} />`;
  else if (loc.path === '/views') page = html`<${Views} params=${p} />`;
  else if (loc.path === '/reports') page = html`<${Reports} params=${p} />`;
  else if (loc.path.startsWith('/reports/')) page = html`<${Report} name=${decodeURIComponent(loc.path.slice(9))} params=${p} />`;
  else if (loc.path === '/object') page = html`<${ObjectHistory} params=${p} />`;
  else if (loc.path === '/actor') page = html`<${Actor} params=${p} />`;
  else if (loc.path === '/denied') page = html`<${Denied} params=${p} />`;
  else if (loc.path === '/monitors') page = html`<${Monitors} params=${p} />`;
  else if (loc.path === '/detections') page = html`<${Detections} params=${p} />`;
  else page = html`<div><h1>Not found</h1><p>Nothing here. <${Link} to="/explore">Explore the events</${Link}>.</p></div>`;
  return html`<${Shell} loc=${loc}>${page}</${Shell}>`;
}

const root = document.getElementById('app');
root.textContent = '';
render(html`<${App} />`, root);
