"""Real networks from pip packages we never tuned on (`weightdna.evaluate.unseen`), judged by
what they do after `weightdna compress`'s default file at 3 bits per weight (its stored graph
in the budget, `weightdna.evaluate.defaults.compress_inputs`): magika's file-type labels
of real files, Silero VAD's speech decisions (and rapidocr's text detector and text
recognizer, their judges and the output check only). rapidocr's angle classifier is
compressed at 6 bits per weight, where it keeps its calls; at 3 it does not (measured: a
strict xfail, so that the day it does the test says so). Each judge is also shown to fail
a broken restore (weights with noise at 10 dB SNR), so that the goal it asserts can fail.

Skipped where the package (installed with ``--no-deps``, `make` does) or onnxruntime is
absent."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
import pytest

from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.ratecontrol import Target
from weightdna.errors import MissingDependencyError
from weightdna.evaluate import unseen
from weightdna.evaluate.defaults import compress_inputs
from weightdna.weights import load_weights

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _path(find) -> Path:
    try:
        return find()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))


def _default_restore(model: Path, tmp_path: Path, rate: float = 3.0) -> dict:
    """The tensors of ``model`` after `weightdna compress MODEL --bits-per-weight RATE`'s
    file (`compress_model` given what the command gives it,
    `weightdna.evaluate.defaults.compress_inputs`: the stored graph in the budget, the
    default bias correction) and `decompress_model`."""
    weights, target = load_weights(model), Target("bits_per_weight", rate)
    compress_model(weights, tmp_path / "m.dna", target,
                   **compress_inputs(model, weights, target).options())
    decompress_model(tmp_path / "m.dna", tmp_path / "restored.safetensors")
    return load_weights(tmp_path / "restored.safetensors").state_dict()


# The original weights with Gaussian noise: what a codec that lost its way would restore.
_noisy = unseen.noisy_weights


def test_a_missing_package_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(unseen.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match="pip install --no-deps magika==1.0.3"):
        unseen.magika_path()


def test_magika_features_follow_its_config() -> None:
    config = {"beg_size": 6, "mid_size": 0, "end_size": 4, "block_size": 8,
              "padding_token": 256, "min_file_size_for_dl": 3,
              "use_inputs_at_offsets": False}
    # First 8 bytes lstripped, first 6 kept; last 8 rstripped, last 4 kept.
    assert unseen.magika_features(b"  abcdefghij  \n", config) == [
        97, 98, 99, 100, 101, 102, 103, 104, 105, 106]
    # Short content is padded after the start and before the end (only the start is
    # lstripped, only the end rstripped, as magika 1.0.3 does).
    assert unseen.magika_features(b"\nabcd ", config) == [
        97, 98, 99, 100, 32, 256, 97, 98, 99, 100]
    assert unseen.magika_features(b"      ab", config) is None  # too few bytes for the model


@pytest.fixture(scope="module")
def magika_case() -> tuple[Path, unseen.MagikaInputs, np.ndarray]:
    model = _path(unseen.magika_path)
    files = unseen.magika_corpus([Path(sysconfig.get_paths()["stdlib"])], per_extension=10,
                                 limit=300)
    inputs = unseen.magika_inputs(model, files)
    return model, inputs, unseen.magika_probabilities(model, inputs)


def test_magika_keeps_its_labels_at_3_bits_per_weight(magika_case, tmp_path: Path) -> None:
    model, inputs, reference = magika_case
    assert len(inputs.files) >= 100
    assert len(set(reference.argmax(1).tolist())) >= 10  # the files are of many kinds
    restored = unseen.compare_probabilities(
        reference, unseen.magika_probabilities(model, inputs, _default_restore(model, tmp_path)))
    # Measured 0.95 on these 300 files, 0.9533 on the panel's 1,200 (BENCHMARKS.md).
    assert restored["agreement"] >= 0.92, restored


def test_the_magika_judge_fails_a_broken_restore(magika_case) -> None:
    model, inputs, reference = magika_case
    broken = unseen.compare_probabilities(
        reference, unseen.magika_probabilities(model, inputs, _noisy(model)))
    assert broken["agreement"] < 0.92, broken  # measured 0.81 (0.91 with noise at 15 dB)


@pytest.fixture(scope="module")
def silero_case() -> tuple[Path, np.ndarray, np.ndarray]:
    model = _path(unseen.silero_path)
    audio = unseen.silero_audio(clips=24, seconds=6.0)
    return model, audio, unseen.silero_probabilities(model, audio)


def test_silero_hears_the_synthetic_speech(silero_case) -> None:
    _, _, reference = silero_case
    speech = reference >= unseen.THRESHOLD
    clips = np.arange(len(reference)) % 3 != 2  # two in three clips hold speech
    assert 0.3 < speech[clips].mean() < 0.9  # syllables heard, pauses not
    assert speech[~clips].mean() < 0.05  # silence, noise, tones and chords are not speech


def test_silero_keeps_its_decisions_at_3_bits_per_weight(silero_case, tmp_path: Path) -> None:
    model, audio, reference = silero_case
    restored = unseen.compare_decisions(
        reference, unseen.silero_probabilities(model, audio, _default_restore(model, tmp_path)))
    # Measured 0.855 (BENCHMARKS.md): below the original's own noise floor (0.989 with
    # input noise 60 dB down), but no drift towards a constant decision.
    assert restored["agreement"] >= 0.8, restored
    assert abs(restored["restored_speech_share"] - restored["speech_share"]) < 0.1, restored


def test_the_silero_judge_counts_the_speech_chunks_the_restored_model_still_hears() -> None:
    reference = np.array([[0.9, 0.8, 0.1, 0.7], [0.2, 0.6, 0.0, 0.3]])
    restored = np.array([[0.9, 0.3, 0.6, 0.7], [np.nan, 0.1, 0.0, 0.3]])
    figures = unseen.compare_decisions(reference, restored)
    # the original hears 4 chunks; the restored model 2 of them, and 1 it should not
    assert figures["speech_recall"] == pytest.approx(0.5)
    assert figures["agreement"] == pytest.approx(5 / 8)
    assert figures["restored_speech_share"] == pytest.approx(3 / 8)
    assert unseen.compare_decisions(np.zeros((1, 3)), np.ones((1, 3)))["speech_recall"] == 1.0


def test_the_silero_judge_fails_a_broken_restore(silero_case) -> None:
    model, audio, reference = silero_case
    broken = unseen.compare_decisions(
        reference, unseen.silero_probabilities(model, audio, _noisy(model)))
    assert broken["agreement"] < 0.8, broken  # measured 0.54


def test_the_ocr_detector_finds_the_lines_and_its_judge_fails_a_broken_restore() -> None:
    # Compressing the detector takes over a minute here: its function at 3 bits per weight
    # is measured by bench/panel.py --models ocr (BENCHMARKS.md), not in this suite.
    pytest.importorskip("PIL")
    model = _path(unseen.ocr_detector_path)
    images = unseen.ocr_images(count=2, height=480, width=640)
    reference = unseen.ocr_text_maps(model, images)
    same = unseen.compare_text_maps(reference, reference)
    assert same["agreement"] == 1.0 and same["regions"] >= 8  # a region per line, about
    broken = unseen.compare_text_maps(reference,
                                      unseen.ocr_text_maps(model, images, _noisy(model)))
    assert broken["agreement"] < 0.8 and broken["regions_kept"] < 0.8, broken  # 0.24, 0.23


def test_the_output_check_sees_magika_break_at_1_bit_per_weight(tmp_path: Path) -> None:
    """At 1 bit per weight 34% of real files change label; `compress`'s check on synthetic
    ids must say the outputs diverge (on iid ids it gave a worst cosine of 0.996: magika
    answers its prior class for every one; on runs of ids, 0.17)."""
    from weightdna.evaluate.outputs import check_outputs

    model = _path(unseen.magika_path)
    check = check_outputs(model, _default_restore(model, tmp_path, rate=1.0))
    assert check is not None and check.informative and check.diverged, check


def test_the_output_check_runs_silero_and_sees_it_break_at_1_bit_per_weight(
        tmp_path: Path) -> None:
    """Silero VAD runs only on 256 to 576 samples with ``sr`` 16000 (8000: 128 to 320) and
    an LSTM state of the batch's size: the check finds 16000 in the graph's Equal, feeds one
    512-sample chunk at a time, and compares the speech probabilities as one vector (a
    cosine per chunk would be 1 for any two positive probabilities). At 1 bit per weight,
    where the panel keeps 66.8% of decisions, it must say the outputs diverge; at 8 (99.3%)
    not (measured worst cosines 0.8612 and 1.0000)."""
    from weightdna.evaluate.outputs import check_outputs

    model = _path(unseen.silero_path)
    same = check_outputs(model, load_weights(model).state_dict())
    assert same is not None and same.informative and same.worst_cosine == 1.0, same
    assert "sr=16000" in same.describe() and "512" in same.describe()
    broken = check_outputs(model, _default_restore(model, tmp_path, rate=1.0))
    assert broken is not None and broken.informative and broken.diverged, broken
    (tmp_path / "eight").mkdir()
    kept = check_outputs(model, _default_restore(model, tmp_path / "eight", rate=8.0))
    assert kept is not None and not kept.diverged, kept


@pytest.fixture(scope="module")
def ocr_lines() -> tuple[list[str], list[np.ndarray]]:
    pytest.importorskip("PIL")
    return unseen.ocr_lines()


def test_the_recognizer_reads_the_rendered_lines_and_its_judge_fails_a_broken_restore(
        ocr_lines) -> None:
    # Compressing the recognizer (2.7M weights) and reading 300 lines take about a minute
    # here: its function is measured by bench/panel.py --models ocrrec (BENCHMARKS.md).
    model = _path(unseen.ocr_recognizer_path)
    texts, crops = ocr_lines[0][:40], ocr_lines[1][:40]
    characters = unseen.ocr_characters(model)
    assert len(characters) == 6625 and characters[0] == "blank" and characters[-1] == " "
    reference = unseen.ocr_readings(model, crops, characters=characters)
    same = unseen.compare_readings(reference, reference, texts)
    assert same["agreement"] == 1.0 and same["cer"] == 0.0
    # As rapidocr feeds it, the original reads the lines (measured 0.975 of these 40 exactly,
    # 0.927 of 300; character error rate 0.17%): the preprocessing is right.
    assert same["truth_accuracy"] >= 0.85 and same["truth_cer"] < 0.02, same
    broken = unseen.compare_readings(
        reference, unseen.ocr_readings(model, crops, _noisy(model), characters), texts)
    assert broken["agreement"] < 0.5 and broken["cer"] > 0.3, broken  # measured 0.0, 1.18


def test_the_output_check_sees_the_recognizer_break_on_48_by_192_images() -> None:
    # Fed 1×1 images (its height and width are open), the recognizer answered "blank" for
    # every one: the check could not tell (and before that scored a restore that read no
    # line right 1.0000). Fed 48×192 noise images (64×64 before) its outputs move with the
    # input; with noise at 20 dB SNR on its weights, where it reads none of the lines as
    # the original does (BENCHMARKS.md), the check must say the outputs diverge (its
    # probabilities: measured mean total variation distance 0.3611; the default's 3 bits
    # per weight file 0.29-0.31, its 6, 93% of the lines kept: 0.08-0.09).
    from weightdna.evaluate.outputs import check_outputs

    model = _path(unseen.ocr_recognizer_path)
    same = check_outputs(model, load_weights(model).state_dict())
    assert same is not None and same.informative and same.worst_cosine == 1.0, same
    assert "48×192" in same.describe() and same.probability_distance == 0.0
    broken = check_outputs(model, _noisy(model, snr_db=20.0))
    assert broken is not None and broken.informative and broken.diverged, broken


def test_the_output_check_cannot_tell_on_the_detector_and_says_so() -> None:
    # Fed noise images, the detector's text map is below 10⁻⁴ everywhere; measured against
    # a probability's scale of 1 that is the same map for every input ("cannot tell"), not
    # a worst cosine of 0.0 for a detector that keeps 94% of its text pixels at 3 bits per
    # weight. It cannot see a broken one either (noise at 10 dB: IoU 0.24).
    from weightdna.evaluate.outputs import check_outputs

    model = _path(unseen.ocr_detector_path)
    check = check_outputs(model, _noisy(model))
    assert check is not None and not check.informative and not check.diverged, check


def test_edit_distance() -> None:
    assert unseen.edit_distance("", "abc") == 3
    assert unseen.edit_distance("kitten", "sitting") == 3
    assert unseen.edit_distance("$38.50", "$38.50") == 0
    # reference, restored, truth: one character changed of six, one line the same.
    figures = unseen.compare_readings(["abcd", "xy"], ["abed", "xy"], ["abcd", "xz"])
    assert figures["agreement"] == 0.5 and figures["cer"] == pytest.approx(1 / 6)
    assert figures["truth_accuracy"] == 0.0 and figures["truth_cer"] == pytest.approx(2 / 6)
    # A margin read as a space: not the same line, the same once the ends are stripped (and
    # against the truth, whose ends are never spaces).
    figures = unseen.compare_readings(["abcd", "xy"], ["abcd", " xy"], ["abcd", "xy"])
    assert figures["agreement"] == 0.5 and figures["ends_agreement"] == 1.0
    assert figures["truth_accuracy"] == 1.0


def test_resize_linear_samples_as_cv2_does() -> None:
    image = np.arange(4 * 6 * 1, dtype=np.uint8).reshape(4, 6, 1) * 10
    assert np.array_equal(unseen.resize_linear(image, 6, 4), image.astype(np.float32))
    # Halving: each output pixel is the mean of a 2×2 block (centres aligned).
    half = unseen.resize_linear(image, 3, 2)
    assert np.allclose(half[..., 0], image[..., 0].reshape(2, 2, 3, 2).mean(axis=(1, 3)),
                       atol=0.5)


@pytest.fixture(scope="module")
def angle_case(ocr_lines) -> tuple[Path, list[np.ndarray], np.ndarray, np.ndarray]:
    model = _path(unseen.ocr_classifier_path)
    crops, turned = unseen.angle_crops(ocr_lines[1])
    return model, crops, turned, unseen.ocr_angles(model, crops)


def test_the_angle_classifier_tells_turned_lines(angle_case) -> None:
    _, _, turned, reference = angle_case
    assert turned.mean() == 0.5
    own = unseen.compare_angles(reference, reference, turned)
    assert own["agreement"] == 1.0 and own["truth_accuracy"] >= 0.95, own  # measured 0.987


def test_the_angle_classifier_keeps_its_calls_at_6_bits_per_weight(angle_case,
                                                                     tmp_path: Path) -> None:
    from weightdna.evaluate.outputs import check_outputs

    model, crops, turned, reference = angle_case
    state = _default_restore(model, tmp_path, 6.0)
    restored = unseen.compare_angles(reference, unseen.ocr_angles(model, crops, state), turned)
    assert restored["agreement"] >= 0.97, restored  # measured 0.9933 (BENCHMARKS.md)
    # Nor does the output check on its 48×192 noise images warn (its probabilities'
    # measured mean total variation distance 0.0122).
    check = check_outputs(model, state)
    assert check is not None and check.informative and not check.diverged, check


def test_the_output_check_does_not_warn_where_the_angle_classifier_works(
        angle_case, tmp_path: Path) -> None:
    # At 4 bits per weight the classifier keeps 98.33% of its calls, and with noise at 20 dB
    # on its weights 99.67%; the check's cosine of its two-class probabilities, near the
    # decision boundary on noise images, warned on both (64×64: 0.8976 and 0.9630; 48×192:
    # 0.9684 and 0.9873). Its probabilities' mean total variation distance: measured
    # 0.0793 and 0.0415, under the line of 0.13 (a broken file's: 0.21-0.31).
    from weightdna.evaluate.outputs import check_outputs

    model, crops, turned, reference = angle_case
    state = _default_restore(model, tmp_path, 4.0)
    kept = unseen.compare_angles(reference, unseen.ocr_angles(model, crops, state), turned)
    # measured 0.9633 on the command's file; 0.9833 on compress_model's defaults before
    # stop 33 (no graph in the budget, no bias correction)
    assert kept["agreement"] >= 0.95, kept
    for restored in (state, _noisy(model, snr_db=20.0)):
        check = check_outputs(model, restored)
        assert check is not None and check.informative and not check.diverged, check
        assert check.probability_distance is not None, check


@pytest.mark.xfail(strict=True, reason="measured 0.86 at 3.0 bits per weight on stop 30's "
                   "merged code (0.7833 / 0.8567 at the targets 2.95 / 3.05); 0.877 on stops "
                   "27-29's. With the ONNX default's bias correction, the mean of seven targets "
                   "2.925-3.075 is 0.81 (0.64-0.92: the coded model's 0/180 logit shifts by "
                   "a few units from one coding to the next, its gap between the two 4x "
                   "smaller than the original's), the same without stop 30's column context, "
                   "header-counted gate and fill (0.81-0.83). At 3 bits per weight the index "
                   "and the tensors not coded at the rate take about a third of this "
                   "134K-weight model's bytes (BENCHMARKS.md, issue 11). With the "
                   "correction on BatchNorm-matched inputs (stop 31, "
                   "bench/ocrcls_cause.py): 0.887 at 3.0, the mean of 14 targets 2.9-3.1 "
                   "0.84 (0.66-0.93). That was the library path (no stored graph in the "
                   "budget). This test writes the CLI's file since stop 33 (its budget also "
                   "holds the 5,179-byte graph): 0.543 at 3.0, the mean of 2.95/3/3.05 0.704 "
                   "(0.837/0.543/0.733); the same without the graph in the budget 0.887 "
                   "(0.847/0.887/0.927; bench/lowrate.py [--no-files], BENCHMARKS.md)")
def test_the_angle_classifier_keeps_its_calls_at_3_bits_per_weight(angle_case,
                                                                     tmp_path: Path) -> None:
    model, crops, turned, reference = angle_case
    restored = unseen.compare_angles(
        reference, unseen.ocr_angles(model, crops, _default_restore(model, tmp_path)), turned)
    # The goal: its kernels coded alone at 3 bits per weight keep 0.93 (BENCHMARKS.md).
    assert restored["agreement"] >= 0.9, restored


def test_the_angle_judge_fails_a_broken_restore(angle_case) -> None:
    model, crops, turned, reference = angle_case
    broken = unseen.compare_angles(reference, unseen.ocr_angles(model, crops, _noisy(model)),
                                   turned)
    assert broken["agreement"] < 0.9, broken  # measured 0.80 (0.98 with noise at 15 dB)


def test_the_output_check_sees_the_angle_classifier_break(angle_case) -> None:
    # On 1×1 images its outputs were the same for every one ("cannot tell"); on 48×192
    # noise images the check warns where 20% of the calls change (noise at 10 dB: the
    # probabilities' measured mean total variation distance 0.2877; the default's 3 bits
    # per weight file, 12% changed: 0.2976).
    from weightdna.evaluate.outputs import check_outputs

    model = angle_case[0]
    check = check_outputs(model, _noisy(model))
    assert check is not None and check.informative and check.diverged, check
