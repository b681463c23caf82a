#!/usr/bin/python3
"""mprpc_generator.py - typed mprpc.h stubs from the `service` blocks of a .proto.

Run it like nanopb_generator.py, on the same .proto with the same -I and -D:

    nanopb_generator.py -I proto -D build/gen proto/user.proto    # user.pb.h, user.pb.c
    mprpc_generator.py  -I proto -D build/gen proto/user.proto    # user.mprpc.h

It needs only what Debian's `nanopb` package brings: protoc parses the .proto
(`protoc --descriptor_set_out`) and python3-protobuf reads the result.

For each service PKG.Svc and method M(Req) returns (Resp), with C names made as
nanopb makes them (package and message joined by '_': fixbug_LoginRequest):
  PKG_Svc_M(ch, &req, &resp, &ctl)                  blocking call (mprpc_channel_call)
  PKG_Svc_M_async(ch, &req, &resp, &ctl, done, user) async call (mprpc_channel_call_async)
  PKG_Svc_handlers                                  struct of typed handler pointers
  PKG_Svc_service + PKG_Svc_service_init(...)       builds the mprpc_service
The header is `static inline` only: include it anywhere, no .c file to build.
"""
import argparse
import os
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2

# Names the generator makes from a service prefix; a method whose own names
# would collide with one of them is refused.
RESERVED_SUFFIXES = ("NAME", "METHOD_COUNT", "handlers", "service", "service_init")


def c_name(full_name):
    """'.fixbug.LoginRequest' -> 'fixbug_LoginRequest' (nanopb's default naming)."""
    return full_name.lstrip(".").replace(".", "_")


def load_file_descriptor(proto, includes):
    """Runs protoc on one .proto; returns its FileDescriptorProto."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "set.pb")
        cmd = ["protoc", "--include_imports", "--descriptor_set_out=" + out]
        cmd += ["-I" + d for d in includes] + [proto]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit("mprpc_generator.py: protoc failed on %s:\n%s" % (proto, res.stderr.strip()))
        fds = descriptor_pb2.FileDescriptorSet()
        with open(out, "rb") as f:
            fds.ParseFromString(f.read())
    return fds.file[-1]  # --include_imports lists dependencies first, the file itself last


def method_names(prefix, m):
    return [prefix + "_" + m.name, prefix + "_" + m.name + "_async",
            prefix + "_" + m.name + "_fn", prefix + "_" + m.name + "_prepare_fn",
            prefix + "__" + m.name + "_handler", prefix + "__" + m.name + "_prepare"]


def check_names(svc, prefix):
    seen = set(prefix + "_" + s for s in RESERVED_SUFFIXES)
    for m in svc.method:
        for n in method_names(prefix, m):
            if n in seen:
                sys.exit("mprpc_generator.py: service %s: method %s makes the C name %s twice"
                         % (svc.name, m.name, n))
            seen.add(n)


def caller_part(svc, prefix, m):
    req, resp = c_name(m.input_type), c_name(m.output_type)
    return f"""
/* {svc.name}.{m.name}: blocks until the reply, an error or the timeout (see mprpc_channel_call).
 * *response is decoded only when MPRPC_OK is returned; ctl holds the outcome either way. */
static inline mprpc_status {prefix}_{m.name}(mprpc_channel *ch, const {req} *request,
        {resp} *response, mprpc_controller *ctl)
{{
    return mprpc_channel_call(ch, "{svc.name}", "{m.name}", {req}_fields, request,
                              {resp}_fields, response, ctl);
}}
/* {svc.name}.{m.name}, async (see mprpc_channel_call_async): done(ctl, response, user) runs once on the
 * channel's completion thread, response being the {resp} passed here; response and ctl must
 * live until then. */
static inline mprpc_status {prefix}_{m.name}_async(mprpc_channel *ch, const {req} *request,
        {resp} *response, mprpc_controller *ctl, mprpc_done_fn done, void *user)
{{
    return mprpc_channel_call_async(ch, "{svc.name}", "{m.name}", {req}_fields, request,
                                    {resp}_fields, response, ctl, done, user);
}}
"""


def provider_types(prefix, m):
    req, resp = c_name(m.input_type), c_name(m.output_type)
    return f"""typedef void (*{prefix}_{m.name}_fn)(mprpc_call *call, const {req} *request,
        {resp} *response, void *user);
typedef void (*{prefix}_{m.name}_prepare_fn)(mprpc_call *call, {req} *request,
        {resp} *response, void *user);
