// File transfer bookkeeping (docs/protocol.md, section 4), apart from the
// network and the DOM so it is tested on its own: the sender's window, the
// receiver's offsets and acknowledgements, the states a transfer goes through,
// and the names and numbers people see.

import { ProtocolError } from "./codec.js";

export const WINDOW = 256 * 1024;
export const WINDOW_RATE = 64e6;
export const MAX_WINDOW = 8 * 1024 * 1024;
export const ACK_EVERY = 64 * 1024;
export const HIGH_WATER = 1024 * 1024;
export const LOW_WATER = 256 * 1024;
export const MAX_FILE_BYTES = 16 * 2 ** 30;
export const MAX_PENDING_OFFERS_PER_PEER = 16;
export const MAX_PENDING_OFFERS = 64;

/** The sender's window on a link with this round-trip time (seconds), as TransferSettings.window_for. */
export function windowFor(rtt) {
  const needed = Math.floor((rtt || 0) * WINDOW_RATE);
  return Math.max(WINDOW, Math.min(MAX_WINDOW, needed));
}

export const FINISHED = new Set(["done", "declined", "cancelled", "failed"]);

/** What one side knows of a transfer. States: offered → accepted → sending /
 * receiving → verifying → done, or declined / cancelled / failed. */
export class TransferState {
  constructor({ id, direction, peerId, name, size, sha256 = "", kind = "file", meta = {} }) {
    Object.assign(this, { id, direction, peerId, name, size, sha256, kind, meta });
    this.state = "offered";
    this.bytes = 0; // sender: bytes sent; receiver: bytes received
    this.acked = 0; // sender: bytes the receiver holds; receiver: last offset we acked
    this.reason = "";
    this.startedAt = null;
    this.updatedAt = null;
  }

  get finished() {
    return FINISHED.has(this.state);
  }

  finish(state, reason = "") {
    if (this.finished) return false;
    this.state = state;
    this.reason = reason;
    return true;
  }

  // --- sender ---
  /** The receiver accepted from `offset` (0, or what it holds on a resume). */
  onAccept(offset, now = performance.now()) {
    if (this.direction !== "out" || this.finished) return false;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > this.size) {
      throw new ProtocolError(`file-accept offset ${offset} outside 0..${this.size}`);
    }
    this.state = "sending";
    this.bytes = offset;
    this.acked = offset;
    this.startedAt ??= now;
    return true;
  }

  onAck(offset) {
    if (this.direction !== "out") return;
    if (offset > this.size) throw new ProtocolError(`file-ack offset ${offset} beyond size ${this.size}`);
    if (offset > this.acked) this.acked = offset;
  }

  /** May the sender put another chunk in flight? */
  windowOpen(rtt) {
    return this.bytes - this.acked <= windowFor(rtt);
  }

  sent(n, now = performance.now()) {
    this.bytes += n;
    this.updatedAt = now;
  }

  // --- receiver ---
  accept(now = performance.now()) {
    if (this.direction !== "in" || this.state !== "offered") return false;
    this.state = "receiving";
    this.startedAt = now;
    return true;
  }

  /** A chunk at `offset` of `length` bytes: "take" it, "ignore" a repeat, or
   * ProtocolError for a gap or an overflow. After "take", ackDue() says
   * whether a file-ack is owed. */
  onChunk(offset, length, now = performance.now()) {
    if (this.direction !== "in" || this.state !== "receiving") {
      throw new ProtocolError(`chunk for transfer ${this.id} which is ${this.state}`);
    }
    if (offset < this.bytes) return "ignore";
    if (offset > this.bytes) throw new ProtocolError(`gap in transfer ${this.id}: chunk at ${offset}, holding ${this.bytes}`);
    if (this.bytes + length > this.size) throw new ProtocolError(`transfer ${this.id} is longer than its offer`);
    this.bytes += length;
    this.updatedAt = now;
    return "take";
  }

  ackDue() {
    return this.bytes - this.acked >= ACK_EVERY || (this.bytes === this.size && this.acked < this.size);
  }

  acknowledged() {
    this.acked = this.bytes;
    return this.bytes;
  }

  // --- both ---
  rate(now = performance.now()) {
    if (this.startedAt === null) return 0;
    const seconds = ((this.updatedAt ?? now) - this.startedAt) / 1000;
    return seconds > 0 ? this.bytes / seconds : 0;
  }

  fraction() {
    return this.size ? this.bytes / this.size : (this.state === "done" ? 1 : 0);
  }
}

