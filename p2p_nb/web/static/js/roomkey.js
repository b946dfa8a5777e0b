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

/** Every a=fingerprint: value (lowercased, in order), the first ice-ufrag and ice-pwd. */
export function sdpIdentity(sdp) {
  const fingerprints = [];
  let iceUfrag = "";
  let icePwd = "";
  for (const raw of sdp.split(LINE_BREAK)) {
    const line = raw.trim();
    const value = () => line.slice(line.indexOf(":") + 1).trim();
    if (line.startsWith("a=fingerprint:")) fingerprints.push(value().toLowerCase());
    else if (line.startsWith("a=ice-ufrag:") && !iceUfrag) iceUfrag = value();
    else if (line.startsWith("a=ice-pwd:") && !icePwd) icePwd = value();
  }
  return { fingerprints, iceUfrag, icePwd };
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
    const want = await this.authenticate(sender, receiver, signal);
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
