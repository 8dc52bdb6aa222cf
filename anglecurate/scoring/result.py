"""What a scoring run, a merge or a re-rank did: the folder, its status and manifest, for
the CLI summary and ``--json``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from anglecurate.scoring.ranking import RankChoice


@dataclass
class ScoreResult:
    """What a run did, for the CLI summary and ``--json``."""

    out: str
    status: str  # "complete", "already complete", "re-ranked" or "shard complete"
    manifest: dict
    chunks_resumed: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.out)

    @property
    def counts(self) -> dict:
        """scored, skipped (by reason), truncated, undefined_score, dropped."""
        return self.manifest.get("counts", {})

    @property
    def timing(self) -> dict:
        """wall_s, rows and tokens of this run, and their rates."""
        return self.manifest.get("timing", {})

    def summary(self) -> dict:
        m = self.manifest
        return {
            "out": self.out,
            "status": self.status,
            "rows": m["run"]["dataset"]["rows"],
            **m["counts"],
            "ranking": RankChoice.from_dict(m["ranking"]).describe(),
            "timing": m["timing"],
            "chunks_resumed": self.chunks_resumed,
            "parts": [p["file"] for p in m["outputs"]["ranked"]],
            "layers": _layer_list(m["run"]["layers"], m["run"]["model"]["num_layers"]),
            "attention": m.get("device", {}).get("attn_implementation"),
            "scored_part": m.get("device", {}).get("scored"),
        }


def _layer_list(layers: list[int], num_layers: int) -> str:
    """``all 24`` when every layer was scored, else the indices."""
    return f"all {num_layers}" if layers == list(range(num_layers)) else ", ".join(map(str, layers))


def run_timing(wall: float, rows: int, tokens: int) -> dict:
    return {
        "wall_s": round(wall, 3),
        "rows_this_run": rows,
        "tokens_this_run": tokens,
        "tokens_per_s": round(tokens / wall, 1) if wall > 0 else None,
        "rows_per_s": round(rows / wall, 2) if wall > 0 else None,
    }
