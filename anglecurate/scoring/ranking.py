"""The ranking choice and the rank keys: which stored value orders the rows, and how.

Scoring stores every scored layer's c_intra and c_inter per row (and, for the authors'
metric, their per-prompt value), so the ranking is a cheap function of stored columns: it
runs at the end of `score` and again, without the model, in `anglecurate rank`. One code
path serves both, so `rank` with the choice `score` made reproduces `score` exactly.

    angles:            score = w_intra * c_intra[layer] + w_inter * c_inter[layer]
    gainrl-reference:  score = the authors' per-prompt value (anglecurate.scoring.gainrl_reference)

A zero weight drops its term, so a NaN there cannot poison the score. With length control
the rank follows the score's residual after a monotone (isotonic) fit on question length:
the part of the score that length does not explain. Both columns are always written.
NaN scores go last, first (where torch's descending argsort puts them, as in the authors'
script) or are dropped from the ranking into ``undefined.parquet``.

The order need not be the score's: ``by`` names what orders the rows (the score columns are
written either way), each with its own direction (``ascending`` flips it):

    score           the angle score (or its length-controlled residual), highest first
    learnability    p_pass (1 - p_pass), the expected reward variance: highest first
    p_pass          the predicted pass rate, highest first: easiest first
    length          n_question, shortest first (ties: input order, as the pilot's length arm)
    any other numeric column (a dataset's own difficulty, say): highest first

NaN and null values of the ``by`` column follow ``nan_policy`` as NaN scores do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import polars as pl

from anglecurate.base.errors import UserError

METRICS = ("angles", "gainrl-reference")
NAN_POLICIES = ("last", "drop", "first")
ROW = "_row"  # the global input row index (also store.ROW): tie-breaker and join key
BY_KEY = "_by"  # a stored column that orders the rows (``RankChoice.by``), as read for the keys
# What `--by` can name beyond the stored numeric columns: values the ranking computes.
COMPUTED = ("score", "score_length_controlled", "c_intra", "c_inter", "length", "row_index")
# The directions that are not "highest first".
LOWEST_FIRST = frozenset({"length"})
# Columns the ranking writes (recomputed by every ranking, replaced in ranked rows).
RANK_COLUMNS = ("rank", "score", "score_length_controlled", "c_intra", "c_inter")


@dataclass(frozen=True)
class RankChoice:
    """How rows are ordered. ``layer`` is a model layer index (None: the deepest scored)."""

    metric: str = "angles"
    layer: int | None = None
    w_intra: float = 1.0
    w_inter: float = 1.0
    length_control: bool = False
    nan_policy: str = "last"
    by: str = "score"  # what orders the rows (module docstring); the score is written anyway
    ascending: bool | None = None  # None: the direction ``by`` names (lowest first for length)

    @property
    def lowest_first(self) -> bool:
        return self.by in LOWEST_FIRST if self.ascending is None else self.ascending

    def validate(self) -> None:
        if self.metric not in METRICS:
            raise UserError(f"--metric {self.metric!r}: choose one of {', '.join(METRICS)}")
        if self.nan_policy not in NAN_POLICIES:
            raise UserError(f"--nan-policy {self.nan_policy!r}: choose one of {', '.join(NAN_POLICIES)}")
        if self.metric == "angles" and self.w_intra == 0 and self.w_inter == 0:
            raise UserError("--w-intra and --w-inter are both 0; the score would be constant")
        if not isinstance(self.by, str) or not self.by.strip():
            raise UserError("--by needs a name: score, learnability, p_pass, length or a numeric column")

    def resolved(self, layers: list[int], num_layers: int, option: str = "--rank-layer") -> RankChoice:
        """With ``layer`` checked against the scored layers (negative counts from the end)."""
        if self.layer is None:
            return replace(self, layer=max(layers))
        layer = resolve_layer(self.layer, num_layers, option)
        if layer not in layers:
            wanted = f"--layers {','.join(map(str, sorted({*layers, layer})))}"
            fix = f"score it too ({wanted})" if option == "--rank-layer" else f"score again with {wanted}"
            raise UserError(
                f"{option} {self.layer} is not among the scored layers {layers}; pass one of those, or {fix}"
            )
        return replace(self, layer=layer)

    def to_dict(self) -> dict:
        """The choice as the manifest and a schedule's state record it. The default order
        (the score, highest first) records no ``by``, so a ranking scored before ``by``
        existed, and every schedule drawn from one, keeps its identity."""
        data = asdict(self)
        data["ascending"] = self.lowest_first
        if self.by == "score" and not self.lowest_first:
            del data["by"], data["ascending"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> RankChoice:
        choice = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        if choice.ascending is not None and choice.ascending == (choice.by in LOWEST_FIRST):
            choice = replace(choice, ascending=None)  # the by's own direction, said explicitly
        return choice

    def describe(self) -> str:
        if self.by == "length":
            return "length (n_question), " + ("longest first" if not self.lowest_first else "shortest first")
        if self.by != "score":
            return f"{self.by}, " + ("lowest first" if self.lowest_first else "highest first")
        if self.metric == "gainrl-reference":
            text = f"gainrl-reference at layer {self.layer}"
        else:
            text = f"layer {self.layer}, {self.w_intra:g} x c_intra + {self.w_inter:g} x c_inter"
        text += ", length-controlled" if self.length_control else ""
        return text + (", lowest first" if self.lowest_first else "")


def resolve_layer(index: int, num_layers: int, option: str) -> int:
    """A layer index (negative counts from the end) checked against the model's depth."""
    if not -num_layers <= index < num_layers:
        raise UserError(
            f"{option}: layer {index} does not exist; the model has {num_layers} layers "
            f"(0..{num_layers - 1}, or -1..-{num_layers} from the end)"
        )
    return index % num_layers


