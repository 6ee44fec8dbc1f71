// CurveFiles: the key files a test needs to run cachetd with CURVE, made
// by the real `cachectl keygen` in a directory of the test's own: the
// daemon's pair, one admitted client's pair, a stranger's pair (not
// admitted) and the authorized-keys file. Removed with the object.
#pragma once

#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cachet/curve.h"
#include "child_process.h"
#include "test_util.h"

namespace cachet::testing {

class CurveFiles {
 public:
  // `access` and `prefixes`: the admitted client's line in the file.
  explicit CurveFiles(const std::string& access = "write", const std::string& prefixes = "*") {
    dir_ = "/tmp/" + UniqueSegmentName("curve");
    std::filesystem::create_directories(dir_);
    for (const char* name : {"server", "client", "stranger"}) {
      const ProgramResult made = RunProgram({CACHECTL_PATH, "keygen", dir_ + "/" + name}, std::chrono::seconds(10));
      EXPECT_EQ(made.code, 0) << made.err;
    }
    WriteAuthorized({Line(client_pub(), "client", access, prefixes)});
  }
  ~CurveFiles() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  CurveFiles(const CurveFiles&) = delete;
  CurveFiles& operator=(const CurveFiles&) = delete;

  std::string path(const std::string& file) const { return dir_ + "/" + file; }
  std::string authorized() const { return path("clients.keys"); }
  std::string client_pub() const { return PublicKey("client"); }
  std::string stranger_pub() const { return PublicKey("stranger"); }

  // cachetd's flags for CURVE with these files.
  std::vector<std::string> DaemonArgs() const {
    return {"--curve-secret-key", path("server.key"), "--curve-authorized-keys", authorized()};
  }
  // What a client named `who` ("client", "stranger") connects with.
  CurveClientKeys Keys(const std::string& who = "client") const {
    auto keys = CurveClientKeys::Load(path("server.pub"), path(who + ".key"));
    EXPECT_TRUE(keys.has_value()) << keys.error().ToString();
    return keys ? *keys : CurveClientKeys{};
  }
  // cachectl's flags for `who`.
  std::vector<std::string> CachectlArgs(const std::string& who = "client") const {
    return {"--server-key", path("server.pub"), "--key", path(who + ".key")};
  }

  static std::string Line(const std::string& key, const std::string& name, const std::string& access = "write",
                          const std::string& prefixes = "*") {
    return key + " " + name + " " + access + " " + prefixes;
  }
  void WriteAuthorized(const std::vector<std::string>& lines) const {
    std::ofstream out(authorized());
    out << "# public key, name, access, prefixes\n";
    for (const std::string& line : lines) out << line << "\n";
  }

 private:
  std::string PublicKey(const std::string& who) const {
    auto keys = ReadCurveKeyFile(path(who + ".pub"), false);
    EXPECT_TRUE(keys.has_value()) << keys.error().ToString();
    return keys ? keys->public_key : "";
  }

  std::string dir_;
};

}  // namespace cachet::testing
