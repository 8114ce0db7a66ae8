#!/usr/bin/env python3
"""WebSocket through the intermediaries users have: a hub listening on --ws-listen behind a real
nginx (Debian's nginx-light) as an HTTP/1.1 reverse proxy — plain, and terminating TLS — and a
sidecar that reaches it only through a real HTTP CONNECT proxy (Debian's tinyproxy). The seed
scenario runs over each: Bob's example app keeps a relay on the hub through nginx, Alice's
sidecar opens a secure channel to his listener through nginx (ws, then wss), and through
tinyproxy and nginx (wss); the hub answers curl (no upgrade) with 426.

proxies_test.py --build BUILD_DIR"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, "build")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"


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


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def escaped(path):
    """A route hop's text form of a value: '%' and '/' escaped (docs/routes.md)."""
    return path.replace("%", "%25").replace("/", "%2F")


class Process:
    def __init__(self, base, name, args):
        self.log_path = os.path.join(base, name + ".log")
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Veild(Process):
    def __init__(self, base, name, *extra):
        self.dir = os.path.join(base, name)
        super().__init__(base, name, [os.path.join(BUILD, "sidecar", "daemon", "veild"), "--state-dir", self.dir, *extra])
        wait_for(lambda: self.proc.poll() is not None or " ready: " in self.text(), what=f"{name} ready")
        if self.proc.poll() is not None:
            raise AssertionError(f"veild {name} did not start:\n" + self.text())
        self.api = "unix:" + os.path.join(self.dir, "api.sock")


def veil(node, *args, as_json=True):
    out = subprocess.run([os.path.join(BUILD, "sidecar", "cli", "veil"), "--api", node.api,
                          *(["--json"] if as_json else []), *args], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"veil {' '.join(args)}: exit {out.returncode}: {out.stderr}")
    return json.loads(out.stdout) if as_json and out.stdout.strip() else out.stdout


class ProxiesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="veil-proxies-")
        d = cls.dir
        cls.cert, cls.key = os.path.join(d, "proxy.pem"), os.path.join(d, "proxy.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                        "-keyout", cls.key, "-out", cls.cert], check=True, capture_output=True)
        cls.processes = []
        # The hub: WebSocket only, on loopback, at /veil; nginx in front of it.
        cls.hub = cls.start(Veild(d, "hub", "--hub", "--ws-listen", "127.0.0.1:0/veil"))
        hub_ws = [l for l in veil(cls.hub, "status")["listeners"] if l["transport"] == "ws"][0]
        cls.hub_address = hub_ws["address"]  # 127.0.0.1:PORT/veil
        cls.http_port, cls.https_port, cls.proxy_port = free_port(), free_port(), free_port()
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log info;
events {{ worker_connections 256; }}
http {{
  access_log {d}/nginx-access.log;
  client_body_temp_path {d}/nginx-body;
  proxy_temp_path {d}/nginx-proxy;
  fastcgi_temp_path {d}/nginx-fastcgi;
  uwsgi_temp_path {d}/nginx-uwsgi;
  scgi_temp_path {d}/nginx-scgi;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  server {{
    listen 127.0.0.1:{cls.http_port};
    listen 127.0.0.1:{cls.https_port} ssl;
    ssl_certificate {cls.cert};
    ssl_certificate_key {cls.key};
    location /veil {{
      proxy_pass http://{cls.hub_address.split('/')[0]};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
    }}
  }}
}}
""")
        cls.nginx = cls.start(Process(d, "nginx", [NGINX, "-c", conf, "-p", d]))
        wait_for(lambda: listening(cls.http_port) and listening(cls.https_port), what="nginx listening")
        tconf = os.path.join(d, "tinyproxy.conf")
        with open(tconf, "w") as f:  # no ConnectPort line: CONNECT to any port
            f.write(f"Port {cls.proxy_port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 50\n"
                    f"LogLevel Info\nLogFile \"{d}/tinyproxy.log\"\nAllow 127.0.0.1\n")
        cls.tinyproxy = cls.start(Process(d, "tinyproxy", [TINYPROXY, "-d", "-c", tconf]))
        wait_for(lambda: listening(cls.proxy_port), what="tinyproxy listening")
        cls.ws_hub = f"/ws/127.0.0.1:{cls.http_port}{escaped('/veil')}"
        cls.wss_hub = f"/wss/127.0.0.1:{cls.https_port}{escaped('/veil')}"
        # Bob: no listener of his own; his example app keeps a relay on the hub through nginx.
        cls.bob = cls.start(Veild(d, "bob"))
        cls.bob_app = cls.start(Process(d, "bob-app", [os.path.join(BUILD, "examples", "bob"), cls.bob.api, cls.ws_hub]))
        text = wait_for(lambda: "Echoer serving" in cls.bob_app.text() and cls.bob_app.text(), what="Bob's app serving")
        cls.forward = re.search(r"Forwarding address for Bob is:\n(\S+)", text).group(1)

    @classmethod
    def start(cls, process):
        cls.processes.append(process)
        return process

    @classmethod
    def tearDownClass(cls):
        for p in reversed(cls.processes):
            p.stop()
        if not os.environ.get("VEIL_KEEP_TEMP"):
            shutil.rmtree(cls.dir, ignore_errors=True)

    def echo(self, alice, hub_route):
        channel = veil(alice, "channel", "create", f"{hub_route}/service/{self.forward}/service/listener")
        self.assertEqual(channel["state"], "ESTABLISHED")
        out = veil(alice, "send", "--request", f"/service/{channel['address']}/service/echoer", "Hello Ockam!", as_json=False)
        self.assertIn("Hello Ockam!", out)
        veil(alice, "channel", "delete", channel["address"], as_json=False)
        return channel

    def test_seed_through_nginx_over_ws_and_wss(self):
        alice = self.start(Veild(self.dir, "alice", "--tls-ca", self.cert))
        self.echo(alice, self.ws_hub)
        self.echo(alice, self.wss_hub)  # nginx terminates TLS; the hub speaks plain ws behind it
        kinds = sorted(c["transport"] for c in veil(alice, "status")["connections"])
        self.assertEqual(kinds, ["ws", "wss"])
        # nginx carried Alice's two upgrades (101) to the hub: it logs each when it ends.
        alice.stop()

        def upgrades():
            with open(os.path.join(self.dir, "nginx-access.log")) as f:
                return len(re.findall(r'"GET /veil HTTP/1.1" 101', f.read())) >= 2
        wait_for(upgrades, what="nginx logging two WebSocket upgrades")

    def test_seed_through_a_connect_proxy_then_nginx(self):
        alice = self.start(Veild(self.dir, "alice-proxied", "--tls-ca", self.cert,
                                 "--connect-proxy", f"127.0.0.1:{self.proxy_port}"))
        self.echo(alice, self.wss_hub)
        with open(os.path.join(self.dir, "tinyproxy.log")) as f:
            self.assertIn(f"CONNECT 127.0.0.1:{self.https_port}", f.read())

    def test_an_untrusted_certificate_and_a_refusing_proxy_are_clear_errors(self):
        alice = self.start(Veild(self.dir, "alice-no-ca"))  # trusts only the system's CAs
        out = subprocess.run([os.path.join(BUILD, "sidecar", "cli", "veil"), "--api", alice.api, "channel", "create",
                              f"{self.wss_hub}/service/{self.forward}/service/listener"],
                             capture_output=True, text=True, timeout=60)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("certificate verify failed", out.stderr)
        # A proxy that is not there.
        gone = self.start(Veild(self.dir, "alice-bad-proxy", "--connect-proxy", f"127.0.0.1:{free_port()}"))
        out = subprocess.run([os.path.join(BUILD, "sidecar", "cli", "veil"), "--api", gone.api, "channel", "create",
                              f"{self.ws_hub}/service/{self.forward}/service/listener"],
                             capture_output=True, text=True, timeout=60)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("CONNECTION_FAILED", out.stderr)

    def test_plain_http_gets_426_through_nginx(self):
        out = subprocess.run(["curl", "-s", "-i", f"http://127.0.0.1:{self.http_port}/veil"],
                             capture_output=True, text=True, timeout=30)
        self.assertIn("426", out.stdout.splitlines()[0])
        self.assertIn("WebSocket", out.stdout)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", default=BUILD)
    args, rest = parser.parse_known_args()
    BUILD = os.path.abspath(args.build)
    unittest.main(argv=[sys.argv[0]] + rest)
