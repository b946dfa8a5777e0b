// Re-keying a room with a secret, the browser's side (docs/protocol.md,
// section 6, "Re-keying"), as p2p_nb/rekey.py: a member that stays gets the
// room's next secret over its links, and from then on the old secret (which a
// revoked guest has) authenticates nothing and opens no profile.
//
// The page takes part but never starts one: it adopts a `rekey` that
// supersedes its epoch, hands it on to the members it has links to, and lets a
// member that missed it back with the previous key only when the SDP shows the
// certificate recorded for that member. RoomEpochs holds the rules (pure but
// for the key derivation, unit-tested in tests/web/unit.js); EpochKey is what
// the links use as the room key; Rekeying drives them for one P2PClient.

import { ProtocolError, codePoints, encode } from "./codec.js";
import { MAX_SECRET_CHARS, MIN_SECRET_CHARS, RoomKey, RoomSecretError, sdpIdentity } from "./roomkey.js";
import { sdpFingerprint } from "./safety.js";

export const REKEY_TYPE = "rekey";
export const MAX_EPOCH = 2 ** 53 - 1;
export const MAX_MEMBERS = 256;
/** Re-keys from one link we derive a key for, per minute: each costs a scrypt
 * (32 MiB), so a hostile member sending ever higher epochs cannot keep the
 * page busy. Honest re-keys cost one or two (a race) a minute. */
export const MAX_REKEYS_PER_MINUTE = 6;
const PEER_ID = /^[A-Za-z0-9_.-]{1,64}$/;
const FINGERPRINT_CHARS = 256;

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

/** The fields of a `rekey` message, checked ({epoch, secret, by, members, out});
 * ProtocolError says which is wrong. */
export function parseRekey(payload) {
  const { epoch, secret, by, members } = payload ?? {};
  const out = payload?.out ?? [];
  if (!Number.isSafeInteger(epoch) || epoch < 1 || epoch > MAX_EPOCH) {
    throw new ProtocolError(`rekey: 'epoch' must be an integer from 1 to ${MAX_EPOCH}`);
  }
  if (typeof secret !== "string" || !secret.isWellFormed()
      || codePoints(secret) < MIN_SECRET_CHARS || codePoints(secret) > MAX_SECRET_CHARS) {
    throw new ProtocolError("rekey: 'secret' must be a room secret (8 to 1024 characters)");
  }
  if (typeof by !== "string" || !PEER_ID.test(by)) throw new ProtocolError("rekey: 'by' must be a peer id");
  const entries = isObject(members) ? Object.entries(members) : [];
  if (entries.length < 1 || entries.length > MAX_MEMBERS) {
    throw new ProtocolError(`rekey: 'members' must map 1 to ${MAX_MEMBERS} peer ids`);
  }
  for (const [pid, fp] of entries) {
    if (!PEER_ID.test(pid) || typeof fp !== "string" || fp.length > FINGERPRINT_CHARS) {
      throw new ProtocolError("rekey: 'members' maps peer ids to fingerprints");
    }
  }
  const memberMap = new Map(entries);
  if (!memberMap.has(by)) throw new ProtocolError("rekey: its initiator 'by' is not among its 'members'");
  if (!Array.isArray(out) || out.length > MAX_MEMBERS) throw new ProtocolError("rekey: 'out' must be a list of peer ids");
  if (!out.every((p) => typeof p === "string" && PEER_ID.test(p) && !memberMap.has(p))) {
    throw new ProtocolError("rekey: 'out' lists peer ids that are not members");
  }
  return { epoch, secret, by, members: memberMap, out: [...out] };
}

/** Whether `rekey` wins over the epoch `epoch` made by `by` ("" for the join
 * secret): the higher epoch; at the same epoch the smaller initiator id. */
export function supersedes(rekey, epoch, by) {
  return rekey.epoch > epoch || (rekey.epoch === epoch && by !== "" && rekey.by < by);
}

/** The wire form of our epoch's `rekey`, numbered `seq` (our chat counter). */
export function encodeRekey(rekey, seq) {
  return encode(REKEY_TYPE, {
    seq, epoch: rekey.epoch, secret: rekey.secret, by: rekey.by,
    members: Object.fromEntries(rekey.members), out: rekey.out,
  });
}

/** One member's epochs of a room with a secret: the current key, who was
 * excluded, and who may still come back with the previous key. */
export class RoomEpochs {
  constructor(key, secret) {
    this.epoch = 0;
    this.by = "";
    this.secret = secret;
    this.key = key; // the current epoch's RoomKey
    this.current = null; // the re-key that made our epoch (null: the join secret)
    this.previous = null; // the key of the epoch before ours
    this.banned = new Set(); // peer ids a re-key we adopted excluded: never members again
    /** Members of our epoch that have not shown it yet: peer id → {key, fingerprint}. */
    this.entitled = new Map();
    this.derived = new Map(); // sender → times (seconds) of derivations its re-keys cost
  }

