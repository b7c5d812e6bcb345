"""How firm are Silero VAD's decisions on the synthetic audio? The original model against
itself on the same clips with white noise added at --levels dB below each clip's peak.

    .venv/bin/python bench/unseen_floor.py [--levels 80,60,40]

A restored model whose decisions agree less with the original's than the original's own
agree under noise far below hearing moves decisions the audio does not settle firmly.
"""

from __future__ import annotations

import argparse

import numpy as np

from weightdna.evaluate import unseen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="80,60,40")
    args = parser.parse_args(argv)
    path, audio = unseen.silero_path(), unseen.silero_audio()
    reference = unseen.silero_probabilities(path, audio)
    near = np.abs(reference - unseen.THRESHOLD)
    print(f"chunks within 0.05 / 0.1 of the threshold: {100 * (near < 0.05).mean():.1f}% / "
          f"{100 * (near < 0.1).mean():.1f}%\n")
    rng = np.random.default_rng(1)
    print("| input noise | agreement | max Δp | speech share (original 0.336) |\n"
          "|---:|---:|---:|---:|")
    for level in (float(x) for x in args.levels.split(",")):
        scale = np.abs(audio).max(axis=1, keepdims=True) * 10 ** (-level / 20)
        noisy = audio + (rng.standard_normal(audio.shape) * scale).astype(np.float32)
        figures = unseen.compare_decisions(reference, unseen.silero_probabilities(path, noisy))
        print(f"| −{level:g} dB | {100 * figures['agreement']:.2f}% | "
              f"{figures['max_delta']:.3f} | {figures['restored_speech_share']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
