"""`tamor generate` as a Ray Data job: the same seed writes the same rows."""

import pandas as pd
import pytest

from tamor.platform.generate import generate
from tamor.platform.world import WorldConfig


def read_sorted(path):
    return pd.read_parquet(path).sort_values(["ts", "user_id", "item_id"]).reset_index(drop=True)


def test_generation_is_deterministic_across_blocks(ray_session, tmp_path):
    cfg = WorldConfig(rows=9_000, n_users=600, n_items=60, seed=11, rows_per_block=4_000)  # 3 blocks
    generate(cfg, tmp_path / "a")
    generate(cfg, tmp_path / "b")
    a, b = read_sorted(tmp_path / "a" / "logs"), read_sorted(tmp_path / "b" / "logs")
    assert len(a) == 9_000
    pd.testing.assert_frame_equal(a, b)
    assert (tmp_path / "a" / "world.json").exists()


def test_generate_refuses_to_overwrite(ray_session, tmp_path):
    cfg = WorldConfig(rows=100, n_users=500, seed=1)
    generate(cfg, tmp_path)
    with pytest.raises(FileExistsError):
        generate(cfg, tmp_path)
