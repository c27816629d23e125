"""CLI start-up: wall and CPU time of `modelport --help` and `modelport models`, each in a fresh process.

    .venv/bin/python bench/cli_startup.py [--runs 9] [--a-source DIR] [--home HOME]

Each run is what the `modelport` console script does (``from modelport.cli.main import main``), in a
new interpreter, with bytecode caches (as an installed wheel has them; kept under a temporary
``PYTHONPYCACHEPREFIX``, never in the tree) and without them (``PYTHONDONTWRITEBYTECODE=1``, as a
development environment may run). ``--a-source DIR`` puts another checkout's ``src`` first on the path
(``git archive d4cef34 src | tar -x -C /tmp/a`` gives ``/tmp/a/src``): its runs alternate with this
tree's, so both see the same machine load. ``--home`` is a registry for `models` (default: a new, empty
one for each tree, made with its own `modelport init`). Results: docs/performance.md, "CLI start-up".
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CODE = "import sys; from modelport.cli.main import main; sys.exit(main())"
HERE = Path(__file__).resolve().parents[1] / "src"


def _run(source: Path, args: list[str], env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CODE, *args], env={**env, "PYTHONPATH": str(source)}, capture_output=True
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"modelport {' '.join(args)} failed: {done.stderr.decode()[-500:]}")
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--a-source", type=Path, help="another checkout's src directory, run alternately")
    parser.add_argument("--home", type=Path, help="a registry for `models` (default: a new empty one)")
    options = parser.parse_args()
    sources = {"this tree": HERE}
    if options.a_source is not None:
        sources = {"a-source": options.a_source.resolve(), **sources}
    scratch = Path(tempfile.mkdtemp(prefix="modelport-cli-startup-"))
    base = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    }
    base |= {"COLUMNS": "100"}
    # each tree its own registry (made by its own `init`): an older tree cannot read a newer schema
    homes = {name: options.home or scratch / f"home-{name.replace(' ', '-')}" for name in sources}
    if options.home is None:
        for name, source in sources.items():
            _run(source, ["init"], {**base, "MODELPORT_HOME": str(homes[name])})
    print(f"load average {os.getloadavg()[0]:.2f}; {options.runs} runs per case, after one warm-up run")
    for cached in (True, False):
        for args in (["--help"], ["models"]):
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in sources}
            for run in range(options.runs + 1):
                for name, source in sources.items():
                    env = dict(base, MODELPORT_HOME=str(homes[name]))
                    if cached:
                        env["PYTHONPYCACHEPREFIX"] = str(scratch / f"pycache-{name.replace(' ', '-')}")
                    else:
                        env["PYTHONDONTWRITEBYTECODE"] = "1"
                    measured = _run(source, args, env)
                    if run:  # the first run writes the bytecode cache
                        results[name].append(measured)
            for name, measured in results.items():
                walls, cpus = [w for w, _ in measured], [c for _, c in measured]
                print(
                    f"{'with' if cached else 'no'} bytecode cache  modelport {' '.join(args):<7} {name:>9}: "
                    f"wall median {statistics.median(walls):.3f} s (min {min(walls):.3f}), "
                    f"CPU median {statistics.median(cpus):.3f} s"
                )


if __name__ == "__main__":
    main()
