// Without MPI-4 sessions the shim initialises MPI itself, at start-up (the
// world model, transport_mpi.cpp). The application then finds MPI
// initialised before it asked; these keep its life cycle as it would be
// without the shim:
//   - its MPI_Init or MPI_Init_thread succeeds once (after the shim's own, if
//     that is still under way) and gives the thread level MPI provided;
//   - MPI_Initialized is true from then on, MPI_Finalized after its
//     MPI_Finalize;
//   - its MPI_Finalize does the shim's exit step first (collectives on the
//     shim's communicator), then the real MPI_Finalize.
// Everything here is the active process's only: a fork child, and every
// process with sessions or no active shim, gets the real functions.
#pragma once

namespace pyimport {

// From the transport, around its MPI_Init_thread and MPI_Finalize.
void world_model_initialising(void* library);
void world_model_initialised(bool ok, int provided);
void world_model_ended(int result); // MPI_Finalize returned `result`

// The answers to the application's calls (entry/mpi.cpp): `definition` is
// what the caller would have reached for `name` (real::mpi_definition), and
// only a call meant for the library the shim initialised is answered. False:
// not the shim's to answer, `definition` is called.
bool world_model_init(const void* definition, const char* name, int* provided, int* result);
bool world_model_initialized(const void* definition, const char* name, int* flag);
bool world_model_finalized(const void* definition, const char* name, int* flag);
bool world_model_finalize(const void* definition, const char* name, int* result);

// The MPI library the shim initialised (nullptr: none, or not this process).
void* world_model_library();
// Whether `handle`'s definition of `name` is the initialised library's (a
// dlsym the application's MPI life cycle must get the answers above for).
bool world_model_defines(void* handle, const char* name);

} // namespace pyimport
