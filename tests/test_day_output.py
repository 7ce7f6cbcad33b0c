"""What a day plan prints: every figure says what it is measured against, and no difference is negative. Run
through the console entry point in-process (``planner.cli.main``), its text and its JSON."""
import json
import re
from pathlib import Path

import pytest

from planner.cli import main

ROOT = Path(__file__).resolve().parents[1]
SATURDAY = ROOT / "bench" / "data" / "i94-saturday-2012-10-06.csv"


def planner(capsys, *argv) -> str:
    capsys.readouterr()
    assert main(["recommend", *map(str, argv)]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_a_day_plan_prints_no_negative_difference(capsys):
    # The Saturday curve with yolov8m-640: the peak hour's fleet holds reserved instances bought for the day, so the
    # point problem at the peak has cheaper fleets than it; no figure may be printed as a negative extra.
    text = planner(capsys, "--qps-curve", SATURDAY, "--model", "yolov8m-640")
    text = " ".join(text.split())
    assert not re.search(r"[+]\s?\$-|[+]-|\$-\d", text), re.findall(r".{60}(?:[+]\s?\$-|[+]-|\$-\d).{20}", text)
