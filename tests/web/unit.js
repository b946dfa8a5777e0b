// Unit tests of the web client's modules without the DOM or the network,
// run in Chromium by tests/test_web_client.py. Results go to window.results
// ([{name, ok, error}]); window.done becomes true when all have run.
// The vectors are docs/vectors.json's, which tests/test_vectors.py runs against
// p2p_nb too (the page gets it at /__vectors__.json): change a value there alone
// and both suites fail.

import * as codec from "/p2p/web/js/codec.js";
import * as safety from "/p2p/web/js/safety.js";
import * as roomkey from "/p2p/web/js/roomkey.js";
import * as transfer from "/p2p/web/js/transfer.js";
import * as relay from "/p2p/web/js/relay.js";
import * as credentials from "/p2p/web/js/credentials.js";
import * as names from "/p2p/web/js/names.js";
import * as rekey from "/p2p/web/js/rekey.js";
import * as peer from "/p2p/web/js/peer.js";

const V = await (await fetch("/__vectors__.json")).json();
const MODULES = { codec, safety, roomkey, transfer, relay, names, rekey, peer };

/** A wire string of the vectors file: a string, or parts where [s, n] is s repeated n times. */
const expand = (wire) => (typeof wire === "string" ? wire
  : wire.map((part) => (typeof part === "string" ? part : part[0].repeat(part[1]))).join(""));

/** Where this client keeps each constant of the vectors file (null: it has no use for it). */
const JS_CONSTANTS = {
  protocol_version: "codec.PROTOCOL_VERSION",
  channel_label: "codec.CHANNEL_LABEL",
  channel_protocol: "codec.CHANNEL_PROTOCOL",
  max_control_bytes: "codec.MAX_CONTROL_BYTES",
  max_relay_frame_bytes: "codec.MAX_RELAY_FRAME_BYTES",
  max_text_chars: "codec.MAX_TEXT_CHARS",
  max_id_chars: "codec.MAX_ID_CHARS",
  max_file_name_chars: "codec.MAX_FILE_NAME_CHARS",
  max_meta_bytes: "codec.MAX_META_BYTES",
  max_reason_chars: "codec.MAX_REASON_CHARS",
  max_reported_links: "codec.MAX_REPORTED_LINKS",
  max_frame_bytes: "codec.MAX_FRAME_BYTES",
  chunk_frame: "codec.CHUNK_FRAME",
  chunk_header_bytes: "codec.CHUNK_HEADER_BYTES",
  chunk_size: "codec.CHUNK_SIZE",
  max_sealed_frame_bytes: "codec.MAX_SEALED_FRAME_BYTES",
  batch_max_chars: "codec.BATCH_MAX_CHARS",
  max_outbox: "peer.MAX_OUTBOX",
  max_unacked: "peer.MAX_UNACKED",
  ack_delay_seconds: "peer.ACK_DELAY_SECONDS",
  max_name_chars: "names.MAX_NAME_CHARS",
  max_room_chars: "names.MAX_ROOM_CHARS",
  safety_label: "safety.LABEL",
  room_label: "roomkey.LABEL",
  relay_label: "relay.LABEL",
  invite_label: null, // the server's: a browser never checks an invite
  invite_prefix: null,
  invite_secret_bytes: null, // a browser makes no invites
  scrypt_n: "roomkey.SCRYPT.N",
  scrypt_r: "roomkey.SCRYPT.r",
  scrypt_p: "roomkey.SCRYPT.p",
  min_secret_chars: "roomkey.MIN_SECRET_CHARS",
  max_secret_chars: "roomkey.MAX_SECRET_CHARS",
  rekey_type: "rekey.REKEY_TYPE",
  max_epoch: "rekey.MAX_EPOCH",
  max_rekey_members: "rekey.MAX_MEMBERS",
  max_rekeys_per_minute: "rekey.MAX_REKEYS_PER_MINUTE",
  transfer_window: "transfer.WINDOW",
  transfer_window_rate: "transfer.WINDOW_RATE",
  transfer_max_window: "transfer.MAX_WINDOW",
  transfer_ack_every: "transfer.ACK_EVERY",
  transfer_high_water: "transfer.HIGH_WATER",
  transfer_low_water: "transfer.LOW_WATER",
  max_file_bytes: "transfer.MAX_FILE_BYTES",
  max_pending_offers_per_peer: "transfer.MAX_PENDING_OFFERS_PER_PEER",
};

const tests = [];
const test = (name, fn) => tests.push([name, fn]);

