/* Wire: u32le header_len | RpcHeader | body, and the v1 response frame.
 * Expected bytes below are written by hand from the protobuf encoding rules
 * (tag = field << 3 | wire type; varints; length-delimited bytes), not
 * produced by the code under test. tests/crosscheck.py checks the same
 * encoder against Google's protobuf. */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "test.h"
#include "user.pb.h"

static const uint8_t login_request_frame[] = {
    0x1d, 0x00, 0x00, 0x00,                                   /* header_len = 29, little-endian */
    0x0a, 0x0e, 'U', 's', 'e', 'r', 'S', 'e', 'r', 'v', 'i', 'c', 'e', 'R', 'p', 'c', /* 1: service */
    0x12, 0x05, 'L', 'o', 'g', 'i', 'n',                      /* 2: method_name */
    0x18, 0x13,                                               /* 3: args_size = 19 */
    0x20, 0x07,                                               /* 4: call_id = 7 */
    0x28, 0x01,                                               /* 5: version = 1 */
    0x0a, 0x09, 'z', 'h', 'a', 'n', 'g', ' ', 's', 'a', 'n',  /* LoginRequest.name */
    0x12, 0x06, '1', '2', '3', '4', '5', '6',                 /* LoginRequest.pwd */
};

static const uint8_t login_response_frame[] = {
    0x04, 0x00, 0x00, 0x00,      /* header_len = 4 */
    0x08, 0x07,                  /* call_id = 7; status 0 and empty text are not sent (proto3) */
    0x20, 0x04,                  /* body_size = 4 */
    0x0a, 0x00,                  /* LoginResponse.result = {} */
    0x10, 0x01,                  /* LoginResponse.success = true */
};

static const uint8_t error_response_frame[] = {
    0x09, 0x00, 0x00, 0x00,
    0x08, 0xac, 0x02,            /* call_id = 300 */
    0x10, 0x0b,                  /* status = 11 (MPRPC_ERR_UNKNOWN_METHOD) */
    0x1a, 0x02, 'n', 'o',        /* error_text */
};

static void fill_login(fixbug_LoginRequest *rq)
{
    memset(rq, 0, sizeof *rq);
    memcpy(rq->name.bytes, "zhang san", 9);
    rq->name.size = 9;
    memcpy(rq->pwd.bytes, "123456", 6);
    rq->pwd.size = 6;
}

static void request_encodes_to_the_exact_bytes(void)
{
    mprpc_buf b;
    fixbug_LoginRequest rq;
    fill_login(&rq);
    mprpc_buf_init(&b);
    CHECK_STATUS(mprpc_wire_encode_request(&b, 1024, 7, "UserServiceRpc", "Login",
                                           fixbug_LoginRequest_fields, &rq), MPRPC_OK);
    CHECK(b.len == sizeof login_request_frame);
    CHECK(b.len == sizeof login_request_frame && memcmp(b.data, login_request_frame, b.len) == 0);
    mprpc_buf_free(&b);
}

static void responses_encode_to_the_exact_bytes(void)
{
    mprpc_buf b;
    fixbug_LoginResponse rs = fixbug_LoginResponse_init_zero;
    rs.has_result = true;
    rs.success = true;
    mprpc_buf_init(&b);
    CHECK_STATUS(mprpc_wire_encode_response(&b, 1024, 7, MPRPC_OK, NULL, fixbug_LoginResponse_fields, &rs),
                 MPRPC_OK);
    CHECK(b.len == sizeof login_response_frame && memcmp(b.data, login_response_frame, b.len) == 0);
    b.len = 0;
    CHECK_STATUS(mprpc_wire_encode_response(&b, 1024, 300, MPRPC_ERR_UNKNOWN_METHOD, "no", NULL, NULL),
                 MPRPC_OK);
    CHECK(b.len == sizeof error_response_frame && memcmp(b.data, error_response_frame, b.len) == 0);
    mprpc_buf_free(&b);
}

