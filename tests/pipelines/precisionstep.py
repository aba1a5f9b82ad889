"""Training-step speed of a model in fp32 and under bf16 autocast, alternating, on one thread.

    .venv/bin/python tests/pipelines/precisionstep.py                 # the quickstart's convnet (width 24)
    .venv/bin/python tests/pipelines/precisionstep.py --width 32 --rounds 5

What ``train.precision=auto`` decides between on a CPU: each round times ``--steps`` Nesterov steps
(after 3 unmeasured ones) of a freshly built convnet on one batch of 28x28 grey images, channels-last as the
train stage runs it, first in fp32, then under bf16 autocast. Prints each side's images per second per
thread (the median of the rounds) and their ratio, and whether this CPU computes bf16 natively (AMX or
AVX512-BF16: ``components.engine.native_bf16``). One thread, as each of the quickstart's two workers has.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from components import engine  # noqa: E402
from components.models import build_model  # noqa: E402


def images_per_s(precision: str, width: int, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model("convnet", in_channels=1, num_classes=10, image_size=28, dropout=0.1, width=width)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    cpu = torch.device("cpu")
    for i in range(steps + 3):
        if i == 3:
            started = time.perf_counter()
        with engine.autocast(precision, cpu):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=24)
    parser.add_argument("--batch", type=int, default=128, help="per worker: the quickstart's 256 over 2 workers")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(args.rounds):
        for precision in rates:
            rates[precision].append(images_per_s(precision, args.width, args.batch, args.steps))
    native = engine.native_bf16(torch.device("cpu"))
    print(f"convnet width {args.width}, batch {args.batch}, 1 thread; native bf16 on this CPU: {native} "
          f"(train.precision=auto runs {engine.resolve_precision('auto', torch.device('cpu'))})")
    for precision, values in rates.items():
        print(f"  {precision}: {statistics.median(values):,.0f} img/s (rounds: "
              f"{', '.join(f'{v:,.0f}' for v in values)})")
    print(f"  bf16 / fp32: {statistics.median(rates['bf16']) / statistics.median(rates['fp32']):.2f}x")


if __name__ == "__main__":
    main()
