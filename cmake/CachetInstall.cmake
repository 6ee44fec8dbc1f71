# Installs the libraries, headers and programs, and the files that let a
# user's project find them: find_package(cachet) with targets cachet::client
# and cachet::shm, and a pkg-config file (pkg-config --cflags --libs cachet).
include(CMakePackageConfigHelpers)

install(TARGETS cachet_shm cachet_client EXPORT cachetTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/shm/include/cachet ${PROJECT_SOURCE_DIR}/libclient/include/cachet
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT cachetTargets NAMESPACE cachet:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/cachet)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/cachetConfig.cmake.in
  ${PROJECT_BINARY_DIR}/cachetConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/cachet)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/cachetConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/cachetConfig.cmake ${PROJECT_BINARY_DIR}/cachetConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/cachet)

file(RELATIVE_PATH CACHET_PC_TO_PREFIX "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
configure_file(${PROJECT_SOURCE_DIR}/cmake/cachet.pc.in ${PROJECT_BINARY_DIR}/cachet.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/cachet.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
install(FILES ${PROJECT_SOURCE_DIR}/daemon/cachetd.conf DESTINATION ${CMAKE_INSTALL_SYSCONFDIR}/cachet)
