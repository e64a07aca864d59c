"""The README table of benchmarks/distill.py, pooled over entries: seeds of one variant that ran against different
teacher runs (each its own --name) are reported together, and the table says which seed came from where.

    python benchmarks/distill_table.py amazon-beauty/causal-teacher amazon-beauty/causal-teacher-seed43 \
        --teachers quality/amazon-beauty/items/causal quality/amazon-beauty/items/causal-seed43 \
        quality/amazon-beauty/items/causal-seed44

Entries are read in the order given: a (variant, seed) run comes from the first entry that holds it, so later
entries only fill seeds the first lacks. Every entry must be of one dataset, with the same distillation weights and
overrides.
Nothing is trained; the numbers are those of benchmarks/results/distill.json (and teacher.json for --teachers).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from distill import REPO_ROOT, REPORTED, VARIANTS, run_key

LABELS = {
    "plain-sasrec": "plain SASRec", "plain-gru4rec": "plain GRU4Rec", "plain-caser": "plain Caser",
    "init-sasrec": "SASRec, item table initialised from the teacher's item vectors (PCA)",
    "kd-sasrec": "SASRec + KD only", "rank-sasrec": "SASRec + DLLM2Rec ranking only",
    "embed-sasrec": "SASRec + DLLM2Rec embedding only", "no_kd-sasrec": "SASRec, all terms but KD",
    "no_rank-sasrec": "SASRec, all terms but ranking", "no_embed-sasrec": "SASRec, all terms but embedding",
    "distill-sasrec": "SASRec, all terms, tuned weights", "init_distill-sasrec":
    "SASRec, all terms, tuned weights, teacher-initialised item table", "distill-gru4rec":
    "GRU4Rec, all terms, tuned weights", "distill-caser": "Caser, all terms, tuned weights",
    "slm": "slm: the teacher's first layers + SLMRec feature distillation + KD, tuned weights",
}


def pooled_runs(results: dict, entries: list[str]) -> dict[str, dict[int, tuple[str, dict]]]:
    """variant -> seed -> (entry, run), the first entry holding a (variant, seed) winning."""
    missing = [entry for entry in entries if entry not in results]
    if missing:
        raise SystemExit(f"no entry {missing} in the results file (it has {sorted(results)})")
    datasets = {entry.split("/")[0] for entry in entries}
    if len(datasets) > 1:
        raise SystemExit(f"entries {entries} are of different datasets {sorted(datasets)}: they cannot be pooled")
    first = entries[0]
    for entry in entries[1:]:
        for setting, unset in (("weights", {}), ("overrides", [])):  # overrides: training settings, e.g. the loss
            mine, theirs = results[entry].get(setting, unset), results[first].get(setting, unset)
            if mine != theirs:
                raise SystemExit(f"entry {entry} ran with {setting} {mine}, entry {first} with {theirs}: runs of "
                                 f"different {setting} cannot be pooled")
    pooled: dict[str, dict[int, tuple[str, dict]]] = {}
    for entry in entries:
        runs, weights = results[entry]["runs"], results[entry].get("weights", {})
        for key in runs:
            variant, seed = key.split("/")[0], int(key.split("/")[1].removeprefix("seed"))
            if key == run_key(variant, seed, weights):  # not a run cached under the entry's earlier weights
                pooled.setdefault(variant, {}).setdefault(seed, (entry, runs[key]))
    return pooled


def teacher_row(teacher_results: dict, keys: list[str]) -> dict:
    missing = [key for key in keys if key not in teacher_results]
    if missing:
        raise SystemExit(f"no teacher entry {missing} in benchmarks/results/teacher.json")
    runs = [teacher_results[key] for key in keys]
    return {"label": "teacher", "variant": "teacher", "seeds": len(runs),
            "valid": float(np.mean([run["valid"]["ndcg_at_10"] for run in runs])), **_test_stats(runs)}


def _test_stats(runs: list[dict]) -> dict:
    stats = {}
    for metric in REPORTED:
        values = [run["test"][metric] for run in runs]
        stats[metric] = (float(np.mean(values)), float(np.std(values)))  # population std, as benchmarks/distill.py
    return stats


def table_rows(pooled: dict[str, dict[int, tuple[str, dict]]], entries: list[str],
               teacher: dict | None = None) -> list[dict]:
    rows = [teacher] if teacher else []
    for variant in VARIANTS:
        if variant not in pooled:
            continue
        by_seed = dict(sorted(pooled[variant].items()))
        runs = [run for _, run in by_seed.values()]
        sources = {seed: entries.index(entry) for seed, (entry, _) in by_seed.items()}
        rows.append({"label": LABELS[variant], "variant": variant, "seeds": len(runs), "sources": sources,
                     "valid": float(np.mean([run["valid"]["ndcg_at_10"] for run in runs])),
                     "each": [round(run["test"]["ndcg_at_10"], 4) for run in runs], **_test_stats(runs)})
    plain = {row["variant"].removeprefix("plain-"): row["ndcg_at_10"][0] for row in rows
             if row["variant"].startswith("plain-")}
    for row in rows:
        if "sasrec" in plain:
            row["vs_plain_sasrec"] = row["ndcg_at_10"][0] / plain["sasrec"] - 1
        student = row["variant"].removeprefix("distill-")
        if row["variant"].startswith("distill-") and student in plain:
            row["vs_same_plain"] = row["ndcg_at_10"][0] / plain[student] - 1
    return rows


def _seeds_by_entry(sources: dict[int, int]) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = {}
    for seed, index in sources.items():
        grouped.setdefault(index, []).append(str(seed))
    return dict(sorted(grouped.items()))


def markdown(rows: list[dict], entries: list[str]) -> str:
    lines = ["| variant | seeds | valid NDCG@10 | test HR@10 | test NDCG@10 | vs plain SASRec | vs the same student "
             "plain |", "|---|---|---|---|---|---|---|"]
    notes = []
    for row in rows:
        mixed = len(set(row.get("sources", {}).values())) > 1
        seeds = f"{row['seeds']} ᵃ" if mixed else str(row["seeds"])
        if mixed:
            notes.append(f"{row['label']}: " + "; ".join(
                f"seed{'s' if len(held) > 1 else ''} {', '.join(held)} from {entries[index]}"
                for index, held in _seeds_by_entry(row["sources"]).items()))
        cells = [f"{mean:.4f}" if row["seeds"] == 1 else f"{mean:.4f} ± {std:.4f}"
                 for mean, std in (row["hr_at_10"], row["ndcg_at_10"])]
        versus = [f"{row[key]:+.1%}".replace("-", "−") if key in row else "" for key in ("vs_plain_sasrec",
                                                                                      "vs_same_plain")]
        if row["variant"] == "plain-sasrec":
            versus[0] = "—"
        lines.append(f"| {row['label']} | {seeds} | {row['valid']:.4f} | " + " | ".join(cells + versus) + " |")
    if notes:
        lines += ["", "ᵃ Pooled over entries of benchmarks/results/distill.json:"] + [f"- {note}" for note in notes]
    return "\n".join(lines)


def pooled_table(results: dict, entries: list[str], teacher_results: dict | None = None,
                 teachers: list[str] | tuple[str, ...] = ()) -> list[dict]:
    """The rows of the pooled table (what main prints), from loaded distill.json and teacher.json contents."""
    teacher = teacher_row(teacher_results or {}, list(teachers)) if teachers else None
    return table_rows(pooled_runs(results, entries), entries, teacher)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("entries", nargs="+", help="entries of the results file, first one wins a (variant, seed)")
    parser.add_argument("--teachers", nargs="*", default=[],
                        help="entries of benchmarks/results/teacher.json pooled into the teacher row")
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "distill.json")
    parser.add_argument("--json", action="store_true", help="print the rows (with each seed's test NDCG@10) as JSON")
    args = parser.parse_args()
    teacher_results = None
    if args.teachers:
        teacher_results = json.loads((REPO_ROOT / "benchmarks" / "results" / "teacher.json").read_text())
    rows = pooled_table(json.loads(args.results.read_text()), args.entries, teacher_results, args.teachers)
    print(json.dumps(rows, indent=1) if args.json else markdown(rows, args.entries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
