#!/usr/bin/env python3
"""Hydra over three emulated nodes: one snapshot, one image and one library
mirror per node.

    cluster_hydra.py --shim build/shim/libpyimport.so --mpiexec mpiexec.hydra \\
                     --python /usr/bin/python3

The nodes are host names n1 n2 n3 (tests/cluster/hosts puts them in
/etc/hosts for the test's duration) reached through tests/cluster/fakessh:
every node's Hydra proxy runs in a mount namespace of its own with a private
tmpfs on /dev/shm. Every job is

    mpiexec.hydra -launcher ssh -launcher-exec tests/cluster/fakessh \\
                  -hosts n1:1,n2:2,n3:1 -n 4 ...

so rank 0 is on n1, ranks 1 and 2 on n2, rank 3 on n3. Checked:

  workload  tests/e2e/workload.py without and with the shim (PYIMPORT_LOG=1,
            PYIMPORT_STATS=1): per-rank stdout, stderr (but for the pyimport
            lines) and exit code identical; one snapshot: one "built the
            snapshot" line in the job (rank 0's), every rank serving the same
            entries from its node's copy, the summary "shared with 4 ranks";
            one node leader per node wrote the libraries (3 lines).
  strace    the workload (WORKLOAD_NO_WRITE=1) under strace on every rank,
            without and with the shim (PYIMPORT_PROFILE=off, as
            e2e_strace_count): stdout identical; the calls of all ranks under
            the interpreter's prefixes divided by the busiest rank's: >= 3
            without the shim (the count works), <= 1.05 with it.
  nodes     cluster_app.py (numpy, scipy.linalg) with --pause: while every
            rank waits, each node's /dev/shm is looked at from inside its
            namespace (nsenter): exactly one mirror directory per node; the
            ranks of a node map libraries from that directory only, and all
            map one image memory file (same device and inode in
            /proc/PID/maps; a different one on every node); the node's
            /dev/shm usage is one set of library copies (the distinct files'
            pages; the loaded ones hard links as large as their originals;
            the same set on every node whatever its rank count) plus the MPI
            library's own files there (deleted shared memory segments the
            ranks map, UCX's); printed per node. When each proxy ends,
            just before its namespace goes, the node's /dev/shm holds no file
            and no job directory (the last rank removed the mirror).
  libpython a pyenv CPython (shared libpython) with the loader's audit
            library too (LD_AUDIT, libpyimport-audit.so beside the shim),
            under strace on every rank: output identical to the job without
            either library; libpython is read from its prefix once per node:
            the node's first process opens it twice (its loader, its copy to
            the node directory), the others not at all (6 opens in the job,
            4 without the libraries, one per rank).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster_lib as C  # noqa: E402
import e2e_lib as L  # noqa: E402
import run_workload as RW  # noqa: E402
import strace_count as SC  # noqa: E402

SUBCOMMANDS = ["workload", "strace", "nodes", "libpython"]
HOSTS_SPEC = "n1:1,n2:2,n3:1"
NRANKS = 4
NODE_OF_RANK = {0: "n1", 1: "n2", 2: "n2", 3: "n3"}
PAGE = 4096


def hydra(label, args, wd, prog, env, timeout=L.RUN_TIMEOUT):
    d = wd.sub(label)
    fk = os.path.join(d, "fakessh")
    os.mkdir(fk)
    argv = C.hydra_nodes_argv(args, HOSTS_SPEC, NRANKS, d) + list(prog)
    res = L.run(label, argv, C.fakessh_env(env, fk), cwd=d, timeout=timeout, rank_dir=d,
                nranks=NRANKS)
    res.fakessh = fk
    return res


def check_through_nodes(chk, res):
    """Hydra started one proxy per node, each through fakessh."""
    log = L.read(os.path.join(res.fakessh, "log"))
    hosts = sorted(l.split(" host=")[1].split()[0] for l in log.splitlines() if " host=" in l)
    chk.ok(hosts == list(C.NODES), "%s: one proxy per node through fakessh (hosts %s)"
           % (res.label, hosts), log)


def test_workload(chk, args, wd):
    print("\n== workload.py over n1:1,n2:2,n3:1, without and with the shim")
    env = RW.workload_env(args, wd, "plain")
    base = hydra("nodes-workload-noshim", args, wd, [args.python, L.WORKLOAD], env)
    check_through_nodes(chk, base)
    L.sanity_rank_output(chk, base, NRANKS)
    chk.ok(base.rc == 0, "baseline exit code 0", base.describe())
    env = RW.workload_env(args, wd, "shim")
    shim = hydra("nodes-workload-shim", args, wd, [args.python, L.WORKLOAD],
                 L.with_shim(env, args.shim, PYIMPORT_LOG=1, PYIMPORT_STATS=1))
    C.compare(chk, base, shim, NRANKS, "(3 nodes, PYIMPORT_LOG=1 PYIMPORT_STATS=1)", logged=True)
    C.check_one_snapshot(chk, shim, NRANKS, "3 nodes")
    wrote = [r for r in range(NRANKS) if "wrote the libraries to" in shim.rank_err(r)]
    chk.ok(wrote == [0, 1, 3] or (len(wrote) == 3 and
                                  len({NODE_OF_RANK[r] for r in wrote}) == 3),
           "one rank per node wrote the node's library copies (ranks %s)" % wrote,
           "\n".join(C.pyimport_lines(shim.rank_err(r))[0] if C.pyimport_lines(shim.rank_err(r))
                     else "rank %d: -" % r for r in range(NRANKS)))
    for r in range(NRANKS):
        chk.ok("running uncached" not in shim.rank_err(r), "rank %d runs served" % r,
               shim.rank_err(r))


def test_strace(chk, args, wd):
    print("\n== workload.py under strace on every rank, over n1:1,n2:2,n3:1")
    chk.ok(bool(C.have("strace")), "strace is installed")
    env, _ = L.read_only_workload_env(wd, "strace-pythonpath", NRANKS, args.python)
    prefixes = SC.get_prefixes(args, env)
    runs = {}
    for label, shim_env in (("noshim", None),
                            ("shim", {"LD_PRELOAD": args.shim, "PYIMPORT_STATS": "1",
                                      "PYIMPORT_RECHECK": "0", "PYIMPORT_PROFILE": "off",
                                      "PYIMPORT_CONTENT": ".py,.pyc,.pth,.txt"})):
        e = dict(env)
        e["WORKLOAD_OUT"] = facts = wd.sub("strace-facts-" + label)
        traces = wd.sub("strace-traces-" + label)
        res = hydra("nodes-strace-" + label, args, wd,
                    C.traced([args.python, L.WORKLOAD], traces, shim_env), e,
                    timeout=SC.STRACE_TIMEOUT)
        analysis = SC.analyse(traces, facts, prefixes)
        runs[label] = (res, analysis)
        SC.report(label, analysis)
    (base, ba), (shim, sa) = runs["noshim"], runs["shim"]
    L.sanity_rank_output(chk, base, NRANKS)
    L.compare_runs(chk, base, shim, NRANKS, "(under strace, 3 nodes)", check_stderr=False)
    for r in range(NRANKS):
        chk.ok(sa[r] is not None and ba[r] is not None, "rank %d: pid file and trace found" % r)
    bratio, bcounts = C.call_ratio(ba)
    sratio, scounts = C.call_ratio(sa)
    print("  calls under the prefixes per rank: without the shim %s (all/busiest %.3f), with it "
          "%s (all/busiest %.3f)" % (bcounts, bratio, scounts, sratio))
    chk.ok(bratio >= 3.0, "without the shim, all ranks' calls under the prefixes / the busiest "
           "rank's >= 3 (the count works; got %.3f)" % bratio)
    detail = "\n".join("rank %d:\n%s" % (r, L.indent("\n".join(SC.by_path(
        sa[r]["import"] + sa[r]["allowed"])[:40]))) for r in range(1, NRANKS) if sa[r])
    chk.ok(sratio <= 1.05, "with the shim, all ranks' calls under the prefixes / the busiest "
           "rank's <= 1.05 (got %.3f)" % sratio, detail)


def test_libpython(chk, args, wd):
    import glob
    import loader_audit as LA
    print("\n== a shared libpython over n1:1,n2:2,n3:1, with the loader's audit library")
    pythons = LA.pyenv_pythons()
    if not chk.ok(bool(pythons), "a pyenv CPython is installed"):
        return
    version, python, prefix = pythons[-1]
    audit = os.path.join(os.path.dirname(args.shim), "libpyimport-audit.so")
    app = os.path.join(wd.sub("libpython-app"), "app.py")
    with open(app, "w") as f:
        f.write(LA.STDLIB_APP)
    runs = {}
    for label, libs in (("plain", []), ("libs", ["LD_AUDIT=" + audit, "LD_PRELOAD=" + args.shim,
                                                 "PYIMPORT_LOG=1"])):
        traces = wd.sub("libpython-traces-" + label)
        # -D: the rank stays the child of its node's proxy.
        prog = ["strace", "-D", "-ff", "-qq", "-y", "-o", os.path.join(traces, "trace"),
                "-e", "trace=openat,open", "env"] + libs + [python, app]
        res = hydra("libpython-" + label, args, wd, prog, L.base_env())
        opens = []
        for f in sorted(glob.glob(os.path.join(traces, "trace.*"))):
            for line in open(f, errors="replace"):
                path = line.split(",")[1].strip() if line.startswith("openat(") else ""
                if path.startswith('"' + prefix + "/") and "/libpython" in path and \
                        "= -1" not in line:
                    opens.append(os.path.basename(f) + ": " + line.strip()[:200])
        runs[label] = (res, opens)
    (base, base_list), (libs, lib_list) = runs["plain"], runs["libs"]
    base_opens, lib_opens = len(base_list), len(lib_list)
    L.sanity_rank_output(chk, base, NRANKS)
    L.compare_runs(chk, base, libs, NRANKS, "(3 nodes, shared libpython)", check_stderr=False)
    print("   opens of libpython in %s: without the libraries %d, with them %d"
          % (prefix, base_opens, lib_opens))
    print(L.indent("\n".join(l for r in range(NRANKS) for l in libs.rank_err(r).splitlines()
                             if "audit" in l)))
    chk.ok(base_opens >= NRANKS, "without the libraries every rank opens libpython (%d)"
           % base_opens)
    chk.ok(lib_opens == 2 * len(C.NODES), "with them libpython is read once per node: %d opens "
           "for %d nodes (each node's first process: load and copy)" % (lib_opens, len(C.NODES)),
           "\n".join(lib_list))


def mib(n):
    return "%.1f MiB" % (n / 1048576.0)


def test_nodes(chk, args, wd):
    print("\n== one image and one library mirror per node (cluster_app.py --pause)")
    env = L.base_env()
    d = wd.sub("nodes-pause")
    fk = os.path.join(d, "fakessh")
    facts = os.path.join(d, "facts")
    os.mkdir(fk)
    os.mkdir(facts)
    env["E2E_FACTS"] = facts
    argv = C.hydra_nodes_argv(args, HOSTS_SPEC, NRANKS, d) + [
        args.python, C.APP, "--tag", "pause", "--pause"]
    job = C.Background("nodes-pause-shim", argv,
                       C.fakessh_env(L.with_shim(env, args.shim, PYIMPORT_LOG=1), fk), d, d,
                       NRANKS)
    ready = C.wait_files([os.path.join(facts, "ready.%d" % r) for r in range(NRANKS)], 120)
    chk.ok(ready, "every rank started and paused")
    node_pid = {}
    for n in C.NODES:
        t = L.read(os.path.join(fk, n + ".pid")).strip()
        node_pid[n] = int(t) if t.isdigit() else None
    listing = {n: (C.shm_listing(p) if p else None) for n, p in node_pid.items()}
    usage = {n: (C.shm_usage(p) if p else None) for n, p in node_pid.items()}
    node_dev = {n: (C.shm_device(p) if p else None) for n, p in node_pid.items()}
    open(os.path.join(facts, "go"), "w").close()
    res = job.finish()
    chk.ok(res.rc == 0 and not res.timed_out, "the paused job ends normally", res.describe())
    facts_of = C.read_facts(facts, NRANKS)
    if not chk.ok(all(facts_of.values()) and all(v is not None for v in listing.values()),
                  "facts of every rank and a /dev/shm listing of every node",
                  "facts: %s\nnode pids: %s" % (sorted(r for r, f in facts_of.items() if f),
                                                node_pid)):
        print(res.describe())
        return

    # The ranks' nodes, told by their mount namespaces.
    ns_of_node = {}
    for r, f in facts_of.items():
        ns_of_node.setdefault(NODE_OF_RANK[r], set()).add(f["mntns"])
    chk.ok(all(len(s) == 1 for s in ns_of_node.values()) and
           len({next(iter(s)) for s in ns_of_node.values()}) == 3,
           "ranks 0 | 1 2 | 3 run in three mount namespaces, one per node (%s)"
           % {n: sorted(s) for n, s in ns_of_node.items()})

    images, mirror_sets, rows = {}, {}, []
    for n in C.NODES:
        ranks = [r for r in range(NRANKS) if NODE_OF_RANK[r] == n]
        entries = listing[n]
        files, jobs = C.job_files(entries)
        chk.ok(len(jobs) == 1, "%s: exactly one mirror directory in /dev/shm while the job runs "
               "(%s)" % (n, jobs or "none"), "\n".join(sorted(entries)[:40]))
        job = jobs[0] if len(jobs) == 1 else None
        for r in ranks:
            mirror = facts_of[r]["mirror"]
            outside = [p for p in mirror if not job or not p.startswith(job + "/")]
            chk.ok(bool(mirror) and not outside,
                   "%s: rank %d maps %d libraries from its node's mirror directory only"
                   % (n, r, len(mirror)), "\n".join(outside[:20]) or "(no library mapped)")
            img = facts_of[r]["image"]
            chk.ok(len(img) == 1, "%s: rank %d maps one image memory file (%d mappings)"
                   % (n, r, len(img)), str(img))
        keys = {(i["dev"], i["inode"]) for r in ranks for i in facts_of[r]["image"]}
        chk.ok(len(keys) == 1, "%s: its %d rank(s) map the same image memory file (%s)"
               % (n, len(ranks), sorted(keys)))
        images[n] = keys
        # One set of copies: the regular files under the job directory,
        # each counted once (the loaded libraries under root/ are hard links
        # to files/), each loaded one as large as the library it mirrors.
        copies, bad = {}, []
        for p, (t, size, ino, links) in entries.items():
            if not job or not p.startswith(job + "/") or t != "f":
                continue
            copies[ino] = size
            if p.startswith(job + "/root/"):
                orig = p[len(job) + len("/root"):]
                try:
                    osize = os.stat(orig).st_size
                except OSError as e:
                    osize = e
                if links < 2 or osize != size:
                    bad.append("%s: %d links, %d bytes, original %s" % (p, links, size, osize))
        mirror_pages = sum((s + PAGE - 1) // PAGE * PAGE for s in copies.values())
        mirror_sets[n] = (len(copies), sum(copies.values()))
        chk.ok(bool(copies) and not bad,
               "%s: the loaded libraries are hard links to the one copy each (%d files, %s), "
               "as large as their originals" % (n, len(copies), mib(sum(copies.values()))),
               "\n".join(bad[:20]))
        # What else the tmpfs holds: files the ranks map from it that are
        # already deleted (the MPI library's shared memory segments).
        dev = node_dev[n]
        other = {}
        for f in facts_of.values():
            for m in f.get("other_shm", []):
                if m["dev"] == dev:
                    other[m["inode"]] = max(other.get(m["inode"], 0), m["length"])
        # ... and files in it outside the mirror (an MPI library's own)
        visible = {ino: size for p, (t, size, ino, links) in entries.items()
                   if t == "f" and not (job and p.startswith(job + "/"))}
        other.update({"visible-%d" % ino: (size + PAGE - 1) // PAGE * PAGE
                      for ino, size in visible.items()})
        other_bytes = sum(other.values())
        used = usage[n]
        img_len = max((i["length"] for r in ranks for i in facts_of[r]["image"]), default=0)
        rows.append("  %-4s  %-5s  %-20s %10s   %10s  %5d %10s   %10s (%d)" % (
            n, ",".join(map(str, ranks)), "%s %s" % next(iter(keys)) if len(keys) == 1 else keys,
            mib(img_len), mib(used or 0), len(copies), mib(mirror_pages), mib(other_bytes),
            len(other)))
        chk.ok(bool(copies) and used is not None and
               mirror_pages <= used <= mirror_pages + other_bytes + 256 * 1024,
               "%s: /dev/shm holds one set of library copies (%s used: %s of copies, %s of %d "
               "other files, the MPI library's)" % (n, mib(used or 0), mib(mirror_pages),
                                                    mib(other_bytes), len(other)))
    print("\n  node  ranks  image memfd (dev inode)    length   /dev/shm used  copies (pages)"
          "   other files (MPI's)")
    print("\n".join(rows))
    chk.ok(len(set(mirror_sets.values())) == 1 and min(mirror_sets.values())[0] > 0,
           "every node holds the same one set of copies, whatever its number of ranks (%s)"
           % ", ".join("%s: %d files %s" % (n, c, mib(b)) for n, (c, b) in
                       sorted(mirror_sets.items())))
    chk.ok(len(set().union(*images.values())) == 3,
           "the three nodes map three different image memory files (%s)" % images)

    # When each proxy ended, just before the namespace went.
    for n in C.NODES:
        rep = os.path.join(fk, n + ".at-exit")
        entries = C.parse_report(rep) if os.path.exists(rep) else None
        files, jobs = C.job_files(entries or {})
        chk.ok(entries is not None and not files and not jobs,
               "%s: after the job, /dev/shm holds no file and no job directory" % n,
               L.read(rep) or "(no report)")


def main():
    args = L.parse_args(__doc__.split("\n\n")[0], SUBCOMMANDS)
    chk = L.Checker("e2e cluster_hydra " + " ".join(args.what))
    L.prerequisites(chk, args)
    C.require(chk, ["unshare", "nsenter", "getent"])
    cluster = C.Cluster(chk)
    wd = L.Workdir(args.keep, "pyimport-hydra-nodes-")
    try:
        if cluster.hosts():
            for what in args.what:
                globals()["test_" + what](chk, args, wd)
    finally:
        cluster.close()
        wd.close()
    chk.finish()


if __name__ == "__main__":
    main()
