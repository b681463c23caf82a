# mprpc.h — build, demo and tests. `make demo` and `make test` work on a fresh
# Debian 12 machine as root: they install missing packages first.

CC       ?= cc
CFLAGS   ?= -O2 -g
WARN      = -std=c11 -Wall -Wextra -Wpedantic -Werror
BUILD     = build
GEN       = $(BUILD)/gen
NANOPB    = nanopb_generator.py
INCS      = -I. -I$(GEN)
LIBS      = -lprotobuf-nanopb -lpthread
ZK_LIBS   = -lzookeeper_mt
SAN      ?=

.PHONY: all deps deps-test examples demo demo-zk test test-asan test-tsan test-valgrind fuzz fuzz-build fuzz-corpus soak clean
all: examples

deps:
	@scripts/deps.sh core zk
deps-test:
	@scripts/deps.sh core zk test

# nanopb output is generated, never committed, and kept between builds.
.SECONDARY:
$(GEN)/%.pb.c $(GEN)/%.pb.h: proto/%.proto proto/%.options
	@mkdir -p $(GEN)
	$(NANOPB) -q -I proto -D $(GEN) $<

# The README's build line, exactly.
$(BUILD)/provider: examples/provider.c mprpc.h $(GEN)/user.pb.c $(GEN)/user.pb.h
	$(CC) $(WARN) $(CFLAGS) $(INCS) examples/provider.c $(GEN)/user.pb.c $(LIBS) $(ZK_LIBS) -o $@
$(BUILD)/caller: examples/caller.c mprpc.h $(GEN)/user.pb.c $(GEN)/user.pb.h
	$(CC) $(WARN) $(CFLAGS) $(INCS) examples/caller.c $(GEN)/user.pb.c $(LIBS) $(ZK_LIBS) -o $@

examples: $(BUILD)/provider $(BUILD)/caller

demo: deps
	@$(MAKE) --no-print-directory examples
	@scripts/demo.sh

# Two providers and the caller meeting through a local ZooKeeper server.
demo-zk: deps
	@$(MAKE) --no-print-directory examples
	@scripts/demo-zk.sh

# ---- tests -----------------------------------------------------------------
TEST_NAMES = test_config test_logger test_wire test_server test_channel test_async test_hostile test_registry
TEST_PROTOS = $(GEN)/user.pb.c $(GEN)/testsvc.pb.c
TBUILD = $(BUILD)/tests$(SAN)
SANFLAGS_asan = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
SANFLAGS_tsan = -fsanitize=thread
TEST_CFLAGS = $(WARN) -O1 -g $(SANFLAGS$(SAN)) $(INCS) -Itests

$(TBUILD)/%: tests/%.c tests/test.h tests/support.h mprpc.h $(TEST_PROTOS) $(TEST_PROTOS:.c=.h)
	@mkdir -p $(TBUILD)
	$(CC) $(TEST_CFLAGS) $< $(TEST_PROTOS) $(LIBS) $(ZK_LIBS) -o $@

# The fuzz targets' corpus replayed without libFuzzer (tests/fuzz/replay.c).
FUZZ_TARGETS = provider channel config
$(TBUILD)/test_fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c tests/test.h tests/support.h mprpc.h $(TEST_PROTOS) $(TEST_PROTOS:.c=.h)
	@mkdir -p $(TBUILD)
	$(CC) $(TEST_CFLAGS) -DFUZZ_TARGET='"$*"' $< tests/fuzz/replay.c $(TEST_PROTOS) $(LIBS) $(ZK_LIBS) -o $@

test-build: $(addprefix $(TBUILD)/,$(TEST_NAMES)) $(addprefix $(TBUILD)/test_fuzz_,$(FUZZ_TARGETS))

test: deps-test
	@$(MAKE) --no-print-directory test-build examples
	@tests/run.sh $(TBUILD)

test-asan: deps-test
	@$(MAKE) --no-print-directory test-build SAN=_asan
	@tests/run.sh $(BUILD)/tests_asan --no-compile-checks

test-tsan: deps-test
	@$(MAKE) --no-print-directory test-build SAN=_tsan CC=clang
	@TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp" tests/run.sh $(BUILD)/tests_tsan --no-compile-checks

test-valgrind: deps-test
	@$(MAKE) --no-print-directory test-build
	@MPRPC_TEST_WRAP="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect" \
	  MPRPC_TEST_SLOW=4 tests/run.sh $(TBUILD) --no-compile-checks

# ---- fuzzing (clang libFuzzer), soak: not part of `make test` --------------
FUZZ_SECONDS ?= 180
FUZZ_JOBS    ?= 2
FBUILD = $(BUILD)/fuzz
FUZZ_CFLAGS = -std=c11 -Wall -Wextra -Wpedantic -Werror -O1 -g -fno-omit-frame-pointer \
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all $(INCS) -Itests

$(FBUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/test.h tests/support.h mprpc.h $(TEST_PROTOS) $(TEST_PROTOS:.c=.h)
	@mkdir -p $(FBUILD)
	clang $(FUZZ_CFLAGS) $< $(TEST_PROTOS) $(LIBS) $(ZK_LIBS) -o $@

fuzz-build: $(addprefix $(FBUILD)/fuzz_,$(FUZZ_TARGETS))

fuzz: deps-test
	@scripts/deps.sh fuzz
	@$(MAKE) --no-print-directory fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) scripts/fuzz.sh $(FBUILD) $(FUZZ_TARGETS)

# Mixed load for SOAK_MINUTES against provider processes; RSS/fd growth or a failed call fails it.
SOAK_MINUTES ?= 10
$(BUILD)/soak: tests/soak.c tests/test.h tests/support.h mprpc.h $(TEST_PROTOS) $(TEST_PROTOS:.c=.h)
	$(CC) $(WARN) -O2 -g $(INCS) -Itests $< $(TEST_PROTOS) $(LIBS) $(ZK_LIBS) -o $@

soak: deps-test
	@$(MAKE) --no-print-directory $(BUILD)/soak
	@SOAK_MINUTES=$(SOAK_MINUTES) scripts/soak.sh $(BUILD)

# Regenerates the seed inputs in tests/fuzz/corpus/ (crash-* inputs are kept).
fuzz-corpus: $(TEST_PROTOS) $(TEST_PROTOS:.c=.h)
	@mkdir -p $(BUILD) tests/fuzz/corpus/provider tests/fuzz/corpus/channel tests/fuzz/corpus/config
	$(CC) $(WARN) -O1 -g $(INCS) tests/fuzz/make_corpus.c $(TEST_PROTOS) $(LIBS) -o $(BUILD)/make_corpus
	$(BUILD)/make_corpus

clean:
	rm -rf $(BUILD)

-include bench/bench.mk
-include cross/cross.mk