function eq(actual, expected, what = "") {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what} expected ${e}, got ${a}`);
}

function throws(fn, Kind, what = "") {
  try {
    fn();
  } catch (exc) {
    if (exc instanceof Kind) return exc;
    throw new Error(`${what}: threw ${exc} instead of ${Kind.name}`);
  }
  throw new Error(`${what}: did not throw`);
}

async function rejects(promise, Kind, what = "") {
  try {
    await promise;
  } catch (exc) {
    if (exc instanceof Kind) return;
    throw new Error(`${what}: rejected with ${exc} instead of ${Kind.name}`);
  }
  throw new Error(`${what}: did not reject`);
}

// --- codec ------------------------------------------------------------------------

test("vectors: every constant of docs/vectors.json is this client's", () => {
  eq(Object.keys(JS_CONSTANTS).sort(), Object.keys(V.constants).sort(), "constants mapped");
  for (const [name, where] of Object.entries(JS_CONSTANTS)) {
    if (where === null) continue;
    const [module, ...path] = where.split(".");
    const value = path.reduce((obj, key) => obj?.[key], MODULES[module]);
    eq(value, V.constants[name], where);
  }
});

test("vectors: valid frames decode to their fields, and encode to their wire", () => {
  for (const vector of V.codec.valid) {
    const wire = expand(vector.wire);
    const msg = codec.decode(wire);
    eq(msg.type, vector.type, wire.slice(0, 60));
    eq(Boolean(msg.unknown), Boolean(vector.unknown), `${wire.slice(0, 60)} unknown`);
    for (const [name, value] of Object.entries(vector.fields)) {
      eq(name === "seq" || !msg.unknown ? msg[name] : msg.payload[name], value, `${vector.type}.${name}`);
    }
    const { v, type, ...fields } = JSON.parse(wire);
    if (["chat", "chat-ack", "ping", "pong"].includes(type)
        && JSON.stringify(Object.keys(fields).sort()) === JSON.stringify(Object.keys(vector.fields).sort())) {
      eq(codec.encode(type, Object.fromEntries(Object.keys(fields).map((k) => [k, vector.fields[k]]))), wire);
    }
  }
});

test("vectors: invalid frames are ProtocolErrors", () => {
  for (const vector of V.codec.invalid) {
    throws(() => codec.decode(expand(vector.wire)), codec.ProtocolError, vector.why);
  }
});

test("vectors: chunk frames", () => {
  const c = V.codec.chunk;
  eq(codec.bytesToHex(codec.encodeChunk(c.id, c.offset, codec.hexToBytes(c.payload))), c.frame);
  const back = codec.decodeChunk(codec.hexToBytes(c.frame).buffer);
  eq([back.id, back.offset, codec.bytesToHex(back.payload)], [c.id, c.offset, c.payload]);
  for (const bad of c.invalid) {
    throws(() => codec.decodeChunk(codec.hexToBytes(expand(bad.frame)).buffer), codec.ProtocolError, bad.why);
  }
});

test("vectors: rekey fields, and which epoch wins", () => {
  const r = V.rekey;
  const wrap = (payload) => ({ v: 1, type: "rekey", seq: 1, ...payload });
  const good = rekey.parseRekey(wrap(r.valid));
  eq([good.epoch, good.by, [...good.members.keys()], good.out],
    [r.valid.epoch, r.valid.by, Object.keys(r.valid.members), r.valid.out]);
  for (const c of r.supersedes) {
    eq(rekey.supersedes(r.incoming, c.held_epoch, c.held_by), c.wins, JSON.stringify(c));
  }
  for (const bad of r.invalid) {
    throws(() => rekey.parseRekey(wrap({ ...r.valid, ...bad.change })), codec.ProtocolError, bad.why);
  }
});

test("codec: chat round trip, as Python encodes it", () => {
  const wire = codec.encode("chat", { id: "m1", seq: 3, ts: 1.5, text: "héllo <b>", to: null });
  eq(wire, '{"v":1,"type":"chat","id":"m1","seq":3,"ts":1.5,"text":"héllo <b>","to":null}');
  eq(codec.decode(wire), { type: "chat", seq: 3, ts: 1.5, id: "m1", text: "héllo <b>", to: null });
});

test("codec: invalid messages are ProtocolErrors", () => {
  const bad = [
    "not json", "[]", '{"v":2,"type":"chat"}', '{"v":1}',
    '{"v":1,"type":"chat","id":"m","seq":-1,"ts":0,"text":""}',
    '{"v":1,"type":"chat","id":"m","seq":1,"ts":"x","text":""}',
    '{"v":1,"type":"chat","id":"","seq":1,"ts":0,"text":""}',
    `{"v":1,"type":"chat","id":"m","seq":1,"ts":0,"text":"${"x".repeat(16385)}"}`,
    '{"v":1,"type":"file-offer","id":"ABC","name":"a","size":1,"sha256":"00"}',
    `{"v":1,"type":"file-offer","id":"${"a".repeat(32)}","name":"a","size":-1,"sha256":"${"0".repeat(64)}"}`,
    `{"v":1,"type":"file-offer","id":"${"a".repeat(32)}","name":"a","size":1,"sha256":"${"0".repeat(64)}","kind":"exe"}`,
    `{"v":1,"type":"file-accept","id":"${"a".repeat(32)}","offset":1.5}`,
    `{"v":1,"type":"file-cancel","id":"${"a".repeat(32)}","reason":"${"r".repeat(1001)}"}`,
    '{"v":1,"type":"mesh-report","links":{"p":"weird"}}',
    `{"v":1,"type":"x","pad":"${"y".repeat(70000)}"}`,
  ];
  for (const text of bad) throws(() => codec.decode(text), codec.ProtocolError, text.slice(0, 60));
});

test("codec: unknown types are delivered, with their seq", () => {
  eq(codec.decode('{"v":1,"type":"app-thing","seq":4,"x":1}'),
    { type: "app-thing", unknown: true, seq: 4, payload: { v: 1, type: "app-thing", seq: 4, x: 1 } });
});

test("codec: offers keep DataFrame meta; defaults filled", () => {
  const id = "0123456789abcdef0123456789abcdef";
  const msg = codec.decode(codec.encode("file-offer", {
    id, name: "df.parquet", size: 10, sha256: "a".repeat(64), kind: "dataframe",
    meta: { shape: [2, 1], columns: ["x"], dtypes: { x: "int64" }, format: "parquet" },
  }));
  eq([msg.kind, msg.meta.shape, msg.resume], ["dataframe", [2, 1], false]);
  eq(codec.decode(`{"v":1,"type":"file-done","id":"${id}"}`), { type: "file-done", id, offset: 0, reason: "" });
});

test("codec: batches split on newlines", () => {
  eq(codec.splitBatch('{"a":1}\n{"b":2}'), ['{"a":1}', '{"b":2}']);
  eq(codec.splitBatch('{"a":1}'), ['{"a":1}']);
});

test("codec: chunk frames match Python's struct >B16sQ", () => {
  const id = "00112233445566778899aabbccddeeff";
  const frame = codec.encodeChunk(id, 2 ** 40 + 5, new Uint8Array([7, 8, 9]));
  eq(codec.bytesToHex(frame), `01${id}0000010000000005070809`);
  const back = codec.decodeChunk(frame.buffer);
  eq([back.id, back.offset, [...back.payload]], [id, 2 ** 40 + 5, [7, 8, 9]]);
  throws(() => codec.decodeChunk(new Uint8Array(10)), codec.ProtocolError, "short");
  throws(() => codec.decodeChunk(new Uint8Array(65537)), codec.ProtocolError, "long");
  const wrongType = codec.encodeChunk(id, 0, new Uint8Array(1));
  wrongType[0] = 2;
  throws(() => codec.decodeChunk(wrongType), codec.ProtocolError, "type");
  eq(codec.CHUNK_SIZE, 65511);
});

test("codec: capabilities get their defaults; junk gives the defaults", () => {
  eq(codec.normaliseCapabilities({ services: ["messaging", "relay"], rev: 3 }).services, ["messaging", "relay"]);
  eq(codec.normaliseCapabilities("junk"), codec.DEFAULT_CAPABILITIES);
});

// --- safety code ------------------------------------------------------------------

test("safety: the vector of docs/vectors.json", async () => {
  const v = V.safety;
  eq(await safety.commitment(v.nonce_o), v.commit);
  const digest = await safety.codeDigest(v.fp_o, v.fp_a, v.nonce_o, v.nonce_a);
  eq(safety.codeOf(digest), v.code);
  eq(await safety.pinOf(digest), v.pin);
});

test("safety: offerer and answerer states agree; a wrong reveal is refused", async () => {
  const fpO = "sha-256 aa:aa";
  const fpA = "sha-256 bb:bb";
  const offerer = new safety.SafetyState();
  const answerer = new safety.SafetyState();
  const offer = await offerer.offerFields();
  const answer = await answerer.answerFields(offer, fpA, fpO);
  offerer.onAnswer(answer, fpO, fpA);
  const [nonce] = await offerer.reveal();
  await answerer.onReveal(nonce);
  eq(answerer.code, offerer.code);
  if (!/^\d{3} \d{3}$/.test(offerer.code)) throw new Error(`bad code ${offerer.code}`);
  const other = new safety.SafetyState();
  await other.answerFields(await new safety.SafetyState().offerFields(), fpA, fpO);
  await rejects(other.onReveal("33".repeat(32)), safety.SafetyCodeError, "mismatch");
});

// --- room key -----------------------------------------------------------------------

const SDP = "v=0\r\na=ice-ufrag:Uf\r\na=ice-pwd:Pw\r\na=fingerprint:sha-256 AA:BB\r\n";

test("room key: the vectors of docs/vectors.json (scrypt, HKDF, authenticator)", async () => {
  const v = V.room_key;
  const key = await roomkey.RoomKey.derive(v.room, v.secret);
  eq(codec.bytesToHex(key.authKeyBytes), v.auth_key);
  eq(codec.bytesToHex(key.relaySalt), v.relay_salt);
  const offer = v.offer;
  eq(await key.authenticate(v.from, v.to, offer), v.auth);
  eq(await key.authenticate(v.from, v.to, v.odd_offer), v.odd_auth);
  await key.check(v.from, v.to, { ...offer, auth: v.auth });
  await rejects(key.check(v.from, v.to, { ...offer, auth: "00".repeat(32) }), roomkey.RoomSecretError, "wrong");
  await rejects(key.check(v.from, v.to, offer), roomkey.RoomSecretError, "missing");
  await rejects(key.check(v.from, v.to, { ...offer, sdp: offer.sdp + v.refused_appended_ice, auth: v.auth }),
    roomkey.RoomSecretError, "appended ICE credentials");
  await rejects(key.check(v.to, v.from, { ...offer, auth: v.auth }), roomkey.RoomSecretError, "other direction");
  await rejects(key.check("aaaa", "bbbb", { ...offer, attempt: "\ud800", auth: "00" }), roomkey.RoomSecretError, "surrogate");
  // sealed profiles open for the peer id they were sealed for, and only for it
  const sealed = await key.sealProfile("aaaa", "Ada", { rev: 1 });
  eq(await key.openProfile("aaaa", sealed), ["Ada", { rev: 1 }]);
  await rejects(key.openProfile("bbbb", sealed), roomkey.RoomSecretError, "moved");
  eq(await key.openProfile("aaaa", { role: "basic" }), null);
});

test("room key: secrets of 8 to 1024 characters", async () => {
  await rejects(roomkey.RoomKey.derive("team", "short"), roomkey.RoomSecretError, "short");
  throws(() => roomkey.checkSecret("x".repeat(1025)), roomkey.RoomSecretError, "long");
  roomkey.checkSecret("🔑".repeat(8)); // characters, not UTF-16 units
});

test("room key: SDP identity as Python's splitlines and strip", () => {
  eq(roomkey.sdpIdentity("a=fingerprint:sha-256 AA\na=ice-ufrag: u\x1f \r\na=ice-pwd:p\ufeff\ra=fingerprint: SHA-512 BB "),
    { fingerprints: ["sha-256 aa", "sha-512 bb"], iceUfrag: "u", icePwd: "p\ufeff" });
  // the same credentials again in another m= section (a bundle) are one set
  eq(roomkey.sdpIdentity(`${SDP}m=application 9 x y\r\na=ice-ufrag:Uf\r\na=fingerprint:sha-256 AA:BB\r\n`).iceUfrag, "Uf");
});

test("room key: an SDP with a second set of ICE credentials or a repeated fingerprint is refused", async () => {
  // docs/protocol.md ("Authenticator"): aiortc would use the appended pair
  const appended = "a=ice-ufrag:Evil\r\na=ice-pwd:EvilEvilEvilEvilEvilEv\r\n";
  const key = await roomkey.RoomKey.derive("team", "correct horse battery staple");
  const offer = {
    type: "offer", sdp: SDP, attempt: "0".repeat(16), commit: "11".repeat(32),
    auth: "71bb5ea82eab68a7c3c9d630e0392b2fbbb6bfbfafffdfa2c440c061176c9fda",
  };
  await key.check("aaaa", "bbbb", offer);
  await rejects(key.check("aaaa", "bbbb", { ...offer, sdp: SDP + appended }), roomkey.RoomSecretError, "appended");
  const bad = [
    SDP + appended,
    `${SDP}a=fingerprint:SHA-256 CC:DD\r\n`,
    `${SDP}m=application 9 x y\r\na=ice-ufrag:Ev\r\n`,
    `${SDP}m=application 9 x y\r\na=ice-pwd:Pw\r\na=ice-pwd:Pw\r\n`,
  ];
  for (const sdp of bad) {
    const exc = throws(() => roomkey.sdpIdentity(sdp), roomkey.RoomSecretError, sdp);
    if (!exc.message.startsWith("its SDP")) throw new Error(exc.message);
  }
});

// --- transfer state -------------------------------------------------------------------

test("transfer: the window grows with the round trip, within bounds", () => {
  eq(transfer.windowFor(null), 256 * 1024);
  eq(transfer.windowFor(0.05), 3200000);
  eq(transfer.windowFor(10), 8 * 1024 * 1024);
});

test("transfer: a receiver takes chunks in order, ignores repeats, refuses gaps", () => {
  const t = new transfer.TransferState({ id: "a".repeat(32), direction: "in", peerId: "p", name: "f", size: 200000 });
  throws(() => t.onChunk(0, 10), codec.ProtocolError, "before accept");
  t.accept(0);
  eq(t.onChunk(0, 65511, 1), "take");
  eq(t.ackDue(), false); // every 64 KiB, as the Python receiver
  eq(t.onChunk(0, 65511, 2), "ignore");
  throws(() => t.onChunk(70000, 10), codec.ProtocolError, "gap");
  eq(t.onChunk(65511, 65511, 3), "take");
  eq(t.ackDue(), true);
  eq(t.acknowledged(), 131022);
  eq(t.onChunk(131022, 68978, 4), "take");
  eq([t.ackDue(), t.bytes, t.fraction()], [true, 200000, 1]);
  throws(() => t.onChunk(200000, 1), codec.ProtocolError, "overflow");
});

test("transfer: a sender stops at the window and resumes from the accepted offset", () => {
  const t = new transfer.TransferState({ id: "b".repeat(32), direction: "out", peerId: "p", name: "f", size: 10 ** 7 });
  t.onAccept(0, 0);
  t.sent(300 * 1024, 1);
  eq(t.windowOpen(null), false);
  t.onAck(100 * 1024);
  eq(t.windowOpen(null), true);
  throws(() => t.onAck(10 ** 8), codec.ProtocolError, "ack beyond size");
  t.onAccept(5000, 2);
  eq([t.bytes, t.acked, t.state], [5000, 5000, "sending"]);
  eq(t.finish("done"), true);
  eq(t.finish("cancelled"), false);
});

test("transfer: offer limits and safe names", () => {
  const pending = Array.from({ length: 16 }, (_, i) => {
    const t = new transfer.TransferState({ id: String(i), direction: "in", peerId: "p", name: "f", size: 1 });
    return t;
  });
  eq(transfer.offerRefusal(pending, "q", 1), null);
  if (!transfer.offerRefusal(pending, "p", 1).startsWith("too many pending offers from you")) throw new Error("per-peer cap");
  if (!transfer.offerRefusal([], "p", 17 * 2 ** 30).startsWith("larger than")) throw new Error("size cap");
  eq(transfer.safeFileName("../../etc/passwd"), "passwd");
  eq(transfer.safeFileName("a\\b\u202e<x>.txt"), "bx.txt");
  eq(transfer.safeFileName("CON.txt"), "_CON.txt");
  eq(transfer.safeFileName("..."), "file");
});

test("transfer: statuses say each thing once; no rate for a tiny file; risky types", () => {
  const t = new transfer.TransferState({ id: "a".repeat(32), direction: "in", peerId: "p", name: "n", size: 49 });
  t.accept(0);
  t.onChunk(0, 49, 14);
  t.finish("done");
  eq(transfer.transferStatus(t), "done");
  for (const [state, reason, want] of [
    ["declined", "declined", "declined"], ["cancelled", "cancelled", "cancelled"],
    ["cancelled", "", "cancelled"], ["cancelled", "cancelled by ada: cancelled", "cancelled (by ada: cancelled)"],
    ["failed", "SHA-256 mismatch", "failed (SHA-256 mismatch)"],
  ]) {
    const x = new transfer.TransferState({ id: "b".repeat(32), direction: "in", peerId: "p", name: "n", size: 1 });
    x.finish(state, reason);
    eq(transfer.transferStatus(x), want, `${state}/${reason}`);
  }
  const big = new transfer.TransferState({ id: "c".repeat(32), direction: "in", peerId: "p", name: "n", size: 2e6 });
  big.accept(0);
  big.onChunk(0, 2e6, 1000);
  eq(transfer.transferStatus(big), "receiving 2.0 MB of 2.0 MB, 2.0 MB/s");
  const risky = ["a.exe", "b.JS", "c.svg", "d.html", "e.desktop", "f.lnk"].map(transfer.isRiskyFileName);
  eq(risky, [true, true, true, true, true, true]);
  eq(["a.pdf", "b.parquet", "exe", "c.exe.txt"].map(transfer.isRiskyFileName), [false, false, false, false]);
  eq(transfer.safeFileName("invoice_\u202efdp.exe"), "invoice_fdp.exe");
});

test("credentials: both link forms, and the address cleaned", () => {
  const base = "https://h.example/p2p/join";
  eq(credentials.parseAddress(`${base}?room=r&invite=inv1.x#s%20e%23cret`),
    { token: null, invite: "inv1.x", room: "r", secret: "s e#cret", server: null });
  eq(credentials.parseAddress(`${base}?room=r#invite=inv1.x&secret=s%20e%23cret`),
    { token: null, invite: "inv1.x", room: "r", secret: "s e#cret", server: null });
  eq(credentials.parseAddress(`${base}?token=t`), { token: "t", invite: null, room: null, secret: null, server: null });
  // what p2p_nb.invite.format_invite and client_link make: everything in the fragment
  eq(credentials.parseAddress(`${base}#room=r&invite=inv1.x&server=https%3A%2F%2Fs.example%2F&secret=s%20e%23cret`),
    { token: null, invite: "inv1.x", room: "r", secret: "s e#cret", server: "https://s.example/" });
  eq(credentials.parseAddress(`${base}#100%`).secret, "100%");
  eq(credentials.cleanAddress(`${base}?room=r&invite=inv1.x&token=t#s`), "/p2p/join?room=r");
});

