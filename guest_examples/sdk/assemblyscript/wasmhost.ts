// wasmhost guest SDK for AssemblyScript 0.28 (ABI v1, core modules).
//
// AssemblyScript strings are UTF-16; the host speaks UTF-8. Every function here takes and returns
// AssemblyScript strings and does the conversion, so guest code never touches pointers.
// Build with `--runtime stub --use abort=` (no env imports) and export `handle(): i32`; or, to have a
// failed assert or a thrown error logged with its message and location before the trap, with
// `--use abort=<path of this file without .ts>/abort` (see `abort` below).

@external("wasmhost", "input_len")
declare function input_len(): i32;
@external("wasmhost", "input_read")
declare function input_read(buf: usize, cap: i32): i32;
@external("wasmhost", "output_write")
declare function output_write(ptr: usize, len: i32): i32;
@external("wasmhost", "log")
declare function host_log(level: i32, ptr: usize, len: i32): i32;
@external("wasmhost", "push_send_to_user")
declare function push_send_to_user(userPtr: usize, userLen: i32, msgPtr: usize, msgLen: i32): i32;
@external("wasmhost", "push_wait")
declare function push_wait(ticket: i32, out: usize, cap: i32): i32;

// ABI v1 status codes.
export const OK: i32 = 0;
export const INVAL: i32 = -1; // bad argument, unknown ticket, invalid JSON or UTF-8
export const FAULT: i32 = -2; // pointer or length outside guest memory
export const TOO_BIG: i32 = -3; // message over 16 KiB, or user id over 512 bytes
export const NOT_CONFIGURED: i32 = -4; // the namespace has no push provider
export const RATE_LIMITED: i32 = -5;
export const TIMEOUT: i32 = -6; // the invocation deadline passed while waiting
export const UNAVAILABLE: i32 = -7; // store or internal failure
export const LIMIT: i32 = -8; // per-invocation cap on sends, logs or output reached

export enum Level {
  Debug = 0,
  Info = 1,
  Notice = 2,
  Warn = 3,
  Error = 4,
}

/** The whole invocation input, decoded from UTF-8. */
export function input(): string {
  const n = input_len();
  if (n <= 0) return "";
  const buf = new ArrayBuffer(n);
  const got = input_read(changetype<usize>(buf), n);
  return got < 0 ? "" : String.UTF8.decodeUnsafe(changetype<usize>(buf), <usize>got);
}

/** Appends to the invocation output: OK, or LIMIT once the output cap is reached. */
export function output(text: string): i32 {
  const buf = String.UTF8.encode(text);
  return output_write(changetype<usize>(buf), buf.byteLength);
}

/** Records a log line: OK, or LIMIT when the log budget is used up. */
export function log(level: Level, message: string): i32 {
  const buf = String.UTF8.encode(message);
  return host_log(<i32>level, changetype<usize>(buf), buf.byteLength);
}

/** Starts sending `messageJson` to every device of `user`: a ticket > 0 once committed, or a negative code. */
export function send(user: string, messageJson: string): i32 {
  const u = String.UTF8.encode(user);
  const m = String.UTF8.encode(messageJson);
  return push_send_to_user(changetype<usize>(u), u.byteLength, changetype<usize>(m), m.byteLength);
}

/** What `wait` found: `code` is OK and `report` the JSON report, or `code` is negative. */
export class WaitResult {
  constructor(public code: i32, public report: string) {}
}

/** Blocks until the send with this ticket is finished. */
export function wait(ticket: i32): WaitResult {
  let cap = 1024;
  let buf = new ArrayBuffer(cap);
  let n = push_wait(ticket, changetype<usize>(buf), cap);
  if (n > cap) {
    // snprintf rule: the report is longer than the buffer; waiting again is free.
    cap = n;
    buf = new ArrayBuffer(cap);
    n = push_wait(ticket, changetype<usize>(buf), cap);
  }
  if (n < 0) return new WaitResult(n, "");
  return new WaitResult(OK, String.UTF8.decodeUnsafe(changetype<usize>(buf), <usize>n));
}

/** The summary fields of a send report. */
export class Report {
  ok: bool = false;
  devicesAttempted: i32 = 0;
  devicesSucceeded: i32 = 0;
}

/** Parses a report's summary, or null if it is not a report. */
export function parseReport(text: string): Report | null {
  const doc = parseJSON(text);
  if (doc === null || doc.kind != Kind.Object) return null;
  const report = new Report();
  const ok = doc.get("ok");
  const attempted = doc.get("devices_attempted");
  const succeeded = doc.get("devices_succeeded");
  if (ok === null || attempted === null || succeeded === null) return null;
  report.ok = ok.kind == Kind.Bool && ok.b;
  report.devicesAttempted = <i32>attempted.n;
  report.devicesSucceeded = <i32>succeeded.n;
  return report;
}

// ---- JSON: a strict reader into JSONValue, and a string quoter --------------------------------

export enum Kind {
  Null,
  Bool,
  Number,
  String,
  Array,
  Object,
}

export class JSONValue {
  kind: Kind = Kind.Null;
  b: bool = false;
  n: f64 = 0;
  s: string = "";
  items: JSONValue[] = [];
  fields: Map<string, JSONValue> = new Map<string, JSONValue>();

  /** The member `key` of an object, or null. */
  get(key: string): JSONValue | null {
    if (this.kind != Kind.Object || !this.fields.has(key)) return null;
    return this.fields.get(key);
  }
}

const MAX_DEPTH = 64;

