// pyimport-options: prints the configuration table (markdown) from the one
// list in config.hpp. The README's table is this output; a test keeps them equal.
#include "base/config.hpp"

#include <cstdio>

int main() {
    std::printf("| variable | type | default | meaning |\n|---|---|---|---|\n");
#define PYIMPORT_ROW(field, name, type, def, meaning)                                              \
    std::printf("| `%s` | %s | %s | %s |\n", name, #type, *def ? "`" def "`" : "(empty)", meaning);
    PYIMPORT_OPTIONS(PYIMPORT_ROW)
#undef PYIMPORT_ROW
    return 0;
}
