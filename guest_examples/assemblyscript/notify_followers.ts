// notify-followers in AssemblyScript with the wasmhost SDK.
//
// Input:  {"author": "...", "followers": ["...", ...], "text": "..."}
// Output: {"sent": n, "failed": m, "no_devices": k}
// Every send is started before any is awaited, so deliveries run concurrently on the host.
import * as wasmhost from "../sdk/assemblyscript/wasmhost";
import { Kind, Level, quote } from "../sdk/assemblyscript/wasmhost";

const BAD_INPUT: i32 = 1; // handle's own error code: the input is not what this function expects

function badInput(why: string): i32 {
  wasmhost.log(Level.Error, "bad input: " + why);
  return BAD_INPUT;
}

export function handle(): i32 {
  const doc = wasmhost.parseJSON(wasmhost.input());
  if (doc === null || doc.kind != Kind.Object) return badInput("input must be a JSON object");
  const author = doc.get("author");
  const text = doc.get("text");
  const list = doc.get("followers");
  if (author === null || author.kind != Kind.String || text === null || text.kind != Kind.String) {
    return badInput('"author" and "text" must be strings');
  }
  if (list === null || list.kind != Kind.Array) return badInput('"followers" must be a list of strings');
  const followers: string[] = [];
  for (let i = 0; i < list.items.length; i++) {
    if (list.items[i].kind != Kind.String) return badInput('"followers" must be a list of strings');
    followers.push(list.items[i].s);
  }
  const message = '{"title":' + quote(author.s + " posted") + ',"body":' + quote(text.s) +
    ',"data":{"author":' + quote(author.s) + "}}";

  // Send all first (each returns at once with a ticket), then wait for each.
  const tickets: i32[] = [];
  for (let i = 0; i < followers.length; i++) tickets.push(wasmhost.send(followers[i], message));
  let sent = 0, failed = 0, noDevices = 0;
  for (let i = 0; i < followers.length; i++) {
    if (tickets[i] < 0) {
      wasmhost.log(Level.Warn, "send to " + followers[i] + " refused: code " + tickets[i].toString());
      failed++;
      continue;
    }
    const waited = wasmhost.wait(tickets[i]);
    const report = waited.code == wasmhost.OK ? wasmhost.parseReport(waited.report) : null;
    if (report === null) {
      wasmhost.log(Level.Warn, "send to " + followers[i] + " failed: code " + waited.code.toString());
      failed++;
    } else if (report.devicesAttempted == 0) {
      noDevices++;
    } else if (report.ok && report.devicesSucceeded > 0) {
      sent++;
    } else {
      failed++;
    }
  }
  wasmhost.output('{"sent":' + sent.toString() + ',"failed":' + failed.toString() +
    ',"no_devices":' + noDevices.toString() + "}");
  return 0;
}
