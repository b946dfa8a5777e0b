// A browser peer: one room membership over the p2p-nb signaling service
// (docs/protocol.md, section 1), its links (peer.js), chat and file transfers.
// No DOM: the page (ui.js) listens to its events and calls its methods.
//
// Events (CustomEvent, data in `detail`): "peers" (the roster or a link
// changed), "chat" (a message, ours or another's), "transfer" (a transfer
// changed; {transfer}), "offer" ({transfer}: someone offers a file),
// "received" ({transfer, blob, name}), "error" ({peerId, error}), "status"
// ({state, reason}: "connecting", "joined", "left", "disconnected", and "revoked":
// the server put us out for good, its invite revoked or expired (`reason` the
// words for the user, `code` "revoked", "expired" or "ended"); nothing follows),
// "presence" ({peerId, name, what}: "joined" or "left", for peers that came
// or went while we were in the room), "rekeyed" ({epoch, by, out, secret}: we
// adopted a member's re-key of the room, rekey.js; the page keeps `secret` for
// the tab if it kept the one before).

import { io } from "../vendor/socket.io-client/socket.io.esm.min.js";
import { sha256 } from "../vendor/noble-hashes/sha2.js";
import {
  CHUNK_SIZE, DEFAULT_CAPABILITIES, MAX_TEXT_CHARS, ProtocolError, bytesToHex, codePoints,
  decodeChunk, encode, encodeChunk, newTransferId, normaliseCapabilities, randomHex,
} from "./codec.js";
import { PeerLink, OPEN_STATES } from "./peer.js";
import { RoomKey, RoomSecretError } from "./roomkey.js";
import { REKEY_TYPE, Rekeying } from "./rekey.js";
import { NameProblem, cleanName, nameKey } from "./names.js";
import { ACK_EVERY, HIGH_WATER, TransferState, offerRefusal } from "./transfer.js";

export const MAX_HISTORY = 2000;
const READ_BLOCK = 4 * 1024 * 1024;
const BLOB_EVERY = 8 * 1024 * 1024;
const PING_INTERVAL = 2000;
const MAX_FINISHED = 500;
/** How long after a transfer ended its chunks still in flight are dropped
 * without a word (the sender stops when our cancel reaches it). */
const LATE_CHUNKS_MS = 30000;
/** `session_ended` reasons (docs/protocol.md, section 7) and what the user is told. */
const SESSION_ENDED = Object.freeze({
  __proto__: null,
  revoked: "your invite was revoked by the member who made it",
  expired: "your invite expired",
  ended: "the signaling server ended the session",
});
const OWED_TIMEOUT = 60000; // ms the messages owed to peers of our previous id wait for them

/** A refusal from the signaling server: `code` as in docs/protocol.md. */
export class SignalingError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "SignalingError";
    this.code = code;
  }
}

