/* cross/wire_vector.c: encodes a fixed set of mprpc frames with mprpc.h and prints each as
 * "name hex" on one line. Built for every cross target; cross/test-cross.sh compares the output with the
 * checked-in cross/wire_vector.hex, so a frame that differs on a big-endian (s390x) or 32-bit (armhf) CPU
 * fails. Each frame is also decoded back on the same CPU and checked field by field (exit 1 otherwise).
 * The values are chosen to cross byte boundaries: multi-byte varints, a 64-bit call_id above 2^32 (32-bit
 * CPUs), negative int32 (ten-byte varint), a length prefix above 255 (the u32le prefix's second byte). */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "user.pb.h"

#include <stdio.h>
#include <string.h>

static int failures;

static void expect(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "wire_vector: %s\n", what);
        failures++;
    }
}

static void print_frame(const char *name, const mprpc_buf *b)
{
    size_t i;
    printf("%s ", name);
    for (i = b->pos; i < b->len; i++) printf("%02x", b->data[i]);
    printf("\n");
}

static void set_bytes(pb_byte_t *dst, pb_size_t *len, size_t cap, const char *s)
{
    size_t n = strlen(s);
    if (n > cap) n = cap;
    memcpy(dst, s, n);
    *len = (pb_size_t)n;
}

int main(void)
{
    mprpc_buf b;
    mprpc_request_frame rf;
    mprpc_response_frame sf;
    pb_istream_t is;
    char name[129];

    /* 1. the README's Login call (the same bytes as tests/test_wire.c's login_request_frame) */
    {
        fixbug_LoginRequest rq = fixbug_LoginRequest_init_zero, back = fixbug_LoginRequest_init_zero;
        set_bytes(rq.name.bytes, &rq.name.size, sizeof rq.name.bytes, "zhang san");
        set_bytes(rq.pwd.bytes, &rq.pwd.size, sizeof rq.pwd.bytes, "123456");
        mprpc_buf_init(&b);
        expect(mprpc_wire_encode_request(&b, 1024, 7, "UserServiceRpc", "Login", fixbug_LoginRequest_fields, &rq)
               == MPRPC_OK, "login: encode");
        print_frame("login_request", &b);
        expect(mprpc_wire_decode_request(b.data, b.len, 1024, &rf) == MPRPC_OK && rf.frame_size == b.len &&
               rf.header.call_id == 7 && rf.header.version == MPRPC_PROTOCOL_VERSION, "login: decode header");
        is = pb_istream_from_buffer(rf.body, rf.header.args_size);
        expect(pb_decode(&is, fixbug_LoginRequest_fields, &back) && back.name.size == 9 &&
               memcmp(back.name.bytes, "zhang san", 9) == 0 && back.pwd.size == 6, "login: decode body");
        mprpc_buf_free(&b);
    }
    /* 2. Register with a multi-byte varint id and a call_id above 2^32 */
    {
        fixbug_RegisterRequest rq = fixbug_RegisterRequest_init_zero, back = fixbug_RegisterRequest_init_zero;
        const uint64_t id = 0x0123456789abcdefull;
        rq.id = 0xfedcba98u;
        set_bytes(rq.name.bytes, &rq.name.size, sizeof rq.name.bytes, "mprpc");
        set_bytes(rq.pwd.bytes, &rq.pwd.size, sizeof rq.pwd.bytes, "666666");
        mprpc_buf_init(&b);
        expect(mprpc_wire_encode_request(&b, 1024, id, "UserServiceRpc", "Register",
                                         fixbug_RegisterRequest_fields, &rq) == MPRPC_OK, "register: encode");
        print_frame("register_request", &b);
        expect(mprpc_wire_decode_request(b.data, b.len, 1024, &rf) == MPRPC_OK && rf.header.call_id == id,
               "register: decode header (64-bit call_id)");
        is = pb_istream_from_buffer(rf.body, rf.header.args_size);
        expect(pb_decode(&is, fixbug_RegisterRequest_fields, &back) && back.id == 0xfedcba98u,
               "register: decode body (32-bit varint)");
        mprpc_buf_free(&b);
    }
    /* 3. a header longer than 255 bytes: 128-byte service and method names */
    {
        fixbug_GetFriendListsRequest rq = fixbug_GetFriendListsRequest_init_zero;
        memset(name, 's', 128);
        name[128] = '\0';
        rq.userid = 1000;
        mprpc_buf_init(&b);
        expect(mprpc_wire_encode_request(&b, 1024, UINT64_MAX, name, name, fixbug_GetFriendListsRequest_fields, &rq)
               == MPRPC_OK, "long names: encode");
        print_frame("long_header_request", &b);
        expect(b.len > 4 && b.data[1] == 0x01, "long names: prefix above 255");
        expect(mprpc_wire_decode_request(b.data, b.len, 1024, &rf) == MPRPC_OK && rf.header.call_id == UINT64_MAX &&
               rf.header.service_name.size == 128, "long names: decode");
        mprpc_buf_free(&b);
    }
    /* 4. a response with a repeated bytes body and a nested message with a negative int32 */
    {
        static const char *const friends[] = { "gao yang", "liu hong", "wang shuo" };
        fixbug_GetFriendListsResponse rs = fixbug_GetFriendListsResponse_init_zero;
        fixbug_GetFriendListsResponse back = fixbug_GetFriendListsResponse_init_zero;
        size_t i;
        rs.has_result = true;
        rs.result.errcode = -2;
        for (i = 0; i < 3; i++) set_bytes(rs.friends[i].bytes, &rs.friends[i].size, 64, friends[i]);
        rs.friends_count = 3;
        mprpc_buf_init(&b);
        expect(mprpc_wire_encode_response(&b, 1024, 300, MPRPC_OK, NULL, fixbug_GetFriendListsResponse_fields, &rs)
               == MPRPC_OK, "friends: encode");
        print_frame("friends_response", &b);
        expect(mprpc_wire_decode_response(b.data, b.len, 1024, &sf) == MPRPC_OK && sf.header.call_id == 300,
               "friends: decode header");
        is = pb_istream_from_buffer(sf.body, sf.header.body_size);
        expect(pb_decode(&is, fixbug_GetFriendListsResponse_fields, &back) && back.result.errcode == -2 &&
               back.friends_count == 3 && back.friends[2].size == 9, "friends: decode body");
        mprpc_buf_free(&b);
    }
    /* 5. an error response: status and text, no body */
    {
        mprpc_buf_init(&b);
        expect(mprpc_wire_encode_response(&b, 1024, 0xffffffffull + 1, MPRPC_ERR_UNKNOWN_METHOD,
                                          "unknown method 'Logout'", NULL, NULL) == MPRPC_OK, "error: encode");
        print_frame("error_response", &b);
        expect(mprpc_wire_decode_response(b.data, b.len, 1024, &sf) == MPRPC_OK &&
               sf.header.status == MPRPC_ERR_UNKNOWN_METHOD && sf.header.call_id == 0x100000000ull &&
               sf.header.body_size == 0, "error: decode");
        mprpc_buf_free(&b);
    }
    return failures ? 1 : 0;
}
