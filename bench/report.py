"""Turn a results file into the Markdown quoted in docs/operations.md (figures, never edited).

``python -m bench.report bench/results/full.json [--write docs/operations.md]`` prints the
tables, or replaces the text between the ``bench-figures`` markers of the given file.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- bench-figures:begin -->", "<!-- bench-figures:end -->"


def _ratios(single: dict[str, Any]) -> str:
    """The run-by-run ratios (results before the runs alternated have none: their figure)."""
    return ", ".join(f"{r:.2f}" for r in single.get("ratios", [single["ratio"]]))


def _yes(met: bool) -> str:
    return "met" if met else "**not met**"


def _load(machine: dict[str, Any], key: str) -> str:
    values = machine.get(key)
    return f"{values[0]:.1f}" if values else "unknown"


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Run `{results['mode']}` of {results['started_at']}, {results['duration_s']:.0f} s, on "
        f"{m['nproc']} x {m['cpu']}, {m['memory_gib']} GiB, {m['os']}, Python {m['python']}, "
        f"SQLite {m['sqlite']}, PostgreSQL {m['postgresql']}; load average "
        f"{_load(m, 'load_average_at_start')} at the start and "
        f"{_load(m, 'load_average_at_end')} at the end "
        f"(`bench/results/{results['mode']}.json`, plot `bench/results/{results['mode']}.png`).",
        "",
        f"Raw Ed25519 verification loop (baseline): {results['ed25519_verify_per_s']:,.0f}/s.",
        "",
        "| Benchmark | Engine | Figure | Baseline (same run) | Ratio | Target | |",
        "|---|---|---|---|---|---|---|",
    ]
    for engine, single in results["single_report"].items():
        lines.append(
            f"| single signed report over HTTP | {engine} | {single['reports_per_s']:,.1f}/s | "
            f"bare endpoint {single['baseline_requests_per_s']:,.1f}/s, runs alternating | "
            f"{single['ratio']:.2f} (median of {_ratios(single)}) | >= 0.5 x bare | "
            f"{_yes(single['met'])} |"
        )
    for engine, batch in results["batch"].items():
        lines.append(
            f"| batch intake ({batch['concurrent_batches']} x {batch['batch_size']}) | {engine} | "
            f"{batch['reports_per_s']:,.1f} reports/s | bare endpoint "
            f"{batch['baseline_requests_per_s']:,.1f} requests/s | "
            f"{batch['ratio_to_bare_endpoint']:.2f} | >= {batch['target']:,.0f}/s | "
            f"{_yes(batch['met'])} |"
        )
    for engine, inquiry in results["inquiry"].items():
        first, last = inquiry["sizes"][0], inquiry["sizes"][-1]
        lines.append(
            f"| inquiry p99 at {last['borrowers']:,} borrowers | {engine} | "
            f"{last['p99_ms']:.1f} ms | bare endpoint p50 {inquiry['bare_endpoint_p50_ms']:.1f} ms "
            f"| {last['p99_ms'] / inquiry['bare_endpoint_p50_ms']:.1f} | <= 25 ms | "
            f"{_yes(inquiry['met_p99'])} |"
        )
        lines.append(
            f"| inquiry p50 growth {first['borrowers']:,} -> {last['borrowers']:,} | {engine} | "
            f"{first['p50_ms']:.1f} -> {last['p50_ms']:.1f} ms | p50 at {first['borrowers']:,} "
            f"| {inquiry['p50_growth']:.2f} | <= 1.5 | {_yes(inquiry['met_growth'])} |"
        )
    for engine, sweeper in results["sweeper"].items():
        lines.append(
            f"| sweeper | {engine} | {sweeper['records_per_s']:,.1f} records/s | Ed25519 loop "
            f"{sweeper['ed25519_verify_per_s']:,.0f}/s | "
            f"{sweeper['records_per_s'] / sweeper['ed25519_verify_per_s']:.3f} | >= 5,000/s | "
            f"{_yes(sweeper['met'])} |"
        )
    lines += ["", "Inquiry latency by data size (one client, sequential, medians of the runs):", ""]
    lines += ["| Engine | Borrowers | p50 | p99 | Database size |", "|---|---|---|---|---|"]
    for engine, inquiry in results["inquiry"].items():
        for size in inquiry["sizes"]:
            mib = size.get("database_bytes", 0) / 1024 / 1024
            lines.append(
                f"| {engine} | {size['borrowers']:,} | {size['p50_ms']:.1f} ms | "
                f"{size['p99_ms']:.1f} ms | {mib:,.0f} MiB |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--write", type=Path, help="a Markdown file with the markers")
    args = parser.parse_args()
    text = markdown(json.loads(args.results.read_text()))
    if args.write is None:
        print(text)
        return
    document = args.write.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(document):
        raise SystemExit(f"{args.write} has no {BEGIN} ... {END} markers")
    args.write.write_text(pattern.sub(lambda _m: f"{BEGIN}\n{text}{END}", document))


if __name__ == "__main__":
    main()
