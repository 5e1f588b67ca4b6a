// The profile: which paths under the prefixes a program's job used, kept
// between jobs so that rank 0 stats and reads only those (plus every listing
// on their way) instead of whole trees. What a job uses beyond its profile is
// forwarded, recorded, and added for the next job. A profile only selects
// what is cached: answers always come from the files as they are now.
#pragma once

#include <functional>
#include <string>
#include <unordered_set>
#include <vector>

namespace pyimport {

using PathSet = std::unordered_set<std::string>;

// What identifies "the same program" for a Python command line (argv without
// argv[0]): the script's path, or "-c" and the code, or "-m" and the module;
// interpreter options and the script's own arguments do not count.
std::string program_identity(const std::vector<std::string>& args);

// This process's command line, argv[0] first (/proc/self/cmdline).
std::vector<std::string> own_command_line();

// File name of the profile in `dir` for this user, executable, program and
// prefixes.
std::string profile_file(const std::string& dir, const std::string& executable,
                         const std::string& program, const std::vector<std::string>& prefixes);

// Reads a profile. A missing or unreadable file is an empty profile (true;
// `error` says why it could not be read, if it exists); a malformed one is
// false with a one-line reason.
bool read_profile(const std::string& file, PathSet& paths, std::string& error);

// Parses a profile's text (read_profile without the file).
bool parse_profile(std::string_view text, const std::string& file, PathSet& paths,
                   std::string& error);

// Writes atomically (a temporary file renamed over it), creating the
// directory private to the user (0700) if needed, and removes the
// directory's profiles that no job has written for kProfileMaxAgeDays.
bool write_profile(const std::string& file, const PathSet& paths, std::string& error);
inline constexpr int kProfileMaxAgeDays = 60;

// The profiles' directory for PYIMPORT_PROFILE's value: "off" is "" (none),
// "auto" $XDG_CACHE_HOME/pyimport or ~/.cache/pyimport (read through
// `lookup`, getenv in production), anything else itself.
std::string profile_directory(const std::string& setting, const char* (*lookup)(const char*));

// A program's profile as the job found it at start.
struct ProgramProfile {
    std::string file;
    PathSet paths;
};

// At exit: the profile's paths that `still_there` confirms, and what this
// job `used`, written back if that changed anything. False with a reason if
// it could not be written.
bool update_profile(const ProgramProfile& profile, PathSet used,
                    const std::function<bool(const std::string&)>& still_there, std::string& error);

// Paths outside the prefixes a job looked at, kept in the profile so that the
// next job answers them (a layout nobody foresaw still converges): files the
// import system asks about by name (.py, .pyc, .so, .pth, ._pth, .zip,
// pyvenv.cfg ...), and directories it listed. Never under /proc, /sys, /dev
// or /run.
bool learnable_outside(std::string_view absolute_path, bool listed);
// Of those, the ones answered as single paths (the rest are directories).
bool import_file_name(std::string_view path);

// "/a/b/./c//d/../e" -> "/a/b/c"; stops at the first ".." (it cannot be
// undone without the filesystem) and returns what came before.
std::string lexically_tidy(std::string_view absolute_path);

} // namespace pyimport
