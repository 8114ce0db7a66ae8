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
const net = require('net');
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
const ServeRequest = root.lookupType('veil.v1.ServeRequest');
const ServeResponse = root.lookupType('veil.v1.ServeResponse');

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

// A VeilError from a google.rpc.Status (the serve socket's `closed`), as if from a gRPC call.
function statusError(status) {
  const bin = RpcStatus.encode(status).finish();
  return new VeilError({code: status.code, details: status.message,
                        metadata: {get: () => [Buffer.from(bin)]}});
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

const DEFAULT_RECEIVE_LIMIT = 64 << 20;  // the sidecar's default --api-max-request-bytes

class Sidecar {
  constructor(target, {timeoutMs = 30000} = {}) {
    this.target = target || defaultApi();
    this.timeoutMs = timeoutMs;
    this._open(DEFAULT_RECEIVE_LIMIT);
  }

  _open(receiveLimit) {
    const credentials = grpc.credentials.createInsecure();
    const options = {'grpc.max_receive_message_length': receiveLimit};
    this.node = new v1.NodeService(this.target, credentials, options);
    this.identities = new v1.IdentityService(this.target, credentials, options);
    this.channels = new v1.SecureChannelService(this.target, credentials, options);
    this.relays = new v1.RelayService(this.target, credentials, options);
    this.messaging = new v1.MessagingService(this.target, credentials, options);
  }

  // Resolves once the sidecar answers (it may still be starting), with the receive limit raised
  // to the sidecar's message limit (a delivery can be that large).
  async waitReady(waitMs = 60000) {
    await new Promise((resolve, reject) => {
      this.node.waitForReady(Date.now() + waitMs, (error) => {
        if (error) reject(new Error(`no veil sidecar answers at ${this.target}; is veild running?`));
        else resolve();
      });
    });
    let limit = 0;
    try {
      limit = (await this._call(this.node, 'GetNode', {}, 10000)).max_message_bytes || 0;
    } catch (error) {
      limit = 0;  // an older sidecar: keep the default
    }
    if (limit > DEFAULT_RECEIVE_LIMIT) {
      this.close();
      this._open(Math.min(limit, 2 ** 31 - 1));
    }
    return this;
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

  // A listener at `address`; ALREADY_EXISTS when one is there, unless `existOk` and it has this
  // identity and trust policy (then that one is returned): see ensureListener.
  createListener(address, {trustPolicy = trust(), identity = 'default', existOk = false} = {}) {
    return this._call(this.channels, 'CreateSecureChannelListener',
                      {address, identity, trust_policy: trustPolicy, exist_ok: existOk});
  }
  // createListener that an app can run again: the same listener, found in place.
  ensureListener(address, options = {}) {
    return this.createListener(address, {...options, existOk: true});
  }
  deleteListener(address) {
    return this._call(this.channels, 'DeleteSecureChannelListener', {address});
  }

  openChannel(route, {trustPolicy = trust(), identity = 'default', timeoutMs = 10000} = {}) {
    return this._call(this.channels, 'CreateSecureChannel',
                      {route, identity, trust_policy: trustPolicy, timeout_ms: timeoutMs},
                      this.timeoutMs + timeoutMs);
  }

  // Closes a channel (its `address`, e.g. channel.address) and tells the other end.
  closeChannel(address) {
    return this._call(this.channels, 'DeleteSecureChannel', {address});
  }

  // A relay on the hub at `hubRoute` (name '' lets the hub pick); with `existOk`, the relay this
  // sidecar already keeps there for `identity` (and `name`, if given): see ensureRelay.
  createRelay(hubRoute, {name = '', identity = 'default', hubTrustPolicy, existOk = false} = {}) {
    const request = {hub_route: hubRoute, name, identity, exist_ok: existOk};
    if (hubTrustPolicy) request.hub_trust_policy = hubTrustPolicy;
    return this._call(this.relays, 'CreateRelay', request);
  }
  // createRelay that an app can run again: the same relay, and forwarding address.
  ensureRelay(hubRoute, options = {}) {
    return this.createRelay(hubRoute, {...options, existOk: true});
  }
  // Unregisters relay `name` from its hub (freeing the name) and stops it.
  deleteRelay(name) { return this._call(this.relays, 'DeleteRelay', {name}); }

  // Sends one message. Resolves to the SendResponse once it was handed on, or, with
  // {delivered: true}, once its far app acknowledged it (a delivery receipt, docs/api.md); else
  // rejects with a VeilError and its reason, e.g. DELIVERY_UNKNOWN when its secure channel closed
  // before the far end confirmed it, MESSAGE_DROPPED when the app went without acking.
  send(route, payload, {delivered = false, timeoutMs = this.timeoutMs} = {}) {
    return this._call(this.messaging, 'Send',
                      {messages: [{route, payload: asBuffer(payload)}], delivery_receipts: delivered},
                      timeoutMs);
  }

  // Sends and waits for one reply; resolves to a Message (without reply()).
  async request(route, payload, timeoutMs = this.timeoutMs) {
    const response = await this._call(this.messaging, 'Request',
                                      {message: {route, payload: asBuffer(payload)}}, timeoutMs);
    return new Message(null, response.reply);
  }

  // Serves `address`: calls handler(message) for each delivery (awaiting it if it returns a
  // promise) and acknowledges each batch once handled. Returns {opened, done, close(),
  // failures}: `opened` resolves to the served route, `done` when the stream ends (rejected with
  // the sidecar's VeilError, e.g. NODE_SHUTTING_DOWN, or with the error the handler threw,
  // which ends the stream); `failures` collects failed sends. Uses the
  // sidecar's serve socket when this process can reach it (GetNode().serve_socket; docs/api.md,
  // "The serve socket"), else a gRPC Serve call; {transport: 'grpc'} or 'socket' to choose.
  serve(address, handler, {window = 0, transport = 'auto'} = {}) {
    const serve = {failures: [], carrier: null, closed: false};
    serve.send = (route, payload) => serve.carrier.send(route, payload);
    serve.close = () => {
      serve.closed = true;
      if (serve.carrier) serve.carrier.close();
    };
    let settle;
    serve.done = new Promise((resolve, reject) => { settle = {resolve, reject}; });
    serve.done.catch(() => {});
    serve.opened = (async () => {
      if (transport !== 'grpc') {
        const path = (await this.getNode()).serve_socket;
        if (!path && transport === 'socket') {
          throw new Error(`the sidecar at ${this.target} has no serve socket`);
        }
        if (path) {
          const route = await socketServe(path, address, window, handler, serve, settle,
                                          transport === 'socket');
          if (route !== null) return route;  // null: not reachable from here, use gRPC
        }
      }
      return grpcServe(this.messaging, address, window, handler, serve, settle);
    })();
    serve.opened.catch((error) => settle.reject(error));
    return serve;
  }

  close() {
    for (const client of [this.node, this.identities, this.channels, this.relays, this.messaging]) client.close();
  }
}

// The deliveries of a batch, handled in order after the previous batch, then acknowledged.
function handleBatch(serve, handler, deliveries, ack) {
  serve.chain = (serve.chain || Promise.resolve()).then(async () => {
    for (const delivery of deliveries) await handler(new Message(serve, delivery));
    ack(deliveries[deliveries.length - 1].sequence);
  }).catch((error) => {
    serve.close();
    serve.handlerError = error;
  });
}

// The Serve stream on a gRPC call. Resolves to the served route.
function grpcServe(messaging, address, window, handler, serve, settle) {
  const call = messaging.Serve();
  let batchId = 0;
  serve.carrier = {
    send(route, payload) {
      call.write({send: {batch_id: ++batchId, messages: [{route, payload: asBuffer(payload)}]}});
    },
    close() { call.cancel(); },
  };
  if (serve.closed) call.cancel();
  return new Promise((resolve, reject) => {
    call.on('data', (response) => {
      if (response.opened) resolve(response.opened.route);
      if (response.send_result) serve.failures.push(...response.send_result.failures);
      if (!response.deliveries) return;
      handleBatch(serve, handler, response.deliveries.deliveries,
                  (sequence) => call.write({ack: {sequence}}));
    });
    call.on('error', (error) => {
      if (error.code === grpc.status.CANCELLED) {
        reject(new VeilError(error));
        return serve.handlerError ? settle.reject(serve.handlerError) : settle.resolve();
      }
      reject(new VeilError(error));
      settle.reject(new VeilError(error));
    });
    call.on('end', () => settle.resolve());
    call.write({open: {address, window}});
  });
}

const frame = (request) => {
  const body = ServeRequest.encode(ServeRequest.fromObject(request)).finish();
  const out = Buffer.allocUnsafe(4 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.set(body, 4);
  return out;
};

// The Serve stream on the serve socket: version byte 0x01, then u32 big-endian length-prefixed
// ServeRequest / ServeResponse frames; a last `closed` status ends it. Resolves to the served
// route, or to null when nothing answers at `path` (and `required` is false).
function socketServe(path, address, window, handler, serve, settle, required) {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(path);
    let connected = false;
    let closed = null;   // the sidecar's `closed` status, once read
    let failure = null;  // what else ended the stream
    let pending = [];   // unread chunks
    let pendingBytes = 0;
    let versionRead = false;
    let batchId = 0;
    const write = (request) => { if (!socket.destroyed) socket.write(frame(request)); };
    serve.carrier = {
      send(route, payload) {
        write({send: {batch_id: ++batchId, failures_only: true,
                      messages: [{route, payload: asBuffer(payload)}]}});
      },
      close() { socket.destroy(); },
    };
    // Takes `n` unread bytes (callers check pendingBytes first).
    const take = (n) => {
      const all = pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingBytes);
      pending = n < all.length ? [all.subarray(n)] : [];
      pendingBytes -= n;
      return all.subarray(0, n);
    };
    const peekSize = () => {
      if (pending[0].length < 4) pending = [Buffer.concat(pending, pendingBytes)];
      return pending[0].readUInt32BE(0);
    };
    const onResponse = (message) => {
      const response = ServeResponse.toObject(message, {longs: Number, defaults: true});
      if (response.opened) resolve(response.opened.route);
      if (response.send_result) serve.failures.push(...response.send_result.failures);
      if (response.deliveries && response.deliveries.deliveries.length > 0) {
        handleBatch(serve, handler, response.deliveries.deliveries, (sequence) => write({ack: {sequence}}));
      }
      if (message.closed) closed = message.closed;
    };
    socket.on('connect', () => {
      connected = true;
      if (serve.closed) return socket.destroy();
      socket.write(Buffer.from([1]));
      write({open: {address, window}});
    });
    socket.on('data', (chunk) => {
      pending.push(chunk);
      pendingBytes += chunk.length;
      if (!versionRead && pendingBytes >= 1) {
        const version = take(1)[0];
        if (version !== 1) {
          failure = new VeilError({code: grpc.status.UNIMPLEMENTED,
                                   details: `the sidecar speaks serve socket version ${version}`});
          return socket.destroy();
        }
        versionRead = true;
      }
      while (closed === null && pendingBytes >= 4 && pendingBytes >= 4 + peekSize()) {
        const size = peekSize();
        take(4);
        onResponse(ServeResponse.decode(take(size)));
      }
    });
    // A write may fail (EPIPE) when the sidecar refused or ended the stream: its status is
    // still to be read. 'close' follows every error.
    socket.on('error', () => {});
    socket.on('close', () => {
      if (!connected) {
        if (required) reject(new Error(`cannot connect to the serve socket ${path}`));
        return resolve(null);
      }
      let error = failure;
      if (closed !== null) {
        error = closed.code === 0 ? null : statusError(closed);
      } else if (error === null && !serve.closed) {
        error = new VeilError({code: grpc.status.UNAVAILABLE,
                               details: 'the serve socket closed without a status'});
      }
      if (error === null) {
        reject(new Error('the Serve stream ended before it was opened'));
        return serve.handlerError ? settle.reject(serve.handlerError) : settle.resolve();
      }
      reject(error);
      settle.reject(error);
    });
  });
}

// Connects and waits until the sidecar answers.
function connect(target, options) {
  return new Sidecar(target, options).waitReady();
}

module.exports = {connect, defaultApi, trust, Sidecar, Message, VeilError, v1};
