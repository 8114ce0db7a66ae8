// veil-sdk: a thin helper over grpc-js clients made from the generated descriptor veil.desc
// (sdk-stubs/generate.sh). Promise-based; errors are VeilError with .code, .details, .reason.
//
//   const veil = require('veil-sdk');
//   const bob = await veil.connect();                 // $VEIL_API, else the default socket
//   await bob.createListener('listener');             // trust everyone (each message says who)
//   await bob.createRelay('/tcp/hub:4000', {name: 'bob'});
//   bob.serve('echoer', (message) => message.reply(message.payload));
//
//   const channel = await alice.openChannel('/tcp/hub:4000/service/forward_to_bob/service/listener');
//   const reply = await alice.request(channel.route + '/service/echoer', 'Hello');
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');
const descriptorExt = require('protobufjs/ext/descriptor');

const descriptorBytes = fs.readFileSync(path.join(__dirname, 'veil.desc'));
const definition = protoLoader.loadFileDescriptorSetFromBuffer(descriptorBytes, {
  keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true,
});
const v1 = grpc.loadPackageDefinition(definition).veil.v1;
const root = protobuf.Root.fromDescriptor(descriptorExt.FileDescriptorSet.decode(descriptorBytes));
const RpcStatus = root.lookupType('google.rpc.Status');
const ErrorInfo = root.lookupType('google.rpc.ErrorInfo');

// Where veild serves by default: $VEIL_API, else unix:$VEIL_STATE_DIR/api.sock, else
// unix:$HOME/.veil/api.sock.
function defaultApi() {
  if (process.env.VEIL_API) return process.env.VEIL_API;
  const state = process.env.VEIL_STATE_DIR || path.join(os.homedir(), '.veil');
  return 'unix:' + path.join(state, 'api.sock');
}

class VeilError extends Error {
  constructor(error) {
    super(`${grpc.status[error.code] || error.code}: ${error.details}`);
    this.code = error.code;
    this.details = error.details;
    this.reason = '';
    const [bin] = (error.metadata && error.metadata.get('grpc-status-details-bin')) || [];
    if (bin) {
      for (const any of RpcStatus.decode(bin).details) {
        if (any.type_url.endsWith('/google.rpc.ErrorInfo')) this.reason = ErrorInfo.decode(any.value).reason;
      }
    }
  }
}

// A veil.v1.TrustPolicy; several options mean any of them. Default: everyone.
function trust({everyone = false, identifier, identifiers, imported = false} = {}) {
  const parts = [];
  if (everyone) parts.push({trust_everyone: true});
  if (identifier) parts.push({trust_identifier: identifier});
  if (identifiers) parts.push({trust_identifiers: {identifiers}});
  if (imported) parts.push({trust_imported: true});
  if (parts.length === 0) return {trust_everyone: true};
  return parts.length === 1 ? parts[0] : {any_of: {policies: parts}};
}

const asBuffer = (payload) => (Buffer.isBuffer(payload) ? payload : Buffer.from(String(payload)));

// A delivery: payload (Buffer), text, sender ({origin, identifier, channel}), returnRoute; reply().
class Message {
  constructor(serve, delivery) {
    this.payload = delivery.payload;
    this.sender = delivery.sender || {};
    this.returnRoute = delivery.return_route;
    this.sequence = delivery.sequence;
    this._serve = serve;
  }
  get text() { return this.payload.toString('utf8'); }
  reply(payload) { this._serve.send(this.returnRoute, payload); }
}

class Sidecar {
  constructor(target, {timeoutMs = 30000} = {}) {
    this.target = target || defaultApi();
    this.timeoutMs = timeoutMs;
    const credentials = grpc.credentials.createInsecure();
    const options = {'grpc.max_receive_message_length': 64 << 20};
    this.node = new v1.NodeService(this.target, credentials, options);
    this.identities = new v1.IdentityService(this.target, credentials, options);
    this.channels = new v1.SecureChannelService(this.target, credentials, options);
    this.relays = new v1.RelayService(this.target, credentials, options);
    this.messaging = new v1.MessagingService(this.target, credentials, options);
  }

