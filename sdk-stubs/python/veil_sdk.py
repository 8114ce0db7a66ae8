"""veil_sdk: a thin, idiomatic helper over the generated veil.v1 gRPC stubs (veil/v1/*_pb2*.py).

    import veil_sdk
    sidecar = veil_sdk.connect()                      # $VEIL_API, else the default socket
    sidecar.create_listener("listener")               # trust everyone (each message says who)
    relay = sidecar.create_relay("/tcp/hub:4000", name="bob")
    for message in sidecar.serve("echoer"):           # no server, no inbound port
        message.reply(message.payload)

    channel = sidecar.open_channel("/tcp/hub:4000/service/forward_to_bob/service/listener")
    print(sidecar.request(channel.route + "/service/echoer", b"Hello").payload)

Errors are veil_sdk.VeilError (a grpc.RpcError with .code(), .details() and .reason, the
google.rpc.ErrorInfo reason such as "ROUTE_NOT_FOUND"). Needs Debian's python3-grpcio and
python3-protobuf; put this directory on sys.path (PYTHONPATH=sdk-stubs/python).
"""
import concurrent.futures
import os
import queue
import socket
import struct

import grpc

from google.rpc import error_details_pb2, status_pb2
from veil.v1 import identity_pb2, identity_pb2_grpc, messaging_pb2, messaging_pb2_grpc
from veil.v1 import node_pb2, node_pb2_grpc, relay_pb2, relay_pb2_grpc
from veil.v1 import secure_channel_pb2, secure_channel_pb2_grpc

__all__ = ["connect", "default_api", "Sidecar", "Message", "VeilError", "trust"]


def default_api():
    """Where veild serves by default: $VEIL_API, else unix:$VEIL_STATE_DIR/api.sock, else
    unix:$HOME/.veil/api.sock."""
    if os.environ.get("VEIL_API"):
        return os.environ["VEIL_API"]
    state = os.environ.get("VEIL_STATE_DIR") or os.path.join(os.path.expanduser("~"), ".veil")
    return "unix:" + os.path.join(state, "api.sock")


class VeilError(Exception):
    """A failed call: code (grpc.StatusCode), details (text) and reason (ErrorInfo reason)."""

    def __init__(self, error):
        super().__init__(f"{error.code().name}: {error.details()}")
        self._code, self._details, self.reason = error.code(), error.details(), ""
        for key, value in (error.trailing_metadata() or ()):
            if key == "grpc-status-details-bin":
                status = status_pb2.Status.FromString(value)
                for detail in status.details:
                    info = error_details_pb2.ErrorInfo()
                    if detail.Unpack(info):
                        self.reason = info.reason

    def code(self):
        return self._code

    def details(self):
        return self._details


def trust(everyone=False, identifier=None, identifiers=None, imported=False):
    """A veil.v1.TrustPolicy; several arguments mean any of them. Default: everyone."""
    parts = []
    if everyone:
        parts.append(secure_channel_pb2.TrustPolicy(trust_everyone=True))
    if identifier:
        parts.append(secure_channel_pb2.TrustPolicy(trust_identifier=identifier))
    if identifiers:
        parts.append(secure_channel_pb2.TrustPolicy(
            trust_identifiers=secure_channel_pb2.TrustPolicy.Identifiers(identifiers=list(identifiers))))
    if imported:
        parts.append(secure_channel_pb2.TrustPolicy(trust_imported=True))
    if not parts:
        return secure_channel_pb2.TrustPolicy(trust_everyone=True)
    if len(parts) == 1:
        return parts[0]
    return secure_channel_pb2.TrustPolicy(any_of=secure_channel_pb2.TrustPolicy.Policies(policies=parts))


def _call(method, request, timeout):
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as error:
        raise VeilError(error) from None


class Message:
    """A delivery: payload (bytes), sender (veil.v1.Sender: .identifier is the authenticated
    identity for messages through a secure channel), return_route; reply() answers it."""

    def __init__(self, stream, delivery):
        self._stream = stream
        self.payload = delivery.payload
        self.sender = delivery.sender
        self.return_route = delivery.return_route
        self.sequence = delivery.sequence

    @property
    def text(self):
        return self.payload.decode("utf-8", "replace")

    def reply(self, payload):
        self._stream.send(self.return_route, payload)


