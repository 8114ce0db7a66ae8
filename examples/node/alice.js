#!/usr/bin/env node
// Alice: a secure channel to Bob's listener through the hub; echoes each stdin line.
// alice.js API LISTENER_ROUTE   e.g. /tcp/127.0.0.1:4000/service/forward_to_bob/service/listener
const readline = require('readline');
const veil = require('veil-sdk');

(async () => {
  const alice = await veil.connect(process.argv[2]);
  const channel = await alice.openChannel(process.argv[3]);
  console.log('[✓] End-to-end encrypted secure channel was established with', channel.remote_identifier);
  const lines = readline.createInterface({input: process.stdin});
  process.on('SIGINT', () => lines.close());  // Ctrl-C: stop reading, then clean up
  try {
    for await (const line of lines) {
      const reply = await alice.request(channel.route + '/service/echoer', line);
      console.log('Alice received an echo:', reply.text);
    }
  } finally {
    await alice.closeChannel(channel.address);  // done: the channel ends on both sidecars
    alice.close();
  }
})().catch((error) => { console.error('alice:', error.message); process.exit(1); });
