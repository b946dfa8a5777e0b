// The page: the join form, then the conversation with peers and files beside
// it. Only DOM code lives here; the peer itself is client.js. Every text
// another party sent (names, chat, file names, reasons, DataFrame columns)
// goes into the page through textContent, never as markup, and inside an
// isolating element (<bdi>, or a block of its own), so right-to-left text
// cannot reorder what stands around it.

import { P2PClient } from "./client.js";
import { takeCredentials, remember } from "./credentials.js";
import { NameProblem, checkOwnName, checkRoom } from "./names.js";
import { Notices, connectRefusal, joinRefusal } from "./notices.js";
import { MIN_SECRET_CHARS, MAX_SECRET_CHARS } from "./roomkey.js";
import { formatBytes, formatRate, isRiskyFileName, safeFileName, transferStatus } from "./transfer.js";

const config = JSON.parse(document.getElementById("p2p-config").textContent);
const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

/** Another party's text, isolated from what stands around it. */
const peerText = (text, cls = null) => el("bdi", cls ? { class: cls, text } : { text });

const given = takeCredentials();
const notices = new Notices($("errors"));
let client = null;

// --- the join form ----------------------------------------------------------------

const FIELDS = ["name", "room", "secret", "token"];

function fieldError(field, text) {
  const input = $(field);
  const box = $(`${field}-error`);
  box.textContent = text ?? "";
  box.hidden = !text;
  if (text) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
  if (text) {
    $(`${field}-row`)?.removeAttribute("hidden");
    input.focus();
  }
}

function clearFieldErrors() {
  for (const field of FIELDS) fieldError(field, null);
}

function setupForm() {
  const form = $("join-form");
  if (given.invite) {
    $("room").readOnly = true;
    $("invite-note").hidden = false;
    $("token-row").hidden = true;
  }
  if (given.room) $("room").value = given.room;
  if (given.token) $("token-row").hidden = true;
  if (given.secret) {
    $("secret").value = given.secret;
    $("secret-row").hidden = true;
  }
  $("name").value = localStorage.getItem("p2p-nb-name") ?? "";
  for (const field of FIELDS) $(field).addEventListener("input", () => fieldError(field, null));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitJoin();
  });
  $("join-again").addEventListener("click", () => showJoinForm());
  if (given.invite) checkInvite();
}

/** Each field as the server will judge it; the reason at the field, no silent cut. */
function readForm() {
  clearFieldErrors();
  const values = {};
  try {
    values.name = checkOwnName($("name").value);
  } catch (exc) {
    if (!(exc instanceof NameProblem)) throw exc;
    fieldError("name", `${exc.message[0].toUpperCase()}${exc.message.slice(1)}.`);
    return null;
  }
  try {
    values.room = checkRoom($("room").value);
  } catch (exc) {
    if (!(exc instanceof NameProblem)) throw exc;
    fieldError("room", `${exc.message[0].toUpperCase()}${exc.message.slice(1)}.`);
    return null;
  }
  const secret = $("secret").value;
  const length = [...secret].length;
  if (secret && (length < MIN_SECRET_CHARS || length > MAX_SECRET_CHARS)) {
    fieldError("secret", `A room secret has ${MIN_SECRET_CHARS} to ${MAX_SECRET_CHARS} characters (this one has ${length}).`);
    return null;
  }
  values.secret = secret || null;
  values.token = given.token ?? ($("token").value.trim() || null);
  return values;
}

function submitJoin() {
  const values = readForm();
  if (values === null) return;
  $("join").disabled = true;
  join(values).catch((exc) => {
    $("join").disabled = false;
    if (exc.code === "unauthorized") {
      const text = connectRefusal(exc.message, {
        invite: Boolean(given.invite), jupyter: config.host === "jupyter", hadToken: Boolean(values.token),
      });
      const refused = /wrong token|no token|not logged in/.test(exc.message) || config.host === "jupyter";
      if (!given.invite && refused) {
        given.token = null;
        remember(given);
        $("token-row").hidden = false;
      }
      notices.set("connect", text);
      return;
    }
    const [field, text] = joinRefusal(exc);
    if (field !== null && !(field === "room" && $("room").readOnly)) fieldError(field, text);
    else notices.set("join", text);
  });
}

/** The signaling server an invite link names in its fragment (`server=`),
 * as a URL, if it is not this page's own; an Error if this page's operator
 * does not allow it (docs/protocol.md, section 8). */