  /** Whether a re-key from the link to `sender` may cost a derivation at `now` (seconds). */
  allowDerivation(sender, now) {
    const times = (this.derived.get(sender) ?? []).filter((t) => now - t < 60);
    this.derived.set(sender, times);
    if (times.length >= MAX_REKEYS_PER_MINUTE) return false;
    times.push(now);
    return true;
  }

  /** Why `rekey`, from the link to `sender`, is not adopted (null: adopt it;
   * "duplicate": our epoch's own message again). */
  refuses(sender, rekey) {
    if (this.banned.has(sender) || this.banned.has(rekey.by)) return "it comes from a peer an earlier re-key excluded";
    if ([...rekey.members.keys()].some((p) => this.banned.has(p))) {
      return "it names as a member a peer an earlier re-key excluded";
    }
    if (rekey.epoch === this.epoch && rekey.by === this.by) {
      return rekey.secret === this.secret ? "duplicate" : "a second secret for one epoch";
    }
    if (!supersedes(rekey, this.epoch, this.by)) return `epoch ${this.epoch} (by ${this.by || "the join"}) wins over it`;
    return null;
  }

  /** Make `rekey` (whose key is `key`) our epoch. `fingerprints`: the members'
   * certificates as our own links saw them, for those the initiator did not record. */
  adopt(rekey, key, localId, fingerprints = new Map()) {
    const previous = this.key;
    this.epoch = rekey.epoch;
    this.by = rekey.by;
    this.secret = rekey.secret;
    this.current = rekey;
    for (const p of rekey.out) this.banned.add(p);
    this.key = key;
    this.previous = previous;
    this.entitled = new Map();
    for (const [pid, fp] of rekey.members) {
      if (pid !== localId) this.entitled.set(pid, { key: previous, fingerprint: fp || fingerprints.get(pid) || "" });
    }
  }

  /** `peerId` showed our epoch: its certificate no longer opens the way back, under any id. */
  confirmed(peerId) {
    const entry = this.entitled.get(peerId);
    this.entitled.delete(peerId);
    if (entry?.fingerprint) {
      for (const [pid, other] of [...this.entitled]) {
        if (other.fingerprint === entry.fingerprint) this.entitled.delete(pid);
      }
    }
  }

  /** The previous key, for descriptions to a member that may not have ours
   * yet and whose fingerprint is recorded (its answer must show it). */
  wayBack(peerId) {
    const entry = this.entitled.get(peerId);
    return entry?.fingerprint ? entry.key : null;
  }

  /** Whether a description that failed our key is a member's that missed the
   * re-key: it passes the previous key and shows the fingerprint recorded for
   * a member not yet confirmed, under its id or (a server restart gave it a
   * new one) under any. Relay signals never: they use the new salt. */
  async comesBack(sender, receiver, signal) {
    if ((signal.type !== "offer" && signal.type !== "answer") || this.banned.has(sender)) return false;
    const own = this.entitled.get(sender);
    const candidates = own !== undefined ? [own] : [...this.entitled.values()];
    let shown;
    try {
      shown = sdpIdentity(typeof signal.sdp === "string" ? signal.sdp : "").fingerprints;
    } catch (exc) {
      if (exc instanceof RoomSecretError) return false;
      throw exc;
    }
    for (const { key, fingerprint } of candidates) {
      if (!fingerprint || !shown.includes(fingerprint)) continue;
      try {
        await key.check(sender, receiver, signal);
      } catch (exc) {
        if (exc instanceof RoomSecretError) return false;
        throw exc;
      }
      this.entitled.set(sender, { key, fingerprint }); // our answers to it use its key
      return true;
    }
    return false;
  }
}

/** The room key the links use (client.roomKey): the current epoch's, with the
 * way back for members that missed a re-key. */
export class EpochKey {
  constructor(epochs) {
    this.epochs = epochs;
  }

  get room() { return this.epochs.key.room; }

  get relaySalt() { return this.epochs.key.relaySalt; }

  async authenticate(sender, receiver, signal) {
    return (this.epochs.wayBack(receiver) ?? this.epochs.key).authenticate(sender, receiver, signal);
  }

  async check(sender, receiver, signal) {
    try {
      await this.epochs.key.check(sender, receiver, signal);
    } catch (exc) {
      if (!(exc instanceof RoomSecretError) || !(await this.epochs.comesBack(sender, receiver, signal))) throw exc;
      return;
    }
    this.epochs.confirmed(sender);
  }

