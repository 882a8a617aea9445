# towerkit: `make run` trains the example model, `make test` runs every test.
# Both install what is missing (Debian packages) and build first.

BUILD    ?= build
CC       ?= gcc
PKGS     := luajit libluajit-5.1-dev libopenblas-dev libcjson-dev lua-busted libedit-dev pkg-config \
            libxml2-utils tmux luarocks clang-format \
            libmicrohttpd-dev
DEPS_CFLAGS = $(shell pkg-config --cflags luajit openblas libcjson 2>/dev/null)
DEPS_LIBS   = $(shell pkg-config --libs openblas libcjson 2>/dev/null)
LUA_LIBS    = $(shell pkg-config --libs luajit 2>/dev/null)
OPT      ?= -O2
SAN      ?=
# WERROR=1 makes every warning an error (.ci/run sets it). A knob rather than
# CFLAGS+=-Werror on the command line, which would replace the CFLAGS below.
WERROR   ?=
# -ffp-contract=off: no a*b+c fused into an FMA behind our back (GCC's default for GNU C
# when the target has FMA), so the vector and scalar forms of a kernel that are written to
# do the same operations give the same bits whatever -march or target attribute is used.
CFLAGS   += -std=c11 -D_GNU_SOURCE $(OPT) -g -fPIC -ffp-contract=off -Wall -Wextra -Wno-unused-parameter \
            -Icore/include -Icore/src -Ilua/binding $(DEPS_CFLAGS) $(SAN) \
            -DTK_ROOT_DIR='"$(CURDIR)"' $(if $(WERROR),-Werror)
LDFLAGS  += $(SAN)
LIBS      = $(DEPS_LIBS) -lm -lpthread

