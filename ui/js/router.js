// Routing with real paths (`/explore?q=…&from=…`), so that a link in an alert, a bookmark or
// a copied URL opens exactly the same view: every state of a page lives in its URL.

import { html, useEffect, useState } from '../vendor/preact-htm.mjs';

const listeners = new Set();

/** The current location: `{path, params}` (params a plain object of strings). */
export function current() {
  return { path: location.pathname, params: Object.fromEntries(new URLSearchParams(location.search)) };
}

/** The URL of `path` with `params` (empty values left out). */
export function href(path, params = {}) {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '' && v !== false) search.set(k, String(v));
  }
  const s = search.toString();
  return s ? `${path}?${s}` : path;
}

/** Goes to `url`; `replace` for state changes that should not add a history entry. */
export function navigate(url, { replace = false } = {}) {
  if (url === location.pathname + location.search) return;
  history[replace ? 'replaceState' : 'pushState'](null, '', url);
  listeners.forEach((f) => f());
}

window.addEventListener('popstate', () => listeners.forEach((f) => f()));

/** The current location, re-rendering when it changes. */
export function useLocation() {
  const [loc, setLoc] = useState(current);
  const [rendered] = useState(() => location.pathname + location.search);
  useEffect(() => {
    let seen = rendered;
    const update = () => {
      const now = location.pathname + location.search;
      if (now !== seen) { seen = now; setLoc(current()); }
    };
    listeners.add(update);
    // Children's effects run first: one of them may have navigated already.
    update();
    return () => listeners.delete(update);
  }, []);
  return loc;
}

/** An in-app link: a real `<a href>` (open in a new tab works), handled without a reload. */
export function Link({ to, children, ...rest }) {
  const onClick = (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(to);
  };
  return html`<a href=${to} onClick=${onClick} ...${rest}>${children}</a>`;
}
