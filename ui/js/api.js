// The HTTP API client: the token lives in sessionStorage (gone when the tab closes, never in a
// URL), every call sends it as a bearer token, and a 401 sends the user back to the login page.

const TOKEN_KEY = 'kubetrail.token';
const ROLE_KEY = 'kubetrail.role';

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  role: () => sessionStorage.getItem(ROLE_KEY) || 'viewer',
  set(token, role) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(ROLE_KEY, role);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(ROLE_KEY);
  },
};

/** An error answer of the API: `{status, error, position?, limit?}`. */
export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `the server answered ${status}`);
    this.status = status;
    this.position = body && typeof body.position === 'number' ? body.position : null;
    this.body = body;
  }
}

/** Listeners told when the token stops being valid. */
const expired = new Set();
export const onExpired = (f) => { expired.add(f); return () => expired.delete(f); };

// Queries longer than this go in a POST body (URLs have limits along the way).
const LONG_QUERY = 1500;

/**
 * Calls `GET /api/v1/<path>` with `params` (empty values left out), or POST with a JSON body
 * when `post` is true or the query is long and the route takes one.
 */
export async function api(path, params = {}, { signal, method, body, token } = {}) {
  const clean = {};
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') clean[k] = String(v);
  }
  const postable = path === 'search' || path === 'query';
  let url = '/api/v1/' + path;
  const headers = { Authorization: 'Bearer ' + (token || session.token() || '') };
  let init = { headers, signal, method: method || 'GET' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  } else if (postable && (clean.q || '').length > LONG_QUERY) {
    init.method = 'POST';
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(typed(clean));
  } else {
    const search = new URLSearchParams(clean).toString();
    if (search) url += '?' + search;
  }
  const response = await fetch(url, init);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: text.slice(0, 300) };
  }
  if (response.status === 401 && !token) {
    session.clear();
    expired.forEach((f) => f());
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// POST bodies carry numbers as numbers.
function typed(params) {
  const out = { ...params };
  if (out.limit) out.limit = Number(out.limit);
  return out;
}

/** True when `error` is the abort of a superseded request. */
export const aborted = (error) => error && error.name === 'AbortError';
