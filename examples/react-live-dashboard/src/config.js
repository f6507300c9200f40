// Where the hub is, which live event to show, and where the token comes from.
//   hub:   ?hub=https://hub.example.com, else VITE_PULSEHUB_URL, else this
//          page's origin (the dev server passes /ws and /api to the hub)
//   event: ?event=evt_191cc94a7cf1, else VITE_PULSEHUB_EVENT, else "demo"
//          (the scope scripts/demo.sh fills)
//   token: ?token=<JWT>, else VITE_PULSEHUB_TOKEN, else the demo hub's
//          GET /api/dev/token (serve --demo), asked again before it expires
const params = new URLSearchParams(window.location.search);
const env = import.meta.env;

export const hubUrl = (params.get('hub') || env.VITE_PULSEHUB_URL || window.location.origin).replace(/\/+$/, '');
export const wsUrl = `${hubUrl.replace(/^http/, 'ws')}/ws`;
export const eventId = params.get('event') || env.VITE_PULSEHUB_EVENT || 'demo';
const fixedToken = params.get('token') || env.VITE_PULSEHUB_TOKEN || '';

// One demo identity per page: a refreshed token keeps the same user.
let guest = null;

/** A token from a hub in demo mode; a real app asks its own backend. */
async function devToken() {
  const query = new URLSearchParams({ scopes: eventId, name: 'Live dashboard' });
  if (guest) query.set('user', guest);
  const res = await fetch(`${hubUrl}/api/dev/token?${query}`);
  if (!res.ok) {
    throw new Error(res.status === 404 ? 'the hub is not in demo mode: open this page with ?token=<JWT>' : `GET /api/dev/token: HTTP ${res.status}`);
  }
  const body = await res.json();
  guest = body.user.id;
  return body.token;
}

/** The PulseClient options: a configured token, or demo tokens. */
export const clientOptions = fixedToken ? { token: fixedToken } : { getToken: devToken };
