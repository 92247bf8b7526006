"""Test-time scaling sweeps: accuracy against thinking tokens, as in the s1 paper's figure."""

from s1_integrations.scaling.data import DatasetError, QAPair, load_jsonl
from s1_integrations.scaling.scoring import exact_match, get_scorer
from s1_integrations.scaling.sweep import SweepReport, SweepSetting, run_sweep

__all__ = [
    "DatasetError",
    "QAPair",
    "SweepReport",
    "SweepSetting",
    "exact_match",
    "get_scorer",
    "load_jsonl",
    "run_sweep",
]
