// Display names and room names, by the rules of p2p_nb/names.py (clean_name,
// name_key) and the server's room pattern (docs/protocol.md, "Limits"). The
// page checks what the user types with them (the reason shown at the field,
// never a silent cut), and a member applies them to the names it opens from
// sealed profiles, which the server never sees in a room with a secret.

export const MAX_NAME_CHARS = 64;
export const MAX_ROOM_CHARS = 64;
const ROOM_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
/** Controls, format characters (bidi overrides and isolates, zero-width
 * space/joiners, BOM), lone surrogates, private use, line/paragraph separators. */
const FORBIDDEN = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Zl}\p{Zp}]/u;
// Python's str.strip(): Unicode White_Space (JS trim() also takes U+FEFF,
// which FORBIDDEN refuses before stripping anyway)
const OUTER_SPACE = /^[\s\u001c-\u001f\u0085]+|[\s\u001c-\u001f\u0085]+$/gu;

/** A name or room the rules refuse; `code` is the server's error code for it. */
export class NameProblem extends Error {
  constructor(code, message) {
    super(message);
    this.name = "NameProblem";
    this.code = code;
  }
}

const codePoints = (text) => [...text].length;

/** The name as the room will show it (NFC, outer whitespace stripped), or
 * throw NameProblem. The message names the offending code point, never
 * repeats the name (it would carry the characters that make it dangerous). */
export function cleanName(name, maxLength = MAX_NAME_CHARS) {
  if (typeof name !== "string") throw new NameProblem("invalid", "a name is text");
  const bad = FORBIDDEN.exec(name);
  if (bad !== null) {
    const cp = bad[0].codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
    throw new NameProblem("invalid_name",
      `a name must not contain U+${cp}: control, format, bidi and zero-width characters are refused`);
  }
  const cleaned = name.normalize("NFC").replace(OUTER_SPACE, "");
  const length = codePoints(cleaned);
  if (length > maxLength) {
    throw new NameProblem("invalid_name", `a name has at most ${maxLength} characters (this one has ${length})`);
  }
  return cleaned;
}

/** What the user typed as their name, checked as the server will: also not empty. */
export function checkOwnName(name) {
  const cleaned = cleanName(name);
  if (cleaned === "") throw new NameProblem("invalid_name", "type a name others will see (not only spaces)");
  return cleaned;
}

/** A room name as the server accepts it, or throw NameProblem with the rule. */
export function checkRoom(room) {
  const trimmed = String(room).trim();
  const length = codePoints(trimmed);
  if (length === 0) throw new NameProblem("invalid_room", "type the room's name");
  if (length > MAX_ROOM_CHARS) {
    throw new NameProblem("invalid_room", `a room name has at most ${MAX_ROOM_CHARS} characters (this one has ${length})`);
  }
  if (!ROOM_RE.test(trimmed)) {
    throw new NameProblem("invalid_room",
      "a room name is letters, digits and . _ - only, starting with a letter or digit");
  }
  return trimmed;
}

/** What two names must differ in to be told apart: case, width and spacing do not count. */
export function nameKey(name) {
  // toLowerCase plus the folds where Python's casefold() goes further
  const folded = name.normalize("NFKC").toLowerCase().replace(/ß/g, "ss").replace(/ς/g, "σ").normalize("NFKC");
  return folded.split(/\s+/u).filter(Boolean).join(" ");
}
