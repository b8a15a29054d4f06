"""tf.distribute multi-worker input: two worker processes on 127.0.0.1 (TF_CONFIG)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

import tfds_bigarrays as tb

N = 4000
WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf, tensorflow_datasets as tfds
    import tfds_bigarrays

    data_dir, out = sys.argv[1], sys.argv[2]
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    GLOBAL_BATCH = 64

    def dataset_fn(ctx):
        return tfds.load(
            "shared", data_dir=data_dir, split="train", as_supervised=True,
            shuffle_files=True, batch_size=ctx.get_per_replica_batch_size(GLOBAL_BATCH),
            read_config=tfds.ReadConfig(input_context=ctx, shuffle_seed=ctx.input_pipeline_id),
        )

    # What this worker's input pipeline yields in one epoch.
    ctx = tf.distribute.InputContext(
        num_input_pipelines=strategy.cluster_resolver.cluster_spec().num_tasks("worker"),
        input_pipeline_id=strategy.cluster_resolver.task_id,
        num_replicas_in_sync=strategy.num_replicas_in_sync,
    )
    ids = np.concatenate([x[:, 0] for x, _ in tfds.as_numpy(dataset_fn(ctx))])

    # And through the strategy: a distributed epoch, counted with all-reduce
    # across both workers (every example once in the whole cluster).
    dist = strategy.distribute_datasets_from_function(dataset_fn)

    @tf.function
    def step(batch):
        x, _ = batch
        return tf.cast(tf.shape(x)[0], tf.int64), tf.reduce_sum(tf.cast(x[:, 0], tf.int64))

    count = total = 0
    for batch in dist:
        n, s = strategy.run(step, args=(batch,))
        count += int(strategy.reduce("SUM", n, axis=None))
        total += int(strategy.reduce("SUM", s, axis=None))
    json.dump({"ids": ids.tolist(), "count": count, "total": total}, open(out, "w"))
""")


def _ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_input_context_shares_across_two_worker_processes(tmp_path):
    x = np.zeros((N, 4), np.float32)
    x[:, 0] = np.arange(N)
    y = (np.arange(N) % 2).astype(np.int64)
    tb.build(
        "shared",
        data_dir=tmp_path,
        splits={"train": {"x": x, "y": y}},
        supervised_keys=("x", "y"),
        shard_bytes=8192,
    )
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    workers = [f"127.0.0.1:{p}" for p in _ports(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2"}
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(tmp_path), str(tmp_path / f"out{index}.json")],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    results = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    shares = [np.array(r["ids"], dtype=np.int64) for r in results]
    assert all(len(s) > 0 for s in shares)
    assert not set(shares[0]) & set(shares[1]), "workers overlap"
    np.testing.assert_array_equal(np.sort(np.concatenate(shares)), np.arange(N))
    for r in results:  # each worker saw the cluster-wide epoch through all-reduce
        assert r["count"] == N and r["total"] == N * (N - 1) // 2
