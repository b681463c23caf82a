# mprpc.h — build, demo and tests. `make demo` and `make test` work on a fresh
# Debian 12 machine as root: they install missing packages first.

# `make help` lists every target: the `## text` after a target is its line there.
# The warning flags and the nanopb rule are defined here only; bench/bench.mk and
# cross/cross.mk (included at the end) use them, and the scripts make runs get
# them from the environment (MPRPC_WARN_FLAGS, MPRPC_NANOPB, MPRPC_MPRPCGEN).

CC       ?= cc
CFLAGS   ?= -O2 -g
# the project's warnings, for C and C++ alike; WARN adds the C standard
WARN_FLAGS = -Wall -Wextra -Wpedantic -Werror
WARN      = -std=c11 $(WARN_FLAGS)
BUILD     = build
GEN       = $(BUILD)/gen
NANOPB    = nanopb_generator.py
MPRPCGEN  = /usr/bin/python3 mprpc_generator.py
INCS      = -I. -I$(GEN)
LIBS      = -lprotobuf-nanopb -lpthread
ZK_LIBS   = -lzookeeper_mt
TLS_LIBS  = -lssl -lcrypto
SAN      ?=
export MPRPC_WARN_FLAGS = $(WARN_FLAGS)
export MPRPC_NANOPB = $(NANOPB)
export MPRPC_MPRPCGEN = $(MPRPCGEN)

.PHONY: all help deps deps-test examples demo demo-zk demo-tls test-build test test-asan test-tsan test-valgrind \
        fuzz fuzz-build fuzz-corpus soak scale clean
all: examples ## the example programs (build/provider, build/caller, bigfile) and build/mprpc-call

# One line per target, from the `## text` after it; a .PHONY target without
# one is an error, so the list cannot fall behind the targets.
help: ## this list
	@awk -f scripts/make-help.awk $(MAKEFILE_LIST)

print-%: ## print-VAR prints make variable VAR (scripts read flags this way)
	@echo '$($*)'

deps: ## install the Debian packages the library, demo and examples need
	@scripts/deps.sh core zk
deps-test: ## install the Debian packages the tests need too
	@scripts/deps.sh core zk test

# The one nanopb rule: $(call nanopb_rule,SRC,OUT) makes OUT/x.pb.c and
# OUT/x.pb.h from SRC/x.proto and SRC/x.options. The output is generated,
# never committed, and kept between builds.
define NANOPB_RULE
$(2)/%.pb.c $(2)/%.pb.h: $(1)/%.proto $(1)/%.options
	@mkdir -p $(2)
	$$(NANOPB) -q -I $(1) -D $(2) $$<
endef
nanopb_rule = $(eval $(call NANOPB_RULE,$(1),$(2)))
.SECONDARY:
$(call nanopb_rule,proto,$(GEN))

# The stub rule, the same shape: $(call mprpcgen_rule,SRC,OUT) makes OUT/x.mprpc.h
# (typed calls and handler tables, mprpc_generator.py) from SRC/x.proto.
define MPRPCGEN_RULE
$(2)/%.mprpc.h: $(1)/%.proto mprpc_generator.py
	@mkdir -p $(2)
	$$(MPRPCGEN) -q -I $(1) -D $(2) $$<
endef
mprpcgen_rule = $(eval $(call MPRPCGEN_RULE,$(1),$(2)))
$(call mprpcgen_rule,proto,$(GEN))

# The README's build line, exactly.
$(BUILD)/provider: examples/provider.c mprpc.h $(GEN)/user.pb.c $(GEN)/user.pb.h $(GEN)/user.mprpc.h
	$(CC) $(WARN) $(CFLAGS) $(INCS) examples/provider.c $(GEN)/user.pb.c $(LIBS) $(ZK_LIBS) -o $@
$(BUILD)/caller: examples/caller.c mprpc.h $(GEN)/user.pb.c $(GEN)/user.pb.h $(GEN)/user.mprpc.h
	$(CC) $(WARN) $(CFLAGS) $(INCS) examples/caller.c $(GEN)/user.pb.c $(LIBS) $(ZK_LIBS) -o $@

# The large-message example: callback fields and the per-call arena.
$(BUILD)/bigfile_%: examples/bigfile_%.c examples/bigfile_common.h mprpc.h $(GEN)/bigfile.pb.c $(GEN)/bigfile.pb.h $(GEN)/bigfile.mprpc.h
	$(CC) $(WARN) $(CFLAGS) $(INCS) $< $(GEN)/bigfile.pb.c $(LIBS) $(ZK_LIBS) -o $@

# The command-line caller: needs no generated code (protoc does the text format at run time).
$(BUILD)/mprpc-call: tools/mprpc-call.c mprpc.h
	@mkdir -p $(BUILD)
	$(CC) $(WARN) $(CFLAGS) $(INCS) tools/mprpc-call.c $(LIBS) $(ZK_LIBS) -o $@

