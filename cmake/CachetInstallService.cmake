# Runs at install time (install(SCRIPT) in CachetInstall.cmake), where
# CMAKE_INSTALL_PREFIX is the prefix this install really goes to: the
# configured one, cmake --install --prefix, or /usr when CPack builds the
# Debian package. Installs
#   <sysconfdir>/cachet/cachetd.conf   daemon/cachetd.conf with its ipc endpoint
#                                       in /run/cachet, the unit's runtime folder
#   <unitdir>/cachetd.service           packaging/cachetd.service.in with the
#                                       installed paths filled in
# Expects CACHET_SOURCE_DIR, CACHET_BINDIR, CACHET_SYSCONFDIR, CACHET_DOCDIR
# and CACHET_SYSTEMD_UNITDIR from the install(CODE) before it.

# An absolute directory as is; a relative one under the prefix.
function(cachet_install_path OUT DIR)
  if(IS_ABSOLUTE "${DIR}")
    set(${OUT} "${DIR}" PARENT_SCOPE)
  else()
    set(${OUT} "${CMAKE_INSTALL_PREFIX}/${DIR}" PARENT_SCOPE)
  endif()
endfunction()

# GNUInstallDirs' rule: the configuration of a /usr (or /) install is in /etc.
if(NOT IS_ABSOLUTE "${CACHET_SYSCONFDIR}" AND CMAKE_INSTALL_PREFIX MATCHES "^/(usr/?)?$")
  set(etc_dir "/etc")
else()
  cachet_install_path(etc_dir "${CACHET_SYSCONFDIR}")
endif()
cachet_install_path(CACHET_UNIT_BINDIR "${CACHET_BINDIR}")
cachet_install_path(CACHET_UNIT_DOCDIR "${CACHET_DOCDIR}")
set(CACHET_UNIT_SYSCONFDIR "${etc_dir}")

# Staged in a temporary folder of this install's own: two installs of one
# build (the test suite runs them side by side) must not write each other's
# files, and `sudo cmake --install` must leave nothing of root's in the build.
if(DEFINED ENV{TMPDIR} AND IS_DIRECTORY "$ENV{TMPDIR}")
  set(stage_parent "$ENV{TMPDIR}")
else()
  set(stage_parent "/tmp")
endif()
string(RANDOM LENGTH 12 stage_id)
set(stage "${stage_parent}/cachet-install-${stage_id}")
file(MAKE_DIRECTORY "${stage}")

# The packaged configuration is the source tree's, so every setting and
# comment added there reaches it; only the socket moves from /tmp (hidden
# from the service by PrivateTmp) to its runtime folder.
# Lines of the source tree's configuration and what the service runs
# instead: the socket in its runtime folder, and the socket and segment
# open to group cachet (the unit's group), whose members are the service's
# same-host clients.
set(replacements
    "ipc = ipc:///tmp/cachetd.sock" "ipc = ipc:///run/cachet/cachetd.sock"
    "access-mode = 0600" "access-mode = 0660"
    "access-group =" "access-group = cachet")
file(READ "${CACHET_SOURCE_DIR}/daemon/cachetd.conf" conf)
while(replacements)
  list(POP_FRONT replacements source_line service_line)
  string(FIND "${conf}" "\n${source_line}\n" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "daemon/cachetd.conf has no line '${source_line}' for the packaged configuration to replace; "
                        "update cmake/CachetInstallService.cmake with it")
  endif()
  string(REPLACE "\n${source_line}\n" "\n${service_line}\n" conf "${conf}")
endwhile()
file(WRITE "${stage}/cachetd.conf"
  "# Installed with cachet: the configuration cachetd.service runs with.\n"
  "# Clients of this host connect to ipc:///run/cachet/cachetd.sock (members of\n"
  "# group cachet) or tcp://127.0.0.1:7379; cachectl takes --endpoint or\n"
  "# $CACHET_ENDPOINT. Prometheus scrapes http://127.0.0.1:9379/metrics.\n"
  "# Apply changes with `systemctl reload cachetd`.\n"
  "#\n"
  "${conf}")
file(INSTALL "${stage}/cachetd.conf" DESTINATION "${etc_dir}/cachet" PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ
     WORLD_READ)

if(NOT CACHET_SYSTEMD_UNITDIR STREQUAL "")
  configure_file("${CACHET_SOURCE_DIR}/packaging/cachetd.service.in" "${stage}/cachetd.service" @ONLY)
  cachet_install_path(unit_dir "${CACHET_SYSTEMD_UNITDIR}")
  file(INSTALL "${stage}/cachetd.service" DESTINATION "${unit_dir}" PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ
       WORLD_READ)
endif()
file(REMOVE_RECURSE "${stage}")
