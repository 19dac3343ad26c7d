// __NAME__ — a wasmhost function: pushes `text` to `user`'s devices and says how many got it.
//
// input:  {"user": "alice", "text": "Your order A-17 has shipped"}
// output: notified alice: 1/1 devices
// return: 0 ok, 1 bad input, 2 the send was refused, 3 the wait failed (each logged)
//
// A failed assert or a thrown error is logged with its message and location, then traps
// (build.sh routes AssemblyScript's abort to the SDK's `abort`).
import * as wasmhost from "./wasmhost";
import { Kind, Level, quote } from "./wasmhost";

export function handle(): i32 {
  const doc = wasmhost.parseJSON(wasmhost.input());
  const user = doc !== null && doc.kind == Kind.Object ? doc.get("user") : null;
  const text = doc !== null && doc.kind == Kind.Object ? doc.get("text") : null;
  if (user === null || user.kind != Kind.String || text === null || text.kind != Kind.String) {
    wasmhost.log(Level.Error, 'bad input: expected {"user": "...", "text": "..."}');
    return 1;
  }
  const ticket = wasmhost.send(user.s, '{"title":"__NAME__","body":' + quote(text.s) + "}");
  if (ticket < 0) {
    wasmhost.log(Level.Error, "send to " + user.s + " refused: code " + ticket.toString());
    return 2;
  }
  const waited = wasmhost.wait(ticket);
  const report = waited.code == wasmhost.OK ? wasmhost.parseReport(waited.report) : null;
  if (report === null) {
    wasmhost.log(Level.Error, "send to " + user.s + " failed: code " + waited.code.toString());
    return 3;
  }
  wasmhost.output("notified " + user.s + ": " + report.devicesSucceeded.toString() + "/" +
    report.devicesAttempted.toString() + " devices");
  return 0;
}
