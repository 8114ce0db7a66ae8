# veil — the two commands a user needs on a fresh Debian 12 clone:
#   make demo   install what is missing, build, run the demo
#   make test   install what is missing, build, run every test (ctest)
# Other targets: build, deps, bench (performance, Release build), clean.

BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= 2
CTEST_ARGS ?=

# Debian 12 packages the build and tests need. Installed only when missing.
DEB_PACKAGES := build-essential cmake pkg-config \
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto \
  libsodium-dev libabsl-dev libspdlog-dev libfmt-dev libgtest-dev libgmock-dev libasio-dev \
  libcli11-dev libyaml-cpp-dev prometheus-cpp-dev

DEPS_STAMP := $(BUILD_DIR)/.deps-installed
CONFIG_STAMP := $(BUILD_DIR)/CMakeCache.txt

MAKEFLAGS += --no-print-directory

.PHONY: all deps build test demo bench clean

all: build

# The stamp records the package list it checked; it is redone only when this Makefile changes.
$(DEPS_STAMP): Makefile
	@mkdir -p $(BUILD_DIR)
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

deps: $(DEPS_STAMP)

$(CONFIG_STAMP): $(DEPS_STAMP)
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: $(CONFIG_STAMP)
	cmake --build $(BUILD_DIR) -j$(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j$(JOBS) --timeout 300 $(CTEST_ARGS)

demo: build
	examples/demo.sh $(BUILD_DIR)

# Benchmarks, built in Release in their own directory. Each figure is printed beside its peer,
# measured in the same run.
BENCH_DIR ?= build-release
bench: $(DEPS_STAMP)
	@test -f $(BENCH_DIR)/CMakeCache.txt || cmake -S . -B $(BENCH_DIR) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BENCH_DIR) -j$(JOBS) --target channel_bench
	$(BENCH_DIR)/bench/channel_bench

clean:
	rm -rf $(BUILD_DIR) $(BENCH_DIR)
