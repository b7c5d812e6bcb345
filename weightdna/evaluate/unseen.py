"""Real networks from pip packages the codec was never tuned on, each with a judge of function.

* **magika** (``pip install --no-deps magika==1.0.3``): Google's file-type classifier, a
  byte-embedding + conv + dense ONNX model (785K weights). Its inputs are made here as
  magika makes them (``config.min.json``: the first and last ``beg_size``/``end_size``
  bytes of the file's first/last ``block_size`` bytes, whitespace stripped, padded with
  ``padding_token``), from real files on disk (the Python standard library,
  site-packages, /usr/share), a fixed number per file name extension. The judge: the share
  of files whose top-1 label the restored model gives as the original does.
* **silero** (``pip install --no-deps silero-vad==6.2.3``): Silero VAD, an STFT + conv +
  LSTM voice-activity detector as ONNX (its weights are `Constant` nodes in the branches of
  an ``If``, 309K of them per sampling rate). It is run as the package's ``OnnxWrapper``
  runs it (chunks of 512 samples at 16 kHz, 64 samples of context, the LSTM state carried)
  on synthetic audio, since no speech is shipped here: voiced syllables (a glottal pulse
  train with intonation through moving formant resonators, syllable envelopes, fricative
  noise) in noise, and non-speech (silence, noise, tones, chords). The judge: the share of
  30 ms chunk decisions (probability ≥ 0.5) the restored model makes as the original does;
  the largest change of probability is reported beside it.
* **ocr** (``pip install --no-deps rapidocr_onnxruntime==1.4.4``): PP-OCRv4's text
  detector (a DB segmentation net exported from Paddle, weights in `Constant` nodes, 4.7
  MB), fed as rapidocr feeds it, on images of text lines rendered with PIL. The judge: the
  IoU of the text pixels (probability above rapidocr's 0.3) with the original's, and the
  share of the original's text regions still covered.
* **ocrrec** (the same package): PP-OCRv4's text recognizer (CTC over the 6,623 characters
  of its ``character`` metadata, 2.7M weights in `Constant` nodes), fed as rapidocr's
  `TextRecognizer` feeds it (height 48, the batch padded to its widest line, cv2's
  bilinear resize done here in numpy), on a few hundred crops of English text lines
  (words, numbers, prices, dates, codes, punctuation) rendered with PIL as the detector's
  images are. The judge: the share of lines read exactly as the original reads them, and
  the character error rate against the original's strings; beside them the accuracy
  against the rendered text.
* **ocrcls** (the same package): PP-OCR's mobile text-line angle classifier (0° or 180°,
  134K weights) on the same crops, every second one turned 180°. The judge: the share of
  0°/180° calls the restored model makes as the original does.

No package's own Python code (nor its dependencies: rapidocr's cv2) is needed: the ONNX
files are run with onnxruntime and the restored tensors put in by `onnx_with_initializers`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import math
import os
import sysconfig
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from weightdna.errors import MissingDependencyError
from weightdna.evaluate.outputs import onnx_with_initializers

MAGIKA = ("magika", "magika==1.0.3", "models/standard_v3_3/model.onnx")
SILERO = ("silero_vad", "silero-vad==6.2.3", "data/silero_vad.onnx")


def package_file(package: str, requirement: str, relative: str) -> Path:
    """``relative`` inside the installed ``package`` (found without importing it), or a
    MissingDependencyError saying how to install it."""
    spec = importlib.util.find_spec(package)
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / relative
    if path is None or not path.is_file():
        raise MissingDependencyError(
            f"the model {relative} of the package {package} is not installed: "
            f"pip install --no-deps {requirement}")
    return path


def magika_path() -> Path:
    """magika's standard_v3_3 model.onnx (config.min.json beside it)."""
    return package_file(*MAGIKA)


def silero_path() -> Path:
    """Silero VAD's silero_vad.onnx (8 and 16 kHz, opset 16: what the package loads)."""
    return package_file(*SILERO)


def _session(path: Path, restored: Mapping[str, Any] | None) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(onnx_with_initializers(path, restored),
                                        sess_options=options,
                                        providers=["CPUExecutionProvider"])


def noisy_weights(model: Path, snr_db: float = 10.0, seed: int = 0) -> dict[str, Any]:
    """``model``'s tensors with Gaussian noise at ``snr_db`` added to every float tensor of
    1,000 values or more: what a codec that lost its way would restore (a broken file for
    the judges and the output check to catch)."""
    import torch

    from weightdna.weights import load_weights

    generator = torch.Generator().manual_seed(seed)
    state = load_weights(model).state_dict()
    for name, tensor in state.items():
        if tensor.is_floating_point() and tensor.numel() >= 1000:
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
            scale = tensor.double().pow(2).mean().sqrt() * 10 ** (-snr_db / 20)
            state[name] = (tensor.double() + noise * scale).to(tensor.dtype)
    return state


