// The link to one remote peer, as p2p_nb/peerlink.py runs it: its
// RTCPeerConnection, the glare-free offer rule (the smaller peer id offers),
// the attempt tag, the safety code, reconnecting with backoff, pings, and the
// chat frames kept until the peer acknowledges them. No DOM.

import {
  CHANNEL_LABEL, CHANNEL_PROTOCOL, ProtocolError, decode, encode, randomHex, splitBatch,
} from "./codec.js";
import { SafetyCodeError, SafetyState, sdpFingerprint } from "./safety.js";
import { AUTHENTICATED_SIGNALS, RoomSecretError } from "./roomkey.js";
import { LOW_WATER } from "./transfer.js";
import { KeyPair, RelayChannel, checkRelayData, newSessionId, validSessionId } from "./relay.js";

export const OPEN_STATES = new Set(["connected", "relayed"]);
export const POLICY = {
  maxAttempts: 6,
  attemptTimeout: 15000,
  baseDelay: 500,
  maxDelay: 8000,
  pongTimeout: 10000,
  gatherTimeout: 5000,
  relayAfter: 2, // failed direct attempts before the offerer asks for a relay
};
export const MAX_OUTBOX = 1000;
const AWAY_RETRY = 2000;
export const MAX_UNACKED = 10000;
export const ACK_DELAY_SECONDS = 0.05;
const PER_CHANNEL = new Set(["ping", "pong", "chat-ack", "mesh-report", "safety-reveal", "relay-open"]);

function delay(attempt) {
  const base = Math.min(POLICY.maxDelay, POLICY.baseDelay * 2 ** Math.max(0, attempt - 1));
  return base * (0.8 + 0.4 * Math.random());
}

function waitGathering(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", done);
        clearTimeout(timer);
        resolve();
      }
    };
    const timer = setTimeout(() => {
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    }, POLICY.gatherTimeout);
    pc.addEventListener("icegatheringstatechange", done);
  });
}

/** The link to one peer; survives the connections it goes through. */
export class PeerLink {
  constructor(client, peerId, name, capabilities) {
    this.client = client;
    this.peerId = peerId;
    this.name = name;
    this.capabilities = capabilities;
    this.initiator = client.peerId < peerId;
    this.state = "new";
    this.reason = null;
    this.away = false; // the server holds the peer's slot while its connection is down
    this.secretMismatch = false; // the peer and we do not share the room secret
    this.pc = null;
    this.channel = null;
    this.ready = false; // the channel is open and its first frames (safety reveal) are out
    this.generation = 0;
    this.failedGeneration = -1;
    this.attempts = 0;
    this.rtt = null;
    this.lastHeard = null;
    this.safety = new SafetyState();
    this.relayPending = null;
    this.report = {}; // the peer's own links, from its latest mesh-report
    this.attemptId = null;
    this.outbox = [];
    this.unacked = [];
    this.lastSeqIn = 0;
    this.remoteFingerprint = null; // the peer's certificate: who it is under a new id
    this.ackDue = null;
    this.ackTimer = null;
    this.timers = new Set();
    this.waiters = [];
    this.pongWaiters = new Map();
    this.chain = Promise.resolve();
  }

  get isBrowser() {
    return Array.isArray(this.capabilities?.services) && this.capabilities.services.includes("browser");
  }

  get safetyCode() {
    return this.transport === "direct" ? this.safety.code : null;
  }

  get transport() {
    if (this.channel instanceof RelayChannel) return "relay";
    return this.channel !== null ? "direct" : "none";
  }

  /** The peer relaying this link (null: direct, or the signaling server). */
  get relayVia() {
    return this.channel instanceof RelayChannel ? this.channel.via : null;
  }

  // ------------------------------------------------------------------ state
  setState(state, reason = null) {
    if (state === this.state) return;
    const old = this.state;
    this.state = state;
    if (reason !== null) this.reason = reason;
    if (OPEN_STATES.has(state)) {
      this.lastHeard = performance.now();
      this.away = false;
    }
    this.notify();
    this.client.linkChanged(this, old);
  }

  notify() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  later(fn, ms) {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
  }

  watch(gen) {
    this.later(() => {
      if (this.generation === gen && (this.state === "connecting" || this.state === "reconnecting")) {
        this.attemptFailed(gen, "timed out");
      }
    }, POLICY.attemptTimeout);
  }

