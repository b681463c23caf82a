#!/usr/bin/env python3
"""scripts/footprint.py: measures mprpc.h's footprint and writes docs/FOOTPRINT.md (run by `make footprint`).

Builds into build/footprint/ (-Os, the project's warning flags, nanopb code from build/cross/gen):
  * the example provider and caller for x86-64 and armhf, without ZooKeeper (-DMPRPC_NO_ZOOKEEPER), and for
    x86-64 with ZooKeeper (-lzookeeper_mt); armhf with ZooKeeper only if libzookeeper-mt-dev:armhf is installed
    (in Debian 12 it is not co-installable with the amd64 one, so normally skipped); x86-64 static musl too;
  * tests/compile_impl.c (the implementation and a one-line main) as an object: mprpc.h's own share;
  * the provider linked with cross/stackpaint.c (-Wl,--wrap=pthread_create): painted stacks.
Runs (x86-64 natively; the armhf painted provider under qemu-arm): threads, RSS idle and with 64 connections
each having made a call, compared with a do-nothing program linked the same way; stack high-water per thread.
"""
import os, re, shutil, signal, socket, subprocess, sys, tempfile, time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(TOP)
OUT = "build/footprint"
GEN = "build/cross/gen"
DOC = "docs/FOOTPRINT.md"
# The Makefile's warning flags: from `make footprint`, or asked of make when run by hand.
WARN = (os.environ.get("MPRPC_WARN") or
        subprocess.run(["make", "-s", "--no-print-directory", "print-WARN"], capture_output=True,
                       text=True, check=True).stdout).split()
NOZK = ["-DMPRPC_NO_ZOOKEEPER"]
TARGETS = {
    "x86-64": dict(cc=["gcc"], size="size", nm="nm", ldflags=[], run=[],
                   nanopb="/usr/lib/x86_64-linux-gnu/libprotobuf-nanopb.a", inc=[]),
    "armhf": dict(cc=["arm-linux-gnueabihf-gcc"], size="arm-linux-gnueabihf-size", nm="arm-linux-gnueabihf-nm",
                  ldflags=[], run=["qemu-arm", "-L", "/usr/arm-linux-gnueabihf"],
                  nanopb="/usr/lib/arm-linux-gnueabihf/libprotobuf-nanopb.a", inc=[]),
    "x86-64 musl static": dict(cc=["musl-gcc"], size="size", nm="nm", ldflags=["-static"], run=[],
                               nanopb="build/cross/musl/lib/libprotobuf-nanopb.a", inc=["-Ibuild/cross/musl/include"]),
}
CONNS = 64


def sh(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit("footprint: command failed: %s\n%s%s" % (" ".join(cmd), r.stdout, r.stderr))
    return r.stdout


def slug(s):
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")


def build(target, prog, zk, extra=(), src_extra=(), suffix=""):
    t = TARGETS[target]
    out = os.path.join(OUT, "%s_%s_%s%s" % (slug(target), prog, "zk" if zk else "nozk", suffix))
    cmd = t["cc"] + WARN + ["-Os"] + ([] if zk else NOZK) + list(extra) + t["inc"] + ["-I.", "-I" + GEN] + \
        ["examples/%s.c" % prog, GEN + "/user.pb.c"] + list(src_extra) + [t["nanopb"], "-pthread"] + \
        (["-lzookeeper_mt"] if zk else []) + t["ldflags"] + ["-o", out]
    sh(cmd)
    return out


def impl_object(target, zk):
    t = TARGETS[target]
    out = os.path.join(OUT, "%s_impl_%s.o" % (slug(target), "zk" if zk else "nozk"))
    sh(t["cc"] + WARN + ["-Os"] + ([] if zk else NOZK) + t["inc"] + ["-I.", "-c", "tests/compile_impl.c",
                                                                       "-fstack-usage", "-o", out])
    return out


def size_of(target, path):
    line = sh([TARGETS[target]["size"], path]).splitlines()[1].split()
    return int(line[0]), int(line[1]), int(line[2])


def mprpc_symbols(target, path):
    """text, data+bss of the symbols named mprpc* (public mprpc_ and internal mprpc__) in a linked binary"""
    text = data = 0
    for l in sh([TARGETS[target]["nm"], "--size-sort", "-S", path]).splitlines():
        f = l.split()
        if len(f) == 4 and f[3].startswith("mprpc"):
            n = int(f[1], 16)
            if f[2] in "tT":
                text += n
            elif f[2] in "dDbBrR":
                data += n
    return text, data


def have_zk_armhf():
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "libzookeeper-mt-dev:armhf"], capture_output=True,
                       text=True)
    return r.stdout.strip() == "install ok installed"


