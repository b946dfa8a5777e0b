// The page: the join form, then peers, chat and files. Only DOM code lives
// here; the peer itself is client.js. Every text another party sent (names,
// chat, file names, reasons, DataFrame columns) goes into the page through
// textContent, never as markup.

import { P2PClient } from "./client.js";
import { formatBytes, formatRate, safeFileName } from "./transfer.js";

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

/** What the address says (token, invite, room, secret), then the address
 * without any of it: credentials stay out of the bar, the history and any
 * bookmark. The fragment (the room secret) never reaches a server anyway. */
function takeFromAddress() {
  const url = new URL(location.href);
  const params = url.searchParams;
  const found = {
    token: params.get("token"),
    invite: params.get("invite"),
    room: params.get("room"),
    secret: url.hash.length > 1 ? decodeURIComponent(url.hash.slice(1)) : null,
  };
  for (const key of ["token", "invite"]) params.delete(key);
  url.hash = "";
  history.replaceState(null, "", url.pathname + (params.size ? `?${params}` : ""));
  return found;
}

const given = takeFromAddress();
let client = null;

function showError(text) {
  const list = $("errors");
  list.append(el("li", { text: `${new Date().toLocaleTimeString()}: ${text}` }));
  while (list.children.length > 50) list.firstElementChild.remove();
  list.hidden = false;
}

function setupForm() {
  const form = $("join-form");
  if (given.invite) {
    $("room").value = given.room ?? "";
    $("room").readOnly = true;
    $("invite-note").hidden = false;
    $("token-row").hidden = true;
  } else if (given.room) {
    $("room").value = given.room;
  }
  if (given.token) $("token-row").hidden = true;
  if (given.secret) {
    $("secret").value = given.secret;
    $("secret-row").hidden = true;
  }
  $("name").value = localStorage.getItem("p2p-nb-name") ?? "";
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    join().catch((exc) => {
      if (exc.code === "unauthorized") {
        showError(`The server refused the connection (${exc.message}). `
          + (given.invite ? "The invite may be expired or revoked." : "Check the access token, or log in."));
        if (!given.invite) {
          given.token = null;
          $("token-row").hidden = false;
        }
      } else {
        showError(exc.message);
      }
      $("join").disabled = false;
    });
  });
  if (given.invite) checkInvite();
}

/** Ask the server whether the invite is still good, so a guest learns why
 * before joining (docs/protocol.md, section 7, "Checking it"). */
async function checkInvite() {
  let reply;
  try {
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
  showError(`This invite cannot be used: ${String(reply?.reason ?? "refused")}. Ask for a new one.`);
}

async function join() {
  $("join").disabled = true;
  const name = $("name").value.trim();
  const room = $("room").value.trim();
  const secret = $("secret").value || null;
  const token = given.token ?? ($("token").value.trim() || null);
  localStorage.setItem("p2p-nb-name", name);
  const query = {};
  let authToken = null;
  if (config.host === "jupyter") {
    // Jupyter reads its own token from ?token=; an invite from ?invite_token= (docs/protocol.md, section 7)
    if (given.invite) query.invite_token = given.invite;
    else if (token) query.token = token;
  } else {
    authToken = given.invite ?? token;
  }
  $("join-status").textContent = secret ? "Deriving the room key…" : "Connecting…";
  client = new P2PClient({ socketPath: config.socketPath, token: authToken, query });
  wire(client);
  try {
    await client.connect();
    $("join-status").textContent = "Joining…";
    await client.join(room, name, secret);
  } catch (exc) {
    client.socket?.disconnect();
    client = null;
    $("join-status").textContent = "";
    throw exc;
  }
  $("join-status").textContent = "";
  $("join-view").hidden = true;
  $("room-view").hidden = false;
  $("room-title").textContent = `Room ${client.room} — you are ${client.name}`;
  document.title = `${client.room} — p2p-nb`;
  $("message").focus();
}

// --- peers ----------------------------------------------------------------------

function renderPeers() {
  const list = $("peers");
  const select = $("send-to");
  const chosen = select.value;
  list.replaceChildren();
  select.replaceChildren(el("option", { value: "", text: "Everyone" }));
  const peers = client.peers();
  $("no-peers").hidden = peers.length > 0;
  for (const link of peers) {
    const state = link.state === "lost" && link.reason ? `lost (${link.reason})` : link.state;
    const item = el("li", { class: `peer state-${link.state}`, "data-peer": link.peerId },
      el("span", { class: "peer-name", text: link.name }),
      el("span", { class: "peer-kind", text: link.isBrowser ? "browser" : "notebook" }),
      el("span", { class: "peer-state", text: state }),
      el("span", { class: "peer-rtt", text: link.rtt !== null ? `${Math.round(link.rtt * 1000)} ms` : "" }),
      el("span", { class: "peer-code", title: "Safety code: compare it with this person over another channel", text: link.safetyCode ? `code ${link.safetyCode}` : "" }));
    list.append(item);
    select.append(el("option", { value: link.peerId, text: link.name }));
  }
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
}

// --- chat -----------------------------------------------------------------------

function renderMessage(message) {
  const log = $("chat-log");
  const time = new Date(message.ts * 1000);
  const item = el("li", { class: message.own ? "chat own" : "chat" },
    el("span", { class: "chat-sender", text: message.own ? `${message.senderName} (you)` : message.senderName }),
    el("time", { datetime: time.toISOString(), text: time.toLocaleTimeString() }),
    message.to ? el("span", { class: "chat-private", text: "private" }) : null,
    el("p", { class: "chat-text", text: message.text }));
  log.append(item);
  while (log.children.length > 2000) log.firstElementChild.remove();
  item.scrollIntoView({ block: "end" });
}

function sendMessage() {
  const box = $("message");
  const text = box.value;
  if (!text.trim()) return;
  try {
    client.sendChat(text, $("send-to").value || null);
    box.value = "";
  } catch (exc) {
    showError(exc.message);
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
      list.append(el("li", { text: dtype ? `${String(column)}: ${String(dtype)}` : String(column) }));
    }
    if (meta.columns.length > 50) list.append(el("li", { text: `… ${meta.columns.length - 50} more` }));
    box.append(list);
  }
  return box;
}