# --- magika -------------------------------------------------------------------------------

def magika_config(model: Path) -> dict:
    return json.loads((model.parent / "config.min.json").read_text())


def magika_features(data: bytes, config: dict) -> list[int] | None:
    """The model's input for a file's ``data``, as magika 1.0.3 builds it; None where too
    few bytes are left after stripping (magika answers those without the model)."""
    beg_size, end_size, block = config["beg_size"], config["end_size"], config["block_size"]
    pad = config["padding_token"]
    if config.get("mid_size", 0) or config.get("use_inputs_at_offsets"):
        raise ValueError("this magika config reads bytes at offsets; not supported")
    size = min(block, len(data))
    beg = list(data[:size].lstrip()[:beg_size])
    if len(beg) < config["min_file_size_for_dl"]:
        return None
    end = list(data[len(data) - size:].rstrip()[-end_size:])
    return beg + [pad] * (beg_size - len(beg)) + [pad] * (end_size - len(end)) + end


def default_roots() -> list[Path]:
    """Folders of real files found on any Python installation (and /usr/share)."""
    paths = sysconfig.get_paths()
    roots = [Path(paths["stdlib"]), Path(paths["purelib"]), Path("/usr/share")]
    unique = []
    for root in roots:
        if root.is_dir() and root.resolve() not in [r.resolve() for r in unique]:
            unique.append(root)
    return unique


def _walk(roots: Sequence[Path]) -> Iterator[tuple[Path, Path]]:
    """(root, file path) of every file under ``roots``, folders and files in name order."""
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                yield root, Path(folder) / name


def magika_corpus(roots: Sequence[Path] | None = None, per_extension: int = 12,
                  limit: int = 1200, max_files: int = 200_000) -> list[Path]:
    """Real files, at most ``per_extension`` of each file name extension (the same choice
    on every run of one machine: ordered by a hash of the path), ``limit`` in all, from
    the first ``max_files`` files found under ``roots`` (walked in name order)."""
    by_suffix: dict[str, list[tuple[str, Path]]] = {}
    for root, path in itertools.islice(_walk(roots or default_roots()), max_files):
        suffix = path.suffix.lower() or "(none)"
        key = hashlib.sha1(str(path.relative_to(root)).encode()).hexdigest()
        by_suffix.setdefault(suffix, []).append((key, path))
    chosen = []
    for suffix in sorted(by_suffix):
        picks = 0
        for _, path in sorted(by_suffix[suffix]):
            if picks == per_extension:
                break
            if path.is_symlink() or not path.is_file():
                continue
            try:
                if path.stat().st_size < 64:
                    continue
            except OSError:
                continue
            chosen.append(path)
            picks += 1
    chosen.sort(key=lambda p: hashlib.sha1(str(p).encode()).hexdigest())
    return sorted(chosen[:limit])


def _read_ends(path: Path, block: int) -> bytes | None:
    """The first and last ``block`` bytes of ``path`` (the whole file if shorter)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            if size <= 2 * block:
                handle.seek(0)
                return handle.read()
            handle.seek(0)
            head = handle.read(block)
            handle.seek(size - block)
            # Only the ends are read: join them so that the last `block` bytes stay last.
            return head + handle.read(block)
    except OSError:
        return None


@dataclass
class MagikaInputs:
    files: list[Path]
    features: np.ndarray  # (files, beg_size + end_size) int32


def magika_inputs(model: Path | None = None, files: Sequence[Path] | None = None) -> MagikaInputs:
    """The model inputs of ``files`` (default `magika_corpus`), those too short left out."""
    model = model or magika_path()
    config = magika_config(model)
    kept, rows = [], []
    for path in files if files is not None else magika_corpus():
        data = _read_ends(path, config["block_size"])
        row = None if data is None else magika_features(data, config)
        if row is not None:
            kept.append(path)
            rows.append(row)
    if not rows:
        raise MissingDependencyError("no readable files were found to classify with magika")
    return MagikaInputs(kept, np.asarray(rows, dtype=np.int32))


def magika_probabilities(model: Path, inputs: MagikaInputs,
                         restored: Mapping[str, Any] | None = None,
                         batch: int = 256) -> np.ndarray:
    """The model's label probabilities for each input, weights ``restored`` where given."""
    session = _session(model, restored)
    out = [session.run(["target_label"], {"bytes": inputs.features[i:i + batch]})[0]
           for i in range(0, len(inputs.features), batch)]
    return np.concatenate(out).astype(np.float64)