/** Of a receiver's pending offers: why this new one is declined, or null. */
export function offerRefusal(transfers, peerId, size) {
  if (size > MAX_FILE_BYTES) return `larger than the receiver's limit of ${MAX_FILE_BYTES} bytes`;
  const pending = [...transfers].filter((t) => t.direction === "in" && t.state === "offered");
  const fromPeer = pending.filter((t) => t.peerId === peerId).length;
  if (fromPeer >= MAX_PENDING_OFFERS_PER_PEER) {
    return `too many pending offers from you (${fromPeer}; the receiver's limit is ${MAX_PENDING_OFFERS_PER_PEER})`;
  }
  if (pending.length >= MAX_PENDING_OFFERS) {
    return `too many pending offers (${pending.length}; the receiver's limit is ${MAX_PENDING_OFFERS})`;
  }
  return null;
}

const RESERVED = /^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³]|conin\$|conout\$|clock\$)$/i;

/** A name safe to save under (the rules of p2p_nb/files.py, shortened): last
 * path component, no control or reserved characters, no leading dots. */
export function safeFileName(name) {
  let n = String(name).split(/[/\\]/).pop().normalize("NFC");
  n = n.replace(/[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}<>:"|?*]/gu, "");
  n = n.replace(/^[. ]+|[. ]+$/g, "");
  if (!n) n = "file";
  const stem = n.split(".")[0].trimEnd();
  if (RESERVED.test(stem)) n = `_${n}`;
  while (new TextEncoder().encode(n).length > 200) n = [...n].slice(0, -1).join("");
  return n;
}

export function formatBytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = n;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function formatRate(bytesPerSecond) {
  return `${formatBytes(bytesPerSecond)}/s`;
}

/** Types that run code when opened (or render active content in a browser):
 * a received file of these is never downloaded by itself; the user clicks. */
export const RISKY_EXTENSIONS = new Set([
  "exe", "bat", "cmd", "com", "scr", "pif", "lnk", "hta", "js", "jse", "mjs", "vbs", "vbe", "wsf",
  "msi", "msp", "ps1", "jar", "reg", "desktop", "html", "htm", "xhtml", "mht", "svg", "svgz",
]);

/** Does `name` (a name as saved, see safeFileName) end in a risky extension? */
export function isRiskyFileName(name) {
  const dot = name.lastIndexOf(".");
  return dot >= 0 && RISKY_EXTENSIONS.has(name.slice(dot + 1).toLowerCase());
}

/** Below this size a transfer's rate says nothing (it is the link's set-up time). */
export const MIN_RATE_BYTES = 1e6;

/** What a transfer's row says about it: each word once ("cancelled", not
 * "cancelled: cancelled"), and a rate only when there is one worth reading. */
export function transferStatus(t) {
  const showRate = t.size >= MIN_RATE_BYTES && t.rate() > 0;
  if (t.state === "hashing") return `computing SHA-256 (${Math.round(100 * t.fraction())} %)`;
  if (t.state === "sending" || t.state === "receiving") {
    const done = `${t.state} ${formatBytes(t.bytes)} of ${formatBytes(t.size)}`;
    return showRate ? `${done}, ${formatRate(t.rate())}` : done;
  }
  if (t.state === "done") return showRate ? `done, ${formatRate(t.rate())}` : "done";
  const reason = String(t.reason ?? "").trim();
  if (!reason || reason === t.state || reason === t.state.replace(/ed$/, "")) return t.state;
  return `${t.state} (${reason.replace(new RegExp(`^${t.state}:?\\s*`), "")})`;
}