class _Serve:
    """One Serve stream: iterate for Messages; each batch is acknowledged when the next one is
    asked for (so the sidecar never sends more than the window ahead of what was handled)."""

    def __init__(self, stub, address, window, timeout):
        self._requests = queue.Queue()
        self._batch = 0
        self._requests.put(messaging_pb2.ServeRequest(
            open=messaging_pb2.ServeRequest.Open(address=address, window=window)))
        self._responses = stub.Serve(iter(self._requests.get, None), timeout=timeout)
        self.route = None
        self.failures = []  # veil.v1.SendFailure of replies that could not be handed on

    def send(self, route, payload):
        if isinstance(payload, str):
            payload = payload.encode()
        self._batch += 1
        self._requests.put(messaging_pb2.ServeRequest(send=messaging_pb2.ServeRequest.SendBatch(
            batch_id=self._batch, failures_only=True,
            messages=[messaging_pb2.OutgoingMessage(route=route, payload=payload)])))

    def close(self):
        self._requests.put(None)
        self._responses.cancel()

    def __iter__(self):
        try:
            for response in self._responses:
                if response.HasField("opened"):
                    self.route = response.opened.route
                elif response.HasField("deliveries"):
                    last = 0
                    for delivery in response.deliveries.deliveries:
                        yield Message(self, delivery)
                        last = delivery.sequence
                    self._requests.put(messaging_pb2.ServeRequest(ack=messaging_pb2.ServeRequest.Ack(sequence=last)))
                elif response.HasField("send_result"):
                    for failure in response.send_result.failures:
                        self.failures.append(failure)  # a reply that could not be handed on
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                raise VeilError(error) from None
        finally:
            self._requests.put(None)


class _ClosedStatus(grpc.RpcError):
    """The serve socket's `closed` status, shaped as a gRPC error so that VeilError reads it."""

    def __init__(self, status):
        self._status = status

    def code(self):
        for code in grpc.StatusCode:
            if code.value[0] == self._status.code:
                return code
        return grpc.StatusCode.UNKNOWN

    def details(self):
        return self._status.message

    def trailing_metadata(self):
        return (("grpc-status-details-bin", self._status.SerializeToString()),)


def _frame(request):
    body = request.SerializeToString()
    return struct.pack(">I", len(body)) + body


class _SocketServe:
    """The same stream as _Serve, on the sidecar's serve socket (docs/api.md, "The serve
    socket"): the same messages framed on a Unix socket without gRPC, several times cheaper per
    message. Raises OSError when nothing answers at `path`, VeilError when the sidecar refuses."""

    def __init__(self, path, address, window):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(path)
            self._open(address, window)
        except BaseException:
            self._sock.close()
            raise

    def _open(self, address, window):
        self._buffer = bytearray()
        self._batch = 0
        self.failures = []
        open_request = messaging_pb2.ServeRequest(
            open=messaging_pb2.ServeRequest.Open(address=address, window=window))
        try:
            self._sock.sendall(b"\x01" + _frame(open_request))
        except OSError as e:
            # A refusal (too many streams, shutting down) can come before the sidecar reads
            # `open`, and its close can fail this write: the `closed` status is still there.
            write_error = e
        else:
            write_error = None
        if self._fill(1) and self._buffer[0] != 1:
            raise ConnectionError(f"the sidecar speaks serve socket version {self._buffer[0]}")
        del self._buffer[:1]
        first = self._read()
        if first is None:
            if write_error is not None:
                raise write_error
            raise ConnectionError("the serve socket closed before answering `open`")
        if first.HasField("closed"):
            raise VeilError(_ClosedStatus(first.closed))
        self.route = first.opened.route

    def _fill(self, n):
        while len(self._buffer) < n:
            chunk = self._sock.recv(max(262144, n - len(self._buffer)))
            if not chunk:
                return False
            self._buffer += chunk
        return True

    def _read(self):
        if not self._fill(4):
            return None
        (n,) = struct.unpack_from(">I", self._buffer)
        if not self._fill(4 + n):
            return None
        response = messaging_pb2.ServeResponse.FromString(bytes(self._buffer[4:4 + n]))
        del self._buffer[:4 + n]
        return response

    def send(self, route, payload):
        if isinstance(payload, str):
            payload = payload.encode()
        self._batch += 1
        self._write(_frame(messaging_pb2.ServeRequest(send=messaging_pb2.ServeRequest.SendBatch(
            batch_id=self._batch, failures_only=True,
            messages=[messaging_pb2.OutgoingMessage(route=route, payload=payload)]))))

    def _write(self, data):
        """Writes, or raises why the stream ended: a write fails when the sidecar ended the stream,
        and its `closed` status (NODE_SHUTTING_DOWN, …) follows what it already sent."""
        try:
            self._sock.sendall(data)
        except OSError as error:
            try:
                while (response := self._read()) is not None:
                    if response.HasField("closed") and response.closed.code != 0:
                        raise VeilError(_ClosedStatus(response.closed)) from None
            except OSError:
                pass
            raise error

    def close(self):
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def __iter__(self):
        try:
            while True:
                try:
                    response = self._read()
                except OSError:
                    return  # closed by close()
                if response is None:
                    return
                if response.HasField("deliveries"):
                    last = 0
                    for delivery in response.deliveries.deliveries:
                        yield Message(self, delivery)
                        last = delivery.sequence
                    self._write(_frame(messaging_pb2.ServeRequest(
                        ack=messaging_pb2.ServeRequest.Ack(sequence=last))))
                elif response.HasField("send_result"):
                    self.failures.extend(response.send_result.failures)
                elif response.HasField("closed"):
                    if response.closed.code != 0:
                        raise VeilError(_ClosedStatus(response.closed))
                    return
        finally:
            self._sock.close()


