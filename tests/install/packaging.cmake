# The Spack recipe, the Debian package and every build type (label install).

# The recipe (packaging/spack/.../pyimport/package.py) over a stub of Spack's
# package API: its dependencies are Spack's packages, its cmake_args() for
# several variant combinations configure this project and use only its
# options, its stand-alone tests pass on this build installed.
add_test(NAME spack_recipe
         COMMAND ${PYIMPORT_TEST_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/check_spack.py ${PROJECT_SOURCE_DIR}
                 ${PROJECT_SOURCE_DIR}/packaging/spack/spack_repo/pyimport/packages/pyimport/package.py
                 --build ${PROJECT_BINARY_DIR})
set_tests_properties(spack_recipe PROPERTIES LABELS "install" TIMEOUT 300)

# cpack -G DEB in this build directory: the control fields, the files, a
# simulated dpkg -i, and the extracted library serving a 2-rank MPICH job.
add_test(NAME deb_package
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/check_deb.sh ${PROJECT_BINARY_DIR} ${PYIMPORT_TEST_PYTHON}
                 ${MPIEXEC_PROGRAM})
set_tests_properties(deb_package PROPERTIES LABELS "install" TIMEOUT 300)

# A build type from scratch as packagers build (no PYIMPORT_WERROR, no
# tests): no compiler warning, installed libraries inert. `empty` is
# -DCMAKE_BUILD_TYPE=. A type this build directory compiles with the same
# flags but -Werror (RelWithDebInfo and empty, in scripts/test.sh's build)
# is covered by it and only configured. Release and Debug are built with
# -Werror by scripts/test.sh's mpich-only and asan stages, so this builds
# MinSizeRel alone (about 100 s on 2 cores; check_build_types.sh takes any).
add_test(NAME build_types
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/check_build_types.sh ${PROJECT_SOURCE_DIR} ${PYIMPORT_TEST_PYTHON}
                 --covered-by ${PROJECT_BINARY_DIR} MinSizeRel RelWithDebInfo empty)
set_tests_properties(build_types PROPERTIES LABELS "install" TIMEOUT 1200 PROCESSORS 2)
