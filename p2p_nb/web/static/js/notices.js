// The page's messages to its user: one line per cause (a key), in the user's
// words, each dismissable, and taken away by the page as soon as its cause no
// longer holds (the connection is back, the peer left). A cause that happens
// again replaces its line instead of adding one. Text only (textContent).

const MAX_NOTICES = 20;

export class Notices {
  /** @param {HTMLElement} list  the <ul> the lines go in */
  constructor(list) {
    this.list = list;
    this.items = new Map(); // key -> <li>
  }

  /** Show `text` for `key` (replacing what that key said). `action`: an
   * optional {label, run} button beside it; `level`: "error" or "info". */
  set(key, text, { action = null, level = "error" } = {}) {
    let item = this.items.get(key);
    if (item === undefined) {
      item = document.createElement("li");
      item.dataset.key = key;
      const body = document.createElement("span");
      body.className = "text";
      const dismiss = document.createElement("button");
      dismiss.type = "button";
      dismiss.className = "dismiss";
      dismiss.textContent = "×";
      dismiss.setAttribute("aria-label", "Dismiss");
      dismiss.addEventListener("click", () => this.clear(key));
      item.append(body, dismiss);
      this.items.set(key, item);
      this.list.append(item);
    }
    item.className = level;
    item.querySelector(".text").textContent = text;
    item.querySelector("button.act")?.remove();
    if (action !== null) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "act";
      button.textContent = action.label;
      button.addEventListener("click", () => action.run());
      item.querySelector(".dismiss").before(button);
    }
    while (this.items.size > MAX_NOTICES) this.clear(this.items.keys().next().value);
    this.list.hidden = false;
  }

  has(key) {
    return this.items.has(key);
  }

  clear(key) {
    const item = this.items.get(key);
    if (item === undefined) return;
    item.remove();
    this.items.delete(key);
    this.list.hidden = this.items.size === 0;
  }

  /** Clear every line whose key starts with `prefix` (e.g. all of one peer's). */
  clearPrefix(prefix) {
    for (const key of [...this.items.keys()]) if (key.startsWith(prefix)) this.clear(key);
  }

  clearAll() {
    for (const key of [...this.items.keys()]) this.clear(key);
  }
}

/** Why the server refused the connection, said for the person at the page.
 * `reason` is the refusal's text ("unauthorized: wrong token", or only
 * "websocket error" from a Jupyter server, which answers 403 with no text). */
export function connectRefusal(reason, { invite, jupyter, hadToken }) {
  const r = String(reason ?? "");
  if (invite) {
    const why = r.replace(/^unauthorized:\s*/, "");
    return `The server refused the invite (${why}). The invite may be expired or revoked: ask for a new one.`;
  }
  if (/too_many_connections/.test(r)) {
    return "The server refused the connection: these credentials already hold too many connections. Close other tabs and try again.";
  }
  if (/no token given/.test(r)) {
    return "The server refused the connection (unauthorized): it asks for an access token. Type it under “Access token” and join again.";
  }
  if (/wrong token/.test(r)) {
    return "The server refused the connection (unauthorized): the access token is wrong. Check it and join again.";
  }
  if (/not logged in/.test(r) || (jupyter && !hadToken)) {
    return "The server refused the connection (unauthorized): log in to Jupyter in this browser first, or open the link with its token.";
  }
  if (jupyter) {
    return "The server refused the connection (unauthorized): the token is wrong or expired. Check it, or log in to Jupyter, and join again.";
  }
  if (/^unauthorized/.test(r)) {
    return `The server refused the connection (${r}). Check the access token and join again.`;
  }
  return `Cannot reach the signaling server (${r || "no answer"}). Check the address and your network, then join again.`;
}

/** A refused join, said for the person: [field or null, text]. */
export function joinRefusal(exc) {
  const message = String(exc?.message ?? exc);
  switch (exc?.code) {
    case "name_taken":
      return ["name", "Someone in this room already uses this name (case and spacing do not count): choose another."];
    case "invalid_name":
      return ["name", `The server refused this name: ${message.replace(/^'name' /, "it ")}.`];
    case "invalid_room":
      return ["room", "The server refused this room name: letters, digits and . _ - only (up to 64), starting with a letter or digit."];
    case "forbidden_room":
      return ["room", "Your invite or credentials do not admit to this room."];
    case "room_full":
      return [null, "This room is full. Try again later."];
    case "server_full":
    case "too_many_rooms":
    case "rate_limited":
      return [null, `The server cannot take this now (${message}). Try again later.`];
    default:
      return [null, `Could not join the room: ${message}`];
  }
}
