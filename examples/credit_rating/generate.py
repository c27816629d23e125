"""Synthetic corporate-credit data set for the ``credit_rating`` example.

Generative story: every firm gets a latent credit-quality score ``z ~ N(0, 1)``
(higher is better).  Size, leverage, profitability, liquidity and turnover are
drawn around ``z`` with firm-specific noise, and the remaining ratios are built
from them with accounting identities (ROA = net margin x turnover, ROE = ROA /
equity share, debt/EBITDA = leverage / EBITDA-to-assets, coverage = EBIT /
interest with a quality-dependent borrowing rate).  An agency then observes a
noisy version of ``z`` and maps it to a rating via fixed thresholds chosen so
the class mix resembles a real corporate book (mostly A/BBB/BB, few AAA and D).
Because of the feature noise and the agency's noise, the classes overlap.

CLI: ``python examples/credit_rating/generate.py OUT.csv|OUT.parquet
[--rows N] [--seed S] [--missing-rate R]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

RATINGS: list[str] = ["AAA", "AA", "A", "BBB", "BB", "B", "CCC", "D"]
FEATURES: list[str] = [
    "leverage",
    "debt_to_ebitda",
    "interest_coverage",
    "current_ratio",
    "quick_ratio",
    "return_on_assets",
    "return_on_equity",
    "operating_margin",
    "net_margin",
    "cash_to_debt",
    "asset_turnover",
    "log_total_assets",
]
MISSING_FEATURES: list[str] = ["quick_ratio", "cash_to_debt"]

# Standard-normal cut points on the (standardised) agency score, worst to best:
# cumulative shares D 2%, CCC 7%, B 22%, BB 46%, BBB 76%, A 93%, AA 98%.
_CUTS = np.array([-2.054, -1.476, -0.772, -0.100, 0.706, 1.476, 2.054])
_AGENCY_NOISE = 0.25  # sd of the agency's view of z, relative to sd(z) = 1


def make_dataset(n_rows: int = 20_000, seed: int = 7, missing_rate: float = 0.0) -> pd.DataFrame:
    """Return ``n_rows`` synthetic firms with the 12 ``FEATURES`` and a ``rating``."""
    if n_rows < 0:
        raise ValueError("n_rows must be non-negative")
    if not 0.0 <= missing_rate <= 1.0:
        raise ValueError("missing_rate must be in [0, 1]")
    rng = np.random.default_rng(seed)
    n = n_rows
    z = rng.standard_normal(n)

    def noise(sd: float) -> np.ndarray:
        return rng.normal(0.0, sd, n)

    log_assets = np.clip(3.0 + 0.5 * z + noise(0.4), 0.5, 6.5)
    leverage = 1.2 / (1.0 + np.exp(0.6 + 0.8 * z + noise(0.35)))
    op_margin = np.clip(0.09 + 0.065 * z + noise(0.035), -0.5, 0.6)
    turnover = np.clip(np.exp(-0.15 + 0.05 * z + noise(0.45)), 0.05, 4.0)
    net_margin = np.clip(0.75 * op_margin - 0.04 * leverage + noise(0.025), -0.6, 0.5)
    roa = np.clip(net_margin * turnover + noise(0.01), -0.5, 0.4)
    roe = np.clip(roa / np.maximum(1.0 - leverage, 0.1), -1.0, 1.0)

    ebit_to_assets = op_margin * turnover
    ebitda_to_assets = ebit_to_assets + 0.04 * np.exp(noise(0.3))
    debt_to_ebitda = np.where(ebitda_to_assets > 0.01, leverage / np.maximum(ebitda_to_assets, 0.01), 25.0)
    debt_to_ebitda = np.clip(debt_to_ebitda, 0.0, 25.0)

    rate = np.clip(0.055 - 0.012 * z + noise(0.004), 0.02, 0.16)
    interest_to_assets = np.maximum(leverage * rate, 1e-3)
    coverage = ebit_to_assets / interest_to_assets * np.exp(noise(0.25))
    coverage = np.clip(coverage, -10.0, 100.0)

    current = np.clip(np.exp(0.3 + 0.15 * z + noise(0.2)), 0.2, 6.0)
    quick = current * rng.uniform(0.45, 0.9, n)
    cash_to_debt = np.clip(np.exp(-2.2 + 0.35 * z + noise(0.35)) / np.maximum(leverage, 0.02), 0.0, 5.0)

    agency = (z + noise(_AGENCY_NOISE)) / np.sqrt(1.0 + _AGENCY_NOISE**2)
    bucket = np.searchsorted(_CUTS, agency)  # 0 = D ... 7 = AAA
    rating = np.array(RATINGS[::-1], dtype=object)[bucket]

    columns = [
        leverage, debt_to_ebitda, coverage, current, quick, roa, roe,
        op_margin, net_margin, cash_to_debt, turnover, log_assets,
    ]  # fmt: skip
    df = pd.DataFrame(
        {name: np.asarray(col, dtype=np.float64) for name, col in zip(FEATURES, columns, strict=True)}
    )
    df["rating"] = rating.astype(str)
    if missing_rate > 0.0:
        for name in MISSING_FEATURES:
            df.loc[rng.random(n) < missing_rate, name] = np.nan
    return df


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out_path", type=Path, help="output file (.csv or .parquet)")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--missing-rate", type=float, default=0.0)
    args = parser.parse_args(argv)

    suffix = args.out_path.suffix.lower()
    if suffix not in {".csv", ".parquet"}:
        parser.error("OUT_PATH must end in .csv or .parquet")
    df = make_dataset(args.rows, args.seed, args.missing_rate)
    args.out_path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        df.to_csv(args.out_path, index=False)
    else:
        df.to_parquet(args.out_path, index=False)
    counts = df["rating"].value_counts().reindex(RATINGS, fill_value=0)
    print(f"rows={len(df)} " + " ".join(f"{k}={v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
