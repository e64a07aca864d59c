"""`rdistill <command> --config FILE key.sub=value ...`: the command line over the library.

Every command reads one YAML config (jobs/configs/*.yaml), applies `key.sub=value` overrides, validates the
result once, and then calls the library. Errors that the user can fix are printed as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from rdistill.errors import RdistillError

log = logging.getLogger("rdistill")

OVERRIDES_HELP = (
    "config overrides as key.sub=value, applied after --config; values are YAML "
    "(e.g. train.lr=0.0005 data.min_user_interactions=5 eval.ks=[10,20] data.root=../shared/data)"
)


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, default=None,
                        help="YAML config file (see jobs/configs/); defaults apply to keys it leaves out")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rdistill",
        description="Distil LLM-based sequential recommenders into small, fast students.",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors on stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prepare = commands.add_parser(
        "prepare",
        help="interaction logs -> dataset/ (items, users, leave-one-out train/valid/test Parquet)",
        description=(
            "Read the raw logs named by data.format / data.root / data.path (MovieLens, S3-Rec text or a generic "
            "CSV/Parquet), drop repeated (user, item) pairs, apply the k-core filter "
            "(data.min_user_interactions, data.min_item_interactions), order each user's interactions by "
            "timestamp then file order, and write the leave-one-out splits to <artifact_root>/dataset/ with a "
            "manifest.json. data.root defaults to $RDISTILL_DATA_DIR."
        ),
    )
    _add_config_arguments(prepare)

    train = commands.add_parser(
        "train-student",
        help="train one student (student.name) with early stopping; writes students/<run>/",
        description=(
            "Train the student named by student.name (sasrec, gru4rec, caser, slm) on <artifact_root>/dataset/ with "
            "Adam and full-softmax cross-entropy, early-stop on the validation metric eval.select_metric "
            "(patience train.patience), keep the best weights, evaluate the test split once with them, and write "
            "model.safetensors, model_config.json, metrics.json and manifest.json to "
            "<artifact_root>/students/<train.run_name or student-seedN>/."
        ),
    )
    _add_config_arguments(train)

    evaluate = commands.add_parser(
        "evaluate",
        help="full-ranking HR/NDCG/MRR@K of a saved student or the popularity baseline",
        description=(
            "Rank every item of the catalogue for each row of a split and report HR@K, NDCG@K and MRR@K for "
            "eval.ks. Select models on --split valid; look at test only for the final report."
        ),
    )
    target = evaluate.add_mutually_exclusive_group(required=True)
    target.add_argument("--model-dir", type=Path, help="a saved student (folder with model_config.json)")
    target.add_argument("--popularity", action="store_true", help="evaluate the popularity baseline")
    evaluate.add_argument("--split", choices=["valid", "test"], default="valid", help="which split (default valid)")
    _add_config_arguments(evaluate)

    run = commands.add_parser(
        "run",
        help="the whole pipeline: prepare -> teacher train -> teacher infer -> tune + export, resumable",
        description=(
            "Run every stage under one artifact root: prepare, teacher train, teacher infer, tune (which exports "
            "the winner to serving/model/). Each stage is recorded in <artifact_root>/pipeline.json with a hash of "
            "its settings and of its input's manifest; a rerun skips stages that are up to date and resumes at "
            "the first that failed or changed. --profile quick (jobs/configs/profiles/quick.yaml) runs a slice "
            "of the data in about 20 minutes on 2 cores; --profile full is for real runs. Serve the result with "
            "`rdistill serve`."
        ),
    )
    run.add_argument("--profile", default=None, help="quick | full | a YAML file of dotted keys (before overrides)")
    run.add_argument("--serve", action="store_true",
                     help="then deploy the winner with Ray Serve on 127.0.0.1 and answer a sample request")
    run.add_argument("--keep-serving", action="store_true", help="with --serve: keep the endpoint up until Ctrl-C")
    run.add_argument("--port", type=int, default=8000, help="with --serve: the HTTP port (default 8000)")
    run.add_argument("--force", action="append", default=[], choices=["prepare", "teacher", "infer", "tune"],
                     help="rerun this stage even when up to date (repeatable)")
    _add_config_arguments(run)

    serve = commands.add_parser(
        "serve",
        help="serve an exported student with Ray Serve (POST /recommend) on 127.0.0.1",
        description=(
            "Deploy <artifact_root>/serving/model/ (or --model-dir) as the Ray Serve application of serve/app.py: "
            "POST /recommend, GET /healthz, GET /model, OpenAPI at /docs. Binds 127.0.0.1 unless --host says "
            "otherwise; set RDISTILL_SERVE_TOKEN to require a bearer token. Runs until Ctrl-C. For autoscaling "
            "and cluster deployment use `serve run serve/config.yaml` / `serve deploy` (see serve/README.md)."
        ),
    )
    serve.add_argument("--model-dir", default=None,
                       help="an exported model, a folder or a URI such as s3://bucket/run/serving/model "
                            "(default: serving/model under the artifact root)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--replicas", type=int, default=1)
    serve.add_argument("--runtime", choices=["auto", "onnx", "torch"], default="auto",
                       help="what scores: the export's ONNX graph under ONNX Runtime (auto: when the export holds "
                            "one) or the torch model")
    serve.add_argument("--access-log", action="store_true",
                       help="log every request in Serve's log files (off by default: it costs throughput)")
    _add_config_arguments(serve)

    tune = commands.add_parser(
        "tune",
        help="search the distillation weights with Ray Tune + Optuna TPE + ASHA; export the winner",
        description=(
            "Run tune.num_samples distillation trials (students learning from <artifact_root>/signals/) with "
            "settings drawn from tune.space (default: the KD, DLLM2Rec ranking and embedding weights and the "
            "learning rate) by Optuna's TPE sampler seeded with `seed` (tune.search=random for plain random "
            "sampling), at most tune.max_concurrent at once with tune.cpus_per_trial / tune.gpus_per_trial each. "
            "ASHA (tune.scheduler=asha) stops weak trials after tune.grace_period epochs. The winner is chosen "
            "on validation only; its test metrics are computed once, and it is exported to "
            "<artifact_root>/serving/model/. The campaign lives in <artifact_root>/tune/<tune.name>/: running "
            "the command again after an interruption resumes it (--fresh starts over). Connects to the Ray "
            "cluster in RAY_ADDRESS, or starts a local one."
        ),
    )
    tune.add_argument("--fresh", action="store_true", help="discard an existing campaign of the same name")
    _add_config_arguments(tune)

    export = commands.add_parser(
        "export",
        help="export a saved student with its item table to serving/model/ for the endpoint",
        description=(
            "Copy a saved student (--model-dir, e.g. <artifact_root>/students/sasrec-seed42) into the serving "
            "format: weights with any embedding offsets folded in, model config, the dataset's item table, its "
            "metrics and a lineage manifest. Writes <artifact_root>/serving/model/ unless --out is given. "
            "`rdistill tune` exports its winner the same way."
        ),
    )
    export.add_argument("--model-dir", type=Path, required=True, help="a saved student folder")
    export.add_argument("--out", type=Path, default=None, help="target folder (default <artifact_root>/serving/model)")
    _add_config_arguments(export)

    report = commands.add_parser(
        "report",
        help="write report.md and report.html with plots (PNG) over what the artifact root holds",
        description=(
            "Read whatever the stages have written under the artifact root (dataset/manifest.json, "
            "teacher/checkpoint/metrics.json, signals/manifest.json, tune/<tune.name>/summary.json, serving/model/, "
            "students/*/metrics.json, pipeline.json) and write <artifact_root>/report/ (or --out): report.md, a "
            "self-contained report.html, and PNG plots of the tuning history, the Pareto front of validation "
            "NDCG@10 against cost, per-model metrics, teacher vs student size and latency, and stage timings. "
            "Stages that have not run are reported as 'not run yet'. Latency is shown when --measure-latency "
            "times it (one user's history scored on CPU) or an earlier report measured the same models."
        ),
    )
    report.add_argument("--out", type=Path, default=None, help="target folder (default <artifact_root>/report)")
    report.add_argument("--measure-latency", action="store_true",
                        help="time one user's scoring by the teacher and the exported student on CPU (one thread)")
    _add_config_arguments(report)

    teacher = commands.add_parser("teacher", help="the language-model teacher: train (Ray Train + DeepSpeed), "
                                  "infer (Ray Data)",
                                  description="Stages of the language-model teacher.")
    teacher_commands = teacher.add_subparsers(dest="teacher_command", required=True, metavar="STAGE")
    teacher_train = teacher_commands.add_parser(
        "train",
        help="fine-tune the teacher with Ray Train + DeepSpeed; writes teacher/checkpoint/",
        description=(
            "Fine-tune a pre-trained language model (teacher.model: 'minilm' or a local Hugging Face checkpoint) "
            "as a next-item recommender on <artifact_root>/dataset/ with Ray Train (teacher.num_workers workers, "
            "teacher.cpus_per_worker each, teacher.use_gpu) and DeepSpeed (teacher.zero_stage, "
            "teacher.gradient_accumulation_steps, teacher.grad_clip, warm-up + cosine). Validation NDCG@10 every "
            "epoch, a checkpoint per epoch (best teacher.keep_checkpoints kept), restart from the latest one after a "
            "failure (teacher.max_failures), early stopping (teacher.patience). Writes the consolidated fp32 "
            "teacher to teacher/checkpoint/ and its DeepSpeed shards to teacher/ds_checkpoint/. Connects to the "
            "Ray cluster in RAY_ADDRESS, or starts a local one."
        ),
    )
    _add_config_arguments(teacher_train)
    teacher_infer = teacher_commands.add_parser(
        "infer",
        help="batch-infer the teacher's top-K, embeddings and hidden states with Ray Data; writes signals/",
        description=(
            "Score every row of infer.splits (default: train) with the consolidated teacher in teacher/checkpoint/ "
            "through a Ray Data actor pool (infer.num_actors actors, infer.cpus_per_actor CPUs or one GPU each, "
            "infer.batch_size rows per batch) and write <artifact_root>/signals/: topk.parquet (the top "
            "infer.top_k items and scores and the user vector per row, joinable by row_id), item_emb.parquet (the "
            "teacher's item table) and, with infer.hidden_layers, hidden.parquet (pooled backbone states per row). "
            "A rerun with the same teacher, data and output settings skips; --force recomputes. Connects to the "
            "Ray cluster in RAY_ADDRESS, or starts a local one."
        ),
    )
    teacher_infer.add_argument("--force", action="store_true", help="recompute even when signals/ is up to date")
    _add_config_arguments(teacher_infer)
    return parser


def _command_prepare(config) -> dict:
    from rdistill.artifacts import MANIFEST_NAME, read_json
    from rdistill.data.prepare import prepare_dataset

    dataset_dir = prepare_dataset(config)
    counts = read_json(dataset_dir / MANIFEST_NAME)["counts"]
    return {"dataset_dir": str(dataset_dir), **counts}


def _command_train_student(config) -> dict:
    from rdistill.distill.train import train_student

    result = train_student(config)
    return {
        "run_dir": str(result.run_dir),
        "student": config.student.name,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "seconds_per_epoch": round(result.seconds_per_epoch, 3),
        "num_parameters": result.num_parameters,
        "valid": result.valid,
        "test": result.test,
    }


def _command_evaluate(config, model_dir: Path | None, popularity: bool, split: str) -> dict:
    from rdistill.artifacts import ArtifactLayout
    from rdistill.data.dataset import load_dataset_info, load_split
    from rdistill.evaluate import PopularityRecommender, evaluate_model, evaluate_scorer
    from rdistill.models import load_student

    root = config.storage()
    layout = ArtifactLayout(root.local)
    root.pull(layout.dataset_dir)
    info = load_dataset_info(layout.dataset_dir)
    rows = load_split(layout.dataset_dir, split, info.max_len)
    eval_cfg, batch_size = config.eval, config.train.eval_batch_size
    if popularity:
        scorer = PopularityRecommender.fit(load_split(layout.dataset_dir, "train", info.max_len), info.n_items)
        metrics = evaluate_scorer(scorer.scores, rows, eval_cfg.ks, batch_size, eval_cfg.exclude_history)
        name = "popularity"
    else:
        model = load_student(model_dir)
        if model.n_items != info.n_items:
            raise RdistillError(f"{model_dir} was trained on {model.n_items} items but {layout.dataset_dir} has "
                                f"{info.n_items}: evaluate it on the dataset it was trained on")
        metrics = evaluate_model(model, rows, eval_cfg.ks, batch_size, eval_cfg.exclude_history)
        name = str(model_dir)
    return {"model": name, "split": split, "rows": len(rows), **metrics}


def _command_teacher_train(config) -> dict:
    from rdistill.teacher.train import train_teacher

    result = train_teacher(config)
    return {"checkpoint_dir": str(result.checkpoint_dir), "best_epoch": result.best_epoch,
            "global_steps": result.global_steps, "seconds": round(result.seconds, 1), "valid": result.valid,
            "test": result.test}


def _command_teacher_infer(config, force: bool) -> dict:
    from rdistill.teacher.infer import infer_teacher, inference_summary

    return inference_summary(infer_teacher(config, force=force))


def _command_export(config, model_dir: Path, out: Path | None) -> dict:
    from rdistill.artifacts import MANIFEST_NAME, ArtifactLayout, file_sha256, read_json
    from rdistill.config import config_to_dict
    from rdistill.data.schema import read_table
    from rdistill.export import export_student
    from rdistill.models import load_student

    root = config.storage()
    layout = ArtifactLayout(root.local)
    root.pull(layout.dataset_dir)
    model = load_student(model_dir)
    items = read_table(layout.dataset_dir, "items")
    if model.n_items != items.num_rows:
        raise RdistillError(f"{model_dir} was trained on {model.n_items} items but {layout.dataset_dir} has "
                            f"{items.num_rows}: export it with the dataset it was trained on")
    metrics_path = model_dir / "metrics.json"
    metrics = read_json(metrics_path) if metrics_path.is_file() else {}
    run_manifest = model_dir / MANIFEST_NAME
    lineage = {"student_dir": str(model_dir.resolve()),
               "dataset_items_sha256": file_sha256(layout.table("items"))}
    if run_manifest.is_file():
        lineage["run_config"] = read_json(run_manifest).get("config")
    target = export_student(model, items, out or layout.serving_model_dir,
                            {key: metrics.get(key) for key in ("valid", "test", "best_epoch", "seed")},
                            config_to_dict(config), lineage)
    if root.relative(target) is not None:  # inside the root: a URI root gets it too
        root.push(target)
    manifest = read_json(target / MANIFEST_NAME)
    return {"serving_dir": str(target), "name": manifest["name"], "version": manifest["version"]}


def _command_tune(config, fresh: bool) -> dict:
    from rdistill.tune import tune_students, tune_summary

    return tune_summary(tune_students(config, fresh=fresh))


def _command_run(config, force: list[str], serve: bool, keep_serving: bool, port: int) -> dict | None:
    import time

    from rdistill.pipeline import StageOutcome, run_pipeline, sample_request, summary_table

    outcomes = run_pipeline(config, force=tuple(force))
    result: dict = {}
    if serve:
        from rdistill.artifacts import ArtifactLayout
        from rdistill.serving import run_local

        started = time.time()
        root = config.storage()
        layout = ArtifactLayout(root.local)
        root.pull(layout.serving_model_dir, layout.dataset_dir)  # the stages may have been skipped here
        url = run_local(layout.serving_model_dir, port=port, blocking=False)
        result["endpoint"] = url
        result["sample"] = sample_request(url, layout)
        outcomes.append(StageOutcome("serve", "ran", time.time() - started,
                                     {"endpoint": url, "items": len(result["sample"]["response"]["items"])}))
    print(summary_table(outcomes), file=sys.stderr)
    result = {"stages": [{"stage": o.name, "status": o.status, "seconds": round(o.seconds, 1), **o.summary}
                         for o in outcomes], "seconds": round(sum(o.seconds for o in outcomes), 1), **result}
    if serve and keep_serving:
        print(json.dumps(result, indent=2), flush=True)
        print(f"serving at {result['endpoint']} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        return None  # the summary was printed before serving
    return result


def _command_serve(config, model_dir: str | Path | None, host: str, port: int, replicas: int, access_log: bool,
                   runtime: str = "auto") -> dict:
    from rdistill.artifacts import ArtifactLayout
    from rdistill.export import load_exported
    from rdistill.serving import run_local

    from rdistill.storage import fetch_folder, join_uri

    if model_dir is None:
        root = config.storage()
        local = ArtifactLayout(root.local).serving_model_dir
        root.pull(local)
        load_exported(local)  # a clear error now rather than failing replicas later
        # replicas on other nodes cannot see this machine's mirror: a URI root's replicas pull the model themselves
        model_dir = join_uri(root.root, "serving/model") if root.is_remote else local
    else:
        load_exported(fetch_folder(model_dir))
    print(f"serving {model_dir} at http://{host}:{port} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    url = run_local(model_dir, host=host, port=port, num_replicas=replicas, access_log=access_log, runtime=runtime,
                    blocking=True)
    return {"endpoint": url, "model_dir": str(model_dir), "stopped": True}


def _command_report(config, out: Path | None, measure_latency: bool) -> dict:
    from rdistill.report import report_summary, write_report

    return report_summary(write_report(config, out=out, measure_latency=measure_latency))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        from rdistill.config import load_config, profile_overrides

        overrides = list(args.overrides)
        if getattr(args, "profile", None):
            overrides = profile_overrides(args.profile) + overrides
        config = load_config(args.config, overrides)
        if args.command == "prepare":
            summary = _command_prepare(config)
        elif args.command == "train-student":
            summary = _command_train_student(config)
        elif args.command == "run":
            summary = _command_run(config, args.force, args.serve, args.keep_serving, args.port)
        elif args.command == "serve":
            summary = _command_serve(config, args.model_dir, args.host, args.port, args.replicas, args.access_log,
                                     args.runtime)
        elif args.command == "tune":
            summary = _command_tune(config, args.fresh)
        elif args.command == "export":
            summary = _command_export(config, args.model_dir, args.out)
        elif args.command == "report":
            summary = _command_report(config, args.out, args.measure_latency)
        elif args.command == "teacher" and args.teacher_command == "infer":
            summary = _command_teacher_infer(config, args.force)
        elif args.command == "teacher":
            summary = _command_teacher_train(config)
        else:
            summary = _command_evaluate(config, args.model_dir, args.popularity, args.split)
    except RdistillError as err:
        command = " ".join(filter(None, [args.command, getattr(args, "teacher_command", None)]))
        print(f"rdistill {command}: error: {err}", file=sys.stderr)
        return 2
    if summary is not None:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