static void request_decodes_from_the_exact_bytes(void)
{
    mprpc_request_frame f;
    fixbug_LoginRequest rq;
    pb_istream_t is;
    CHECK_STATUS(mprpc_wire_decode_request(login_request_frame, sizeof login_request_frame, 1024, &f), MPRPC_OK);
    CHECK(f.frame_size == sizeof login_request_frame);
    CHECK(f.header.service_name.size == 14 && memcmp(f.header.service_name.bytes, "UserServiceRpc", 14) == 0);
    CHECK(f.header.method_name.size == 5 && memcmp(f.header.method_name.bytes, "Login", 5) == 0);
    CHECK(f.header.args_size == 19);
    CHECK(f.header.call_id == 7);
    CHECK(f.header.version == 1);
    is = pb_istream_from_buffer(f.body, f.header.args_size);
    CHECK(pb_decode(&is, fixbug_LoginRequest_fields, &rq));
    CHECK(rq.name.size == 9 && memcmp(rq.name.bytes, "zhang san", 9) == 0);
}

static void every_split_point_asks_for_more_until_the_frame_is_whole(void)
{
    mprpc_request_frame f;
    mprpc_response_frame r;
    size_t k;
    for (k = 0; k < sizeof login_request_frame; k++)
        CHECK_STATUS(mprpc_wire_decode_request(login_request_frame, k, 1024, &f), MPRPC_AGAIN);
    for (k = 0; k < sizeof login_response_frame; k++)
        CHECK_STATUS(mprpc_wire_decode_response(login_response_frame, k, 1024, &r), MPRPC_AGAIN);
    CHECK_STATUS(mprpc_wire_decode_response(login_response_frame, sizeof login_response_frame, 1024, &r), MPRPC_OK);
    CHECK(r.header.call_id == 7 && r.header.body_size == 4 && r.frame_size == sizeof login_response_frame);
}

/* A byte-at-a-time stream of three pipelined frames through an mprpc_buf. */
static void pipelined_frames_split_anywhere_come_out_whole(void)
{
    uint8_t stream[3 * sizeof login_request_frame];
    mprpc_buf b;
    size_t i, frames = 0;
    for (i = 0; i < 3; i++) memcpy(stream + i * sizeof login_request_frame, login_request_frame, sizeof login_request_frame);
    mprpc_buf_init(&b);
    for (i = 0; i < sizeof stream; i++) {
        mprpc_request_frame f;
        CHECK_STATUS(mprpc_buf_append(&b, &stream[i], 1, 4096), MPRPC_OK);
        while (mprpc_wire_decode_request(b.data + b.pos, mprpc_buf_readable(&b), 1024, &f) == MPRPC_OK) {
            CHECK(f.header.call_id == 7);
            mprpc_buf_consume(&b, f.frame_size);
            frames++;
        }
    }
    CHECK(frames == 3);
    CHECK(mprpc_buf_readable(&b) == 0);
    mprpc_buf_free(&b);
}

static void header_round_trips_keep_every_field(void)
{
    static const uint64_t ids[] = { 0, 1, 127, 128, 300, 0xffffffffull, 0x8000000000000000ull, UINT64_MAX };
    size_t i;
    for (i = 0; i < MPRPC_COUNTOF(ids); i++) {
        mprpc_buf b;
        mprpc_request_frame f;
        mprpc_response_frame r;
        fixbug_LoginRequest rq;
        char svc[129];
        memset(svc, 'S', 128);
        svc[128] = '\0';
        fill_login(&rq);
        mprpc_buf_init(&b);
        CHECK_STATUS(mprpc_wire_encode_request(&b, 1024, ids[i], svc, "m", fixbug_LoginRequest_fields, &rq), MPRPC_OK);
        CHECK_STATUS(mprpc_wire_decode_request(b.data, b.len, 1024, &f), MPRPC_OK);
        CHECK(f.header.call_id == ids[i] && f.header.service_name.size == 128 && f.frame_size == b.len);
        b.len = 0;
        CHECK_STATUS(mprpc_wire_encode_response(&b, 1024, ids[i], -5, "neg", NULL, NULL), MPRPC_OK);
        CHECK_STATUS(mprpc_wire_decode_response(b.data, b.len, 1024, &r), MPRPC_OK);
        CHECK(r.header.call_id == ids[i] && r.header.status == -5 && r.header.error_text.size == 3);
        mprpc_buf_free(&b);
    }
}

