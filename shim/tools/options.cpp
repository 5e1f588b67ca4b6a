// pyimport-options: the PYIMPORT_* variables from the one list in
// config.hpp, as the README's markdown table (the default; a test keeps them
// equal), as plain text for `pyimport options` (--text), or as the pyimport(7)
// man page (--man).
#include "base/config.hpp"

#include <cstdio>
#include <cstring>
#include <string>

namespace {

struct Option {
    const char* name;
    const char* type;
    const char* default_value;
    const char* meaning;
};

constexpr Option kOptions[] = {
#define PYIMPORT_ROW(field, name, type, def, meaning) {name, #type, def, meaning},
    PYIMPORT_OPTIONS(PYIMPORT_ROW)
#undef PYIMPORT_ROW
};

void markdown() {
    std::printf("| variable | type | default | meaning |\n|---|---|---|---|\n");
    for (const Option& o : kOptions) {
        std::string def = *o.default_value ? std::string("`") + o.default_value + "`" : "(empty)";
        std::printf("| `%s` | %s | %s | %s |\n", o.name, o.type, def.c_str(), o.meaning);
    }
}

// Wrapped at 76 columns under each name.
void text() {
    for (const Option& o : kOptions) {
        std::printf("%s  (%s, default: %s)\n", o.name, o.type,
                    *o.default_value ? o.default_value : "empty");
        std::string line = "    ";
        for (const char* p = o.meaning; *p;) {
            const char* end = std::strchr(p, ' ');
            if (!end) end = p + std::strlen(p);
            std::string word(p, end);
            if (line.size() > 4 && line.size() + 1 + word.size() > 76) {
                std::printf("%s\n", line.c_str());
                line = "    ";
            }
            line += (line.size() > 4 ? " " : "") + word;
            p = *end ? end + 1 : end;
        }
        std::printf("%s\n\n", line.c_str());
    }
}

// roff: a leading '.' or '\'' would be a request, '\\' an escape, '-' a hyphen.
std::string roff(const char* text) {
    std::string out;
    for (const char* p = text; *p; ++p) {
        if (*p == '\\')
            out += "\\e";
        else if (*p == '-')
            out += "\\-";
        else if ((*p == '.' || *p == '\'') && (out.empty() || out.back() == '\n'))
            out += std::string("\\&") + *p;
        else
            out += *p;
    }
    return out;
}

void man(const char* version) {
    std::printf(".TH PYIMPORT 7 \"\" \"pyimport %s\" \"pyimport\"\n", version);
    std::printf(".SH NAME\npyimport \\- environment variables of libpyimport.so\n");
    std::printf(".SH DESCRIPTION\n"
                "libpyimport.so, preloaded (LD_PRELOAD) into the ranks of an MPI job that "
                "runs Python, serves the interpreter's file system calls from a snapshot "
                "that rank 0 reads once and broadcasts. Everywhere else it only passes "
                "calls through. These variables, read by every rank at start, configure "
                "it; a bad value leaves the job running uncached with one line on "
                "standard error.\n");
    std::printf(".SH VARIABLES\n");
    for (const Option& o : kOptions) {
        std::printf(".TP\n.B %s\n(%s, default: %s)\n%s\n", o.name, o.type,
                    *o.default_value ? roff(o.default_value).c_str() : "empty",
                    roff(o.meaning).c_str());
    }
    std::printf(".SH SEE ALSO\n.BR pyimport (1),\n.BR ld.so (8)\n");
}

} // namespace

int main(int argc, char** argv) {
    const char* mode = argc > 1 ? argv[1] : "--markdown";
    if (argc > 2 || (std::strcmp(mode, "--markdown") && std::strcmp(mode, "--text") &&
                     std::strcmp(mode, "--man"))) {
        std::fprintf(stderr, "usage: pyimport-options [--markdown | --text | --man]\n");
        return 2;
    }
    if (!std::strcmp(mode, "--markdown")) markdown();
    if (!std::strcmp(mode, "--text")) text();
    if (!std::strcmp(mode, "--man")) man(PYIMPORT_VERSION);
    return 0;
}
