"""CPU time of the rate control's estimates on MiniLM's tensors, for old-against-new checks.

    PYTHONPATH=$PWD .venv/bin/python bench/kernel_speed.py [--repeat 5]

``kernel``: `ratecontrol._round_and_count` against the one-loop kernel it replaced
(`_one_loop`, kept here only as the reference), on the samples of three MiniLM tensors
(the word embeddings: 2,730 rows of 384; a 1536 × 384 and a 384 × 384 matrix) at the
rate control's step for about 4 bits per weight, per-row divisors, rint and a deadzone;
the figures must be equal. ``curves``: `ratecontrol.rate_curve` of the same tensors (the
analysis task's probes, objective "layer", 4 bits per weight): run it under the old and
the new code (PYTHONPATH) and compare. Best of ``--repeat``; torch and BLAS on one thread.
"""

from __future__ import annotations

import argparse
import math
import time

import numba
import numpy as np

NAMES = ("embeddings.word_embeddings.weight",
         "encoder.layer.0.intermediate.dense.weight",
         "encoder.layer.0.attention.self.query.weight")


@numba.njit(cache=True, nogil=True)
def _one_loop(sample: np.ndarray, divisor: np.ndarray, nearest: bool, shift: np.float32,
              error: np.ndarray, counts: np.ndarray) -> bool:
    """The kernel before issue 14's second cut: one loop of arithmetic, test and count."""
    rows, columns = sample.shape
    offset = counts.size // 2
    limit = np.float32(offset)
    for r in range(rows):
        d = divisor[r]
        for c in range(columns):
            scaled = np.float32(sample[r, c] / d)
            if nearest:
                symbol = np.float32(np.rint(scaled))
            else:
                magnitude = np.float32(np.floor(np.float32(abs(scaled) + shift)))
                symbol = np.float32(np.copysign(magnitude, scaled))
            error[r, c] = np.float32(np.float32(scaled - symbol) * d)
            if not abs(symbol) <= limit:
                return False
            counts[int(symbol) + offset] += 1
    return True


def _best(run, repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=("kernel", "curves"))
    args = parser.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
    from weightdna.codec import ratecontrol as rc
    from weightdna.weights import load_weights, minilm_path

    weights = load_weights(minilm_path())
    target = rc.Target("bits_per_weight", 4.0)
    for name in NAMES:
        info = weights.info(name)
        tc = rc.tensor_candidates(info, weights.numpy(name), ("quantized",))
        tc.sensitivity = 1.0
        rc.apply_objective(tc, "layer")
        if args.only != "curves" and hasattr(rc, "_round_and_count"):
            sample = tc.candidates[0].sample
            step = 0.02 * tc.peak  # about 4 bits per weight on these tensors
            scale = (tc.row_scale if tc.row_scale is not None
                     else np.ones(sample.shape[0]))
            stride = max(1, math.ceil(info.numel / rc.SAMPLE_ELEMENTS))
            divisor = (step * scale)[::stride][: sample.shape[0]].astype(np.float32)
            half = int(float(np.max(np.abs(sample) / divisor[:, None])) * 1.001) + 2
            for deadzone in (0.0, 0.2):
                shift = np.float32(0.5 - deadzone)
                figures = []
                for kernel in (_one_loop, rc._round_and_count):
                    error = np.empty_like(sample)
                    counts = np.zeros(2 * half + 1, np.int64)

                    def run(kernel=kernel, error=error, counts=counts, sample=sample,
                            divisor=divisor, nearest=not deadzone,
                            shift=shift) -> None:
                        counts[:] = 0
                        assert kernel(sample, divisor, nearest, shift, error, counts)

                    seconds = _best(run, args.repeat)
                    figures.append((seconds, error.copy(), counts.copy()))
                (old, e0, c0), (new, e1, c1) = figures
                same = np.array_equal(e0.view(np.int32), e1.view(np.int32)) and \
                    np.array_equal(c0, c1)
                print(f"kernel {name} {sample.shape} deadzone {deadzone}: one loop "
                      f"{old * 1e3:.3f} ms, now {new * 1e3:.3f} ms ({old / new:.2f}x), "
                      f"same figures {same}")
        if args.only != "kernel":
            def curve(tc=tc) -> None:
                tc.curve = rc.rate_curve(tc, target, False)

            seconds = _best(curve, args.repeat)
            print(f"curves {name}: {seconds:.4f} CPU s, {tc.curve.shape[1]} points, "
                  f"bits {tc.curve[1].sum():.6f}")


if __name__ == "__main__":
    main()
