"""CSV planning: chunks are exact line ranges — every row in exactly one chunk, in order — whatever the
file's line lengths, its last line (with or without an end), the chunk size and the read block size."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import modelport.batch.plan as plan


@pytest.mark.parametrize("block", [7, 64, 1_000, 1 << 20])
def test_csv_chunks_are_exact_line_ranges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    monkeypatch.setattr(plan, "_BLOCK", block)
    rng = random.Random(block)
    for _ in range(60):
        count = rng.randint(1, 3_000)
        lines = [("x" * rng.randint(0, 40)) + "\n" for _ in range(count)]
        if rng.random() < 0.5:  # the last line without its end
            lines[-1] = lines[-1].rstrip("\n") or "y"
        source = tmp_path / "t.csv"
        source.write_bytes(b"a,b\n" + "".join(lines).encode())
        rows = rng.choice([1_000, 1_001, 1_500, 2_999, 3_000, 5_000])
        expected, offset = [], 4
        for first in range(0, count, rows):
            size = sum(len(line) for line in lines[first : first + rows])
            expected.append((offset, offset + size, first, len(lines[first : first + rows])))
            offset += size
        planned = plan.plan_input(str(source), rows)
        assert [(c.start, c.stop, c.first_row, c.rows) for c in planned.chunks] == expected
        assert planned.rows == count
