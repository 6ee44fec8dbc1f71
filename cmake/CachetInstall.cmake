# Installs the libraries, headers and programs, and the files that let a
# user's project find them: find_package(cachet) with targets cachet::shm,
# cachet::client (the daemon's client), cachet::limiter (the rate limiter)
# and cachet::daemon_limiter (DaemonRateLimiter, which needs both), and
# pkg-config files of the same names: cachet, cachet-limiter and
# cachet-daemon-limiter.
include(CMakePackageConfigHelpers)

install(TARGETS cachet_shm cachet_client cachet_limiter cachet_daemon_limiter EXPORT cachetTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/shm/include/cachet ${PROJECT_SOURCE_DIR}/libclient/include/cachet
                  ${PROJECT_SOURCE_DIR}/limiter/include/cachet DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT cachetTargets NAMESPACE cachet:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/cachet)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/cachetConfig.cmake.in
  ${PROJECT_BINARY_DIR}/cachetConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/cachet)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/cachetConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/cachetConfig.cmake ${PROJECT_BINARY_DIR}/cachetConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/cachet)

file(RELATIVE_PATH CACHET_PC_TO_PREFIX "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
# One pkg-config file per library: NAME, what it is, its -l flags, and the
# pkg-config packages it builds on.
function(cachet_pkg_config PC_NAME PC_DESCRIPTION PC_LIBS PC_REQUIRES)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/cachet.pc.in ${PROJECT_BINARY_DIR}/${PC_NAME}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/${PC_NAME}.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endfunction()
cachet_pkg_config(cachet "cachet client library: cachetd client and shared-memory cache" "-lcachet -lcachet_shm" "")
cachet_pkg_config(cachet-limiter "cachet rate limiter: in process, shared memory, Redis, gossip"
                  "-lcachet_limiter -lcachet_shm" "")
cachet_pkg_config(cachet-daemon-limiter "cachet rate limiter with its counts in cachetd" "-lcachet_daemon_limiter"
                  "cachet, cachet-limiter")

# The service: cachetd.service in CACHET_SYSTEMD_UNITDIR (relative to the
# prefix; empty installs no unit) and the configuration it reads, in
# <sysconfdir>/cachet. Both name paths under the prefix the install really
# goes to (cmake --install --prefix, or /usr for the Debian package), so they
# are written at install time by CachetInstallService.cmake.
set(CACHET_SYSTEMD_UNITDIR "lib/systemd/system" CACHE STRING
    "Where cachetd.service goes, relative to the install prefix (or absolute); empty: no unit")
install(CODE "
  set(CACHET_SOURCE_DIR \"${PROJECT_SOURCE_DIR}\")
  set(CACHET_BINDIR \"${CMAKE_INSTALL_BINDIR}\")
  set(CACHET_SYSCONFDIR \"${CMAKE_INSTALL_SYSCONFDIR}\")
  set(CACHET_DOCDIR \"${CMAKE_INSTALL_DOCDIR}\")
  set(CACHET_SYSTEMD_UNITDIR \"${CACHET_SYSTEMD_UNITDIR}\")")
install(SCRIPT ${PROJECT_SOURCE_DIR}/cmake/CachetInstallService.cmake)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/docs/operations.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
