// A componentize-qjs probe for the sandbox tests; the same ops as probes/app.py.
import { input, log, outputWrite, pushSendToUser, pushWait } from 'wasmhost:guest/host@1.0.0';

export function handle() {
  const results = [];
  for (const op of JSON.parse(input())) {
    switch (op[0]) {
      case 'send':
        results.push(pushSendToUser(op[1], op[2]));
        break;
      case 'wait':
        try {
          results.push(JSON.parse(pushWait(op[1])).devices_attempted);
        } catch (err) {
          results.push(typeof err === 'number' ? err : err.payload);
        }
        break;
      case 'output':
        results.push(outputWrite('x'.repeat(op[1])));
        break;
      case 'log': {
        let code = 0;
        for (let i = 0; i < op[1]; i++) code = log('info', 'y'.repeat(op[2]));
        results.push(code);
        break;
      }
      case 'spin': {
        let n = 0;
        for (;;) n++;
      }
      case 'alloc':
        try {
          const block = new Uint8Array(op[1] * 1048576);
          block[block.length - 1] = 1;
          results.push('ok');
        } catch (err) {
          results.push('failed');
        }
        break;
    }
  }
  log('notice', 'results ' + JSON.stringify(results));
  return 0;
}
