// The data-channel wire format (docs/protocol.md, sections 3 and 4), as
// p2p_nb/protocol.py speaks it. Pure: no DOM, no network, so it is tested on
// its own (tests/web/unit.html). Every field from a peer is validated: a peer
// is another user's program, not a trusted party.

export const PROTOCOL_VERSION = 1;
export const CHANNEL_LABEL = "p2p-nb";
export const CHANNEL_PROTOCOL = "p2p-nb/1";
export const MAX_CONTROL_BYTES = 64 * 1024;
export const MAX_TEXT_CHARS = 16 * 1024;
export const MAX_ID_CHARS = 64;
export const MAX_FILE_NAME_CHARS = 1024;
export const MAX_META_BYTES = 32 * 1024;
export const MAX_REASON_CHARS = 1000;
export const MAX_FRAME_BYTES = 64 * 1024;
export const CHUNK_HEADER_BYTES = 25;
export const CHUNK_SIZE = MAX_FRAME_BYTES - CHUNK_HEADER_BYTES;
export const CHUNK_FRAME = 1;
export const MAX_RELAY_FRAME_BYTES = 2 * MAX_CONTROL_BYTES + 1024;
export const MAX_SEALED_FRAME_BYTES = MAX_FRAME_BYTES + 64;
export const MAX_REPORTED_LINKS = 256;
export const BATCH_MAX_CHARS = 16000;
export const LINK_STATES = new Set([
  "new", "connecting", "connected", "reconnecting", "relayed", "limited", "lost", "closed",
]);
export const FILE_CONTROL_TYPES = new Set([
  "file-accept", "file-ack", "file-complete", "file-done", "file-decline", "file-cancel",
]);
export const BUILTIN_TYPES = new Set([
  "chat", "chat-ack", "ping", "pong", "file-offer", "capabilities", "mesh-report",
  "relay-open", "relay-frame", "safety-reveal", "rekey", ...FILE_CONTROL_TYPES,
]);

/** A frame or field that breaks the protocol: reported, never fatal to the channel. */
export class ProtocolError extends Error {
  constructor(message) {
    super(message);
    this.name = "ProtocolError";
  }
}

const HEX32 = /^[0-9a-f]{32}$/;
const HEX64 = /^[0-9a-f]{64}$/;

/** Length in Unicode code points, as Python's len() counts. */
export function codePoints(text) {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}

function str(obj, key, maxLen, allowEmpty = false) {
  const value = obj[key];
  if (typeof value !== "string") throw new ProtocolError(`field '${key}' must be a string`);
  if (!value && !allowEmpty) throw new ProtocolError(`field '${key}' must not be empty`);
  if (value.length > maxLen && codePoints(value) > maxLen) {
    throw new ProtocolError(`field '${key}' is longer than ${maxLen} characters`);
  }
  return value;
}

function nonNegInt(obj, key, fallback) {
  const value = key in obj ? obj[key] : fallback;
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new ProtocolError(`field '${key}' must be a non-negative integer`);
  }
  return value;
}

function finite(obj, key) {
  const value = obj[key];
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new ProtocolError(`field '${key}' must be a finite number`);
  }
  return value;
}

function utf8Length(text) {
  return new TextEncoder().encode(text).length;
}

/** Compact JSON of one message (what Python's json.dumps(separators=(",", ":")) gives). */
export function encode(type, fields = {}) {
  return JSON.stringify({ v: PROTOCOL_VERSION, type, ...fields });
}

/** Parts of one text frame: a sender may batch several messages with "\n". */
export function splitBatch(text) {
  return text.includes("\n") ? text.split("\n") : [text];
}

