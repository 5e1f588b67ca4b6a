// Which MPI-launched processes activate (startup/activation.hpp).
#include "fake_env.hpp"
#include "startup/activation.hpp"
#include "startup/local_filesystems.hpp"

#include <criterion/criterion.h>
#include <map>
#include <string>

using namespace pyimport;
using pyimport::testing::fake_env;
using pyimport::testing::g_env;

namespace {
int g_asked = 0;
bool python() {
    ++g_asked;
    return true;
}
bool not_python() {
    ++g_asked;
    return false;
}
Activation decide(std::map<std::string, std::string> env, bool (*is_python)(), std::string& error) {
    g_env = std::move(env);
    Config config;
    error.clear();
    return decide_activation(fake_env, is_python, config, error);
}
} // namespace

Test(activation, python_interpreters_activate_other_programs_stay_inert) {
    std::string error;
    cr_expect(decide({}, python, error) == Activation::Active);
    cr_expect(decide({}, not_python, error) == Activation::Inert);
    cr_expect(error.empty());
    cr_expect(decide({{"PYIMPORT_ANY_PROGRAM", "1"}}, not_python, error) == Activation::Active);
}

Test(activation, disabled_processes_stay_inert_even_with_bad_settings) {
    std::string error;
    cr_expect(decide({{"PYIMPORT_DISABLE", "1"}, {"PYIMPORT_LOG", "banana"}}, python, error) ==
              Activation::Inert);
}

Test(activation, bad_settings_of_an_interpreter_are_reported) {
    std::string error;
    cr_expect(decide({{"PYIMPORT_LOG", "banana"}}, python, error) == Activation::Misconfigured);
    cr_expect(error.find("PYIMPORT_LOG") != std::string::npos, "%s", error.c_str());
    // Other programs never speak.
    cr_expect(decide({{"PYIMPORT_LOG", "banana"}}, not_python, error) == Activation::Inert);
}

// PYIMPORT_ANY_PROGRAM was parsed outside the option table and a bad value
// was ignored silently: now it is one of the table's, and a bad value is
// reported wherever it was meant to take effect.
Test(activation, a_bad_any_program_value_is_reported_not_ignored) {
    std::string error;
    for (bool (*kind)() : {python, not_python}) {
        cr_expect(decide({{"PYIMPORT_ANY_PROGRAM", "enable"}}, kind, error) ==
                  Activation::Misconfigured);
        cr_expect(error.find("PYIMPORT_ANY_PROGRAM=\"enable\"") != std::string::npos, "%s",
                  error.c_str());
    }
}

Test(activation, the_interpreter_check_is_made_only_when_needed) {
    std::string error;
    g_asked = 0;
    decide({{"PYIMPORT_ANY_PROGRAM", "1"}}, not_python, error);
    decide({{"PYIMPORT_DISABLE", "1"}}, not_python, error);
    cr_expect_eq(g_asked, 0);
}

namespace {
bool all_open(int) {
    return true;
}
bool none_open(int) {
    return false;
}
bool launched(std::map<std::string, std::string> env, Launch& launch, std::string& why_not,
              bool (*fd_open)(int) = all_open) {
    g_env = std::move(env);
    why_not.clear();
    return launched_as_rank(fake_env, fd_open, launch, why_not);
}
} // namespace

// Each launcher is told by the variables it sets (measured: Hydra 4.0,
// Open MPI 4.1's mpirun, Slurm 22.05's srun and batch scripts).
Test(activation, each_launcher_is_recognised_with_its_rank_and_size) {
    Launch launch;
    std::string why;
    cr_assert(launched({{"PMI_RANK", "2"},
                        {"PMI_SIZE", "4"},
                        {"PMI_FD", "6"},
                        {"MPI_LOCALRANKID", "0"},
                        {"MPI_LOCALNRANKS", "2"}},
                       launch, why));
    cr_expect(launch.launcher == Launcher::hydra && launch.rank == 2 && launch.ranks == 4);
    cr_expect(!launch.pmix);
    cr_assert(launched({{"OMPI_COMM_WORLD_RANK", "1"},
                        {"OMPI_COMM_WORLD_SIZE", "3"},
                        {"PMIX_RANK", "1"},
                        {"SLURM_PROCID", "0"},
                        {"SLURM_STEP_ID", "0"}},
                       launch, why));
    cr_expect(launch.launcher == Launcher::open_mpi && launch.rank == 1 && launch.ranks == 3);
    cr_assert(launched({{"SLURM_PROCID", "3"},
                        {"SLURM_STEP_ID", "0"},
                        {"SLURM_NTASKS", "8"},
                        {"SLURM_STEP_NUM_TASKS", "4"},
                        {"PMI_RANK", "3"},
                        {"PMI_FD", "11"},
                        {"SLURM_MPI_TYPE", "pmi2"}},
                       launch, why));
    cr_expect(launch.launcher == Launcher::slurm && launch.rank == 3 && launch.ranks == 4);
    cr_expect(!launch.pmix);
    cr_assert(launched({{"SLURM_PROCID", "0"},
                        {"SLURM_STEPID", "1"},
                        {"SLURM_NTASKS", "2"},
                        {"SLURM_MPI_TYPE", "pmix"},
                        {"PMIX_RANK", "0"}},
                       launch, why));
    cr_expect(launch.launcher == Launcher::slurm && launch.ranks == 2 && launch.pmix);
    cr_assert(launched({{"PMIX_RANK", "5"}}, launch, why));
    cr_expect(launch.launcher == Launcher::other && launch.rank == 5 && launch.ranks == -1);
    cr_expect(launch.pmix && !launch.mpich_environment);
    cr_assert(launched({{"PMIX_RANK", "5"}, {"I_MPI_ROOT", "/opt/intel/mpi"}}, launch, why));
    cr_expect(launch.mpich_environment);
}

