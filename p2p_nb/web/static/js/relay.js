// Relay sessions (docs/protocol.md, section 5), as p2p_nb/relaykey.py and
// relay.py: when two peers have no direct path, the offerer asks the answerer
// in signaling to carry their frames through the signaling server or through
// a peer offering the `relay` service. Both ends agree on keys (X25519, then
// HKDF-SHA256, salted with the room key's relay salt in a room with a secret)
// and seal every frame (AES-256-GCM, a counter per direction), so whoever
// carries them can neither read, alter, replay, reorder nor inject one.
// This browser uses relays for its own links; it relays for nobody.

import { ProtocolError, base64ToBytes, bytesToBase64, encode, randomHex } from "./codec.js";

export const LABEL = "p2p-nb relay v1";
const COUNTER_BYTES = 8;
const SEAL_OVERHEAD = COUNTER_BYTES + 1 + 16;
const MAX_WAITING = 256;
const enc = new TextEncoder();

/** A relayed frame that fails its seal, or a relay signal that cannot be used. */
export class RelayAuthError extends Error {
  constructor(message) {
    super(message);
    this.name = "RelayAuthError";
  }
}

export function newSessionId() {
  return randomHex(16);
}

export function validSessionId(value) {
  return typeof value === "string" && /^[0-9a-f]{32}$/.test(value);
}

/** One side's ephemeral X25519 key for one session. */
export class KeyPair {
  static async generate(privateRaw = null) {
    const pair = new KeyPair();
    if (privateRaw === null) {
      const keys = await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]);
      pair.privateKey = keys.privateKey;
      pair.publicRaw = new Uint8Array(await crypto.subtle.exportKey("raw", keys.publicKey));
    } else {
      // a fixed key (the published vector): WebCrypto imports X25519 private keys as PKCS#8
      const pkcs8 = new Uint8Array([
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
        ...privateRaw,
      ]);
      pair.privateKey = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "X25519" }, true, ["deriveBits"]);
      const jwk = await crypto.subtle.exportKey("jwk", pair.privateKey);
      pair.publicRaw = base64ToBytes(jwk.x.replace(/-/g, "+").replace(/_/g, "/").padEnd(44, "="));
    }
    pair.publicB64 = bytesToBase64(pair.publicRaw);
    return pair;
  }

  async shared(peerPublicB64) {
    if (typeof peerPublicB64 !== "string" || peerPublicB64.length > 64) {
      throw new RelayAuthError("the relay signal's 'key' is not a base64 X25519 key");
    }
    try {
      const peer = await crypto.subtle.importKey("raw", base64ToBytes(peerPublicB64), { name: "X25519" }, false, []);
      return new Uint8Array(await crypto.subtle.deriveBits({ name: "X25519", public: peer }, this.privateKey, 256));
    } catch (exc) {
      throw new RelayAuthError(`the relay signal's 'key' is not an X25519 key: ${exc.message}`);
    }
  }
}

/** [offerer → answerer key, answerer → offerer key]: HKDF over the shared secret. */
export async function deriveKeys(shared, { session, offerer, answerer, via, salt = null }) {
  const info = JSON.stringify([LABEL, session, offerer, answerer, via]);
  const ikm = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveBits"]);
  const okm = new Uint8Array(await crypto.subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: salt ?? enc.encode(LABEL), info: enc.encode(info) }, ikm, 512));
  return [okm.slice(0, 32), okm.slice(32)];
}

/** Seals what we send and opens what we receive on one session. */
export class RelaySeal {
  static async agree(keys, peerPublicB64, { session, localId, peerId, via, salt = null }) {
    const [offerer, answerer] = [localId, peerId].sort();
    const [forward, backward] = await deriveKeys(await keys.shared(peerPublicB64), {
      session, offerer, answerer, via: via ?? "", salt,
    });
    const [ours, theirs] = localId === offerer ? [forward, backward] : [backward, forward];
    const seal = new RelaySeal();
    Object.assign(seal, { session, localId, peerId, nextOut: 0n, nextIn: 0n });
    seal.sendKeyBytes = ours;
    seal.recvKeyBytes = theirs;
    seal.sendKey = await crypto.subtle.importKey("raw", ours, "AES-GCM", false, ["encrypt"]);
    seal.recvKey = await crypto.subtle.importKey("raw", theirs, "AES-GCM", false, ["decrypt"]);
    return seal;
  }

  static nonce(head) {
    const nonce = new Uint8Array(12);
    nonce.set(head, 4);
    return nonce;
  }

