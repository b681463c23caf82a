# cross/cross.mk: cross-build and qemu-user settings for issue 7, included by the top-level Makefile, which
# defines the warning flags (WARN) and the nanopb rule used here. Everything for cross builds lives in cross/:
# this file, the machine setup (cross/setup.sh), the test drivers and their C sources and vectors. Paths are
# relative to the repository top (run make from there). Outputs go to build/cross/<target>/. cross-smoke and cross-loopback do not
# need mprpc.h; cross, test-cross and footprint do.
#
# One-time machine setup (root, idempotent): cross/setup.sh (`make cross-setup`)
#
# Targets: x86_64 (host gcc, glibc), aarch64, armhf (32-bit ARM hard-float), s390x (big-endian), musl (static,
# x86-64). For each target T this file defines
#   CROSS_CC_T            the compiler
#   CROSS_RUN_T           the run prefix: empty for x86_64/musl, `qemu-<arch> -L /usr/<triplet>` for the others
#                         (explicit qemu-user, no binfmt registration needed)
#   CROSS_TARGET_CFLAGS_T the target's own flags: the nanopb include for musl; a 64-bit off_t for armhf
#   CROSS_NANOPB_LIBS_T   nanopb runtime to link (Debian's libprotobuf-nanopb.a for T; for musl, the one that
#                         cross/setup.sh builds from Debian's source package)
#   CROSS_LDFLAGS_T       extra link flags (-static for musl)
# and these shared ones
#   CROSS_CFLAGS          the Makefile's WARN, -DMPRPC_NO_ZOOKEEPER, CROSS_OPT, CROSS_NANOPB_DEFS
#   CROSS_NANOPB_DEFS     -DPB_ENABLE_MALLOC: the option Debian builds libprotobuf-nanopb.a with (debian/rules);
#                         pb.h's structs do not depend on it, so defining it or not is ABI-safe either way
#   CROSS_LDLIBS          appended last to every link (e.g. set CROSS_LDLIBS = -pthread)
#
# Building any C program for every target:
#   $(call cross_program,NAME,SOURCES AND DEPS,EXTRA CFLAGS)
# defines build/cross/<T>/NAME for every T from the .c files among SOURCES AND DEPS (other files there, such as
# mprpc.h or generated headers, are prerequisites only); $(call cross_bins,NAME) lists the five binaries.
# Running: $(CROSS_RUN_T) build/cross/T/NAME. Example, in the top-level Makefile:
#   $(call cross_program,test_codec,tests/test_codec.c build/gen/x.pb.c build/gen/x.pb.h mprpc.h,-Ibuild/gen)
#   test-cross: $(call cross_bins,test_codec)
#   	$(foreach t,$(CROSS_TARGETS),$(CROSS_RUN_$(t)) build/cross/$(t)/test_codec;)
# Target: cross-smoke  builds cross/nanopb_smoke.c for all targets, runs each (under qemu-user where
#         needed), compares its output with cross/nanopb_smoke.hex, and prints `T: N passed, N failed`
#         for each target.
# Target: cross-loopback  builds cross/loopback_check.c for all targets and runs cross/loopback.sh:
#         per-target syscall checks, then a server of each target against a client of each target over
#         127.0.0.1 (25 pairs), with qemu's unimplemented-syscall log on; one `T: N passed, N failed` per target.
# Target: cross  builds mprpc.h's C tests (tests/test_*.c but test_registry and test_tls), the examples and cross/wire_vector.c
#         for every target with -DMPRPC_NO_ZOOKEEPER and -Werror; nanopb code from the host generator in
#         build/cross/gen. Binaries: build/cross/<T>/{tests/test_*,provider,caller,wire_vector}.
# Target: test-cross  cross-setup (idempotent), cross (-k), then cross/test-cross.sh: per target the test
#         binaries under qemu-user via tests/run.sh, the wire vector (cross/wire_vector.hex) and the example
#         provider/caller against the x86-64 build in both directions; one `T: N passed, N failed` per target.

ifndef WARN
$(error cross/cross.mk is included by the top-level Makefile: run `make cross` or `make test-cross` there)
endif

_cross_saved_default_goal := $(.DEFAULT_GOAL)

CROSS_BUILD   := build/cross
CROSS_TARGETS := x86_64 aarch64 armhf s390x musl
CROSS_OPT     ?= -O2
CROSS_NANOPB_DEFS ?= -DPB_ENABLE_MALLOC
CROSS_CFLAGS   = $(WARN) -DMPRPC_NO_ZOOKEEPER $(CROSS_OPT) $(CROSS_NANOPB_DEFS)
CROSS_LDLIBS  ?=

