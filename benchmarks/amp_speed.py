"""fp32 vs bf16 autocast: pretraining steps per second of one case of `medssl bench`, the two precisions' passes
taking turns (this VM's speed drifts between minutes). Why the SmallDataSSL quick profile trains in fp32 on a CPU:

    python benchmarks/amp_speed.py --size 28 --batch 128 --repeats 6

Not a unit test: it measures. Prints pairs/s per pass and the medians.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from medssl_core.train.bench import Case, case_method, optimiser_step, timed_in_turns


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
    case = Case(args.arch, args.size, args.method, args.batch)
    device = torch.device("cpu")
    views = [torch.randn(args.batch, 3, args.size, args.size).to(memory_format=torch.channels_last) for _ in "ab"]
    steps = {name: optimiser_step(case_method(case, device, True), device, bf16)
             for name, bf16 in (("fp32", False), ("bf16 autocast", True))}

    def timed_pass(step):  # one pass: ``--steps`` optimiser steps on the same two views
        return lambda: [step(*views) for _ in range(args.steps)]

    times, _ = timed_in_turns({name: timed_pass(step) for name, step in steps.items()}, args.repeats, device)
    for name, seconds in times.items():
        rates = [args.steps * args.batch / t for t in seconds]
        print(f"{name}: median {statistics.median(rates):.0f} pairs/s ({', '.join(f'{v:.0f}' for v in rates)})")


if __name__ == "__main__":
    main()
