// pyimport-symbols: the interposed symbols, from the tables in base/real.hpp,
// expanded by the compiler (no text matching can miss an entry).
//   pyimport-symbols            one name per line
//   pyimport-symbols --map      the linker version script that exports them only
#include "base/real.hpp"

#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
    bool map = argc > 1 && std::strcmp(argv[1], "--map") == 0;
    if (map) std::printf("{\n  global:\n");
#define PYIMPORT_PRINT_SYMBOL(name, ret, params) std::printf(map ? "    %s;\n" : "%s\n", #name);
    PYIMPORT_REAL_FUNCTIONS(PYIMPORT_PRINT_SYMBOL)
    PYIMPORT_MPI_FUNCTIONS(PYIMPORT_PRINT_SYMBOL)
#undef PYIMPORT_PRINT_SYMBOL
    if (map) std::printf("  local: *;\n};\n");
    return 0;
}