_DEFAULT_RECEIVE_LIMIT = 64 << 20  # the sidecar's default --api-max-request-bytes


class Sidecar:
    """A connection to one veil sidecar's API."""

    def __init__(self, target=None, timeout=30.0, wait_seconds=60.0):
        self.target = target or default_api()
        self.timeout = timeout
        self.channel = self._open(_DEFAULT_RECEIVE_LIMIT)
        if wait_seconds:
            try:  # the sidecar may still be starting (in a pod, containers start together)
                grpc.channel_ready_future(self.channel).result(timeout=wait_seconds)
            except grpc.FutureTimeoutError:
                raise ConnectionError(f"no veil sidecar answers at {self.target}; is veild running?") from None
            # A delivery can be as large as the sidecar's own message limit: accept that much.
            try:
                limit = node_pb2_grpc.NodeServiceStub(self.channel).GetNode(
                    node_pb2.GetNodeRequest(), timeout=10).max_message_bytes
            except grpc.RpcError:
                limit = 0
            if limit > _DEFAULT_RECEIVE_LIMIT:
                self.channel.close()
                self.channel = self._open(min(limit, 2**31 - 1))
        self.node = node_pb2_grpc.NodeServiceStub(self.channel)
        self.identities = identity_pb2_grpc.IdentityServiceStub(self.channel)
        self.channels = secure_channel_pb2_grpc.SecureChannelServiceStub(self.channel)
        self.relays = relay_pb2_grpc.RelayServiceStub(self.channel)
        self.messaging = messaging_pb2_grpc.MessagingServiceStub(self.channel)

    def _open(self, receive_limit):
        return grpc.insecure_channel(self.target, options=[("grpc.max_receive_message_length", receive_limit)])

    def get_node(self):
        return _call(self.node.GetNode, node_pb2.GetNodeRequest(), self.timeout)

    def identity(self, name="default"):
        return _call(self.identities.GetIdentity, identity_pb2.GetIdentityRequest(name=name), self.timeout)

    def create_listener(self, address, trust_policy=None, identity="default", exist_ok=False):
        """A listener at `address`; ALREADY_EXISTS when one is there, unless `exist_ok` and it has
        this identity and trust policy (then that one is returned): see ensure_listener."""
        request = secure_channel_pb2.CreateSecureChannelListenerRequest(
            address=address, identity=identity, trust_policy=trust_policy or trust(everyone=True),
            exist_ok=exist_ok)
        return _call(self.channels.CreateSecureChannelListener, request, self.timeout)

    def ensure_listener(self, address, trust_policy=None, identity="default"):
        """create_listener that an app can run again: the same listener, found in place."""
        return self.create_listener(address, trust_policy, identity, exist_ok=True)

    def delete_listener(self, address):
        request = secure_channel_pb2.DeleteSecureChannelListenerRequest(address=address)
        return _call(self.channels.DeleteSecureChannelListener, request, self.timeout)

    def open_channel(self, route, trust_policy=None, identity="default", timeout_ms=10000):
        request = secure_channel_pb2.CreateSecureChannelRequest(
            route=route, identity=identity, trust_policy=trust_policy or trust(everyone=True),
            timeout_ms=timeout_ms)
        return _call(self.channels.CreateSecureChannel, request, self.timeout + timeout_ms / 1000)

    def close_channel(self, address):
        """Closes a channel (its `address`, e.g. channel.address) and tells the other end."""
        request = secure_channel_pb2.DeleteSecureChannelRequest(address=address)
        return _call(self.channels.DeleteSecureChannel, request, self.timeout)

    def create_relay(self, hub_route, name="", identity="default", hub_trust_policy=None,
                     exist_ok=False):
        """A relay on the hub at `hub_route` (`name` "" lets the hub pick); with `exist_ok`, the
        relay this sidecar already keeps there for `identity` (and `name`, if given): see
        ensure_relay."""
        request = relay_pb2.CreateRelayRequest(hub_route=hub_route, name=name, identity=identity,
                                               exist_ok=exist_ok)
        if hub_trust_policy is not None:
            request.hub_trust_policy.CopyFrom(hub_trust_policy)
        return _call(self.relays.CreateRelay, request, self.timeout)

    def ensure_relay(self, hub_route, name="", identity="default", hub_trust_policy=None):
        """create_relay that an app can run again: the same relay, and forwarding address."""
        return self.create_relay(hub_route, name, identity, hub_trust_policy, exist_ok=True)

    def delete_relay(self, name):
        """Unregisters relay `name` from its hub (freeing the name) and stops it."""
        return _call(self.relays.DeleteRelay, relay_pb2.DeleteRelayRequest(name=name), self.timeout)

    @staticmethod
    def _send_request(route, payload, delivered):
        if isinstance(payload, str):
            payload = payload.encode()
        return messaging_pb2.SendRequest(messages=[messaging_pb2.OutgoingMessage(route=route, payload=payload)],
                                         delivery_receipts=delivered)

    def send(self, route, payload, delivered=False, timeout=None):
        """Sends one message. Returns once it was handed on, or, with delivered=True, once its app
        acknowledged it (delivery receipts, docs/api.md). Otherwise raises VeilError with the reason,
        e.g. DELIVERY_UNKNOWN when its secure channel closed before the far end confirmed it."""
        return _call(self.messaging.Send, self._send_request(route, payload, delivered),
                     timeout if timeout is not None else self.timeout)

    def send_future(self, route, payload, delivered=True, timeout=None):
        """send() without waiting: a concurrent.futures.Future whose result() is the SendResponse
        once the message was delivered (or handed on, with delivered=False), and which raises
        VeilError when it was not."""
        future = concurrent.futures.Future()
        call = self.messaging.Send.future(self._send_request(route, payload, delivered),
                                          timeout=timeout if timeout is not None else self.timeout)

        def done(call):
            try:
                future.set_result(call.result())
            except grpc.RpcError as error:
                future.set_exception(VeilError(error))

        call.add_done_callback(done)
        return future

    def request(self, route, payload, timeout=None):
        """Sends and waits for one reply; returns it as a Message (without reply())."""
        if isinstance(payload, str):
            payload = payload.encode()
        request = messaging_pb2.RequestRequest(message=messaging_pb2.OutgoingMessage(route=route, payload=payload))
        response = _call(self.messaging.Request, request, timeout or self.timeout)
        return Message(None, response.reply)

    def serve(self, address, window=0):
        """Serves `address` on this sidecar: an iterable of Messages. On the sidecar's serve
        socket when this process can reach it (see serve_socket), else on a gRPC Serve call."""
        path = self.get_node().serve_socket
        if path:
            try:
                return _SocketServe(path, address, window)
            except OSError:
                pass  # not reachable from here (another container or user): use gRPC
        return _Serve(self.messaging, address, window, None)

    def serve_socket(self, address, window=0):
        """Serves `address` on the sidecar's serve socket only (no gRPC); OSError when it cannot
        be reached, VeilError when the sidecar refuses."""
        path = self.get_node().serve_socket
        if not path:
            raise ConnectionError(f"the sidecar at {self.target} has no serve socket")
        return _SocketServe(path, address, window)

    def close(self):
        self.channel.close()


def connect(target=None, **kwargs):
    return Sidecar(target, **kwargs)
