#!/usr/bin/env python3
"""helm/Dockerfile cannot be built here (no container engine), so check what can be checked:
the runtime stage installs a Debian package for every shared library the shipped binaries
load (ldd + dpkg -S on this Debian 12 machine), the build stage installs what the Makefile
does, and every path it copies and target it builds exists."""
import argparse
import os
import re
import subprocess
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKERFILE = os.path.join(ROOT, "helm", "Dockerfile")
# In debian:12-slim already (apt itself needs them).
BASE = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}
# Sanitizer runtimes, present only in `make check`'s instrumented builds, never in the image.
SANITIZERS = {"libasan8", "libubsan1", "liblsan0", "libtsan2"}
BINARIES = {}


def stages():
    with open(DOCKERFILE) as f:
        text = f.read().replace("\\\n", " ")
    return re.split(r"^FROM ", text, flags=re.M)[1:]


def apt_packages(stage):
    out = set()
    for m in re.finditer(r"apt-get install -y --no-install-recommends ([^&]+)", stage):
        out |= set(m.group(1).split())
    return out


def packages_of(paths):
    """{path: Debian package} for shared libraries, with one dpkg -S call. Debian 12 is
    usr-merged: dpkg may know a file under /lib or /usr/lib, by its link name or real name."""
    names = {}
    for path in paths:
        real = os.path.realpath(path)
        for p in (path, real):
            for candidate in (p, p[4:] if p.startswith("/usr/") else "/usr" + p):
                names.setdefault(candidate, set()).add(path)
    proc = subprocess.run(["dpkg", "-S", *names], capture_output=True, text=True)
    found = {}
    for line in proc.stdout.splitlines():
        package, _, file = line.partition(": ")
        for path in names.get(file.strip(), ()):
            found[path] = package.split(":")[0]
    return found


class DockerfileTest(unittest.TestCase):
    def test_runtime_has_every_library(self):
        build, runtime = stages()
        runtime_pkgs = apt_packages(runtime)
        needs = {}
        for name, binary in BINARIES.items():
            ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
            needs[name] = re.findall(r"=> (/\S+)", ldd)
        packages = packages_of({lib for libs in needs.values() for lib in libs})
        for name, libs in needs.items():
            for lib in libs:
                pkg = packages.get(lib)
                self.assertIsNotNone(pkg, f"{name}: {lib} is in no Debian package")
                if pkg in BASE or pkg in SANITIZERS:
                    continue
                self.assertIn(pkg, runtime_pkgs, f"{name} needs {lib} from {pkg}")

    def test_build_stage_installs_what_the_makefile_does(self):
        build, _ = stages()
        with open(os.path.join(ROOT, "Makefile")) as f:
            makefile = f.read().replace("\\\n", " ")
        wanted = set(re.search(r"^DEB_PACKAGES := (.*)$", makefile, re.M).group(1).split())
        test_only = {"python3", "python3-yaml", "unzip", "python3-grpcio", "python3-protobuf",
                     "golang-go", "golang-google-grpc-dev", "golang-google-protobuf-dev",
                     "golang-github-golang-protobuf-1-5-dev", "protoc-gen-go", "protoc-gen-go-grpc",
                     "curl", "postgresql", "postgresql-client",  # the portal tests' programs
                     "openssl", "nginx-light", "tinyproxy-bin",  # the WebSocket tests' (certs, proxies)
                     "faketime",  # runs a credential authority with its clock ahead
                     "etcd-server", "etcd-client"}  # the hub directory tests' etcd
        # The image installs golang-etcd-server-dev (it pulls the other two); the Makefile
        # unpacks the three, as installing it would break the Go SDK's protoc-gen-go.
        protos = re.search(r"^DEB_PROTO_PACKAGES := (.*)$", makefile, re.M).group(1).split()
        self.assertEqual(apt_packages(build), (wanted - test_only) | {protos[0]})

    def test_copied_paths_and_targets_exist(self):
        build, runtime = stages()
        for src in re.findall(r"^COPY (?!--from)(\S+)", build, re.M):
            self.assertTrue(os.path.exists(os.path.join(ROOT, src)), src)
        targets = re.search(r"--target ([\w ]+?) &&", build).group(1).split()
        self.assertEqual(sorted(targets), sorted(BINARIES))
        self.assertIn("USER 65532:65532", runtime)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", action="append", default=[], help="NAME=PATH")
    args, rest = parser.parse_known_args()
    for item in args.binary:
        name, path = item.split("=", 1)
        BINARIES[name] = path
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)


if __name__ == "__main__":
    main()
