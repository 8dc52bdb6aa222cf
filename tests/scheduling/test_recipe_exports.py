"""The exports other recipes read: the ordered file (read as ms-swift and axolotl read JSONL,
and by Trinity-RFT's own sequential reader), AdaRFT's ``extra_info.difficulty`` (through
verl's own dataset, the one AdaRFT extends), Trinity-RFT's easiness column (through its own
reader and offline_easy2hard selector). Each pins the direction: GAIN-RL's learned-first end
(the highest angle score, rank 0) is each consumer's easy end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

from anglecurate.scheduling.epochs import ScheduleConfig, create_schedule, update_schedule
from anglecurate.scheduling.export import EASINESS_COLUMN

from ..helpers import read_ranked, run_cli

PER_EPOCH, EPOCHS = 8, 3


@pytest.fixture
def exported(ranking, tmp_path):
    cfg = ScheduleConfig(
        str(ranking),
        str(tmp_path / "s"),
        per_epoch=PER_EPOCH,
        epochs=EPOCHS,
        seed=2,
        sampler={"sigma": 4.0},
        batch_multiple=4,
        exports=("ordered", "adarft", "trinity"),
    )
    create_schedule(cfg)
    return tmp_path / "s"


def by_falling_score(ranking, frame: pl.DataFrame, column: str) -> list:
    """``frame[column]`` in the order of the ranking's angle score, highest first."""
    scores = read_ranked(ranking).select("uid", "score")
    return scores.join(frame, on="uid").sort("score", descending=True, maintain_order=True)[column].to_list()


def test_ordered_file_is_the_schedule_with_its_epoch_boundaries(exported):
    datasets = pytest.importorskip("datasets")
    schedule = pl.read_parquet(exported / "schedule.parquet")
    # ms-swift (swift/dataset/loader.py) and axolotl (utils/data/shared.py) read a local JSONL
    # file with datasets' json builder, in file order when their shuffle is off
    read = datasets.load_dataset("json", data_files=str(exported / "ordered" / "train.jsonl"), split="train")
    assert read["uid"] == schedule["uid"].to_list()
    assert read["epoch"] == schedule["epoch"].to_list() and read["position"] == schedule["position"].to_list()
    assert (
        read[0]["prompt"]
        == pl.read_parquet(exported / "rows.parquet").row(read[0]["rank"], named=True)["prompt"]
    )

    boundaries = json.loads((exported / "ordered-epochs.json").read_text())
    assert boundaries["rows"] == EPOCHS * PER_EPOCH
    assert boundaries["epochs"] == [
        {"epoch": e, "first_row": e * PER_EPOCH, "rows": PER_EPOCH} for e in range(EPOCHS)
    ]
    for epoch in boundaries["epochs"]:
        assert set(read["epoch"][epoch["first_row"] : epoch["first_row"] + epoch["rows"]]) == {epoch["epoch"]}

    # easy first: the open loop walks the window from rank 0 (highest score) to the last rank
    mean_rank = schedule.group_by("epoch", maintain_order=True).agg(pl.col("rank").mean())["rank"].to_list()
    assert mean_rank == sorted(mean_rank) and mean_rank[0] < mean_rank[-1]


