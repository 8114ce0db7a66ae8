#!/usr/bin/env python3
"""Alice and Bob in every language against real daemons: a hub, Bob's sidecar (no open port)
and Alice's sidecar, each a real veild on loopback. Bob (listener + relay + echoer) and Alice
(channel through the hub, stdin lines, one echo each) run as the README says; pairs mix
languages. Also: the Python and Node pairs stay shorter than the seed's 51 lines of Rust."""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = None


def build_go():
    """Builds the Go examples offline: GOPATH mode over Debian's golang-*-dev sources, with the
    SDK (sdk-stubs/go) and the examples linked in as veil.dev/sdk/go and veil.dev/examples/go."""
    gopath = os.path.join(BUILD, "go")
    for link, target in (("src/veil.dev/sdk/go", "sdk-stubs/go"), ("src/veil.dev/examples/go", "examples/go")):
        path = os.path.join(gopath, link)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.islink(path):
            os.symlink(os.path.join(ROOT, target), path)
    env = dict(os.environ, GO111MODULE="off", GOPATH=gopath + ":/usr/share/gocode", GOFLAGS="",
               GOCACHE=os.path.join(BUILD, "go-cache"))
    subprocess.run(["go", "build", "-o", os.path.join(gopath, "bin") + "/", "./bob", "./alice"],
                   cwd=os.path.join(gopath, "src/veil.dev/examples/go"), env=env, check=True, timeout=600)


def command(lang, who):
    if lang == "go":
        return [os.path.join(BUILD, "go", "bin", who)]
    if lang == "cpp":
        return [os.path.join(BUILD, "examples", who)]
    if lang == "python":
        return [sys.executable, os.path.join(ROOT, "examples", "python", who + ".py")]
    return ["node", os.path.join(ROOT, "examples", "node", who + ".js")]


def environment():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(ROOT, "sdk-stubs", "python")
    env.pop("VEIL_API", None)
    return env