def compare_probabilities(reference: np.ndarray, restored: np.ndarray) -> dict[str, float]:
    """Top-1 agreement, and the mean and largest absolute change of the top-1 probability
    and of any class probability (NaN outputs count as disagreement)."""
    agree = reference.argmax(1) == np.nan_to_num(restored, nan=-1.0).argmax(1)
    agree &= np.isfinite(restored).all(1)
    top = reference.argmax(1)
    rows = np.arange(len(top))
    delta = np.abs(np.nan_to_num(restored, nan=np.inf) - reference)
    return {"agreement": float(agree.mean()),
            "mean_top_delta": float(delta[rows, top].mean()),
            "max_delta": float(delta.max()), "samples": int(len(top))}


# --- silero VAD ----------------------------------------------------------------------------

RATE = 16000
CHUNK = 512
CONTEXT = 64
THRESHOLD = 0.5


def _resonate(signal: np.ndarray, frequencies: np.ndarray, bandwidth: float) -> np.ndarray:
    """``signal`` through a two-pole resonator whose centre frequency moves per sample."""
    from scipy.signal import lfilter

    out = np.zeros_like(signal)
    radius = np.exp(-np.pi * bandwidth / RATE)
    # Piecewise constant in blocks of 80 samples (5 ms): lfilter per block, state carried.
    state = np.zeros(2)
    for start in range(0, len(signal), 80):
        f = float(frequencies[start])
        a = [1.0, -2 * radius * np.cos(2 * np.pi * f / RATE), radius * radius]
        b = [1 - radius]
        out[start:start + 80], state = lfilter(b, a, signal[start:start + 80], zi=state)
    return out


VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480],
                   [660, 1720, 2410], [570, 840, 2410], [440, 1020, 2240], [490, 1350, 1690]],
                  dtype=np.float64)


def speech_like(seconds: float, rng: np.random.Generator, pitch: float) -> np.ndarray:
    """Voiced syllables (a glottal pulse train with intonation and jitter through three
    formant resonators moving between vowel targets, 3–6 syllables a second, with
    fricative noise bursts between some), in phrases separated by pauses; peak 1."""
    n = int(seconds * RATE)
    syllables = []
    t = 0.0
    while t < seconds:
        phrase = rng.uniform(0.8, 2.5)
        end = min(seconds, t + phrase)
        while t < end:
            length = rng.uniform(0.15, 0.32)
            syllables.append((t, min(end, t + length)))
            t += length + rng.uniform(0.0, 0.06)
        t = end + rng.uniform(0.25, 0.9)
    f0 = np.full(n, pitch)
    envelope = np.zeros(n)
    formants = np.zeros((3, n))
    fricative = np.zeros(n)
    for start, stop in syllables:
        a, b = int(start * RATE), int(stop * RATE)
        length = b - a
        shape = np.sin(np.linspace(0, np.pi, length)) ** 0.7
        envelope[a:b] = shape * rng.uniform(0.5, 1.0)
        f0[a:b] = pitch * (1.15 - 0.3 * np.linspace(0, 1, length)) * rng.uniform(0.9, 1.1)
        first, second = VOWELS[rng.integers(len(VOWELS))], VOWELS[rng.integers(len(VOWELS))]
        ramp = np.linspace(0, 1, length)
        formants[:, a:b] = first[:, None] * (1 - ramp) + second[:, None] * ramp
        if rng.random() < 0.4:  # a consonant: a short noise burst before the vowel
            c = max(0, a - int(0.06 * RATE))
            fricative[c:a] = rng.uniform(0.1, 0.3)
    formants[:, envelope == 0] = VOWELS[0][:, None]
    f0 *= 1 + 0.01 * rng.standard_normal(n)  # jitter
    phase = np.cumsum(f0 / RATE)
    pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per period
    source = np.convolve(pulses, np.exp(-np.arange(40) / 8.0), mode="same")
    voiced = sum(_resonate(source, formants[k], bw) * gain
                 for k, (bw, gain) in enumerate(((80, 1.0), (100, 0.6), (140, 0.3))))
    voiced *= envelope
    from scipy.signal import butter, lfilter

    hiss = lfilter(*butter(2, 3500 / (RATE / 2), "high"), rng.standard_normal(n))
    signal = voiced / max(np.abs(voiced).max(), 1e-9) + hiss * fricative
    return signal / max(np.abs(signal).max(), 1e-9)


