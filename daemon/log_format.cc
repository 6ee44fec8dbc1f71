#include "log_format.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/spdlog.h>

#include <memory>

namespace cachet::daemon {

namespace {

// %* in the pattern: the message as the inside of a JSON string.
class JsonMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    static constexpr char kHex[] = "0123456789abcdef";
    for (const char c : msg.payload) {
      const auto byte = static_cast<unsigned char>(c);
      switch (c) {
        case '"': Append(dest, "\\\""); break;
        case '\\': Append(dest, "\\\\"); break;
        case '\n': Append(dest, "\\n"); break;
        case '\r': Append(dest, "\\r"); break;
        case '\t': Append(dest, "\\t"); break;
        default:
          if (byte < 0x20 || byte == 0x7f) {
            const char escaped[] = {'\\', 'u', '0', '0', kHex[byte >> 4], kHex[byte & 0xf]};
            dest.append(escaped, escaped + sizeof escaped);
          } else {
            dest.push_back(c);
          }
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<JsonMessage>(); }

 private:
  static void Append(spdlog::memory_buf_t& dest, const char* text) {
    dest.append(text, text + std::char_traits<char>::length(text));
  }
};

}  // namespace

void SetLogFormat(spdlog::logger& log, const std::string& format) {
  if (format == "json") {
    auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    formatter->add_flag<JsonMessage>('*').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l","pid":%P,"msg":"%*"})");
    log.set_formatter(std::move(formatter));
  } else {
    log.set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ cachetd[%P] %v");
  }
}

}  // namespace cachet::daemon
