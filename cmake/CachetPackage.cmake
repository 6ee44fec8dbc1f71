# `cpack -G DEB` in the build folder makes cachet_<version>-<release>_<arch>.deb:
# everything `cmake --install` places, under /usr, with the configuration in
# /etc/cachet (a conffile), the unit in /usr/lib/systemd/system, and
# maintainer scripts that make the `cachet` system user and enable and start
# cachetd.service as Debian's daemon packages do (packaging/deb/). Needs
# dpkg-dev (dpkg-shlibdeps works out the dependencies) and is run by
# tests/integration/deb_package_test.sh.
set(CACHET_PACKAGE_MAINTAINER "Seed 8b18c181 maintainers <maintainers@users.noreply.r-seed-8b18c181.example>"
    CACHE STRING "Maintainer field of the Debian package")
set(CACHET_PACKAGE_RELEASE "1" CACHE STRING "Debian revision of the package (the part after the version's dash)")

set(CPACK_GENERATOR "DEB")
set(CPACK_PACKAGE_NAME "cachet")
set(CPACK_PACKAGE_VENDOR "cachet")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_CONTACT "${CACHET_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "shared-memory cache daemon, client library and rate limiter")
string(JOIN "\n" CPACK_PACKAGE_DESCRIPTION
  "cachetd keeps a key-value cache (TTL per key, a capacity in bytes and"
  "entries, S3-FIFO eviction) in a shared-memory segment that processes on"
  "the same host read without a syscall, and serves everything else over"
  "ZeroMQ. This package holds cachetd with its systemd unit and"
  "configuration, the cachectl command line, and the client and rate-limiter"
  "libraries with their headers, CMake package and pkg-config files.")
# The configuration goes to /etc, outside the prefix: install through DESTDIR,
# with the prefix /usr whatever the build was configured with.
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr")
set(CPACK_INSTALL_PREFIX "/usr")
set(CPACK_SET_DESTDIR ON)
set(CPACK_STRIP_FILES ON)

set(CPACK_DEBIAN_PACKAGE_NAME "cachet")
set(CPACK_DEBIAN_PACKAGE_RELEASE "${CACHET_PACKAGE_RELEASE}")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${CACHET_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION "database")
set(CPACK_DEBIAN_PACKAGE_PRIORITY "optional")
# adduser for the postinst; the libraries' packages come from dpkg-shlibdeps.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# A shlibs file, so packages built against libcachet depend on this one.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    "${PROJECT_SOURCE_DIR}/packaging/deb/conffiles;${PROJECT_SOURCE_DIR}/packaging/deb/postinst;${PROJECT_SOURCE_DIR}/packaging/deb/prerm;${PROJECT_SOURCE_DIR}/packaging/deb/postrm;${PROJECT_SOURCE_DIR}/packaging/deb/triggers")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

include(CPack)
