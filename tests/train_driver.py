"""Run ``train_run`` in a process of its own, logging the row ids it trains.

The kill -9 / resume tests start this script, kill it mid-stream and start it
again with ``--resume``.  A :class:`TrainedRows` callback appends, after each
trained batch (before it may be checkpointed), one line
``<rows_end> <id> <id> ...`` to ``--rows-file`` and sleeps ``--step-delay``
seconds so the test can kill the process between checkpoints; each process
first writes ``# resume <rows_start>`` when it continues a run.

Usage::

    python tests/train_driver.py --data LOGS --schema S.yaml --out RUN \
        --config C.yaml --rows-file RUN.rows [--step-delay 0.4] [--resume]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from matta_rec.errors import MattaError  # noqa: E402
from matta_rec.training import TrainingCallback, train_run  # noqa: E402


class TrainedRows(TrainingCallback):
    """Append the ``column`` values of every trained batch to ``path``.

    Args:
        path: the log file (appended to, flushed per batch).
        column: a numeric feature holding a row id.
        step_delay_s: sleep this long after every batch.
    """

    def __init__(self, path: str, column: str = "row_id", step_delay_s: float = 0.0):
        if step_delay_s < 0:
            raise ValueError(f"step_delay_s must be >= 0, got {step_delay_s}")
        self.path, self.column, self.step_delay_s = path, column, step_delay_s
        self.handle = None

    def on_train_begin(self, info):
        if self.column not in info.schema.feature_names:
            raise ValueError(f"the schema has no feature {self.column!r} to log")
        self.handle = open(self.path, "a", encoding="utf-8")
        if info.resumed:
            self.handle.write(f"# resume {info.rows_start}\n")
            self.handle.flush()

    def on_batch_end(self, rows_end, features, labels, logits):
        ids = features[self.column].reshape(-1)
        self.handle.write(f"{rows_end} " + " ".join(str(int(v)) for v in ids) + "\n")
        self.handle.flush()
        if self.step_delay_s:
            time.sleep(self.step_delay_s)

    def on_train_end(self, metrics):
        self.handle.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--rows-file", required=True)
    parser.add_argument("--step-delay", type=float, default=0.0)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    callback = TrainedRows(args.rows_file, step_delay_s=args.step_delay)
    try:
        if args.resume:
            train_run(None, args.data, None, args.out, resume=True, callbacks=[callback])
        else:
            train_run(args.config, args.data, args.schema, args.out, callbacks=[callback])
    except MattaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
