#!/usr/bin/env python3
"""The Python SDK (sdk-stubs/python/veil_sdk.py) against a real veild: serving on the serve
socket, and the sidecar's refusals reaching the app as VeilError with their reasons — also when
the sidecar refuses before reading `open` and closes under the app's write."""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "sdk-stubs", "python"))
import veil_sdk  # noqa: E402

VEILD = None


class Node:
    """One veild in a temp dir, serving at most one Serve stream."""

    def __init__(self, *extra):
        self.dir = tempfile.mkdtemp(prefix="veil-python-sdk-")
        self.log_path = os.path.join(self.dir, "veild.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([VEILD, "--state-dir", os.path.join(self.dir, "state"), *extra],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            with open(self.log_path, errors="replace") as f:
                if re.search(r" ready: ", f.read()):
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                with open(self.log_path, errors="replace") as f:
                    raise AssertionError("veild did not start:\n" + f.read())
            time.sleep(0.05)
        self.api = "unix:" + os.path.join(self.dir, "state", "api.sock")

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class PythonSdkTest(unittest.TestCase):
    def setUp(self):
        self.node = Node("--api-max-serve-streams", "1")
        self.addCleanup(self.node.close)
        self.sidecar = veil_sdk.connect(self.node.api)
        self.addCleanup(self.sidecar.close)

    def test_a_delivered_future_completes_once_the_app_acked(self):
        stream = self.sidecar.serve_socket("sink")
        future = self.sidecar.send_future("/service/sink", "hello")
        time.sleep(0.3)
        self.assertFalse(future.done(), "delivered before the app read it")
        messages = iter(stream)
        self.assertEqual(next(messages).payload, b"hello")
        # The ack goes when the app asks for the next delivery (after handling this one).
        reader = threading.Thread(target=lambda: next(messages, None), daemon=True)
        reader.start()
        self.assertEqual(future.result(timeout=10).accepted, 1)
        stream.close()
        # A delivered send that fails raises with the sidecar's reason (here the egress guard's:
        # plaintext never leaves; the receipt-specific refusal is FaultTest's).
        with self.assertRaises(veil_sdk.VeilError) as refused:
            self.sidecar.send("/tcp/127.0.0.1:9/service/x", "x", delivered=True)
        self.assertEqual(refused.exception.reason, "PLAINTEXT_EGRESS_REFUSED")

    def test_serve_socket_echoes_and_refusals_carry_their_reasons(self):
        echoer = self.sidecar.serve_socket("echoer")

        def echo():
            for message in echoer:
                message.reply(message.payload)

        thread = threading.Thread(target=echo)
        thread.start()
        try:
            reply = self.sidecar.request("/service/echoer", b"hello")
            self.assertEqual(reply.payload, b"hello")
            # The one stream slot is taken: refused with the gRPC stream's code and reason.
            with self.assertRaises(veil_sdk.VeilError) as refused:
                self.sidecar.serve_socket("second")
            self.assertEqual(refused.exception.code(), veil_sdk.grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertEqual(refused.exception.reason, "TOO_MANY_STREAMS")
            # The refusal comes before the sidecar reads anything: an `open` bigger than the
            # socket's buffers is still being written when the connection closes under it.
            with self.assertRaises(veil_sdk.VeilError) as refused:
                self.sidecar.serve_socket("a" * (16 << 20))
            self.assertEqual(refused.exception.reason, "TOO_MANY_STREAMS")
            # serve() does not fall back to gRPC on a refusal (gRPC would refuse alike).
            with self.assertRaises(veil_sdk.VeilError) as refused:
                self.sidecar.serve("third")
            self.assertEqual(refused.exception.reason, "TOO_MANY_STREAMS")
        finally:
            echoer.close()
            thread.join(10)
        self.assertFalse(thread.is_alive())

    def test_a_bad_address_is_refused_with_its_reason(self):
        with self.assertRaises(veil_sdk.VeilError) as refused:
            self.sidecar.serve_socket("not/an address")
        self.assertEqual(refused.exception.code(), veil_sdk.grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(refused.exception.reason, "INVALID_ADDRESS")

    def test_a_reply_after_the_sidecar_ended_the_stream_raises_its_status(self):
        app = self.sidecar.serve_socket("late_replier")
        self.sidecar.send("/service/late_replier", b"ping")
        messages = iter(app)  # the stream is open while its iterator lives
        message = next(messages)
        self.assertEqual(message.payload, b"ping")
        self.node.proc.terminate()
        self.assertEqual(self.node.proc.wait(10), 0)
        # The reply's write fails (the connection is gone); the sidecar's last word is read.
        with self.assertRaises(veil_sdk.VeilError) as ended:
            message.reply(b"too late")
        self.assertEqual(ended.exception.code(), veil_sdk.grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(ended.exception.reason, "NODE_SHUTTING_DOWN")


class LargeMessagesTest(unittest.TestCase):
    def test_the_receive_limit_follows_the_sidecars_message_limit(self):
        # A sidecar that takes 96 MiB messages, and no serve socket: the delivery comes in one
        # gRPC Serve response, larger than gRPC's 4 MiB default and the SDK's 64 MiB start.
        node = Node("--api-max-request-bytes", str(96 << 20), "--serve-socket", "none")
        self.addCleanup(node.close)
        sidecar = veil_sdk.connect(node.api)
        self.addCleanup(sidecar.close)
        self.assertEqual(sidecar.get_node().max_message_bytes, 96 << 20)
        serve = sidecar.serve("big")
        payload = os.urandom(1 << 20) * 80  # 80 MiB
        received = []
        reader = threading.Thread(target=lambda: received.append(next(iter(serve))))
        reader.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the address is served
            try:
                sidecar.send("/service/big", payload)
                break
            except veil_sdk.VeilError as e:
                if e.reason != "ROUTE_NOT_FOUND":
                    raise
                time.sleep(0.05)
        reader.join(60)
        self.assertEqual(len(received), 1)
        self.assertEqual(received[0].payload, payload)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--veild", required=True)
    args, rest = parser.parse_known_args()
    VEILD = args.veild
    unittest.main(argv=[sys.argv[0], *rest])