function remoteServer() {
  if (!given.server) return null;
  let url;
  try {
    url = new URL(given.server);
  } catch {
    throw new Error("The invite link names a signaling server that is not a URL.");
  }
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  if (url.href === new URL(config.base, location.origin).href) return null;
  if (!config.remotes.includes(url.href)) {
    throw new Error(`This page connects only to its own server, and ${url.href} is not one its `
      + "operator allows: open the invite link as it was sent, or use a client that allows it.");
  }
  return url;
}

/** Ask the server whether the invite is still good, so a guest learns why
 * before joining (docs/protocol.md, section 7, "Checking it"). */
async function checkInvite() {
  let reply;
  try {
    // another server's check would need its CORS headers: there the join says what is wrong
    if (given.server && remoteServer()) return;
    const response = await fetch(`${config.base}p2p/invite`, {
      headers: { Authorization: `token ${given.invite}` },
      cache: "no-store",
    });
    reply = await response.json();
  } catch {
    return; // the join itself will say what is wrong
  }
  if (reply?.ok === true) return;
  $("join").disabled = true;
  notices.set("connect", `This invite cannot be used: ${String(reply?.reason ?? "refused")}. Ask for a new one.`);
}

async function join({ name, room, secret, token }) {
  localStorage.setItem("p2p-nb-name", name);
  const query = {};
  let authToken = null;
  const remote = remoteServer();
  if (remote) {
    // another (standalone) signaling server, one this page's operator allows:
    // the page, which reads the secret, is this server's, not the remote's
    authToken = given.invite ?? token;
  } else if (config.host === "jupyter") {
    // Jupyter reads its own token from ?token=; an invite from ?invite_token= (docs/protocol.md, section 7)
    if (given.invite) query.invite_token = given.invite;
    else if (token) query.token = token;
  } else {
    authToken = given.invite ?? token;
  }
  $("join-status").textContent = secret ? "Deriving the room key…" : "Connecting…";
  const joining = remote
    ? new P2PClient({ url: remote.origin, socketPath: `${remote.pathname}p2p/socket.io/`, token: authToken })
    : new P2PClient({ socketPath: config.socketPath, token: authToken, query });
  try {
    await joining.connect();
    $("join-status").textContent = "Joining…";
    await joining.join(room, name, secret);
  } catch (exc) {
    joining.close();
    $("join-status").textContent = "";
    throw exc;
  }
  client = joining;
  // what got us in is kept for this tab: a reload or "Join again" needs it
  if (token && !given.token && !given.invite) given.token = token;
  if (given.secret !== null) given.secret = secret; // the link's, maybe corrected; a typed one is not kept
  given.room = room;
  remember(given);
  notices.clearAll();
  resetRoom();
  wire(client);
  $("join-status").textContent = "";
  $("join").disabled = false;
  $("join-view").hidden = true;
  $("left-view").hidden = true;
  $("room-view").hidden = false;
  $("room-bar").hidden = false;
  const title = $("room-title");
  title.replaceChildren(`Room ${client.room} — you are `, peerText(client.name));
  document.title = `${client.room} — p2p-nb`;
  renderPeers();
  $("message").focus();
}

/** Back to the form, filled in: after Leave, or to correct the room secret. */
function showJoinForm({ fixSecret = false } = {}) {
  $("room-view").hidden = true;
  $("room-bar").hidden = true;
  $("left-view").hidden = true;
  $("join-view").hidden = false;
  $("join").disabled = false;
  document.title = "p2p-nb";
  if (fixSecret) {
    $("secret-row").hidden = false;
    fieldError("secret", "Check the room secret: the others in the room use another one. Type it again and join.");
    $("secret").select();
  } else {
    $("join").focus();
  }
}

// --- peers ----------------------------------------------------------------------

let everSawPeers = false;

function peerStateText(link) {
  if (link.secretMismatch) return "another room secret";
  if (link.away) return "away";
  if (link.state === "new") return "connecting";
  if (link.state === "lost" && link.reason) return `lost (${link.reason})`;
  return link.state;
}

