# The Debian package: `cpack -G DEB` in a build directory (packaging/deb/README.md).
# It holds what `cmake --install` installs, under /usr: the libraries, the
# commands (pyimport, pyimport-options, libexec/pyimport/pyimport-check), the
# header, the pkg-config module, the CMake package, the man pages and the
# module files, as configured (PYIMPORT_AUDIT, PYIMPORT_COMMAND,
# PYIMPORT_MODULEFILES). Nothing of the tests or benchmarks is
# installed, so there is one package and no components. The libraries go to
# CMAKE_INSTALL_LIBDIR, fixed at configure time: lib/<multiarch triplet>
# when configured with -DCMAKE_INSTALL_PREFIX=/usr (as Debian's own tools
# do), lib from a /usr/local configure; the loader, pkg-config and
# find_package search both.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME pyimport)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "pyimport")
# PLACEHOLDER: a real package names its maintainer here.
set(CPACK_PACKAGE_CONTACT "pyimport maintainers <pyimport@example.invalid>")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${CPACK_PACKAGE_CONTACT}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "fast Python start-up for MPI jobs (LD_PRELOAD library)")
# The synopsis is the summary; this is the extended description.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "libpyimport.so, preloaded into `mpiexec -n N python3 app.py`, lets rank 0 read
the interpreter's module trees once, broadcasts them to every rank over MPI and
answers the ranks' stat, open and readdir calls on them from memory; extension
modules and their libraries are loaded from one copy per node. Every other
process (shells, mpiexec, python3 outside MPI) is left untouched. Works with
MPICH and Open MPI, loaded at run time. libpyimport-audit.so, for LD_AUDIT,
serves the libraries the loader maps before main.")
set(CPACK_DEBIAN_PACKAGE_SECTION utils)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# Debian ships binaries stripped (their debugging information would also
# name this build's directories).
set(CPACK_STRIP_FILES ON)

# Depends: what the ELF files need, from dpkg-shlibdeps (dpkg-dev) where it
# is installed, else the libraries it finds on Debian 12; always python3,
# which the library serves and the pyimport command runs with. The MPI is
# loaded at run time, either family: recommended, not required.
find_program(PYIMPORT_DPKG_SHLIBDEPS dpkg-shlibdeps)
mark_as_advanced(PYIMPORT_DPKG_SHLIBDEPS)
if(PYIMPORT_DPKG_SHLIBDEPS)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
  set(CPACK_DEBIAN_PACKAGE_DEPENDS "python3")
else()
  set(CPACK_DEBIAN_PACKAGE_DEPENDS
      "libc6 (>= 2.34), libgcc-s1, libstdc++6 (>= 12), libunwind8, libxxhash0 (>= 0.8), python3")
endif()
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "mpich | openmpi-bin")

# The command's interpreter in the package: /usr/bin/python3.
set(CPACK_PRE_BUILD_SCRIPTS ${CMAKE_CURRENT_LIST_DIR}/python-shebang.cmake)

# `cpack --config CPackSourceConfig.cmake`: the sources without VCS files
# and in-tree build directories.
set(CPACK_SOURCE_GENERATOR TGZ)
set(CPACK_SOURCE_IGNORE_FILES "/\\.git/" "/build[^/]*/" "__pycache__/" "\\.swp$")

include(CPack)
