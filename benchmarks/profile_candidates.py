"""Try settings for one method of a study's profile over several seeds, each in its own database: how the SimSiam
settings of the SmallDataSSL quick profile were compared (stop 18, issue 7).

    python benchmarks/profile_candidates.py smalldatassl simsiam '{"pretrain": {"train": {"batch_size": 64}}}' \
        --seeds 0,1,2 --protocol linear --variant corrected --data-dir DIR

The JSON is deep-merged into the profile's overrides. Not a unit test: it measures. Prints the test AUC per seed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from medssl_core.execute.local import execute
from medssl_core.plan.catalog import get_study
from medssl_core.plan.grid import expand
from medssl_core.plan.study import deep_merge
from medssl_core.run.context import Context
from medssl_core.store import ResultsStore, run_sql


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study")
    parser.add_argument("method")
    parser.add_argument("overrides", help="JSON deep-merged into the profile's overrides ('{}': as declared)")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--protocol", default="linear")
    parser.add_argument("--variant", default="corrected")
    parser.add_argument("--data-dir", help="where the data is (default: medssl's, e.g. $MEDSSL_DATA)")
    parser.add_argument("--out", default="results/candidates", help="one database per candidate here")
    args = parser.parse_args()
    study = get_study(args.study)
    base = study.profile(args.profile)
    extra = json.loads(args.overrides)
    tag = hashlib.sha256(json.dumps(extra, sort_keys=True).encode()).hexdigest()[:8]
    profile = replace(base, name=f"{base.name}_candidate_{tag}", seeds=tuple(int(s) for s in args.seeds.split(",")),
                      variants=(args.variant,), variant_seeds={}, methods=(args.method,),
                      protocols=(args.protocol,), overrides=deep_merge(base.overrides, extra))
    plan = expand(replace(study, profiles=(*study.profiles, profile)), profile.name, data_dir=args.data_dir)
    db = Path(args.out) / f"{args.study}_{args.method}_{tag}.duckdb"
    db.parent.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(db)
    ctx = Context(args.data_dir, torch.device("cpu"), store.artifacts_dir, store.checkpoints_dir, progress=False)
    start = time.time()
    summary = execute(plan, store, ctx, progress=False)
    print(f"{args.overrides}: {len(summary.failed)} failed, {time.time() - start:.0f} s, database {db}")
    planned = [s.run_id for s in plan.specs if s.kind == "evaluate"]  # not the database's older candidates
    for seed, auc in run_sql(db, "SELECT seed, value FROM run_metrics WHERE split = 'test' AND metric = 'auc' "
                                 "AND run_id IN (SELECT unnest(?)) ORDER BY seed", [planned])[1]:
        print(f"  seed {seed}: test AUC {auc:.4f}")


if __name__ == "__main__":
    main()