function transferRow(t) {
  let row = rows.get(t.id);
  if (row) return row;
  const direction = t.direction === "out" ? `to ${t.peerName}` : `from ${t.peerName}`;
  const progress = el("progress", { max: "1", value: "0", "aria-label": `Progress of ${t.name}` });
  const actions = el("span", { class: "actions" });
  row = el("li", { class: `transfer ${t.direction}`, "data-transfer": t.id },
    el("span", { class: "file-name", text: t.name }),
    el("span", { class: "file-size", text: formatBytes(t.size) }),
    el("span", { class: "file-peer", text: direction }),
    describeMeta(t),
    progress,
    el("span", { class: "transfer-state", role: "status" }),
    actions);
  row.progress = progress;
  row.actions = actions;
  rows.set(t.id, row);
  const list = t.direction === "in" ? $("incoming") : $("outgoing");
  list.prepend(row);
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
  let status = t.state;
  if (t.state === "hashing") status = `computing SHA-256 (${Math.round(100 * t.fraction())} %)`;
  else if (t.state === "sending" || t.state === "receiving") {
    status = `${t.state} ${formatBytes(t.bytes)} of ${formatBytes(t.size)}, ${formatRate(t.rate())}`;
  } else if (t.state === "done") status = `done, ${formatRate(t.rate())}`;
  else if (t.reason) status = `${t.state}: ${t.reason}`;
  row.querySelector(".transfer-state").textContent = status;
  row.dataset.state = t.state;
  row.actions.replaceChildren();
  if (t.direction === "in" && t.state === "offered") {
    row.actions.append(
      el("button", { type: "button", text: "Accept", "aria-label": `Accept ${t.name}`, onclick: () => acceptOffer(t) }),
      el("button", { type: "button", text: "Decline", "aria-label": `Decline ${t.name}`, onclick: () => client.decline(t.id) }));
  } else if (!t.finished) {
    row.actions.append(el("button", { type: "button", text: "Cancel", "aria-label": `Cancel ${t.name}`, onclick: () => client.cancel(t.id) }));
  }
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
      showError(`cannot save ${t.name} straight to disk (${exc.message}): it is downloaded at the end instead`);
    }
  }
  client.accept(t.id, sink);
}

function save(t, blob) {
  if (blob === null) {
    transferRow(t).actions.replaceChildren(el("span", { text: "saved to disk" }));
    return;
  }
  const url = URL.createObjectURL(blob);
  const name = safeFileName(t.name);
  const link = el("a", { href: url, download: name, text: `Save ${name} again` });
  transferRow(t).actions.replaceChildren(link);
  link.click(); // the download starts at once; the link stays for another copy
}

async function shareFiles(files) {
  if (!files.length) return;
  try {
    await client.shareFiles([...files], $("send-to").value || null);
  } catch (exc) {
    showError(exc.message);
  }
}

// --- wiring ---------------------------------------------------------------------

function wire(c) {
  c.addEventListener("peers", () => renderPeers());
  c.addEventListener("chat", (e) => renderMessage(e.detail.message));
  c.addEventListener("transfer", (e) => renderTransfer(e.detail.transfer));
  c.addEventListener("offer", (e) => renderTransfer(e.detail.transfer));
  c.addEventListener("received", (e) => save(e.detail.transfer, e.detail.blob));
  c.addEventListener("error", (e) => {
    const link = e.detail.peerId ? c.links.get(e.detail.peerId) : null;
    showError(`${link ? `${link.name}: ` : ""}${e.detail.error.message}`);
  });
  c.addEventListener("status", (e) => {
    const { state, reason } = e.detail;
    $("connection").textContent = state === "disconnected"
      ? `Connection to the signaling server lost (${reason}); reconnecting…` : "";
    if (state === "disconnected") showError(`signaling connection lost: ${reason}`);
  });
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
    await client.leave();
    $("room-view").hidden = true;
    $("left-view").hidden = false;
  });
  window.addEventListener("beforeunload", () => client?.socket?.disconnect());
}

setupForm();
setupRoom();
window.p2pClient = () => client; // for the tests and the curious: the live client
