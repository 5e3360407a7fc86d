"""Manifest reading and validation, file names: in-process, no broker."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pyloudnorm", reason="the build extra: pip install -e '.[build]'")

from tts_studio.errors import ManifestError  # noqa: E402
from tts_studio.manifest import Manifest, ManifestLine, validate  # noqa: E402
from tts_studio.naming import NameTemplate  # noqa: E402

pytestmark = pytest.mark.unit


def test_jsonl_with_voice_settings_and_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": 1, "speaker": "ann", "text": " Hi. ", "voice": {"length_scale": 1.2}, "mood": "sad"}\n'
                    "\n"
                    '{"id": "b", "speaker": "bob", "text": "Yes.", "seed": 7}\n')
    lines = list(Manifest(path).lines())
    assert all(isinstance(x, ManifestLine) for x in lines)
    a, b = lines
    assert (a.line_id, a.text, dict(a.voice), dict(a.extra), a.line_no) == ("1", "Hi.", {"length_scale": 1.2},
                                                                          {"mood": "sad"}, 1)
    assert (b.seed, b.line_no) == (7, 3)


def test_csv_voice_columns_multiline_field_and_column_map(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text('Name,Who,Line,voice.length_scale\nx1,ann,"Two\nlines",0.9\nx2,bob,Plain,\n')
    lines = list(Manifest(path, columns={"id": "Name", "speaker": "Who", "text": "Line"}).lines())
    assert [(x.line_id, x.line_no, x.text, dict(x.voice)) for x in lines if isinstance(x, ManifestLine)] == [
        ("x1", 2, "Two\nlines", {"length_scale": 0.9}), ("x2", 4, "Plain", {})]


def test_validation_lists_every_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "a", "speaker": "s", "text": "ok"}\n'
                    "not json\n"
                    '{"id": "a", "speaker": "s", "text": "dup"}\n'
                    '{"id": "c", "speaker": "s", "text": ""}\n'
                    '{"id": "d", "speaker": "zed", "text": "who"}\n'
                    '{"id": "e", "speaker": "s", "text": "x", "file": "/etc/passwd"}\n')
    with pytest.raises(ManifestError) as info:
        validate(Manifest(path), NameTemplate(), known_speakers={"piper": {"s"}}, default_model="piper")
    assert [p.line_no for p in info.value.problems] == [2, 3, 4, 5, 6]
    assert info.value.lines()[0].startswith(f"{path}:2: not valid JSON")


@pytest.mark.parametrize("template", ["{speaker}", "/abs/{id}", "{nope}/{id}"])
def test_bad_templates_are_refused(template: str) -> None:
    with pytest.raises(ValueError):
        NameTemplate(template)


def test_names_are_cleaned_and_never_leave_the_folder() -> None:
    names = NameTemplate("{speaker}/{id}")
    line = ManifestLine(line_no=1, line_id="../../x", speaker="a/b", text="t")
    name = names.relative(line)
    assert ".." not in name.split("/") and name.count("/") == 1


def test_numbers_are_spelt_out_for_the_check_and_the_timings() -> None:
    from tts_studio.speech import word_error_rate, words_of

    assert words_of("Gate 30, at 7 o\u2019clock!") == ["gate", "thirty", "at", "seven", "o'clock"]
    assert word_error_rate(["a", "b", "c", "d"], ["a", "x", "c"]) == 0.5


def test_conform_reaches_the_target_under_the_ceiling_and_trims_to_the_pad() -> None:
    import numpy as np
    import pyloudnorm
    from scipy.signal import resample_poly

    from tts_studio import dsp

    rate = 22050
    rng = np.random.default_rng(5)
    t = np.arange(rate * 2) / rate
    speechy = 0.2 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) ** 4
    speechy[rate // 2: rate // 2 + 40] += 0.7 * rng.standard_normal(40)  # a sharp peak the limiter must catch
    x = np.concatenate([np.zeros(rate), speechy, 1e-5 * rng.standard_normal(rate)])
    y = dsp.conform(dsp.trim(x, rate, 100), rate, lufs=-14.0, true_peak_db_max=-1.0)
    assert abs(pyloudnorm.Meter(rate).integrated_loudness(y) + 14.0) < 0.5
    assert 20 * np.log10(np.abs(resample_poly(y, 4, 1)).max()) <= -1.0 + 1e-6
    assert len(y) / rate < 2.0 + 0.2 + 0.02  # a second of silence on each side cut to 100 ms pads
