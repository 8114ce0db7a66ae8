#!/usr/bin/env python3
"""The Helm chart's contract, checked on what `helm lint` and `helm template` make of it.

Runs helm (from $HELM, PATH, or the path given with --helm; `make helm` fetches one) on
helm/veil with the default values, the example values (helm/veil/ci/example-values.yaml) and
variations, parses the rendered manifests and asserts: probes, security contexts, the vault
key Secret reference, ports, Service selectors, the PodDisruptionBudget, the sidecar in both
modes (and included from another chart), declarative configs that veild itself accepts, and
values.schema.json refusing bad values.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "helm", "veil")
EXAMPLE_VALUES = os.path.join(CHART, "ci", "example-values.yaml")
HELM = None
VEILD = None


def helm(*args, check=True):
    proc = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc


def render(*args, chart=CHART):
    out = helm("template", "rel", chart, "--namespace", "apps", *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def chart_version():
    with open(os.path.join(CHART, "Chart.yaml")) as f:
        return yaml.safe_load(f)["appVersion"]


def render_notes(*args):
    """NOTES.txt as `helm install` would print it (helm template leaves it out, and install
    needs a cluster): rendered through a copy of the chart that wraps it in a ConfigMap."""
    with tempfile.TemporaryDirectory() as tmp:
        chart = os.path.join(tmp, "veil")
        shutil.copytree(CHART, chart)
        with open(os.path.join(chart, "templates", "NOTES.txt")) as f:
            notes = f.read()
        os.remove(os.path.join(chart, "templates", "NOTES.txt"))
        with open(os.path.join(chart, "templates", "zz-notes.yaml"), "w") as f:
            f.write('{{- define "test.notes" }}' + notes + '{{- end }}\n'
                    'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n'
                    'data: {notes: {{ include "test.notes" . | quote }}}\n')
        docs = render(*args, chart=chart)
        return named(docs, "ConfigMap", "notes")["data"]["notes"]


def of_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def named(docs, kind, name):
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: found {len(found)}"
    return found[0]


def pod_specs(docs):
    """(name, pod spec) of every workload and pod."""
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            yield d["metadata"]["name"], d["spec"]


def containers(spec):
    return spec.get("initContainers", []) + spec.get("containers", [])


def veild_containers(spec):
    return [c for c in containers(spec) if c.get("command") == ["veild"]]


def flag(container, name):
    for arg in container.get("args", []):
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
    return None


def veild_until_ready(args):
    """Starts veild with `args` (and a temp state dir and API socket) until it says it is
    ready or exits; stops it and returns what it logged."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([VEILD, "--state-dir", tmp, "--api", f"unix:{tmp}/api.sock", *args],
                                stderr=subprocess.PIPE, text=True)
        try:
            seen = ""
            while " ready: " not in seen and proc.poll() is None:
                seen += proc.stderr.readline()
            return seen
        finally:
            proc.terminate()
            proc.wait(15)
            proc.stderr.close()