# Debian triplets of the multiarch targets
CROSS_TRIPLET_x86_64  := x86_64-linux-gnu
CROSS_TRIPLET_aarch64 := aarch64-linux-gnu
CROSS_TRIPLET_armhf   := arm-linux-gnueabihf
CROSS_TRIPLET_s390x   := s390x-linux-gnu

CROSS_CC_x86_64  := gcc
CROSS_CC_aarch64 := aarch64-linux-gnu-gcc
CROSS_CC_armhf   := arm-linux-gnueabihf-gcc
CROSS_CC_s390x   := s390x-linux-gnu-gcc
CROSS_CC_musl    := musl-gcc

CROSS_RUN_x86_64  :=
CROSS_RUN_aarch64 := qemu-aarch64 -L /usr/aarch64-linux-gnu
CROSS_RUN_armhf   := qemu-arm -L /usr/arm-linux-gnueabihf
CROSS_RUN_s390x   := qemu-s390x -L /usr/s390x-linux-gnu
CROSS_RUN_musl    :=

# Debian's cross gcc searches /usr/include after its own /usr/<triplet>/include, so the (architecture-independent,
# Multi-Arch: same) pb*.h installed by libnanopb-dev are found with no flag. Only the .a differs per architecture.
# armhf is built as 32-bit Debian builds its own packages, with a 64-bit off_t: without it readdir() fails with
# EOVERFLOW when an inode number or a directory offset does not fit 32 bits, and under qemu-arm ext4 hands out
# 64-bit hashed directory offsets (CI's test_hostile read no corpus file; reproduced here with small inodes).
CROSS_TARGET_CFLAGS_x86_64  :=
CROSS_TARGET_CFLAGS_aarch64 :=
CROSS_TARGET_CFLAGS_armhf   := -D_FILE_OFFSET_BITS=64
CROSS_TARGET_CFLAGS_s390x   :=
CROSS_TARGET_CFLAGS_musl    := -I$(CROSS_BUILD)/musl/include

CROSS_NANOPB_LIBS_x86_64  := /usr/lib/x86_64-linux-gnu/libprotobuf-nanopb.a
CROSS_NANOPB_LIBS_aarch64 := /usr/lib/aarch64-linux-gnu/libprotobuf-nanopb.a
CROSS_NANOPB_LIBS_armhf   := /usr/lib/arm-linux-gnueabihf/libprotobuf-nanopb.a
CROSS_NANOPB_LIBS_s390x   := /usr/lib/s390x-linux-gnu/libprotobuf-nanopb.a
CROSS_NANOPB_LIBS_musl    := $(CROSS_BUILD)/musl/lib/libprotobuf-nanopb.a

CROSS_LDFLAGS_x86_64  :=
CROSS_LDFLAGS_aarch64 :=
CROSS_LDFLAGS_armhf   :=
CROSS_LDFLAGS_s390x   :=
CROSS_LDFLAGS_musl    := -static

# The musl runtime is built (without root) from the Debian source package that cross/setup.sh fetched.
$(CROSS_NANOPB_LIBS_musl):
	cross/setup.sh --musl-lib

# Missing multiarch runtime: say how to get it instead of "No rule to make target".
$(foreach t,x86_64 aarch64 armhf s390x,$(CROSS_NANOPB_LIBS_$(t))):
	@echo "cross.mk: $@ is missing: run cross/setup.sh as root (installs libnanopb-dev:<arch>)" >&2; exit 1

# $(1)=target $(2)=program name $(3)=sources and prerequisites $(4)=extra CFLAGS
define CROSS_PROGRAM_template
$(CROSS_BUILD)/$(1)/$(2): $(3) $(CROSS_NANOPB_LIBS_$(1))
	@mkdir -p $$(@D)
	$$(CROSS_CC_$(1)) $$(CROSS_CFLAGS) $$(CROSS_TARGET_CFLAGS_$(1)) $(4) $$(CROSS_LDFLAGS_$(1)) -o $$@ \
	  $$(filter %.c,$$^) $$(CROSS_NANOPB_LIBS_$(1)) $$(CROSS_LDLIBS)
endef
cross_program = $(foreach t,$(CROSS_TARGETS),$(eval $(call CROSS_PROGRAM_template,$(t),$(1),$(2),$(3))))
cross_bins    = $(foreach t,$(CROSS_TARGETS),$(CROSS_BUILD)/$(t)/$(1))

# ---- cross-smoke: the toolchains end to end, without mprpc.h ----
CROSS_SMOKE_GEN := $(CROSS_BUILD)/gen/smoke.pb.c $(CROSS_BUILD)/gen/smoke.pb.h
$(call nanopb_rule,cross,$(CROSS_BUILD)/gen)

$(call cross_program,nanopb_smoke,cross/nanopb_smoke.c $(CROSS_SMOKE_GEN),-I$(CROSS_BUILD)/gen)

# Recursive make on the same makefile(s), so one target's build failure is counted, not fatal to the others.
CROSS_SUBMAKE = $(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST))

