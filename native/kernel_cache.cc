// Persistent kernel choices (see kernel_cache.h). Only this module touches the file; a process-wide map
// behind one mutex holds what was loaded or measured.
#include "kernel_cache.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "isa.h"
#include "threadpool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace vgg {
namespace {

using Entries = std::map<std::string, std::string>;

std::mutex g_mutex;
bool g_loaded = false;
Entries g_entries;

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

std::string cpu_model() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned regs[12] = {};
  if (__get_cpuid(0x80000000u, &regs[0], &regs[1], &regs[2], &regs[3]) && regs[0] >= 0x80000004u) {
    for (unsigned i = 0; i < 3; i++) __get_cpuid(0x80000002u + i, &regs[4 * i], &regs[4 * i + 1], &regs[4 * i + 2], &regs[4 * i + 3]);
    const std::string brand = trim(std::string(reinterpret_cast<const char*>(regs), sizeof regs).c_str());
    if (!brand.empty()) return brand;
  }
#endif
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string name = trim(line.substr(0, colon));
    if (name == "model name" || name == "Model" || name == "CPU part") return trim(line.substr(colon + 1));
  }
  return "unknown cpu";
}

std::string resolve_path() {
  const char* forced = std::getenv("VGG_KERNEL_CACHE");
  if (forced && *forced) return std::string(forced) == "off" ? "" : forced;
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg && *xdg) return std::string(xdg) + "/vgg-ts/conv-kernels.json";
  const char* home = std::getenv("HOME");
  if (home && *home) return std::string(home) + "/.cache/vgg-ts/conv-kernels.json";
  return "";
}

const std::string& path() {
  static const std::string p = resolve_path();
  return p;
}

void warn(const std::string& msg) { std::fprintf(stderr, "vgg-ts: warning: %s\n", msg.c_str()); }

// ---- The file format: a strict subset of JSON (an object of a version number and a string map). ----
struct Parser {
  const std::string& s;
  size_t i = 0;
  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) i++;
  }
  bool eat(char c) {
    ws();
    if (i < s.size() && s[i] == c) return ++i, true;
    return false;
  }
  bool string(std::string* out) {
    if (!eat('"')) return false;
    out->clear();
    while (i < s.size() && s[i] != '"') {
      char c = s[i++];
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c == '\\') {
        if (i >= s.size()) return false;
        c = s[i++];
        if (c == 'n') c = '\n';
        else if (c == 't') c = '\t';
        else if (c == 'r') c = '\r';
        else if (c != '"' && c != '\\' && c != '/') return false;  // \u escapes are never written
      }
      out->push_back(c);
    }
    return eat('"');
  }
  bool integer(long* out) {
    ws();
    const size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') i++;
    if (i == start || i - start > 9) return false;
    *out = std::stol(s.substr(start, i - start));
    return true;
  }
  bool entries(Entries* out) {
    if (!eat('{')) return false;
    if (eat('}')) return true;
    do {
      std::string key, value;
      if (!string(&key) || !eat(':') || !string(&value)) return false;
      (*out)[key] = value;
    } while (eat(','));
    return eat('}');
  }
  // {"version": 1, "convKernels": {...}} with the two members in either order.
  bool document(Entries* out) {
    if (!eat('{')) return false;
    bool version = false, kernels = false;
    do {
      std::string member;
      if (!string(&member) || !eat(':')) return false;
      long v = 0;
      if (member == "version" && !version) {
        if (!integer(&v) || v != 1) return false;
        version = true;
      } else if (member == "convKernels" && !kernels) {
        if (!entries(out)) return false;
        kernels = true;
      } else {
        return false;
      }
    } while (eat(','));
    if (!eat('}') || !version || !kernels) return false;
    ws();
    return i == s.size();
  }
};

std::string quote(const std::string& v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') out += '\\', out += c;
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (static_cast<unsigned char>(c) >= 0x20) out += c;
  }
  return out + "\"";
}

// Reads the file into *out. Returns false when it is missing (silently) or corrupt (with a warning).
bool read_file(Entries* out, bool warn_if_corrupt) {
  std::ifstream in(path(), std::ios::binary);
  if (!in) return false;
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();
  Entries parsed;
  Parser p{text};
  if (!p.document(&parsed)) {
    if (warn_if_corrupt)
      warn("ignoring the kernel cache " + path() + " because it is not a valid cache file (expected " +
           "{\"version\": 1, \"convKernels\": {...}}); kernels will be measured again and the file rewritten");
    return false;
  }
  *out = std::move(parsed);
  return true;
}

void write_file(const Entries& entries) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path target(path());
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  const std::string tmp = path() + ".tmp-" + std::to_string(static_cast<long>(getpid()));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << "{\n  \"version\": 1,\n  \"convKernels\": {";
    bool first = true;
    for (const auto& [k, v] : entries) {
      out << (first ? "\n    " : ",\n    ") << quote(k) << ": " << quote(v);
      first = false;
    }
    out << (first ? "}\n}\n" : "\n  }\n}\n");
    out.flush();
    if (!out) {
      static bool warned = false;
      if (!warned) warn("could not write the kernel cache " + tmp + "; kernel choices will not persist");
      warned = true;
      fs::remove(tmp, ec);
      return;
    }
  }
  fs::rename(tmp, target, ec);  // atomic: readers see the old file or the new one, never half of one
  if (ec) {
    warn("could not replace the kernel cache " + path() + ": " + ec.message());
    fs::remove(tmp, ec);
  }
}

void ensure_loaded() {
  if (g_loaded) return;
  g_loaded = true;
  if (!path().empty()) read_file(&g_entries, true);
}

}  // namespace

std::string kernel_cache_machine_key() {
  static const std::string cpu = cpu_model();
  return cpu + "|" + isa_name(active_isa()) + "|threads=" + std::to_string(num_threads());
}

std::string kernel_cache_get(const std::string& key) {
  std::lock_guard<std::mutex> lock(g_mutex);
  ensure_loaded();
  auto it = g_entries.find(key);
  return it == g_entries.end() ? "" : it->second;
}

std::string kernel_cache_put(const std::string& key, const std::string& value) {
  std::lock_guard<std::mutex> lock(g_mutex);
  ensure_loaded();
  if (path().empty()) return g_entries[key] = value;
  // Merge what other processes recorded since we loaded; a key they recorded first keeps their value.
  Entries on_disk;
  read_file(&on_disk, false);
  for (const auto& [k, v] : on_disk) g_entries.insert({k, v});
  auto it = on_disk.find(key);
  if (it != on_disk.end()) return g_entries[key] = it->second;
  g_entries[key] = value;
  write_file(g_entries);
  return value;
}

std::string kernel_cache_path() { return path(); }

}  // namespace vgg
