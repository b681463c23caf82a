#!/usr/bin/python3
"""Cross-checks mprpc.h's wire format against Google's protobuf (python3-protobuf).

Frames built by Python protobuf are decoded by mprpc.h (tests/wire_tool), and
frames built by mprpc.h are parsed by Python protobuf; for these messages both
encoders must also produce the very same bytes. Usage: crosscheck.py WIRE_TOOL
Prints one line per direction and exits non-zero on any mismatch."""
import os, random, struct, subprocess, sys, tempfile

tool = sys.argv[1]
top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
gen = tempfile.mkdtemp(prefix="mprpc-pb2-")
subprocess.check_call(["protoc", "-I", os.path.join(top, "proto"), "--python_out", gen,
                       "mprpc.proto", "testsvc.proto"])
sys.path.insert(0, gen)
import mprpc_pb2, testsvc_pb2  # noqa: E402
import google.protobuf  # noqa: E402

rng = random.Random(20261125)
failures = 0

def run(*args):
    out = subprocess.run([tool, *args], check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.split())

def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("MISMATCH:", what)

def rand_name():
    return "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_.") for _ in range(rng.randint(1, 128)))

def rand_u64():
    return rng.choice([0, 1, 127, 128, 300, 2**32 - 1, 2**63, 2**64 - 1, rng.getrandbits(64)])

def frame(header, body):
    h = header.SerializeToString()
    return struct.pack("<I", len(h)) + h + body

N = 60
for i in range(N):
    svc, meth, cid, seq = rand_name(), rand_name(), rand_u64(), rand_u64()
    payload = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
    body = testsvc_pb2.EchoRequest(payload=payload, seq=seq).SerializeToString()
    hdr = mprpc_pb2.RpcHeader(service_name=svc.encode(), method_name=meth.encode(),
                              args_size=len(body), call_id=cid, version=1)
    py = frame(hdr, body)
    # protobuf -> mprpc.h
    d = run("dec-req", py.hex())
    check(d.get("status") == "MPRPC_OK", f"dec-req status {d}")
    check(bytes.fromhex(d.get("service", "")) == svc.encode(), "service name")
    check(bytes.fromhex(d.get("method", "")) == meth.encode(), "method name")
    check(int(d.get("call_id", -1)) == cid and int(d.get("seq", -1)) == seq, "call_id/seq")
    check(int(d.get("args_size", -1)) == len(body) and int(d.get("frame_size", -1)) == len(py), "sizes")
    check(bytes.fromhex(d.get("payload", "")) == payload, "payload")
    # mprpc.h -> protobuf, byte for byte
    c = bytes.fromhex(run("enc-req", svc, meth, str(cid), str(seq), payload.hex())["frame"])
    check(c == py, f"request bytes differ:\n C  {c.hex()}\n py {py.hex()}")
    (hl,) = struct.unpack("<I", c[:4])
    h2 = mprpc_pb2.RpcHeader.FromString(c[4:4 + hl])
    b2 = testsvc_pb2.EchoRequest.FromString(c[4 + hl:])
    check(h2.service_name == svc.encode() and h2.call_id == cid and h2.version == 1 and b2.seq == seq, "py parse of C request")

for i in range(N):
    cid, seq = rand_u64(), rand_u64()
    status = rng.choice([0, 0, 5, 6, 10, 11, 13])
    text = "" if status == 0 else rand_name()
    payload = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
    body = testsvc_pb2.EchoResponse(payload=payload, seq=seq).SerializeToString()
    hdr = mprpc_pb2.RpcResponseHeader(call_id=cid, status=status, error_text=text.encode(), body_size=len(body))
    py = frame(hdr, body)
    d = run("dec-resp", py.hex())
    check(d.get("status") == "MPRPC_OK", f"dec-resp status {d}")
    check(int(d.get("call_id", -1)) == cid and int(d.get("rpc_status", -1)) == status, "resp call_id/status")
    check(bytes.fromhex(d.get("error_text", "")) == text.encode(), "error_text")
    check(bytes.fromhex(d.get("payload", "")) == payload and int(d.get("seq", -1)) == seq, "resp payload/seq")
    c = bytes.fromhex(run("enc-resp", str(cid), str(status), text, str(seq), payload.hex())["frame"])
    check(c == py, f"response bytes differ:\n C  {c.hex()}\n py {py.hex()}")

# a seed-style header (no call_id, no version) from protobuf is version 0 to mprpc.h
body = testsvc_pb2.EchoRequest(seq=5).SerializeToString()
seed = frame(mprpc_pb2.RpcHeader(service_name=b"S", method_name=b"M", args_size=len(body)), body)
d = run("dec-req", seed.hex())
check(d.get("version") == "0" and d.get("call_id") == "0", "seed header is version 0")

print(f"crosscheck: {2 * N + 1} cases against Google protobuf {google.protobuf.__version__}: {failures} mismatches")
sys.exit(1 if failures else 0)