def wait_for(path, pattern, proc, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open(path, errors="replace") as f:
            m = re.search(pattern, f.read())
        if m:
            return m
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    with open(path, errors="replace") as f:
        raise AssertionError(f"no {pattern!r} in {path}:\n{f.read()}")


class Nodes:
    """A hub, Bob's sidecar and Alice's sidecar in a temp dir."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="veil-examples-")
        self.procs = []
        self.files = []
        veild = os.path.join(BUILD, "sidecar", "daemon", "veild")
        logs = {}
        for name, extra in (("hub", ["--hub", "--tcp-listen", "127.0.0.1:0"]), ("bob", []), ("alice", [])):
            logs[name] = os.path.join(self.dir, name + ".log")
            self.start([veild, "--state-dir", os.path.join(self.dir, name), *extra], logs[name])
        for name, log in logs.items():
            m = wait_for(log, r" ready: .*tcp=\[([^\],]*)", self.procs[0])
            if name == "hub":
                self.hub = "/tcp/" + m.group(1)
        self.api = {n: "unix:" + os.path.join(self.dir, n, "api.sock") for n in ("bob", "alice")}

    def start(self, argv, log, stdin=subprocess.DEVNULL):
        out = open(log, "w")
        self.files.append(out)
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=stdin, env=environment())
        self.procs.append(proc)
        return proc

    def close(self):
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in self.files:
            f.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class ExamplesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        build_go()

    def listed(self, nodes, who, what):
        """`veil --json <what> list` on `who`'s sidecar: its channels, relays or listeners."""
        out = subprocess.run([os.path.join(BUILD, "sidecar", "cli", "veil"), "--api", nodes.api[who],
                              "--json", what, "list"], capture_output=True, text=True, timeout=30, check=True)
        return json.loads(out.stdout).get(what + "s", [])

    def run_alice(self, nodes, alice_lang, route, lines):
        alice = subprocess.run(command(alice_lang, "alice") + [nodes.api["alice"], route],
                               input="\n".join(lines) + "\n", capture_output=True, text=True,
                               timeout=60, env=environment())
        self.assertEqual(alice.returncode, 0, alice.stdout + alice.stderr)
        self.assertRegex(alice.stdout, r"secure channel was established with I[0-9a-f]{32}")
        echoes = re.findall(r"^Alice received an echo: (.*)$", alice.stdout, re.M)
        self.assertEqual(echoes, lines, alice.stdout)

    def start_bob(self, nodes, bob_lang, run):
        bob_log = os.path.join(nodes.dir, f"bob-app-{run}.log")
        bob = nodes.start(command(bob_lang, "bob") + [nodes.api["bob"], nodes.hub], bob_log)
        forwarding = wait_for(bob_log, r"forward_to_[A-Za-z0-9._-]+", bob).group(0)
        return bob, bob_log, forwarding

    def run_pair(self, bob_lang, alice_lang):
        nodes = Nodes()
        self.addCleanup(nodes.close)
        bob, bob_log, forwarding = self.start_bob(nodes, bob_lang, 1)
        route = f"{nodes.hub}/service/{forwarding}/service/listener"
        lines = ["Hello Ockam!", "How are you, Bob?", "ünïcödé ✓"]
        self.run_alice(nodes, alice_lang, route, lines)
        # Bob's echoer saw each line, from Alice's authenticated identifier.
        for line in lines:
            m = wait_for(bob_log, re.escape(f"Received: {line} (from ") + r"(I[0-9a-f]{32})\)", bob)
            self.assertNotEqual(m.group(1), "")
        self.assertIsNone(bob.poll(), "Bob keeps serving")
        # Every SDK's serve() takes the serve socket when it can reach it, as here.
        with open(os.path.join(nodes.dir, "bob.log"), errors="replace") as f:
            self.assertIn("app serves address echoer (serve socket)", f.read())
        # Alice closed her channel when done, and Bob's end closed with it (his sidecar keeps
        # only its own channel to the hub, for the relay).
        self.assertEqual(self.listed(nodes, "alice", "channel"), [])
        def bobs_ends():
            return [c for c in self.listed(nodes, "bob", "channel") if c.get("listener") == "listener"]
        deadline = time.monotonic() + 10
        while bobs_ends() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(bobs_ends(), [])

        # Both run again as they are: Alice once more; Bob, stopped and started, finds his
        # listener and relay in place (the same forwarding address) instead of ALREADY_EXISTS.
        self.run_alice(nodes, alice_lang, route, ["again"])
        bob.send_signal(signal.SIGINT)
        bob.wait(10)
        bob, bob_log, again = self.start_bob(nodes, bob_lang, 2)
        self.assertEqual(again, forwarding)
        self.run_alice(nodes, alice_lang, route, ["Bob again"])
        wait_for(bob_log, re.escape("Received: Bob again (from "), bob)
        self.assertEqual(len(self.listed(nodes, "bob", "relay")), 1)
        self.assertEqual(len(self.listed(nodes, "bob", "listener")), 1)
        self.assertEqual(self.listed(nodes, "alice", "channel"), [])

    def test_cpp(self):
        self.run_pair("cpp", "cpp")

    def test_python(self):
        self.run_pair("python", "python")

    def test_node(self):
        self.run_pair("node", "node")

    def test_python_bob_node_alice(self):
        self.run_pair("python", "node")

    def test_node_bob_cpp_alice(self):
        self.run_pair("node", "cpp")

    def test_go(self):
        self.run_pair("go", "go")

    def test_go_bob_python_alice(self):
        self.run_pair("go", "python")

    def test_shorter_than_the_seed(self):
        def code_lines(path, comment):
            with open(path) as f:
                text = f.read()
            text = re.sub(r'""".*?"""', "", text, flags=re.S)  # Python docstrings
            return [l for l in text.splitlines() if l.strip() and not l.strip().startswith(comment)]
        for lang, ext, comment in (("python", "py", "#"), ("node", "js", "//")):
            total = sum(len(code_lines(os.path.join(ROOT, "examples", lang, f"{who}.{ext}"), comment))
                        for who in ("alice", "bob"))
            self.assertLess(total, 51, f"{lang}: Alice and Bob take {total} lines")


def main():
    global BUILD
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", required=True)
    args, rest = parser.parse_known_args()
    BUILD = os.path.abspath(args.build)
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)


if __name__ == "__main__":
    main()
