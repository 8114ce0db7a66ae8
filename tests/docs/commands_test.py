#!/usr/bin/env python3
"""The docs' commands run as written: every ```sh block of README.md, docs/cli.md,
docs/operations.md, docs/portals.md, docs/credentials.md and docs/hubs.md, in that order, as a newcomer pasting them into one shell would.

What the test changes, and only that: /tmp/, /etc/veil and /var/lib/ point into a temporary
directory (/tmp/ also where a /uds hop writes it escaped, %2Ftmp%2F); each port the docs name on loopback is a free port (the same one wherever it appears,
also bare: `http.server 18080`), and 0.0.0.0:PORT is loopback on another; `build/` is the build directory. A comment
line of its own under a command is output that command must print (a value the docs show as an
example — a forwarding address, a channel address, an identifier written `I4b1e…` — matches
the real one, which the commands after it then use); a comment at the end of a command line is prose.
A line ending in `&`, and every `veild`, runs in the background; the next command starts once
its socket exists or its expected output has appeared.

commands_test.py --build BUILD_DIR"""
import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, "build")
DOCS = ["README.md", "docs/cli.md", "docs/operations.md", "docs/portals.md", "docs/credentials.md",
        "docs/hubs.md"]

# Example values the docs show, and what the real ones look like.
PLACEHOLDERS = [
    (re.compile(r"forward_to_[0-9a-f]{16}"), r"forward_to_[0-9a-f]{16}"),
    (re.compile(r"_sc_[0-9A-Za-z]{11}"), r"_sc_[0-9A-Za-z]{11}"),
    (re.compile(r"I[0-9a-f]{4}…"), r"I[0-9a-f]{32}"),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sh_blocks(path):
    """(line number, [lines]) of each ```sh block."""
    blocks, block, start = [], None, 0
    with open(os.path.join(ROOT, path)) as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if block is None and line.strip() == "```sh":
                block, start = [], number + 1
            elif block is not None and line.strip() == "```":
                blocks.append((start, block))
                block = None
            elif block is not None:
                block.append(line)
    return blocks


def steps(lines):
    """[command, [expected output lines]] of a block; continued lines joined."""
    result, pending = [], ""
    for line in lines:
        if pending:
            pending += "\n" + line
        elif line.startswith("#"):
            if not result:
                raise AssertionError(f"an output line before any command: {line}")
            result[-1][1].append(line[1:].strip())
            continue
        elif not line.strip():
            continue
        else:
            pending = line
        if not pending.endswith("\\"):
            result.append([pending, []])
            pending = ""
    return result


class Shell:
    """Runs the docs' commands with the test's substitutions and remembers what they printed."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.ports = {}
        self.values = {}  # placeholder as the docs write it -> the real value
        self.env = dict(os.environ)
        self.env.pop("VEIL_API", None)
        self.background = []

    def substitute(self, text, values=True):
        # /tmp/ as a path, and as a /uds hop's escaped path.
        text = text.replace("%2Ftmp%2F", self.tmp.replace("%", "%25").replace("/", "%2F") + "%2F")
        text = text.replace("/tmp/", self.tmp + "/")
        text = text.replace("/etc/veil", self.tmp + "/etc-veil")
        text = text.replace("/var/lib/", self.tmp + "/var-lib/")
        # A hub's "listen everywhere" gets a port of its own on loopback.
        text = re.sub(r"0\.0\.0\.0:\d+", lambda m: "127.0.0.1:" + self.ports.setdefault(m.group(0), str(free_port())), text)
        # Every port the docs name on loopback is a free one here, the same one each time
        # (learn_ports saw them all first, so a bare one before its first host:port is known).
        text = re.sub(r"\b(127\.0\.0\.1|localhost):(\d{4,5})\b",
                      lambda m: "127.0.0.1:" + self.ports.get(m.group(2), m.group(2)), text)
        text = re.sub(r"(?<=[\s])(\d{4,5})(?=\s|$)",
                      lambda m: self.ports.get(m.group(1), m.group(1)), text)
        text = text.replace("$PWD/build/", BUILD + "/")
        text = re.sub(r"(?<![\w/.$-])build/", BUILD + "/", text)
        for placeholder, value in (self.values.items() if values else ()):
            text = text.replace(placeholder, value)
        return text

    def learn_ports(self, text):
        for port in re.findall(r"\b(?:127\.0\.0\.1|localhost):(\d{4,5})\b", text):
            self.ports.setdefault(port, str(free_port()))

    def expectation(self, line):
        """A regex for an output line, and the placeholders it binds (in order)."""
        line = self.substitute(line, values=False)
        pattern, binds, at = "", [], 0
        spans = sorted((m.start(), m.end(), real) for token, real in PLACEHOLDERS for m in token.finditer(line))
        for start, end, real in spans:
            pattern += re.escape(line[at:start]) + "(" + real + ")"
            binds.append(line[start:end])
            at = end
        pattern += re.escape(line[at:])
        return re.compile(pattern.replace(re.escape("…"), ".*")), binds

    def matched(self, output, expected):
        for line in expected:
            regex, binds = self.expectation(line)
            m = regex.search(output)
            if not m:
                return False
        for line in expected:
            regex, binds = self.expectation(line)
            m = regex.search(output)
            for placeholder, value in zip(binds, m.groups()):
                self.values[placeholder] = value  # the latest one: docs reuse example values
        return True

    def export(self, command):
        # `export NAME=VALUE`: evaluated by bash in the current environment, then kept.
        out = subprocess.run(["bash", "-c", command + "\nenv -0"], env=self.env, cwd=ROOT,
                             capture_output=True, check=True)
        self.env = dict(item.split("=", 1) for item in out.stdout.decode().split("\0") if "=" in item)

    def run(self, where, command, expected):
        real = self.substitute(command)
        if real.startswith("export "):
            return self.export(real)
        words = shlex.split(real.replace("\\\n", " "), comments=True)
        background = words[-1] == "&" or os.path.basename(words[0]) == "veild"
        if background:
            real = real[:real.rindex("&")] if words[-1] == "&" else real
            log = os.path.join(self.tmp, f"bg-{len(self.background)}.log")
            with open(log, "w") as out:
                child = subprocess.Popen(["bash", "-c", real],
                                         env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            self.background.append(child)
            self.wait_ready(where, real, child, log, expected)
            return
        done = subprocess.run(["bash", "-c", real], env=self.env, cwd=ROOT, capture_output=True,
                              text=True, timeout=90)
        output = done.stdout + done.stderr
        if done.returncode != 0 and not words[0] in ("pkill", "kill"):
            raise AssertionError(f"{where}: `{command}` exited {done.returncode}:\n{output}")
        if not self.matched(output, expected):
            raise AssertionError(f"{where}: `{command}` did not print {expected}:\n{output}")
        if words[0] in ("pkill", "kill"):
            time.sleep(1)  # what a person pasting the next line gives it anyway

    def wait_ready(self, where, real, child, log, expected):
        m = re.search(r"--state-dir\s+(\S+)", real)
        sock = os.path.join(m.group(1), "api.sock") if m and "veild" in real else None
        deadline = time.time() + 60
        while time.time() < deadline:
            with open(log, errors="replace") as f:
                output = f.read()
            ready = (not expected or self.matched(output, expected)) and (sock is None or os.path.exists(sock))
            if ready and (expected or sock):
                return
            if child.poll() is not None:
                raise AssertionError(f"{where}: `{real}` exited {child.returncode}:\n{output}")
            if ready and time.time() > deadline - 58:
                return  # nothing to wait for: it has run for two seconds
            time.sleep(0.05)
        raise AssertionError(f"{where}: `{real}` did not print {expected} (or make {sock}):\n{output}")

    def close(self):
        for child in reversed(self.background):
            if child.poll() is None:
                try:
                    os.killpg(child.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for child in self.background:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


class CommandsTest(unittest.TestCase):
    def test_the_docs_commands_run_as_written(self):
        tmp = tempfile.mkdtemp(prefix="veil-docs-")
        if not os.environ.get("VEIL_KEEP_TEMP"):  # to read the daemons' logs after a failure
            self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        shell = Shell(tmp)
        self.addCleanup(shell.close)
        ran = 0
        for doc in DOCS:
            with open(os.path.join(ROOT, doc)) as f:
                shell.learn_ports(f.read())
        for doc in DOCS:
            for start, block in sh_blocks(doc):
                if any(re.match(r"\s*make\b", line) for line in block):
                    continue  # the Makefile's targets: `make test` is what runs this
                for command, expected in steps(block):
                    shell.run(f"{doc}:{start}", command, expected)
                    ran += 1
        print(f"ran {ran} documented commands", file=sys.stderr)
        self.assertGreater(ran, 25)


class ListingsTest(unittest.TestCase):
    def test_the_readmes_bob_py_listing_is_the_file(self):
        # README.md says "Bob in Python is this whole file": it must be, byte for byte.
        with open(os.path.join(ROOT, "README.md")) as f:
            readme = f.read()
        listing = re.search(r"```python\n(.*?)```", readme, re.S)
        self.assertIsNotNone(listing, "README.md has no ```python listing")
        with open(os.path.join(ROOT, "examples", "python", "bob.py")) as f:
            self.assertEqual(listing.group(1), f.read())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", default=BUILD)
    args, rest = parser.parse_known_args()
    BUILD = os.path.abspath(args.build)
    unittest.main(argv=[sys.argv[0]] + rest)
