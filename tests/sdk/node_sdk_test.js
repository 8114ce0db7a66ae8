#!/usr/bin/env node
// The Node SDK (sdk-stubs/node/veil.js) against real veild processes: serve() on the serve
// socket, on gRPC when the socket cannot be reached, the sidecar's refusals and its status when
// it ends the stream. Usage: node_sdk_test.js VEILD
'use strict';
const assert = require('assert');
const {spawn} = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const veil = require('../../sdk-stubs/node/veil.js');

const VEILD = process.argv[2];

// One veild in a temp dir; resolves once it logs " ready: ".
async function startNode(...extra) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'veil-node-sdk-'));
  const proc = spawn(VEILD, ['--state-dir', path.join(dir, 'state'), ...extra], {stdio: ['ignore', 'pipe', 'pipe']});
  const node = {dir, proc, log: '', api: 'unix:' + path.join(dir, 'state', 'api.sock')};
  node.exited = new Promise((resolve) => proc.on('exit', (code) => resolve(code)));
  for (const stream of [proc.stdout, proc.stderr]) stream.on('data', (d) => { node.log += d; });
  const deadline = Date.now() + 30000;
  while (!node.log.includes(' ready: ')) {
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error('veild did not start:\n' + node.log);
    await new Promise((r) => setTimeout(r, 50));
  }
  node.stop = async () => {
    if (proc.exitCode === null) proc.kill('SIGTERM');
    await node.exited;
    fs.rmSync(dir, {recursive: true, force: true});
  };
  return node;
}

