# The module files (packaging/modulefiles) under the real module systems:
# Debian's Lmod and environment-modules (scripts/install-modules.sh installs
# them). Each installs the build tree into a fresh prefix, loads the module
# in a clean environment, runs an MPI job and login-shell programs, unloads.
if(PYIMPORT_MODULEFILES)
  foreach(tool lmod tcl)
    add_test(NAME modules_${tool}
             COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/check_modules.sh ${PROJECT_BINARY_DIR} ${tool}
                     ${CMAKE_INSTALL_LIBDIR} ${CMAKE_INSTALL_BINDIR} ${CMAKE_INSTALL_MANDIR} ${CMAKE_INSTALL_DATADIR})
    set_tests_properties(modules_${tool} PROPERTIES LABELS "install" TIMEOUT 300)
  endforeach()
endif()