test("names: the keys two names must differ in", () => {
  eq(names.nameKey("  Ana   Lu "), "ana lu");
  eq(names.nameKey("\uff21na"), "ana");
  eq(names.checkRoom(" r.1 "), "r.1");
  throws(() => names.checkRoom("r".repeat(65)), names.NameProblem, "long room");
  throws(() => names.checkRoom("-r"), names.NameProblem, "leading dash");
  throws(() => names.checkOwnName("   "), names.NameProblem, "blank");
});

// --- relay keys ---------------------------------------------------------------------

test("relay: the vector of docs/vectors.json (X25519, HKDF, the first sealed frame)", async () => {
  const v = V.relay;
  const offerer = await relay.KeyPair.generate(codec.hexToBytes(v.offerer_private));
  const answerer = await relay.KeyPair.generate(codec.hexToBytes(v.answerer_private));
  eq([offerer.publicB64, answerer.publicB64], [v.offerer_public, v.answerer_public]);
  const opts = { session: v.session, via: v.via };
  const a = await relay.RelaySeal.agree(offerer, answerer.publicB64, { ...opts, localId: v.offerer, peerId: v.answerer });
  const b = await relay.RelaySeal.agree(answerer, offerer.publicB64, { ...opts, localId: v.answerer, peerId: v.offerer });
  eq(codec.bytesToHex(a.sendKeyBytes), v.forward);
  eq(codec.bytesToHex(a.recvKeyBytes), v.backward);
  const frame = await a.seal(v.plain);
  eq(codec.bytesToHex(frame), v.sealed);
  eq(await b.open(frame), v.plain);
  await rejects(b.open(frame), relay.RelayAuthError, "replay");
  const bin = await a.seal(new Uint8Array([1, 2, 3]));
  bin[bin.length - 1] ^= 1;
  await rejects(b.open(bin), relay.RelayAuthError, "tampered");
});