def key_columns(choice: RankChoice, layers: list[int]) -> list[pl.Expr]:
    """What :func:`rank_keys` reads of each stored row (besides the row index): the question
    length and the ranking layer's two values only, so the keys of a large dataset stay a
    few scalars per row however many layers were scored."""
    pos = layers.index(choice.layer)
    cols = [
        pl.col("n_question"),
        pl.col("c_intra_layers").list.get(pos).cast(pl.Float64).alias("c_intra"),
        pl.col("c_inter_layers").list.get(pos).cast(pl.Float64).alias("c_inter"),
    ]
    cols += [pl.col("gainrl_reference")] if choice.metric == "gainrl-reference" else []
    return cols + ([] if choice.by in COMPUTED else [pl.col(choice.by).cast(pl.Float64).alias(BY_KEY)])


def rank_keys(keys: pl.DataFrame, choice: RankChoice) -> tuple[pl.DataFrame, dict]:
    """Rank rows by ``choice``.

    Args:
        keys: one row per scored input row, as :func:`key_columns` selects: ``_row``
            (int64), ``n_question``, ``c_intra`` / ``c_inter`` (float64, the ranking
            layer's), for the authors' metric ``gainrl_reference`` (float64), and when
            ``choice.by`` is a stored column, its values as ``_by`` (float64).
        choice: a resolved :class:`RankChoice`.

    Returns:
        (frame, info). frame: ``_row`` plus :data:`RANK_COLUMNS`, sorted by ``_row``; rank
        is null for rows dropped by ``nan_policy="drop"``. info: NaN count, dropped count
        and the length fit, for the manifest.
    """
    # Input-row order, whatever order the files were read in: the length fit's sums then add
    # up in one order, so `rank` reproduces `score`'s manifest to the last bit.
    keys = keys.sort(ROW)
    c_intra, c_inter = floats(keys["c_intra"]), floats(keys["c_inter"])
    if choice.metric == "gainrl-reference":
        score = floats(keys["gainrl_reference"])
    else:
        score = np.zeros(keys.height)
        if choice.w_intra:
            score = score + choice.w_intra * c_intra
        if choice.w_inter:
            score = score + choice.w_inter * c_inter
    from anglecurate.stats.isotonic import isotonic_residuals  # scipy: loaded only when ranking

    residual, fit = isotonic_residuals(score, keys["n_question"].to_numpy().astype(np.float64))
    computed = {
        "score": residual if choice.length_control else score,
        "score_length_controlled": residual,
        "c_intra": c_intra,
        "c_inter": c_inter,
        "length": floats(keys["n_question"]),
        "row_index": floats(keys[ROW]),
    }
    by = computed[choice.by] if choice.by in computed else floats(keys[BY_KEY])
    frame = pl.DataFrame(
        {
            ROW: keys[ROW],
            "score": score,
            "score_length_controlled": residual,
            "c_intra": c_intra,
            "c_inter": c_inter,
            "_key": by,
        }
    ).with_columns(pl.col("_key").fill_nan(None))
    undefined = frame["_key"].null_count()
    ordered = frame.sort(
        ["_key", ROW],
        descending=[not choice.lowest_first, False],
        nulls_last=choice.nan_policy != "first",
        maintain_order=True,
    )
    ranks = pl.int_range(pl.len())
    if choice.nan_policy == "drop":  # NaN keys sort last, so the others keep ranks 0..k-1
        ranks = pl.when(pl.col("_key").is_null()).then(None).otherwise(ranks)
    ordered = ordered.with_columns(ranks.cast(pl.Int64).alias("rank"))
    info = {
        "undefined_score": undefined,
        "dropped": undefined if choice.nan_policy == "drop" else 0,
        "length_fit": {k: fit[k] for k in ("direction", "r2", "n")},
    }
    return ordered.select(ROW, *RANK_COLUMNS).sort(ROW), info


def floats(series: pl.Series) -> np.ndarray:
    """A column as float64 values, null as NaN."""
    return series.cast(pl.Float64).fill_null(np.nan).to_numpy()