// Waits until the node's log (read from its output pipe) matches `pattern`.
async function waitForLog(node, pattern) {
  for (const deadline = Date.now() + 20000; !pattern.test(node.log);) {
    if (Date.now() > deadline) assert.fail(`no ${pattern} in the log:\n${node.log}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// Runs body(node, sidecar) against a fresh veild started with `args`, then stops it.
async function withNode(args, body) {
  const node = await startNode(...args);
  const sidecar = await veil.connect(node.api);
  try {
    await body(node, sidecar);
  } finally {
    sidecar.close();
    await node.stop();
  }
}

async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail('expected a rejection');
}

const tests = {
  servesOnTheSocketAndRefusalsCarryTheirReasons: () => withNode(['--api-max-serve-streams', '1'], async (node, sidecar) => {
    const echoer = sidecar.serve('echoer', (m) => m.reply(m.payload));
    assert.strictEqual(await echoer.opened, '/service/echoer');
    await waitForLog(node, /app serves address echoer \(serve socket\)/);
    for (const text of ['hello', 'ünïcödé ✓']) {
      assert.strictEqual((await sidecar.request('/service/echoer', text)).text, text);
    }
    // The one stream slot is taken: refused with its code and reason, on opened and done.
    const second = sidecar.serve('second', () => {});
    const refused = await rejection(second.opened);
    assert.ok(refused instanceof veil.VeilError, refused.stack);
    assert.strictEqual(refused.reason, 'TOO_MANY_STREAMS');
    assert.strictEqual((await rejection(second.done)).reason, 'TOO_MANY_STREAMS');
    // close() ends the stream; done resolves, the slot is free for a gRPC stream.
    echoer.close();
    await echoer.done;
    let grpcStream;
    for (let i = 0; ; ++i) {  // the sidecar frees the slot once it has seen the close
      grpcStream = sidecar.serve('echoer', (m) => m.reply(m.payload), {transport: 'grpc'});
      const opened = await grpcStream.opened.catch((error) => error);
      if (typeof opened === 'string') break;
      assert.ok(i < 100 && opened.reason === 'TOO_MANY_STREAMS', String(opened));
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.strictEqual((await sidecar.request('/service/echoer', 'via gRPC')).text, 'via gRPC');
    await waitForLog(node, /app serves address echoer \(gRPC\)/);
    grpcStream.close();
    await grpcStream.done;
  }),

  aDeliveredSendResolvesOnceTheAppAckedIt: () => withNode([], async (node, sidecar) => {
    let release;
    const handled = new Promise((resolve) => { release = resolve; });
    const got = [];
    const sink = sidecar.serve('sink', async (m) => { got.push(m.text); await handled; });
    await sink.opened;
    let settled = false;
    const sent = sidecar.send('/service/sink', 'hello', {delivered: true});
    sent.then(() => { settled = true; }, () => { settled = true; });
    await new Promise((r) => setTimeout(r, 300));
    assert.deepStrictEqual(got, ['hello']);
    assert.strictEqual(settled, false, 'delivered before the app had handled it');
    release();  // the handler returns: the batch is acked, the receipt comes
    assert.strictEqual((await sent).accepted, 1);
    // Without {delivered: true}: resolved once handed on, whatever the app does after.
    assert.strictEqual((await sidecar.send('/service/sink', 'handed on')).accepted, 1);
    sink.close();
    await sink.done;
    // An app that goes without acking: its message is reported dropped, not lost in silence.
    const fragile = sidecar.serve('fragile', () => { throw new Error('handler broke'); });
    await fragile.opened;
    const dropped = await rejection(sidecar.send('/service/fragile', 'x', {delivered: true}));
    assert.ok(dropped instanceof veil.VeilError, dropped.stack);
    assert.strictEqual(dropped.reason, 'MESSAGE_DROPPED');
    await rejection(fragile.done);
    // A delivered send the sidecar refuses rejects with its reason.
    const refused = await rejection(
        sidecar.send('/tcp/127.0.0.1:9/service/x', 'x', {delivered: true, timeoutMs: 5000}));
    assert.strictEqual(refused.reason, 'PLAINTEXT_EGRESS_REFUSED');
  }),

  aBadAddressIsRefusedWithItsReason: () => withNode([], async (node, sidecar) => {
    const bad = sidecar.serve('not/an address', () => {});
    const refused = await rejection(bad.opened);
    assert.strictEqual(refused.code, 3);  // INVALID_ARGUMENT
    assert.strictEqual(refused.reason, 'INVALID_ADDRESS');
  }),

  aHandlerThatThrowsEndsTheStreamWithItsError: () => withNode([], async (node, sidecar) => {
    const failing = sidecar.serve('fragile', () => { throw new Error('handler broke'); });
    await failing.opened;
    await sidecar.send('/service/fragile', 'ping');
    assert.strictEqual((await rejection(failing.done)).message, 'handler broke');
    // The address is free again once the sidecar has seen the stream go.
    for (let i = 0; ; ++i) {
      const again = sidecar.serve('fragile', (m) => m.reply(m.payload));
      const opened = await again.opened.catch((error) => error);
      if (typeof opened === 'string') {
        assert.strictEqual((await sidecar.request('/service/fragile', 'again')).text, 'again');
        again.close();
        break;
      }
      // (Still held: ALREADY_EXISTS, reason ADDRESS_IN_USE, until the sidecar has seen it go.)
      assert.ok(i < 100 && opened.code === 6 && opened.reason === 'ADDRESS_IN_USE', String(opened));
      await new Promise((r) => setTimeout(r, 50));
    }
  }),

  theSidecarsShutdownEndsTheStreamWithItsStatus: () => withNode([], async (node, sidecar) => {
    const sender = await veil.connect(node.api);
    try {
      const app = sidecar.serve('late_replier', async (m) => {
        node.proc.kill('SIGTERM');
        assert.strictEqual(await node.exited, 0);
        m.reply('too late');  // the stream is gone: nothing to write to, no crash
      });
      await app.opened;
      await sender.send('/service/late_replier', 'ping');
      const ended = await rejection(app.done);
      assert.strictEqual(ended.code, 14);  // UNAVAILABLE
      assert.strictEqual(ended.reason, 'NODE_SHUTTING_DOWN');
    } finally {
      sender.close();
    }
  }),

  async fallsBackToGrpcWhenTheSocketCannotBeReached() {
    const elsewhere = fs.mkdtempSync(path.join(os.tmpdir(), 'veil-node-sdk-sock-'));
    try {
      await withNode(['--serve-socket', path.join(elsewhere, 'serve.sock')], async (node, sidecar) => {
        fs.unlinkSync(path.join(elsewhere, 'serve.sock'));  // as if in another container
        const echoer = sidecar.serve('echoer', (m) => m.reply(m.payload));
        assert.strictEqual(await echoer.opened, '/service/echoer');
        assert.strictEqual((await sidecar.request('/service/echoer', 'fallback')).text, 'fallback');
        await waitForLog(node, /app serves address echoer \(gRPC\)/);
        // Asked for the socket only: a clear error instead of a fallback.
        const strict = sidecar.serve('strict', () => {}, {transport: 'socket'});
        assert.match((await rejection(strict.opened)).message, /cannot connect to the serve socket/);
        echoer.close();
        await echoer.done;
      });
    } finally {
      fs.rmSync(elsewhere, {recursive: true, force: true});
    }
  },
};

(async () => {
  let failed = 0;
  for (const [name, test] of Object.entries(tests)) {
    try {
      await test();
      console.log(`ok ${name}`);
    } catch (error) {
      failed += 1;
      console.log(`FAILED ${name}\n${error.stack}`);
    }
  }
  process.exit(failed === 0 ? 0 : 1);
})();
