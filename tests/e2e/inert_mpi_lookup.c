/* A program that only looks for MPI (dlsym(RTLD_DEFAULT, "MPI_Initialized"),
 * as libraries with optional MPI support do) while another thread loads and
 * unloads libraries, under the preloaded shim but not as a rank (inert): the
 * shim's MPI_Initialized must answer "not initialised" without an MPI
 * library, and finding the real one must not deadlock with the loader.
 *   inert_mpi_lookup [LIBRARY]   LIBRARY (e.g. libmpich.so.12) is loaded
 *                                RTLD_LOCAL first, as mpi4py loads MPI. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

static atomic_int stop;

static void* load_and_unload(void* unused) {
    (void)unused;
    while (!atomic_load(&stop)) {
        void* handle = dlopen("libz.so.1", RTLD_NOW | RTLD_LOCAL);
        if (handle) dlclose(handle);
    }
    return NULL;
}

int main(int argc, char** argv) {
    if (argc > 1 && !dlopen(argv[1], RTLD_NOW | RTLD_LOCAL)) {
        printf("cannot load %s: %s\n", argv[1], dlerror());
        return 2;
    }
    int (*initialized)(int*) = (int (*)(int*))dlsym(RTLD_DEFAULT, "MPI_Initialized");
    if (!initialized) {
        printf("no MPI_Initialized\n");
        return 0;
    }
    pthread_t loader;
    pthread_create(&loader, NULL, load_and_unload, NULL);
    int bad = 0;
    for (int i = 0; i < 200; ++i) {
        int flag = -1;
        int result = initialized(&flag);
        if (result != 0 || flag != 0) {
            printf("MPI_Initialized returned %d, flag %d\n", result, flag);
            bad = 1;
            break;
        }
    }
    atomic_store(&stop, 1);
    pthread_join(loader, NULL);
    if (!bad) printf("MPI_Initialized: 0, not initialised (200 calls)\n");
    return bad;
}
