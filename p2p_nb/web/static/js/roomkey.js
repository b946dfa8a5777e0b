// Rooms with a secret (docs/protocol.md, section 6), as p2p_nb/roomkey.py:
// the room key (scrypt N=2^15, r=8, p=1, then HKDF-SHA256), the authenticator
// of offers, answers and relay signals (HMAC-SHA256 over an exact JSON
// encoding), and the sealed profile (AES-256-GCM). The secret never leaves
// the page. scrypt comes from @noble/hashes (WebCrypto has none); the rest is
// WebCrypto.

import { scryptAsync } from "../vendor/noble-hashes/scrypt.js";
import { base64ToBytes, bytesToBase64, bytesToHex, codePoints } from "./codec.js";

export const LABEL = "p2p-nb room v1";
export const SCRYPT = { N: 2 ** 15, r: 8, p: 1, dkLen: 32 };
export const MIN_SECRET_CHARS = 8;
export const MAX_SECRET_CHARS = 1024;
export const AUTH_FIELDS = ["attempt", "commit", "nonce", "pin", "session", "key", "via"];
export const AUTHENTICATED_SIGNALS = new Set(["offer", "answer", "relay", "relay-accept"]);

const enc = new TextEncoder();

/** A secret that cannot be used, a signal without the right authenticator, a
 * profile that does not open: the link is refused, never opened. */
export class RoomSecretError extends Error {
  constructor(message) {
    super(message);
    this.name = "RoomSecretError";
  }
}

async function hkdf(master, info) {
  const key = await crypto.subtle.importKey("raw", master, "HKDF", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: enc.encode(LABEL), info: enc.encode(info) }, key, 256);
  return new Uint8Array(bits);
}

// Python's str.splitlines() boundaries.
const LINE_BREAK = /\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/;
// Python's str.isspace() characters (String.prototype.trim differs: it strips
// U+FEFF and keeps U+001C-U+001F and U+0085), for strip() and split().
const PY_SPACE = "\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const PY_OUTER_SPACE = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, "g");
const PY_SPACES = new RegExp(`[${PY_SPACE}]+`);
const pyStrip = (text) => text.replace(PY_OUTER_SPACE, "");
const pySplit = (text) => pyStrip(text).split(PY_SPACES).filter(Boolean);

/** Every a=fingerprint: value (lowercased, in order), the ice-ufrag and ice-pwd;
 * RoomSecretError (as p2p_nb/roomkey.py) for an SDP that gives ICE credentials
 * twice in one section (session part or one m= section) or different ones in
 * two, or repeats a fingerprint's hash function in one section: only one set
 * of ICE credentials can be authenticated, and a stack may use another. */
export function sdpIdentity(sdp) {
  const fingerprints = [];
  const values = { "ice-ufrag": new Set(), "ice-pwd": new Set() };
  let level = new Set();
  for (const raw of sdp.split(LINE_BREAK)) {
    const line = pyStrip(raw);
    if (line.startsWith("m=")) {
      level = new Set();
      continue;
    }
    const colon = line.indexOf(":");
    if (!line.startsWith("a=") || colon < 0) continue;
    const attr = line.slice(2, colon);
    if (attr !== "fingerprint" && !(attr in values)) continue;
    const value = pyStrip(line.slice(colon + 1));
    let what;
    if (attr === "fingerprint") {
      fingerprints.push(value.toLowerCase());
      what = `a=fingerprint for ${(pySplit(value)[0] ?? "").toLowerCase()}`;
    } else {
      values[attr].add(value);
      what = `a=${attr}`;
    }
    if (level.has(what)) throw new RoomSecretError(`its SDP repeats ${what} in one section`);
    level.add(what);
  }
  for (const [attr, seen] of Object.entries(values)) {
    if (seen.size > 1) throw new RoomSecretError(`its SDP gives ${seen.size} different a=${attr} values`);
  }
  const first = (set) => set.values().next().value ?? "";
  return { fingerprints, iceUfrag: first(values["ice-ufrag"]), icePwd: first(values["ice-pwd"]) };
}

/** The exact bytes the authenticator covers, or RoomSecretError for text that
 * is not valid Unicode (a lone surrogate has no UTF-8 encoding). */
export function authMessage(room, sender, receiver, signal) {
  const ident = sdpIdentity(typeof signal.sdp === "string" ? signal.sdp : "");
  const m = [
    LABEL, room, sender, receiver, String(signal.type ?? ""), ident.fingerprints,
    ident.iceUfrag, ident.icePwd,
    AUTH_FIELDS.map((k) => (typeof signal[k] === "string" ? signal[k] : "")),
    signal.keep === true,
  ];
  const json = JSON.stringify(m);
  if (!json.isWellFormed()) {
    throw new RoomSecretError(`the ${signal.type} from ${sender} is not valid Unicode text`);
  }
  return enc.encode(json);
}