  attemptFailed(gen, why) {
    if (gen !== this.generation || gen === this.failedGeneration || this.client.closing) return;
    if (["closed", "lost", "limited"].includes(this.state)) return;
    this.failedGeneration = gen;
    this.attempts += 1;
    this.client.log(`link to ${this.name} dropped (${why}), attempt ${this.attempts}`);
    this.dropChannel();
    if (this.attempts > POLICY.maxAttempts) {
      this.giveUp(`no connection after ${POLICY.maxAttempts} attempts (${why})`);
      return;
    }
    this.setState("reconnecting", why);
    const generation = this.generation;
    if (this.initiator) {
      const relay = this.attempts >= POLICY.relayAfter && this.client.relayRoute(this.peerId) !== undefined;
      this.later(() => this.enqueue({ type: relay ? "_relay" : "_reconnect" }), delay(this.attempts));
    } else {
      this.client.sendSignal(this.peerId, { type: "invite" }).catch(() => {});
      const wait = () => {
        if (this.generation !== generation || this.state !== "reconnecting") return;
        this.attempts += 1;
        if (this.attempts > POLICY.maxAttempts) this.giveUp("the peer did not offer again");
        else this.later(wait, POLICY.attemptTimeout);
      };
      this.later(wait, POLICY.attemptTimeout);
    }
  }

  giveUp(reason) {
    this.setState("lost", reason);
    this.closePc();
  }

  restart() {
    if (this.state !== "lost" && this.state !== "limited") return false;
    this.attempts = 0;
    this.setState("reconnecting");
    if (this.initiator) this.enqueue({ type: "_reconnect" });
    else this.client.sendSignal(this.peerId, { type: "invite" }).catch(() => {});
    return true;
  }

  dropChannel() {
    const channel = this.channel;
    this.channel = null;
    this.ready = false;
    this.relayPending?.close();
    this.relayPending = null;
    if (channel !== null) {
      channel.onopen = channel.onclose = channel.onmessage = channel.onbufferedamountlow = null;
      try {
        channel.close();
      } catch {
        // already closed
      }
    }
    this.notify();
  }

  closePc() {
    const pc = this.pc;
    this.pc = null;
    this.dropChannel();
    this.generation += 1; // callbacks of the old connection are ignored from here
    if (pc !== null) {
      pc.onconnectionstatechange = pc.ondatachannel = null;
      pc.close();
    }
  }