/** Parse and validate one control message, or throw ProtocolError. */
export function decode(text) {
  if (typeof text !== "string") throw new ProtocolError("binary frame on the control path");
  const oversized = utf8Length(text) > MAX_CONTROL_BYTES;
  if (text.length > MAX_RELAY_FRAME_BYTES) {
    throw new ProtocolError(`control message exceeds ${MAX_CONTROL_BYTES} bytes`);
  }
  let obj;
  try {
    obj = JSON.parse(text);
  } catch (exc) {
    throw new ProtocolError(`not valid JSON: ${exc.message}`);
  }
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
    throw new ProtocolError("a message must be a JSON object");
  }
  if (oversized && obj.type !== "relay-frame") {
    throw new ProtocolError(`control message exceeds ${MAX_CONTROL_BYTES} bytes`);
  }
  if (obj.v !== PROTOCOL_VERSION) {
    throw new ProtocolError(`unsupported protocol version ${JSON.stringify(obj.v)} (this peer speaks 1)`);
  }
  const type = obj.type;
  if (typeof type !== "string" || !type || type.length > MAX_ID_CHARS) {
    throw new ProtocolError("field 'type' must be a short non-empty string");
  }
  switch (type) {
    case "chat": {
      const to = obj.to === undefined || obj.to === null ? null : str(obj, "to", MAX_ID_CHARS);
      return {
        type, seq: nonNegInt(obj, "seq"), ts: finite(obj, "ts"),
        id: str(obj, "id", MAX_ID_CHARS), text: str(obj, "text", MAX_TEXT_CHARS, true), to,
      };
    }
    case "chat-ack":
      return { type, seq: nonNegInt(obj, "seq") };
    case "ping":
    case "pong":
      return { type, id: str(obj, "id", MAX_ID_CHARS), ts: finite(obj, "ts") };
    case "file-offer":
      return decodeOffer(obj);
    case "capabilities":
      return { type, caps: normaliseCapabilities(obj.caps) };
    case "mesh-report": {
      const links = obj.links;
      if (links === null || typeof links !== "object" || Array.isArray(links) || Object.keys(links).length > MAX_REPORTED_LINKS) {
        throw new ProtocolError(`field 'links' must be an object of at most ${MAX_REPORTED_LINKS} entries`);
      }
      for (const [pid, state] of Object.entries(links)) {
        if (!pid || pid.length > MAX_ID_CHARS || !LINK_STATES.has(state)) {
          throw new ProtocolError(`bad link entry ${JSON.stringify(pid)}`);
        }
      }
      const request = obj.request ?? false;
      if (typeof request !== "boolean") throw new ProtocolError("field 'request' must be a boolean");
      return { type, links: { ...links }, request };
    }
    case "relay-open":
      return { type };
    case "relay-frame": {
      const to = "to" in obj ? str(obj, "to", MAX_ID_CHARS) : null;
      const from = "from" in obj ? str(obj, "from", MAX_ID_CHARS) : null;
      if ((to === null) === (from === null)) {
        throw new ProtocolError("a relay-frame has exactly one of the fields 'to' and 'from'");
      }
      if (obj.binary !== true) throw new ProtocolError("a relayed frame is sealed: binary must be true");
      const data = base64ToBytes(str(obj, "data", MAX_RELAY_FRAME_BYTES));
      if (data.length < 1 || data.length > MAX_SEALED_FRAME_BYTES) {
        throw new ProtocolError(`a relayed binary frame is 1 to ${MAX_SEALED_FRAME_BYTES} bytes`);
      }
      return { type, to, from, data };
    }
    case "safety-reveal":
      return { type, nonce: str(obj, "nonce", 64) };
    default:
      break;
  }
  if (FILE_CONTROL_TYPES.has(type)) {
    const reason = obj.reason ?? "";
    if (typeof reason !== "string" || codePoints(reason) > MAX_REASON_CHARS) {
      throw new ProtocolError(`field 'reason' must be a string of at most ${MAX_REASON_CHARS} characters`);
    }
    return { type, id: transferId(obj), offset: nonNegInt(obj, "offset", 0), reason };
  }
  const seq = Number.isSafeInteger(obj.seq) && obj.seq >= 0 ? obj.seq : null;
  return { type, unknown: true, seq, payload: obj };
}

function transferId(obj) {
  const id = obj.id;
  if (typeof id !== "string" || !HEX32.test(id)) {
    throw new ProtocolError("field 'id' of a transfer must be 32 lowercase hex digits");
  }
  return id;
}

