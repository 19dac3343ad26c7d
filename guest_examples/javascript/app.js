// notify-followers as a wasmhost:guest component (componentize-qjs, QuickJS).
//
// Input:  {"author": "...", "followers": ["...", ...], "text": "..."}
// Output: {"sent": n, "failed": m, "no_devices": k}
//
// Every send is started before any is awaited, so deliveries run concurrently on the host.
import { input, log, outputWrite, pushSendToUser, pushWait } from 'wasmhost:guest/host@1.0.0';

const BAD_INPUT = 1; // handle's own error code: the input is not what this function expects

function parseInput(text) {
  const doc = JSON.parse(text);
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new Error('input must be a JSON object');
  const { author, followers, text: body } = doc;
  if (typeof author !== 'string' || typeof body !== 'string') throw new Error('"author" and "text" must be strings');
  if (!Array.isArray(followers) || !followers.every((f) => typeof f === 'string')) {
    throw new Error('"followers" must be a list of strings');
  }
  return { author, followers, body };
}

// push-wait returns result<string, s32>: the report, or a thrown error carrying the code.
function waitReport(ticket) {
  try {
    return { report: JSON.parse(pushWait(ticket)) };
  } catch (err) {
    return { code: typeof err === 'number' ? err : (err && err.payload !== undefined ? err.payload : String(err)) };
  }
}

export function handle() {
  let req;
  try {
    req = parseInput(input());
  } catch (err) {
    log('error', `bad input: ${err.message}`);
    return BAD_INPUT;
  }
  const message = JSON.stringify({ title: `${req.author} posted`, body: req.body, data: { author: req.author } });
  // Send all first (each returns at once with a ticket), then wait for each.
  const tickets = req.followers.map((user) => pushSendToUser(user, message));
  let sent = 0;
  let failed = 0;
  let noDevices = 0;
  tickets.forEach((ticket, i) => {
    const user = req.followers[i];
    if (ticket < 0) {
      log('warn', `send to ${user} refused: code ${ticket}`);
      failed += 1;
      return;
    }
    const { report, code } = waitReport(ticket);
    if (report === undefined) {
      log('warn', `send to ${user} failed: code ${code}`);
      failed += 1;
    } else if (report.devices_attempted === 0) {
      noDevices += 1;
    } else if (report.ok && report.devices_succeeded > 0) {
      sent += 1;
    } else {
      failed += 1;
    }
  });
  outputWrite(JSON.stringify({ sent, failed, no_devices: noDevices }));
  return 0;
}
