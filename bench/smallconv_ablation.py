"""What breaks a small conv model at a rate: its tensors by role, coded alone or kept alone.

    PYTHONPATH=$PWD .venv/bin/python bench/smallconv_ablation.py --model ocrcls \
        [--targets 2.95,3,3.05] [--tensors] [--top 12]

Compresses the model (`weightdna.evaluate.unseen`) with `compress_model`'s defaults at
each target, decompresses it, and judges (a) the whole file, (b) each group of tensors
(by role in the network: first conv, 1×1 expand, depthwise, 1×1 project, squeeze-
excitation, last conv, classifier, BatchNorm gains/shifts, BatchNorm statistics, biases)
restored alone, every other tensor original ("coded alone"), and (c) each group kept
original, every other tensor restored ("exact alone"). With ``--tensors``, (c) for each
tensor coded at the rate too, the ``--top`` that win most. The groups follow PaddleOCR's
MobileNetV3 names (ocrcls); a tensor matching none is grouped by its shape (matrix,
depthwise, 1×1 conv, k×k conv) or, not coded at the rate, by its coding.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

from unseen_cli import figures_text, judge_for

from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.ratecontrol import Target
from weightdna.codec.roles import coding
from weightdna.weights import load_weights

GROUPS = (
    ("BN statistics", r"_(mean|variance)$"),
    ("BN gains", r"_bn_scale$"),
    ("BN shifts", r"_bn_offset$"),
    ("biases", r"(_offset|\.b_0|_bias)$"),
    ("first conv", r"^conv1_weights$"),
    ("1x1 expand", r"_expand_weights$"),
    ("depthwise", r"_depthwise_weights$"),
    ("1x1 project", r"_linear_weights$"),
    ("SE", r"_se_\d_weights$"),
    ("last conv", r"^conv_last_weights$"),
    ("classifier", r"^fc_0\.w_0$"),
)


def group_of(name: str, info=None) -> str:
    """The tensor's group by PaddleOCR's MobileNetV3 names; else, given its TensorInfo, by
    its shape and coding (opaque names: ocrrec's ``conv2d_182.w_0``)."""
    for group, pattern in GROUPS:
        if re.search(pattern, name):
            return group
    if info is None:
        return "other"
    if coding(info) != "rate":
        return f"other ({coding(info)})"
    shape = info.shape
    if len(shape) == 2:
        return "matrix"
    if len(shape) == 4 and shape[1] == 1:
        return "depthwise"
    if len(shape) == 4 and shape[2:] == (1, 1):
        return "1x1 conv"
    return "k×k conv"


def restored_state(weights, target: float, tmp: Path, **options):
    dna, out = tmp / "m.dna", tmp / "restored.safetensors"
    report = compress_model(weights, dna, Target("bits_per_weight", target), **options)
    decompress_model(dna, out)
    return report, load_weights(out).state_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ocrcls")
    parser.add_argument("--targets", default="3")
    parser.add_argument("--tensors", action="store_true")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    path, judge = judge_for(args.model)
    weights = load_weights(path)
    infos = {i.name: i for i in weights.infos}
    original = weights.state_dict()
    for target in (float(t) for t in args.targets.split(",")):
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            report, restored = restored_state(weights, target, Path(tmp))
        lossy = [t.name for t in report.tensors
                 if t.snr_db is not None and "else_branch" not in t.name]
        print(f"{args.model}, target {target:g}: {report.bits_per_weight:.3f} bpw, "
              f"{figures_text(judge(path, restored))} ({time.perf_counter() - start:.0f} s)")
        groups: dict[str, list[str]] = {}
        for name in lossy:
            groups.setdefault(group_of(name, infos[name]), []).append(name)
        print("| group | tensors | values | coding | bytes | coded alone, the rest original | "
              "original alone, the rest coded |\n|---|---:|---:|---|---:|---:|---:|")
        sizes = {t.name: t.bytes for t in report.tensors}
        for group, names in groups.items():
            alone = dict(original) | {n: restored[n] for n in names}
            kept = dict(restored) | {n: original[n] for n in names}
            codings = sorted({coding(infos[n]) for n in names})
            print(f"| {group} | {len(names)} | {sum(infos[n].numel for n in names)} | "
                  f"{','.join(codings)} | {sum(sizes[n] for n in names)} | "
                  f"{figures_text(judge(path, alone)).split(' | ')[0]} | "
                  f"{figures_text(judge(path, kept)).split(' | ')[0]} |", flush=True)
        if args.tensors:
            rows = []
            by_name = {t.name: t for t in report.tensors}
            for name in lossy:
                if coding(infos[name]) != "rate":
                    continue
                kept = dict(restored) | {name: original[name]}
                rows.append((judge(path, kept)["agreement"], by_name[name]))
            rows.sort(key=lambda row: -row[0])
            print("| tensor (kept original, the rest coded) | group | shape | bits/weight | "
                  "SNR | zeroed | judge |\n|---|---|---|---:|---:|---:|---:|")
            for agreement, t in rows[: args.top]:
                group = group_of(t.name, infos[t.name])
                print(f"| {t.name} | {group} | {'×'.join(map(str, t.shape))} | "
                      f"{t.bits_per_weight:.2f} | {t.snr_db:.1f} dB | {t.zeroed or 0:.2f} | "
                      f"{100 * agreement:.2f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
