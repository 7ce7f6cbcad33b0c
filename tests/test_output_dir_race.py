"""Two runs that write into sibling folders of one parent not made yet (the co-location test drives two Locust runs
at once into attempt/run0 and attempt/run1) both check their output folder: each makes the missing parent, and one
of them finds it made meanwhile. That is not a failure to write (a CI run failed on it: "cannot write the stress
results: File exists")."""
from __future__ import annotations

from pathlib import Path

from gpufleet.contracts.io import check_output_dir


def test_a_parent_made_meanwhile_by_another_run_is_no_error(tmp_path, monkeypatch):
    parent = tmp_path / "attempt0"
    real_mkdir = Path.mkdir

    def made_meanwhile(self, *args, **kwargs):  # the other run makes it between our look and our mkdir
        if self == parent and not parent.is_dir():
            real_mkdir(parent)
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", made_meanwhile)
    assert check_output_dir(parent / "run1", "stress results") == parent / "run1"
    monkeypatch.undo()
    assert parent.is_dir()  # the other run's folder is left to it, not removed as if it were ours