  // ---------------------------------------------------------- connections
  newPc() {
    this.closePc();
    this.generation += 1;
    const gen = this.generation;
    const config = { iceServers: this.client.iceServers };
    if (this.client.certificate) config.certificates = [this.client.certificate];
    const pc = new RTCPeerConnection(config);
    this.pc = pc;
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        this.attemptFailed(gen, `connection ${pc.connectionState}`);
      }
    };
    pc.ondatachannel = (event) => this.attachChannel(event.channel, gen);
    this.watch(gen);
    return pc;
  }

  attachChannel(channel, gen) {
    if (gen !== this.generation) return;
    if (channel.label !== CHANNEL_LABEL) {
      this.client.log(`peer ${this.peerId} opened an unexpected channel`);
      return;
    }
    this.channel = channel;
    channel.binaryType = "arraybuffer";
    channel.bufferedAmountLowThreshold = LOW_WATER;
    channel.onmessage = (event) => this.onMessage(event.data);
    channel.onbufferedamountlow = () => this.notify();
    channel.onclose = () => this.attemptFailed(gen, "data channel closed");
    if (channel.readyState === "open") this.onOpen(gen);
    else channel.onopen = () => this.onOpen(gen);
  }

  async onOpen(gen) {
    if (gen !== this.generation || this.channel === null) return;
    if (this.initiator && this.transport === "direct") {
      const [nonce, replaced] = await this.safety.reveal();
      if (gen !== this.generation || this.channel === null) return;
      if (nonce !== null) {
        // straight onto this channel, first: the next channel has another commitment
        this.channel.send(encode("safety-reveal", { nonce }));
      }
      this.codeSettled(replaced);
    }
    const remote = this.pc?.remoteDescription?.sdp;
    const fingerprint = this.transport === "direct" && remote ? sdpFingerprint(remote) : null;
    if (fingerprint !== null) {
      this.remoteFingerprint = fingerprint;
      this.resendOwed(this.client.claimOwed(fingerprint));
    }
    this.ready = true;
    const queued = new Set(this.outbox);
    const again = this.unacked.map(([, frame]) => frame).filter((f) => !queued.has(f));
    const frames = [...again, ...this.outbox];
    this.outbox = [];
    for (const frame of frames) this.channel.send(frame);
    this.attempts = 0;
    this.setState(this.transport === "direct" ? "connected" : "relayed");
    // a first ping at once: the round-trip time shows without waiting for the timer
    this.channel.send(encode("ping", { id: randomHex(8), ts: Date.now() / 1000 }));
  }

  codeSettled(replaced) {
    if (this.safety.code === null) return;
    this.client.linkChanged(this, this.state);
    if (replaced !== null) {
      this.client.reportError(this.peerId, new SafetyCodeError(
        `the safety code of ${this.name} changed from ${replaced.code} to ${this.safety.code}: other certificates`));
    }
  }

  // ------------------------------------------------------------- signals
  enqueue(signal) {
    this.chain = this.chain.then(() => this.handle(signal)).catch((exc) => {
      if (exc?.code === "unknown_peer" && /is reconnecting/.test(exc.message)) {
        this.stepAway();
        return;
      }
      this.client.reportError(this.peerId, exc instanceof Error ? exc : new Error(String(exc)));
    });
  }

  /** The server keeps the peer's slot while its connection is down (its
   * grace period, docs/protocol.md section 1, "Resume"): it is away, not in
   * error. Try again in a while; peer_left ends it if it does not come back. */
  stepAway() {
    if (this.state === "closed") return;
    const first = !this.away;
    this.away = true;
    this.closePc();
    if (first) this.client.linkChanged(this, this.state);
    this.later(() => {
      if (this.state === "closed" || !this.away) return;
      this.away = false;
      this.attempts = 0;
      if (this.initiator) this.enqueue({ type: "_offer" });
      else this.client.sendSignal(this.peerId, { type: "invite" }).catch((exc) => {
        if (exc?.code === "unknown_peer") this.stepAway();
      });
      this.client.linkChanged(this, this.state);
    }, AWAY_RETRY);
  }

  start() {
    if (this.initiator) this.enqueue({ type: "_offer" });
  }

  async handle(signal) {
    const kind = signal.type;
    const key = this.client.roomKey;
    if (key !== null && AUTHENTICATED_SIGNALS.has(kind)) {
      try {
        await key.check(this.peerId, this.client.peerId, signal);
      } catch (exc) {
        if (!(exc instanceof RoomSecretError)) throw exc;
        this.unauthenticated(exc);
        await this.client.sendSignal(this.peerId, { type: "refuse", reason: "room_secret" });
        return;
      }
    }
    if (this.state === "closed") return;
    if (kind === "_offer") {
      await this.offer();
    } else if (kind === "_reconnect") {
      if (this.state === "reconnecting") await this.offer();
    } else if (kind === "refuse" && signal.reason === "room_secret") {
      this.closePc();
      this.unauthenticated(new RoomSecretError(
        `${this.name} refused the room authenticator of our ${this.initiator ? "offer" : "answer"}: `
        + "one of us has another room secret (or someone in between altered it)"));
    } else if (kind === "refuse") {
      this.closePc();
      this.setState("limited", "the peer's max_connections");
    } else if (kind === "invite") {
      if (!this.initiator) return;
      if (OPEN_STATES.has(this.state)) this.attemptFailed(this.generation, "peer asked to reconnect");
      else if (this.state === "lost" || this.state === "limited") this.restart();
    } else if (kind === "offer" && !this.initiator) {
      await this.answer(signal);
    } else if (kind === "answer" && this.initiator) {
      await this.onAnswer(signal);
    } else if (kind === "candidate") {
      if (this.pc !== null) await this.addCandidate(signal.candidate);
    } else if (kind === "_relay") {
      if (this.state === "reconnecting") await this.startRelay();
    } else if (kind === "relay") {
      await this.acceptRelay(signal);
    } else if (kind === "relay-accept") {
      await this.relayAccepted(signal);
    } else {
      throw new ProtocolError(`unexpected signal ${JSON.stringify(kind)} from ${this.name}`);
    }
  }

  // ---------------------------------------------------------------- relay
  /** Offerer: no direct path; ask the peer, in signaling, to relay through a
   * peer offering the service, else through the signaling server. */
  async startRelay() {
    const via = this.client.relayRoute(this.peerId);
    if (via === undefined) {
      await this.offer();
      return;
    }
    this.closePc();
    this.generation += 1;
    const relay = new RelayChannel(this, via, await KeyPair.generate());
    relay.session = newSessionId();
    this.relayPending = relay;
    this.client.log(`link to ${this.name}: trying the relay through ${via ?? "the signaling server"}`);
    this.watch(this.generation);
    await this.client.sendDescription(this.peerId, {
      type: "relay", via: via ?? "", session: relay.session, key: relay.keys.publicB64,
    });
  }

  /** Answerer: the offerer asks to relay; agree on the keys, answer, switch. */
  async acceptRelay(signal) {
    const via = typeof signal.via === "string" && signal.via ? signal.via : null;
    if (this.initiator) throw new ProtocolError(`${this.name} asked us to relay, but we are the offerer`);
    if (typeof signal.via !== "string" || !validSessionId(signal.session)) {
      throw new ProtocolError(`malformed relay signal from ${this.name}`);
    }
    if (via === null && !this.client.serverRelays) {
      throw new ProtocolError(`${this.name} asked for the signaling relay: it is off`);
    }
    if (via !== null) {
      const relay = this.client.links.get(via);
      if (via === this.peerId || via === this.client.peerId || relay === undefined
          || relay.state !== "connected" || relay.transport !== "direct") {
        throw new ProtocolError(`${this.name} asked to relay through ${via}: no direct link to it`);
      }
    }
    const keys = await KeyPair.generate();
    const channel = new RelayChannel(this, via, keys);
    await channel.agree(signal.key, signal.session, this.client.roomKey?.relaySalt ?? null);
    this.closePc();
    this.generation += 1;
    this.channel = channel;
    this.watch(this.generation);
    await this.client.sendDescription(this.peerId, {
      type: "relay-accept", session: signal.session, key: keys.publicB64,
    });
    channel.send(encode("relay-open"));
    await this.onOpen(this.generation);
  }

  async relayAccepted(signal) {
    const pending = this.relayPending;
    if (!this.initiator || pending === null || signal.session !== pending.session) {
      this.client.log(`relay-accept from ${this.name} for no pending session: ignored`);
      return;
    }
    await pending.agree(signal.key, pending.session, this.client.roomKey?.relaySalt ?? null);
  }

  /** A sealed frame relayed by `via` (null: the signaling server). */
  relayedIn(via, data) {
    let frame;
    try {
      frame = checkRelayData(data);
    } catch (exc) {
      this.client.reportError(this.peerId, exc);
      return;
    }
    for (const relay of [this.channel, this.relayPending]) {
      if (relay instanceof RelayChannel && relay.via === via) {
        relay.receive(frame);
        return;
      }
    }
    this.client.log(`frame from ${this.name} relayed by ${via ?? "the signaling server"} without a session: dropped`);
  }

  relayConfirmed() {
    const relay = this.relayPending;
    this.relayPending = null;
    if (relay === null) return;
    this.channel = relay;
    this.onOpen(this.generation);
  }

  /** The peer relaying this link is gone: fail it (the retry picks another route). */
  relayLost(via) {
    for (const relay of [this.channel, this.relayPending]) {
      if (relay instanceof RelayChannel && relay.via === via) {
        this.attemptFailed(this.generation, `relay peer ${via} is gone`);
        return;
      }
    }
  }

  /** The peer and we do not share the room secret: the link stays closed.
   * Not an error line per link: the page shows the row's state, and says
   * once, if it is our secret, to check it. */
  unauthenticated(exc) {
    this.client.log(`link to ${this.name}: ${exc.message}`);
    this.secretMismatch = true;
    this.setState("lost", "another room secret");
    this.closePc();
  }

  async offer() {
    const pc = this.newPc();
    const gen = this.generation;
    this.attachChannel(pc.createDataChannel(CHANNEL_LABEL, { ordered: true, protocol: CHANNEL_PROTOCOL }), gen);
    if (this.state === "new" || this.state === "limited") this.setState("connecting");
    await pc.setLocalDescription(await pc.createOffer());
    await waitGathering(pc);
    if (gen !== this.generation) return;
    this.attemptId = randomHex(8);
    const fields = { attempt: this.attemptId, ...(await this.safety.offerFields()) };
    await this.client.sendDescription(this.peerId, { type: "offer", sdp: pc.localDescription.sdp, ...fields });
  }

  async answer(signal) {
    if (typeof signal.sdp !== "string") throw new ProtocolError(`offer from ${this.name} without an SDP`);
    let pc = this.pc;
    if (pc === null || pc.remoteDescription !== null) pc = this.newPc();
    const gen = this.generation;
    if (this.state === "new" || this.state === "limited") this.setState("connecting");
    else if (this.state === "lost" || OPEN_STATES.has(this.state)) {
      this.attempts = 0;
      this.ready = false;
      this.setState("reconnecting");
    }
    await pc.setRemoteDescription({ type: "offer", sdp: signal.sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    await waitGathering(pc);
    if (gen !== this.generation) return;
    const fields = typeof signal.attempt === "string" ? { attempt: signal.attempt } : {};
    try {
      Object.assign(fields, await this.safety.answerFields(
        signal, sdpFingerprint(pc.localDescription.sdp), sdpFingerprint(signal.sdp)));
    } catch (exc) {
      this.client.reportError(this.peerId, exc); // answer anyway: the link shows no code
    }
    await this.client.sendDescription(this.peerId, { type: "answer", sdp: pc.localDescription.sdp, ...fields });
  }

  async onAnswer(signal) {
    const pc = this.pc;
    if (pc === null || pc.signalingState !== "have-local-offer"
        || (signal.attempt !== undefined && signal.attempt !== this.attemptId)) {
      this.client.log(`stale answer from ${this.name} dropped`);
      return;
    }
    if (typeof signal.sdp !== "string") throw new ProtocolError(`answer from ${this.name} without an SDP`);
    await pc.setRemoteDescription({ type: "answer", sdp: signal.sdp });
    try {
      this.safety.onAnswer(signal, sdpFingerprint(pc.localDescription.sdp), sdpFingerprint(signal.sdp));
    } catch (exc) {
      this.client.reportError(this.peerId, exc);
    }
  }

  async addCandidate(candidate) {
    if (candidate === null || candidate === undefined || candidate === "") {
      await this.pc.addIceCandidate(null);
    } else if (typeof candidate === "string") {
      await this.pc.addIceCandidate({ candidate, sdpMLineIndex: 0 });
    } else if (typeof candidate === "object" && typeof candidate.candidate === "string") {
      await this.pc.addIceCandidate(candidate);
    }
  }

  // ----------------------------------------------------------- receiving
  /** A frame from the peer: `route` null on our data channel, "" through the
   * signaling relay, else the id of the peer that relayed it. */
  onMessage(data, route = null) {
    this.lastHeard = performance.now();
    if (data instanceof ArrayBuffer) {
      this.client.onBinary(this, data);
      return;
    }
    for (const part of splitBatch(data)) {
      let msg;
      try {
        msg = decode(part);
      } catch (exc) {
        this.client.reportError(this.peerId, exc);
        continue;
      }
      this.onControl(msg, route);
    }
  }

  onControl(msg, route = null) {
    switch (msg.type) {
      case "ping":
        this.send(encode("pong", { id: msg.id, ts: msg.ts }));
        return;
      case "pong": {
        this.rtt = Math.max(0, Date.now() / 1000 - msg.ts);
        const wake = this.pongWaiters.get(msg.id);
        if (wake) wake();
        this.client.linkChanged(this, this.state);
        return;
      }
      case "chat-ack":
        this.unacked = this.unacked.filter(([seq]) => seq > msg.seq);
        return;
      case "mesh-report":
        this.report = msg.links;
        if (msg.request) this.send(encode("mesh-report", { links: this.client.meshReport(), request: false }));
        return;
      case "safety-reveal":
        if (this.initiator || route !== null) return; // only on the direct channel
        this.safety.onReveal(msg.nonce).then(
          (replaced) => this.codeSettled(replaced),
          (exc) => this.client.reportError(this.peerId, exc));
        return;
      case "relay-open": {
        // only ever opened from a sealed session, so it is the peer's
        const pending = this.relayPending;
        if (route !== null && pending !== null && pending.via === (route || null)) this.relayConfirmed();
        return;
      }
      case "relay-frame":
        if (route !== null || this.transport !== "direct") return;
        if (msg.from !== null) this.client.relayedIn(this.peerId, msg.from, msg.data);
        else this.client.log(`relay-frame from ${this.name} for ${msg.to} dropped: this browser relays for nobody`);
        return;
      default:
        break;
    }
    const seq = msg.type === "chat" ? msg.seq : msg.unknown ? msg.seq : null;
    if (seq !== null && seq !== undefined) {
      this.ackLater(seq);
      if (seq <= this.lastSeqIn) return; // sent again after a link failure: we had it
      this.lastSeqIn = seq;
    }
    this.client.onControl(this, msg);
  }

  ackLater(seq) {
    this.ackDue = Math.max(this.ackDue ?? 0, seq);
    if (this.ackTimer !== null) return;
    this.ackTimer = setTimeout(() => this.sendAck(), ACK_DELAY_SECONDS * 1000);
  }

  sendAck() {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (this.ackDue === null || !this.isOpen()) return;
    this.channel.send(encode("chat-ack", { seq: this.ackDue }));
    this.ackDue = null;
  }

  // ------------------------------------------------------------- sending
  isOpen() {
    return this.ready && this.channel !== null && this.channel.readyState === "open";
  }

  /** What our link to the same person (the same certificate) under our
   * previous id never had acknowledged goes first, kept until this peer
   * acknowledges it; what it had then sent us is not shown twice. */
  resendOwed(owed) {
    if (!owed) return;
    this.lastSeqIn = Math.max(this.lastSeqIn, owed.lastSeqIn);
    const have = new Set(this.unacked.map(([seq]) => seq));
    const frames = owed.frames.filter(([seq]) => !have.has(seq)).map(([seq, frame]) => {
      const msg = JSON.parse(frame);
      return [seq, msg.type === "chat" && msg.to ? JSON.stringify({ ...msg, to: this.peerId }) : frame];
    });
    this.unacked = [...frames, ...this.unacked];
    this.outbox = [...frames.map(([, frame]) => frame), ...this.outbox];
    this.client.log(`${frames.length} messages owed to ${owed.name} go again`);
  }

  /** Send now, or queue while the link is opening; chat (with `seq`) is kept until acknowledged. */
  send(data, seq = null) {
    const open = this.isOpen();
    if (!open && ["closed", "lost", "limited"].includes(this.state)) {
      throw new Error(`the link to ${this.name} is ${this.state}`);
    }
    if (!open && this.outbox.length >= MAX_OUTBOX) {
      throw new Error(`${this.name} is ${this.state} and ${MAX_OUTBOX} messages are queued`);
    }
    if (seq !== null && typeof data === "string") {
      this.unacked.push([seq, data]);
      if (this.unacked.length > MAX_UNACKED) this.unacked.shift();
    }
    if (open) this.channel.send(data);
    else if (typeof data !== "string" || !PER_CHANNEL.has(JSON.parse(data).type)) this.outbox.push(data);
  }

  /** Until the channel is open with at most `highWater` bytes buffered (flow control for bulk data). */
  async waitWritable(highWater) {
    for (;;) {
      if (["closed", "lost", "limited"].includes(this.state)) {
        throw new Error(`the link to ${this.name} is ${this.state}`);
      }
      if (this.isOpen() && this.channel.bufferedAmount <= highWater) return;
      await new Promise((resolve) => this.waiters.push(resolve));
    }
  }

  tick(now) {
    if (!OPEN_STATES.has(this.state) || !this.isOpen()) return;
    if (this.lastHeard !== null && now - this.lastHeard > POLICY.pongTimeout) {
      this.attemptFailed(this.generation, `nothing heard for ${POLICY.pongTimeout / 1000} s`);
      return;
    }
    this.send(encode("ping", { id: randomHex(8), ts: Date.now() / 1000 }));
  }

  /** Before leaving: our ack out, then a ping whose pong says the peer read
   * everything before it; at most `timeout` ms. */
  async settle(timeout = 1000) {
    if (!this.isOpen()) return;
    this.sendAck();
    const id = randomHex(8);
    const ponged = new Promise((resolve) => this.pongWaiters.set(id, resolve));
    this.channel.send(encode("ping", { id, ts: Date.now() / 1000 }));
    const deadline = new Promise((resolve) => setTimeout(resolve, timeout));
    await Promise.race([ponged.then(async () => {
      while (this.unacked.length && this.isOpen()) await new Promise((r) => setTimeout(r, 20));
    }), deadline]);
    this.pongWaiters.delete(id);
  }

  close() {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    clearTimeout(this.ackTimer);
    this.setState("closed");
    this.closePc();
  }
}