function renderPeers() {
  if (client === null) return;
  const list = $("peers");
  const select = $("send-to");
  const chosen = select.value;
  list.replaceChildren();
  select.replaceChildren(el("option", { value: "", text: "Everyone" }));
  const peers = client.peers().filter((link) => link.state !== "closed");
  if (peers.length) everSawPeers = true;
  $("no-peers").hidden = peers.length > 0;
  $("no-peers").textContent = everSawPeers ? "Everyone else has left." : "Nobody else is here yet.";
  $("peer-count").textContent = peers.length ? `(${peers.length})` : "";
  for (const link of peers) {
    const state = link.away ? "away" : link.state;
    const kind = link.profileKnown === false ? "" : link.isBrowser ? "browser" : "notebook";
    const item = el("li", { class: `peer state-${state}${link.secretMismatch ? " mismatch" : ""}`, "data-peer": link.peerId },
      peerText(link.name, "peer-name"),
      el("span", { class: "peer-kind", text: kind }),
      el("span", { class: "peer-state", text: peerStateText(link) }),
      el("span", { class: "peer-rtt", text: link.rtt !== null && !link.away ? `${Math.round(link.rtt * 1000)} ms` : "" }),
      el("span", { class: "peer-code", title: "Safety code: compare it with this person over another channel", text: link.safetyCode ? `code ${link.safetyCode}` : "" }));
    list.append(item);
    if (!link.secretMismatch) select.append(el("option", { value: link.peerId, text: link.name }));
  }
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
  renderSecretNotice(peers);
}

/** One plain message when our room secret is not the room's: every peer we
 * meet refuses it (or has a sealed profile we cannot open), none accepts it.
 * A member who meets one stranger with another secret sees only that row. */
function renderSecretNotice(peers) {
  const mismatched = peers.filter((l) => l.secretMismatch);
  const fine = peers.filter((l) => !l.secretMismatch && l.profileKnown !== false);
  // who came last is the one with the other secret: a member is not told to
  // check theirs because a stranger arrived with another one
  const ours = mismatched.some((l) => l.presence !== "pending" && l.presence !== "announced");
  if (!ours || fine.length > 0) {
    notices.clear("secret");
    return;
  }
  const text = client.roomKey === null
    ? "This room has a room secret and you joined without it: ask for it, then join again with it."
    : "Nobody here accepts your room secret: check your room secret, then join again.";
  notices.set("secret", text, { action: { label: "Change the room secret", run: () => fixSecret() } });
}

async function fixSecret() {
  notices.clear("secret");
  const leaving = client;
  client = null;
  await leaving?.leave();
  showJoinForm({ fixSecret: true });
}

// --- chat -----------------------------------------------------------------------

/** Add a line to the conversation; it follows the newest line only when the
 * reader is at the bottom already, and never scrolls the page itself. */
