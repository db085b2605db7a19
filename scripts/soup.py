"""Averages weights files of one architecture into one (a "model soup"), recording each
ingredient's model card, so that the result can be scored and shipped like a run's weights.

    python scripts/soup.py A.safetensors B.safetensors [--coefficients 0.5 0.5] --out SOUP.safetensors

Checkpoints along one meta-training trajectory (a run and the runs it was warm-started from)
share a basin, so their average is a working optimizer; whether it is a better one is for the
selection subset to say (``scripts/ship.py SOUP.safetensors``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax

from lopt.weights import load, save

sys.path.insert(0, str(Path(__file__).parent))
from ship import lineage_cost, weights_provenance  # noqa: E402


def soup(paths: list[Path], coefficients: list[float]):
    """``(theta, learned optimizer, provenance)`` of the weighted average of ``paths``."""
    if len(paths) != len(coefficients):
        raise ValueError(f"{len(paths)} files but {len(coefficients)} coefficients")
    if abs(sum(coefficients) - 1.0) > 1e-6 or min(coefficients) < 0:
        raise ValueError(f"coefficients must be non-negative and sum to 1, got {coefficients}")
    loaded = [load(p) for p in paths]
    learned = loaded[0][1]
    for p, (_, other, _) in zip(paths, loaded):
        if other != learned:
            raise ValueError(f"{p} holds {other}, not {learned}: only one architecture and "
                             "config can be averaged")
    theta = jax.tree_util.tree_map(lambda *xs: sum(c * x for c, x in zip(coefficients, xs)),
                                   *[t for t, _, _ in loaded])
    cards = [weights_provenance(p, card) for p, (_, _, card) in zip(paths, loaded)]
    provenance = {**lineage_cost(cards),
                  "soup": [{"weights": str(p), "coefficient": c, **prov}
                           for p, c, prov in zip(paths, coefficients, cards)]}
    return theta, learned, provenance


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", type=Path, nargs="+")
    p.add_argument("--coefficients", type=float, nargs="*",
                   help="one per file, summing to 1 (default: equal)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    coefficients = args.coefficients or [1 / len(args.weights)] * len(args.weights)
    theta, learned, provenance = soup(args.weights, coefficients)
    save(args.out, theta, learned, provenance=provenance)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
