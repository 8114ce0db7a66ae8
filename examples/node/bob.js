#!/usr/bin/env node
// Bob: a secure channel listener, a relay on the hub, and an echoer. bob.js API [HUB_ROUTE]
const veil = require('veil-sdk');

(async () => {
  const bob = await veil.connect(process.argv[2]);
  await bob.ensureListener('listener');  // anyone may open a channel; each message says who sent it
  console.log('[✓] Secure channel listener at /service/listener as', (await bob.identity()).public_identity.identifier);
  if (process.argv[3]) {
    const relay = await bob.ensureRelay(process.argv[3]);  // the hub picks the name; kept on rerun
    console.log('[✓] Relay was created on the hub.\nForwarding address for Bob is:', relay.address);
  }
  bob.serve('echoer', (message) => {
    console.log(`[✓] Address: echoer, Received: ${message.text} (from ${message.sender.identifier})`);
    message.reply(message.payload);
  });
})().catch((error) => { console.error('bob:', error.message); process.exit(1); });
