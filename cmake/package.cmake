# package.cmake: install rules of the plain CMake build (the wheel has its own, in CMakeLists.txt):
# `cmake --install` puts libmixrt.so with its SONAME, include/mixrt/mixrt.h, the CMake package
# (find_package(mixrt) -> mixrt::mixrt) and the pkg-config file mixrt.pc under the prefix.
# All of them find the prefix from where they lie, so `cmake --install --prefix DIR` works too.
# Tested by tests/test_c_package.py.
include(CMakePackageConfigHelpers)

# While the major version is 0 every minor release may change the ABI: SONAME libmixrt.so.0.1.
set_target_properties(mixrt PROPERTIES
  VERSION ${PROJECT_VERSION}
  SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})

install(TARGETS mixrt EXPORT mixrtTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES cpp/include/mixrt/mixrt.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/mixrt)

# ---- CMake package: find_package(mixrt 0.1) + target_link_libraries(app PRIVATE mixrt::mixrt) --
set(MIXRT_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/mixrt)
install(EXPORT mixrtTargets NAMESPACE mixrt:: DESTINATION ${MIXRT_CMAKE_DIR})
configure_package_config_file(cmake/mixrtConfig.cmake.in ${PROJECT_BINARY_DIR}/mixrtConfig.cmake
  INSTALL_DESTINATION ${MIXRT_CMAKE_DIR})
# Same major.minor only, like the SONAME: find_package(mixrt 0.1) accepts 0.1.x, not 0.2.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/mixrtConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/mixrtConfig.cmake ${PROJECT_BINARY_DIR}/mixrtConfigVersion.cmake
  DESTINATION ${MIXRT_CMAKE_DIR})

# ---- pkg-config: `pkg-config --cflags --libs mixrt` -------------------------------------------
# The prefix is taken relative to the .pc file's own directory (${pcfiledir}); absolute
# CMAKE_INSTALL_LIBDIR / INCLUDEDIR values are written as they are.
file(RELATIVE_PATH MIXRT_PC_TO_PREFIX ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
string(REGEX REPLACE "/$" "" MIXRT_PC_TO_PREFIX "${MIXRT_PC_TO_PREFIX}")  # "../.." rather than "../../"
foreach(dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${dir}}")
    set(MIXRT_PC_${dir} "${CMAKE_INSTALL_${dir}}")
  else()
    set(MIXRT_PC_${dir} "\${prefix}/${CMAKE_INSTALL_${dir}}")
  endif()
endforeach()
configure_file(cmake/mixrt.pc.in ${PROJECT_BINARY_DIR}/mixrt.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/mixrt.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
