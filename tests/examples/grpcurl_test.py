#!/usr/bin/env python3
"""examples/grpcurl/README.md: every `grpcurl ... -d '{json}' ... Service/Method` body parses as
that method's request type (unknown fields and wrong types fail), every method named exists,
and every line of a ```json <MessageType> block parses as that type."""
import os
import re
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "sdk-stubs", "python"))

from google.protobuf import descriptor_pool, json_format, message_factory  # noqa: E402
from veil.v1 import identity_pb2, messaging_pb2, node_pb2, relay_pb2, secure_channel_pb2  # noqa: E402,F401

README = os.path.join(ROOT, "examples", "grpcurl", "README.md")
POOL = descriptor_pool.Default()
FACTORY = message_factory.MessageFactory(POOL)


def message_class(full_name):
    return FACTORY.GetPrototype(POOL.FindMessageTypeByName(full_name))


class GrpcurlWalkthroughTest(unittest.TestCase):
    def setUp(self):
        with open(README) as f:
            self.text = f.read()

    def test_request_bodies(self):
        commands = [l for l in self.text.splitlines() if l.startswith("grpcurl ")]
        self.assertGreater(len(commands), 10)
        checked = 0
        for line in commands:
            method = line.split()[-1]
            if "/" not in method:
                continue  # list / describe
            service, name = method.split("/")
            if service.startswith("grpc."):
                continue
            found = POOL.FindServiceByName(service).FindMethodByName(name)
            self.assertIsNotNone(found, method)
            m = re.search(r"-d '([^']*)'", line)
            if m is None:
                continue
            with self.subTest(method=method):
                json_format.Parse(m.group(1), message_class(found.input_type.full_name)())
                checked += 1
        self.assertGreaterEqual(checked, 7)

    def test_stream_messages(self):
        blocks = re.findall(r"```json (\S+)\n(.*?)```", self.text, flags=re.S)
        self.assertGreaterEqual(len(blocks), 2)
        for type_name, body in blocks:
            cls = message_class(type_name)
            for line in filter(None, body.splitlines()):
                with self.subTest(line=line):
                    json_format.Parse(line, cls())

    def test_described_types_exist(self):
        for name in re.findall(r"describe \.?([\w.]+)", self.text):
            self.assertTrue(POOL.FindServiceByName(name) if name.endswith("Service")
                            else POOL.FindMessageTypeByName(name), name)


if __name__ == "__main__":
    unittest.main(verbosity=2)
