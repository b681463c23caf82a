# bench/bench.mk - benchmark build, included by the top-level Makefile, which
# defines the warning flags (WARN, WARN_FLAGS) and the nanopb rule used here
# (paths are relative to the repository root): `make bench-build`. The targets
# are listed by `make help`.
#
# The mprpc programs are built like the README's example (cc -std=c11 -O2,
# nanopb runtime, pthreads), without ZooKeeper (-DMPRPC_NO_ZOOKEEPER).

ifndef WARN
$(error bench/bench.mk is included by the top-level Makefile: run `make bench-build` there)
endif

# Do not change the includer's default goal.
bench_saved_default_goal := $(.DEFAULT_GOAL)

BENCH_SRC      := bench
BENCH_OUT      := build/bench
BENCH_GEN      := $(BENCH_OUT)/gen
BENCH_NPB      := $(BENCH_OUT)/nanopb

BENCH_CC       ?= $(CC)
BENCH_CXX      ?= $(CXX)
BENCH_CFLAGS   ?= $(WARN) -O2 -g
BENCH_CXXFLAGS ?= -std=c++17 $(WARN_FLAGS) -O2 -g

# Deferred (=) so pkg-config only runs when a gRPC object is built.
BENCH_GRPC_CFLAGS = $(shell pkg-config --cflags grpc++ protobuf)
BENCH_GRPC_LIBS   = $(shell pkg-config --libs grpc++ protobuf)
BENCH_GRPC_PLUGIN = $(shell command -v grpc_cpp_plugin)

BENCH_MPRPC_FLAGS := -DMPRPC_NO_ZOOKEEPER -I. -I$(BENCH_NPB)
BENCH_MPRPC_LIBS  := -lprotobuf-nanopb -lpthread
BENCH_MPRPC_DEPS  := mprpc.h $(BENCH_NPB)/echo.pb.c $(BENCH_NPB)/echo.pb.h

BENCH_BINS := $(BENCH_OUT)/raw_echo_server $(BENCH_OUT)/mprpc_bench \
              $(BENCH_OUT)/mprpc_echo_server $(BENCH_OUT)/idle_conns \
              $(BENCH_OUT)/mprpc_echo_server_tls $(BENCH_OUT)/mprpc_bench_tls \
              $(BENCH_OUT)/grpc_echo_server $(BENCH_OUT)/grpc_bench
BENCH_PB_OBJS := $(BENCH_GEN)/echo.pb.o $(BENCH_GEN)/echo.grpc.pb.o
BENCH_MK      := $(BENCH_SRC)/bench.mk

.PHONY: bench-build bench bench-quick bench-clean bench-deps bench-idle

bench-build: $(BENCH_BINS) ## raw/mprpc/gRPC echo servers and the load generators -> build/bench/

bench: bench-build ## the full benchmark matrix; writes docs/BENCHMARKS.md, docs/bench.png
	bench/run.sh --no-build

bench-quick: bench-build ## one short point per system and one TLS/plaintext new-connections pair, prints the tables only
	bench/run.sh --no-build --quick

bench-idle: bench-build ## 10,000 idle connections against the mprpc provider
	bench/idle.sh

bench-clean: ## remove build/bench/
	rm -rf $(BENCH_OUT)

# Order-only prerequisite of every bench product: installs what is missing
# (a no-op when everything is there) without forcing rebuilds.
bench-deps: ## install what the benchmarks need (gRPC, protoc); a no-op when present
	@scripts/deps.sh bench

$(BENCH_OUT)/raw_echo_server: $(BENCH_SRC)/raw_echo_server.c $(BENCH_MK) | bench-deps
	@mkdir -p $(@D)
	$(BENCH_CC) $(BENCH_CFLAGS) -o $@ $< -pthread

# nanopb code for bench/echo.proto + bench/echo.options (kept apart from
# protoc's C++ echo.pb.h in $(BENCH_GEN)), by the Makefile's nanopb rule.
$(call nanopb_rule,$(BENCH_SRC),$(BENCH_NPB))
$(BENCH_NPB)/echo.pb.c $(BENCH_NPB)/echo.pb.h: | bench-deps