def non_speech(seconds: float, rng: np.random.Generator, kind: str) -> np.ndarray:
    """Silence, white or brown noise, a steady tone, or chords (peak 1, silence 0)."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    if kind == "silence":
        return np.zeros(n)
    if kind == "white":
        signal = rng.standard_normal(n)
    elif kind == "brown":
        signal = np.cumsum(rng.standard_normal(n))
        signal -= np.convolve(signal, np.ones(400) / 400, mode="same")
    elif kind == "tone":
        signal = np.sin(2 * np.pi * rng.uniform(200, 2000) * t)
    else:  # chords: three notes, changing every half second
        signal = np.zeros(n)
        for start in range(0, n, RATE // 2):
            roots = 220 * 2 ** (rng.integers(0, 12, size=3) / 12)
            span = slice(start, start + RATE // 2)
            for f in roots:
                signal[span] += np.sin(2 * np.pi * f * t[span]) * np.exp(-3 * (t[span] - t[start]))
    return signal / max(np.abs(signal).max(), 1e-9)


def silero_audio(clips: int = 24, seconds: float = 6.0, seed: int = 0) -> np.ndarray:
    """``clips`` mono 16 kHz clips (float32, rows): two thirds speech-like at a speaking
    level of 0.05–0.5 over noise 10–40 dB below it, one third non-speech (silence, noise,
    tones, chords); deterministic for a seed."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    out = np.zeros((clips, n))
    kinds = ["silence", "white", "brown", "tone", "chords"]
    for k in range(clips):
        if k % 3 != 2:
            level = 10 ** rng.uniform(np.log10(0.05), np.log10(0.5))
            speech = speech_like(seconds, rng, pitch=rng.uniform(90, 240))[:n] * level
            noise = non_speech(seconds, rng, ["white", "brown"][k % 2]) * level
            out[k] = speech + noise * 10 ** (-rng.uniform(10, 40) / 20)
        else:
            out[k] = non_speech(seconds, rng, kinds[(k // 3) % len(kinds)]) * rng.uniform(0.02, 0.5)
    return out.astype(np.float32)


def silero_probabilities(model: Path, audio: np.ndarray,
                         restored: Mapping[str, Any] | None = None) -> np.ndarray:
    """Speech probability of each 512-sample chunk of each clip (rows), the clips run as
    one batch the way silero_vad's OnnxWrapper runs a stream: 64 samples of the previous
    chunk as context, the state carried, 16 kHz."""
    session = _session(model, restored)
    clips, n = audio.shape
    state = np.zeros((2, clips, 128), dtype=np.float32)
    context = np.zeros((clips, CONTEXT), dtype=np.float32)
    rate = np.array(RATE, dtype=np.int64)
    out = []
    for start in range(0, n - CHUNK + 1, CHUNK):
        x = np.concatenate([context, audio[:, start:start + CHUNK]], axis=1)
        prob, state = session.run(None, {"input": x, "state": state, "sr": rate})
        out.append(prob[:, 0])
        context = x[:, -CONTEXT:]
    return np.stack(out, axis=1).astype(np.float64)


def compare_decisions(reference: np.ndarray, restored: np.ndarray,
                      threshold: float = THRESHOLD) -> dict[str, float]:
    """Share of chunk decisions (probability ≥ ``threshold``) kept, the share of chunks the
    original calls speech and the restored model's, the share of the original's speech
    chunks the restored model also calls speech (``speech_recall``; 1 where the original
    calls none), mean and largest |Δ probability|."""
    restored = np.nan_to_num(restored, nan=-1.0)
    a, b = reference >= threshold, restored >= threshold
    delta = np.abs(reference - restored)
    return {"agreement": float((a == b).mean()), "speech_share": float(a.mean()),
            "restored_speech_share": float(b.mean()),
            "speech_recall": float((a & b).sum() / a.sum()) if a.any() else 1.0,
            "mean_delta": float(delta.mean()), "max_delta": float(delta.max()),
            "samples": int(a.size)}


# --- PP-OCRv4 text detector (rapidocr) -----------------------------------------------------

RAPIDOCR = ("rapidocr_onnxruntime", "rapidocr_onnxruntime==1.4.4",
            "models/ch_PP-OCRv4_det_infer.onnx")
DET_THRESHOLD = 0.3  # rapidocr's config.yaml Det.thresh: a pixel is text above it
WORDS = ("weight", "compression", "entropy", "model", "network", "signal", "OCR", "text",
         "detector", "channel", "ratio", "sample", "bits", "layer", "tensor", "quality",
         "2026", "12.04", "No. 7", "Invoice", "TOTAL", "$38.50", "Page 3 of 9", "e-mail")


def ocr_detector_path() -> Path:
    """rapidocr's PP-OCRv4 text detector (a DB detector exported from Paddle: its weights are
    `Constant` nodes)."""
    return package_file(*RAPIDOCR)


def _fonts() -> list[Path]:
    found = sorted(Path("/usr/share/fonts").rglob("*.ttf")) if Path("/usr/share/fonts").is_dir() \
        else []
    return found[:12]


def _background(rng: np.random.Generator, kind: int, height: int, width: int) -> Any:
    """A PIL RGB image of ``height`` × ``width``: a light colour, plain (``kind`` % 3 == 0),
    as a left-to-right gradient (1) or speckled (2)."""
    from PIL import Image

    base = rng.integers(150, 256, size=3)
    canvas = np.ones((height, width, 3)) * base
    if kind % 3 == 1:  # a gradient
        canvas *= np.linspace(0.6, 1.0, width)[None, :, None]
    elif kind % 3 == 2:  # speckle
        canvas += rng.normal(0, 12, size=canvas.shape)
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def _font(rng: np.random.Generator, fonts: Sequence[Path], size: int) -> Any:
    """One of ``fonts`` at ``size`` pixels, drawn by ``rng`` (PIL's own where none)."""
    from PIL import ImageFont

    return (ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), size)
            if fonts else ImageFont.load_default(size))


def _ink(rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(int(c) for c in rng.integers(0, 90, size=3))


def ocr_images(count: int = 6, height: int = 736, width: int = 960,
               seed: int = 0) -> np.ndarray:
    """``count`` RGB images (count, height, width, 3 uint8) of text lines rendered with PIL
    (the TrueType fonts under /usr/share/fonts, else PIL's own) in several sizes, colours
    and backgrounds (plain, gradient, speckled), with blank space; deterministic."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    fonts = _fonts()
    out = np.zeros((count, height, width, 3), dtype=np.uint8)
    for k in range(count):
        image = _background(rng, k, height, width)
        draw = ImageDraw.Draw(image)
        y = int(rng.integers(10, 60))
        while y < height - 40:
            size = int(rng.choice([16, 20, 26, 34, 48]))
            font = _font(rng, fonts, size)
            words = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 6))).tolist())
            x = int(rng.integers(10, width // 3))
            draw.text((x, y), words, fill=_ink(rng), font=font)
            y += int(size * rng.uniform(1.5, 3.5))
        out[k] = np.asarray(image)
    return out


def ocr_text_maps(model: Path, images: np.ndarray,
                  restored: Mapping[str, Any] | None = None) -> np.ndarray:
    """The detector's text probability map of each image (count, height, width), fed as
    rapidocr feeds it: BGR, (x/255 − 0.5)/0.5, CHW; sides multiples of 32."""
    session = _session(model, restored)
    maps = []
    for image in images:
        x = (image[..., ::-1].astype(np.float32) / 255.0 - 0.5) / 0.5
        maps.append(session.run(None, {"x": x.transpose(2, 0, 1)[None]})[0][0, 0])
    return np.stack(maps).astype(np.float64)


def compare_text_maps(reference: np.ndarray, restored: np.ndarray,
                      threshold: float = DET_THRESHOLD) -> dict[str, float]:
    """IoU of the text pixels (probability > ``threshold``) of the restored maps with the
    original's, the share of the original's text regions (connected components of 20
    pixels or more) the restored map still covers at half their pixels, the numbers of
    regions, and the largest |Δ probability|."""
    from scipy.ndimage import label

    restored = np.nan_to_num(restored, nan=0.0)
    a, b = reference > threshold, restored > threshold
    union = (a | b).sum()
    kept = regions = restored_regions = 0
    for ra, rb in zip(a, b, strict=True):
        labels, n = label(ra)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        covered = np.bincount(labels.ravel(), weights=rb.ravel(), minlength=n + 1)
        big = sizes[1:] >= 20
        regions += int(big.sum())
        kept += int((covered[1:][big] >= 0.5 * sizes[1:][big]).sum())
        labels_b, m = label(rb)
        restored_regions += int((np.bincount(labels_b.ravel(), minlength=m + 1)[1:] >= 20).sum())
    return {"agreement": float((a & b).sum() / union) if union else 1.0,
            "regions_kept": kept / max(regions, 1), "regions": regions,
            "restored_regions": restored_regions,
            "max_delta": float(np.abs(reference - restored).max())}


# --- PP-OCR text recognizer and angle classifier (rapidocr) --------------------------------

OCR_REC = (RAPIDOCR[0], RAPIDOCR[1], "models/ch_PP-OCRv4_rec_infer.onnx")
OCR_CLS = (RAPIDOCR[0], RAPIDOCR[1], "models/ch_ppocr_mobile_v2.0_cls_infer.onnx")
# rapidocr 1.4.4's config.yaml: Rec.rec_img_shape, rec_batch_num; Cls.cls_image_shape,
# cls_thresh, label_list ['0', '180'].
REC_HEIGHT, REC_WIDTH, REC_BATCH = 48, 320, 6
CLS_HEIGHT, CLS_WIDTH, CLS_THRESH = 48, 192, 0.9
LINE_WORDS = WORDS + (
    "the", "of", "and", "to", "in", "is", "for", "on", "with", "as", "by", "at", "from",
    "order", "shipping", "address", "street", "north", "report", "annual", "summary",
    "customer", "balance", "amount", "due", "date", "account", "number", "phone", "email",
    "Monday", "March", "Street", "Avenue", "London", "Berlin", "Quick", "brown", "fox",
    "jumps", "over", "lazy", "dog", "Receipt", "Subtotal", "Tax", "Discount", "Qty",
    "Item", "Price", "Welcome", "Exit", "Open", "Closed", "Warning", "Notice", "Room",
    "Floor", "Table", "Figure", "Section", "Chapter", "Python", "Linux", "kernel", "cache",
    "memory", "server", "client", "request", "response", "error", "status", "value")


def ocr_recognizer_path() -> Path:
    """rapidocr's PP-OCRv4 text recognizer (CTC over the 6,623 characters listed in its
    ``character`` metadata; weights in `Constant` nodes)."""
    return package_file(*OCR_REC)


def ocr_classifier_path() -> Path:
    """rapidocr's PP-OCR mobile v2.0 text-line angle classifier (0° or 180°)."""
    return package_file(*OCR_CLS)


def ocr_characters(model: Path) -> list[str]:
    """The recognizer's classes as rapidocr 1.4.4 decodes them (`CTCLabelDecode`): the
    model's ``character`` metadata, one per line, with the CTC blank first and a space
    last."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(model), load_external_data=False)
            .metadata_props}
    if "character" not in meta:
        raise MissingDependencyError(f"{model} has no 'character' metadata: not rapidocr's "
                                     f"recognizer (pip install --no-deps {RAPIDOCR[1]})")
    return ["blank", *meta["character"].splitlines(), " "]


def line_text(rng: np.random.Generator) -> str:
    """One line of varied English text: words (capitalised at times), numbers, prices,
    dates, times, percentages, codes and punctuation."""
    kind = int(rng.integers(6))
    words = rng.choice(LINE_WORDS, size=int(rng.integers(1, 6))).tolist()
    if rng.random() < 0.3:
        words[0] = words[0].capitalize()
    if kind == 0:  # words only
        return " ".join(words)
    if kind == 1:  # words and a number
        return " ".join(words) + f" {int(rng.integers(0, 100_000))}"
    if kind == 2:  # a price or a percentage
        value = f"${rng.uniform(0, 2000):.2f}" if rng.random() < 0.5 \
            else f"{rng.uniform(0, 100):.1f}%"
        return f"{words[0]}: {value}"
    if kind == 3:  # a date and a time
        return (f"{int(rng.integers(1990, 2031))}-{int(rng.integers(1, 13)):02d}-"
                f"{int(rng.integers(1, 29)):02d} {int(rng.integers(0, 24)):02d}:"
                f"{int(rng.integers(0, 60)):02d}")
    if kind == 4:  # a code, an e-mail address or a file name
        first, second = words[0].lower(), rng.choice(LINE_WORDS).lower()
        return [f"{first.upper()[:3]}-{int(rng.integers(100, 100_000))}",
                f"{first}.{second}@example.com", f"{first}_{second}.txt"][int(rng.integers(3))]
    # a sentence with punctuation
    mark = str(rng.choice([".", ",", ";", "!", "?", ":"]))
    return " ".join(words) + mark + (f" ({int(rng.integers(1, 99))})" if rng.random() < 0.3
                                     else "")


def ocr_lines(count: int = 300, seed: int = 0) -> tuple[list[str], list[np.ndarray]]:
    """``count`` text lines (`line_text`) and their crops (RGB uint8, height × width × 3),
    rendered as `ocr_images` renders its lines (the same fonts, 16–48 px, inks and plain,
    gradient or speckled backgrounds), each cropped to its text with a margin of 2–12
    pixels, as a detector's box would crop it; deterministic."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    fonts = _fonts()
    texts, crops = [], []
    for k in range(count):
        text = line_text(rng)
        font = _font(rng, fonts, int(rng.choice([16, 20, 26, 34, 48])))
        left, top, right, bottom = font.getbbox(text)
        mx, my = (int(m) for m in rng.integers(2, 13, size=2))
        image = _background(rng, k, bottom - top + 2 * my, right - left + 2 * mx)
        ImageDraw.Draw(image).text((mx - left, my - top), text, fill=_ink(rng), font=font)
        texts.append(text)
        crops.append(np.asarray(image))
    return texts, crops


def resize_linear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` (height × width × channels) resized as cv2.resize with INTER_LINEAR (the
    default rapidocr uses) samples it: pixel centres aligned, source coordinates clamped
    at the edges, no low-pass on shrinking; float32 (cv2 rounds to uint8 on fixed-point
    weights: within one grey level of this)."""
    def axis(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = (np.arange(dst) + 0.5) * (src / dst) - 0.5
        low = np.floor(x).astype(np.int64)
        frac = x - low
        frac[low < 0], low[low < 0] = 0.0, 0
        frac[low >= src - 1], low[low >= src - 1] = 0.0, src - 1
        return low, np.minimum(low + 1, src - 1), frac

    data = image.astype(np.float64)
    y0, y1, fy = axis(data.shape[0], height)
    x0, x1, fx = axis(data.shape[1], width)
    rows = data[y0] * (1 - fy)[:, None, None] + data[y1] * fy[:, None, None]
    out = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    return np.round(out).astype(np.float32)  # cv2 returns uint8


def _padded(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """rapidocr's ``resize_norm_img``: resized to ``height`` keeping the aspect (at most
    ``width`` wide), (x/255 − 0.5)/0.5, CHW, zeros to the right up to ``width``."""
    h, w = image.shape[:2]
    resized_w = min(width, int(math.ceil(height * w / h)))
    x = resize_linear(image, resized_w, height).transpose(2, 0, 1) / 255.0
    out = np.zeros((3, height, width), dtype=np.float32)
    out[:, :, :resized_w] = (x - 0.5) / 0.5
    return out


def ocr_readings(model: Path, crops: Sequence[np.ndarray],
                 restored: Mapping[str, Any] | None = None,
                 characters: Sequence[str] | None = None) -> list[str]:
    """The recognizer's string for each crop, as rapidocr 1.4.4's `TextRecognizer` reads
    them: crops sorted by aspect ratio, in batches of 6, each batch padded to its widest
    (at least 320/48), BGR as cv2 reads images; CTC greedy decoding (best class per
    column, repeats merged, blanks dropped)."""
    session = _session(model, restored)
    characters = characters or ocr_characters(model)
    ratios = np.array([c.shape[1] / c.shape[0] for c in crops])
    order = np.argsort(ratios)
    out = [""] * len(crops)
    for start in range(0, len(crops), REC_BATCH):
        batch = order[start:start + REC_BATCH]
        width = int(REC_HEIGHT * max(REC_WIDTH / REC_HEIGHT, float(ratios[batch].max())))
        x = np.stack([_padded(crops[i][..., ::-1], REC_HEIGHT, width) for i in batch])
        best = session.run(None, {"x": x})[0].argmax(axis=2)
        for i, row in zip(batch, best, strict=True):
            keep = np.ones(len(row), dtype=bool)
            keep[1:] = row[1:] != row[:-1]
            keep &= row != 0
            out[i] = "".join(characters[c] for c in row[keep])
    return out


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions) between two strings."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def compare_readings(reference: Sequence[str], restored: Sequence[str],
                     truth: Sequence[str] | None = None) -> dict[str, float]:
    """The share of lines the restored model reads exactly as the original does
    (``agreement``) and its character error rate against the original's strings (edit
    distance over their length, ``cer``), the share the same once each string's leading
    and trailing spaces are stripped (``ends_agreement``: a crop's margin is read as a
    space or not on a small change); with ``truth``, the restored model's exact-line
    accuracy and character error rate against the rendered text too (its strings' leading
    and trailing spaces stripped first: the original reads a crop's margin as a space at
    times)."""
    def rates(ours: Sequence[str], theirs: Sequence[str]) -> tuple[float, float]:
        same = sum(a == b for a, b in zip(ours, theirs, strict=True))
        edits = sum(edit_distance(a, b) for a, b in zip(ours, theirs, strict=True))
        return same / max(len(theirs), 1), edits / max(sum(len(t) for t in theirs), 1)

    agreement, cer = rates(restored, reference)
    figures = {"agreement": agreement, "cer": cer, "samples": len(reference),
               "ends_agreement": rates([r.strip() for r in restored],
                                       [r.strip() for r in reference])[0]}
    if truth is not None:  # the crops' margins read as spaces at times: ends stripped
        figures["truth_accuracy"], figures["truth_cer"] = rates(
            [r.strip() for r in restored], truth)
    return figures


def angle_crops(crops: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """The crops with every second one (odd index) turned 180°, and which were (bool)."""
    turned = np.arange(len(crops)) % 2 == 1
    return [np.ascontiguousarray(c[::-1, ::-1]) if t else c
            for c, t in zip(crops, turned, strict=True)], turned


def ocr_angles(model: Path, crops: Sequence[np.ndarray],
               restored: Mapping[str, Any] | None = None, batch: int = 64) -> np.ndarray:
    """The angle classifier's probabilities of 0° and 180° for each crop (rows), fed as
    rapidocr 1.4.4's `TextClassifier` feeds it: BGR, resized to height 48 (at most 192
    wide), (x/255 − 0.5)/0.5, zeros to 192 (every input the same shape, so the batching
    does not change the outputs)."""
    session = _session(model, restored)
    x = np.stack([_padded(c[..., ::-1], CLS_HEIGHT, CLS_WIDTH) for c in crops])
    out = [session.run(None, {"x": x[i:i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(out).astype(np.float64)


def compare_angles(reference: np.ndarray, restored: np.ndarray,
                   turned: np.ndarray | None = None) -> dict[str, float]:
    """`compare_probabilities` of the two angle classes (``agreement``: the same 0°/180°
    call), the share of rapidocr's actions kept (``turn_agreement``: it turns a crop when
    180° wins with p > 0.9), and with ``turned``, the restored model's accuracy."""
    figures = compare_probabilities(reference, restored)
    a = (reference.argmax(1) == 1) & (reference.max(1) > CLS_THRESH)
    b = (np.nan_to_num(restored, nan=-1.0).argmax(1) == 1) \
        & (np.nan_to_num(restored, nan=-1.0).max(1) > CLS_THRESH)
    figures["turn_agreement"] = float((a == b).mean())
    if turned is not None:
        figures["truth_accuracy"] = float(
            ((np.nan_to_num(restored, nan=-1.0).argmax(1) == 1) == turned).mean())
    return figures


# --- every model above, judged ---------------------------------------------------------------

UNSEEN_MODELS = ("magika", "silero", "ocr", "ocrrec", "ocrcls")


def judge_for(name: str) -> tuple[Path, Callable[..., dict], str]:
    """(the model's ONNX file, judge(an ONNX file, restored tensors or None) → the figures
    of its outputs against the original's, a line describing the inputs) for one of
    `UNSEEN_MODELS`. Every judge's main figure is ``agreement``."""
    if name == "magika":
        path = magika_path()
        inputs = magika_inputs(path)
        labels = magika_probabilities(path, inputs)
        return path, lambda out, state=None: compare_probabilities(
            labels, magika_probabilities(out, inputs, state)), \
            f"{len(inputs.files)} files, {len(set(labels.argmax(1).tolist()))} distinct labels"
    if name == "silero":
        path = silero_path()
        audio = silero_audio()
        speech = silero_probabilities(path, audio)
        return path, lambda out, state=None: compare_decisions(
            speech, silero_probabilities(out, audio, state)), \
            (f"{audio.shape[0]} clips, {speech.size} chunks, "
             f"{100 * (speech >= THRESHOLD).mean():.1f}% called speech")
    if name == "ocr":
        path = ocr_detector_path()
        images = ocr_images()
        maps = ocr_text_maps(path, images)
        return path, lambda out, state=None: compare_text_maps(
            maps, ocr_text_maps(out, images, state)), \
            f"{len(images)} images, {compare_text_maps(maps, maps)['regions']} text regions"
    if name == "ocrrec":
        path = ocr_recognizer_path()
        characters = ocr_characters(path)
        texts, crops = ocr_lines()
        read = ocr_readings(path, crops, characters=characters)
        own = compare_readings(read, read, texts)
        return path, lambda out, state=None: compare_readings(
            read, ocr_readings(out, crops, state, characters), texts), \
            (f"{len(crops)} text lines, the original reads {100 * own['truth_accuracy']:.1f}% "
             f"exactly, character error rate {100 * own['truth_cer']:.2f}%")
    if name == "ocrcls":
        path = ocr_classifier_path()
        crops, turned = angle_crops(ocr_lines()[1])
        angles = ocr_angles(path, crops)
        own = compare_angles(angles, angles, turned)
        return path, lambda out, state=None: compare_angles(
            angles, ocr_angles(out, crops, state), turned), \
            (f"{len(crops)} text lines, {int(turned.sum())} turned 180°, the original right "
             f"on {100 * own['truth_accuracy']:.1f}%")
    raise ValueError(f"not one of {', '.join(UNSEEN_MODELS)}: {name}")
