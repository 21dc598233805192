# graft — build, test, demo and benchmark. Every target installs what it needs.
SWIFT        ?= swift
RELEASE_BIN  := .build/release/graft
SHARED       ?= ../shared
BENCH_DIR    ?= $(HOME)/.cache/graft-bench

.PHONY: all build deps test demo samples bench conformance lint format fuzz fuzz-build sanitize clean

all: build

# System packages (Debian): libzstd-dev for the zstd target, libvips-dev for images
# (DatasetTools), pkg-config to find them.
# Python packages for the cross-checks: safetensors (the reference reader) and numpy.
deps:
	@missing=""; \
	  pkg-config --exists libzstd 2>/dev/null || missing="$$missing libzstd-dev pkg-config"; \
	  pkg-config --exists vips 2>/dev/null || missing="$$missing libvips-dev pkg-config"; \
	  command -v zstd >/dev/null || missing="$$missing zstd"; \
	  if [ -n "$$missing" ]; then \
	    echo "make: installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  fi
	@python3 -c "import safetensors, numpy" 2>/dev/null || \
	  { echo "make: installing python packages safetensors, numpy"; \
	    python3 -m pip install -q safetensors numpy 2>&1 | grep -v 'Running pip as' || true; }

build: deps
	$(SWIFT) build -c release --product graft

# The whole suite: unit, property, conformance and CLI tests (Swift Testing), then
# the conformance checkers (sd-scripts merges; LyCORIS and ComfyUI merges of every
# adapter kind) run against the release binary.
test: deps
	$(SWIFT) build -c release --product graft
	GRAFT_BIN=$(CURDIR)/$(RELEASE_BIN) $(SWIFT) test
	$(MAKE) --no-print-directory conformance

conformance: build
	@if [ -f $(SHARED)/conformance/check.py ]; then \
	  python3 $(SHARED)/conformance/check.py --quiet --cmd '$(CURDIR)/$(RELEASE_BIN) merge {ckpt} {loras} -o {out}'; \
	elif [ -n "$$CI" ]; then echo "conformance fixtures missing in $(SHARED)/conformance" >&2; exit 1; \
	else echo "conformance: skipped, $(SHARED)/conformance not found"; fi
	@if [ -f $(SHARED)/conformance/zoo/check_zoo.py ]; then \
	  python3 $(SHARED)/conformance/zoo/check_zoo.py --quiet \
	    --cmd '$(CURDIR)/$(RELEASE_BIN) merge {ckpt} {adapter}:{ratio} -o {out} --save-precision fp16 --compat {compat}'; \
	elif [ -n "$$CI" ]; then echo "adapter-zoo fixtures missing in $(SHARED)/conformance/zoo" >&2; exit 1; \
	else echo "conformance: adapter zoo skipped, $(SHARED)/conformance/zoo not found"; fi

# Runs the main jobs on the bundled samples.
demo: build
	@bash Samples/demo.sh $(RELEASE_BIN)

# Regenerates Samples/ with the project's own generator (deterministic).
samples:
	$(SWIFT) run -c release graft-samplegen samples Samples

# Speed and memory against `cp` + `sync` of the same bytes (full-size SDXL inputs are
# generated once into $(BENCH_DIR), ~7.8 GB).
bench: deps
	$(SWIFT) build -c release
	@bash Samples/bench.sh $(CURDIR)/.build/release $(BENCH_DIR)

# Style: swift-format from the toolchain, configured by .swift-format (4 spaces, 120
# columns, the rules the code follows), whitespace included. `make format` rewrites.
SWIFT_FORMAT_PATHS := Sources Tests Package.swift
LINT_FLAGS ?=

lint:
	$(SWIFT) format lint --strict --parallel --recursive $(LINT_FLAGS) $(SWIFT_FORMAT_PATHS)

format:
	$(SWIFT) format --in-place --parallel --recursive $(SWIFT_FORMAT_PATHS)

# libFuzzer targets (Fuzz/, a separate package so the root build never needs the fuzzer
# runtime): header parser, adapter analysis + mapping + merge planning (raw bytes and a
# structure-aware recipe), zstd spool. Each runs FUZZ_SECONDS (or FUZZ_RUNS executions),
# one after another on one core; crashes land in $(FUZZ_DIR)/crashes/TARGET/ and fail.
FUZZ_SECONDS ?= 60
FUZZ_RUNS    ?= 0
FUZZ_TARGETS ?= header adapter adapter-structured zstd
FUZZ_DIR     ?= Fuzz/.build-work
FUZZ_SWIFTFLAGS := -Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=fuzzer-no-link,address -Xswiftc -use-ld=lld

fuzz-build: deps
	$(SWIFT) build -c release --package-path Fuzz $(FUZZ_SWIFTFLAGS)

fuzz: fuzz-build
	@seconds=$(FUZZ_SECONDS); [ "$(FUZZ_RUNS)" -gt 0 ] && seconds=0; \
	  bash Fuzz/run.sh $$($(SWIFT) build -c release --package-path Fuzz $(FUZZ_SWIFTFLAGS) --show-bin-path) \
	    $(FUZZ_DIR) $$seconds $(FUZZ_RUNS) $(FUZZ_TARGETS)

# The test suite under AddressSanitizer, then ThreadSanitizer, each in its own scratch
# path (a sanitized build cannot share .build with the plain one).
# Leaks are checked too (LeakSanitizer), except those of the test runners (Tests/lsan.supp).
sanitize: deps
	LSAN_OPTIONS=suppressions=$(CURDIR)/Tests/lsan.supp GRAFT_BIN=$(CURDIR)/.build-asan/debug/graft \
	  $(SWIFT) test --sanitize=address --scratch-path .build-asan
	GRAFT_BIN=$(CURDIR)/.build-tsan/debug/graft $(SWIFT) test --sanitize=thread --scratch-path .build-tsan

clean:
	rm -rf .build .build-asan .build-tsan Fuzz/.build $(FUZZ_DIR)
