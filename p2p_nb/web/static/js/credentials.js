// What the page's address brings (an access token, an invite, the room, the
// room secret), read in one place, and kept for the tab's life only.
//
// The address is cleaned right after it is read: credentials stay out of the
// address bar, the history and any bookmark. What it held is kept in
// sessionStorage: per tab and per origin, gone when the tab closes, never
// sent anywhere (unlike a cookie) and not there for the next person to open
// the page (unlike localStorage). A reload or "Join again" finds it there.
//
// Links come in two forms, both read here (docs/protocol.md, section 7):
//   …/p2p/join?room=R&invite=TOKEN#SECRET         (the secret alone after #)
//   …/p2p/join#room=R&invite=TOKEN&secret=SECRET  (what hosts make: nothing in what is sent)
//   …/p2p/join?room=R#invite=TOKEN&secret=SECRET
// plus ?token=T for the standalone or Jupyter token, and server=URL in the
// fragment when the link's signaling server is not this page's own.

const STORE_KEY = "p2p-nb-address";
const FIELDS = ["token", "invite", "room", "secret", "server"];

function nonEmpty(value) {
  return typeof value === "string" && value !== "" ? value : null;
}

/** The credentials in `href` (query and fragment), without touching anything. */
export function parseAddress(href) {
  const url = new URL(href);
  const query = url.searchParams;
  const found = { token: nonEmpty(query.get("token")), invite: nonEmpty(query.get("invite")),
    room: nonEmpty(query.get("room")), secret: null, server: null };
  const fragment = url.hash.length > 1 ? url.hash.slice(1) : "";
  if (/^(invite|secret|room|token|server)=/.test(fragment)) {
    const params = new URLSearchParams(fragment);
    for (const key of FIELDS) found[key] = nonEmpty(params.get(key)) ?? found[key];
  } else if (fragment) {
    try {
      found.secret = decodeURIComponent(fragment);
    } catch {
      found.secret = fragment; // not percent-encoded: take it as it is
    }
  }
  return found;
}

/** The address without credentials: what stays in the bar and the history. */
export function cleanAddress(href) {
  const url = new URL(href);
  for (const key of ["token", "invite"]) url.searchParams.delete(key);
  const params = url.searchParams.size ? `?${url.searchParams}` : "";
  return url.pathname + params;
}

function stored() {
  try {
    const value = JSON.parse(sessionStorage.getItem(STORE_KEY) ?? "null");
    return value !== null && typeof value === "object" ? value : {};
  } catch {
    return {};
  }
}

/** This tab's credentials: what the address brings now, else what an earlier
 * load of this tab kept. A new link replaces what was kept (another invite). */
export function takeCredentials() {
  const fresh = parseAddress(location.href);
  const kept = stored();
  const fromAddress = fresh.token !== null || fresh.invite !== null || fresh.secret !== null;
  const found = {};
  for (const key of FIELDS) found[key] = fresh[key] ?? (fromAddress ? null : nonEmpty(kept[key]));
  found.room = fresh.room ?? nonEmpty(kept.room);
  remember(found);
  history.replaceState(null, "", cleanAddress(location.href));
  return found;
}

/** Keep `credentials` for this tab (a corrected secret, a token typed once). */
export function remember(credentials) {
  const value = {};
  for (const key of FIELDS) if (nonEmpty(credentials[key]) !== null) value[key] = credentials[key];
  try {
    sessionStorage.setItem(STORE_KEY, JSON.stringify(value));
  } catch {
    // storage refused (private mode, quota): the tab works, a reload asks again
  }
}
