# cachet_build_flags: a private interface target every cachet target links,
# carrying warnings and sanitizer flags. Global flags are never edited.
add_library(cachet_build_flags INTERFACE)
target_compile_features(cachet_build_flags INTERFACE cxx_std_20)
target_compile_options(cachet_build_flags INTERFACE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
                                                    -Wold-style-cast -Wcast-align -Woverloaded-virtual
                                                    -fno-semantic-interposition
                                                    $<$<CXX_COMPILER_ID:GNU>:-Wno-restrict>)  # GCC 12 false positives (PR 105651)
if(CACHET_WERROR)
  target_compile_options(cachet_build_flags INTERFACE -Werror)
endif()

# Fuzzing: every cachet target gets libFuzzer's coverage instrumentation
# (fuzzer-no-link); only the fuzz targets link libFuzzer itself
# (tests/fuzz/CMakeLists.txt). Findings are sanitizer reports, so ASan and
# UBSan are on unless CACHET_SANITIZE names others.
if(CACHET_BUILD_FUZZERS)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "CACHET_BUILD_FUZZERS needs clang, for libFuzzer; this build's compiler is "
                        "${CMAKE_CXX_COMPILER_ID}. Configure a tree of its own with -DCMAKE_CXX_COMPILER=clang++ "
                        "(tests/fuzz/run.sh does).")
  endif()
  if(NOT CACHET_SANITIZE)
    set(CACHET_SANITIZE "address,undefined")
  endif()
  target_compile_options(cachet_build_flags INTERFACE -fsanitize=fuzzer-no-link)
endif()

if(CACHET_SANITIZE)
  string(REPLACE "," ";" _cachet_sanitizers "${CACHET_SANITIZE}")
  foreach(_san IN LISTS _cachet_sanitizers)
    if(NOT _san MATCHES "^(address|undefined|thread)$")
      message(FATAL_ERROR "CACHET_SANITIZE: unknown sanitizer '${_san}' (use address, undefined, thread)")
    endif()
  endforeach()
  if("thread" IN_LIST _cachet_sanitizers AND "address" IN_LIST _cachet_sanitizers)
    message(FATAL_ERROR "CACHET_SANITIZE: thread and address cannot be combined")
  endif()
  string(REPLACE ";" "," _cachet_san_flag "${_cachet_sanitizers}")
  target_compile_options(cachet_build_flags INTERFACE -fsanitize=${_cachet_san_flag} -fno-omit-frame-pointer
                                                      -fno-sanitize-recover=all)
  target_link_options(cachet_build_flags INTERFACE -fsanitize=${_cachet_san_flag})
  if("thread" IN_LIST _cachet_sanitizers AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # GCC warns that TSan does not model atomic_thread_fence. The seqlock-style
    # reads use fences only to order relaxed atomics, so TSan sees no data race
    # either way; it just cannot prove the ordering.
    target_compile_options(cachet_build_flags INTERFACE -Wno-tsan)
  endif()
endif()