static void seed_headers_without_call_id_are_version_zero(void)
{
    /* what the C++ seed sends: fields 1-3 only */
    static const uint8_t seed[] = { 0x09, 0, 0, 0, 0x0a, 0x01, 'S', 0x12, 0x02, 'M', 'm', 0x18, 0x02, 0x08, 0x05 };
    mprpc_request_frame f;
    CHECK_STATUS(mprpc_wire_decode_request(seed, sizeof seed, 1024, &f), MPRPC_OK);
    CHECK(f.header.version == 0 && f.header.call_id == 0 && f.header.args_size == 2);
    CHECK(f.body && f.body[0] == 0x08 && f.body[1] == 0x05);
}

static void oversized_and_garbage_frames_are_refused(void)
{
    uint8_t big_header[8] = { 0x01, 0x04, 0x00, 0x00 }; /* header_len 1025 > MPRPC_MAX_HEADER_SIZE */
    uint8_t garbage[] = { 0x03, 0, 0, 0, 0xff, 0xff, 0xff };
    uint8_t long_name[4 + 3 + 200];
    mprpc_request_frame f;
    mprpc_buf b;
    fixbug_LoginRequest rq;
    CHECK_STATUS(mprpc_wire_decode_request(big_header, sizeof big_header, 1024, &f), MPRPC_ERR_PROTOCOL);
    CHECK_STATUS(mprpc_wire_decode_request(garbage, sizeof garbage, 1024, &f), MPRPC_ERR_PROTOCOL);
    /* a 200-byte service name does not fit RpcHeader's bound */
    long_name[0] = 203; long_name[1] = long_name[2] = long_name[3] = 0;
    long_name[4] = 0x0a; long_name[5] = 0xc8; long_name[6] = 0x01;
    memset(long_name + 7, 'x', 200);
    CHECK_STATUS(mprpc_wire_decode_request(long_name, sizeof long_name, 1024, &f), MPRPC_ERR_PROTOCOL);
    /* a body over max_message_size: refused from the header alone, header kept */
    CHECK_STATUS(mprpc_wire_decode_request(login_request_frame, 33, 18, &f), MPRPC_ERR_TOO_LARGE);
    CHECK(f.header.call_id == 7 && f.header.args_size == 19);
    /* and the encoder refuses to build one */
    fill_login(&rq);
    mprpc_buf_init(&b);
    CHECK_STATUS(mprpc_wire_encode_request(&b, 18, 1, "S", "M", fixbug_LoginRequest_fields, &rq), MPRPC_ERR_TOO_LARGE);
    CHECK(b.len == 0);
    CHECK_STATUS(mprpc_wire_encode_request(&b, 1024, 1, "", "M", NULL, &rq), MPRPC_ERR_INVALID_ARGUMENT);
    mprpc_buf_free(&b);
}

static void names_longer_than_the_header_bound_are_refused(void)
{
    char name[200];
    mprpc_buf b;
    fixbug_LoginRequest rq;
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    fill_login(&rq);
    mprpc_buf_init(&b);
    CHECK_STATUS(mprpc_wire_encode_request(&b, 1024, 1, name, "M", fixbug_LoginRequest_fields, &rq),
                 MPRPC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mprpc_wire_encode_request(&b, 1024, 1, "S", name, fixbug_LoginRequest_fields, &rq),
                 MPRPC_ERR_INVALID_ARGUMENT);
    mprpc_buf_free(&b);
}

