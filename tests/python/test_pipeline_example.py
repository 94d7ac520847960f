"""examples/pipeline: the three-process pipeline runs end to end over channels (and over
multiprocessing.Queue, its benchmark baseline) with a small frame count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import child_env

PIPELINE = Path(__file__).resolve().parents[2] / "examples" / "pipeline" / "pipeline.py"


@pytest.mark.parametrize("transport", ["shmlease", "queue"])
def test_pipeline_runs_and_reports(daemon, transport):
    out = subprocess.run(
        [sys.executable, str(PIPELINE), "run", "--frames", "30", "--shape", "64", "48", "3",
         "--transport", transport, "--name", f"pipe-test-{transport}", "--timeout", "60"],
        env=child_env(daemon), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert "frames/s" in lines[-2]
    result = json.loads(lines[-1])
    assert result["frames"] == 29  # rate over the intervals after the first frame
    assert result["frame_bytes"] == 64 * 48 * 3
    assert result["frames_per_s"] > 0
    assert 0 < result["latency_us_p50"] <= result["latency_us_p99"]


def test_pipeline_with_no_ipc_reports_each_stage():
    """`--transport none`, the benchmark's no-IPC baseline: the same three stages' work in one
    process, checked frame by frame, with each stage's time per frame."""
    out = subprocess.run(
        [sys.executable, str(PIPELINE), "run", "--frames", "30", "--shape", "64", "48", "3",
         "--transport", "none"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["frames"] == 30
    assert result["frame_bytes"] == 64 * 48 * 3
    assert result["frames_per_s"] > 0
    assert set(result["stage_us"]) == {"producer", "transform", "consumer"}
    assert all(v > 0 for v in result["stage_us"].values())
    assert 0 < result["latency_us_p50"] <= result["latency_us_p99"]
