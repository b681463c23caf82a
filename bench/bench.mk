# bench/bench.mk - benchmark build, included by the top-level Makefile
# (paths are relative to the repository root).  Also works standalone:
#   make -f bench/bench.mk bench-build
#
# Targets:
#   bench-build   raw/mprpc/gRPC echo servers and the load generators -> build/bench/
#   bench         full matrix via bench/run.sh (6 systems: raw raw-blocking mprpc
#                 mprpc-channel mprpc-async grpc; ~10 min); writes docs/BENCHMARKS.md,
#                 docs/bench.png
#   bench-quick   S=32 at C=8 and C=64, one short run per system (~30 s); prints
#                 the RESULT lines and tables only
#   bench-clean   remove build/bench/
#   bench-idle    10,000 idle connections against the mprpc provider
#
# The mprpc programs are built like the README's example (cc -std=c11 -O2,
# nanopb runtime, pthreads), without ZooKeeper (-DMPRPC_NO_ZOOKEEPER).

# Do not change the includer's default goal.
bench_saved_default_goal := $(.DEFAULT_GOAL)

BENCH_SRC      := bench
BENCH_OUT      := build/bench
BENCH_GEN      := $(BENCH_OUT)/gen
BENCH_NPB      := $(BENCH_OUT)/nanopb

BENCH_CC       ?= $(CC)
BENCH_CXX      ?= $(CXX)
BENCH_CFLAGS   ?= -std=c11 -O2 -g -Wall -Wextra -Wpedantic -Werror
BENCH_CXXFLAGS ?= -std=c++17 -O2 -g -Wall -Wextra -Wpedantic -Werror
BENCH_NANOPB   ?= nanopb_generator.py

# Deferred (=) so pkg-config only runs when a gRPC object is built.
BENCH_GRPC_CFLAGS = $(shell pkg-config --cflags grpc++ protobuf)
BENCH_GRPC_LIBS   = $(shell pkg-config --libs grpc++ protobuf)
BENCH_GRPC_PLUGIN = $(shell command -v grpc_cpp_plugin)

BENCH_MPRPC_FLAGS := -DMPRPC_NO_ZOOKEEPER -I. -I$(BENCH_NPB)
BENCH_MPRPC_LIBS  := -lprotobuf-nanopb -lpthread
BENCH_MPRPC_DEPS  := mprpc.h $(BENCH_NPB)/echo.pb.c $(BENCH_NPB)/echo.pb.h

BENCH_BINS := $(BENCH_OUT)/raw_echo_server $(BENCH_OUT)/mprpc_bench \
              $(BENCH_OUT)/mprpc_echo_server $(BENCH_OUT)/idle_conns \
              $(BENCH_OUT)/grpc_echo_server $(BENCH_OUT)/grpc_bench
BENCH_PB_OBJS := $(BENCH_GEN)/echo.pb.o $(BENCH_GEN)/echo.grpc.pb.o
BENCH_MK      := $(BENCH_SRC)/bench.mk

.PHONY: bench-build bench bench-quick bench-clean bench-deps bench-idle

bench-build: $(BENCH_BINS)

bench: bench-build
	bench/run.sh --no-build

bench-quick: bench-build
	bench/run.sh --no-build --quick

bench-idle: bench-build
	bench/idle.sh

bench-clean:
	rm -rf $(BENCH_OUT)

# Order-only prerequisite of every bench product: installs what is missing
# (a no-op when everything is there) without forcing rebuilds.
bench-deps:
	@scripts/deps.sh bench

$(BENCH_OUT)/raw_echo_server: $(BENCH_SRC)/raw_echo_server.c $(BENCH_MK) | bench-deps
	@mkdir -p $(@D)
	$(BENCH_CC) $(BENCH_CFLAGS) -o $@ $< -pthread

# nanopb code for bench/echo.proto + bench/echo.options (kept apart from
# protoc's C++ echo.pb.h in $(BENCH_GEN)).
$(BENCH_NPB)/echo.pb.c $(BENCH_NPB)/echo.pb.h &: $(BENCH_SRC)/echo.proto $(BENCH_SRC)/echo.options | bench-deps
	@mkdir -p $(BENCH_NPB)
	$(BENCH_NANOPB) -q -I $(BENCH_SRC) -D $(BENCH_NPB) $(BENCH_SRC)/echo.proto

$(BENCH_OUT)/mprpc_echo_server: $(BENCH_SRC)/mprpc_echo_server.c $(BENCH_MPRPC_DEPS) $(BENCH_MK) | bench-deps
	@mkdir -p $(@D)
	$(BENCH_CC) $(BENCH_CFLAGS) $(BENCH_MPRPC_FLAGS) -o $@ $< $(BENCH_NPB)/echo.pb.c $(BENCH_MPRPC_LIBS)

$(BENCH_OUT)/mprpc_bench: $(BENCH_SRC)/mprpc_bench.c $(BENCH_SRC)/bench_common.h \
                          $(BENCH_SRC)/hist.h $(BENCH_MPRPC_DEPS) $(BENCH_MK) | bench-deps
	@mkdir -p $(@D)
	$(BENCH_CC) $(BENCH_CFLAGS) $(BENCH_MPRPC_FLAGS) -o $@ $< $(BENCH_NPB)/echo.pb.c $(BENCH_MPRPC_LIBS)

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

# Restore the includer's default goal; standalone, default to bench-build.
ifeq ($(notdir $(firstword $(MAKEFILE_LIST))),bench.mk)
.DEFAULT_GOAL := bench-build
else
.DEFAULT_GOAL := $(bench_saved_default_goal)
endif