Test(activation, processes_that_are_not_ranks_stay_inert) {
    Launch launch;
    std::string why;
    cr_expect(!launched({}, launch, why));
    cr_expect_str_eq(why.c_str(), "not started by an MPI launcher");
    // A batch script's python: SLURM_PROCID=0 but no step of its own.
    cr_expect(!launched({{"SLURM_PROCID", "0"}, {"SLURM_JOB_ID", "7"}, {"SLURM_NTASKS", "4"}},
                        launch, why));
    cr_expect(why.find("batch script") != std::string::npos, "%s", why.c_str());
    cr_expect(!launched({{"PMI_RANK", "0"}, {kActiveMarker, "123"}}, launch, why));
    cr_expect(why.find("descendant") != std::string::npos);
    // A subprocess of a rank: PMI_FD is inherited as a number only.
    cr_expect(!launched({{"PMI_RANK", "0"}, {"PMI_FD", "6"}, {"MPI_LOCALRANKID", "0"}}, launch, why,
                        none_open));
    cr_expect(why.find("PMI_FD") != std::string::npos);
    cr_expect(!launched({{"PMI_RANK", "0"}, {"PMI_FD", "x6"}}, launch, why));
}

Test(activation, the_mpi_library_follows_the_launcher_unless_named) {
    Config config;
    Launch launch;
    using List = std::vector<std::string>;
    const BuiltMpiLibraries none{"", ""}; // what a build without PYIMPORT_*_LIBRARY has
    launch.launcher = Launcher::open_mpi;
    cr_expect(mpi_library_candidates(config, launch, none) == List{"libmpi.so.40"});
    launch.launcher = Launcher::hydra;
    cr_expect(mpi_library_candidates(config, launch, none) ==
              (List{"libmpi.so.12", "libmpich.so.12"}));
    launch.launcher = Launcher::slurm;
    cr_expect(mpi_library_candidates(config, launch, none) ==
              (List{"libmpi.so.12", "libmpich.so.12"}));
    launch.pmix = true; // Open MPI speaks PMIx; Debian's MPICH does not
    cr_expect(mpi_library_candidates(config, launch, none) ==
              (List{"libmpi.so.40", "libmpi.so.12", "libmpich.so.12"}));
    // An Intel MPI, Cray MPICH or MVAPICH environment under PMIx: its ABI
    // first (Open MPI loaded next to it would take over its symbols).
    launch.mpich_environment = true;
    cr_expect(mpi_library_candidates(config, launch, none) ==
              (List{"libmpi.so.12", "libmpich.so.12"}));
    config.mpi_library = "/opt/cray/libmpi_cray.so.12";
    cr_expect(mpi_library_candidates(config, launch, none) == List{"/opt/cray/libmpi_cray.so.12"});
}

Test(activation, the_builds_own_mpi_libraries_follow_their_familys_sonames) {
    Config config;
    Launch launch;
    using List = std::vector<std::string>;
    const BuiltMpiLibraries built{"/spack/mpich/lib/libmpi.so.12",
                                  "/spack/openmpi/lib/libmpi.so.40"};
    launch.launcher = Launcher::open_mpi;
    cr_expect(mpi_library_candidates(config, launch, built) ==
              (List{"libmpi.so.40", "/spack/openmpi/lib/libmpi.so.40"}));
    launch.launcher = Launcher::hydra;
    cr_expect(mpi_library_candidates(config, launch, built) ==
              (List{"libmpi.so.12", "libmpich.so.12", "/spack/mpich/lib/libmpi.so.12"}));
    launch.launcher = Launcher::slurm;
    launch.pmix = true;
    cr_expect(mpi_library_candidates(config, launch, built) ==
              (List{"libmpi.so.40", "/spack/openmpi/lib/libmpi.so.40", "libmpi.so.12",
                    "libmpich.so.12", "/spack/mpich/lib/libmpi.so.12"}));
    const BuiltMpiLibraries mpich_only{"/spack/mpich/lib/libmpi.so.12", ""};
    launch.launcher = Launcher::open_mpi;
    cr_expect(mpi_library_candidates(config, launch, mpich_only) == List{"libmpi.so.40"});
    config.mpi_library = "libmpi_cray.so.12"; // named: nothing else
    cr_expect(mpi_library_candidates(config, launch, built) == List{"libmpi_cray.so.12"});
}

