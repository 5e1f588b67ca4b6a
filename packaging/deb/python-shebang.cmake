# CPack pre-build script (CPACK_PRE_BUILD_SCRIPTS, packaging/deb/cpack.cmake):
# in the staged package, the pyimport command runs with Debian's python3,
# the interpreter the package depends on, whichever Python the build was
# configured with (Python3_EXECUTABLE: a pyenv or venv interpreter would
# not exist on the machines installing the package), as dh_python3 does.
file(GLOB_RECURSE commands "${CPACK_TEMPORARY_INSTALL_DIRECTORY}/*/bin/pyimport")
foreach(command IN LISTS commands)
  file(READ "${command}" text)
  if(text MATCHES "^#![^\n]*\n")
    string(REGEX REPLACE "^#![^\n]*\n" "#!/usr/bin/python3\n" text "${text}")
    file(WRITE "${command}" "${text}")
  endif()
endforeach()
