// Fuzz target: cachetd's configuration file (daemon/config.h, ParseConfig
// reading the file --config names). The input is the file's text, served
// from a memfd so no disk is touched. Any text must give a config that
// passes Validate or one line of error: never a crash or an exception.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "config.h"

namespace {

using namespace cachet::daemon;

// The file ParseConfig reads: /proc/self/fd/N of one memfd, rewritten per input.
struct ConfigFile {
  int fd = memfd_create("cachet-fuzz-config", 0);
  std::string path = "/proc/self/fd/" + std::to_string(fd);

  ConfigFile() {
    if (fd < 0) {
      std::perror("memfd_create");
      std::abort();
    }
  }
  void Write(const uint8_t* data, size_t size) {
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) {
      std::perror("memfd write");
      std::abort();
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static ConfigFile file;
  file.Write(data, size);
  auto parsed = ParseConfig({"--config", file.path});
  if (!parsed) return 0;
  const DaemonConfig& config = parsed->config;
  if (!config.Validate()) {
    std::fprintf(stderr, "ParseConfig returned a config that fails Validate\n");
    std::abort();
  }
  (void)config.CacheOptionsFor();
  (void)config.EffectiveMaxFrame();
  (void)RestartOnlyChanges(DaemonConfig{}, config);
  // A setting given on the command line wins over the file.
  auto overridden = ParseConfig({"--config", file.path, "--log-level", "off"});
  if (!overridden || overridden->config.log_level != "off") {
    std::fprintf(stderr, "a command-line flag did not win over the file\n");
    std::abort();
  }
  return 0;
}
