/* Compile-only check: the implementation builds warning-free in every
 * language mode tests/run.sh tries (C99, C11, C++; gcc and clang). */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"

int main(void)
{
    return mprpc_status_str(MPRPC_OK)[0] == 'o' ? 0 : 1;
}
