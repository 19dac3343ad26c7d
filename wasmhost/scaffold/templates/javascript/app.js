// __NAME__ — a wasmhost function (a wasmhost:guest component, QuickJS): pushes `text` to `user`'s devices.
//
// input:  {"user": "alice", "text": "Your order A-17 has shipped"}
// output: notified alice: 1/1 devices
// return: 0 ok, 1 bad input, 2 the send failed, 3 an unexpected exception (its stack is logged)
//
// No console, files, clock or network: use log.
import { input, log, outputWrite, pushSendToUser, pushWait } from 'wasmhost:guest/host@1.0.0';

function run() {
  let user;
  let text;
  try {
    ({ user, text } = JSON.parse(input()));
  } catch (err) {
    user = undefined;
  }
  if (typeof user !== 'string' || typeof text !== 'string') {
    log('error', 'bad input: expected {"user": "...", "text": "..."}');
    return 1;
  }
  const ticket = pushSendToUser(user, JSON.stringify({ title: '__NAME__', body: text }));
  let report;
  try {
    if (ticket < 0) throw ticket;
    report = JSON.parse(pushWait(ticket)); // push-wait throws the code when the send failed
  } catch (err) {
    const code = typeof err === 'number' ? err : (err && err.payload !== undefined ? err.payload : String(err));
    log('error', `send to ${user} failed: code ${code}`);
    return 2;
  }
  outputWrite(`notified ${user}: ${report.devices_succeeded}/${report.devices_attempted} devices`);
  return 0;
}

export function handle() {
  try {
    return run();
  } catch (err) { // say what and where, then fail the invocation
    log('error', `uncaught: ${err && err.stack ? `${err}\n${err.stack}` : String(err)}`);
    return 3;
  }
}
