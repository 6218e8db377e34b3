// A small persistent record of measured kernel choices (e.g. Winograd or im2col for one conv shape), so
// the first measurement on a machine decides for every later process: the same seed then gives the same
// weights run after run, and a resumed run matches an uninterrupted one.
// The file is JSON, {"version": 1, "convKernels": {"<key>": "<choice>", ...}}, at $VGG_KERNEL_CACHE, else
// $XDG_CACHE_HOME/vgg-ts/conv-kernels.json, else ~/.cache/vgg-ts/conv-kernels.json. Keys name the CPU model,
// the instruction set and the thread count, so one file can serve several machines sharing a home folder.
#pragma once
#include <string>

namespace vgg {

/** "<cpu model>|<isa>|threads=<n>": the part of every key that names the machine and configuration. */
std::string kernel_cache_machine_key();
/** The value recorded for key (loading the file on first use), or "" when none is. */
std::string kernel_cache_get(const std::string& key);
// Records key = value and rewrites the file atomically (temp file + rename), merged with what other
// processes wrote meanwhile. If another process recorded the key first, its value wins and is returned.
std::string kernel_cache_put(const std::string& key, const std::string& value);
/** The file in use ("" when persistence is off: VGG_KERNEL_CACHE=off or no home folder). */
std::string kernel_cache_path();

}  // namespace vgg