examples: $(BUILD)/provider $(BUILD)/caller $(BUILD)/bigfile_provider $(BUILD)/bigfile_caller $(BUILD)/mprpc-call ## the README's example programs and build/mprpc-call

demo: deps ## build and run the example provider and caller (scripts/demo.sh)
	@$(MAKE) --no-print-directory examples
	@scripts/demo.sh

# The same example programs built with MPRPC_TLS (the README's build line plus -DMPRPC_TLS -lssl -lcrypto).
$(BUILD)/tls/%: examples/%.c mprpc.h $(GEN)/user.pb.c $(GEN)/user.pb.h $(GEN)/user.mprpc.h
	@mkdir -p $(BUILD)/tls
	$(CC) $(WARN) $(CFLAGS) -DMPRPC_TLS $(INCS) $< $(GEN)/user.pb.c $(LIBS) $(ZK_LIBS) $(TLS_LIBS) -o $@

$(BUILD)/tls/mprpc-call: tools/mprpc-call.c mprpc.h
	@mkdir -p $(BUILD)/tls
	$(CC) $(WARN) $(CFLAGS) -DMPRPC_TLS $(INCS) tools/mprpc-call.c $(LIBS) $(ZK_LIBS) $(TLS_LIBS) -o $@

demo-tls: deps ## the example provider and caller over mutual TLS, certificates made with openssl
	@scripts/deps.sh tls
	@$(MAKE) --no-print-directory $(BUILD)/tls/provider $(BUILD)/tls/caller
	@scripts/demo-tls.sh

# Two providers and the caller meeting through a local ZooKeeper server.
demo-zk: deps ## two providers and the caller through a local ZooKeeper server
	@$(MAKE) --no-print-directory examples
	@scripts/demo-zk.sh

# ---- tests -----------------------------------------------------------------
TEST_NAMES = test_config test_logger test_wire test_server test_channel test_async test_hostile test_registry \
             test_stubs test_nanopb_check test_nanopb_check32 test_arena test_admin test_address test_tls \
             test_hostile_tls
TEST_PROTOS = $(GEN)/user.pb.c $(GEN)/testsvc.pb.c
TEST_DEPS = tests/test.h tests/support.h tests/tls_support.h mprpc.h $(TEST_PROTOS) $(TEST_PROTOS:.c=.h)
TBUILD = $(BUILD)/tests$(SAN)
SANFLAGS_asan = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
SANFLAGS_tsan = -fsanitize=thread
TEST_CFLAGS = $(WARN) -O1 -g $(SANFLAGS$(SAN)) $(INCS) -Itests

$(TBUILD)/%: tests/%.c $(TEST_DEPS)
	@mkdir -p $(TBUILD)
	$(CC) $(TEST_CFLAGS) $< $(TEST_PROTOS) $(LIBS) $(ZK_LIBS) -o $@

# Tests that include generated stubs need them made first.
$(TBUILD)/test_stubs: $(GEN)/testsvc.mprpc.h

# The nanopb option check, built as users would trip on it: with PB_FIELD_32BIT
# against the distribution's runtime (built without it). Needs no .proto.
$(TBUILD)/test_nanopb_check32: tests/test_nanopb_check.c tests/test.h mprpc.h
	@mkdir -p $(TBUILD)
	$(CC) $(TEST_CFLAGS) -DPB_FIELD_32BIT $< $(LIBS) $(ZK_LIBS) -o $@
# test_admin runs build/mprpc-call as a process.
$(TBUILD)/test_admin: $(BUILD)/mprpc-call
# TLS: the same tests/test_X.c rule, built with MPRPC_TLS and OpenSSL (libssl-dev); test_hostile_tls is
# tests/test_hostile.c with its peers speaking TLS (HOSTILE_OVER_TLS).
# $(call tls_test,NAME,SOURCE,FLAGS) makes $(TBUILD)/NAME.
define TLS_TEST
$$(TBUILD)/$(1): $(2) $$(TEST_DEPS)
	@mkdir -p $$(TBUILD)
	$$(CC) $$(TEST_CFLAGS) -DMPRPC_TLS $(3) $$< $$(TEST_PROTOS) $$(LIBS) $$(ZK_LIBS) $$(TLS_LIBS) -o $$@
endef
tls_test = $(eval $(call TLS_TEST,$(1),$(2),$(3)))
$(call tls_test,test_tls,tests/test_tls.c,)
$(call tls_test,test_hostile_tls,tests/test_hostile.c,-DHOSTILE_OVER_TLS)

# The fuzz targets' corpus replayed without libFuzzer (tests/fuzz/replay.c). FUZZ_TLS_<target>: the
# flags and libraries of a target built with MPRPC_TLS.
FUZZ_TARGETS = provider channel config tls_handshake
FUZZ_TLS_tls_handshake = -DMPRPC_TLS $(TLS_LIBS)
$(TBUILD)/test_fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c tests/fuzz/fuzz_loop.h $(TEST_DEPS)
	@mkdir -p $(TBUILD)
	$(CC) $(TEST_CFLAGS) -DFUZZ_TARGET='"$*"' $< tests/fuzz/replay.c $(TEST_PROTOS) $(LIBS) $(ZK_LIBS) $(FUZZ_TLS_$*) -o $@