# Three checks per target: it builds; it runs and decodes its own bytes (exit 0); its bytes equal the vector.
.PHONY: cross-smoke
cross-smoke: $(CROSS_SMOKE_GEN) ## the cross toolchains end to end on a nanopb message, without mprpc.h
	@$(foreach t,$(CROSS_TARGETS),run_$(t)='$(CROSS_RUN_$(t))';) \
	want=$$(cat cross/nanopb_smoke.hex); rc=0; \
	for t in $(CROSS_TARGETS); do \
	  eval "run=\$$run_$$t"; bin=$(CROSS_BUILD)/$$t/nanopb_smoke; p=0; f=0; mkdir -p $(CROSS_BUILD)/$$t; \
	  if $(CROSS_SUBMAKE) $$bin >$(CROSS_BUILD)/$$t/smoke-build.log 2>&1; then \
	    p=$$((p+1)); \
	    if got=$$($$run $$bin 2>$(CROSS_BUILD)/$$t/smoke-run.log); then p=$$((p+1)); else \
	      f=$$((f+1)); echo "cross-smoke $$t: run failed:"; cat $(CROSS_BUILD)/$$t/smoke-run.log; fi; \
	    if [ "$$got" = "$$want" ]; then p=$$((p+1)); else \
	      f=$$((f+1)); echo "cross-smoke $$t: bytes differ: got '$$got', want '$$want'"; fi; \
	  else \
	    f=$$((f+3)); echo "cross-smoke $$t: build failed:"; cat $(CROSS_BUILD)/$$t/smoke-build.log; \
	  fi; \
	  [ $$f -eq 0 ] || rc=1; \
	  echo "$$t: $$p passed, $$f failed"; \
	done; exit $$rc

# ---- cross-loopback: epoll/eventfd/timerfd/signalfd/TCP over 127.0.0.1 under qemu-user, every target pair ----
$(call cross_program,loopback_check,cross/loopback_check.c,-pthread)

.PHONY: cross-loopback
cross-loopback: $(call cross_bins,loopback_check) ## epoll/eventfd/TCP under qemu-user, every pair of targets
	@$(foreach t,$(CROSS_TARGETS),run_$(t)='$(CROSS_RUN_$(t))') CROSS_BUILD=$(CROSS_BUILD) \
	  cross/loopback.sh $(CROSS_TARGETS)

