"""Kill benchmark: a Ray Train worker killed at a random point in each of N runs, vs one uninterrupted run.

    .venv/bin/python tests/pipelines/killbench.py 5 [seed]     # ~2-3 min per run on 2 cores

Prints, per run: exit status, parent runs (must be 1), duplicate metric steps (must be 0), the epoch the
restart resumed from, where the worker was killed, and test accuracy beside the uninterrupted run's.
"""
import random
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from pipelines.services import names
from tests.pipelines.test_fault_tolerance import RUN, Cli, _runs, _train_workers

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5
rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
rows = []
def one(kill: bool):
    d = Path(tempfile.mkdtemp(prefix="killbench-"))
    cli = Cli(RUN, d)
    t0 = time.time(); killed_at = None
    try:
        if kill:
            epoch = rng.randint(1, 4)
            cli.wait_for(f"epoch {epoch}/6 done")
            time.sleep(rng.uniform(0, 2.0))
            ws = _train_workers(cli.proc.pid)
            victim = rng.choice(ws)
            victim.kill(); killed_at = f"after epoch {epoch} + delay, pid {victim.pid}"
        rc = cli.finish()
    finally:
        cli.kill()
    client, parents, train = _runs(d)
    hist = client.get_metric_history(train[0].info.run_id, names.TRAIN_LOSS)
    steps = [m.step for m in hist]
    resumed = re.findall(r"resuming from the checkpoint of epoch (\d+)", cli.output)
    acc = parents[0].data.metrics.get(names.TEST_ACCURACY)
    return dict(rc=rc, parents=len(parents), dup_steps=len(steps) - len(set(steps)), steps=sorted(set(steps)),
                resumed=resumed, killed_at=killed_at, test_acc=acc, wall=round(time.time() - t0))
base = one(False); print("uninterrupted", base, flush=True)
for i in range(N):
    r = one(True); print(f"run {i+1}", r, flush=True); rows.append(r)
ok = sum(r["rc"] == 0 and r["parents"] == 1 and r["dup_steps"] == 0 and r["steps"] == list(range(1, 7)) for r in rows)
print(f"{ok}/{N} complete with one parent run, each epoch logged once; test acc {[r['test_acc'] for r in rows]} vs {base['test_acc']}")