  /** counter ‖ AES-GCM(kind ‖ frame); call in order (the counter is taken at once). */
  async seal(data) {
    const counter = this.nextOut;
    this.nextOut += 1n;
    const body = typeof data === "string" ? enc.encode(data) : new Uint8Array(data);
    const plain = new Uint8Array(1 + body.length);
    plain[0] = typeof data === "string" ? 0 : 1;
    plain.set(body, 1);
    const head = new Uint8Array(COUNTER_BYTES);
    new DataView(head.buffer).setBigUint64(0, counter, false);
    const sealed = new Uint8Array(await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: RelaySeal.nonce(head), additionalData: enc.encode(`${LABEL}|${this.localId}|${this.peerId}`) },
      this.sendKey, plain));
    const frame = new Uint8Array(COUNTER_BYTES + sealed.length);
    frame.set(head);
    frame.set(sealed, COUNTER_BYTES);
    return frame;
  }

  /** The text (string) or binary (ArrayBuffer) frame inside, or RelayAuthError. */
  async open(frame) {
    const bytes = frame instanceof Uint8Array ? frame : new Uint8Array(frame);
    if (bytes.length < SEAL_OVERHEAD) throw new RelayAuthError(`relayed frame from ${this.peerId} is not sealed`);
    const head = bytes.slice(0, COUNTER_BYTES);
    const counter = new DataView(head.buffer).getBigUint64(0, false);
    if (counter < this.nextIn) {
      throw new RelayAuthError(`relayed frame ${counter} from ${this.peerId} replayed or reordered`);
    }
    let plain;
    try {
      plain = new Uint8Array(await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: RelaySeal.nonce(head), additionalData: enc.encode(`${LABEL}|${this.peerId}|${this.localId}`) },
        this.recvKey, bytes.subarray(COUNTER_BYTES)));
    } catch {
      throw new RelayAuthError(`relayed frame ${counter} from ${this.peerId} failed authentication (altered or forged on the way)`);
    }
    if (counter < this.nextIn) throw new RelayAuthError(`relayed frame ${counter} from ${this.peerId} replayed`);
    this.nextIn = counter + 1n;
    if (plain[0] === 0) {
      try {
        return new TextDecoder("utf-8", { fatal: true }).decode(plain.subarray(1));
      } catch {
        throw new RelayAuthError("sealed text frame is not UTF-8");
      }
    }
    if (plain[0] === 1) return plain.slice(1).buffer;
    throw new RelayAuthError(`sealed frame of unknown kind ${plain[0]}`);
  }
}

/** Stands in for a data channel on a relayed link: what is sent is sealed and
 * handed, in order, to the route (the signaling server, acknowledged frame by
 * frame, or the direct link to the relaying peer); what arrives is opened in
 * order. Same surface as RTCDataChannel where PeerLink uses it. */
export class RelayChannel {
  constructor(link, via, keys, seal = null) {
    this.link = link;
    this.via = via; // null: the signaling server
    this.keys = keys;
    this.seal = seal;
    this.session = null;
    this.readyState = seal !== null ? "open" : "connecting";
    this.bufferedAmount = 0;
    this.outChain = Promise.resolve();
    this.inChain = Promise.resolve();
    this.waiting = []; // sealed frames that arrived before the keys
    this.closed = false;
    this.reported = false;
  }

  async agree(peerPublicB64, session, salt) {
    this.seal = await RelaySeal.agree(this.keys, peerPublicB64, {
      session, localId: this.link.client.peerId, peerId: this.link.peerId, via: this.via, salt,
    });
    this.readyState = "open";
    const waiting = this.waiting;
    this.waiting = [];
    for (const frame of waiting) this.receive(frame);
  }

  send(data) {
    if (this.closed) throw new Error("relay session closed");
    const size = typeof data === "string" ? data.length : data.byteLength;
    this.bufferedAmount += size;
    const seal = this.seal;
    this.outChain = this.outChain.then(async () => {
      if (this.closed) return;
      const frame = await seal.seal(data);
      await this.hand(frame);
    }).catch((exc) => {
      if (!this.closed) this.link.attemptFailed(this.link.generation, `relay route failed: ${exc.message}`);
    }).finally(() => {
      this.bufferedAmount -= size;
      this.link.notify();
    });
  }

  async hand(frame) {
    const client = this.link.client;
    if (this.via === null) {
      await client.call("relay", { to: this.link.peerId, data: frame });
      return;
    }
    const relay = client.links.get(this.via);
    if (relay === undefined || !relay.isOpen() || relay.transport !== "direct") {
      throw new Error(`relay peer ${this.via} is not connected`);
    }
    while (relay.channel.bufferedAmount > 1024 * 1024) await relay.waitWritable(1024 * 1024);
    relay.channel.send(encode("relay-frame", { to: this.link.peerId, binary: true, data: bytesToBase64(frame) }));
  }

  receive(frame) {
    if (this.closed) return;
    if (this.seal === null) {
      if (this.waiting.length < MAX_WAITING) this.waiting.push(frame);
      return;
    }
    const seal = this.seal;
    this.inChain = this.inChain.then(async () => {
      if (this.closed) return;
      const data = await seal.open(frame);
      this.link.onMessage(data, this.via ?? "");
    }).catch((exc) => {
      if (exc instanceof RelayAuthError && !this.reported) {
        this.reported = true; // once per session
        this.link.client.reportError(this.link.peerId, exc);
      } else if (!(exc instanceof RelayAuthError)) {
        this.link.client.reportError(this.link.peerId, exc);
      }
    });
  }

  close() {
    this.closed = true;
    this.readyState = "closed";
  }
}

export function checkRelayData(data) {
  if (!(data instanceof ArrayBuffer) && !(data instanceof Uint8Array)) {
    throw new ProtocolError("a relayed frame must be binary (sealed)");
  }
  return data instanceof Uint8Array ? data : new Uint8Array(data);
}