class ContractMixin:
    """Checks every rendering must pass."""

    def check_security(self, docs):
        for name, spec in pod_specs(docs):
            psc = spec["securityContext"]
            self.assertTrue(psc["runAsNonRoot"], name)
            self.assertGreater(psc["runAsUser"], 0, name)
            self.assertEqual(psc["seccompProfile"]["type"], "RuntimeDefault", name)
            self.assertFalse(spec.get("automountServiceAccountToken", True), name)
            for c in containers(spec):
                sc = c["securityContext"]
                where = f"{name}/{c['name']}"
                self.assertTrue(sc["runAsNonRoot"], where)
                self.assertFalse(sc["allowPrivilegeEscalation"], where)
                self.assertTrue(sc["readOnlyRootFilesystem"], where)
                self.assertFalse(sc.get("privileged", False), where)
                self.assertEqual(sc["capabilities"]["drop"], ["ALL"], where)
                self.assertNotIn("add", sc["capabilities"], where)
                self.assertEqual(sc["seccompProfile"]["type"], "RuntimeDefault", where)
                self.assertIn("limits", c["resources"], where)

    def check_veild(self, docs, secret_name, secret_key):
        seen = 0
        for name, spec in pod_specs(docs):
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for c in veild_containers(spec):
                seen += 1
                where = f"{name}/{c['name']}"
                ports = {p["name"]: p["containerPort"] for p in c["ports"]}
                health = flag(c, "--health-listen")
                self.assertIsNotNone(health, where)
                self.assertEqual(health, "$(POD_IP):%d" % next(v for k, v in ports.items() if k.endswith("health")))
                self.assertEqual(flag(c, "--metrics-listen"),
                                 "$(POD_IP):%d" % next(v for k, v in ports.items() if k.endswith("metrics")))
                self.assertIn({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                              c["env"], where)
                # Probes: gRPC health on the health-only port, never the API.
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    self.assertEqual(c[probe]["grpc"]["port"], int(health.rsplit(":", 1)[1]), where)
                self.assertEqual(flag(c, "--log-format"), "json", where)
                self.assertTrue(flag(c, "--api").startswith("unix:"), where)
                # The vault key: a file from the Secret, mounted read-only.
                key_file = flag(c, "--vault-key-file")
                mount = next(m for m in c["volumeMounts"] if key_file.startswith(m["mountPath"] + "/"))
                self.assertTrue(mount.get("readOnly"), where)
                secret = volumes[mount["name"]]["secret"]
                self.assertEqual(secret["secretName"], secret_name, where)
                self.assertEqual(secret["items"], [{"key": secret_key, "path": os.path.basename(key_file)}])
                self.assertNotIn("VEIL_VAULT_KEY", str(c.get("env")), where)
                # State under a mounted volume, in a subdirectory veild creates.
                state = flag(c, "--state-dir")
                self.assertTrue(any(state.startswith(m["mountPath"] + "/") for m in c["volumeMounts"]), where)
                grace = float(flag(c, "--shutdown-grace"))
                self.assertGreater(spec["terminationGracePeriodSeconds"], grace, where)
        self.assertGreater(seen, 0)

    def check_services(self, docs):
        workloads = of_kind(docs, "Deployment") + of_kind(docs, "StatefulSet")
        pods = [d["spec"]["template"]["metadata"]["labels"] for d in workloads]
        for svc in of_kind(docs, "Service"):
            selector = svc["spec"]["selector"]
            matching = [p for p in pods if selector.items() <= p.items()]
            self.assertEqual(len(matching), 1, svc["metadata"]["name"])
            deployment = next(d for d in workloads
                              if d["spec"]["template"]["metadata"]["labels"] == matching[0])
            ports = {p["name"] for c in containers(deployment["spec"]["template"]["spec"])
                     for p in c.get("ports", [])}
            for p in svc["spec"]["ports"]:
                self.assertIn(p["targetPort"], ports, svc["metadata"]["name"])
        for d in workloads:
            self.assertLessEqual(d["spec"]["selector"]["matchLabels"].items(),
                                 d["spec"]["template"]["metadata"]["labels"].items())

    def check_configs_with_veild(self, docs):
        for cm in of_kind(docs, "ConfigMap"):
            text = cm["data"]["veil.yaml"]
            with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
                f.write(text)
                f.flush()
                proc = subprocess.run([VEILD, "--config", f.name, "--check-config"],
                                      capture_output=True, text=True, timeout=30)
            self.assertEqual(proc.returncode, 0, f"{cm['metadata']['name']}: {proc.stderr}\n{text}")

    def check_all(self, docs, secret_name, secret_key):
        self.check_security(docs)
        self.check_veild(docs, secret_name, secret_key)
        self.check_services(docs)
        self.check_configs_with_veild(docs)


class WebSocketIngressValuesTest(ContractMixin, unittest.TestCase):
    """helm/veil/ci/websocket-ingress-values.yaml: the hub behind ingress-nginx over WebSocket."""

    VALUES = os.path.join(CHART, "ci", "websocket-ingress-values.yaml")

    @classmethod
    def setUpClass(cls):
        cls.docs = render("-f", cls.VALUES)

    def test_lint_strict(self):
        helm("lint", "--strict", CHART, "-f", self.VALUES)

    def test_contract(self):
        self.check_all(self.docs, "rel-veil-vault-key", "vault-key")

    def test_hub_listens_for_websocket_and_the_ingress_routes_to_it(self):
        hub = named(self.docs, "Deployment", "rel-veil-hub-0")
        veild = veild_containers(hub["spec"]["template"]["spec"])[0]
        self.assertEqual(flag(veild, "--ws-listen"), "$(POD_IP):8080/veil")
        self.assertIn({"name": "ws", "containerPort": 8080, "protocol": "TCP"}, veild["ports"])
        svc = named(self.docs, "Service", "rel-veil-hub-0")
        ws = next(p for p in svc["spec"]["ports"] if p["name"] == "ws")
        self.assertEqual((ws["port"], ws["targetPort"]), (8080, "ws"))
        ingress = named(self.docs, "Ingress", "rel-veil-hub-0")
        self.assertEqual(ingress["spec"]["ingressClassName"], "nginx")
        rule = ingress["spec"]["rules"][0]
        self.assertEqual(rule["host"], "hub.example.com")
        path = rule["http"]["paths"][0]
        self.assertEqual((path["path"], path["pathType"]), ("/veil", "Prefix"))
        self.assertEqual(path["backend"]["service"], {"name": "rel-veil-hub-0", "port": {"name": "ws"}})
        self.assertEqual(ingress["spec"]["tls"][0]["secretName"], "hub-example-com-tls")
        # ingress-nginx would close an idle WebSocket after 60 s without these.
        self.assertEqual(ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"], "3600")

    def test_the_hub_accepts_its_flags(self):
        # The rendered --ws-listen value is one veild takes (the pod IP stands in as loopback).
        hub = named(self.docs, "Deployment", "rel-veil-hub-0")
        value = flag(veild_containers(hub["spec"]["template"]["spec"])[0], "--ws-listen")
        with tempfile.TemporaryDirectory() as d:
            proc = subprocess.Popen([VEILD, "--state-dir", d, "--hub",
                                     "--ws-listen", value.replace("$(POD_IP)", "127.0.0.1").replace(":8080", ":0")],
                                    stderr=subprocess.PIPE, text=True)
            try:
                line = ""
                while " ready: " not in line and proc.poll() is None:
                    line = proc.stderr.readline()
                self.assertIn("ws=[127.0.0.1:", line)
                self.assertIn("/veil]", line)
            finally:
                proc.terminate()
                proc.wait(15)

    def test_no_ingress_without_websocket_and_none_beyond_the_hosts(self):
        docs = render("-f", self.VALUES, "--set", "hub.websocket.enabled=false")
        self.assertEqual(of_kind(docs, "Ingress"), [])
        self.assertIsNone(flag(veild_containers(named(docs, "Deployment", "rel-veil-hub-0")["spec"]["template"]["spec"])[0], "--ws-listen"))
        docs = render("-f", self.VALUES, "--set", "hub.replicas=2")
        self.assertEqual([i["metadata"]["name"] for i in of_kind(docs, "Ingress")], ["rel-veil-hub-0"])


class DefaultValuesTest(ContractMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = render()

    def test_lint_strict(self):
        helm("lint", "--strict", CHART)

    def test_image_tag_is_the_app_version(self):
        with open(os.path.join(CHART, "values.yaml")) as f:
            self.assertEqual(yaml.safe_load(f)["image"]["tag"], chart_version())

    def test_contract(self):
        self.check_all(self.docs, "rel-veil-vault-key", "vault-key")

    def test_one_hub_deployment_and_service(self):
        d = named(self.docs, "Deployment", "rel-veil-hub-0")
        self.assertEqual(d["spec"]["replicas"], 1)
        self.assertEqual(d["spec"]["strategy"]["type"], "Recreate")
        c = d["spec"]["template"]["spec"]["containers"][0]
        self.assertIn("--hub", c["args"])
        self.assertEqual(flag(c, "--tcp-listen"), "$(POD_IP):4000")
        svc = named(self.docs, "Service", "rel-veil-hub-0")
        self.assertEqual({p["name"]: p["port"] for p in svc["spec"]["ports"]},
                         {"veil": 4000, "health": 8081, "metrics": 9090})
        self.assertEqual(len(of_kind(self.docs, "PersistentVolumeClaim")), 0)

    def test_vault_key_secret(self):
        secret = named(self.docs, "Secret", "rel-veil-vault-key")
        self.assertEqual(secret["metadata"]["annotations"]["helm.sh/resource-policy"], "keep")
        import base64
        key = base64.b64decode(secret["data"]["vault-key"]).decode()
        self.assertRegex(key, r"^[0-9a-f]{64}$")

    def test_pdb_selects_the_hubs(self):
        pdb = named(self.docs, "PodDisruptionBudget", "rel-veil-hub")
        hub = named(self.docs, "Deployment", "rel-veil-hub-0")
        self.assertLessEqual(pdb["spec"]["selector"]["matchLabels"].items(),
                             hub["spec"]["template"]["metadata"]["labels"].items())
        self.assertEqual(pdb["spec"]["maxUnavailable"], 1)

    def test_helm_test_pod_checks_health(self):
        pod = named(self.docs, "Pod", "rel-veil-test-health")
        self.assertEqual(pod["metadata"]["annotations"]["helm.sh/hook"], "test")
        c = pod["spec"]["containers"][0]
        self.assertEqual(c["command"], ["veil"])
        self.assertEqual(c["args"], ["health", "rel-veil-hub-0:8081"])

    def test_no_example_app_by_default(self):
        self.assertEqual([d["metadata"]["name"] for d in of_kind(self.docs, "Deployment")],
                         ["rel-veil-hub-0"])

    def test_notes(self):
        out = render_notes()
        self.assertIn("/tcp/rel-veil-hub-0.apps.svc:4000", out)
        self.assertIn("helm test rel", out)


class ExampleValuesTest(ContractMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = render("-f", EXAMPLE_VALUES)

    def test_lint_strict(self):
        helm("lint", "--strict", CHART, "-f", EXAMPLE_VALUES)

    def test_contract(self):
        self.check_all(self.docs, "veil-vault-key", "key")
        self.assertEqual(of_kind(self.docs, "Secret"), [], "an existing Secret is used, none made")

    def test_two_independent_hubs_with_state(self):
        for i in range(2):
            d = named(self.docs, "Deployment", f"rel-veil-hub-{i}")
            volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
            self.assertEqual(volumes["state"]["persistentVolumeClaim"]["claimName"], f"rel-veil-hub-{i}-state")
            named(self.docs, "PersistentVolumeClaim", f"rel-veil-hub-{i}-state")
            self.assertEqual(named(self.docs, "Service", f"rel-veil-hub-{i}")["spec"]["type"], "LoadBalancer")
        self.assertEqual(named(self.docs, "Pod", "rel-veil-test-health")["spec"]["containers"][0]["args"],
                         ["health", "rel-veil-hub-0:8081", "rel-veil-hub-1:8081"])

    def test_bob_with_a_native_sidecar(self):
        bob = named(self.docs, "Deployment", "rel-veil-bob")
        spec = bob["spec"]["template"]["spec"]
        [veil] = spec["initContainers"]
        self.assertEqual(veil["name"], "veil")
        self.assertEqual(veil["restartPolicy"], "Always")
        [app] = spec["containers"]
        self.assertEqual(app["name"], "bob")
        # The app reaches the sidecar's socket through the shared emptyDir.
        api = flag(veil, "--api")
        self.assertEqual(api, "unix:/run/veil/api.sock")
        self.assertIn({"name": "VEIL_API", "value": api}, app["env"])
        self.assertEqual(app["command"], ["bob", "$(VEIL_API)"])
        socket_dir = "/run/veil"
        app_mount = next(m for m in app["volumeMounts"] if m["mountPath"] == socket_dir)
        veil_mount = next(m for m in veil["volumeMounts"] if m["mountPath"] == socket_dir)
        self.assertEqual(app_mount["name"], veil_mount["name"])
        volumes = {v["name"]: v for v in spec["volumes"]}
        self.assertIn("emptyDir", volumes[app_mount["name"]])
        self.assertEqual(flag(veil, "--api-socket-mode"), "0660")
        # Its declarative config registers the relay on hub 1.
        self.assertEqual(flag(veil, "--config"), "/etc/veil/config/veil.yaml")
        cm = named(self.docs, "ConfigMap", "rel-veil-bob-veil")
        config = yaml.safe_load(cm["data"]["veil.yaml"])
        self.assertEqual(config["relays"], [{"hub_route": "/tcp/rel-veil-hub-1.apps.svc:4000",
                                             "name": "bob", "identity": "bob"}])
        self.assertEqual(volumes["veil-config"]["configMap"]["name"], "rel-veil-bob-veil")


class VariationsTest(ContractMixin, unittest.TestCase):
    def test_classic_sidecar_and_existing_claim(self):
        docs = render("--set", "exampleBob.enabled=true", "--set", "sidecar.persistence.existingClaim=bob-state",
                      "--set", "sidecar.socketMode=0600")
        self.check_all(docs, "rel-veil-vault-key", "vault-key")
        spec = named(docs, "Deployment", "rel-veil-bob")["spec"]["template"]["spec"]
        self.assertNotIn("initContainers", spec)
        self.assertEqual([c["name"] for c in spec["containers"]], ["bob", "veil"])
        self.assertNotIn("restartPolicy", spec["containers"][1])
        volumes = {v["name"]: v for v in spec["volumes"]}
        self.assertEqual(volumes["veil-state"]["persistentVolumeClaim"]["claimName"], "bob-state")
        self.assertEqual(flag(spec["containers"][1], "--api-socket-mode"), "0600")

    def test_hub_disabled_renders_no_hub(self):
        docs = render("--set", "hub.enabled=false")
        self.assertEqual(of_kind(docs, "Deployment"), [])
        self.assertEqual(of_kind(docs, "PodDisruptionBudget"), [])
        self.assertEqual(of_kind(docs, "Pod"), [])

    def test_relay_allow_and_limits_reach_veild(self):
        ident = "I" + "0123456789abcdef" * 2
        docs = render("--set", f"hub.relayAllow[0]={ident}:bob", "--set", "hub.limits.relaysPerIdentity=3")
        c = named(docs, "Deployment", "rel-veil-hub-0")["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(flag(c, "--relay-allow"), f"{ident}:bob")
        self.assertEqual(flag(c, "--relay-max-per-identity"), "3")

    @staticmethod
    def parent_chart(tmp, values, deployment):
        """A throwaway app chart "myapp" with this chart as its dependency "veil"."""
        app = os.path.join(tmp, "myapp")
        os.makedirs(os.path.join(app, "templates"))
        shutil.copytree(CHART, os.path.join(app, "charts", "veil"))
        with open(os.path.join(app, "Chart.yaml"), "w") as f:
            f.write("apiVersion: v2\nname: myapp\nversion: 1.0.0\n"
                    "dependencies:\n  - name: veil\n    version: 0.1.0\n")
        with open(os.path.join(app, "values.yaml"), "w") as f:
            f.write(values)
        with open(os.path.join(app, "templates", "deployment.yaml"), "w") as f:
            f.write(deployment)
        return app

    def test_sidecar_included_from_another_chart(self):
        with tempfile.TemporaryDirectory() as tmp:
            app = self.parent_chart(tmp, "veil:\n  hub:\n    enabled: false\n  sidecar:\n    nativeSidecar: true\n", """{{- $veil := dict "root" $ "values" .Values.veil }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: myapp
spec:
  selector: {matchLabels: {app: myapp}}
  template:
    metadata: {labels: {app: myapp}}
    spec:
      terminationGracePeriodSeconds: 30
      automountServiceAccountToken: false
      securityContext: {runAsNonRoot: true, runAsUser: 1000, fsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
      initContainers:
        {{- include "veil.sidecar.container" $veil | nindent 8 }}
      containers:
        - name: app
          image: myapp:1
          env:
            {{- include "veil.sidecar.appEnv" $veil | nindent 12 }}
          volumeMounts:
            {{- include "veil.sidecar.appVolumeMounts" $veil | nindent 12 }}
          resources: {limits: {memory: 64Mi}}
          securityContext:
            runAsNonRoot: true
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
            seccompProfile: {type: RuntimeDefault}
      volumes:
        {{- include "veil.sidecar.volumes" $veil | nindent 8 }}
""")
            helm("lint", "--strict", app)
            docs = render(chart=app)
            self.check_security(docs)
            self.check_veild(docs, "rel-veil-vault-key", "vault-key")
            named(docs, "Secret", "rel-veil-vault-key")  # the dependency makes the key
            spec = named(docs, "Deployment", "myapp")["spec"]["template"]["spec"]
            self.assertEqual(spec["initContainers"][0]["restartPolicy"], "Always")
            self.assertEqual(spec["initContainers"][0]["image"], "ghcr.io/veil/veil:" + chart_version())

    def test_an_app_pod_reaches_a_far_database_on_localhost_through_an_inlet(self):
        # An app chart (the docs/kubernetes.md walk-through): its pod's sidecar has an inlet on
        # 127.0.0.1:5432 to the database sidecar's outlet, rendered into the sidecar's config,
        # which veild itself accepts.
        with tempfile.TemporaryDirectory() as tmp:
            app = self.parent_chart(tmp, """veil:
  hub:
    enabled: false
  sidecar:
    inlets:
      - listen_address: 127.0.0.1:5432
        route: /tcp/veil-hub-0.db.svc:4000/service/forward_to_db/service/listener
        outlet: postgres
        trust_policy: {trust_identifier: I0123456789abcdef0123456789abcdef}
    outlets:
      - name: metrics
        target: 127.0.0.1:9100
        trust_policy: {trust_everyone: true}
    config:
      listeners:
        - address: listener
          trust_policy: {trust_everyone: true}
""", """{{- $veil := dict "root" $ "values" .Values.veil "configMap" "myapp-veil" }}
{{- include "veil.sidecar.configMap" $veil }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: myapp
spec:
  selector: {matchLabels: {app: myapp}}
  template:
    metadata: {labels: {app: myapp}}
    spec:
      terminationGracePeriodSeconds: 30
      automountServiceAccountToken: false
      securityContext: {runAsNonRoot: true, runAsUser: 1000, fsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: app
          image: myapp:1
          env: [{name: PGHOST, value: 127.0.0.1}, {name: PGPORT, value: "5432"}]
          resources: {limits: {memory: 64Mi}}
          securityContext:
            runAsNonRoot: true
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
            seccompProfile: {type: RuntimeDefault}
        {{- include "veil.sidecar.container" $veil | nindent 8 }}
      volumes:
        {{- include "veil.sidecar.volumes" $veil | nindent 8 }}
""")
            helm("lint", "--strict", app)
            docs = render(chart=app)
            self.check_security(docs)
            self.check_configs_with_veild(docs)
            config = yaml.safe_load(named(docs, "ConfigMap", "myapp-veil")["data"]["veil.yaml"])
            self.assertEqual(config["inlets"][0]["listen_address"], "127.0.0.1:5432")
            self.assertEqual(config["inlets"][0]["outlet"], "postgres")
            self.assertEqual(config["outlets"][0]["target"], "127.0.0.1:9100")
            self.assertEqual(config["listeners"][0]["address"], "listener")
            spec = named(docs, "Deployment", "myapp")["spec"]["template"]["spec"]
            veil = next(c for c in spec["containers"] if c["name"] == "veil")
            self.assertIn("--config=/etc/veil/config/veil.yaml", veil["args"])
            volumes = {v["name"]: v for v in spec["volumes"]}
            self.assertEqual(volumes["veil-config"]["configMap"]["name"], "myapp-veil")


# Each: --set arguments and a part of the error helm must print.
BAD_VALUES = [
    (["sidecar.credentials.trustedAuthorities[0]=alice"], "sidecar.credentials.trustedAuthorities"),
    (["authority.credentialTtlSeconds=0"], "authority.credentialTtlSeconds"),
    (["authority.port=0"], "authority.port"),
    (["hub.replicas=0"], "hub.replicas"),
    (["hub.replicas=100"], "hub.replicas"),
    (["ports.health=70000"], "ports.health"),
    (["hub.port=0"], "hub.port"),
    (["logFormat=xml"], "logFormat"),
    (["logLevel=loud"], "logLevel"),
    (["image.pullPolicy=Sometimes"], "image.pullPolicy"),
    (["image.repository="], "image.repository"),
    (["securityContext.privileged=true"], "securityContext.privileged"),
    (["securityContext.allowPrivilegeEscalation=true"], "securityContext.allowPrivilegeEscalation"),
    (["securityContext.readOnlyRootFilesystem=false"], "securityContext.readOnlyRootFilesystem"),
    (["securityContext.runAsNonRoot=false"], "securityContext.runAsNonRoot"),
    (["securityContext.capabilities.add[0]=NET_ADMIN"], "securityContext.capabilities.add"),
    (["podSecurityContext.runAsNonRoot=false"], "podSecurityContext.runAsNonRoot"),
    (["podSecurityContext.runAsUser=0"], "podSecurityContext.runAsUser"),
    (["sidecar.socketMode=0666"], "sidecar.socketMode"),
    (["sidecar.socketDir=relative"], "sidecar.socketDir"),
    (["hub.relayAllow[0]=bob"], "hub.relayAllow.0"),
    (["hub.limits.queuedBytesPerRelay=10"], "hub.limits.queuedBytesPerRelay"),
    (["hub.service.type=ExternalName"], "hub.service.type"),
    (["hub.persistence.size=lots"], "hub.persistence.size"),
    (["hub.extraArgs[0]=rm -rf"], "hub.extraArgs.0"),
    (["hub.config.listener[0].address=x"], "hub.config"),
    (["exampleBob.relayName=a b"], "exampleBob.relayName"),
    (["exampleBob.replicas=2"], "exampleBob.replicas"),
    (["exampleBob.trustPolicy.trust_imported=true"], "exampleBob.trustPolicy"),
    (["exampleBob.trustPolicy.trust_everyone=false"], "exampleBob.trustPolicy"),
    (["vaultKey.secretKey=bad key"], "vaultKey.secretKey"),
    (["vaultKey.existingSecret=Bad_Name"], "vaultKey.existingSecret"),
    (["hubs.enabled=true"], "hubs"),
    (["sidecar.inlets[0].route=/tcp/h:1/service/l"], "sidecar.inlets.0"),  # no listen_address, no outlet
    (["sidecar.outlets[0].name=db", "sidecar.outlets[0].target=nowhere"], "sidecar.outlets.0"),
]


class SchemaTest(unittest.TestCase):
    def test_bad_values_are_refused(self):
        for sets, expected in BAD_VALUES:
            with self.subTest(sets=sets):
                args = ["template", "rel", CHART]
                for s in sets:
                    args += ["--set", s]
                proc = helm(*args, check=False)
                self.assertNotEqual(proc.returncode, 0, f"{sets} was accepted")
                self.assertIn("values don't meet the specifications of the schema", proc.stderr)
                self.assertIn(expected, proc.stderr)


class CredentialsTest(unittest.TestCase):
    """An authority Deployment, and sidecars that trust it and enroll from a Secret."""
    AUTHORITY = "I0123456789abcdef0123456789abcdef"

    @classmethod
    def setUpClass(cls):
        cls.docs = render("--set", "authority.enabled=true", "--set", "exampleBob.enabled=true",
                          "--set", f"sidecar.credentials.trustedAuthorities[0]={cls.AUTHORITY}",
                          "--set", "sidecar.credentials.enrollment.existingSecret=bob-ticket")

    def test_lint_strict(self):
        helm("lint", "--strict", CHART, "--set", "authority.enabled=true")

    def test_no_authority_by_default(self):
        self.assertEqual([d for d in render() if "authority" in d["metadata"]["name"]], [])

    def test_one_authority_with_its_state_kept(self):
        d = named(self.docs, "Deployment", "rel-veil-authority")
        [veild] = veild_containers(d["spec"]["template"]["spec"])
        self.assertIn("--authority", veild["args"])
        self.assertEqual(flag(veild, "--authority-route"),
                         "/tcp/rel-veil-authority.apps.svc:4200/service/authority")
        self.assertEqual(flag(veild, "--credential-ttl"), "3600")
        claim = named(self.docs, "PersistentVolumeClaim", "rel-veil-authority-state")
        self.assertEqual(claim["metadata"]["annotations"]["helm.sh/resource-policy"], "keep")
        volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
        self.assertEqual(volumes["state"]["persistentVolumeClaim"]["claimName"], "rel-veil-authority-state")
        service = named(self.docs, "Service", "rel-veil-authority")
        self.assertEqual(service["spec"]["ports"][0]["port"], 4200)

    def test_the_authority_accepts_its_flags(self):
        d = named(self.docs, "Deployment", "rel-veil-authority")
        [veild] = veild_containers(d["spec"]["template"]["spec"])
        wanted = ["--authority", "--authority-route", "--credential-ttl", "--tcp-listen"]
        args = [a.replace("$(POD_IP)", "127.0.0.1").replace(":4200", ":0") for a in veild["args"]
                if a.split("=")[0] in wanted]
        seen = veild_until_ready(args)
        self.assertIn("authority I", seen)
        self.assertIn(" ready: ", seen)

    def test_the_hub_admits_relay_names_by_attribute(self):
        policy = 'subject.role == "db" and relay.name == subject.service'
        docs = render("--set-string", f"hub.relayAllowPolicies[0]={policy}",
                      "--set", f"hub.trustedAuthorities[0]={self.AUTHORITY}")
        hub = named(docs, "Deployment", "rel-veil-hub-0")
        [veild] = veild_containers(hub["spec"]["template"]["spec"])
        self.assertEqual(flag(veild, "--relay-allow-policy"), policy)
        self.assertEqual(flag(veild, "--authority-identity"), self.AUTHORITY)
        # What the chart renders, veild takes.
        seen = veild_until_ready(["--hub", f"--relay-allow-policy={policy}",
                                  f"--authority-identity={self.AUTHORITY}"])
        self.assertIn(" ready: ", seen)

    def test_the_sidecar_trusts_the_authority_and_enrolls_from_the_secret(self):
        bob = named(self.docs, "Deployment", "rel-veil-bob")
        spec = bob["spec"]["template"]["spec"]
        [veil] = veild_containers(spec)
        self.assertEqual(flag(veil, "--authority-identity"), self.AUTHORITY)
        self.assertEqual(flag(veil, "--enroll-token-file"), "/etc/veil/enrollment/token")
        mounts = {m["name"]: m for m in veil["volumeMounts"]}
        self.assertEqual(mounts["veil-enrollment"]["mountPath"], "/etc/veil/enrollment")
        self.assertTrue(mounts["veil-enrollment"]["readOnly"])
        volumes = {v["name"]: v for v in spec["volumes"]}
        self.assertEqual(volumes["veil-enrollment"]["secret"]["secretName"], "bob-ticket")
        self.assertEqual(volumes["veil-enrollment"]["secret"]["defaultMode"], 0o440)


class ReplicatedHubsTest(ContractMixin, unittest.TestCase):
    """hub.directory: the replicas are one StatefulSet behind one Service, sharing etcd."""

    @classmethod
    def setUpClass(cls):
        cls.docs = render("--set", "hub.replicas=3", "--set", "hub.directory.etcd.deploy=true",
                          "--set", "hub.persistence.enabled=true")

    def test_lint_strict(self):
        helm("lint", "--strict", CHART, "--set", "hub.replicas=3",
             "--set", "hub.directory.etcd.deploy=true")

    def test_contract(self):
        self.check_all(self.docs, "rel-veil-vault-key", "vault-key")

    def test_one_statefulset_behind_one_service(self):
        self.assertEqual(of_kind(self.docs, "Deployment"), [])
        hub = named(self.docs, "StatefulSet", "rel-veil-hub")
        self.assertEqual(hub["spec"]["replicas"], 3)
        self.assertEqual(hub["spec"]["serviceName"], "rel-veil-hub-pods")
        # Each replica its own state (its own identity), on its own volume.
        [claim] = hub["spec"]["volumeClaimTemplates"]
        self.assertEqual(claim["metadata"]["name"], "state")
        self.assertNotIn("state", {v["name"] for v in hub["spec"]["template"]["spec"]["volumes"]})
        service = named(self.docs, "Service", "rel-veil-hub")
        self.assertNotIn("veil.dev/hub-index", service["spec"]["selector"])
        self.assertIsNone(named(self.docs, "Service", "rel-veil-hub-pods")["spec"].get("type"))
        self.assertEqual(named(self.docs, "Service", "rel-veil-hub-pods")["spec"]["clusterIP"], "None")
        names = {d["metadata"]["name"] for d in of_kind(self.docs, "Service")}
        self.assertNotIn("rel-veil-hub-0", names)
        # The helm test checks the one Service.
        pod = named(self.docs, "Pod", "rel-veil-test-health")
        self.assertEqual(containers(pod["spec"])[0]["args"], ["health", "rel-veil-hub:8081"])

    def test_the_replicas_share_the_charts_etcd(self):
        hub = named(self.docs, "StatefulSet", "rel-veil-hub")
        [veild] = veild_containers(hub["spec"]["template"]["spec"])
        self.assertEqual(flag(veild, "--hub-directory"), "http://rel-veil-etcd:2379")
        self.assertEqual(flag(veild, "--hub-replica"), "$(POD_NAME)")
        self.assertEqual(flag(veild, "--hub-route"), "/tcp/$(POD_IP):4000")
        self.assertIn({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                      veild["env"])
        etcd = named(self.docs, "StatefulSet", "rel-veil-etcd")
        self.assertEqual(etcd["spec"]["replicas"], 1)
        [container] = containers(etcd["spec"]["template"]["spec"])
        self.assertIn("--advertise-client-urls=http://rel-veil-etcd:2379", container["args"])
        self.assertEqual(named(self.docs, "Service", "rel-veil-etcd")["spec"]["ports"][0]["port"], 2379)

    def test_on_an_ipv6_cluster_the_replicas_route_is_bracketed(self):
        docs = render("--set", "hub.replicas=2", "--set", "hub.directory.etcd.deploy=true",
                      "--set", "ports.bindHost=[$(POD_IP)]")
        [veild] = veild_containers(named(docs, "StatefulSet", "rel-veil-hub")["spec"]["template"]["spec"])
        self.assertEqual(flag(veild, "--hub-route"), "/tcp/[$(POD_IP)]:4000")
        self.assertEqual(flag(veild, "--tcp-listen"), "[$(POD_IP)]:4000")
        # Listeners on every address still leave the route a pod IP another replica can dial.
        for bind, route in (("0.0.0.0", "/tcp/$(POD_IP):4000"), ("[::]", "/tcp/[$(POD_IP)]:4000")):
            docs = render("--set", "hub.replicas=2", "--set", "hub.directory.etcd.deploy=true",
                          "--set", f"ports.bindHost={bind}")
            [veild] = veild_containers(named(docs, "StatefulSet", "rel-veil-hub")["spec"]["template"]["spec"])
            self.assertEqual(flag(veild, "--hub-route"), route)
            self.assertEqual(flag(veild, "--tcp-listen"), f"{bind}:4000")

    def test_an_existing_etcd_with_client_certificates(self):
        docs = render("--set", "hub.replicas=2",
                      "--set", "hub.directory.etcd.endpoints[0]=https://etcd-0.db:2379",
                      "--set", "hub.directory.etcd.endpoints[1]=https://etcd-1.db:2379",
                      "--set", "hub.directory.etcd.tlsSecret=etcd-client")
        self.assertEqual(of_kind(docs, "StatefulSet")[0]["metadata"]["name"], "rel-veil-hub")
        self.assertEqual(len(of_kind(docs, "StatefulSet")), 1, "no etcd of the chart's")
        hub = named(docs, "StatefulSet", "rel-veil-hub")
        spec = hub["spec"]["template"]["spec"]
        [veild] = veild_containers(spec)
        self.assertEqual(flag(veild, "--hub-directory"), "https://etcd-0.db:2379,https://etcd-1.db:2379")
        self.assertEqual(flag(veild, "--hub-directory-ca"), "/etc/veil/etcd/ca.crt")
        self.assertEqual(flag(veild, "--hub-directory-cert"), "/etc/veil/etcd/tls.crt")
        self.assertEqual(flag(veild, "--hub-directory-key"), "/etc/veil/etcd/tls.key")
        mount = next(m for m in veild["volumeMounts"] if m["name"] == "etcd-tls")
        self.assertEqual(mount["mountPath"], "/etc/veil/etcd")
        self.assertTrue(mount["readOnly"])
        volume = next(v for v in spec["volumes"] if v["name"] == "etcd-tls")
        self.assertEqual(volume["secret"]["secretName"], "etcd-client")
        # Without persistence the state is an emptyDir, still one per pod.
        self.assertIn("emptyDir", next(v for v in spec["volumes"] if v["name"] == "state"))
        self.assertNotIn("volumeClaimTemplates", hub["spec"])

    def test_the_replica_accepts_its_directory_flags(self):
        # What the chart renders, veild takes: a replica starts against a real etcd... here one
        # that is not there yet (the replica starts anyway and says so), with the pod's values
        # standing in.
        hub = named(self.docs, "StatefulSet", "rel-veil-hub")
        [veild] = veild_containers(hub["spec"]["template"]["spec"])
        wanted = ["--hub", "--tcp-listen", "--hub-directory", "--hub-directory-prefix",
                  "--hub-directory-lease-ttl", "--hub-replica", "--hub-route"]
        args = [a.replace("$(POD_IP)", "127.0.0.1").replace("$(POD_NAME)", "rel-veil-hub-0")
                .replace("rel-veil-etcd:2379", "127.0.0.1:9")
                for a in veild["args"] if a.split("=")[0] in wanted]
        args = [a.replace(":4000", ":0") if a.startswith("--tcp-listen=") else a for a in args]
        self.assertEqual(len(args), len(wanted))
        seen = veild_until_ready(args)
        self.assertIn(" ready: ", seen)
        self.assertIn("hub mesh", seen)

    def test_the_values_docs_kubernetes_md_shows(self):
        with open(os.path.join(ROOT, "docs", "kubernetes.md")) as f:
            text = f.read()
        block = text.split("# values.yaml: three replicas", 1)[1].split("\n", 1)[1].split("```", 1)[0]
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as values:
            values.write(block)
            values.flush()
            docs = render("-f", values.name)
        hub = named(docs, "StatefulSet", "rel-veil-hub")
        self.assertEqual(hub["spec"]["replicas"], 3)
        self.assertEqual(len(hub["spec"]["volumeClaimTemplates"]), 1)
        [veild] = veild_containers(hub["spec"]["template"]["spec"])
        self.assertEqual(len(flag(veild, "--hub-directory").split(",")), 3)
        self.assertEqual(flag(veild, "--hub-directory-cert"), "/etc/veil/etcd/tls.crt")

    def test_notes_name_the_one_service(self):
        notes = render_notes("--set", "hub.replicas=3", "--set", "hub.directory.etcd.deploy=true")
        self.assertIn("3 replicas sharing a directory", notes)
        self.assertIn("/tcp/rel-veil-hub.apps.svc:4000", notes)
        self.assertNotIn("rel-veil-hub-0", notes)


def main():
    global HELM, VEILD
    parser = argparse.ArgumentParser()
    parser.add_argument("--helm", default="")
    parser.add_argument("--veild", default="")
    args, rest = parser.parse_known_args()
    HELM = os.environ.get("HELM") or shutil.which("helm") or args.helm
    VEILD = os.environ.get("VEILD") or args.veild
    if not HELM or not os.access(HELM, os.X_OK):
        sys.exit(f"chart_test: no helm binary (looked at $HELM, PATH and {args.helm!r}); run `make helm`")
    if not VEILD or not os.access(VEILD, os.X_OK):
        sys.exit(f"chart_test: no veild binary at {VEILD!r}")
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)


if __name__ == "__main__":
    main()