CORE_SRC    := $(wildcard core/src/*.c core/src/ops/*.c core/src/blocks/*.c core/src/io/*.c)
BIND_SRC    := $(filter-out lua/binding/host.c,$(wildcard lua/binding/*.c))
HOST_SRC    := $(wildcard lua/binding/host.c)
CORE_OBJ    := $(CORE_SRC:%.c=$(BUILD)/obj/%.o)
BIND_OBJ    := $(BIND_SRC:%.c=$(BUILD)/obj/%.o)
HOST_OBJ    := $(HOST_SRC:%.c=$(BUILD)/obj/%.o)
CTEST_SRC   := $(wildcard tests/c/test_*.c)
CTEST_BIN   := $(CTEST_SRC:tests/c/%.c=$(BUILD)/tests/%)
# Hosts that link the Lua binding: the serving test, the embedding examples, the server.
SERVE_BIN   := $(BUILD)/examples/minimal $(BUILD)/examples/towerkit-server $(BUILD)/examples/loadgen
HOST_LINK    = $(HOST_OBJ) $(BIND_OBJ) $(BUILD)/libtowerkit.a $(LDFLAGS) $(LUA_LIBS) $(LIBS) -ldl -Wl,-E
HEADERS     := $(wildcard core/include/*.h core/src/*.h core/src/*/*.h lua/binding/*.h tests/c/*.h)

.PHONY: all deps docs format check-format test test-c test-lua test-kernels test-asan test-tsan check-includes bench \
        bench-server bench-mpi run clean install install-modules rock rock-install fuzz fuzz-deps

all: $(BUILD)/libtowerkit.a $(BUILD)/libtowerkit.so $(BUILD)/libtowerkit_lua.so $(BUILD)/lua/towerkit/core.so \
     $(BUILD)/towerkit

# docs/api.md from the help entries (lua/towerkit/doc/*.lua); tests/spec/doc_spec.lua checks it.
docs: $(BUILD)/towerkit
	$(BUILD)/towerkit scripts/gen-api-doc.lua docs/api.md

# Installs the Debian packages that are missing; a no-op when all are there.
deps:
	@missing=""; for p in $(PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(BUILD)/obj/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libtowerkit.a: $(CORE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libtowerkit.so: $(CORE_OBJ)
	$(CC) -shared -Wl,--no-undefined -Wl,-soname,$(notdir $@) $(LDFLAGS) -o $@ $^ $(LIBS)

# The binding for hosts: towerkit.core and towerkit_lua_open (host.c) on libtowerkit.so
# and LuaJIT; it finds its sibling libtowerkit.so ($ORIGIN) and, by dladdr, the Lua
# modules at ../share/towerkit (towerkit_lua.h).
$(BUILD)/libtowerkit_lua.so: $(HOST_OBJ) $(BIND_OBJ) $(BUILD)/libtowerkit.so
	$(CC) -shared -Wl,--no-undefined -Wl,-soname,$(notdir $@) -Wl,-rpath,'$$ORIGIN' $(LDFLAGS) -o $@ \
	  $(HOST_OBJ) $(BIND_OBJ) -L$(BUILD) -ltowerkit $(LUA_LIBS) $(LIBS) -ldl

# The Lua module towerkit.core: binding plus the core, linked statically.
$(BUILD)/lua/towerkit/core.so: $(BIND_OBJ) $(BUILD)/libtowerkit.a
	@mkdir -p $(dir $@)
	$(CC) -shared $(LDFLAGS) -o $@ $(BIND_OBJ) $(BUILD)/libtowerkit.a $(LIBS)

# ------------------------------------------------------------------------------------
# Installing (issue 12): make install [PREFIX=/usr/local] [DESTDIR=staging]
#   $(BINDIR)/towerkit                      the launcher
#   $(INCLUDEDIR)/towerkit/*.h              towerkit.h, towerkit_ext.h, towerkit_dist.h, towerkit_lua.h
#   $(LIBDIR)/libtowerkit.so                the core
#   $(LIBDIR)/libtowerkit_lua.so            the binding for hosts (towerkit_lua_open)
#   $(LIBDIR)/pkgconfig/towerkit.pc         cc host.c $$(pkg-config --cflags --libs towerkit)
#   $(CMODDIR)/towerkit/core.so             the Lua module towerkit.core (lib/lua/5.1: LuaJIT's cpath)
#   $(LUADIR)/towerkit/**                   the Lua modules (share/towerkit/lua: the root
#                                           the launcher and libtowerkit_lua.so find)
# Nothing in the installed files names the build tree.
PREFIX     ?= /usr/local
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DATADIR    ?= $(PREFIX)/share
LUADIR     ?= $(DATADIR)/towerkit/lua
CMODDIR    ?= $(LIBDIR)/lua/5.1
# Every file under lua/towerkit, whatever the modules' layout.
LUA_FILES   = $(shell find lua/towerkit -type f -name '*.lua' | LC_ALL=C sort)

# Written at each install: it names PREFIX, which may differ from the last one.
$(BUILD)/towerkit.pc: FORCE
	@mkdir -p $(dir $@)
	@v=$$(sed -n 's/^#define TK_VERSION "\(.*\)"/\1/p' core/include/towerkit.h); \
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCLUDEDIR)' '' \
	  'Name: towerkit' 'Description: two-tower retrieval models: C core and LuaJIT binding' \
	  "Version: $$v" 'Requires: luajit' 'Requires.private: openblas libcjson' \
	  'Cflags: -I$${includedir}/towerkit' 'Libs: -L$${libdir} -ltowerkit_lua -ltowerkit' \
	  'Libs.private: -lm -lpthread -ldl' >$@

# The Lua modules and towerkit.core alone (also the rock's install step).
install-modules: $(BUILD)/lua/towerkit/core.so
	@for f in $(LUA_FILES); do \
	  d="$(DESTDIR)$(LUADIR)/$$(dirname "$${f#lua/}")"; \
	  mkdir -p "$$d" && install -m 644 "$$f" "$$d/" || exit 1; \
	done
	install -d $(DESTDIR)$(CMODDIR)/towerkit
	install -m 755 $(BUILD)/lua/towerkit/core.so $(DESTDIR)$(CMODDIR)/towerkit/core.so

install: all install-modules $(BUILD)/towerkit.pc
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)/towerkit
	install -m 755 $(BUILD)/towerkit $(DESTDIR)$(BINDIR)/towerkit
	install -m 644 core/include/towerkit.h core/include/towerkit_ext.h core/include/towerkit_dist.h lua/binding/towerkit_lua.h \
	  $(DESTDIR)$(INCLUDEDIR)/towerkit/
	install -m 755 $(BUILD)/libtowerkit.so $(BUILD)/libtowerkit_lua.so $(DESTDIR)$(LIBDIR)/
	install -m 644 $(BUILD)/towerkit.pc $(DESTDIR)$(LIBDIR)/pkgconfig/towerkit.pc

# The LuaRocks package (towerkit-<version>-1.rockspec, build.type "make"): `rock` builds
# towerkit.core against LuaRocks' LUA_INCDIR, `rock-install` puts it and the Lua modules
# in the tree (LUADIR, CMODDIR = LuaRocks' $(LUADIR), $(LIBDIR)).
LUA_INCDIR ?=
rock: CFLAGS += $(if $(LUA_INCDIR),-I$(LUA_INCDIR))
rock: $(BUILD)/lua/towerkit/core.so
rock-install: install-modules

$(BUILD)/towerkit: scripts/towerkit.c $(HOST_OBJ) $(BIND_OBJ) $(BUILD)/libtowerkit.a
	$(CC) $(CFLAGS) -o $@ $< $(HOST_OBJ) $(BIND_OBJ) $(BUILD)/libtowerkit.a $(LDFLAGS) $(LUA_LIBS) -ledit $(LIBS) -ldl -Wl,-E

$(BUILD)/tests/%: tests/c/%.c $(BUILD)/libtowerkit.a $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/c -o $@ $< $(BUILD)/libtowerkit.a $(LDFLAGS) $(LIBS)

# Tests (or examples) that link the Lua binding: explicit rules over the pattern one.
$(BUILD)/tests/test_serving: tests/c/test_serving.c $(HOST_OBJ) $(BIND_OBJ) $(BUILD)/libtowerkit.a $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/c -o $@ $< $(HOST_LINK)

$(BUILD)/tests/test_lua_binding: tests/c/test_lua_binding.c $(HOST_OBJ) $(BIND_OBJ) $(BUILD)/libtowerkit.a $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/c -o $@ $< $(HOST_LINK)

$(BUILD)/examples/minimal: examples/embed/minimal.c $(HOST_OBJ) $(BIND_OBJ) $(BUILD)/libtowerkit.a $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(HOST_LINK)

$(BUILD)/examples/towerkit-server: examples/server/server.c $(HOST_OBJ) $(BIND_OBJ) $(BUILD)/libtowerkit.a $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(shell pkg-config --cflags libmicrohttpd 2>/dev/null) -o $@ $< $(HOST_LINK) \
	  $(shell pkg-config --libs libmicrohttpd 2>/dev/null || echo -lmicrohttpd)

$(BUILD)/examples/loadgen: bench/server_load/loadgen.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LDFLAGS) -lm -lpthread

test: deps
	@$(MAKE) --no-print-directory all $(CTEST_BIN) $(SERVE_BIN)
	@scripts/run-tests.sh $(BUILD)

# The C unit tests once per OpenBLAS sgemm kernel (OPENBLAS_CORETYPE), the kernels CI
# machines pick: a test that holds on one machine must hold on the others.
KERNELS ?= Prescott Haswell SkylakeX Zen
test-kernels: deps
	@$(MAKE) --no-print-directory all $(CTEST_BIN) $(SERVE_BIN)
	@scripts/run-kernels.sh $(BUILD) $(KERNELS)

# The whole suite under AddressSanitizer and UndefinedBehaviorSanitizer.
ASAN_BUILD ?= build-asan
test-asan: deps
	@$(MAKE) --no-print-directory BUILD=$(ASAN_BUILD) OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  all $(CTEST_BIN:$(BUILD)/%=$(ASAN_BUILD)/%) $(SERVE_BIN:$(BUILD)/%=$(ASAN_BUILD)/%)
	@TK_ASAN=1 scripts/run-tests.sh $(ASAN_BUILD)

# The tests that run threads (one model shared by threads and Lua states, swaps under
# load; the threaded blocks, top-k and training) under ThreadSanitizer, with the core and
# the binding instrumented; counted like the others.
TSAN_BUILD ?= build-tsan
TSAN_TESTS ?= test_serving test_blocks_threads test_topk test_two_tower test_parallel test_optim_dense
test-tsan: deps
	@$(MAKE) --no-print-directory BUILD=$(TSAN_BUILD) OPT=-O1 SAN="-fsanitize=thread" \
	  $(TSAN_TESTS:%=$(TSAN_BUILD)/tests/%)
	@TK_TSAN=1 scripts/run-tests.sh $(TSAN_BUILD) $(TSAN_TESTS)

# The C style (.clang-format): `make format` rewrites every tracked C file in it,
# `make check-format` (CI) lists the files that differ.
format: deps
	@git ls-files '*.c' '*.h' | xargs clang-format -i

check-format: deps
	@scripts/check-format.sh

# The modules of core/src depend on each other one way only (the layering is in
# scripts/check-includes.sh): read from the objects, so it builds them first.
check-includes: $(CORE_OBJ)
	@scripts/check-includes.sh $(BUILD)

# Fuzzing (tests/fuzz): libFuzzer harnesses for the readers of untrusted input, the
# safetensors reader, the CSV reader, a checkpoint's config.json and schema.json, and the
# server's request parser (examples/server/handler.lua on a POST body). The core and the
# binding are built with clang under ASan and UBSan in FUZZ_BUILD; each harness runs
# FUZZ_SECONDS from its seeds (tests/fuzz/corpus/<name>, committed; new inputs go to
# FUZZ_BUILD/corpus/<name>). A crash leaves FUZZ_BUILD/artifacts/<name>-crash-*. Not part
# of `make test`. FUZZ_PKGS are installed by `make fuzz` only.
FUZZ_PKGS    := clang-14 libclang-rt-14-dev
FUZZ_CC      ?= clang-14
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= safetensors csv config schema request
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer

fuzz-deps:
	@missing=""; for p in $(FUZZ_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

fuzz: deps fuzz-deps
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) OPT=-O1 \
	  SAN="-fsanitize=fuzzer-no-link $(FUZZ_SAN)" $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz/fuzz_%)
	@scripts/run-fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/*.h $(HOST_OBJ) $(BIND_OBJ) $(BUILD)/libtowerkit.a $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer -o $@ $< $(HOST_LINK)

# The HTTP server under load on 127.0.0.1 (bounded); writes bench/server_load/RESULTS.md.
bench-server: deps
	@$(MAKE) --no-print-directory all $(SERVE_BIN)
	@bench/server_load/run.sh $(BUILD)

# The MPI measurements of docs/distributed.md (W1 at 1 and 2 ranks, one thread a rank;
# the dense exchange's modes; replicated and row-sharded tables at W1 and W1 x 10; the
# parallel export): JSON lines from each, for the tables there. OpenBLAS runs the kernel
# towerkit picks (OPENBLAS_CORETYPE unset), one thread.
MPIRUN_BENCH := env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 \
                OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe
bench-mpi: deps all
	@command -v mpirun >/dev/null || { echo "bench-mpi: no mpirun (make deps installs Open MPI)"; exit 1; }
	@echo "== one process, one context (the step every rank runs), global batch 1024 and 512"
	@TK_BENCH_SIDE_BY_SIDE=0 $(MPIRUN_BENCH) -np 1 $(BUILD)/towerkit bench/w1_mpi.lua 1024 50
	@TK_BENCH_SIDE_BY_SIDE=0 $(MPIRUN_BENCH) -np 1 $(BUILD)/towerkit bench/w1_mpi.lua 512 50
	@echo "== one process, side-by-side trainer, 2 threads, global batch 1024"
	@TK_BENCH_THREADS=2 $(MPIRUN_BENCH) --bind-to none -np 1 $(BUILD)/towerkit bench/w1_mpi.lua 1024 50
	@for m in "mode=one" "mode=buckets bucket_bytes=262144" "mode=overlap bucket_bytes=262144" \
	          "mode=default" "tables=row" "scale=10" "tables=row scale=10" \
	          "tables=row scale=10 build=sharded"; do \
	  echo "== 2 ranks, 512 a rank, $$m"; \
	  $(MPIRUN_BENCH) -np 2 $(BUILD)/towerkit bench/w1_mpi.lua 512 50 $$m || exit 1; done
	@for n in 1 2; do echo "== the export, $$n rank(s)"; \
	  $(MPIRUN_BENCH) -np $$n $(BUILD)/towerkit bench/export_mpi.lua 5 || exit 1; done

run: deps all
	$(BUILD)/towerkit examples/two_tower_synthetic.lua

# Benchmarks (bench/, workloads in bench/WORKLOAD.md); never part of `make test`. `make bench` runs ours
# and the sgemm limit; `make bench-compare` also runs the peers (PyTorch, FAISS),
# alternately with ours, and prints the ratios. BENCH_ROUNDS repeats the alternation.
BENCH_ROUNDS ?= 1
PEER_PKGS := python3-torch python3-faiss python3-numpy

$(BUILD)/bench/sgemm_limit: bench/sgemm_limit.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LDFLAGS) $(LIBS)

# A malloc counter preloaded into the W1 benchmark (it reports mallocs per step).
$(BUILD)/bench/malloc_count.so: bench/malloc_count.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -shared -fPIC -o $@ $<

bench: deps all $(BUILD)/bench/sgemm_limit $(BUILD)/bench/malloc_count.so
	@echo "== sgemm limit"; $(BUILD)/bench/sgemm_limit
	@echo "== bench/w1_train.lua"; LD_PRELOAD=$(CURDIR)/$(BUILD)/bench/malloc_count.so $(BUILD)/towerkit bench/w1_train.lua
	@echo "== bench/w2_retrieval.lua"; $(BUILD)/towerkit bench/w2_retrieval.lua

peer-deps:
	@missing=""; for p in $(PEER_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

bench-compare: deps peer-deps all $(BUILD)/bench/sgemm_limit $(BUILD)/bench/malloc_count.so
	@/usr/bin/python3 bench/compare.py $(BUILD) $(BENCH_ROUNDS)

FORCE:

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)

# --- MPI (issue 13, docs/distributed.md) -------------------------------------------
# `make deps` installs Open MPI; when mpi.h is found, core/src/dist.c (the only file
# that includes it) is compiled with mpicc's flags and TK_HAVE_MPI and everything links
# libmpi; without it dist.c compiles as stubs and tk.distributed says how to get MPI.
# MPI=0 builds without MPI even where it is installed.
PKGS        += libopenmpi-dev openmpi-bin
MPI         ?= 1
MPI_CFLAGS  := $(shell mpicc --showme:compile 2>/dev/null || pkg-config --cflags ompi 2>/dev/null)
MPI_LIBS    := $(shell mpicc --showme:link 2>/dev/null || pkg-config --libs ompi 2>/dev/null)
MPI_FOUND   := $(if $(filter 1,$(MPI)),$(shell printf '\043include <mpi.h>\n' | $(CC) $(MPI_CFLAGS) -E -x c - >/dev/null 2>&1 && echo 1))
ifeq ($(MPI_FOUND),1)
$(BUILD)/obj/core/src/dist.o: CFLAGS += $(MPI_CFLAGS) -DTK_HAVE_MPI
LIBS        += $(MPI_LIBS) -ldl
endif

# Quality against PyTorch (issue 11): bench/quality.lua trains the same two-tower model from
# the same initial weights on the same batches in towerkit and in PyTorch
# (bench/peers/torch_quality.py) over QUALITY_SEEDS seeds and compares recall@10.
QUALITY_SEEDS ?= 10
.PHONY: bench-quality
bench-quality: deps peer-deps all
	@$(BUILD)/towerkit bench/quality.lua $(QUALITY_SEEDS)
