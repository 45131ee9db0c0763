"""Scenario files: what a QA author writes, and the errors they get for mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.testcall.scenario import Scenario, ScenarioError, Step, Thresholds, load_scenario

PROMPTS = {"welcome", "menu", "connecting"}

GOOD = """\
name: repair-path
number: "4000"
caller_id: "13800138000"
thresholds:
  max_first_prompt: 3
  max_queue_wait: 30
  max_time_to_agent: 40.5
steps:
  - expect_prompt: welcome
  - expect_prompt: {prompt: menu, within: 8}
  - press: "1"
  - expect_prompt: connecting
  - wait_agent: {within: 30}
  - play: question.wav
  - stay: 3
  - hangup
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "question.wav").write_bytes(b"RIFF")
    return tmp_path


def test_a_full_scenario_reads_into_typed_steps(folder: Path) -> None:
    path = folder / "repair.yaml"
    path.write_text(GOOD)
    s = load_scenario(path, prompt_ids=PROMPTS)
    assert s.name == "repair-path" and s.number == "4000" and s.caller_id == "13800138000"
    assert s.thresholds == Thresholds(3.0, 30.0, 40.5)
    assert s.steps == (
        Step("expect_prompt", prompt="welcome"), Step("expect_prompt", prompt="menu", within=8.0),
        Step("press", digits="1"), Step("expect_prompt", prompt="connecting"),
        Step("wait_agent", within=30.0), Step("play", wav=(folder / "question.wav").resolve()),
        Step("stay", seconds=3.0), Step("hangup"),
    )
    assert s.prompts == ["welcome", "menu", "connecting"]


def test_round_trip_through_yaml(folder: Path) -> None:
    s = load_scenario("x", text=GOOD, base_dir=folder, prompt_ids=PROMPTS)
    again = load_scenario("x", text=s.to_yaml(), base_dir=folder, prompt_ids=PROMPTS)
    assert again == Scenario(**{**{f: getattr(s, f) for f in s.__dataclass_fields__}})


def test_every_error_is_reported_with_its_line(folder: Path) -> None:
    bad = """\
number: "40a0"
caller_id: "+86 138"
thresholds: {max_first_prompt: -1, max_wait: 3}
colour: blue
steps:
  - expect_prompt: welcom
  - press: "12x"
  - dance
  - play: missing.wav
  - stay: forever
  - {press: "1", hangup: null}
  - hangup: now
"""
    with pytest.raises(ScenarioError) as info:
        load_scenario("bad.yaml", text=bad, base_dir=folder, prompt_ids=PROMPTS)
    errors = info.value.errors
    expected = [
        "line 4: colour: unknown key", "number: '40a0' is not a dialable number", "caller_id: '+86 138' is not a phone",
        "line 3: thresholds.max_first_prompt: must be a number of seconds", "line 3: thresholds.max_wait: unknown",
        "line 6: steps[0].expect_prompt: prompt 'welcom' is not in the hotline definition",
        "line 7: steps[1].press: '12x': DTMF digits", "line 8: steps[2]: unknown step 'dance'",
        "line 9: steps[3].play: file 'missing.wav' not found", "line 10: steps[4].stay: must be a number",
        "line 11: steps[5]: a step is one of", "line 12: steps[6].hangup: takes no value",
    ]
    for fragment in expected:
        assert any(fragment in e for e in errors), (fragment, errors)
    assert len(errors) == len(expected), errors
    assert "bad.yaml" in str(info.value)


@pytest.mark.parametrize("text, fragment", [
    ("number: [", "line 1: not valid YAML"),
    ("- just a list", "a scenario is a mapping"),
    ('number: "4000"\nsteps: []\n', "give a list of steps"),
    ('number: "4000"\nnumber: "4001"\nsteps: [hangup]\n', "duplicate key 'number'"),
    ('steps: [hangup]\n', "the number to dial is required"),
])
def test_broken_files_fail_clearly(text: str, fragment: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario("s.yaml", text=text)
    assert any(fragment in e for e in info.value.errors), info.value.errors


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read the file"):
        load_scenario(tmp_path / "nope.yaml")


def test_unquoted_digits_are_accepted_but_prompts_unchecked_without_a_hotline() -> None:
    s = load_scenario("s", text='number: 4000\nsteps:\n  - press: 1\n  - expect_prompt: anything\n')
    assert s.number == "4000" and s.steps[0].digits == "1" and s.prompts == ["anything"]


def test_api_scenarios_play_only_files_from_the_media_folder(
    folder: Path, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    outside = tmp_path_factory.mktemp("elsewhere") / "secret.wav"
    outside.write_bytes(b"RIFF")
    text = f'number: "4000"\nsteps:\n  - play: {outside}\n  - play: ../{folder.name}/question.wav\n'
    assert load_scenario("s", text=text, base_dir=folder).steps[0].wav == outside.resolve()
    with pytest.raises(ScenarioError) as info:
        load_scenario("s", text=text, base_dir=folder, media_inside_base=True)
    assert len(info.value.errors) == 1 and "must be inside the test-call media folder" in info.value.errors[0]
