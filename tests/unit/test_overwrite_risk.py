"""`overwrite_risk`: a fixed file name plus a schedule, for every sync mode (issue 13, item 5)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from core.write.naming import overwrite_risk


def activation(
    mode: str, run_type: str, file_name: str = "people_{YYYY}{MM}{DD}", schedule: str | None = "0 * * * *"
) -> SimpleNamespace:
    return SimpleNamespace(file_name=file_name, folder="out", schedule=schedule, sync_mode=mode, run_type=run_type)


@pytest.mark.parametrize("mode", ["upsert", "insert", "difference"])
def test_a_delta_file_overwritten_by_the_next_run_is_a_risk(mode: str) -> None:
    assert overwrite_risk(activation(mode, "full_then_delta")) == (
        "`people_{YYYY}{MM}{DD}` names the same file for two runs of schedule `0 * * * *`, so each run overwrites "
        f"the previous run's file, and with `{mode}` the changes it holds are lost if the partner has not "
        "collected it yet; add a time placeholder as fine as the schedule (e.g. {HH}{mm}) or {run_id}"
    )


@pytest.mark.parametrize(("mode", "run_type"), [("snapshot", "full_only"), ("upsert", "full_only")])
def test_a_full_file_overwritten_is_still_reported(mode: str, run_type: str) -> None:
    assert overwrite_risk(activation(mode, run_type)) == (
        "`people_{YYYY}{MM}{DD}` names the same file for two runs of schedule `0 * * * *`, so each run overwrites "
        "the previous file; add a finer time placeholder (e.g. {HH}) if that is not meant"
    )


@pytest.mark.parametrize("name", ["people_{YYYY}{MM}{DD}{HH}", "people_{run_id}", "people_{x}"])
def test_names_that_change_every_run_or_no_schedule_are_fine(name: str) -> None:
    assert overwrite_risk(activation("difference", "full_then_delta", name)) is None
    assert overwrite_risk(activation("difference", "full_then_delta", schedule=None)) is None