def proc_status(pid):
    d = {}
    with open("/proc/%d/status" % pid) as f:
        for l in f:
            k, _, v = l.partition(":")
            d[k] = v.strip()
    return d


def kib(s):
    return int(s.split()[0])


def wait_port(proc, outpath, timeout=30):
    t0 = time.time()
    while time.time() - t0 < timeout:
        with open(outpath) as f:
            m = re.search(r"provider listening on [0-9.]+:(\d+)", f.read())
        if m:
            return int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit("footprint: provider did not start (%s)" % outpath)


def frames():
    v = dict(l.split() for l in open("cross/wire_vector.hex"))
    return bytes.fromhex(v["login_request"]), bytes.fromhex(v["register_request"])


def recv_reply(s):
    s.settimeout(20)
    buf = b""
    while len(buf) < 4:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("footprint: provider closed a connection")
        buf += chunk
    return buf


def load(port, n, settle=0.3):
    """n connections; each sends Login then Register and waits for both replies; all stay open"""
    login, register = frames()
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(login)
        recv_reply(s)
        s.sendall(register)
        recv_reply(s)
        socks.append(s)
    time.sleep(settle)
    return socks


def run_provider(cmd, conf_dir, env=None, io_threads=2, extra_conf=""):
    conf = os.path.join(conf_dir, "provider.conf")
    with open(conf, "w") as f:
        f.write("rpcserver_ip = 127.0.0.1\nrpcserver_port = 0\nio_threads = %d\nlog_level = info\n%s"
                % (io_threads, extra_conf))
    outp = os.path.join(conf_dir, "provider.out")
    out = open(outp, "w")
    p = subprocess.Popen(cmd + ["-i", conf], stdout=out, stderr=subprocess.STDOUT, env=env)
    return p, wait_port(p, outp), outp


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def measure_rss(provider, baseline, tmp, extra_conf=""):
    b = subprocess.Popen([baseline])
    time.sleep(0.3)
    bs = proc_status(b.pid)
    b.kill()
    b.wait()
    p, port, _ = run_provider([provider], tmp, extra_conf=extra_conf)
    time.sleep(0.5)
    idle = proc_status(p.pid)
    socks = load(port, CONNS)
    busy = proc_status(p.pid)
    # the example caller too (all three methods over a pooled channel), then idle again
    for s in socks:
        s.close()
    time.sleep(0.5)
    after = proc_status(p.pid)
    stop(p)
    return dict(base=bs, idle=idle, busy=busy, after=after)


def measure_stack(target, provider, tmp):
    out = os.path.join(tmp, "stackpaint.txt")
    env = dict(os.environ, STACKPAINT_OUT=out)
    p, port, _ = run_provider(TARGETS[target]["run"] + [provider], tmp, env=env)
    socks = load(port, CONNS, settle=0.5)
    caller = build_caller_x86
    conf = os.path.join(tmp, "caller.conf")
    with open(conf, "w") as f:
        f.write("rpcserver_ip = 127.0.0.1\nrpcserver_port = %d\nrpc_timeout_ms = 20000\n" % port)
    sh([caller, "-i", conf])
    for s in socks:
        s.close()
    time.sleep(0.3)
    stop(p)
    used = {}
    for l in open(out):
        m = re.match(r"stackpaint thread (-?\d+) used (\d+)", l)
        if m:
            used[int(m.group(1))] = int(m.group(2))
    return used


def md_table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def stack_usage_top(su_path, n=8):
    rows = []
    for l in open(su_path):
        m = re.match(r".*:\d+:\d+:(\S+)\s+(\d+)\s+(\S+)", l)
        if m and m.group(1).startswith("mprpc"):
            rows.append((int(m.group(2)), m.group(1), m.group(3)))
    rows.sort(reverse=True)
    return rows[:n]