Test(activation, only_srun_lets_a_job_go_on_without_a_rank) {
    Launch launch;
    for (Launcher l : {Launcher::hydra, Launcher::open_mpi, Launcher::other}) {
        launch.launcher = l;
        cr_expect(!launcher_keeps_going(launch));
    }
    launch.launcher = Launcher::slurm;
    cr_expect(launcher_keeps_going(launch));
}

// Node-local filesystems, where a job passes through (PYIMPORT_SERVE_LOCAL=0).
Test(activation, node_local_filesystems_are_known_by_type_and_others_count_as_shared) {
    cr_expect_str_eq(local_filesystem_name(0xEF53), "ext4");
    cr_expect_str_eq(local_filesystem_name(0x01021994), "tmpfs");
    cr_expect_str_eq(local_filesystem_name(0x794C7630), "overlay");
    for (long shared : {0x6969L /* NFS */, 0x0BD00BD0L /* Lustre */, 0x47504653L /* GPFS */,
                        0x19830326L /* BeeGFS */, 0x00C36400L /* CephFS */, 0x65735546L /* FUSE */})
        cr_expect_null(local_filesystem_name(shared), "0x%lx counted as local", shared);
    std::string names;
    // This machine's /tmp and /dev/shm are local (a disk, tmpfs).
    cr_expect(on_local_filesystems({"/tmp", "/dev/shm", "/no/such/path"}, names));
    cr_expect(names.find("tmpfs") != std::string::npos, "%s", names.c_str());
    // One tree elsewhere (procfs is not a local disk type): served.
    cr_expect(!on_local_filesystems({"/tmp", "/proc"}, names));
    // Nothing that exists: nothing to say it is local.
    cr_expect(!on_local_filesystems({"/no/such/path"}, names));
    cr_expect(!on_local_filesystems({}, names));
}

// What every rank checks before MPI: the trees it can name without a request.
Test(activation, likely_trees_are_named_from_the_process_alone) {
    testing::g_env = {{"PYTHONPATH", "/proj/src:relative::/more"},
                      {"VIRTUAL_ENV", "/nfs/venv"},
                      {"HOME", "/home/u"},
                      {"PYIMPORT_PREFIX", "/opt/py"}};
    using List = std::vector<std::string>;
    List trees =
        likely_trees(testing::fake_env, {"venv/bin/python", "-X", "dev", "-u", "app/run.py", "x"},
                     "/usr/bin/python3.11", "/work");
    cr_expect(trees == (List{"/usr", "/work/venv", "/nfs/venv", "/proj/src", "/more", "/opt/py",
                             "/home/u", "/work/app"}),
              "%zu trees", trees.size());
    trees =
        likely_trees(testing::fake_env, {"python3", "-c", "print(1)"}, "/usr/bin/python3.11", "/w");
    cr_expect(trees.back() == "/w" && trees.front() == "/usr",
              "-c runs from the working directory");
}

// A rank decides alone that the trees are node-local only when the launcher
// says every rank is on its node.
Test(activation, one_node_jobs_are_known_from_the_launcher) {
    auto one_node = [](std::map<std::string, std::string> env) {
        g_env = std::move(env);
        Launch launch;
        std::string why;
        cr_assert(launched_as_rank(
                      fake_env, [](int) { return true; }, launch, why),
                  "%s", why.c_str());
        return may_decide_alone(launch);
    };
    cr_expect(one_node({{"PMI_RANK", "0"},
                        {"PMI_SIZE", "4"},
                        {"MPI_LOCALRANKID", "0"},
                        {"MPI_LOCALNRANKS", "4"}}));
    cr_expect(!one_node({{"PMI_RANK", "0"},
                         {"PMI_SIZE", "4"},
                         {"MPI_LOCALRANKID", "0"},
                         {"MPI_LOCALNRANKS", "2"}}));
    cr_expect(!one_node({{"PMI_RANK", "0"}, {"PMI_SIZE", "4"}, {"MPI_LOCALRANKID", "0"}}));
    cr_expect(one_node({{"OMPI_COMM_WORLD_RANK", "1"},
                        {"OMPI_COMM_WORLD_SIZE", "2"},
                        {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}}));
    cr_expect(!one_node({{"OMPI_COMM_WORLD_RANK", "1"},
                         {"OMPI_COMM_WORLD_SIZE", "8"},
                         {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}}));
    cr_expect(one_node({{"SLURM_PROCID", "0"},
                        {"SLURM_STEP_ID", "0"},
                        {"SLURM_NTASKS", "3"},
                        {"SLURM_STEP_NUM_NODES", "1"}}));
    cr_expect(!one_node({{"SLURM_PROCID", "0"},
                         {"SLURM_STEP_ID", "0"},
                         {"SLURM_NTASKS", "3"},
                         {"SLURM_STEP_NUM_NODES", "3"},
                         {"SLURM_NNODES", "1"}}));
    cr_expect(!one_node({{"PMIX_RANK", "0"}}), "a launcher that does not say");
}
