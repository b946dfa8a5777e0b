// The safety code of a direct link (docs/protocol.md, section 2, "Safety
// code"), as p2p_nb/safety.py computes it: six digits both users compare over
// another channel. The offerer commits to its nonce in the offer, the answerer
// puts its own nonce in the answer, the offerer reveals its nonce on the data
// channel. Pure apart from WebCrypto's SHA-256.

import { bytesToHex, hexToBytes, randomHex } from "./codec.js";

export const LABEL = "p2p-nb safety v2";
const HEX64 = /^[0-9a-f]{64}$/;

/** A malformed or mismatched safety exchange: the link then shows no code. */
export class SafetyCodeError extends Error {
  constructor(message) {
    super(message);
    this.name = "SafetyCodeError";
  }
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const enc = new TextEncoder();

export async function commitment(nonceHex) {
  return bytesToHex(await sha256(concat(enc.encode(`${LABEL}|commit|`), hexToBytes(nonceHex))));
}

export async function codeDigest(fpOfferer, fpAnswerer, nonceOfferer, nonceAnswerer) {
  const data = [LABEL, fpOfferer.toLowerCase(), fpAnswerer.toLowerCase(), nonceOfferer, nonceAnswerer];
  return sha256(enc.encode(JSON.stringify(data)));
}

export function codeOf(digest) {
  const view = new DataView(digest.buffer, digest.byteOffset, 8);
  const n = Number(view.getBigUint64(0, false) % 1000000n);
  const s = String(n).padStart(6, "0");
  return `${s.slice(0, 3)} ${s.slice(3)}`;
}

export async function pinOf(digest) {
  return bytesToHex(await sha256(concat(enc.encode(`${LABEL}|pin|`), digest)));
}

/** The DTLS fingerprint an SDP announces first (`sha-256 ab:cd:...`, lowercased). */
export function sdpFingerprint(sdp) {
  for (const line of sdp.split(/\r\n|\n|\r/)) {
    if (line.startsWith("a=fingerprint:")) return line.slice(line.indexOf(":") + 1).trim().toLowerCase();
  }
  return null;
}

function checkHex(value, what) {
  if (typeof value !== "string" || !HEX64.test(value)) {
    throw new SafetyCodeError(`'${what}' must be 64 lowercase hex digits`);
  }
  return value;
}

function equalConstantTime(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/** One link's safety code across its attempts (the same steps as SafetyState in Python). */
export class SafetyState {
  constructor() {
    this.pinned = null; // {localFp, remoteFp, digest, code, pin}
    this.code = null;
    this.reset();
  }

  reset() {
    this.code = null;
    this.nonce = null;
    this.commit = null;
    this.theirNonce = null;
    this.fps = null;
    this.keep = false;
  }

  samePair(localFp, remoteFp) {
    const p = this.pinned;
    return p !== null && p.localFp === localFp && p.remoteFp === remoteFp;
  }

  async offerFields() {
    this.reset();
    this.nonce = randomHex(32);
    const fields = { commit: await commitment(this.nonce) };
    if (this.pinned !== null) fields.pin = this.pinned.pin;
    return fields;
  }

  onAnswer(signal, localFp, remoteFp) {
    if (this.nonce === null || !localFp || !remoteFp) return;
    if (!("nonce" in signal)) {
      this.nonce = null;
      return;
    }
    this.theirNonce = checkHex(signal.nonce, "nonce");
    this.fps = [localFp, remoteFp];
    this.keep = signal.keep === true && this.samePair(localFp, remoteFp);
  }

  /** Offerer, channel open: the nonce to reveal (or null) and the old pin the code replaced. */
  async reveal() {
    if (this.nonce === null || this.theirNonce === null || this.fps === null) return [null, null];
    const digest = await codeDigest(this.fps[0], this.fps[1], this.nonce, this.theirNonce);
    return [this.nonce, await this.settle(digest)];
  }

  async answerFields(offer, localFp, remoteFp) {
    this.reset();
    if (!("commit" in offer) || !localFp || !remoteFp) return {};
    this.commit = checkHex(offer.commit, "commit");
    this.nonce = randomHex(32);
    this.fps = [localFp, remoteFp];
    this.keep = typeof offer.pin === "string" && this.samePair(localFp, remoteFp)
      && equalConstantTime(offer.pin, this.pinned.pin);
    return { nonce: this.nonce, keep: this.keep };
  }

  async onReveal(nonce) {
    if (this.commit === null || this.nonce === null || this.fps === null) {
      throw new SafetyCodeError("safety-reveal without a commitment in this attempt's offer");
    }
    const theirs = checkHex(nonce, "nonce");
    const ok = equalConstantTime(await commitment(theirs), this.commit);
    this.commit = null;
    if (!ok) {
      throw new SafetyCodeError(
        "the peer's safety nonce does not match the commitment in its offer: "
        + "the link may have a man in the middle; no safety code is shown");
    }
    return this.settle(await codeDigest(this.fps[1], this.fps[0], theirs, this.nonce));
  }

  async settle(digest) {
    const old = this.pinned;
    if (this.keep && old !== null) {
      this.code = old.code;
      return null;
    }
    const [localFp, remoteFp] = this.fps;
    this.pinned = { localFp, remoteFp, digest, code: codeOf(digest), pin: await pinOf(digest) };
    this.code = this.pinned.code;
    if (old === null || (old.localFp === localFp && old.remoteFp === remoteFp)) return null;
    return old;
  }
}