  sealProfile(peerId, name, capabilities) { return this.epochs.key.sealProfile(peerId, name, capabilities); }

  openProfile(peerId, capabilities) { return this.epochs.key.openProfile(peerId, capabilities); }

  /** Whether a sealed profile opens only with the key before ours (its owner
   * has not re-sealed it yet, or our `rekey` has not reached it). */
  async sealedBefore(peerId, capabilities) {
    if (this.epochs.previous === null) return false;
    try {
      return (await this.epochs.previous.openProfile(peerId, capabilities)) !== null;
    } catch (exc) {
      if (exc instanceof RoomSecretError) return false;
      throw exc;
    }
  }
}

/** Re-keys of one room membership of a P2PClient: the ones members send us,
 * and handing ours to members whose link opens. `client` gives: peerId,
 * closing, rekeying (this, while it is current), links (peer id → PeerLink),
 * seq (our chat counter), reportError, log, dropMember(peerId) and
 * rekeyed(rekey) (re-seal our profile, reopen theirs). */
export class Rekeying {
  constructor(client, key, secret, derive = RoomKey.derive) {
    this.client = client;
    this.epochs = new RoomEpochs(key, secret);
    this.key = new EpochKey(this.epochs);
    this.derive = derive;
    this.chain = Promise.resolve(); // one re-key at a time, judged against the epoch before it
  }

  /** A `rekey` from the link to `sender`: adopted, handed on, or refused. */
  onMessage(sender, payload) {
    let rekey;
    try {
      rekey = parseRekey(payload);
    } catch (exc) {
      this.client.reportError(sender, exc);
      return this.chain;
    }
    const why = this.epochs.refuses(sender, rekey);
    if (why === "duplicate") {
      this.epochs.confirmed(sender); // it has our epoch: nothing to derive
      return this.chain;
    }
    if (why === null && !this.epochs.allowDerivation(sender, performance.now() / 1000)) {
      this.client.reportError(sender, new RoomSecretError(
        `a re-key refused: more than ${MAX_REKEYS_PER_MINUTE} in a minute`));
      return this.chain;
    }
    this.chain = this.chain.then(() => this.consider(sender, rekey)).catch((exc) => this.client.reportError(sender, exc));
    return this.chain;
  }

  async consider(sender, rekey) {
    let why = this.epochs.refuses(sender, rekey);
    if (why === "duplicate") {
      this.epochs.confirmed(sender);
      return;
    }
    if (why === null && !rekey.members.has(this.client.peerId)) why = "it does not name us as a member";
    if (why !== null) {
      this.client.log(`rekey ${rekey.epoch} by ${rekey.by} from ${sender} not taken: ${why}`);
      if (!why.startsWith("epoch")) this.client.reportError(sender, new RoomSecretError(`a re-key refused: ${why}`));
      return;
    }
    const key = await this.derive(this.epochs.key.room, rekey.secret);
    if (this.client.closing || this.client.rekeying !== this) return; // we left meanwhile
    this.epochs.adopt(rekey, key, this.client.peerId, this.fingerprints());
    this.epochs.confirmed(sender);
    for (const pid of [...this.client.links.keys()]) {
      if (!rekey.members.has(pid)) this.client.dropMember(pid); // its link closes, it is out
    }
    this.sendCurrent([...rekey.members.keys()].filter((p) => p !== this.client.peerId));
    await this.client.rekeyed(rekey);
  }

  /** Our epoch's `rekey` to these members (those we have a link to), numbered
   * like chat: kept until acknowledged and sent again after a link failure. */
  sendCurrent(to) {
    const current = this.epochs.current;
    if (current === null) return;
    const seq = ++this.client.seq;
    const wire = encodeRekey(current, seq);
    for (const pid of to) {
      const link = this.client.links.get(pid);
      if (link === undefined) continue;
      try {
        link.send(wire, seq);
      } catch (exc) {
        this.client.log(`rekey for ${pid} waits for its link: ${exc.message}`);
      }
    }
  }

  /** A link opened: a member that may not have our epoch gets it first. */
  onLinkOpen(peerId) {
    if (this.epochs.entitled.has(peerId)) this.sendCurrent([peerId]);
  }

  /** Each direct link's peer's certificate, as the first a=fingerprint of its SDP shows it. */
  fingerprints() {
    const seen = new Map();
    for (const [pid, link] of this.client.links) {
      const sdp = link.pc?.remoteDescription?.sdp;
      const fp = (sdp ? sdpFingerprint(sdp) : null) ?? link.remoteFingerprint;
      if (fp) seen.set(pid, fp);
    }
    return seen;
  }
}
