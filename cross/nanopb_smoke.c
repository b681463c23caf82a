/* cross/nanopb_smoke.c: encodes one Smoke message with the target's nanopb runtime, prints its bytes as hex,
 * decodes them back and checks every field. Built for every cross target by `make cross-smoke` (cross/cross.mk),
 * whose output is compared with the checked-in vector cross/nanopb_smoke.hex: the same bytes on x86-64,
 * aarch64, armhf (32-bit), s390x (big-endian) and static musl. Exit status 0 only when everything matched. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <pb_decode.h>
#include <pb_encode.h>

#include "smoke.pb.h"

static const uint8_t payload[] = {0x01, 0x02, 0x7f, 0x80, 0xff};

int main(void) {
    Smoke in = Smoke_init_zero, out = Smoke_init_zero;
    uint8_t buf[Smoke_size];
    pb_ostream_t os = pb_ostream_from_buffer(buf, sizeof buf);
    pb_istream_t is;
    size_t i;
    int bad = 0;

    in.id = 300u;
    in.payload.size = (pb_size_t)sizeof payload;
    memcpy(in.payload.bytes, payload, sizeof payload);
    in.crc = 0xdeadbeefu;
    in.stamp = UINT64_C(0x0102030405060708);
    in.delta = -2;

    if (!pb_encode(&os, Smoke_fields, &in)) {
        fprintf(stderr, "encode failed: %s\n", PB_GET_ERROR(&os));
        return 1;
    }
    for (i = 0; i < os.bytes_written; i++) printf("%02x", buf[i]);
    printf("\n");

    is = pb_istream_from_buffer(buf, os.bytes_written);
    if (!pb_decode(&is, Smoke_fields, &out)) {
        fprintf(stderr, "decode failed: %s\n", PB_GET_ERROR(&is));
        return 1;
    }
    bad |= out.id != in.id;
    bad |= out.payload.size != in.payload.size || memcmp(out.payload.bytes, payload, sizeof payload) != 0;
    bad |= out.crc != in.crc;
    bad |= out.stamp != in.stamp;
    bad |= out.delta != in.delta;
    if (bad) fprintf(stderr, "decoded message differs from the encoded one\n");
    return bad;
}