# ---- cross / test-cross: mprpc.h's own tests and examples for every target (issue 7, phase 2) ----
# nanopb code for proto/*.proto comes from the host generator, once, into build/cross/gen (architecture-neutral C).
# Tests that need ZooKeeper (tests/test_registry.c) are left out; everything is built with -DMPRPC_NO_ZOOKEEPER.
CROSS_GEN_PROTOS := $(notdir $(basename $(wildcard proto/*.proto)))
CROSS_GEN        := $(foreach p,$(CROSS_GEN_PROTOS),$(CROSS_BUILD)/gen/$(p).pb.c $(CROSS_BUILD)/gen/$(p).pb.h)
$(call nanopb_rule,proto,$(CROSS_BUILD)/gen)

# The typed stubs (mprpc_generator.py) too: the examples and tests/test_stubs.c include x.mprpc.h.
$(call mprpcgen_rule,proto,$(CROSS_BUILD)/gen)

# Left out, one reason each (every other tests/test_*.c is built and run for every target):
#   test_registry: needs a ZooKeeper server and libzookeeper_mt, which the targets do not have
#   test_tls:      needs -DMPRPC_TLS and OpenSSL (libssl-dev) built for each target, not installed by setup.sh
CROSS_TEST_EXCLUDE ?= test_registry test_tls
CROSS_TESTS := $(filter-out $(CROSS_TEST_EXCLUDE),$(notdir $(basename $(wildcard tests/test_*.c))))
CROSS_MPRPC_CFLAGS := -I. -Itests -I$(CROSS_BUILD)/gen -pthread
CROSS_TEST_DEPS := mprpc.h tests/test.h tests/support.h tests/tls_support.h $(CROSS_BUILD)/gen/user.pb.c $(CROSS_BUILD)/gen/user.pb.h \
  $(CROSS_BUILD)/gen/testsvc.pb.c $(CROSS_BUILD)/gen/testsvc.pb.h $(CROSS_BUILD)/gen/user.mprpc.h \
  $(CROSS_BUILD)/gen/testsvc.mprpc.h
$(foreach n,$(CROSS_TESTS),$(call cross_program,tests/$(n),tests/$(n).c $(CROSS_TEST_DEPS),$(CROSS_MPRPC_CFLAGS)))
# test_admin runs the host's build/mprpc-call as a child process (an x86-64 caller against the target's provider).
$(call cross_bins,tests/test_admin): $(BUILD)/mprpc-call
# The nanopb option check as the top-level Makefile builds it: PB_FIELD_32BIT against a runtime built without it.
$(call cross_program,tests/test_nanopb_check32,tests/test_nanopb_check.c mprpc.h tests/test.h,-I. -Itests -pthread \
  -DPB_FIELD_32BIT)
CROSS_TESTS += test_nanopb_check32
# The provider tests again as the small build of docs/FOOTPRINT.md: 4 KiB receive buffer, 64 KiB thread stacks.
$(call cross_program,tests/test_server_small,tests/test_server.c $(CROSS_TEST_DEPS),$(CROSS_MPRPC_CFLAGS) \
  -DMPRPC_READ_CHUNK=4096 -DMPRPC_THREAD_STACK_SIZE=65536)
CROSS_TESTS += test_server_small
$(foreach n,provider caller,$(call cross_program,$(n),examples/$(n).c mprpc.h $(CROSS_BUILD)/gen/user.pb.c \
  $(CROSS_BUILD)/gen/user.pb.h $(CROSS_BUILD)/gen/user.mprpc.h,$(CROSS_MPRPC_CFLAGS)))
# The wire vector: the same frames encoded on every CPU, compared with cross/wire_vector.hex.
$(call cross_program,wire_vector,cross/wire_vector.c mprpc.h $(CROSS_BUILD)/gen/user.pb.c \
  $(CROSS_BUILD)/gen/user.pb.h,$(CROSS_MPRPC_CFLAGS))

CROSS_ALL_BINS := $(foreach n,$(CROSS_TESTS),$(call cross_bins,tests/$(n))) $(call cross_bins,provider) \
  $(call cross_bins,caller) $(call cross_bins,wire_vector)

.PHONY: cross test-cross
cross: $(CROSS_ALL_BINS) ## the tests and examples for x86_64 aarch64 armhf s390x musl -> build/cross/<T>/

# Installs what is missing first (cross/setup.sh, idempotent; as non-root only the musl runtime step).
# Builds what it can (-k: one target's failure does not stop the others; a missing binary counts as a failure),
# then cross/test-cross.sh: per target the unit + loopback integration tests under qemu-user (through
# tests/run.sh), the wire vector, and the example provider/caller against the x86-64 build in both directions.
test-cross: ## cross-setup, cross, then every target's tests, wire vector and interop under qemu-user
	@mkdir -p $(CROSS_BUILD)
	@rm -f $(foreach n,$(CROSS_TEST_EXCLUDE),$(call cross_bins,tests/$(n))) # tests/run.sh runs every test_* there
	@if [ "$$(id -u)" -eq 0 ]; then cross/setup.sh; else cross/setup.sh --musl-lib; fi
	@$(CROSS_SUBMAKE) -k cross >$(CROSS_BUILD)/cross-build.log 2>&1 || \
	  { echo "make cross failed for some target (log: $(CROSS_BUILD)/cross-build.log):"; \
	    grep -E 'error|Error' $(CROSS_BUILD)/cross-build.log | head -20; }
	@$(foreach t,$(CROSS_TARGETS),run_$(t)='$(CROSS_RUN_$(t))' cc_$(t)='$(CROSS_CC_$(t)) $(CROSS_TARGET_CFLAGS_$(t))') \
	  CROSS_BUILD=$(CROSS_BUILD) CROSS_CFLAGS='$(CROSS_CFLAGS)' CROSS_TESTS='$(CROSS_TESTS)' \
	  cross/test-cross.sh $(CROSS_TARGETS)

# ---- footprint: docs/FOOTPRINT.md (sizes for x86-64/armhf/musl, threads, RSS, painted stack use) ----
.PHONY: footprint
footprint: $(CROSS_GEN) $(CROSS_NANOPB_LIBS_musl) ## code size, threads, RSS, stack use -> docs/FOOTPRINT.md
	@MPRPC_WARN='$(WARN)' /usr/bin/python3 scripts/footprint.py

.PHONY: cross-setup cross-clean
cross-setup: ## install the cross toolchains and qemu-user (root; idempotent)
	cross/setup.sh
# cross-clean keeps build/cross/src and the musl runtime (rebuilt only when the nanopb version changes)
cross-clean: ## remove the cross builds (not the musl nanopb runtime)
	rm -rf $(CROSS_BUILD)/gen $(foreach t,x86_64 aarch64 armhf s390x,$(CROSS_BUILD)/$(t)) \
	  $(filter-out $(CROSS_BUILD)/musl/lib $(CROSS_BUILD)/musl/include $(CROSS_BUILD)/musl/obj \
	    $(CROSS_BUILD)/musl/.version,$(wildcard $(CROSS_BUILD)/musl/*))

.DEFAULT_GOAL := $(_cross_saved_default_goal)
