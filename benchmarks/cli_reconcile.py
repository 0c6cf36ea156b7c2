"""`jmlsync reconcile --dry-run --format json` at scale, measured from outside the process.

    .venv/bin/python -m benchmarks.cli_reconcile --users 100000 --memberships 1000000 --rules 1000

The store and ledger (users, 2% inactive; groups; memberships spread evenly, each user in
memberships/users groups; rules mapping the first --rules groups; a ledger holding half the
users with one random grant each) are generated once by benchmarks/reconcile_scale.py's
generator and cached under var/bench/ (delete the folder to regenerate). Each round copies
the cached store into a scratch folder and runs the real command under `/usr/bin/time -v`:

    jmlsync reconcile --dry-run --format json --config <generated toml> > plan.json

reporting the wall seconds (from outside: the parent's clock around the child, and
/usr/bin/time's elapsed) and the peak RSS in MiB (/usr/bin/time's "Maximum resident set
size"). Without /usr/bin/time (`apt-get install -y time`), the peak comes from
getrusage(RUSAGE_CHILDREN).ru_maxrss, which is the largest child so far — still the command's
own, as it is the only big child. Targets: under 5 s and under 512 MiB at 100k / 1M / 1,000.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._common import emit, parser, spread, verdict
from benchmarks.reconcile_scale import write_config

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "var" / "bench"
TIME = Path("/usr/bin/time")


def ensure_store(
    cache: Path, users: int, groups: int, memberships: int, rules: int
) -> tuple[Path, float]:
    """The cached store folder for these sizes, generated if missing; and the seconds spent."""
    folder = cache.resolve() / f"reconcile-u{users}-g{groups}-m{memberships}-r{rules}"
    done = folder / "generated"
    if done.exists():
        return folder, 0.0
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    write_config(folder, rules)
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.reconcile_scale",
            "--users",
            str(users),
            "--groups",
            str(groups),
            "--memberships",
            str(memberships),
            "--rules",
            str(rules),
            "--generate-into",
            str(folder),
        ],
        check=True,
        stdout=sys.stderr,
        cwd=ROOT,
    )
    done.write_text("ok\n")
    return folder, time.perf_counter() - started


def _scratch(cache: Path, source: Path, round_number: int) -> Path:
    """A copy of the cached store for one round (a dry run writes nothing to the targets, but
    the command may keep records in the store; every round starts from the same bytes)."""
    scratch = cache / f"scratch-{os.getpid()}-{round_number}"
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    for item in source.iterdir():
        if item.is_file() and item.name != "generated":
            shutil.copy2(item, scratch / item.name)
    return scratch


def _elapsed(text: str) -> float | None:
    match = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text)
    if not match:
        return None
    seconds = 0.0
    for part in match.group(1).split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def run_once(cache: Path, source: Path, round_number: int) -> dict[str, Any]:
    scratch = _scratch(cache, source, round_number)
    try:
        command = [
            sys.executable,
            "-m",
            "jmlsync",
            "reconcile",
            "--dry-run",
            "--format",
            "json",
            "--config",
            str(scratch / "jmlsync.toml"),
        ]
        timed = [str(TIME), "-v", *command] if TIME.exists() else command
        plan = scratch / "plan.json"
        with plan.open("wb") as out:
            started = time.perf_counter()
            finished = subprocess.run(timed, stdout=out, stderr=subprocess.PIPE, check=False)
            wall = time.perf_counter() - started
        stderr = finished.stderr.decode("utf-8", "replace")
        result: dict[str, Any] = {"exit_code": finished.returncode, "wall_s": round(wall, 2)}
        if TIME.exists():
            rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
            result["peak_rss_mib"] = round(int(rss.group(1)) / 1024, 1) if rss else None
            result["time_elapsed_s"] = _elapsed(stderr)
            result["measured_by"] = "/usr/bin/time -v"
        else:
            children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            result["peak_rss_mib"] = round(children / 1024, 1)
            result["measured_by"] = "getrusage(RUSAGE_CHILDREN)"
        try:
            planned = json.loads(plan.read_text())
        except ValueError:
            planned = None
            result["stderr_tail"] = stderr[-800:]
        if isinstance(planned, dict):
            operations = planned.get("operations")
            result["operations"] = len(operations) if isinstance(operations, list) else None
            result["plan_bytes"] = plan.stat().st_size
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    made = parser(__doc__)
    made.add_argument("--users", type=int, default=100_000)
    made.add_argument("--groups", type=int, default=5_000)
    made.add_argument("--memberships", type=int, default=1_000_000)
    made.add_argument("--rules", type=int, default=1_000)
    made.add_argument(
        "--cache", type=Path, default=CACHE, help="where generated stores are kept (var/bench)"
    )
    args = made.parse_args()
    source, generated = ensure_store(
        args.cache, args.users, args.groups, args.memberships, args.rules
    )
    rounds = []
    for number in range(args.rounds):
        figures = run_once(args.cache, source, number)
        rounds.append(figures)
        print(
            f"round {number + 1}: {figures['wall_s']} s, {figures.get('peak_rss_mib')} MiB,"
            f" exit {figures['exit_code']}",
            file=sys.stderr,
        )
    wall = spread(r["wall_s"] for r in rounds)
    rss = spread(r["peak_rss_mib"] for r in rounds if r.get("peak_rss_mib") is not None)
    full_size = (args.users, args.memberships, args.rules) == (100_000, 1_000_000, 1_000)
    targets = [
        verdict("wall < 5 s (median)", wall.get("median"), 5.0, below=True),
        verdict("peak RSS < 512 MiB (max)", rss.get("max"), 512.0, below=True),
    ]
    for line in targets:
        line["at_target_size"] = full_size
    emit(
        {
            "benchmark": "cli_reconcile",
            "users": args.users,
            "groups": args.groups,
            "memberships": args.memberships,
            "rules": args.rules,
            "store": str(source),
            "generate_s": round(generated, 1),
            "time_tool": str(TIME) if TIME.exists() else None,
            "rounds": args.rounds,
            "wall_s": wall,
            "peak_rss_mib": rss,
            "per_round": rounds,
            "targets": targets,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