export class P2PClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.socketPath  e.g. "/p2p/socket.io/"
   * @param {string|null} options.token  the standalone token or an invite (Socket.IO auth payload)
   * @param {object} options.query  extra query parameters of the WebSocket (Jupyter: token or invite)
   */
  constructor({ url = location.origin, socketPath, token = null, query = {} }) {
    super();
    this.url = url;
    this.socketPath = socketPath;
    this.token = token;
    this.query = query;
    this.socket = null;
    this.peerId = null;
    this.room = null;
    this.name = null;
    this.roomKey = null;
    this.rekeying = null; // in a room with a secret: its epochs (rekey.js)
    this.iceServers = [];
    this.certificate = null;
    this.links = new Map();
    this.messages = [];
    this.transfers = new Map();
    this.seq = 0;
    this.closing = false;
    this.held = null;
    this.resume = null;
    this.capabilities = {
      ...structuredClone(DEFAULT_CAPABILITIES),
      services: ["messaging", "file_transfer", "browser"],
    };
    this.pinger = null;
    this.rejoined = 0;
    this.owed = new Map(); // certificate fingerprint → what our previous id's link owed that peer
    this.owedTimer = null;
  }

  emitEvent(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  log(text) {
    console.info(`p2p-nb: ${text}`);
  }

  reportError(peerId, error) {
    console.warn("p2p-nb:", peerId, error);
    this.emitEvent("error", { peerId, error });
  }

  // ------------------------------------------------------------ signaling
  /** Open the Socket.IO connection; resolves once connected, rejects if refused. */
  connect() {
    this.emitEvent("status", { state: "connecting" });
    const socket = io(this.url, {
      path: this.socketPath,
      transports: ["websocket"],
      auth: this.token ? { token: this.token } : {},
      query: this.query,
      reconnectionDelayMax: 5000,
    });
    this.socket = socket;
    socket.on("peer_joined", (p) => this.hold(() => this.onPeerJoined(p)));
    socket.on("peer_updated", (p) => this.hold(() => this.onPeerUpdated(p)));
    socket.on("peer_left", (p) => this.hold(() => this.onPeerLeft(p)));
    socket.on("signal", (s) => this.hold(() => this.onSignal(s)));
    socket.on("relay", (r) => this.hold(() => this.relayedIn(null, r?.from, r?.data)));
    // every request goes with an ack that carries the same refusal: reported there, once
    socket.on("error", (e) => this.log(`${e?.event} refused: ${e?.code}: ${e?.message}`));
    socket.on("probe", (_data, ack) => ack?.({ ok: true }));
    socket.on("session_ended", (e) => this.ended(e));
    // The server is stopping; it closes our transport next and Socket.IO
    // reconnects (to the restarted server) by itself.
    socket.on("server_shutdown", () => this.log("the signaling server is shutting down; reconnecting"));
    socket.on("resume_attempt", () => this.reportError(null, new Error("someone with your credentials tried to take your place in the room")));
    socket.on("disconnect", (reason) => {
      if (!this.closing) this.emitEvent("status", { state: "disconnected", reason });
    });
    socket.io.on("reconnect", () => this.rejoin());
    return new Promise((resolve, reject) => {
      socket.once("connect", () => resolve());
      socket.once("connect_error", (err) => {
        if (!socket.connected && this.peerId === null) {
          socket.disconnect();
          reject(new SignalingError("unauthorized", err.message));
        }
      });
    });
  }

  async call(event, payload, timeout = 10000) {
    const reply = await this.socket.timeout(timeout).emitWithAck(event, payload);
    if (!reply || reply.ok !== true) {
      const error = reply?.error ?? {};
      throw new SignalingError(error.code ?? "invalid", error.message ?? `${event} refused`);
    }
    return reply;
  }

  /** Run a server event's handler now, or after the join reply if one is awaited
   * (others may announce themselves or offer before it); errors are reported. */
  hold(fn) {
    const run = () => {
      try {
        Promise.resolve(fn()).catch((exc) => this.reportError(null, exc));
      } catch (exc) {
        this.reportError(null, exc);
      }
    };
    if (this.held !== null) this.held.push(run);
    else run();
  }

  /** Join `room` as `name`; with `secret`, the room's secret (never sent anywhere). */
  async join(room, name, secret = null) {
    if (this.certificate === null) {
      this.certificate = await RTCPeerConnection.generateCertificate({ name: "ECDSA", namedCurve: "P-256" });
    }
    const key = secret ? await RoomKey.derive(room, secret) : null;
    this.rekeying = key !== null ? new Rekeying(this, key, secret) : null;
    this.roomKey = this.rekeying?.key ?? null; // the current epoch's key
    await this.enter(room, name);
  }

  /** Into `room` under a new peer id (the first join, or a rejoin afresh). */
  async enter(room, name) {
    this.held = [];
    try {
      const pseudonym = `member-${randomHex(4)}`;
      const reply = await this.call("join", {
        room,
        name: this.roomKey ? pseudonym : name,
        capabilities: this.roomKey ? {} : this.capabilities,
        resumable: true,
      });
      this.peerId = reply.peer_id;
      this.room = reply.room;
      this.name = this.roomKey ? name : reply.name;
      this.resume = { peer_id: reply.peer_id, secret: reply.resume_secret };
      this.serverRelays = reply.relay === true;
      this.iceServers = (reply.ice_servers ?? []).map((s) => ({
        urls: s.urls, username: s.username, credential: s.credential,
      }));
      if (this.roomKey) await this.sendProfile();
      for (const p of reply.peers ?? []) await this.onPeerJoined(p, true);
    } finally {
      const held = this.held ?? [];
      this.held = null;
      for (const fn of held) fn();
    }
    clearInterval(this.pinger);
    this.pinger = setInterval(() => {
      const now = performance.now();
      for (const link of this.links.values()) link.tick(now);
    }, PING_INTERVAL);
    this.emitEvent("status", { state: "joined" });
    this.emitEvent("peers");
  }

  async sendProfile() {
    const sealed = await this.roomKey.sealProfile(this.peerId, this.name, this.capabilities);
    await this.call("update", { capabilities: sealed });
  }

  /** After a dropped signaling connection: take our slot back (resume), keeping every link. */
  async rejoin() {
    if (this.room === null || this.closing) return;
    try {
      await this.call("join", {
        room: this.room,
        name: this.roomKey ? `member-${randomHex(4)}` : this.name,
        capabilities: this.roomKey ? {} : this.capabilities,
        resumable: true,
        resume: this.resume,
      });
      if (this.roomKey) await this.sendProfile();
      this.rejoined += 1;
      this.emitEvent("status", { state: "joined" });
    } catch (exc) {
      if (exc.code === "invalid_resume" && !this.closing) {
        await this.rejoinAfresh();
        return;
      }
      this.reportError(null, new SignalingError(exc.code, `could not rejoin the room: ${exc.message}; leave and join again`));
    }
  }

  /** The server no longer knows our id (it restarted with another resume
   * key): as the Python client does, close every link and join again under a
   * new id; the others do the same and the links are made again. */
  async rejoinAfresh() {
    this.log("resume refused (the signaling server restarted?): joining again under a new id");
    const room = this.room;
    await Promise.all([...this.links.values()].map((l) => l.settle().catch(() => {})));
    for (const link of this.links.values()) {
      // chat not acknowledged goes again to the same person (by certificate,
      // never by name) once a link to its new id opens
      if (link.remoteFingerprint !== null) {
        const earlier = this.owed.get(link.remoteFingerprint)?.frames ?? [];
        this.owed.set(link.remoteFingerprint, {
          name: link.name, lastSeqIn: link.lastSeqIn, frames: [...earlier, ...link.unacked],
        });
      }
      link.close();
    }
    this.links.clear();
    clearTimeout(this.owedTimer);
    this.owedTimer = setTimeout(() => this.giveUpOwed(), OWED_TIMEOUT);
    for (const t of this.transfers.values()) {
      if (!t.finished) this.fail(t, "cancelled", "the room was joined again under a new id", false);
    }
    this.emitEvent("peers");
    try {
      await this.enter(room, this.name);
      this.rejoined += 1;
    } catch (exc) {
      this.reportError(null, new SignalingError(exc.code, `could not rejoin the room: ${exc.message}; leave and join again`));
    }
  }

  claimOwed(fingerprint) {
    const owed = this.owed.get(fingerprint);
    this.owed.delete(fingerprint);
    return owed;
  }

  /** Peers not back under a new id in time: their messages may be lost. */
  giveUpOwed() {
    for (const owed of this.owed.values()) {
      if (owed.frames.length) {
        this.reportError(null, new Error(`${owed.frames.length} messages to ${owed.name} may not have arrived (not back after the server restart)`));
      }
    }
    this.owed.clear();
  }

  /** A peer's name and capabilities, opened from its sealed profile in a room
   * with a secret. `known`: whether they say who the peer is (false while a
   * sealed profile has not come, or does not open with our secret:
   * `mismatch`). A name from a profile passes the rules the server applies to
   * names it sees (names.js): no controls, bidi or zero-width characters, not
   * another member's. */
  async unseal(peer) {
    let name = typeof peer.name === "string" ? peer.name : String(peer.peer_id);
    let caps = peer.capabilities;
    const sealed = caps !== null && typeof caps === "object" && "sealed" in caps;
    let known = !sealed;
    let mismatch = false;
    const link = this.links.get(peer.peer_id);
    if (link !== undefined && sealed) [link.sealed, link.pseudonym] = [caps, name];
    if (this.roomKey !== null) {
      known = false;
      try {
        const opened = await this.roomKey.openProfile(peer.peer_id, caps);
        if (opened !== null) {
          [name, caps] = opened;
          known = true;
          name = this.profileName(peer.peer_id, name);
        } else if (caps !== null && typeof caps === "object" && Object.keys(caps).length > 0) {
          mismatch = true; // a profile, in the clear, in a room with a secret: the peer has none
          known = true; // what it says of itself, unauthenticated (the row says so)
        }
      } catch (exc) {
        if (!(exc instanceof RoomSecretError)) throw exc;
        this.log(`profile of ${peer.peer_id}: ${exc.message}`);
        if (link?.profileKnown && !link.secretMismatch) {
          // a member re-sealed with a key we do not have yet (its `rekey` is
          // on its way) or with the one before ours: it keeps what we show,
          // and the profile is opened again when we adopt (rekeyed)
          return { name: link.name, caps: link.capabilities, known: true, mismatch: false };
        }
        mismatch = true;
        caps = {};
      }
    } else if (sealed) {
      mismatch = true; // the room has a secret we were not given
      caps = {};
    }
    if (!known || mismatch) name = typeof peer.name === "string" ? peer.name : String(peer.peer_id);
    return { name: [...name].slice(0, 64).join(""), caps: normaliseCapabilities(caps), known, mismatch };
  }

  /** The name a sealed profile holds, if the room's name rules allow it;
   * else the peer's id with why (the server cannot check names it never sees). */
  profileName(peerId, name) {
    let cleaned;
    try {
      cleaned = cleanName(name);
      if (cleaned === "") throw new NameProblem("invalid_name", "an empty name");
    } catch (exc) {
      if (!(exc instanceof NameProblem)) throw exc;
      this.log(`name in the profile of ${peerId} refused: ${exc.message}`);
      return `${peerId} (name refused)`;
    }
    const key = nameKey(cleaned);
    const taken = (this.name !== null && nameKey(this.name) === key)
      || [...this.links.values()].some((l) => l.peerId !== peerId && l.profileKnown && nameKey(l.name) === key);
    return taken ? `${cleaned} (${peerId.slice(0, 8)}, name already in use)` : cleaned;
  }

  /** Apply what unseal() found to `link`, and say "joined" once it is known. */
  applyProfile(link, { name, caps, known, mismatch }) {
    link.name = name;
    link.capabilities = caps;
    link.profileKnown = known || link.profileKnown === true;
    if (mismatch) link.secretMismatch = true;
    if (link.presence === "pending" && link.profileKnown && !link.secretMismatch) {
      link.presence = "announced";
      this.emitEvent("presence", { peerId: link.peerId, name: link.name, what: "joined" });
    }
  }

  async onPeerJoined(peer, initial = false) {
    if (typeof peer?.peer_id !== "string" || peer.peer_id === this.peerId) return;
    if (this.links.has(peer.peer_id)) {
      await this.onPeerUpdated(peer);
      return;
    }
    const link = new PeerLink(this, peer.peer_id, String(peer.name ?? peer.peer_id).slice(0, 64), normaliseCapabilities({}));
    link.profileKnown = false;
    link.presence = initial || peer.resumed === true ? "here" : "pending";
    // in its grace period (the join reply says so): away until its link opens or it leaves
    if (initial && peer.away === true) link.away = true;
    this.links.set(peer.peer_id, link);
    link.start();
    this.applyProfile(link, await this.unseal(peer));
    this.emitEvent("peers");
  }

  /** A re-key left `peerId` out: its link closes and it leaves our view. */
  dropMember(peerId) {
    this.onPeerLeft({ peer_id: peerId });
  }

  /** We adopted a re-key (rekey.js): the profiles already sealed with its key
   * open now (one that opens only with the key before it keeps what we show
   * until its owner re-seals it), and ours goes out sealed with it. */
  async rekeyed(rekey) {
    this.log(`room re-keyed: epoch ${rekey.epoch} by ${rekey.by}, out: ${rekey.out.join(", ") || "nobody"}`);
    for (const link of [...this.links.values()]) {
      if (link.sealed === undefined) continue;
      const caps = link.sealed;
      try {
        if (await this.roomKey.openProfile(link.peerId, caps) !== null) {
          this.applyProfile(link, await this.unseal({ peer_id: link.peerId, name: link.pseudonym, capabilities: caps }));
        }
      } catch (exc) {
        if (!(exc instanceof RoomSecretError)) throw exc;
        if (!(await this.roomKey.sealedBefore(link.peerId, caps))) {
          this.reportError(link.peerId, new RoomSecretError(`the profile of ${link.peerId} does not open with the room's key`));
        }
      }
    }
    this.emitEvent("rekeyed", { epoch: rekey.epoch, by: rekey.by, out: rekey.out, secret: rekey.secret });
    this.emitEvent("peers");
    await this.sendProfile();
  }

  async onPeerUpdated(peer) {
    const link = this.links.get(peer?.peer_id);
    if (link === undefined) return;
    this.applyProfile(link, await this.unseal(peer));
    link.away = false;
    this.emitEvent("peers");
  }

  onPeerLeft(peer) {
    const link = this.links.get(peer?.peer_id);
    if (link === undefined) return;
    this.links.delete(peer.peer_id);
    link.close();
    if ((link.presence === "here" || link.presence === "announced") && !link.secretMismatch) {
      this.emitEvent("presence", { peerId: link.peerId, name: link.name, what: "left" });
    }
    for (const t of this.transfers.values()) {
      if (t.peerId === link.peerId) this.fail(t, "cancelled", `${link.name} left`, false);
    }
    this.emitEvent("peers");
  }

  onSignal(signal) {
    const from = signal?.from;
    if (typeof from !== "string" || typeof signal.type !== "string") return;
    let link = this.links.get(from);
    if (link === undefined) {
      link = new PeerLink(this, from, from, normaliseCapabilities({}));
      this.links.set(from, link);
    }
    link.enqueue(signal);
  }

  async sendSignal(to, payload) {
    await this.call("signal", { to, ...payload });
  }

  /** An offer or answer: in a room with a secret, with its authenticator. */
  async sendDescription(to, signal) {
    const out = { ...signal };
    if (this.roomKey !== null) out.auth = await this.roomKey.authenticate(this.peerId, to, out);
    await this.sendSignal(to, out);
  }

  /** Where to relay our link to `peerId`: the smallest id among peers offering
   * `relay` with a direct link to us and (by their report) to it; else null
   * (the signaling server) if it relays; else undefined (nowhere). */
  relayRoute(peerId) {
    const candidates = [...this.links.values()].filter((r) => r.peerId !== peerId
      && r.capabilities?.services?.includes("relay") && r.state === "connected"
      && r.transport === "direct" && r.report?.[peerId] === "connected").map((r) => r.peerId);
    if (candidates.length) return candidates.sort()[0];
    return this.serverRelays ? null : undefined;
  }

  /** A sealed frame `via` relayed for `sender` (via null: the signaling server). */
  relayedIn(via, sender, data) {
    const link = this.links.get(sender);
    if (typeof sender !== "string" || link === undefined || link.state === "closed"
        || sender === via || sender === this.peerId) {
      this.log(`frame relayed by ${via ?? "the signaling server"} for ${sender} dropped`);
      return;
    }
    link.relayedIn(via, data);
  }

  linkChanged(link, old) {
    if (old === "connected" && link.state !== "connected") {
      for (const other of this.links.values()) other.relayLost(link.peerId);
    }
    if (OPEN_STATES.has(link.state) && !OPEN_STATES.has(old)) {
      this.resumeTransfers(link);
      this.rekeying?.onLinkOpen(link.peerId); // a member back may lack our epoch
    }
    if (link.state === "lost") {
      for (const t of this.transfers.values()) {
        if (t.peerId === link.peerId) this.fail(t, "failed", `the link to ${link.name} is lost`, false);
      }
    }
    this.emitEvent("peers");
  }

  meshReport() {
    return Object.fromEntries([...this.links].map(([id, link]) => [id, link.state]));
  }

  peers() {
    return [...this.links.values()];
  }

  // ------------------------------------------------------------------ chat
  /** Send a chat message to everyone, or only to the peer `to`. */
  sendChat(text, to = null) {
    if (typeof text !== "string" || codePoints(text) > MAX_TEXT_CHARS) {
      throw new RangeError(`a message has at most ${MAX_TEXT_CHARS} characters; share long text as a file`);
    }
    const seq = ++this.seq;
    const msg = { id: randomHex(8), seq, ts: Date.now() / 1000, text, to };
    const wire = encode("chat", msg);
    const targets = to !== null ? [this.links.get(to)].filter(Boolean) : this.reachable();
    for (const link of targets) {
      try {
        link.send(wire, seq);
      } catch (exc) {
        this.reportError(link.peerId, exc);
      }
    }
    if (to === null) for (const owed of this.owed.values()) owed.frames.push([seq, wire]); // not back yet
    this.remember({ ...msg, sender: this.peerId, senderName: this.name, own: true });
  }

  reachable() {
    return [...this.links.values()].filter((l) => !["closed", "lost", "limited"].includes(l.state));
  }

  remember(message) {
    this.messages.push(message);
    if (this.messages.length > MAX_HISTORY) this.messages.splice(0, this.messages.length - MAX_HISTORY);
    this.emitEvent("chat", { message });
  }

  onControl(link, msg) {
    if (msg.type === "chat") {
      if (msg.to !== null && msg.to !== this.peerId) return;
      this.remember({ ...msg, sender: link.peerId, senderName: link.name, own: false });
    } else if (msg.type === "capabilities") {
      if (msg.caps.rev >= (link.capabilities?.rev ?? 0)) link.capabilities = msg.caps;
      this.emitEvent("peers");
    } else if (msg.type === "file-offer") {
      this.onOffer(link, msg);
    } else if (msg.type.startsWith("file-")) {
      this.onFileControl(link, msg);
    } else if (msg.unknown && msg.type === REKEY_TYPE && this.rekeying !== null) {
      this.rekeying.onMessage(link.peerId, msg.payload);
    } else if (msg.unknown) {
      this.log(`message of type ${JSON.stringify(msg.type)} from ${link.name} ignored`);
    }
  }

  // ----------------------------------------------------------------- files
  /** Offer `files` (File objects) to everyone, or to the peer `to`. Hashes each file
   * first (the offer carries its SHA-256), reading it in blocks: never all of it at once. */
  async shareFiles(files, to = null) {
    for (const file of files) {
      const targets = to !== null ? [this.links.get(to)].filter(Boolean) : this.reachable();
      if (targets.length === 0) throw new Error("nobody to send to: no peer is connected");
      const hashing = targets.map((link) => {
        const t = new TransferState({
          id: newTransferId(), direction: "out", peerId: link.peerId, name: file.name, size: file.size,
        });
        t.state = "hashing";
        t.file = file;
        t.peerName = link.name;
        this.track(t);
        return t;
      });
      const digest = await this.hashFile(file, (done) => {
        for (const t of hashing) {
          t.bytes = done;
          this.emitEvent("transfer", { transfer: t });
        }
      });
      for (const t of hashing) {
        if (t.finished) continue;
        t.sha256 = digest;
        t.state = "offered";
        t.bytes = 0;
        this.sendOffer(t, false);
        this.emitEvent("transfer", { transfer: t });
      }
    }
  }

  async hashFile(file, progress) {
    const hash = sha256.create();
    for (let at = 0; at < file.size; at += READ_BLOCK) {
      hash.update(new Uint8Array(await file.slice(at, at + READ_BLOCK).arrayBuffer()));
      progress(Math.min(file.size, at + READ_BLOCK));
    }
    return bytesToHex(hash.digest());
  }

  sendOffer(t, resume) {
    const link = this.links.get(t.peerId);
    if (link === undefined) return;
    link.send(encode("file-offer", {
      id: t.id, name: t.name, size: t.size, sha256: t.sha256, kind: t.kind, meta: t.meta, resume,
    }));
  }

  track(t) {
    this.transfers.set(t.id, t);
    const finished = [...this.transfers.values()].filter((x) => x.finished);
    for (const old of finished.slice(0, Math.max(0, finished.length - MAX_FINISHED))) this.transfers.delete(old.id);
    this.emitEvent("transfer", { transfer: t });
  }

  sendControl(t, type, fields = {}) {
    const link = this.links.get(t.peerId);
    if (link === undefined) return;
    try {
      link.send(encode(type, { id: t.id, offset: 0, reason: "", ...fields }));
    } catch (exc) {
      this.log(`${type} for ${t.id} not sent: ${exc.message}`);
    }
  }

  onOffer(link, offer) {
    const existing = this.transfers.get(offer.id);
    if (existing !== undefined && existing.peerId === link.peerId && existing.direction === "in") {
      if (existing.finished) {
        const kind = { done: "file-done", declined: "file-decline" }[existing.state] ?? "file-cancel";
        this.sendControl(existing, kind, { offset: existing.bytes, reason: existing.reason });
      } else if (existing.state === "receiving") {
        this.sendControl(existing, "file-accept", { offset: existing.bytes }); // a resume
      }
      return;
    }
    if (existing !== undefined) {
      this.reportError(link.peerId, new ProtocolError(`duplicate transfer id ${offer.id}`));
      return;
    }
    const t = new TransferState({ ...offer, direction: "in", peerId: link.peerId });
    t.peerName = link.name;
    if (offer.resume) {
      this.sendControl(t, "file-cancel", { reason: "unknown transfer" });
      return;
    }
    const refusal = offerRefusal(this.transfers.values(), link.peerId, offer.size);
    if (refusal !== null) {
      // not shown, not kept: a flood of offers costs the page nothing
      t.finish("declined", refusal);
      this.sendControl(t, "file-decline", { reason: refusal });
      this.log(`offer of ${JSON.stringify(offer.name.slice(0, 64))} from ${link.name} declined: ${refusal}`);
      return;
    }
    this.track(t);
    this.emitEvent("offer", { transfer: t });
  }

  /** Accept an offer. With `sink` (a FileSystemWritableFileStream: the user
   * chose where to save), chunks are written to disk as they arrive and
   * acknowledged once written, so memory holds at most the sender's window;
   * without it they are kept in Blobs and handed over as a download at the end. */
  accept(id, sink = null) {
    const t = this.transfers.get(id);
    if (t === undefined || !t.accept()) {
      sink?.abort().catch(() => {});
      return;
    }
    t.hash = sha256.create();
    t.sink = sink;
    t.written = 0;
    t.writing = Promise.resolve();
    t.parts = [];
    t.partBytes = 0;
    t.blobs = [];
    this.sendControl(t, "file-accept", { offset: 0 });
    this.emitEvent("transfer", { transfer: t });
  }

  decline(id, reason = "declined") {
    const t = this.transfers.get(id);
    if (t === undefined || t.direction !== "in" || t.state !== "offered") return;
    t.finish("declined", reason);
    this.sendControl(t, "file-decline", { reason });
    this.emitEvent("transfer", { transfer: t });
  }

  cancel(id, reason = "cancelled") {
    const t = this.transfers.get(id);
    if (t === undefined || t.finished) return;
    this.fail(t, "cancelled", reason, true);
  }

  fail(t, state, reason, notify) {
    if (!t.finish(state, reason)) return;
    t.endedAt = performance.now();
    if (notify) this.sendControl(t, "file-cancel", { reason });
    t.sink?.abort().catch(() => {}); // nothing half-written keeps the chosen name
    t.sink = null;
    t.parts = t.blobs = t.hash = null;
    t.wake?.();
    this.emitEvent("transfer", { transfer: t });
  }

  onBinary(link, data) {
    let chunk;
    try {
      chunk = decodeChunk(data);
    } catch (exc) {
      this.reportError(link.peerId, exc);
      return;
    }
    const t = this.transfers.get(chunk.id);
    if (t !== undefined && t.direction === "in" && t.peerId === link.peerId && t.finished
        && performance.now() - (t.endedAt ?? 0) < LATE_CHUNKS_MS) {
      return; // sent before our cancel (or its failure) reached the sender: expected
    }
    if (t === undefined || t.direction !== "in" || t.peerId !== link.peerId || t.state !== "receiving") {
      this.reportError(link.peerId, new ProtocolError(`a chunk for no transfer in progress (${chunk.id})`));
      return;
    }
    let outcome;
    try {
      outcome = t.onChunk(chunk.offset, chunk.payload.byteLength);
    } catch (exc) {
      this.fail(t, "failed", exc.message, true);
      return;
    }
    if (outcome !== "take") return;
    t.hash.update(chunk.payload);
    if (t.sink) {
      this.writeToDisk(t, chunk.payload);
    } else {
      t.parts.push(chunk.payload);
      t.partBytes += chunk.payload.byteLength;
      if (t.partBytes >= BLOB_EVERY) this.flushParts(t);
      if (t.ackDue()) this.sendControl(t, "file-ack", { offset: t.acknowledged() });
    }
    this.progress(t);
  }

  /** Writes go one after another; a file-ack says what is on disk (docs/protocol.md, section 4). */
  writeToDisk(t, data) {
    const sink = t.sink;
    t.writing = t.writing.then(async () => {
      if (t.finished || t.sink !== sink) return;
      await sink.write(data);
      t.written += data.byteLength;
      if (t.written - t.acked >= ACK_EVERY || t.written === t.size) {
        t.acked = t.written;
        this.sendControl(t, "file-ack", { offset: t.written });
      }
    }).catch((exc) => this.fail(t, "failed", `cannot write: ${exc.message}`, true));
  }

  /** Received bytes go into a Blob every few MiB: the browser keeps blob data
   * out of the page's heap (on disk when it is large), and the arrays go. */
  flushParts(t) {
    if (t.parts.length) t.blobs.push(new Blob(t.parts));
    t.parts = [];
    t.partBytes = 0;
  }

  progress(t) {
    const now = performance.now();
    if (t.lastShown !== undefined && now - t.lastShown < 100 && t.bytes < t.size) return;
    t.lastShown = now;
    this.emitEvent("transfer", { transfer: t });
  }

  onFileControl(link, msg) {
    const t = this.transfers.get(msg.id);
    if (t === undefined || t.peerId !== link.peerId) {
      this.log(`${msg.type} for an unknown transfer from ${link.name}`);
      return;
    }
    if (msg.type === "file-cancel" || msg.type === "file-decline") {
      this.fail(t, msg.type === "file-decline" ? "declined" : "cancelled", msg.reason || msg.type, false);
      return;
    }
    if (t.direction === "out") {
      if (msg.type === "file-accept") {
        try {
          if (!t.onAccept(msg.offset)) return;
        } catch (exc) {
          this.fail(t, "failed", exc.message, true);
          return;
        }
        t.loop = (t.loop ?? 0) + 1;
        this.sendLoop(t, t.loop).catch((exc) => this.fail(t, "failed", exc.message, true));
      } else if (msg.type === "file-ack") {
        t.onAck(msg.offset);
        t.wake?.();
        this.progress(t);
      } else if (msg.type === "file-done") {
        t.acked = t.bytes = t.size;
        t.finish("done");
        t.file = null;
        this.emitEvent("transfer", { transfer: t });
      }
    } else if (msg.type === "file-complete" && t.state === "receiving") {
      this.completeIncoming(t).catch((exc) => this.fail(t, "failed", exc.message, true));
    }
  }

  async sendLoop(t, loop) {
    const link = this.links.get(t.peerId);
    let pos = t.bytes;
    while (pos < t.size || t.size === 0) {
      if (t.size === 0) break;
      const block = new Uint8Array(await t.file.slice(pos, Math.min(t.size, pos + READ_BLOCK)).arrayBuffer());
      for (let at = 0; at < block.length; at += CHUNK_SIZE) {
        for (;;) {
          if (t.finished || t.loop !== loop) return;
          await link.waitWritable(HIGH_WATER);
          if (t.windowOpen(link.rtt)) break;
          await new Promise((resolve) => { t.wake = resolve; });
        }
        if (t.finished || t.loop !== loop) return;
        const payload = block.subarray(at, at + CHUNK_SIZE);
        link.channel.send(encodeChunk(t.id, pos, payload));
        pos += payload.length;
        t.sent(payload.length);
        this.progress(t);
      }
    }
    if (t.finished || t.loop !== loop) return;
    await link.waitWritable(HIGH_WATER);
    this.sendControl(t, "file-complete", { offset: t.size });
    t.state = "verifying";
    this.emitEvent("transfer", { transfer: t });
  }

  /** A link back after a failure: offers go again (resume: true if accepted). */
  resumeTransfers(link) {
    for (const t of this.transfers.values()) {
      if (t.peerId !== link.peerId || t.direction !== "out" || t.finished || t.state === "hashing") continue;
      if (t.state === "offered") continue; // the outbox carried it, or it is still on its way
      t.loop = (t.loop ?? 0) + 1; // the running loop stops; file-accept starts the next
      this.sendOffer(t, true);
    }
  }

  async completeIncoming(t) {
    if (t.bytes !== t.size) {
      this.fail(t, "failed", `file-complete after ${t.bytes} of ${t.size} bytes`, true);
      return;
    }
    if (t.completing) return; // a repeated file-complete after a resume
    t.completing = true;
    const digest = bytesToHex(t.hash.digest());
    if (digest !== t.sha256) {
      this.fail(t, "failed", "SHA-256 mismatch", true);
      return;
    }
    if (t.sink) {
      await t.writing;
      if (t.finished) return;
      try {
        await t.sink.close(); // only now does the file get its name on disk
      } catch (exc) {
        this.fail(t, "failed", `cannot write: ${exc.message}`, true);
        return;
      }
      t.sink = null;
      t.finish("done");
      this.sendControl(t, "file-done", { offset: t.size });
      this.emitEvent("transfer", { transfer: t });
      this.emitEvent("received", { transfer: t, blob: null });
      return;
    }
    this.flushParts(t);
    const blob = new Blob(t.blobs, { type: "application/octet-stream" });
    t.blobs = t.parts = t.hash = null;
    t.finish("done");
    this.sendControl(t, "file-done", { offset: t.size });
    this.emitEvent("transfer", { transfer: t });
    this.emitEvent("received", { transfer: t, blob });
  }

  /** The server ended our session for good (docs/protocol.md, `session_ended`:
   * the invite was revoked or expired): say why, once, and stop. No reconnecting,
   * since no retry can change it; links and transfers close, the room is gone. */
  ended(detail) {
    if (this.closing) return;
    this.closing = true;
    const reason = SESSION_ENDED[detail?.reason] !== undefined ? detail.reason : "ended";
    const message = SESSION_ENDED[reason];
    clearInterval(this.pinger);
    this.socket?.disconnect();
    for (const link of this.links.values()) link.close();
    this.links.clear();
    for (const t of this.transfers.values()) {
      if (!t.finished) this.fail(t, "cancelled", message, false);
    }
    this.room = null;
    console.warn(`p2p-nb: the session ended: ${message}`);
    this.emitEvent("status", { state: "revoked", reason: message, code: reason });
    this.emitEvent("peers");
  }

  // ----------------------------------------------------------------- leave
  /** Drop everything at once, telling nobody (a join that failed half-way). */
  close() {
    this.closing = true;
    clearInterval(this.pinger);
    for (const link of this.links.values()) link.close();
    this.socket?.disconnect();
  }

  /** Settle every link (our acks out, theirs in), tell the server, close. */
  async leave() {
    if (this.closing) return;
    this.closing = true;
    clearInterval(this.pinger);
    clearTimeout(this.owedTimer);
    await Promise.all([...this.links.values()].map((l) => l.settle().catch(() => {})));
    if (this.socket?.connected && this.room !== null) {
      try {
        await this.call("leave", {}, 2000);
      } catch {
        // the server will see the disconnect
      }
    }
    for (const link of this.links.values()) link.close();
    for (const t of this.transfers.values()) {
      if (!t.finished) this.fail(t, "cancelled", "we left the room", false);
    }
    this.socket?.disconnect();
    this.room = null;
    this.emitEvent("status", { state: "left" });
  }
}

export { RoomSecretError };
