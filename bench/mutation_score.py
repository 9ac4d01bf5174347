"""The mutation score of the pure modules (``make mutate``): mutants killed by their fast unit
tests, per module, from ``mutmut results``; exits non-zero when any module is below the target.

    python bench/mutation_score.py [--target 0.85]

Score = killed / (killed + survived + no tests + suspicious): a mutant no selected test reaches
("no tests") or whose run was inconclusive ("suspicious") counts against the module, as a
survivor does. Killed: a test failed, the run timed out (the mutant made the code loop), a type
check caught it, or the test process crashed. Not checked, skipped or interrupted mutants are
reported beside the score (a run cut short), never counted as killed.
"""
from __future__ import annotations

import argparse
import collections
import configparser
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILLED = ("killed", "timeout", "caught by type check", "segfault")
AGAINST = ("survived", "no tests", "suspicious")
ASIDE = ("not checked", "skipped", "check was interrupted by user")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=0.85)
    args = parser.parse_args(argv)
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    modules = [p.strip()[:-3].replace("/", ".") for p in config["mutmut"]["only_mutate"].split() if p.strip()]
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    counts = collections.defaultdict(collections.Counter)
    survivors = []
    for line in out.splitlines():
        if ":" not in line:
            continue
        name, status = (part.strip() for part in line.rsplit(":", 1))
        module = next((m for m in modules if name.startswith(m + ".")), None)
        if module is None:
            continue
        counts[module][status] += 1
        if status in AGAINST:
            survivors.append(f"{name}: {status}")
    below = []
    total_killed = total = 0
    for module in modules:
        c = counts[module]
        killed = sum(c[s] for s in KILLED)
        scored = killed + sum(c[s] for s in AGAINST)
        total_killed, total = total_killed + killed, total + scored
        score = killed / max(scored, 1)
        if score < args.target or not scored:
            below.append(module)
        against = ", ".join(f"{c[s]} {s}" for s in AGAINST)
        aside = ", ".join(f"{c[s]} {s}" for s in ASIDE if c[s])
        print(f"{module}: {killed}/{scored} killed ({score:.1%}); against: {against}"
              + (f"; not scored: {aside}" if aside else ""))
    print(f"mutation score: {total_killed}/{total} = {total_killed / max(total, 1):.1%}; every module's target "
          f"{args.target:.0%}" + (f"; below it: {', '.join(below)}" if below else ""))
    os.makedirs(os.path.join(ROOT, "mutants"), exist_ok=True)
    with open(os.path.join(ROOT, "mutants", "survivors.txt"), "w") as handle:
        handle.write("\n".join(survivors) + "\n")
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
