/* Command-line access to mprpc.h's wire codec for tests/crosscheck.py, which
 * compares it with Google's protobuf. Bodies are testsvc.EchoRequest (for
 * requests) and testsvc.EchoResponse (for responses).
 *   wire_tool enc-req SERVICE METHOD CALL_ID SEQ PAYLOAD_HEX   -> frame hex
 *   wire_tool dec-req FRAME_HEX                                -> key=value lines
 *   wire_tool enc-resp CALL_ID STATUS TEXT SEQ PAYLOAD_HEX     -> frame hex
 *   wire_tool dec-resp FRAME_HEX                               -> key=value lines */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "testsvc.pb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t unhex(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    while (s[0] && s[1] && n < cap) {
        unsigned v;
        if (sscanf(s, "%2x", &v) != 1) break;
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

static void put_hex(const char *key, const uint8_t *p, size_t n)
{
    size_t i;
    printf("%s=", key);
    for (i = 0; i < n; i++) printf("%02x", p[i]);
    printf("\n");
}

int main(int argc, char **argv)
{
    static uint8_t buf[1 << 16];
    mprpc_buf out;
    mprpc_buf_init(&out);
    if (argc == 7 && strcmp(argv[1], "enc-req") == 0) {
        testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
        rq.seq = strtoull(argv[5], NULL, 10);
        rq.payload.size = (pb_size_t)unhex(argv[6], rq.payload.bytes, sizeof rq.payload.bytes);
        if (mprpc_wire_encode_request(&out, 1 << 20, strtoull(argv[4], NULL, 10), argv[2], argv[3],
                                      testsvc_EchoRequest_fields, &rq) != MPRPC_OK) return 1;
        put_hex("frame", out.data, out.len);
    } else if (argc == 7 && strcmp(argv[1], "enc-resp") == 0) {
        testsvc_EchoResponse rs = testsvc_EchoResponse_init_zero;
        rs.seq = strtoull(argv[5], NULL, 10);
        rs.payload.size = (pb_size_t)unhex(argv[6], rs.payload.bytes, sizeof rs.payload.bytes);
        if (mprpc_wire_encode_response(&out, 1 << 20, strtoull(argv[2], NULL, 10), atoi(argv[3]), argv[4],
                                       testsvc_EchoResponse_fields, &rs) != MPRPC_OK) return 1;
        put_hex("frame", out.data, out.len);
    } else if (argc == 3 && strcmp(argv[1], "dec-req") == 0) {
        mprpc_request_frame f;
        testsvc_EchoRequest rq;
        pb_istream_t is;
        size_t n = unhex(argv[2], buf, sizeof buf);
        mprpc_status st = mprpc_wire_decode_request(buf, n, 1 << 20, &f);
        printf("status=%s\n", mprpc_status_name(st));
        if (st != MPRPC_OK) return 0;
        is = pb_istream_from_buffer(f.body, f.header.args_size);
        if (!pb_decode(&is, testsvc_EchoRequest_fields, &rq)) { printf("body=undecodable\n"); return 0; }
        put_hex("service", f.header.service_name.bytes, f.header.service_name.size);
        put_hex("method", f.header.method_name.bytes, f.header.method_name.size);
        printf("args_size=%u\ncall_id=%llu\nversion=%u\nframe_size=%zu\nseq=%llu\n", (unsigned)f.header.args_size,
               (unsigned long long)f.header.call_id, (unsigned)f.header.version, f.frame_size,
               (unsigned long long)rq.seq);
        put_hex("payload", rq.payload.bytes, rq.payload.size);
    } else if (argc == 3 && strcmp(argv[1], "dec-resp") == 0) {
        mprpc_response_frame f;
        testsvc_EchoResponse rs;
        pb_istream_t is;
        size_t n = unhex(argv[2], buf, sizeof buf);
        mprpc_status st = mprpc_wire_decode_response(buf, n, 1 << 20, &f);
        printf("status=%s\n", mprpc_status_name(st));
        if (st != MPRPC_OK) return 0;
        is = pb_istream_from_buffer(f.body, f.header.body_size);
        if (!pb_decode(&is, testsvc_EchoResponse_fields, &rs)) { printf("body=undecodable\n"); return 0; }
        printf("call_id=%llu\nrpc_status=%d\nbody_size=%u\nframe_size=%zu\nseq=%llu\n",
               (unsigned long long)f.header.call_id, (int)f.header.status, (unsigned)f.header.body_size,
               f.frame_size, (unsigned long long)rs.seq);
        put_hex("error_text", f.header.error_text.bytes, f.header.error_text.size);
        put_hex("payload", rs.payload.bytes, rs.payload.size);
    } else {
        fprintf(stderr, "usage: see the comment at the top of tests/wire_tool.c\n");
        return 2;
    }
    mprpc_buf_free(&out);
    return 0;
}