class Parser {
  i: i32 = 0;
  ok: bool = true;
  constructor(public s: string) {}

  fail(): JSONValue {
    this.ok = false;
    return new JSONValue();
  }
  ws(): void {
    while (this.i < this.s.length) {
      const c = this.s.charCodeAt(this.i);
      if (c != 0x20 && c != 0x09 && c != 0x0a && c != 0x0d) break;
      this.i++;
    }
  }
  peek(): i32 {
    this.ws();
    return this.i < this.s.length ? this.s.charCodeAt(this.i) : -1;
  }
  word(w: string, v: JSONValue): JSONValue {
    if (this.s.substr(this.i, w.length) != w) return this.fail();
    this.i += w.length;
    return v;
  }
  value(depth: i32): JSONValue {
    if (depth > MAX_DEPTH || !this.ok) return this.fail();
    const c = this.peek();
    const v = new JSONValue();
    if (c == 0x7b) { // {
      this.i++;
      v.kind = Kind.Object;
      if (this.peek() == 0x7d) { this.i++; return v; }
      while (this.ok) {
        this.ws();
        const key = this.string();
        if (!this.ok || this.peek() != 0x3a) return this.fail();
        this.i++;
        const item = this.value(depth + 1);
        if (!v.fields.has(key)) v.fields.set(key, item);
        const d = this.peek();
        this.i++;
        if (d == 0x7d) return v;
        if (d != 0x2c) return this.fail();
      }
      return this.fail();
    }
    if (c == 0x5b) { // [
      this.i++;
      v.kind = Kind.Array;
      if (this.peek() == 0x5d) { this.i++; return v; }
      while (this.ok) {
        v.items.push(this.value(depth + 1));
        const d = this.peek();
        this.i++;
        if (d == 0x5d) return v;
        if (d != 0x2c) return this.fail();
      }
      return this.fail();
    }
    if (c == 0x22) {
      v.kind = Kind.String;
      v.s = this.string();
      return v;
    }
    if (c == 0x74) { v.kind = Kind.Bool; v.b = true; return this.word("true", v); }
    if (c == 0x66) { v.kind = Kind.Bool; return this.word("false", v); }
    if (c == 0x6e) return this.word("null", v);
    if (c == 0x2d || (c >= 0x30 && c <= 0x39)) {
      const start = this.i;
      while (this.i < this.s.length) {
        const d = this.s.charCodeAt(this.i);
        if (!(d == 0x2d || d == 0x2b || d == 0x2e || d == 0x65 || d == 0x45 || (d >= 0x30 && d <= 0x39))) break;
        this.i++;
      }
      v.kind = Kind.Number;
      v.n = parseFloat(this.s.substring(start, this.i));
      if (isNaN(v.n)) return this.fail();
      return v;
    }
    return this.fail();
  }
  string(): string {
    if (this.i >= this.s.length || this.s.charCodeAt(this.i) != 0x22) { this.ok = false; return ""; }
    this.i++;
    let out = "";
    let start = this.i;
    while (this.i < this.s.length) {
      const c = this.s.charCodeAt(this.i);
      if (c == 0x22) {
        out += this.s.substring(start, this.i);
        this.i++;
        return out;
      }
      if (c < 0x20) break;
      if (c != 0x5c) { this.i++; continue; }
      out += this.s.substring(start, this.i);
      const e = this.i + 1 < this.s.length ? this.s.charCodeAt(this.i + 1) : -1;
      this.i += 2;
      if (e == 0x22) out += "\"";
      else if (e == 0x5c) out += "\\";
      else if (e == 0x2f) out += "/";
      else if (e == 0x62) out += "\b";
      else if (e == 0x66) out += "\f";
      else if (e == 0x6e) out += "\n";
      else if (e == 0x72) out += "\r";
      else if (e == 0x74) out += "\t";
      else if (e == 0x75 && this.i + 4 <= this.s.length) {
        const code = I32.parseInt(this.s.substr(this.i, 4), 16);
        if (isNaN(<f64>code) || code < 0) break;
        out += String.fromCharCode(code); // surrogate halves pair up in the UTF-16 string
        this.i += 4;
      } else break;
      start = this.i;
    }
    this.ok = false;
    return "";
  }
}

/** Parses `text`, or returns null if it is not one well-formed JSON value. */
export function parseJSON(text: string): JSONValue | null {
  const p = new Parser(text);
  const v = p.value(0);
  p.ws();
  if (!p.ok || p.i != text.length) return null;
  return v;
}

const HEX = "0123456789abcdef";

/** `s` as a JSON string literal, quotes included. */
export function quote(s: string): string {
  let out = "\"";
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c != 0x22 && c != 0x5c && c >= 0x20) continue;
    out += s.substring(start, i);
    if (c == 0x22) out += "\\\"";
    else if (c == 0x5c) out += "\\\\";
    else if (c == 0x0a) out += "\\n";
    else if (c == 0x0d) out += "\\r";
    else if (c == 0x09) out += "\\t";
    else out += "\\u00" + HEX.charAt(c >> 4) + HEX.charAt(c & 15);
    start = i + 1;
  }
  return out + s.substring(start) + "\"";
}

/** An `abort` that explains itself: logs `abort: <message> at <file>:<line>:<column>`, then traps. */
export function abort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  const what = message !== null ? message : "abort";
  const where = fileName !== null ? fileName : "?";
  log(Level.Error, "abort: " + what + " at " + where + ":" + line.toString() + ":" + column.toString());
  unreachable();
}