function decodeOffer(obj) {
  const size = obj.size;
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new ProtocolError("field 'size' must be a non-negative integer");
  }
  if (typeof obj.sha256 !== "string" || !HEX64.test(obj.sha256)) {
    throw new ProtocolError("field 'sha256' must be 64 lowercase hex digits");
  }
  const kind = obj.kind ?? "file";
  if (kind !== "file" && kind !== "dataframe") {
    throw new ProtocolError("field 'kind' must be one of ['dataframe', 'file']");
  }
  const meta = obj.meta ?? {};
  if (meta === null || typeof meta !== "object" || Array.isArray(meta)
      || utf8Length(JSON.stringify(meta)) > MAX_META_BYTES) {
    throw new ProtocolError(`field 'meta' must be an object of at most ${MAX_META_BYTES} bytes`);
  }
  const resume = obj.resume ?? false;
  if (typeof resume !== "boolean") throw new ProtocolError("field 'resume' must be a boolean");
  return {
    type: "file-offer", id: transferId(obj), name: str(obj, "name", MAX_FILE_NAME_CHARS, true),
    size, sha256: obj.sha256, kind, meta, resume,
  };
}

export const DEFAULT_CAPABILITIES = Object.freeze({
  role: "basic",
  services: ["messaging", "file_transfer"],
  resources: { max_connections: null, bandwidth: null, storage: null },
  location: { region: null, timezone: null },
  rev: 0,
});

/** Capabilities with the defaults filled in; anything malformed gives the defaults
 * (docs/protocol.md: "reported locally, the defaults assumed"). */
export function normaliseCapabilities(caps) {
  const out = structuredClone(DEFAULT_CAPABILITIES);
  if (caps === null || typeof caps !== "object" || Array.isArray(caps)) return out;
  if (["basic", "relay", "super_peer"].includes(caps.role)) out.role = caps.role;
  if (Array.isArray(caps.services) && caps.services.length <= 32
      && caps.services.every((s) => typeof s === "string" && s.length >= 1 && s.length <= 64)) {
    out.services = [...new Set(caps.services)];
  }
  if (Number.isSafeInteger(caps.rev) && caps.rev >= 0) out.rev = caps.rev;
  return out;
}

// --- binary chunk frames ------------------------------------------------------

/** One file chunk: type 1, 16 id bytes, 8-byte big-endian offset, payload. */
export function encodeChunk(transferIdHex, offset, payload) {
  const frame = new Uint8Array(CHUNK_HEADER_BYTES + payload.byteLength);
  frame[0] = CHUNK_FRAME;
  frame.set(hexToBytes(transferIdHex), 1);
  new DataView(frame.buffer).setBigUint64(17, BigInt(offset), false);
  frame.set(payload instanceof Uint8Array ? payload : new Uint8Array(payload), CHUNK_HEADER_BYTES);
  return frame;
}

/** (id, offset, payload) of a chunk frame, or ProtocolError. */
export function decodeChunk(buffer) {
  const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  if (bytes.byteLength < CHUNK_HEADER_BYTES) {
    throw new ProtocolError(`binary frame of ${bytes.byteLength} bytes is shorter than its header`);
  }
  if (bytes.byteLength > MAX_FRAME_BYTES) {
    throw new ProtocolError(`binary frame of ${bytes.byteLength} bytes exceeds ${MAX_FRAME_BYTES}`);
  }
  if (bytes[0] !== CHUNK_FRAME) throw new ProtocolError(`unknown binary frame type ${bytes[0]}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const offset = view.getBigUint64(17, false);
  if (offset > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError("chunk offset too large");
  return {
    id: bytesToHex(bytes.subarray(1, 17)),
    offset: Number(offset),
    payload: bytes.subarray(CHUNK_HEADER_BYTES),
  };
}

// --- small helpers ------------------------------------------------------------

export function bytesToHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function hexToBytes(hex) {
  if (hex.length % 2 || /[^0-9a-fA-F]/.test(hex)) throw new ProtocolError("not hex");
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function randomHex(bytes) {
  return bytesToHex(crypto.getRandomValues(new Uint8Array(bytes)));
}

export function newTransferId() {
  return randomHex(16);
}

export function bytesToBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

export function base64ToBytes(b64) {
  if (typeof b64 !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4) {
    throw new ProtocolError("not valid base64");
  }
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}
