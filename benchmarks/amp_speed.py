"""fp32 vs bf16 autocast: pretraining steps per second of one case of `medssl bench`, the two precisions' passes
taking turns (this VM's speed drifts between minutes). Why the SmallDataSSL quick profile trains in fp32 on a CPU:

    python benchmarks/amp_speed.py --size 28 --batch 128 --repeats 6

Not a unit test: it measures. Prints pairs/s per pass and the medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medssl_core.bench import Case, _method, _step_fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--method", default="simclr", choices=("simclr", "barlow_twins"))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8, help="steps a timed pass")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    case = Case(args.arch, args.size, args.method, args.batch)
    views = [torch.randn(args.batch, 3, args.size, args.size).to(memory_format=torch.channels_last) for _ in "ab"]
    steps = {bf16: _step_fn(_method(case, device, True), device, bf16) for bf16 in (False, True)}
    passes: dict[bool, list[float]] = {False: [], True: []}
    for repeat in range(args.repeats + 1):  # the first pass warms up, untimed
        for bf16, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step(views[0], views[1])
            if repeat:
                passes[bf16].append(args.steps * args.batch / (time.perf_counter() - start))
    for bf16, name in ((False, "fp32"), (True, "bf16 autocast")):
        print(f"{name}: median {statistics.median(passes[bf16]):.0f} pairs/s "
              f"({', '.join(f'{v:.0f}' for v in passes[bf16])})")


if __name__ == "__main__":
    main()