// --- rekey (docs/protocol.md, section 6, "Re-keying"; as tests/test_room_secret.py) --------

const REKEY_SECRET = "x".repeat(43);
const rk = (epoch, by, members, out = [], secret = REKEY_SECRET) => rekey.parseRekey(
  { v: 1, type: "rekey", seq: 1, epoch, secret, by, members, out });

test("rekey: every field is checked, malformed is a ProtocolError", () => {
  const good = rk(1, "bbbb", { bbbb: "sha-256 aa", me: "" }, ["gus"]);
  eq([good.epoch, good.by, [...good.members.keys()], good.out], [1, "bbbb", ["bbbb", "me"], ["gus"]]);
  eq(JSON.parse(rekey.encodeRekey(good, 7)), {
    v: 1, type: "rekey", seq: 7, epoch: 1, secret: REKEY_SECRET, by: "bbbb",
    members: { bbbb: "sha-256 aa", me: "" }, out: ["gus"] });
  const m = { bbbb: "", me: "" };
  const bad = [
    [0, "bbbb", m], [1.5, "bbbb", m], ["1", "bbbb", m], [2 ** 53, "bbbb", m],
    [1, "bb bb", { "bb bb": "" }], [1, "cccc", m], [1, "bbbb", {}], [1, "bbbb", []],
    [1, "bbbb", { bbbb: 5 }], [1, "bbbb", { bbbb: "x".repeat(257) }],
    [1, "bbbb", m, ["me"]], [1, "bbbb", m, "gus"], [1, "bbbb", m, [3]],
  ];
  for (const [epoch, by, members, out] of bad) {
    throws(() => rk(epoch, by, members, out ?? []), codec.ProtocolError, JSON.stringify([epoch, by, members, out]));
  }
  throws(() => rk(1, "bbbb", m, [], "short"), codec.ProtocolError, "short secret");
  throws(() => rk(1, "bbbb", m, [], "\ud800".repeat(9)), codec.ProtocolError, "lone surrogate");
  const many = Object.fromEntries(Array.from({ length: 257 }, (_, i) => [`p${i}`, ""]));
  throws(() => rk(1, "p0", many), codec.ProtocolError, "257 members");
});

