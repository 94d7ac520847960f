# What `cmake --install` puts in place for programs that use libshmlease:
#   lib/libshmlease.a, lib/libshmlease_common.a   the client library and the protocol code it needs
#   include/shmlease/*.hpp                        the public headers of client/ and common/ (never
#                                                 common/internal: the wire protocol is not API)
#   lib/cmake/shmlease/                           find_package(shmlease CONFIG) -> shmlease::client
#   lib/pkgconfig/shmlease.pc                     pkg-config --cflags --libs shmlease
# (lib is CMAKE_INSTALL_LIBDIR.) The daemon, the CLI, the Python module and the service files are
# installed by their own folders. The pkg-config file and the service files name the prefix
# chosen at configure time (CMAKE_INSTALL_PREFIX), so choose it then, not with --prefix later.
include(CMakePackageConfigHelpers)

set(SHMLEASE_CMAKE_PACKAGE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/shmlease")

# libshmlease is static by default; shmlease_common always is, and is installed with it so that
# an installed libshmlease.a can be linked.
install(TARGETS shmlease_client shmlease_common
        EXPORT shmleaseTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/client/include/shmlease
                  ${PROJECT_SOURCE_DIR}/common/include/shmlease
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.hpp" PATTERN "*.h")

install(EXPORT shmleaseTargets
        NAMESPACE shmlease::
        DESTINATION ${SHMLEASE_CMAKE_PACKAGE_DIR})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/shmleaseConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/shmleaseConfig.cmake
                              INSTALL_DESTINATION ${SHMLEASE_CMAKE_PACKAGE_DIR})
# 0.x: a minor version may change the API, so only the same minor version is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/shmleaseConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/shmleaseConfig.cmake
              ${PROJECT_BINARY_DIR}/shmleaseConfigVersion.cmake
        DESTINATION ${SHMLEASE_CMAKE_PACKAGE_DIR})

configure_file(${CMAKE_CURRENT_LIST_DIR}/shmlease.pc.in ${PROJECT_BINARY_DIR}/shmlease.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/shmlease.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
