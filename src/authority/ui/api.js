// The JSON API, exactly as automation uses it (docs/api.md). The session cookie is HttpOnly and
// SameSite; state-changing calls are same-origin fetches with a JSON body, which is what the
// server's cross-site check expects.

export class ApiError extends Error {
  constructor(status, errors) {
    super(errors.join('; '));
    this.status = status;
    this.errors = errors;
  }
}

let onUnauthorized = null;

/** Called when a request answers 401 (the session ended): the app sends the user to /login. */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

export async function api(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, ['the server could not be reached; check your connection and try again']);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const errors =
      data && Array.isArray(data.errors) && data.errors.length > 0
        ? data.errors.map(String)
        : [`the request failed (HTTP ${response.status})`];
    // A 401 from the login itself or from the "who am I" probe is expected, not a lost session.
    const probe = path === '/api/login' || (method === 'GET' && path === '/api/user');
    if (response.status === 401 && !probe && onUnauthorized) onUnauthorized();
    throw new ApiError(response.status, errors);
  }
  return data;
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body);
export const put = (path, body) => api('PUT', path, body);
export const patch = (path, body) => api('PATCH', path, body);
export const del = (path) => api('DELETE', path);
