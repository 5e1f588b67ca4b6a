# Spack recipe for pyimport (Package API v2, Spack 1.x).
#
# A site repository's recipe: `spack repo add packaging/spack/spack_repo/pyimport`
# (packaging/spack/README.md). tests/install/check_spack.py checks it against
# the project's real CMake options (ctest -R spack_recipe).

import os

from spack_repo.builtin.build_systems.cmake import CMakePackage

from spack.package import *


class Pyimport(CMakePackage):
    """Python start-up at scale without the metadata storm: libpyimport.so,
    preloaded into `mpiexec python app.py`, lets rank 0 read the interpreter's
    module trees once, broadcasts them to every rank over MPI and answers the
    ranks' file calls on them from memory. No MPI is needed to build: the MPI
    library is loaded at run time, picked from the launcher."""

    # PLACEHOLDERS: the project's public address is not known here. A site
    # replaces both with its mirror of the repository (or a release tarball:
    # url = ".../pyimport-0.1.0.tar.gz" with version("0.1.0", sha256=...)).
    homepage = "https://example.invalid/pyimport"
    git = "https://example.invalid/pyimport.git"

    # No license(...) directive: the project states none yet.

    version("main", branch="main")
    # A tag alone is not verifiable: once 0.1.0 is tagged, pin its commit
    # here, version("0.1.0", tag="v0.1.0", commit="<40 hex digits>"), which
    # Spack then checks, as it would a tarball's sha256.
    version("0.1.0", tag="v0.1.0")

    # The MPI libraries the shim tries after the sonames in the ld.so cache
    # (libmpi.so.12, libmpich.so.12, libmpi.so.40) when PYIMPORT_MPI_LIBRARY is
    # not set: Spack's MPIs are found by RPATH, not by the cache, so a shim
    # for a Spack MPI needs that MPI's path baked in. Nothing links to it.
    variant(
        "mpi",
        values=any_combination_of("mpich", "openmpi"),
        description="MPI libraries to load by path after the sonames (none: the sonames only)",
    )
    variant(
        "audit",
        default=True,
        description="Build libpyimport-audit.so, the loader's audit library (LD_AUDIT)",
    )
    variant("command", default=True, description="Install the pyimport command and its man pages")
    variant(
        "modulefiles",
        default=True,
        description="Install Lmod and Tcl module files (share/modulefiles)",
    )

    # A glibc LD_PRELOAD/LD_AUDIT library.
    requires("platform=linux", msg="pyimport interposes glibc's calls: Linux only")
    # The audit library is written for these two loaders' ABIs; elsewhere
    # the concretizer picks ~audit.
    requires(
        "target=x86_64:",
        "target=aarch64:",
        policy="any_of",
        when="+audit",
        msg="the loader's audit library is for x86-64 and AArch64 only (use ~audit)",
    )
    # C++20: <span>, <compare>, designated initializers (tested with GCC 12).
    conflicts("%gcc@:9", msg="pyimport is C++20: GCC 10 or newer")
    conflicts("%clang@:11", msg="pyimport is C++20: Clang 12 or newer")

    depends_on("c", type="build")
    depends_on("cxx", type="build")
    depends_on("cmake@3.25:", type="build")
    depends_on("pkgconfig", type="build")
    depends_on("libunwind")
    # XXH3 (stable since 0.8.0); found through libxxhash.pc.
    depends_on("xxhash@0.8:")
    # The pyimport command is a Python 3 script whose #! names this Python,
    # and its man page is made from it at build time.
    depends_on("python@3.6:", type=("build", "run"), when="+command")
    # Run dependencies only: their path is baked in, nothing is linked.
    depends_on("mpich", type="run", when="mpi=mpich")
    depends_on("openmpi", type="run", when="mpi=openmpi")
    # The project's own test suite (criterion, which Spack lacks, MPI
    # launchers, strace, root for mount namespaces) runs in its CI, not
    # here: BUILD_TESTING is off and there is no test dependency.

    sanity_check_is_file = [
        join_path("lib", "libpyimport.so"),
        join_path("bin", "pyimport-options"),
    ]

    def _mpi_library(self, name, sonames):
        """The file of dependency `name` the shim is to dlopen: its soname's,
        in the prefix's library directories or those Spack reports."""
        mpi = self.spec[name]
        dirs = [mpi.prefix.lib, mpi.prefix.lib64]
        try:
            dirs.extend(mpi.libs.directories)
        except Exception:  # no library by Spack's default names: the prefix's directories
            pass
        for directory in dirs:
            for soname in sonames:
                path = join_path(directory, soname)
                if os.path.isfile(path):
                    return path
        raise InstallError(f"mpi={name}: no {' or '.join(sonames)} under {mpi.prefix}")

    def cmake_args(self):
        spec = self.spec
        mpich = openmpi = ""
        if spec.satisfies("mpi=mpich"):
            mpich = self._mpi_library("mpich", ("libmpi.so.12", "libmpich.so.12"))
        if spec.satisfies("mpi=openmpi"):
            openmpi = self._mpi_library("openmpi", ("libmpi.so.40",))
        args = [
            # One layout on every distribution (GNUInstallDirs would pick
            # lib64 on RHEL): <prefix>/lib/libpyimport.so for LD_PRELOAD.
            self.define("CMAKE_INSTALL_LIBDIR", "lib"),
            # See the note on tests above.
            self.define("BUILD_TESTING", False),
            # Warnings stay warnings: a newer compiler's new one must not
            # fail an install (the project's CI builds with it on).
            self.define("PYIMPORT_WERROR", False),
            self.define_from_variant("PYIMPORT_AUDIT", "audit"),
            self.define_from_variant("PYIMPORT_COMMAND", "command"),
            self.define_from_variant("PYIMPORT_MODULEFILES", "modulefiles"),
            self.define("PYIMPORT_MPICH_LIBRARY", mpich),
            self.define("PYIMPORT_OPEN_MPI_LIBRARY", openmpi),
        ]
        if spec.satisfies("+command"):
            # The interpreter the command (its #!) and the man page generator run with.
            args.append(self.define("Python3_EXECUTABLE", spec["python"].command.path))
        return args

    # Stand-alone tests: `spack test run pyimport`.

    def test_libraries(self):
        """the libraries are installed and stay inert outside MPI ranks"""
        names = ["libpyimport.so"]
        if self.spec.satisfies("+audit"):
            names.append("libpyimport-audit.so")
        sh = which("sh", required=True)
        for name in names:
            path = join_path(self.prefix.lib, name)
            assert os.path.isfile(path), f"{path} is missing"
        env = {"LD_PRELOAD": join_path(self.prefix.lib, "libpyimport.so")}
        if self.spec.satisfies("+audit"):
            env["LD_AUDIT"] = join_path(self.prefix.lib, "libpyimport-audit.so")
        # Output and error together: "inert" and nothing else.
        out = sh("-c", "echo inert", output=str, error=str, extra_env=env)
        assert out == "inert\n", f"sh with {env} printed {out!r}"

    def test_options(self):
        """pyimport-options lists the PYIMPORT_* settings"""
        options = which(self.prefix.bin.join("pyimport-options"), required=True)
        out = options(output=str.split, error=str.split)
        assert "PYIMPORT_PREFIX" in out and "PYIMPORT_MPI_LIBRARY" in out

    def test_command(self):
        """pyimport --version runs and names the version"""
        if not self.spec.satisfies("+command"):
            raise SkipTest("built without the pyimport command (~command)")
        pyimport = which(self.prefix.bin.pyimport, required=True)
        out = pyimport("--version", output=str.split, error=str.split)
        assert "pyimport" in out, f"pyimport --version printed {out!r}"
        # A branch (@main) prints the project's version, not the branch name.
        if not self.spec.satisfies("@main"):
            assert str(self.spec.version) in out, f"pyimport --version printed {out!r}"
