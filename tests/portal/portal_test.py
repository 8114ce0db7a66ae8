#!/usr/bin/env python3
"""Portals with real programs and real daemons: a hub, Bob's sidecar behind it (no open port, a
relay) with outlets, Alice's sidecar with inlets. psql reaches PostgreSQL, curl an HTTP server, a
gRPC client a gRPC server (a veild's own API), plain sockets test the byte-stream semantics:
half-close, resets, a target that is down, an untrusted identity, a slow reader, 1,000
sessions at once, a hub lost mid-transfer, and that only ciphertext crosses the network.

portal_test.py --build BUILD_DIR"""
import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, "build")
sys.path.insert(0, os.path.join(ROOT, "sdk-stubs", "python"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, seconds=30, what="a condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


class Veild:
    def __init__(self, base, name, *extra, port=None):
        self.dir = os.path.join(base, name)
        self.log_path = os.path.join(base, name + ".log")
        self.extra = list(extra)
        self.port = port
        self.start()

    def start(self):
        args = [os.path.join(BUILD, "sidecar", "daemon", "veild"), "--state-dir", self.dir, *self.extra]
        if self.port is not None:
            args += ["--tcp-listen", f"127.0.0.1:{self.port}"]
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(lambda: self.proc.poll() is not None or " ready: " in self.text(), what=f"{self.dir} ready")
        if self.proc.poll() is not None:
            raise AssertionError("veild did not start:\n" + self.text())
        self.api = "unix:" + os.path.join(self.dir, "api.sock")

    def text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def veil(node, *args):
    """The veil CLI on `node`, with --json: its parsed output. Fails the test on an error."""
    out = subprocess.run([os.path.join(BUILD, "sidecar", "cli", "veil"), "--api", node.api, "--json", *args],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"veil {' '.join(args)}: exit {out.returncode}: {out.stderr}")
    return json.loads(out.stdout) if out.stdout.strip() else {}


class Cluster:
    """A hub, Bob (behind it, with a listener and a relay named bob) and Alice. `hub_port`: the
    hub's port (default a free one); `bob_hub_port`: where Bob reaches it (a proxy, say)."""

    def __init__(self, test, hub_port=None, bob_hub_port=None, *bob_args):
        self.dir = tempfile.mkdtemp(prefix="veil-portal-")
        test.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        self.hub_port = hub_port or free_port()
        self.hub = Veild(self.dir, "hub", "--hub", port=self.hub_port)
        test.addCleanup(self.hub.stop)
        self.bob = Veild(self.dir, "bob", *bob_args)
        test.addCleanup(self.bob.stop)
        self.alice = Veild(self.dir, "alice", "--metrics-listen", "127.0.0.1:0")
        test.addCleanup(self.alice.stop)
        self.veil(self.bob, "listener", "create", "listener", "--trust-everyone")
        self.veil(self.bob, "relay", "create", f"/tcp/127.0.0.1:{bob_hub_port or self.hub_port}", "--name", "bob")
        self.route = f"/tcp/127.0.0.1:{self.hub_port}/service/forward_to_bob/service/listener"

    veil = staticmethod(veil)

    def outlet(self, name, target, *trust):
        return self.veil(self.bob, "outlet", "create", name, "--to", target, *(trust or ["--trust-everyone"]))

    def inlet(self, outlet, *extra, route=None):
        inlet = self.veil(self.alice, "inlet", "create", "127.0.0.1:0", route or self.route, "--outlet", outlet, *extra)
        host, port = inlet["listen_address"].rsplit(":", 1)
        return host, int(port)

    def counters(self, node, kind):
        listed = self.veil(node, kind, "list")
        # (uint64 counters are strings in protobuf's JSON)
        return {(p.get("name") or p.get("listen_address")): {k: int(v) for k, v in p["counters"].items()}
                for p in listed.get(kind + "s", [])}


class EchoHandler(socketserver.BaseRequestHandler):
    """Echoes what it reads; on the client's half-close, half-closes too."""

    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                break
            self.request.sendall(data)
        self.request.shutdown(socket.SHUT_WR)


class CollectHandler(socketserver.BaseRequestHandler):
    """Reads everything until the client's half-close, then answers its sha256 and length: the
    whole answer comes after the client shut its writing side down."""

    def handle(self):
        digest, size = hashlib.sha256(), 0
        while True:
            data = self.request.recv(65536)
            if not data:
                break
            digest.update(data)
            size += len(data)
        self.request.sendall(f"{digest.hexdigest()} {size}\n".encode())


class FloodHandler(socketserver.BaseRequestHandler):
    """Sends `size` bytes of a known pattern as fast as the client takes them."""
    size = 64 << 20

    def handle(self):
        chunk = bytes(range(256)) * 256
        sent = 0
        try:
            while sent < self.size:
                self.request.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 2048

    def handle_error(self, request, client_address):
        pass  # a reset connection is what several tests make on purpose


def serve(test, handler):
    server = Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    test.addCleanup(server.server_close)
    test.addCleanup(server.shutdown)
    return f"127.0.0.1:{server.server_address[1]}"


def recv_all(sock, limit=None):
    out = bytearray()
    while limit is None or len(out) < limit:
        data = sock.recv(1 << 20)
        if not data:
            break
        out += data
    return bytes(out)


class PortalTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    def test_half_close_each_way(self):
        c = Cluster(self)
        c.outlet("collect", serve(self, CollectHandler))
        inlet = c.inlet("collect")
        payload = os.urandom(3 << 20)
        with socket.create_connection(inlet) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)  # the client stops writing and still reads the answer
            answer = recv_all(s)
        self.assertEqual(answer, f"{hashlib.sha256(payload).hexdigest()} {len(payload)}\n".encode())
        # A clean close on both sides: nothing reset, nothing left open.
        wait_for(lambda: c.counters(c.alice, "inlet")[f"{inlet[0]}:{inlet[1]}"]["sessions_active"] == 0,
                 what="the session to end")
        counters = c.counters(c.alice, "inlet")[f"{inlet[0]}:{inlet[1]}"]
        self.assertEqual(counters["sessions_reset"], 0)
        self.assertEqual(counters["bytes_in"], len(payload))
        self.assertEqual(c.counters(c.bob, "outlet")["collect"]["sessions_reset"], 0)

    def test_curl_downloads_through_the_portal(self):
        c = Cluster(self)
        www = tempfile.mkdtemp(prefix="veil-www-")
        self.addCleanup(shutil.rmtree, www, ignore_errors=True)
        with open(os.path.join(www, "big.bin"), "wb") as f:
            for _ in range(100):
                f.write(os.urandom(1 << 20))
        for i in range(8):
            with open(os.path.join(www, f"small{i}.bin"), "wb") as f:
                f.write(os.urandom(4 << 20))
        port = free_port()
        http = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                                cwd=www, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(http.wait)
        self.addCleanup(http.terminate)
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, what="the HTTP server")
        c.outlet("web", f"127.0.0.1:{port}")
        host, inlet_port = c.inlet("web")

        def sha256_of(path):
            with open(path, "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()

        got = os.path.join(www, "got.bin")
        subprocess.run(["curl", "-sSf", "-o", got, f"http://{host}:{inlet_port}/big.bin"], check=True, timeout=300)
        self.assertEqual(sha256_of(got), sha256_of(os.path.join(www, "big.bin")))
        # Many at once, over the inlet's one channel.
        downloads = [subprocess.Popen(["curl", "-sSf", "-o", os.path.join(www, f"got{i}.bin"),
                                       f"http://{host}:{inlet_port}/small{i}.bin"]) for i in range(8)]
        for i, d in enumerate(downloads):
            self.assertEqual(d.wait(300), 0)
            self.assertEqual(sha256_of(os.path.join(www, f"got{i}.bin")), sha256_of(os.path.join(www, f"small{i}.bin")))
        inlet = c.counters(c.alice, "inlet")[f"{host}:{inlet_port}"]
        self.assertGreaterEqual(inlet["sessions_total"], 9)
        self.assertEqual(inlet["sessions_reset"], 0)
        self.assertGreaterEqual(inlet["bytes_out"], 132 << 20)

    def test_psql_reaches_postgresql_through_the_hub(self):
        pg_bin = sorted(d for d in os.listdir("/usr/lib/postgresql") if d.isdigit())
        self.assertTrue(pg_bin, "Debian's postgresql is not installed")
        bindir = os.path.join("/usr/lib/postgresql", pg_bin[-1], "bin")
        data = tempfile.mkdtemp(prefix="veil-pg-")
        self.addCleanup(shutil.rmtree, data, ignore_errors=True)
        as_user = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: as the postgres user
            os.chown(data, *self._postgres_ids())
            as_user = ["runuser", "-u", "postgres", "--"]
        port = free_port()
        subprocess.run(as_user + [os.path.join(bindir, "initdb"), "-D", os.path.join(data, "db"), "-A", "trust",
                                  "-U", "veil", "--no-sync"], check=True, capture_output=True, timeout=120)
        subprocess.run(as_user + [os.path.join(bindir, "pg_ctl"), "-D", os.path.join(data, "db"), "-w", "-l",
                                  os.path.join(data, "log"), "-o",
                                  f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                       check=True, capture_output=True, timeout=120)
        self.addCleanup(subprocess.run, as_user + [os.path.join(bindir, "pg_ctl"), "-D", os.path.join(data, "db"),
                                                   "-m", "immediate", "stop"], capture_output=True)
        c = Cluster(self)
        c.outlet("postgres", f"127.0.0.1:{port}")
        host, inlet_port = c.inlet("postgres")

        def psql(sql):
            out = subprocess.run(["psql", "-X", "-A", "-t", "-h", host, "-p", str(inlet_port), "-U", "veil",
                                  "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql],
                                 capture_output=True, text=True, timeout=120)
            self.assertEqual(out.returncode, 0, out.stderr)
            return out.stdout.strip()

        psql("CREATE TABLE t (id int PRIMARY KEY, v text)")
        psql("INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 10000) i")
        rows = psql("SELECT id || ',' || v FROM t ORDER BY id").splitlines()
        self.assertEqual(len(rows), 10000)
        self.assertEqual(rows, [f"{i},{hashlib.md5(str(i).encode()).hexdigest()}" for i in range(1, 10001)])
        # psql through the portal and PostgreSQL directly agree.
        direct = subprocess.run(["psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(port), "-U", "veil",
                                 "-d", "postgres", "-c", "SELECT md5(string_agg(v, '' ORDER BY id)) FROM t"],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(psql("SELECT md5(string_agg(v, '' ORDER BY id)) FROM t"), direct.stdout.strip())

    @staticmethod
    def _postgres_ids():
        import pwd
        entry = pwd.getpwnam("postgres")
        return entry.pw_uid, entry.pw_gid

    def test_a_target_that_is_down_resets_the_client_and_is_counted(self):
        c = Cluster(self)
        c.outlet("down", f"127.0.0.1:{free_port()}")  # nothing listens there
        inlet = c.inlet("down")
        with socket.create_connection(inlet) as s:
            s.settimeout(20)
            s.sendall(b"hello?")
            with self.assertRaises(ConnectionResetError):  # a reset, not a silent close
                recv_all(s)
        outlet = c.counters(c.bob, "outlet")["down"]
        self.assertEqual(outlet["sessions_refused"], 1)
        wait_for(lambda: c.counters(c.alice, "inlet")[f"{inlet[0]}:{inlet[1]}"]["sessions_reset"] == 1,
                 what="the inlet to count the reset")
        self.assertIn("cannot connect to its target", c.bob.text())

    def test_an_untrusted_identity_is_refused_at_the_outlet(self):
        c = Cluster(self)
        c.outlet("private", serve(self, EchoHandler), "--trust", "I0123456789abcdef0123456789abcdef")
        inlet = c.inlet("private")
        with socket.create_connection(inlet) as s:
            s.settimeout(20)
            s.sendall(b"let me in")
            with self.assertRaises(ConnectionResetError):
                recv_all(s)
        self.assertEqual(c.counters(c.bob, "outlet")["private"]["sessions_refused"], 1)
        self.assertIn("identity not trusted", c.bob.text())
        # The refusal says nothing of the policy to the refused side.
        self.assertNotIn("I0123456789abcdef0123456789abcdef", c.alice.text())

    def test_a_slow_reader_backs_up_to_the_writer_and_stalls_no_other_session(self):
        c = Cluster(self)
        FloodHandler.size = 64 << 20
        c.outlet("flood", serve(self, FloodHandler))
        c.outlet("echo", serve(self, EchoHandler))
        flood = c.inlet("flood")
        echo = c.inlet("echo")
        base = rss_kib(c.alice.proc.pid), rss_kib(c.bob.proc.pid)
        with socket.create_connection(flood) as slow:
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            time.sleep(2)  # not reading: the windows fill, then the outlet stops reading its target
            taken = c.counters(c.bob, "outlet")["flood"]["bytes_in"]
            self.assertLess(taken, 24 << 20, "the outlet kept reading for a reader that does not read")
            # Another session through the same channel is not held up.
            with socket.create_connection(echo) as s:
                s.settimeout(20)
                s.sendall(b"still flowing")
                s.shutdown(socket.SHUT_WR)
                self.assertEqual(recv_all(s), b"still flowing")
            self.assertLess(rss_kib(c.alice.proc.pid) - base[0], 48 << 10)
            self.assertLess(rss_kib(c.bob.proc.pid) - base[1], 48 << 10)
            # Reading now, everything arrives, in order.
            slow.settimeout(60)
            got = recv_all(slow, FloodHandler.size)
        self.assertEqual(len(got), FloodHandler.size)
        self.assertEqual(got[:512], bytes(range(256)) * 2)
        self.assertEqual(hashlib.sha256(got).hexdigest(),
                         hashlib.sha256((bytes(range(256)) * 256) * (FloodHandler.size // 65536)).hexdigest())

    def test_a_thousand_sessions_at_once(self):
        c = Cluster(self)
        c.outlet("echo", serve(self, EchoHandler))
        inlet = c.inlet("echo")
        sockets = []
        try:
            for i in range(1000):
                s = socket.create_connection(inlet)
                s.settimeout(60)
                sockets.append(s)
            for i, s in enumerate(sockets):
                s.sendall(f"session {i}\n".encode())
            for i, s in enumerate(sockets):
                want = f"session {i}\n".encode()
                got = b""
                while len(got) < len(want):
                    data = s.recv(100)
                    self.assertTrue(data, f"session {i} ended early")
                    got += data
                self.assertEqual(got, want)
            outlet = c.counters(c.bob, "outlet")["echo"]
            self.assertEqual(outlet["sessions_active"], 1000)
        finally:
            for s in sockets:
                s.close()
        wait_for(lambda: c.counters(c.bob, "outlet")["echo"]["sessions_active"] == 0, what="the sessions to end")
        self.assertEqual(c.counters(c.bob, "outlet")["echo"]["sessions_total"], 1000)

    def test_sessions_beyond_the_limit_are_reset_and_counted(self):
        c = Cluster(self, None, None, "--portal-max-sessions", "2")  # on Bob's sidecar
        c.outlet("echo", serve(self, EchoHandler))
        inlet = c.inlet("echo")
        held = []
        for i in range(2):
            s = socket.create_connection(inlet)
            s.settimeout(20)
            s.sendall(b"ping")
            self.assertEqual(s.recv(4), b"ping")  # open, and held open
            held.append(s)
        try:
            with socket.create_connection(inlet) as third:
                third.settimeout(20)
                # The reset may come before the bytes are written (then sendall sees it).
                with self.assertRaises((ConnectionResetError, BrokenPipeError)):
                    third.sendall(b"one too many")
                    recv_all(third)
            outlet = c.counters(c.bob, "outlet")["echo"]
            self.assertEqual(outlet["sessions_refused"], 1)
            self.assertEqual(outlet["sessions_active"], 2)
            self.assertIn("the outlet has 2 sessions, its limit", c.bob.text())
        finally:
            for s in held:
                s.close()

    def test_the_hub_lost_mid_transfer_resets_sessions_and_new_ones_work_after(self):
        c = Cluster(self)
        FloodHandler.size = 256 << 20
        c.outlet("flood", serve(self, FloodHandler))
        c.outlet("echo", serve(self, EchoHandler))
        flood = c.inlet("flood")
        echo = c.inlet("echo")
        with socket.create_connection(flood) as s:
            s.settimeout(30)
            self.assertEqual(len(recv_all(s, 1 << 20)) >= 1 << 20, True)
            c.hub.kill()  # mid-transfer
            with self.assertRaises(ConnectionResetError):
                recv_all(s)
        wait_for(lambda: c.counters(c.alice, "inlet")[f"{flood[0]}:{flood[1]}"]["sessions_reset"] >= 1,
                 what="the inlet to count the reset")
        c.hub.start()  # same port and state: Bob's relay comes back by itself

        def echo_works():
            try:
                with socket.create_connection(echo, timeout=5) as s:
                    s.settimeout(5)
                    s.sendall(b"after the hub came back")
                    s.shutdown(socket.SHUT_WR)
                    return recv_all(s) == b"after the hub came back"
            except OSError:
                return False

        wait_for(echo_works, seconds=60, what="a new session after the hub restart")

    def test_only_ciphertext_crosses_the_network(self):
        # Alice and Bob both reach the hub through recording proxies.
        hub_port = free_port()
        records = []

        def proxy():
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen(16)
            record = bytearray()
            records.append(record)

            def pump(src, dst):
                try:
                    while True:
                        data = src.recv(65536)
                        if not data:
                            break
                        record.extend(data)
                        dst.sendall(data)
                except OSError:
                    pass
                finally:
                    for sock in (src, dst):
                        try:
                            sock.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass

            def accept():
                while True:
                    try:
                        client, _ = listener.accept()
                    except OSError:
                        return
                    upstream = socket.create_connection(("127.0.0.1", hub_port))
                    threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
                    threading.Thread(target=pump, args=(upstream, client), daemon=True).start()

            threading.Thread(target=accept, daemon=True).start()
            self.addCleanup(listener.close)
            return listener.getsockname()[1]

        bob_proxy, alice_proxy = proxy(), proxy()
        c = Cluster(self, hub_port=hub_port, bob_hub_port=bob_proxy)
        c.outlet("collect", serve(self, CollectHandler))
        inlet = c.inlet("collect", route=f"/tcp/127.0.0.1:{alice_proxy}/service/forward_to_bob/service/listener")
        marker = b"PLAINTEXT-MARKER-" + os.urandom(8).hex().encode()
        with socket.create_connection(inlet) as s:
            s.sendall(marker * 1000)
            s.shutdown(socket.SHUT_WR)
            answer = recv_all(s)
        self.assertTrue(answer.endswith(f" {len(marker) * 1000}\n".encode()), answer)
        self.assertGreater(len(records[0]), len(marker) * 1000)
        self.assertGreater(len(records[1]), len(marker) * 1000)
        for record in records:
            self.assertNotIn(marker, bytes(record))
            self.assertNotIn(b"PLAINTEXT-MARKER", bytes(record))

    def test_grpc_streams_both_ways_through_a_portal(self):
        import veil_sdk
        c = Cluster(self)
        # The gRPC server: a veild's own API, on TCP.
        api_port = free_port()
        server = Veild(c.dir, "server", "--api", f"127.0.0.1:{api_port}")
        self.addCleanup(server.stop)
        c.outlet("grpc", f"127.0.0.1:{api_port}")
        host, port = c.inlet("grpc")
        target = f"{host}:{port}"
        app = veil_sdk.connect(target)
        self.addCleanup(app.close)
        self.assertEqual(app.get_node().api_endpoint, f"127.0.0.1:{api_port}")
        stream = app.serve("echoer")  # a bidi stream through the portal
        sender = veil_sdk.connect(target)
        self.addCleanup(sender.close)
        replies = []

        def echo():
            for i, message in enumerate(stream):
                message.reply(message.payload.upper())
                if i == 99:
                    return

        t = threading.Thread(target=echo, daemon=True)
        t.start()
        for i in range(100):
            reply = wait_for(lambda: self._request(sender, f"message {i}"), what="the echoer")
            replies.append(reply)
        self.assertEqual(replies, [f"MESSAGE {i}".encode() for i in range(100)])

    @staticmethod
    def _request(sender, text):
        import veil_sdk
        try:
            return sender.request("/service/echoer", text, timeout=10).payload
        except veil_sdk.VeilError as e:
            if e.reason == "ROUTE_NOT_FOUND":
                return None
            raise

    def test_the_declarative_config_makes_outlets_and_inlets(self):
        echo = serve(self, EchoHandler)
        base = tempfile.mkdtemp(prefix="veil-portal-config-")
        self.addCleanup(shutil.rmtree, base, ignore_errors=True)
        hub_port = free_port()
        hub = Veild(base, "hub", "--hub", port=hub_port)
        self.addCleanup(hub.stop)
        route = f"/tcp/127.0.0.1:{hub_port}/service/forward_to_cfgbob/service/listener"
        with open(os.path.join(base, "bob.yaml"), "w") as f:
            f.write(f"""listeners:
  - address: listener
    trust_policy: {{trust_everyone: true}}
relays:
  - {{hub_route: /tcp/127.0.0.1:{hub_port}, name: cfgbob}}
outlets:
  - name: echo
    target: "{echo}"
    trust_policy: {{trust_everyone: true}}
    idle_timeout_ms: 60000
""")
        with open(os.path.join(base, "alice.yaml"), "w") as f:
            f.write(f"""inlets:
  - listen_address: "127.0.0.1:0"
    route: {route}
    outlet: echo
""")
        bob = Veild(base, "bob", "--config", os.path.join(base, "bob.yaml"))
        self.addCleanup(bob.stop)
        alice = Veild(base, "alice", "--config", os.path.join(base, "alice.yaml"))
        self.addCleanup(alice.stop)
        inlet = veil(alice, "inlet", "list")["inlets"][0]
        self.assertEqual(inlet["route"], route)
        self.assertEqual(veil(bob, "outlet", "list")["outlets"][0]["idle_timeout_ms"], 60000)
        host, port = inlet["listen_address"].rsplit(":", 1)

        def echoed():
            try:
                with socket.create_connection((host, int(port)), timeout=5) as s:
                    s.settimeout(5)
                    s.sendall(b"from the config")
                    s.shutdown(socket.SHUT_WR)
                    return recv_all(s) == b"from the config"
            except OSError:
                return False

        wait_for(echoed, what="an echo through the configured portal (once the relay is up)")

    def test_inlets_bind_loopback_unless_told_and_bad_arguments_are_clear(self):
        c = Cluster(self)
        out = subprocess.run([os.path.join(BUILD, "sidecar", "cli", "veil"), "--api", c.alice.api, "inlet", "create",
                              "0.0.0.0:0", c.route, "--outlet", "x"], capture_output=True, text=True)
        self.assertEqual(out.returncode, 2)
        self.assertIn("PUBLIC_BIND_REFUSED", out.stderr)
        public = c.veil(c.alice, "inlet", "create", "0.0.0.0:0", c.route, "--outlet", "x", "--public")
        self.assertTrue(public["listen_address"].startswith("0.0.0.0:"))
        bad = subprocess.run([os.path.join(BUILD, "sidecar", "cli", "veil"), "--api", c.bob.api, "outlet", "create",
                              "x", "--to", "nowhere", "--trust-everyone"], capture_output=True, text=True)
        self.assertEqual(bad.returncode, 2)
        self.assertIn("INVALID_TARGET", bad.stderr)
        taken = c.inlet("x")
        again = subprocess.run([os.path.join(BUILD, "sidecar", "cli", "veil"), "--api", c.alice.api, "inlet", "create",
                                f"{taken[0]}:{taken[1]}", c.route, "--outlet", "x"], capture_output=True, text=True)
        self.assertEqual(again.returncode, 4)
        kept = c.veil(c.alice, "inlet", "create", f"{taken[0]}:{taken[1]}", c.route, "--outlet", "x", "--exist-ok")
        self.assertEqual(kept["listen_address"], f"{taken[0]}:{taken[1]}")
        c.veil(c.alice, "inlet", "delete", f"{taken[0]}:{taken[1]}")
        with self.assertRaises(OSError):
            socket.create_connection(taken, timeout=2).close()
        # An inlet that had a channel closes it when deleted.
        echo = serve(self, EchoHandler)
        c.outlet("echo", echo)
        # (An outlet made again: the same one is fine with --exist-ok, another target is not.)
        self.assertEqual(c.veil(c.bob, "outlet", "create", "echo", "--to", echo, "--trust-everyone",
                                "--exist-ok")["target"], echo)
        other = subprocess.run([os.path.join(BUILD, "sidecar", "cli", "veil"), "--api", c.bob.api, "outlet",
                                "create", "echo", "--to", "127.0.0.1:1", "--trust-everyone", "--exist-ok"],
                               capture_output=True, text=True)
        self.assertEqual(other.returncode, 4, other.stderr)
        used = c.inlet("echo")
        with socket.create_connection(used) as s:
            s.sendall(b"x")
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_all(s), b"x")
        self.assertEqual(len(c.veil(c.alice, "channel", "list").get("channels", [])), 1)
        c.veil(c.alice, "inlet", "delete", f"{used[0]}:{used[1]}")
        wait_for(lambda: not c.veil(c.alice, "channel", "list").get("channels"), what="the inlet's channel to close")
        missing = subprocess.run([os.path.join(BUILD, "sidecar", "cli", "veil"), "--api", c.bob.api, "outlet",
                                  "delete", "nobody"], capture_output=True, text=True)
        self.assertEqual(missing.returncode, 3)
        self.assertIn("PORTAL_NOT_FOUND", missing.stderr)


def wire_protos():
    """veil.wire.v1's portal frames for Python, compiled from proto/ into a temp dir."""
    out = tempfile.mkdtemp(prefix="veil-wire-py-")
    subprocess.run(["protoc", "-I", os.path.join(ROOT, "proto"), f"--python_out={out}",
                    "veil/wire/v1/portal.proto"], check=True)
    sys.path.insert(0, out)
    from veil.wire.v1 import portal_pb2
    return portal_pb2


class MaliciousPeerTest(unittest.TestCase):
    """An app on Alice's sidecar speaks the portal protocol itself, through a real secure channel,
    and breaks every rule: each is refused or resets the session, and the outlet carries on."""

    @classmethod
    def setUpClass(cls):
        cls.pb = wire_protos()

    def setUp(self):
        import veil_sdk
        self.c = Cluster(self)
        self.c.outlet("echo", serve(self, EchoHandler))
        self.app = veil_sdk.connect(self.c.alice.api)
        self.addCleanup(self.app.close)
        channel = self.app.open_channel(self.c.route)
        self.outlet = channel.route + "/service/echo"

    def frame(self, **kind):
        return self.pb.PortalFrame(**kind).SerializeToString()

    def open_session(self):
        """A valid Open: the outlet's session answers Opened; its route (through the channel)."""
        reply = self.app.request(self.outlet, self.frame(open=self.pb.PortalOpen(window=65536, version=1)))
        frame = self.pb.PortalFrame.FromString(reply.payload)
        self.assertEqual(frame.WhichOneof("kind"), "opened", frame)
        return reply.return_route

    def counters(self):
        return self.c.counters(self.c.bob, "outlet")["echo"]

    def assert_outlet_still_works(self):
        inlet = self.c.inlet("echo")
        with socket.create_connection(inlet) as s:
            s.settimeout(20)
            s.sendall(b"still fine")
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_all(s), b"still fine")

    def test_garbage_and_stray_frames_to_the_outlet_are_ignored(self):
        for payload in (b"\xff\xfe garbage", self.frame(data=self.pb.PortalData(offset=0, bytes=b"x")),
                        self.frame(ack=self.pb.PortalAck(consumed=1)), b""):
            self.app.send(self.outlet, payload)
        self.assert_outlet_still_works()

    def test_an_open_without_a_window_is_refused(self):
        reply = self.app.request(self.outlet, self.frame(open=self.pb.PortalOpen(window=0, version=1)))
        frame = self.pb.PortalFrame.FromString(reply.payload)
        self.assertEqual(frame.reset.reason, "PORTAL_PROTOCOL_ERROR")
        self.assertEqual(self.counters()["sessions_refused"], 1)
        self.assert_outlet_still_works()

    def test_rule_breaking_frames_reset_the_session(self):
        # Each case, and what the outlet's sidecar says of it.
        cases = {
            "a gap in the stream": ([self.frame(data=self.pb.PortalData(offset=5, bytes=b"late"))],
                                    "Data at offset 5, expected 0"),
            "a repeated frame": ([self.frame(data=self.pb.PortalData(offset=0, bytes=b"ab")),
                                  self.frame(data=self.pb.PortalData(offset=0, bytes=b"ab"))],
                                 "Data at offset 0, expected 2"),
            "more than the window": ([self.frame(data=self.pb.PortalData(offset=0, bytes=b"x" * ((1 << 20) + 1)))],
                                     "Data beyond the window"),
            "an Ack for bytes never sent": ([self.frame(ack=self.pb.PortalAck(consumed=1 << 40))],
                                            "an Ack for bytes never sent"),
            "data after Fin": ([self.frame(fin=self.pb.PortalFin(offset=0)),
                                self.frame(data=self.pb.PortalData(offset=0, bytes=b"x"))],
                               "Data after Fin"),
            "a second Open": ([self.frame(open=self.pb.PortalOpen(window=1, version=1))], "an unexpected frame"),
            "not a frame": ([b"\x0a\xff\xff\xff"], "not a PortalFrame"),
        }
        from veil.v1 import messaging_pb2
        for i, (what, (frames, said)) in enumerate(cases.items(), 1):
            session = self.open_session()
            # In one Send: they arrive together, before the target could answer a Fin.
            self.app.messaging.Send(messaging_pb2.SendRequest(
                messages=[messaging_pb2.OutgoingMessage(route=session, payload=p) for p in frames]),
                timeout=10)
            wait_for(lambda: self.counters()["sessions_reset"] >= i, what=f"{what}: a reset")
            self.assertEqual(self.counters()["sessions_active"], 0, what)
            wait_for(lambda: "portal protocol error from the far end: " + said in self.c.bob.text(),
                     what=f"{what}: the reason in the log")
            time.sleep(0.1)  # (resets are logged at most 10 a second)
        self.assert_outlet_still_works()

    def test_another_identitys_channel_cannot_reach_someone_elses_session(self):
        import veil_sdk
        session = self.open_session()  # Alice's session on Bob's outlet
        session_address = session.rsplit("/service/", 1)[1]
        # Carol, a third sidecar with her own identity and channel to Bob, aims at it.
        carol = Veild(self.c.dir, "carol")
        self.addCleanup(carol.stop)
        app = veil_sdk.connect(carol.api)
        self.addCleanup(app.close)
        channel = app.open_channel(self.c.route)
        with self.assertRaises(veil_sdk.VeilError) as refused:
            app.request(channel.route + "/service/" + session_address,
                        self.frame(data=self.pb.PortalData(offset=0, bytes=b"injected")), timeout=10)
        self.assertEqual(refused.exception.reason, "ACCESS_DENIED")
        self.assertEqual(self.counters()["sessions_active"], 1)  # Alice's session is untouched


class ExamplesTest(unittest.TestCase):
    """examples/portal/: each script runs as written and prints what it promises."""

    def run_example(self, name):
        out = subprocess.run([os.path.join(ROOT, "examples", "portal", name), BUILD], capture_output=True,
                             text=True, timeout=300)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        return out.stdout

    def test_curl(self):
        self.assertIn("Hello from Bob's web server, through a portal", self.run_example("curl.sh"))

    def test_psql(self):
        out = self.run_example("psql.sh")
        self.assertRegex(out, r"1 \| Hello Ockam!")
        self.assertRegex(out, r"2 \| through a portal")
        self.assertIn("(2 rows)", out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", default=BUILD)
    args, rest = parser.parse_known_args()
    BUILD = os.path.abspath(args.build)
    unittest.main(argv=[sys.argv[0]] + rest)