def main():
    global build_caller_x86
    os.makedirs(OUT, exist_ok=True)
    os.makedirs("docs", exist_ok=True)
    zk_armhf = have_zk_armhf()
    variants = [("x86-64", False), ("x86-64", True), ("armhf", False)]
    if zk_armhf:
        variants.append(("armhf", True))
    variants.append(("x86-64 musl static", False))

    size_rows, share_rows = [], []
    goal = None
    for target, zk in variants:
        obj = impl_object(target, zk)
        ot, od, ob = size_of(target, obj)
        for prog in ("provider", "caller"):
            path = build(target, prog, zk)
            t, d, b = size_of(target, path)
            st, sd = mprpc_symbols(target, path)
            size_rows.append([target, "yes" if zk else "no", prog, t, d, b, st, sd])
        share_rows.append([target, "yes" if zk else "no", ot, od, ob])
        if target == "armhf" and not zk:
            goal = ot

    gc = ["-ffunction-sections", "-fdata-sections", "-Wl,--gc-sections"]
    for prog in ("provider", "caller"):
        path = build("armhf", prog, False, extra=gc, suffix="_gc")
        t, d, b = size_of("armhf", path)
        st, sd = mprpc_symbols("armhf", path)
        size_rows.append(["armhf, --gc-sections", "no", prog, t, d, b, st, sd])

    build_caller_x86 = build("x86-64", "caller", False)
    baseline = os.path.join(OUT, "x86_64_baseline")
    with open(os.path.join(OUT, "baseline.c"), "w") as f:
        f.write("#include <pthread.h>\n#include <unistd.h>\nint main(void) { pthread_self(); pause(); return 0; }\n")
    sh(["gcc", "-Os", os.path.join(OUT, "baseline.c"), "-pthread", "-o", baseline])
    prov = build("x86-64", "provider", False)
    small = build("x86-64", "provider", False, extra=["-DMPRPC_READ_CHUNK=4096", "-DMPRPC_THREAD_STACK_SIZE=65536"],
                  suffix="_small")
    painted = {t: build(t, "provider", False, extra=["-Wl,--wrap=pthread_create"],
                        src_extra=["cross/stackpaint.c"], suffix="_paint") for t in ("x86-64", "armhf")}

    with tempfile.TemporaryDirectory() as tmp:
        rss = measure_rss(prov, baseline, tmp)
        rss_small = measure_rss(small, baseline, tmp, extra_conf="log_queue_size = 64\n")
        stacks = {t: measure_stack(t, painted[t], tmp) for t in painted}

    su_arm = stack_usage_top(os.path.join(OUT, "armhf_impl_nozk.su"))
    su_x86 = stack_usage_top(os.path.join(OUT, "x86_64_impl_nozk.su"))

    def rss_rows(r):
        base = kib(r["base"]["VmRSS"])
        rows = []
        for label, key in (("idle (started, no connection)", "idle"),
                           ("%d connections open, each after 2 calls" % CONNS, "busy"),
                           ("connections closed again", "after")):
            s = r[key]
            rows.append([label, s["Threads"], kib(s["VmRSS"]), kib(s["VmRSS"]) - base, kib(s["RssAnon"]),
                         kib(s["VmSize"])])
        return base, rows

    base, rows = rss_rows(rss)
    base_s, rows_s = rss_rows(rss_small)

    doc = []
    doc.append("# Footprint\n")
    doc.append("Generated by `make footprint` (scripts/footprint.py) on %s; do not edit by hand. "
               "Compilers: %s; %s.\n" % (time.strftime("%Y-%m-%d"), sh(["gcc", "-dumpfullversion"]).strip() and
                                         "Debian 12 gcc " + sh(["gcc", "-dumpfullversion"]).strip() +
                                         ", arm-linux-gnueabihf-gcc " +
                                         sh(["arm-linux-gnueabihf-gcc", "-dumpfullversion"]).strip() +
                                         " (Thumb-2, armv7-a hard-float: Debian's armhf default)",
                                         "musl-gcc (musl " + (sh(["dpkg-query", "-W", "-f=${Version}", "musl-dev"]).strip()) + ")"))
    doc.append("## Sizes (`size`, bytes, `-Os`)\n")
    doc.append("The example provider (`examples/provider.c`: UserServiceRpc + FriendServiceRpc, logger, signal "
               "handling) and caller, linked against the nanopb runtime; glibc is dynamic except in the musl row. "
               "\"mprpc text/data\" sums the symbols named `mprpc*` in the linked binary (functions -Os did not "
               "inline).\n")
    doc.append(md_table(["target", "ZooKeeper", "program", "text", "data", "bss", "mprpc text", "mprpc data+bss"],
                        size_rows) + "\n")
    if "zookeeper.h" not in open("mprpc.h").read():
        doc.append("This mprpc.h has no ZooKeeper client code yet (its registry section is a stub), so the "
                   "\"ZooKeeper: yes\" rows differ only by linking `-lzookeeper_mt` (dropped by `--as-needed` "
                   "when unused); run `make footprint` again once discovery lands.\n")
    doc.append("Without `--gc-sections` every mprpc.h function is linked (one section), so the caller carries the "
               "provider code too; the `--gc-sections` rows (`-ffunction-sections -fdata-sections "
               "-Wl,--gc-sections`) show what each program really needs.\n")
    if not zk_armhf:
        doc.append("armhf with ZooKeeper is not measured: `libzookeeper-mt-dev:armhf` is not co-installable with "
                   "`libzookeeper-mt-dev:amd64` in Debian 12 (installing it removes the host's), so the cross "
                   "setup does not install it.\n")
    doc.append("### mprpc.h's own share\n")
    doc.append("`tests/compile_impl.c` (the whole implementation plus a one-line `main`) compiled `-Os -c`: "
               "everything mprpc.h adds to a program, whether the program calls it or not.\n")
    doc.append(md_table(["target", "ZooKeeper", "text", "data", "bss"], share_rows) + "\n")
    doc.append("**Goal** (issue 7): the provider's mprpc.h part on armhf, `-Os`, no ZooKeeper, at most 64 KiB "
               "text: **%d bytes = %.1f KiB** — %s.\n" % (goal, goal / 1024.0, "met" if goal <= 65536 else "NOT met"))
    doc.append("## Threads and memory (x86-64, native)\n")
    doc.append("The `-Os` no-ZooKeeper provider with `io_threads = 2` and the logger started (`log_level = info`, "
               "no file). Threads: the main thread (blocked in `mprpc_server_run`), one per event loop "
               "(`io_threads`), one log writer. Each of %d connections sends Login and Register (frames from "
               "`cross/wire_vector.hex`) and waits for both replies; then all stay open while RSS is read "
               "from `/proc/<pid>/status`. \"beyond libc\" subtracts the RSS of a do-nothing program linked the "
               "same way (`main` that calls `pause()`, dynamic glibc + pthread): **%d KiB**. VmRSS moves by up to about "
               "80 KiB between runs (file-backed pages of libc and the binary); RssAnon, the process's own heap, "
               "stacks and data, is the stable figure.\n" % (CONNS, base))
    doc.append("### Defaults\n")
    doc.append(md_table(["state", "threads", "VmRSS KiB", "beyond libc KiB", "RssAnon KiB", "VmSize KiB"], rows) + "\n")
    doc.append("### Small build: `-DMPRPC_READ_CHUNK=4096 -DMPRPC_THREAD_STACK_SIZE=65536`, `log_queue_size = 64`\n")
    doc.append(md_table(["state", "threads", "VmRSS KiB", "beyond libc KiB", "RssAnon KiB", "VmSize KiB"], rows_s) + "\n")
    idle_beyond = kib(rss["idle"]["VmRSS"]) - base
    doc.append("**Goal** (issue 7): idle RSS under 1 MiB beyond libc: **%d KiB** with the defaults — %s.\n"
               % (idle_beyond, "met" if idle_beyond < 1024 else "NOT met"))
    doc.append("Where the memory goes (defaults): each loop allocates its %d KiB receive buffer "
               "(`MPRPC_READ_CHUNK`) at start; pages become resident only as large reads touch them. The log "
               "queue is `log_queue_size` (1024) slots of `MPRPC_LOG_LINE_MAX` (512) bytes + 16 = about 520 KiB, "
               "allocated at `mprpc_logger_start`; a slot becomes resident once a line passes through it, so a "
               "provider that logs a lot ends up holding all of it: set `log_queue_size` (runtime) or "
               "`MPRPC_LOG_LINE_MAX` (compile time) lower on small boards. Per connection: one `mprpc__conn` "
               "(about 100 bytes) plus buffers only while a frame is partial or a reply is unsent. Per call in "
               "progress: one pooled call object (header + the largest request + response struct of the "
               "registered methods). Thread stacks are address space (VmSize), resident only as far as used: "
               "with the system default each thread reserves 8 MiB; `MPRPC_THREAD_STACK_SIZE` caps that. The VmSize jump "
               "under load is glibc's per-thread malloc arenas (64 MiB of address space each on 64-bit, 1 MiB on "
               "32-bit, as loop threads start allocating), not resident memory; `MALLOC_ARENA_MAX=1` (environment) "
               "or `mallopt(M_ARENA_MAX, 1)` turns it off, or route mprpc.h's allocations with "
               "`MPRPC_MALLOC`/`MPRPC_REALLOC`/`MPRPC_FREE`.\n"
               % (64))
    doc.append("## Stack use per thread (painted stacks)\n")
    doc.append("Measured, not estimated: the provider is linked with `cross/stackpaint.c` "
               "(`-Wl,--wrap=pthread_create`), which gives every thread a 1 MiB stack filled with 0xA5 and, at "
               "exit, counts the bytes that were overwritten. Load: %d connections × (Login + Register), then the "
               "example caller (Login twice, Register, GetFriendLists; the handlers log at info). The numbers "
               "include the fixed per-thread cost at the top of the stack (struct pthread, TLS, start-up "
               "frames), shown as \"empty thread\". armhf runs under qemu-arm (the guest's own stack, so the "
               "figure is the ARM code's).\n" % CONNS)
    srows = []
    for t in ("x86-64", "armhf"):
        u = stacks[t]
        label = {-1: "empty thread (baseline)", 0: "log writer", 1: "loop 0 (accepts too)", 2: "loop 1"}
        for k in sorted(u):
            srows.append([t, label.get(k, "thread %d" % k), u[k]])
    doc.append(md_table(["target", "thread", "bytes used"], srows) + "\n")
    worst = max(max(v for k, v in stacks[t].items() if k >= 1) for t in stacks)
    doc.append("A loop thread needs about %d bytes here, plus whatever the application's handlers use on it. "
               "`-DMPRPC_THREAD_STACK_SIZE=65536` leaves ample room for handlers like the examples' (the small "
               "build above runs the test suite's provider that way under `make test-cross`: "
               "`test_server_small`); size it to your handlers.\n" % worst)
    doc.append("`-fstack-usage` (static, per function, `-Os`), the largest frames in mprpc.h:\n")
    rows_su = []
    for i in range(max(len(su_arm), len(su_x86))):
        a = su_arm[i] if i < len(su_arm) else ("", "", "")
        x = su_x86[i] if i < len(su_x86) else ("", "", "")
        rows_su.append([a[1], a[0], x[1], x[0]])
    doc.append(md_table(["armhf function", "bytes", "x86-64 function", "bytes"], rows_su) + "\n")
    doc.append("## Knobs\n")
    doc.append(md_table(["knob", "kind", "default", "effect"], [
        ["`io_threads`", "config", "2", "event-loop threads (plus one log writer if the logger is started)"],
        ["`MPRPC_READ_CHUNK`", "compile time", "65536", "per-loop receive buffer; 4096 is fine for small messages (larger frames still arrive, in the connection's buffer)"],
        ["`MPRPC_THREAD_STACK_SIZE`", "compile time", "0 (system default, 8 MiB reserved)", "stack of every library thread"],
        ["`log_queue_size`", "config", "1024", "log slots of `MPRPC_LOG_LINE_MAX` + 16 bytes each"],
        ["`MPRPC_LOG_LINE_MAX`", "compile time", "512", "bytes per log line (also a stack buffer in `mprpc_log`)"],
        ["`max_connections`, `max_pending_output`, `max_message_size`", "config", "10000, 1 MiB, 4 MiB", "bounds on what peers can make the provider hold"],
    ]) + "\n")
    with open(DOC, "w") as f:
        f.write("\n".join(doc))
    print("footprint: wrote %s (armhf mprpc.h text %d bytes; idle RSS beyond libc %d KiB)" % (DOC, goal, idle_beyond))


if __name__ == "__main__":
    main()