test("rekey: refused from or naming the excluded, twice for one epoch, or a lost race", () => {
  const epochs = new rekey.RoomEpochs({ room: "team" }, "the join secret");
  const first = rk(1, "bbbb", { bbbb: "", me: "" }, ["gus"]);
  eq(epochs.refuses("bbbb", first), null);
  epochs.adopt(first, { room: "team", tag: "new" }, "me");
  eq([epochs.epoch, epochs.by, epochs.key.tag, [...epochs.banned]], [1, "bbbb", "new", ["gus"]]);
  eq(epochs.refuses("bbbb", first), "duplicate");
  eq(epochs.refuses("bbbb", rk(1, "bbbb", { bbbb: "", me: "" }, [], "y".repeat(43))), "a second secret for one epoch");
  eq(epochs.refuses("gus", rk(2, "bbbb", { bbbb: "", me: "" })), "it comes from a peer an earlier re-key excluded");
  eq(epochs.refuses("bbbb", rk(2, "gus", { gus: "", me: "" })), "it comes from a peer an earlier re-key excluded");
  eq(epochs.refuses("bbbb", rk(2, "bbbb", { bbbb: "", me: "", gus: "" })),
    "it names as a member a peer an earlier re-key excluded");
  eq(epochs.refuses("cccc", rk(1, "cccc", { cccc: "", me: "" })), "epoch 1 (by bbbb) wins over it");
  eq(epochs.refuses("aaaa", rk(1, "aaaa", { aaaa: "", me: "" })), null); // the smaller id wins the race
  eq(epochs.refuses("cccc", rk(2, "cccc", { cccc: "", me: "" })), null);
});