$(BENCH_OUT)/mprpc_echo_server: $(BENCH_SRC)/mprpc_echo_server.c $(BENCH_MPRPC_DEPS) $(BENCH_MK) | bench-deps
	@mkdir -p $(@D)
	$(BENCH_CC) $(BENCH_CFLAGS) $(BENCH_MPRPC_FLAGS) -o $@ $< $(BENCH_NPB)/echo.pb.c $(BENCH_MPRPC_LIBS)

$(BENCH_OUT)/mprpc_bench: $(BENCH_SRC)/mprpc_bench.c $(BENCH_SRC)/bench_common.h \
                          $(BENCH_SRC)/hist.h $(BENCH_MPRPC_DEPS) $(BENCH_MK) | bench-deps
	@mkdir -p $(@D)
	$(BENCH_CC) $(BENCH_CFLAGS) $(BENCH_MPRPC_FLAGS) -o $@ $< $(BENCH_NPB)/echo.pb.c $(BENCH_MPRPC_LIBS)

# The mprpc-tls system: the same two programs built with MPRPC_TLS (OpenSSL).
$(BENCH_OUT)/%_tls: $(BENCH_SRC)/%.c $(BENCH_SRC)/bench_common.h $(BENCH_SRC)/hist.h $(BENCH_MPRPC_DEPS) \
                    $(BENCH_MK) | bench-deps
	@mkdir -p $(@D)
	$(BENCH_CC) $(BENCH_CFLAGS) $(BENCH_MPRPC_FLAGS) -DMPRPC_TLS -o $@ $< $(BENCH_NPB)/echo.pb.c \
	  $(BENCH_MPRPC_LIBS) $(TLS_LIBS)

$(BENCH_OUT)/idle_conns: $(BENCH_SRC)/idle_conns.c $(BENCH_SRC)/bench_common.h \
                         $(BENCH_SRC)/hist.h $(BENCH_MPRPC_DEPS) $(BENCH_MK) | bench-deps
	@mkdir -p $(@D)
	$(BENCH_CC) $(BENCH_CFLAGS) $(BENCH_MPRPC_FLAGS) -o $@ $< $(BENCH_NPB)/echo.pb.c $(BENCH_MPRPC_LIBS)

# protoc/grpc_cpp_plugin output; a stamp stands for the four generated files.
$(BENCH_GEN)/echo.stamp: $(BENCH_SRC)/echo.proto | bench-deps
	@mkdir -p $(BENCH_GEN)
	protoc -I$(BENCH_SRC) --cpp_out=$(BENCH_GEN) --grpc_out=$(BENCH_GEN) \
	  --plugin=protoc-gen-grpc=$(BENCH_GRPC_PLUGIN) $(BENCH_SRC)/echo.proto
	@touch $@

# Generated code: no -Werror (not ours).
$(BENCH_GEN)/%.o: $(BENCH_GEN)/echo.stamp
	$(BENCH_CXX) -std=c++17 -O2 -g $(BENCH_GRPC_CFLAGS) -c -o $@ $(BENCH_GEN)/$*.cc

$(BENCH_OUT)/grpc_echo_server: $(BENCH_SRC)/grpc_echo_server.cc $(BENCH_PB_OBJS) $(BENCH_MK)
	$(BENCH_CXX) $(BENCH_CXXFLAGS) -isystem $(BENCH_GEN) $(BENCH_GRPC_CFLAGS) \
	  -o $@ $< $(BENCH_PB_OBJS) $(BENCH_GRPC_LIBS) -pthread

$(BENCH_OUT)/grpc_bench: $(BENCH_SRC)/grpc_bench.cc $(BENCH_SRC)/bench_common.h \
                         $(BENCH_SRC)/hist.h $(BENCH_PB_OBJS) $(BENCH_MK)
	$(BENCH_CXX) $(BENCH_CXXFLAGS) -isystem $(BENCH_GEN) $(BENCH_GRPC_CFLAGS) \
	  -o $@ $< $(BENCH_PB_OBJS) $(BENCH_GRPC_LIBS) -pthread

# Restore the includer's default goal.
.DEFAULT_GOAL := $(bench_saved_default_goal)
