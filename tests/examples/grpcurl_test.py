#!/usr/bin/env python3
"""examples/grpcurl/README.md: every grpcurl command line parses as grpcurl parses it (Go's flag
package: flags, then positional arguments; a flag after the first positional one is a "Too many
arguments" error), names a method that exists, and its `-d` body parses as that method's
request type (unknown fields and wrong types fail); every line of a ```json <MessageType> block
parses as that type. (GrpcurlWalkthroughTest, in C++, runs the page against real daemons.)"""
import os
import re
import shlex
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


# grpcurl's flags (grpcurl 1.8): those that take no value, and those that take one.
BOOL_FLAGS = {"plaintext", "insecure", "unix", "v", "vv", "emit-defaults", "allow-unknown-fields",
              "use-reflection", "format-error", "msg-template", "expand-headers", "help", "version"}
VALUE_FLAGS = {"d", "max-time", "connect-timeout", "keepalive-time", "max-msg-sz", "H",
               "rpc-header", "reflect-header", "format", "import-path", "proto", "protoset",
               "cert", "key", "cacert", "authority", "servername", "user-agent", "alts-handshaker-service",
               "alts-target-service-account", "protoset-out"}


def parse_like_go(line):
    """(flags, positional arguments) of a grpcurl command line, as Go's flag package reads it:
    parsing stops at the first argument that is not a flag; raises on an unknown flag or a flag
    without its value."""
    args = shlex.split(line)[1:]
    flags = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name = arg.lstrip("-")
        value = None
        if "=" in name:
            name, value = name.split("=", 1)
        if name in BOOL_FLAGS:
            flags[name] = True if value is None else value
        elif name in VALUE_FLAGS:
            if value is None:
                i += 1
                if i >= len(args):
                    raise ValueError(f"flag needs an argument: -{name}")
                value = args[i]
            flags[name] = value
        else:
            raise ValueError(f"flag provided but not defined: -{name}")
        i += 1
    return flags, args[i:]


class GrpcurlWalkthroughTest(unittest.TestCase):
    def setUp(self):
        with open(README) as f:
            self.text = f.read()

    def commands(self):
        """Every grpcurl command on the page, in its code blocks and inline."""
        lines = [l for l in self.text.splitlines() if l.startswith("grpcurl ")]
        lines += re.findall(r"\| (grpcurl -[^`]*)`", self.text)
        return lines

    def test_command_lines_parse_as_grpcurl_parses_them(self):
        commands = self.commands()
        self.assertGreaterEqual(len(commands), 14)
        for line in commands:
            with self.subTest(line=line):
                flags, positional = parse_like_go(line)
                self.assertTrue(flags.get("plaintext") and flags.get("unix"), line)
                # After the flags: the address, then a method, or list / describe [symbol].
                self.assertTrue(all(not p.startswith("-") for p in positional),
                                f"a flag after the address: grpcurl says 'Too many arguments': {line}")
                self.assertTrue(positional and positional[0].endswith(".sock"), line)
                if positional[1:2] == ["list"]:
                    self.assertLessEqual(len(positional), 3, line)
                elif positional[1:2] == ["describe"]:
                    self.assertEqual(len(positional), 3, line)
                else:
                    self.assertEqual(len(positional), 2, line)
                    self.assertIn("/", positional[1], line)

    def test_request_bodies(self):
        checked = 0
        for line in self.commands():
            flags, positional = parse_like_go(line)
            method = positional[-1]
            if "/" not in method:
                continue  # list / describe
            service, name = method.split("/")
            if service.startswith("grpc."):
                continue
            found = POOL.FindServiceByName(service).FindMethodByName(name)
            self.assertIsNotNone(found, method)
            body = flags.get("d")
            if body is None or body == "@":
                continue
            with self.subTest(method=method):
                json_format.Parse(body, message_class(found.input_type.full_name)())
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
