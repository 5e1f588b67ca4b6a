// Synthetic directory streams: the DIR* a served opendir() returns, reading a
// snapshot listing. They live in one reserved arena, so that the entry
// points recognise them by address in any process state (a fork child that
// inherited one still reads it correctly).
#pragma once

#include "image/image.hpp"

#include <cstdint>
#include <dirent.h>

namespace pyimport {

struct DirStream;

// A stream over the listing of directory `entry` of `snapshot` (which must
// outlive it), holding `fd`: the descriptor reserved for it, which dir_fd()
// turns into the real directory and dir_close() closes. nullptr if the arena
// is full or cannot be mapped.
DIR* make_dir_stream(const Snapshot& snapshot, uint32_t entry, int fd);

// Whether `dir` is a synthetic stream (by address: never dereferenced).
bool is_dir_stream(const void* dir);

// Directory stream operations on a synthetic DIR*.
struct dirent64* dir_read(DIR* dir);
void dir_rewind(DIR* dir);
long dir_tell(DIR* dir);
void dir_seek(DIR* dir, long pos);
int dir_close(DIR* dir);
int dir_fd(DIR* dir);

} // namespace pyimport
