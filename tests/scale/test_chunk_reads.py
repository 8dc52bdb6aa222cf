"""The readers of one chunk at a time (a Ray actor's unit of work, ``inspect --row``) read
that chunk alone: a JSONL chunk costs a seek and its own lines, not the file up to it."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from anglecurate.data import formats
from anglecurate.data.dataset import open_dataset

from ..data.test_dataset import count_reads

ROWS, CHUNK = 3000, 100


@pytest.fixture
def big_jsonl(tmp_path):
    path = tmp_path / "q.jsonl"
    rows = [{"id": f"q{i}", "q": f"What is {i} plus {i}?", "pad": "x" * 40} for i in range(ROWS)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_a_ray_actor_reads_each_chunk_alone(big_jsonl, monkeypatch):
    from anglecurate.scale import cluster
    from anglecurate.scoring import pipeline

    dataset = open_dataset(big_jsonl)
    expected = dict(dataset.iter_chunks(CHUNK))
    written = {}
    monkeypatch.setattr(pipeline, "score_chunk", lambda i, frame, *a: (frame, 7, frame.height))
    scorer = cluster.ChunkScorer.__new__(cluster.ChunkScorer)  # no model: only the reading is under test
    scorer.cfg = SimpleNamespace(chunk_rows=CHUNK, shard=SimpleNamespace(tag=None))
    scorer.p = SimpleNamespace(dataset=dataset)
    scorer.capture = None
    scorer.out = SimpleNamespace(write_chunk=lambda i, frame, tag: written.__setitem__(i, frame))
    read = count_reads(monkeypatch, big_jsonl)

    n_chunks = ROWS // CHUNK
    for index in reversed(range(n_chunks)):  # the order Ray hands chunks out is arbitrary
        result = scorer({"chunk": [index]})
        assert result["rows"] == [CHUNK] and result["tokens"] == [7]
    assert sorted(written) == list(range(n_chunks))
    assert all(written[i].equals(expected[i]) for i in written)
    size = big_jsonl.stat().st_size
    assert read[0] <= 2 * size + 4096, "one pass to find the chunk starts, then each chunk once"


def test_inspect_row_parses_only_that_rows_chunk(big_jsonl, tiny_model_dir, monkeypatch):
    from anglecurate.scoring.config import ScoreConfig
    from anglecurate.scoring.pipeline import inspect_row

    parsed = []
    real_parse = formats.parse_lines

    def counting_parse(batch, schema=None):
        if schema is not None:  # the rows of a chunk (opening the file infers a schema instead)
            parsed.append(len(batch))
        return real_parse(batch, schema)

    monkeypatch.setattr(formats, "parse_lines", counting_parse)
    cfg = ScoreConfig(
        model=str(tiny_model_dir), data=str(big_jsonl), out="", field="q", id_field="id", chunk_rows=CHUNK
    )
    _, seg, uid = inspect_row(cfg, ROWS - 1)
    assert uid == f"q{ROWS - 1}" and seg.n_tokens > 0
    assert parsed == [CHUNK], "the last row's chunk alone, not every chunk before it"
