"""The mutation score of the pure modules (``make mutate``): mutants killed by their fast unit
tests, per module, from ``mutmut results``; exits non-zero below the target.

    python bench/mutation_score.py [--target 0.85]

Counted: killed (a test failed), survived (every test passed), timeout (counted as killed: the
mutant made the code loop). Mutants no selected test reaches are left out (they belong to modules
outside the pure set, see setup.cfg's [mutmut] section)."""
from __future__ import annotations

import argparse
import collections
import configparser
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=0.85)
    args = parser.parse_args(argv)
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    modules = [p.strip()[:-3].replace("/", ".") for p in config["mutmut"]["paths_to_mutate"].split() if p.strip()]
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
        if status == "survived":
            survivors.append(name)
    total_killed = total = 0
    for module in modules:
        c = counts[module]
        killed = c["killed"] + c["timeout"]
        scored = killed + c["survived"]
        total_killed, total = total_killed + killed, total + scored
        print(f"{module}: {killed}/{scored} killed ({killed / max(scored, 1):.1%}), not checked {c['not checked']}")
    score = total_killed / max(total, 1)
    print(f"mutation score: {total_killed}/{total} = {score:.1%} (target {args.target:.0%})")
    with open(os.path.join(ROOT, "mutants", "survivors.txt"), "w") as handle:
        handle.write("\n".join(survivors) + "\n")
    return 0 if score >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