def test_trinity_reads_the_ordered_file_in_order(exported):
    pytest.importorskip("trinity.buffer.reader.file_reader")
    from trinity.buffer.reader.file_reader import FileReader
    from trinity.common.config import DataSelectorConfig, StorageConfig

    config = StorageConfig(
        name="gainrl",
        path=str(exported / "ordered"),
        split="train",
        batch_size=4,
        total_epochs=1,
        default_workflow_type="math_workflow",
        data_selector=DataSelectorConfig(selector_type="sequential"),
    )
    reader = FileReader(config)
    fed = [t.raw_task["uid"] for _ in range(EPOCHS * PER_EPOCH // 4) for t in reader._read_sync()]
    assert fed == pl.read_parquet(exported / "schedule.parquet")["uid"].to_list()


def test_adarft_difficulty_through_verls_dataset(ranking, exported, tokenizer, tmp_path):
    pytest.importorskip("verl.utils.dataset.rl_dataset")
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    frame = pl.read_parquet(exported / "adarft.parquet")
    rows = pl.read_parquet(exported / "rows.parquet")
    assert frame.drop("extra_info").equals(rows)  # every row once, every column kept
    config = OmegaConf.create(
        {"prompt_key": "prompt", "cache_dir": str(tmp_path / "cache"), "filter_overlong_prompts": False}
    )
    dataset = RLHFDataset(data_files=[str(exported / "adarft.parquet")], tokenizer=tokenizer, config=config)
    read = [dataset[i] for i in range(len(dataset))]
    # AdaRFT's RLHFDataset.__getitem__ (recipe/adarft/utils/dataset/rl_dataset.py):
    difficulty = [row_dict.get("extra_info", {}).get("difficulty", 0) for row_dict in read]
    ranks = [row["rank"] for row in read]
    assert difficulty == pytest.approx([100.0 * r / (len(read) - 1) for r in ranks])
    assert min(difficulty) == 0.0 and max(difficulty) == 100.0

    # the sign: the highest angle score is AdaRFT's easiest (0), the lowest its hardest (100);
    # AdaRFT starts near its d_min and raises the target difficulty as the reward rises
    by_score = by_falling_score(
        ranking, frame.with_columns(pl.col("extra_info").struct.field("difficulty")), "difficulty"
    )
    assert by_score[0] == 0.0 and by_score[-1] == 100.0
    assert by_score == sorted(by_score)


def test_adarft_keeps_verls_extra_info(tiny_model_dir, tmp_path):
    from anglecurate.scoring.config import ScoreConfig
    from anglecurate.scoring.pipeline import score

    rows = [
        {
            "prompt": [{"role": "user", "content": f"Compute {i} + {i}." + " Carefully." * (i % 3)}],
            "extra_info": {"index": i, "split": "train"},
        }
        for i in range(6)
    ]
    pl.DataFrame(rows).write_parquet(tmp_path / "verl.parquet")
    score(
        ScoreConfig(
            model=str(tiny_model_dir),
            data=str(tmp_path / "verl.parquet"),
            out=str(tmp_path / "out"),
            dtype="fp32",
        )
    )
    create_schedule(
        ScheduleConfig(str(tmp_path / "out"), str(tmp_path / "s"), per_epoch=2, exports=("adarft",))
    )
    frame = pl.read_parquet(tmp_path / "s" / "adarft.parquet")
    extra = frame["extra_info"].to_list()
    assert [e["index"] for e in extra] == [int(u) for u in frame["uid"]]  # uid is the row index here
    assert {e["split"] for e in extra} == {"train"}
    assert [e["difficulty"] for e in extra] == pytest.approx([100.0 * r / 5 for r in frame["rank"]])


def test_trinity_offline_easy2hard_serves_the_highest_scores_first(ranking, exported):
    pytest.importorskip("trinity.buffer.reader.file_reader")
    from trinity.buffer.reader.file_reader import FileReader
    from trinity.common.config import DataSelectorConfig, StorageConfig

    frame = pl.read_parquet(exported / "trinity" / "train.parquet")
    assert frame.drop(EASINESS_COLUMN).equals(pl.read_parquet(exported / "rows.parquet"))
    assert frame[EASINESS_COLUMN].to_list() == pytest.approx(
        [1.0 - r / (frame.height - 1) for r in frame["rank"]]
    )

    config = StorageConfig(
        name="gainrl",
        path=str(exported / "trinity"),
        split="train",
        batch_size=8,
        total_epochs=1,
        default_workflow_type="math_workflow",
        data_selector=DataSelectorConfig(selector_type="offline_easy2hard", feature_keys=[EASINESS_COLUMN]),
    )
    reader = FileReader(config)
    served = [t.raw_task["uid"] for _ in range(frame.height // 8) for t in reader._read_sync()]
    assert served == by_falling_score(ranking, frame, "uid")  # Trinity: higher feature = easier, first


def test_update_rewrites_the_ordered_file(exported, tmp_path):
    feedback = tmp_path / "fb.jsonl"
    feedback.write_text(json.dumps({"accuracy": 0.9}) + "\n")
    update_schedule(exported, feedback)
    schedule = pl.read_parquet(exported / "schedule.parquet")
    ordered = pl.read_ndjson(exported / "ordered" / "train.jsonl")
    assert ordered["uid"].to_list() == schedule["uid"].to_list() and schedule["epoch"].max() == EPOCHS
    epochs = json.loads((exported / "ordered-epochs.json").read_text())["epochs"]
    assert epochs[-1] == {"epoch": EPOCHS, "first_row": EPOCHS * PER_EPOCH, "rows": PER_EPOCH}


def test_export_names_from_the_cli(ranking, tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(
        monkeypatch, capsys, "schedule", "--ranking", ranking, "--out", tmp_path / "s", "--per-epoch", 8,
        "--export", "adarft", "--export", "ordered", "--export", "trinity",
    )  # fmt: skip
    assert code == 0, err
    for name in ("adarft.parquet", "ordered/train.jsonl", "ordered-epochs.json", "trinity/train.parquet"):
        assert (tmp_path / "s" / name).exists(), name
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "schedule",
        "--ranking",
        ranking,
        "--out",
        tmp_path / "t",
        "--per-epoch",
        8,
        "--export",
        "nemo",
    )
    assert code == 2 and "choose from trl, verl, openrlhf, ordered, adarft, trinity" in err


def test_the_documented_open_instruct_mapping_puts_rank_0_in_the_easiest_bucket(exported, monkeypatch):
    """docs/schedule.md's snippet, run as written on a schedule folder named S."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "schedule.md").read_text()
    snippet = doc.split("### open-instruct")[1].split("```python\n")[1].split("```")[0]
    monkeypatch.chdir(exported.parent)
    os.rename(exported, exported.parent / "S")
    exec(snippet, {})
    frame = pl.read_ndjson("open_instruct_train.jsonl").sort("rank")
    meta = frame["difficulty"].to_list()
    # open-instruct: bucket 0 and quantile 0 are the easiest, sampled first (difficulty_curriculum.py)
    assert meta[0]["bucket_index"] == 0 and meta[0]["expected_quantile"] == 0.0
    assert meta[-1]["bucket_index"] == meta[-1]["bucket_count"] - 1 and meta[-1]["expected_quantile"] == 1.0
    buckets = [m["bucket_index"] for m in meta]
    assert buckets == sorted(buckets) and len(set(buckets)) == meta[0]["bucket_count"]
