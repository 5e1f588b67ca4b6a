// Reading the dynamic section as the loader does, and which names are
// libraries, against libraries gcc builds for each test.
#include "library_fixture.hpp"
#include "loader/elf.hpp"

#include <vector>

using namespace pyimport;

Test(elf, reads_what_the_loader_reads) {
    Fixture fx;
    make_wheel(fx);
    std::string bytes = slurp(fx.path("pkg.libs/liby.so"));
    DynamicInfo info;
    cr_assert_eq(read_dynamic(bytes.data(), bytes.size(), info), ElfRead::Read);
    cr_expect_eq(info.soname, "liby.so");
    cr_expect_eq(info.runpath, "$ORIGIN");
    cr_expect(info.rpath.empty(), "DT_RUNPATH shadows DT_RPATH");
    bool needs_x = false;
    for (std::string_view n : info.needed)
        needs_x |= n == "libx.so.1";
    cr_expect(needs_x);
    bytes = slurp(fx.path("pkg/ext.so"));
    cr_assert_eq(read_dynamic(bytes.data(), bytes.size(), info), ElfRead::Read);
    cr_expect_eq(info.rpath, "$ORIGIN/../pkg.libs");
    cr_expect(info.runpath.empty());
    cr_expect(info.soname.empty());
}

Test(elf, refuses_what_the_loader_refuses_and_survives_truncation) {
    Fixture fx;
    make_wheel(fx);
    DynamicInfo info;
    std::string text = "INPUT(libx.so.1)\n"; // a linker script named like a library
    cr_expect_eq(read_dynamic(text.data(), text.size(), info), ElfRead::NotLoadable);
    std::string bytes = slurp(fx.path("pkg.libs/liby.so"));
    for (size_t size = 0; size < bytes.size(); size += 61) {
        // Exactly `size` bytes on the heap: a read past them is a memory error
        // (valgrind, ASan), not a read of the rest of the file.
        std::vector<char> cut(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(size));
        ElfRead read = read_dynamic(cut.data(), cut.size(), info);
        if (size < 64) cr_expect_eq(read, ElfRead::NotLoadable, "%zu bytes", size);
        // What it reads whole from a cut file is what the whole file says.
        if (read == ElfRead::Read) cr_expect_eq(info.soname, "liby.so", "%zu bytes", size);
    }
    std::string other = bytes;
    other[4] = 1; // ELFCLASS32
    cr_expect_eq(read_dynamic(other.data(), other.size(), info), ElfRead::NotLoadable);
    other = bytes;
    other[18] = 0x28; // another machine
    cr_expect_eq(read_dynamic(other.data(), other.size(), info), ElfRead::NotLoadable);
    other = bytes;
    other[54] = 0x30; // e_phentsize: a loadable object whose headers cannot be read
    cr_expect_eq(read_dynamic(other.data(), other.size(), info), ElfRead::Unreadable);
}

Test(elf, library_names) {
    for (const char* yes : {"libx.so", "libx.so.1", "libx.so.1.2.3",
                            "_m.cpython-311-x86_64-linux-gnu.so", "libgfortran-040039e1.so.5.0.0"})
        cr_expect(is_library_name(yes), "%s", yes);
    for (const char* no : {"x.py", ".so", "libx.sox", "libx.so_", "so", "x.so.py.txt"})
        cr_expect_not(is_library_name(no), "%s", no);
}
