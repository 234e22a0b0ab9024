// Event JSON byte for byte as the Go publisher writes it (encoding/json's
// Marshal of the pkg/event structs), and the idempotency fingerprint of
// publisher/publisher.go.
import { createHash } from 'node:crypto';

/** A member value of an event's data. */
export type Scalar = string | number | boolean | null;

/** Event data: its members in the order of the Go struct. */
export type EventData = Readonly<Record<string, Scalar>>;

const goEscapes: Readonly<Record<string, string>> = {
  '<': '\\u003c',
  '>': '\\u003e',
  '&': '\\u0026',
  '\u2028': '\\u2028',
  '\u2029': '\\u2029',
};

/**
 * The JSON of data as Go's json.Marshal writes it: JSON.stringify agrees on
 * everything (member order as given, `\b \f \n \r \t`, other control
 * characters as lowercase `\u00xx`, DEL and non-ASCII raw) except that Go
 * also escapes `<`, `>`, `&`, U+2028 and U+2029. Outside strings none of
 * these occur, so replacing them in the output is exact.
 */
export function goJSON(data: EventData): string {
  return JSON.stringify(data).replace(/[<>&\u2028\u2029]/g, (c) => goEscapes[c] ?? c);
}

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * s with each lone surrogate replaced by U+FFFD, as a Go string holds it
 * (json.Marshal writes invalid UTF-8 as U+FFFD; JSON.stringify would write
 * `\ud800`, which Go decoders then read as U+FFFD anyway).
 */
export function wellFormed(s: string): string {
  return s.replace(loneSurrogate, '\uFFFD');
}

/**
 * The fingerprint of an event for an idempotent publish, as Go's
 * `fingerprint` computes it: the first 16 bytes, in hex, of SHA-256 over the
 * op, the event JSON without `timestamp` and with its members sorted (Go
 * marshals a map[string]json.RawMessage, so the values keep their Go
 * encoding), and the report, each followed by a zero byte.
 */
export function fingerprint(op: string, data: EventData, report: string): string {
  const canon: Record<string, Scalar> = {};
  for (const key of Object.keys(data).sort()) {
    if (key !== 'timestamp') canon[key] = data[key] ?? null;
  }
  const h = createHash('sha256');
  for (const part of [op, goJSON(canon), report]) {
    h.update(part, 'utf8');
    h.update(zero);
  }
  return h.digest().subarray(0, 16).toString('hex');
}

const zero = new Uint8Array([0]);
