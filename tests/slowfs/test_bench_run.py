#!/usr/bin/python3
"""bench_run_smoke: bench/run end to end on a small setting (1 and 2 ranks, one
run each, no service time), and what must hold whatever the machine's speed:
every job succeeds; every method and rank count has a row in results.csv,
.json and .md and a plot; plain jobs send the same requests per rank; the
pyimport jobs send fewer requests than plain ones, the profiled ones fewer
than the first job; staging sends only a handful; and bad arguments are
refused with a message.  No timing is asserted.

  test_bench_run.py BENCH_RUN BUILD_DIR WORK_DIR
"""
import csv
import json
import os
import shutil
import subprocess
import sys

bench, build, work = sys.argv[1:4]
failures = []


def check(ok, what, detail=""):
    print("%s: %s%s" % ("ok" if ok else "FAIL", what, (" -- " + detail) if detail and not ok else ""))
    if not ok:
        failures.append(what)


for bad in (["--ranks", "0"], ["--ranks", "x"], ["--methods", "plain,magic"], ["--repeats", "0"],
            ["--env", "LD_PRELOAD=x"], ["--program", "/no/such/app.py"]):
    p = subprocess.run([sys.executable, bench] + bad, capture_output=True, text=True)
    check(p.returncode == 2 and "bench/run:" in p.stderr, "refuses %s" % " ".join(bad), p.stderr)

shutil.rmtree(os.path.join(work, "results"), ignore_errors=True)
out = os.path.join(work, "results")
p = subprocess.run([sys.executable, bench, "--build", build, "--work", work, "--ranks", "1,2",
                    "--repeats", "1", "--meta-us", "0", "--out", out],
                   capture_output=True, text=True)
print(p.stdout[-3000:])
check(p.returncode == 0, "bench/run exits 0", p.stderr[-3000:])
if p.returncode == 0:
    data = json.load(open(os.path.join(out, "results.json")))
    rows = {(r["method"], r["ranks"]): r for r in data["results"]}
    methods = ("plain", "pyimport-1st", "pyimport", "staging")
    for m in methods:
        for n in (1, 2):
            r = rows.get((m, n))
            check(r is not None and r["failures"] == 0 and r["seconds"] is not None,
                  "%s at %d ranks ran" % (m, n))
    with open(os.path.join(out, "results.csv")) as f:
        check(len(list(csv.DictReader(f))) == 8, "results.csv has 8 rows")
    md = open(os.path.join(out, "results.md")).read()
    check(all(m in md for m in methods) and "Machine:" in md, "results.md names methods, machine")
    png = os.path.join(out, "startup.png")
    check(os.path.exists(png) and open(png, "rb").read(4) == b"\x89PNG", "startup.png is a PNG")
    req = {k: r["metadata_requests"] for k, r in rows.items()}
    check(req[("plain", 2)] == 2 * req[("plain", 1)], "plain: requests grow with the ranks",
          str(req))
    for n in (1, 2):
        check(req[("pyimport", n)] < req[("pyimport-1st", n)] < req[("plain", n)],
              "%d ranks: profiled < first job < plain requests" % n, str(req))
        check(req[("staging", n)] <= 10, "%d ranks: staging sends a handful of requests" % n,
              str(req))
    check(req[("pyimport", 2)] < req[("plain", 1)] * 1.05,
          "2 ranks with pyimport send fewer requests than 1 plain rank", str(req))
sys.exit(1 if failures else 0)
