"""The multi-node scenario of test_multinode.py, run in a process of its own.

`python tests/multinode_scenario.py ROOT BACKBONE RESULT_JSON` prepares the tiny dataset under ROOT, starts a
two-node Ray on this machine (ray.cluster_utils.Cluster: a head and one worker node, two logical CPUs each,
told apart by the custom resources `node_a` and `node_b`), trains the teacher with one worker per node (STRICT_SPREAD), runs a
two-trial tune campaign whose trials cannot share a node, and writes to RESULT_JSON which node each teacher
worker and each trial ran on. Its own process because the test session already has a Ray of its own in-process
(one driver joins one cluster); its own RAY_TMPDIR (set by the test) because Cluster records, and at shutdown
deletes, the machine's "current cluster" file under it.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

from tiny_data import tiny_config, write_cyclic_log

NODE_LABELS = ("node_a", "node_b")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(root: Path, backbone: str, result_path: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from rdistill.data.prepare import prepare_dataset
    from rdistill.teacher.train import train_teacher
    from rdistill.tune import tune_students

    write_cyclic_log(root / "raw")
    config = tiny_config(
        root, f"teacher.model={backbone}", "teacher.epochs=1", "teacher.max_steps_per_epoch=4",
        "teacher.batch_size=16", "teacher.max_eval_rows=32", "teacher.num_workers=2", "teacher.cpus_per_worker=0.5",
        "teacher.placement_strategy=STRICT_SPREAD",
        # more than half a node per trial: two concurrent trials must take a node each
        "student.name=gru4rec", "tune.num_samples=2", "tune.max_concurrent=2", "tune.max_epochs=2",
        "tune.scheduler=fifo", "tune.cpus_per_trial=1.5",
        "tune.space={train.lr: {type: loguniform, low: 0.001, high: 0.01}}",
    )
    prepare_dataset(config)

    # Two CPUs a node: a teacher worker takes half of one and Ray Data's read tasks need a whole one beside it.
    # The dashboard serves the state API that Ray Train's placement-group cleaner polls. Its port and the head's
    # dashboard-agent port are free ones: the defaults (8265, 52365) may be held by another Ray on the machine,
    # such as the test session's own.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "resources": {"node_a": 1}, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": free_port(), "dashboard_agent_listen_port": free_port()})
    try:
        cluster.add_node(num_cpus=2, resources={"node_b": 1})  # Cluster picks a free agent port for it
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        labels = {node["NodeID"]: label for node in ray.nodes() if node["Alive"]
                  for label in NODE_LABELS if label in node["Resources"]}
        teacher = train_teacher(config)
        campaign = tune_students(config)
        result_path.write_text(json.dumps({
            "nodes": sorted(labels.values()),
            "teacher_worker_nodes": [labels.get(node_id, node_id) for node_id in teacher.worker_node_ids],
            "trial_nodes": [labels.get(trial["node_id"], trial["node_id"]) for trial in campaign.trials],
            "trial_errors": [trial["error"] for trial in campaign.trials],
            "teacher_checkpoint": str(teacher.checkpoint_dir),
            "campaign_dir": str(campaign.campaign_dir),
            "serving_dir": str(campaign.serving_dir),
        }))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