test("rekey: at most 6 derivations a minute per link", () => {
  const epochs = new rekey.RoomEpochs({ room: "team" }, "the join secret");
  const allowed = Array.from({ length: 7 }, (_, i) => epochs.allowDerivation("bbbb", 100 + i));
  eq(allowed, [true, true, true, true, true, true, false]);
  eq(epochs.allowDerivation("cccc", 106), true, "another link");
  eq(epochs.allowDerivation("bbbb", 159.5), false, "still within the minute");
  eq(epochs.allowDerivation("bbbb", 160), true, "a minute after the first");
});

test("rekey: only a recorded certificate comes back with the previous key", async () => {
  const old = await roomkey.RoomKey.derive("team", "correct horse battery staple");
  const fresh = await roomkey.RoomKey.derive("team", REKEY_SECRET);
  const epochs = new rekey.RoomEpochs(old, "correct horse battery staple");
  const key = new rekey.EpochKey(epochs);
  const fp = "sha-256 aa:bb";
  const sdp = (f) => `v=0\r\na=ice-ufrag:Uf\r\na=ice-pwd:Pw\r\na=fingerprint:${f}\r\n`;
  const signed = async (k, from, f, type = "offer") => {
    const s = { type, sdp: sdp(f), attempt: "0".repeat(16) };
    return { ...s, auth: await k.authenticate(from, "me", s) };
  };
  epochs.adopt(rk(1, "bbbb", { bbbb: "", ana: fp, cy: "", me: "" }, ["gus"]), fresh, "me", new Map([["cy", "sha-256 cc"]]));
  eq(epochs.entitled.get("cy").fingerprint, "sha-256 cc", "our own link's record");
  await key.check("bbbb", "me", await signed(fresh, "bbbb", "sha-256 dd")); // the new key: fine
  eq(epochs.entitled.has("bbbb"), false, "bbbb showed the epoch");
  // to ana, who may not have it: our descriptions carry the old key
  const out = { type: "answer", sdp: sdp("sha-256 ee") };
  eq(await key.authenticate("me", "ana", out), await old.authenticate("me", "ana", out));
  eq(await key.authenticate("me", "bbbb", out), await fresh.authenticate("me", "bbbb", out));
  await rejects(key.check("ana", "me", await signed(old, "ana", "sha-256 ff")), roomkey.RoomSecretError, "other cert");
  await rejects(key.check("gus", "me", await signed(old, "gus", fp)), roomkey.RoomSecretError, "excluded");
  await rejects(key.check("ana", "me", await signed(fresh, "ana", fp).then((s) => ({ ...s, auth: "0".repeat(64) }))),
    roomkey.RoomSecretError, "wrong auth");
  const relaySignal = { type: "relay", session: "s", key: "k", via: "" };
  await rejects(key.check("ana", "me", { ...relaySignal, auth: await old.authenticate("ana", "me", relaySignal) }),
    roomkey.RoomSecretError, "relay");
  await key.check("ana", "me", await signed(old, "ana", fp)); // ana's certificate, the old key
  await key.check("ana9", "me", await signed(old, "ana9", fp)); // ana under a new id (server restart)
  eq(epochs.wayBack("ana9") === old, true, "the new id is such a member too");
  await key.check("ana9", "me", await signed(fresh, "ana9", fp)); // it has the new epoch now
  eq([epochs.entitled.has("ana"), epochs.entitled.has("ana9")], [false, false]);
  await rejects(key.check("ana", "me", await signed(old, "ana", fp)), roomkey.RoomSecretError, "confirmed");
});

