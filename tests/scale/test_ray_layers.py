"""`--engine ray` on a hybrid stack: the driver settles `all` and `last` to the layers that
have a feed-forward block exactly as the local engine does, so Ray scores every family the
local engine scores, with the same ranking."""

from __future__ import annotations

import pytest

from anglecurate.scoring.config import ScoreConfig
from anglecurate.scoring.pipeline import score

from ..helpers import read_ranked
from ..model.test_families import _save


def test_ray_scores_a_hybrid_stack_like_the_local_engine(tokenizer, math_json, tmp_path):
    ray = pytest.importorskip("ray")
    from anglecurate.scale.cluster import score_on_ray

    folder = tmp_path / "model"
    _save("nemotron_h (one mixer per block)", tokenizer, folder)  # layers 0 and 2 have no MLP
    base = dict(model=str(folder), data=str(math_json), field="problem", dtype="fp32", chunk_rows=4)
    local = score(ScoreConfig(**base, out=str(tmp_path / "local")))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = score_on_ray(ScoreConfig(**base, out=str(tmp_path / "ray")), num_workers=1)
        last = score_on_ray(ScoreConfig(**base, out=str(tmp_path / "last"), layers="last"), num_workers=1)
    finally:
        ray.shutdown()
    assert on_ray.status == "complete" and on_ray.manifest["device"]["engine"] == "ray"
    assert on_ray.manifest["run"]["layers"] == local.manifest["run"]["layers"] == [1, 3]
    assert on_ray.manifest["run"]["model"]["ffn_layers"] == [1, 3]
    assert last.manifest["run"]["layers"] == [3]
    a, b = read_ranked(tmp_path / "local"), read_ranked(tmp_path / "ray")
    assert a["uid"].to_list() == b["uid"].to_list()
    assert (a["c_intra_layers"] == b["c_intra_layers"]).all()
    # A local resume of the Ray folder finds it complete: the two engines record one run.
    assert score(ScoreConfig(**base, out=str(tmp_path / "ray"))).status == "already complete"