export function checkSecret(secret) {
  if (typeof secret !== "string" || !secret.isWellFormed()) {
    throw new RoomSecretError("a room secret is text (valid Unicode)");
  }
  const n = codePoints(secret);
  if (n < MIN_SECRET_CHARS || n > MAX_SECRET_CHARS) {
    throw new RoomSecretError(
      `a room secret has ${MIN_SECRET_CHARS} to ${MAX_SECRET_CHARS} characters (this one has ${n})`);
  }
  return secret;
}

/** The keys of one room with a secret. */
export class RoomKey {
  static async derive(room, secret) {
    checkSecret(secret);
    const master = await scryptAsync(enc.encode(secret), enc.encode(`${LABEL}|${room}`), SCRYPT);
    const key = new RoomKey();
    key.room = room;
    key.authKeyBytes = await hkdf(master, "auth");
    key.relaySalt = await hkdf(master, "relay");
    key.profileKeyBytes = await hkdf(master, "profile");
    master.fill(0);
    key.authKey = await crypto.subtle.importKey(
      "raw", key.authKeyBytes, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    key.profileKey = await crypto.subtle.importKey(
      "raw", key.profileKeyBytes, "AES-GCM", false, ["encrypt", "decrypt"]);
    return key;
  }

  /** `auth` for a signal `sender` sends to `receiver`. */
  async authenticate(sender, receiver, signal) {
    const mac = await crypto.subtle.sign("HMAC", this.authKey, authMessage(this.room, sender, receiver, signal));
    return bytesToHex(new Uint8Array(mac));
  }

  /** Throw RoomSecretError unless the signal's `auth` is right (constant time). */
  async check(sender, receiver, signal) {
    const given = signal.auth;
    if (typeof given !== "string" || !given) {
      throw new RoomSecretError(
        `the ${signal.type} from ${sender} has no room authenticator: it does not know the room secret`);
    }
    let want;
    try {
      want = await this.authenticate(sender, receiver, signal);
    } catch (exc) {
      if (!(exc instanceof RoomSecretError && exc.message.startsWith("its SDP"))) throw exc;
      throw new RoomSecretError(
        `the ${signal.type} from ${sender} is refused: ${exc.message} `
        + "(altered on the way: only one set of ICE credentials can be authenticated)");
    }
    let diff = given.length ^ want.length;
    for (let i = 0; i < want.length; i++) diff |= want.charCodeAt(i) ^ given.charCodeAt(i % Math.max(given.length, 1));
    if (diff !== 0) {
      throw new RoomSecretError(
        `the ${signal.type} from ${sender} has a wrong room authenticator: `
        + "another secret, or altered on the way (someone in the middle)");
    }
  }

  profileAad(peerId) {
    return enc.encode(`${LABEL}|profile|${this.room}|${peerId}`);
  }

  /** {"sealed": base64(nonce ‖ AES-GCM(JSON {"n": name, "c": capabilities}))}. */
  async sealProfile(peerId, name, capabilities, nonce = crypto.getRandomValues(new Uint8Array(12))) {
    const plain = enc.encode(JSON.stringify({ n: name, c: capabilities }));
    const sealed = new Uint8Array(await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: nonce, additionalData: this.profileAad(peerId) }, this.profileKey, plain));
    const out = new Uint8Array(12 + sealed.length);
    out.set(nonce);
    out.set(sealed, 12);
    return { sealed: bytesToBase64(out) };
  }

  /** [name, capabilities] of a sealed profile; null if not sealed; RoomSecretError if it does not open. */
  async openProfile(peerId, capabilities) {
    if (capabilities === null || typeof capabilities !== "object" || !("sealed" in capabilities)) return null;
    let profile;
    try {
      const raw = base64ToBytes(String(capabilities.sealed));
      const plain = await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: raw.subarray(0, 12), additionalData: this.profileAad(peerId) },
        this.profileKey, raw.subarray(12));
      profile = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(plain));
    } catch {
      throw new RoomSecretError(
        `the profile of ${peerId} does not open with this room's secret (another secret, or moved or altered on the way)`);
    }
    const name = profile?.n;
    const caps = profile?.c;
    if (typeof name !== "string" || caps === null || typeof caps !== "object" || Array.isArray(caps)) {
      throw new RoomSecretError(`the sealed profile of ${peerId} is malformed`);
    }
    return [name, caps];
  }
}