test("rekey: Rekeying adopts, drops non-members, hands it on, and refuses what it must", async () => {
  const newKey = { room: "team", tag: "new" };
  const derived = [];
  const sent = [];
  const link = (pid) => ({ peerId: pid, send: (wire, seq) => sent.push([pid, JSON.parse(wire), seq]) });
  const client = {
    peerId: "me", closing: false, seq: 4, links: new Map(["bbbb", "cy", "gus"].map((p) => [p, link(p)])),
    errors: [], dropped: [], adopted: [],
    log() {}, reportError(pid, e) { this.errors.push([pid, e.name, e.message]); },
    dropMember(pid) { this.dropped.push(pid); this.links.delete(pid); },
    async rekeyed(r) { this.adopted.push(r.epoch); },
  };
  const r = new rekey.Rekeying(client, { room: "team" }, "the join secret", async (room, secret) => {
    derived.push([room, secret]);
    return newKey;
  });
  client.rekeying = r;
  const payload = { v: 1, type: "rekey", seq: 9, epoch: 1, secret: REKEY_SECRET, by: "bbbb",
    members: { bbbb: "", cy: "", me: "" }, out: ["gus"] };
  await r.onMessage("bbbb", payload);
  eq(derived, [["team", REKEY_SECRET]]);
  eq([client.adopted, client.dropped, r.epochs.key === newKey, client.errors], [[1], ["gus"], true, []]);
  eq(sent.map(([pid, msg, seq]) => [pid, msg.type, msg.seq, seq, msg.epoch, msg.by]),
    [["bbbb", "rekey", 5, 5, 1, "bbbb"], ["cy", "rekey", 5, 5, 1, "bbbb"]]);
  eq([...r.epochs.entitled.keys()], ["cy"], "bbbb sent it: it has it");
  await r.onMessage("cy", payload); // the flood back: costs nothing
  eq([derived.length, [...r.epochs.entitled.keys()], client.errors], [1, [], []]);
  sent.length = 0;
  r.onLinkOpen("cy");
  eq(sent, [], "cy has it");
  await r.onMessage("cy", { ...payload, secret: "y".repeat(43) });
  await r.onMessage("gus", { ...payload, epoch: 5, by: "gus", members: { gus: "", me: "" }, out: [] });
  await r.onMessage("cy", { ...payload, epoch: 2, by: "cy", members: { cy: "" }, out: [] });
  await r.onMessage("cy", { ...payload, epoch: "two" });
  await r.onMessage("cy", { ...payload, by: "cccc", members: { cccc: "", me: "" } }); // lost race: not an error
  eq(client.errors.map(([pid, name, message]) => [pid, name, message.replace(/^a re-key refused: /, "")]), [
    ["cy", "RoomSecretError", "a second secret for one epoch"],
    ["gus", "RoomSecretError", "it comes from a peer an earlier re-key excluded"],
    ["cy", "RoomSecretError", "it does not name us as a member"],
    ["cy", "ProtocolError", "rekey: 'epoch' must be an integer from 1 to 9007199254740991"],
  ]);
  eq([derived.length, r.epochs.epoch], [1, 1], "nothing derived, nothing changed");
  client.errors.length = 0;
  for (let e = 2; e < 2 + rekey.MAX_REKEYS_PER_MINUTE; e++) {
    await r.onMessage("cy", { ...payload, epoch: e, by: "cy", members: { cy: "", me: "", bbbb: "" }, out: [] });
  }
  eq(client.errors.map(([, , m]) => m), ["a re-key refused: more than 6 in a minute"]);
  eq([r.epochs.epoch, derived.length], [6, 6], "the one not naming us took one of cy's 6");
  eq(r.epochs.entitled.has("bbbb"), true);
  sent.length = 0;
  r.onLinkOpen("bbbb"); // a member that may have missed epoch 6 gets it first
  eq(sent.map(([pid, msg]) => [pid, msg.epoch, msg.by]), [["bbbb", 6, "cy"]]);
});

// ------------------------------------------------------------------------------------

window.results = [];
for (const [name, fn] of tests) {
  try {
    await fn();
    window.results.push({ name, ok: true });
  } catch (exc) {
    window.results.push({ name, ok: false, error: String(exc?.stack ?? exc) });
  }
}
window.done = true;