function appendToLog(item) {
  const log = $("chat-log");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.append(item);
  while (log.children.length > 2000) log.firstElementChild.remove();
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function renderMessage(message) {
  const time = new Date(message.ts * 1000);
  const sender = message.own
    ? el("span", { class: "chat-sender" }, peerText(message.senderName), " (you)")
    : el("span", { class: "chat-sender" }, peerText(message.senderName));
  appendToLog(el("li", { class: message.own ? "chat own" : "chat" },
    sender,
    el("time", { datetime: time.toISOString(), text: time.toLocaleTimeString() }),
    message.to ? el("span", { class: "chat-private", text: "private" }) : null,
    el("p", { class: "chat-text", dir: "auto", text: message.text })));
}

function renderPresence({ name, what }) {
  appendToLog(el("li", { class: "chat-event" }, peerText(name), what === "joined" ? " joined" : " left"));
}

function sendMessage() {
  const box = $("message");
  const text = box.value;
  if (!text.trim()) return;
  try {
    client.sendChat(text, $("send-to").value || null);
    box.value = "";
    notices.clear("send");
  } catch (exc) {
    notices.set("send", `Not sent: ${exc.message}`);
  }
}

// --- files ----------------------------------------------------------------------

const rows = new Map();
const MAX_ROWS = 200;

function describeMeta(t) {
  if (t.kind !== "dataframe") return null;
  const meta = t.meta ?? {};
  const parts = [];
  if (Array.isArray(meta.shape)) parts.push(`shape ${meta.shape.map(String).join(" × ")}`);
  if (typeof meta.format === "string") parts.push(meta.format);
  const box = el("div", { class: "meta", text: `DataFrame ${parts.join(", ")}` });
  if (Array.isArray(meta.columns)) {
    const list = el("ul", { class: "columns" });
    // p2p-nb sends dtypes as a list beside the columns; a mapping is read too
    const dtypes = meta.dtypes && typeof meta.dtypes === "object" ? meta.dtypes : {};
    for (const [i, column] of meta.columns.slice(0, 50).entries()) {
      const dtype = Array.isArray(dtypes) ? dtypes[i] : Object.hasOwn(dtypes, String(column)) ? dtypes[String(column)] : "";
      list.append(el("li", { dir: "auto", text: dtype ? `${String(column)}: ${String(dtype)}` : String(column) }));
    }
    if (meta.columns.length > 50) list.append(el("li", { text: `… ${meta.columns.length - 50} more` }));
    box.append(list);
  }
  return box;
}

/** The name a transfer shows: for an incoming file, the name it will be saved
 * under (what the sender wrote may hide its real extension behind bidi controls). */
const shownName = (t) => (t.direction === "in" ? safeFileName(t.name) : t.name);

/** A transfer's row, made once: later events update it in place, and its
 * buttons stay the same elements for the transfer's life (a press that
 * takes a moment lands on the button it started on). */
function transferRow(t) {
  let row = rows.get(t.id);
  if (row) return row;
  const name = shownName(t);
  const button = (text, label, run) => el("button", { type: "button", text, "aria-label": `${label} ${name}`, onclick: run, hidden: "" });
  const progress = el("progress", { max: "1", value: "0", "aria-label": `Progress of ${name}` });
  const accept = button("Accept", "Accept", () => acceptOffer(t));
  const decline = button("Decline", "Decline", () => client?.decline(t.id));
  const cancel = button("Cancel", "Cancel", () => client?.cancel(t.id));
  const result = el("span", { class: "result" });
  const actions = el("span", { class: "actions" }, accept, decline, cancel, result);
  row = el("li", { class: `transfer ${t.direction}`, "data-transfer": t.id },
    peerText(name, "file-name"),
    el("span", { class: "file-size", text: formatBytes(t.size) }),
    el("span", { class: "file-peer" }, t.direction === "out" ? "to " : "from ", peerText(t.peerName)),
    describeMeta(t),
    progress,
    el("span", { class: "transfer-state", role: "status" }),
    actions);
  Object.assign(row, { progress, accept, decline, cancel, result, status: row.querySelector(".transfer-state") });
  rows.set(t.id, row);
  const list = t.direction === "in" ? $("incoming") : $("outgoing");
  list.prepend(row);
  if (t.direction === "in" && t.state === "offered") $("files-panel").open = true; // an offer waits for the user
  // bounded: the oldest finished transfers leave the page first
  const finished = new Set(["done", "declined", "cancelled", "failed"]);
  for (const old of [...list.children].reverse()) {
    if (list.children.length <= MAX_ROWS) break;
    if (finished.has(old.dataset.state)) {
      rows.delete(old.dataset.transfer);
      old.remove();
    }
  }
  return row;
}

function renderTransfer(t) {
  const row = transferRow(t);
  row.progress.value = t.fraction();
  const status = transferStatus(t);
  if (row.status.textContent !== status) row.status.textContent = status;
  row.dataset.state = t.state;
  const offered = t.direction === "in" && t.state === "offered";
  row.accept.hidden = row.decline.hidden = !offered;
  row.cancel.hidden = offered || t.finished;
  renderFileCount();
}

function renderFileCount() {
  const waiting = [...rows.values()].filter((r) => r.dataset.state === "offered" && r.classList.contains("in")).length;
  $("file-count").textContent = waiting ? `(${waiting} waiting)` : "";
}

/** Files of at least this size go straight to disk where the browser can
 * (File System Access API: the user picks the place when accepting). */
const STREAM_TO_DISK_BYTES = 64 * 1024 * 1024;

async function acceptOffer(t) {
  let sink = null;
  if (t.size >= (window.p2pStreamToDiskBytes ?? STREAM_TO_DISK_BYTES) && "showSaveFilePicker" in window) {
    try {
      const handle = await window.showSaveFilePicker({ suggestedName: safeFileName(t.name) });
      sink = await handle.createWritable();
    } catch (exc) {
      if (exc.name === "AbortError") return; // no place chosen: the offer stays open
      notices.set(`save:${t.id}`, `Cannot save ${safeFileName(t.name)} straight to disk (${exc.message}): it is downloaded at the end instead.`, { level: "info" });
    }
  }
  client.accept(t.id, sink);
}

/** A received file: downloaded at once, unless its type can run code when
 * opened (then the user clicks, warned); the link stays for another copy. */
function save(t, blob) {
  const row = transferRow(t);
  if (blob === null) {
    row.result.replaceChildren(el("span", { text: "saved to disk" }));
    return;
  }
  const url = URL.createObjectURL(blob);
  const name = safeFileName(t.name);
  if (isRiskyFileName(name)) {
    row.result.replaceChildren(
      el("a", { href: url, download: name, "aria-label": `Save ${name}` }, "Save ", peerText(name)),
      el("span", { class: "warning" }, "Not saved by itself: this kind of file can run programs when opened. Save it only if you trust ",
        peerText(t.peerName), "."));
    return;
  }
  const link = el("a", { href: url, download: name, "aria-label": `Save ${name} again` }, "Save ", peerText(name), " again");
  row.result.replaceChildren(link);
  link.click(); // the download starts at once; the link stays for another copy
}

async function shareFiles(files) {
  if (!files.length) return;
  try {
    await client.shareFiles([...files], $("send-to").value || null);
    notices.clear("share");
  } catch (exc) {
    notices.set("share", `Not shared: ${exc.message}`);
  }
}

// --- wiring ---------------------------------------------------------------------

function resetRoom() {
  for (const id of ["peers", "chat-log", "incoming", "outgoing"]) $(id).replaceChildren();
  rows.clear();
  everSawPeers = false;
  $("connection").textContent = "";
  renderFileCount();
}

function wire(c) {
  const mine = (fn) => (e) => {
    if (client === c) fn(e);
  };
  c.addEventListener("peers", mine(() => renderPeers()));
  c.addEventListener("chat", mine((e) => renderMessage(e.detail.message)));
  c.addEventListener("presence", mine((e) => {
    renderPresence(e.detail);
    if (e.detail.what === "left") notices.clearPrefix(`peer:${e.detail.peerId}:`);
  }));
  c.addEventListener("rekeyed", mine((e) => {
    // the room's secret now: a reload or "Join again" of this tab needs it
    // (the members accept the one before only from this tab's certificate)
    if (given.secret !== null && typeof e.detail.secret === "string") {
      given.secret = e.detail.secret;
      remember(given);
    }
  }));
  c.addEventListener("transfer", mine((e) => renderTransfer(e.detail.transfer)));
  c.addEventListener("offer", mine((e) => renderTransfer(e.detail.transfer)));
  c.addEventListener("received", mine((e) => save(e.detail.transfer, e.detail.blob)));
  c.addEventListener("error", mine((e) => {
    const { peerId, error } = e.detail;
    const link = peerId ? c.links.get(peerId) : null;
    const text = `${link ? `${link.name}: ` : ""}${error.message}`;
    notices.set(peerId ? `peer:${peerId}:${error.message}` : `error:${error.message}`, text);
  }));
  c.addEventListener("status", mine((e) => {
    const { state } = e.detail;
    // a state, not an error: said once, in the status line, gone when it is over
    $("connection").textContent = state === "disconnected"
      ? "Connection to the signaling server lost; reconnecting… (peers already connected keep talking)" : "";
    if (state === "joined") notices.clearPrefix("error:could not rejoin");
    if (state === "revoked") {
      // a final state: the server ended our credentials (an invite revoked or expired)
      notices.set("revoked", `You are out of the room: ${e.detail.reason ?? "your invite was revoked"}. Ask for a new invite.`);
      $("room-view").hidden = true;
      $("room-bar").hidden = true;
      $("left-view").hidden = false;
    }
  }));
}

function setupRoom() {
  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sendMessage();
  });
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendMessage();
    }
  });
  $("files").addEventListener("change", async (event) => {
    const files = [...event.target.files];
    event.target.value = "";
    await shareFiles(files);
  });
  const drop = $("drop-zone");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    shareFiles(event.dataTransfer.files);
  });
  $("leave").addEventListener("click", async () => {
    $("leave").disabled = true;
    const leaving = client;
    await leaving?.leave();
    $("leave").disabled = false;
    notices.clearAll();
    $("room-view").hidden = true;
    $("room-bar").hidden = true;
    $("left-view").hidden = false;
    document.title = "p2p-nb";
    $("join-again").focus();
  });
  // narrow screens: the conversation first, peers and files folded under it
  const narrow = matchMedia("(max-width: 700px)");
  const fold = () => {
    for (const id of ["peers-panel", "files-panel"]) $(id).open = !narrow.matches;
  };
  fold();
  narrow.addEventListener("change", fold);
  window.addEventListener("beforeunload", () => client?.socket?.disconnect());
}

setupForm();
setupRoom();
window.p2pClient = () => client; // for the tests and the curious: the live client