test-build: $(addprefix $(TBUILD)/,$(TEST_NAMES)) $(addprefix $(TBUILD)/test_fuzz_,$(FUZZ_TARGETS)) ## build the C test binaries (SAN=_asan|_tsan)

test: deps-test ## the whole suite: C tests, fuzz corpus replay, compile matrix, checks, demo
	@$(MAKE) --no-print-directory test-build examples $(BUILD)/tls/provider $(BUILD)/tls/mprpc-call
	@tests/run.sh $(TBUILD)

test-asan: deps-test ## the C tests under AddressSanitizer + UBSan
	@$(MAKE) --no-print-directory test-build SAN=_asan
	@tests/run.sh $(BUILD)/tests_asan --no-compile-checks

test-tsan: deps-test ## the C tests under ThreadSanitizer (clang)
	@$(MAKE) --no-print-directory test-build SAN=_tsan CC=clang
	@TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp" tests/run.sh $(BUILD)/tests_tsan --no-compile-checks

test-valgrind: deps-test ## the C tests under valgrind memcheck
	@$(MAKE) --no-print-directory test-build
	@MPRPC_TEST_WRAP="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect" \
	  MPRPC_TEST_SLOW=4 tests/run.sh $(TBUILD) --no-compile-checks

# ---- fuzzing (clang libFuzzer), soak: not part of `make test` --------------
FUZZ_SECONDS ?= 180
FUZZ_JOBS    ?= 2
FBUILD = $(BUILD)/fuzz
FUZZ_CFLAGS = $(WARN) -O1 -g -fno-omit-frame-pointer \
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all $(INCS) -Itests

$(FBUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_loop.h $(TEST_DEPS)
	@mkdir -p $(FBUILD)
	clang $(FUZZ_CFLAGS) $< $(TEST_PROTOS) $(LIBS) $(ZK_LIBS) $(FUZZ_TLS_$*) -o $@

fuzz-build: $(addprefix $(FBUILD)/fuzz_,$(FUZZ_TARGETS)) ## build the libFuzzer targets (clang)

fuzz: deps-test ## libFuzzer on provider input, caller replies, config files and TLS handshakes (FUZZ_SECONDS)
	@scripts/deps.sh fuzz
	@$(MAKE) --no-print-directory fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) scripts/fuzz.sh $(FBUILD) $(FUZZ_TARGETS)

# Mixed load for SOAK_MINUTES against provider processes; RSS/fd growth or a failed call fails it.
SOAK_MINUTES ?= 10
$(BUILD)/soak: tests/soak.c tests/test.h tests/support.h mprpc.h $(TEST_PROTOS) $(TEST_PROTOS:.c=.h)
	$(CC) $(WARN) -O2 -g $(INCS) -Itests $< $(TEST_PROTOS) $(LIBS) $(ZK_LIBS) -o $@

soak: deps-test ## minutes of mixed load; fails if RSS or fds grow (SOAK_MINUTES)
	@$(MAKE) --no-print-directory $(BUILD)/soak
	@SOAK_MINUTES=$(SOAK_MINUTES) scripts/soak.sh $(BUILD)

# Discovery at scale (issue 14): a 3-node ensemble, SCALE_REGS registrations, SCALE_CALLERS callers.
SCALE_REGS ?= 1000
SCALE_CALLERS ?= 1000
$(BUILD)/scale: scale/scale.c tests/support.h mprpc.h $(TEST_PROTOS) $(TEST_PROTOS:.c=.h)
	$(CC) $(WARN) -O2 -g $(INCS) -Itests $< $(TEST_PROTOS) $(LIBS) $(ZK_LIBS) -o $@

scale: deps-test ## ZooKeeper discovery at scale: writes docs/scale.png, results (SCALE_REGS, SCALE_CALLERS)
	@$(MAKE) --no-print-directory $(BUILD)/scale
	@SCALE_REGS=$(SCALE_REGS) SCALE_CALLERS=$(SCALE_CALLERS) scale/scale.sh $(BUILD)

# Regenerates the seed inputs in tests/fuzz/corpus/ (crash-* inputs are kept).
fuzz-corpus: $(TEST_PROTOS) $(TEST_PROTOS:.c=.h) ## regenerate the seed inputs in tests/fuzz/corpus/
	@mkdir -p $(BUILD) $(addprefix tests/fuzz/corpus/,$(FUZZ_TARGETS))
	$(CC) $(WARN) -O1 -g -DMPRPC_TLS $(INCS) -Itests tests/fuzz/make_corpus.c $(TEST_PROTOS) $(LIBS) $(ZK_LIBS) \
	  $(TLS_LIBS) -o $(BUILD)/make_corpus
	$(BUILD)/make_corpus

clean: ## remove build/
	rm -rf $(BUILD)

-include bench/bench.mk
-include cross/cross.mk