"""


def trampolines(prefix, m):
    req, resp = c_name(m.input_type), c_name(m.output_type)
    return f"""static inline void {prefix}__{m.name}_handler(mprpc_call *call, const void *request,
        void *response, void *user)
{{
    const {prefix}_service *s = (const {prefix}_service *)user;
    s->handlers.{m.name}(call, (const {req} *)request, ({resp} *)response, s->user);
}}
static inline void {prefix}__{m.name}_prepare(mprpc_call *call, void *request, void *response,
        void *user)
{{
    const {prefix}_service *s = (const {prefix}_service *)user;
    s->handlers.{m.name}_prepare(call, ({req} *)request, ({resp} *)response, s->user);
}}
"""


def init_rows(prefix, m):
    req, resp = c_name(m.input_type), c_name(m.output_type)
    return f"""    if (h->{m.name}) {{
        mprpc_method row = {{ "{m.name}", {req}_fields, sizeof({req}), {resp}_fields, sizeof({resp}),
                              {prefix}__{m.name}_handler,
                              h->{m.name}_prepare ? {prefix}__{m.name}_prepare : NULL }};
        s->methods[n++] = row;
    }}
"""


def provider_part(svc, prefix):
    ms = list(svc.method)
    out = "".join(provider_types(prefix, m) for m in ms)
    out += f"""
/* The typed handler table. A handler whose request or response type differs from the .proto's is a
 * compile error (C: incompatible pointer types, an error under -Werror or
 * -Werror=incompatible-pointer-types; C++: always). A NULL handler leaves the method out (callers
 * get MPRPC_ERR_UNKNOWN_METHOD); a NULL _prepare means none (see mprpc_prepare_fn). */
typedef struct {prefix}_handlers {{
""" + "".join(f"    {prefix}_{m.name}_fn {m.name};\n" for m in ms) + \
        "".join(f"    {prefix}_{m.name}_prepare_fn {m.name}_prepare;\n" for m in ms) + f"""}} {prefix}_handlers;

/* What mprpc_server_add_service gets (&s->service). It must outlive the server, like any service. */
typedef struct {prefix}_service {{
    mprpc_service     service;
    mprpc_method      methods[{len(ms)}];
    {prefix}_handlers handlers;
    void             *user;    /* the last argument of every handler */
}} {prefix}_service;

""" + "".join(trampolines(prefix, m) for m in ms) + f"""
/* Fills *s from a copy of *h; then mprpc_server_add_service(srv, &s->service). MPRPC_ERR_INVALID_ARGUMENT
 * when s or h is NULL or h has no handler at all. Any thread; s is not touched afterwards until the
 * server calls a handler. */
static inline mprpc_status {prefix}_service_init({prefix}_service *s, const {prefix}_handlers *h,
        void *user)
{{
    size_t n = 0;
    if (!s || !h) return MPRPC_ERR_INVALID_ARGUMENT;
    memset(s, 0, sizeof *s);
""" + "".join(init_rows(prefix, m) for m in ms) + f"""    if (n == 0) return MPRPC_ERR_INVALID_ARGUMENT;
    s->handlers = *h;
    s->user = user;
    s->service.name = {prefix}_NAME;
    s->service.methods = s->methods;
    s->service.method_count = n;
    s->service.user = s;
    return MPRPC_OK;
}}
"""
    return out


def service_part(fd, svc):
    prefix = c_name((fd.package + "." if fd.package else "") + svc.name)
    check_names(svc, prefix)
    out = f"""
/* ==== service {svc.name} ({len(svc.method)} method{'s' if len(svc.method) != 1 else ''}) ==== */
#define {prefix}_NAME "{svc.name}"
#define {prefix}_METHOD_COUNT {len(svc.method)}
"""
    out += "".join(caller_part(svc, prefix, m) for m in svc.method)
    return out + "\n" + provider_part(svc, prefix)


def header_text(fd, src):
    base = fd.name[:-len(".proto")] if fd.name.endswith(".proto") else fd.name
    guard = "MPRPC_GEN_" + "".join(ch.upper() if ch.isalnum() else "_" for ch in base) + "_MPRPC_H"
    body = "".join(service_part(fd, s) for s in fd.service) or "\n/* no services in this file */\n"
    return f"""/* Generated by mprpc_generator.py from {src}; do not edit. */
#ifndef {guard}
#define {guard}
#include <string.h>
#include "mprpc.h"
#include "{os.path.basename(base)}.pb.h"

#ifdef __cplusplus
extern "C" {{
#endif
{body}
#ifdef __cplusplus
}}
#endif
#endif
"""


def main():
    ap = argparse.ArgumentParser(description="typed mprpc.h stubs from .proto services")
    ap.add_argument("-I", dest="includes", action="append", default=[], help="import path (as protoc)")
    ap.add_argument("-D", dest="outdir", default=".", help="output directory")
    ap.add_argument("-q", dest="quiet", action="store_true", help="print nothing on success")
    ap.add_argument("protos", nargs="+")
    args = ap.parse_args()
    for proto in args.protos:
        includes = args.includes or [os.path.dirname(proto) or "."]
        fd = load_file_descriptor(proto, includes)
        base = fd.name[:-len(".proto")] if fd.name.endswith(".proto") else fd.name
        path = os.path.join(args.outdir, base + ".mprpc.h")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            f.write(header_text(fd, fd.name))
        if not args.quiet:
            print("Writing to " + path)


if __name__ == "__main__":
    main()