static void buffers_never_grow_past_their_bound(void)
{
    mprpc_buf b;
    uint8_t x[100];
    memset(x, 1, sizeof x);
    mprpc_buf_init(&b);
    CHECK_STATUS(mprpc_buf_append(&b, x, 100, 150), MPRPC_OK);
    CHECK_STATUS(mprpc_buf_append(&b, x, 100, 150), MPRPC_ERR_TOO_LARGE);
    CHECK(b.cap <= 256 && b.len == 100);
    mprpc_buf_consume(&b, 90); /* compaction makes room without growing */
    CHECK_STATUS(mprpc_buf_append(&b, x, 50, 150), MPRPC_OK);
    CHECK(mprpc_buf_readable(&b) == 60);
    mprpc_buf_consume(&b, 60);
    CHECK(b.pos == 0 && b.len == 0);
    mprpc_buf_free(&b);
}

static void error_text_is_truncated_to_the_header_bound(void)
{
    char text[600];
    mprpc_buf b;
    mprpc_response_frame r;
    memset(text, 'e', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    mprpc_buf_init(&b);
    CHECK_STATUS(mprpc_wire_encode_response(&b, 1024, 1, MPRPC_ERR_APPLICATION, text, NULL, NULL), MPRPC_OK);
    CHECK_STATUS(mprpc_wire_decode_response(b.data, b.len, 1024, &r), MPRPC_OK);
    CHECK(r.header.error_text.size == 256);
    mprpc_buf_free(&b);
}

/* SIZE_MAX as "no limit" must not wrap the frame bound (4 + 1024 + SIZE_MAX) to a tiny one. */
static void an_unlimited_message_size_does_not_wrap(void)
{
    fixbug_GetFriendListsResponse rs = fixbug_GetFriendListsResponse_init_zero;
    mprpc_response_frame r;
    mprpc_buf b;
    pb_size_t i;
    for (i = 0; i < 32; i++) {
        memset(rs.friends[i].bytes, 'f', 64);
        rs.friends[i].size = 64;
    }
    rs.friends_count = 32;
    mprpc_buf_init(&b);
    CHECK_STATUS(mprpc_wire_encode_response(&b, SIZE_MAX, 1, MPRPC_OK, NULL,
                                            fixbug_GetFriendListsResponse_fields, &rs), MPRPC_OK);
    CHECK(b.len > 2048);
    CHECK_STATUS(mprpc_wire_decode_response(b.data, b.len, SIZE_MAX, &r), MPRPC_OK);
    CHECK(r.frame_size == b.len);
    mprpc_buf_free(&b);
}

static void status_names_and_texts_come_from_one_list(void)
{
    int s;
    CHECK(strcmp(mprpc_status_name(MPRPC_ERR_TIMEOUT), "MPRPC_ERR_TIMEOUT") == 0);
    CHECK(strcmp(mprpc_status_str(MPRPC_ERR_TIMEOUT), "timed out") == 0);
    CHECK(strcmp(mprpc_status_str(9999), "unknown status") == 0);
    for (s = 0; s < MPRPC_STATUS_COUNT; s++) {
        CHECK(strncmp(mprpc_status_name(s), "MPRPC_", 6) == 0);
        CHECK(strcmp(mprpc_status_str(s), "unknown status") != 0);
    }
}

int main(void)
{
    RUN(request_encodes_to_the_exact_bytes);
    RUN(responses_encode_to_the_exact_bytes);
    RUN(request_decodes_from_the_exact_bytes);
    RUN(every_split_point_asks_for_more_until_the_frame_is_whole);
    RUN(pipelined_frames_split_anywhere_come_out_whole);
    RUN(header_round_trips_keep_every_field);
    RUN(seed_headers_without_call_id_are_version_zero);
    RUN(oversized_and_garbage_frames_are_refused);
    RUN(names_longer_than_the_header_bound_are_refused);
    RUN(buffers_never_grow_past_their_bound);
    RUN(error_text_is_truncated_to_the_header_bound);
    RUN(an_unlimited_message_size_does_not_wrap);
    RUN(status_names_and_texts_come_from_one_list);
    return test_summary("test_wire");
}