  // Resolves once the sidecar answers (it may still be starting).
  waitReady(waitMs = 60000) {
    return new Promise((resolve, reject) => {
      this.node.waitForReady(Date.now() + waitMs, (error) => {
        if (error) reject(new Error(`no veil sidecar answers at ${this.target}; is veild running?`));
        else resolve(this);
      });
    });
  }

  _call(client, method, request, timeoutMs = this.timeoutMs) {
    return new Promise((resolve, reject) => {
      client[method](request, {deadline: Date.now() + timeoutMs}, (error, response) => {
        if (error) reject(new VeilError(error));
        else resolve(response);
      });
    });
  }

  getNode() { return this._call(this.node, 'GetNode', {}); }
  identity(name = 'default') { return this._call(this.identities, 'GetIdentity', {name}); }

  createListener(address, {trustPolicy = trust(), identity = 'default'} = {}) {
    return this._call(this.channels, 'CreateSecureChannelListener',
                      {address, identity, trust_policy: trustPolicy});
  }

  openChannel(route, {trustPolicy = trust(), identity = 'default', timeoutMs = 10000} = {}) {
    return this._call(this.channels, 'CreateSecureChannel',
                      {route, identity, trust_policy: trustPolicy, timeout_ms: timeoutMs},
                      this.timeoutMs + timeoutMs);
  }

  createRelay(hubRoute, {name = '', identity = 'default', hubTrustPolicy} = {}) {
    const request = {hub_route: hubRoute, name, identity};
    if (hubTrustPolicy) request.hub_trust_policy = hubTrustPolicy;
    return this._call(this.relays, 'CreateRelay', request);
  }

  send(route, payload) {
    return this._call(this.messaging, 'Send', {messages: [{route, payload: asBuffer(payload)}]});
  }

  // Sends and waits for one reply; resolves to a Message (without reply()).
  async request(route, payload, timeoutMs = this.timeoutMs) {
    const response = await this._call(this.messaging, 'Request',
                                      {message: {route, payload: asBuffer(payload)}}, timeoutMs);
    return new Message(null, response.reply);
  }

  // Serves `address`: calls handler(message) for each delivery (awaiting it if it returns a
  // promise) and acknowledges each batch once handled. Returns {opened, done, close()}:
  // `opened` resolves to the served route, `done` when the stream ends.
  serve(address, handler, {window = 0} = {}) {
    const call = this.messaging.Serve();
    let batchId = 0;
    let chain = Promise.resolve();
    const serve = {
      send(route, payload) {
        call.write({send: {batch_id: ++batchId, messages: [{route, payload: asBuffer(payload)}]}});
      },
      close() { call.cancel(); },
      failures: [],
    };
    serve.opened = new Promise((resolve, reject) => {
      serve.done = new Promise((resolveDone, rejectDone) => {
        call.on('data', (response) => {
          if (response.opened) resolve(response.opened.route);
          if (response.send_result) serve.failures.push(...response.send_result.failures);
          if (!response.deliveries) return;
          const deliveries = response.deliveries.deliveries;
          chain = chain.then(async () => {
            for (const delivery of deliveries) await handler(new Message(serve, delivery));
            call.write({ack: {sequence: deliveries[deliveries.length - 1].sequence}});
          });
        });
        call.on('error', (error) => {
          if (error.code === grpc.status.CANCELLED) return resolveDone();
          reject(new VeilError(error));
          rejectDone(new VeilError(error));
        });
        call.on('end', resolveDone);
      });
      serve.done.catch(() => {});
    });
    call.write({open: {address, window}});
    return serve;
  }

  close() {
    for (const client of [this.node, this.identities, this.channels, this.relays, this.messaging]) client.close();
  }
}

// Connects and waits until the sidecar answers.
function connect(target, options) {
  return new Sidecar(target, options).waitReady();
}

module.exports = {connect, defaultApi, trust, Sidecar, Message, VeilError, v1};
