"""The size cost of coding a row-blocked tensor's symbols by row blocks (format version 16), at
the same steps: the embeddings and LM head of a Llama-shaped checkpoint coded whole (one
task, as before version 16) and by row blocks (`compress._code_round` in this process), the
per-row steps those a version-16 compress of the same model chose; section bytes, the
entry's JSON (zlib -9), whether both decode to the same values, and CPU seconds.

    PYTHONPATH=$PWD .venv/bin/python bench/row_streams_cost.py MODEL_DIR MODEL.dna
"""
import json
import sys
import time
import zlib

import numpy as np

from weightdna.codec import compress
from weightdna.codec.container import read_dna_file
from weightdna.codec.ratecontrol import Candidate, Choice
from weightdna.codec.rowsteps import decode_grid
from weightdna.codec.tensor import decode_tensor
from weightdna.codec.workers import Runner
from weightdna.weights import load_weights

model, dna_path = sys.argv[1], sys.argv[2]
weights, dna = load_weights(model), read_dna_file(dna_path)
for name in ("model.embed_tokens.weight", "lm_head.weight"):
    entry = dna.entries[dna.index(name)]
    params = entry["params"]
    info = weights.info(name)
    steps = decode_grid(params["grid"], dna.read_sections(name)["steps"], params["rows"], name)
    choice = Choice(Candidate("quantized", None, None, np.zeros(info.shape[0]), 0.0), steps,
                    0.0, 0.0, 0.0, "trellis")
    t = time.process_time()
    whole = compress._encode_choice(weights.tensor(name), name, choice)
    t_whole = time.process_time() - t
    t = time.process_time()
    [(_, (b_entry, b_sections))] = compress._code_round(
        Runner(weights), compress._Coder(weights), [], [(info, choice)], True,
        lambda *_: None, 1)
    t_blocks = time.process_time() - t
    b_sections = dict(b_sections)
    same = bool(decode_tensor(b_entry, b_sections).equal(decode_tensor(*whole)))
    size_w = sum(map(len, whole[1].values()))
    size_b = sum(map(len, b_sections.values()))
    json_w = len(zlib.compress(json.dumps(whole[0]).encode(), 9))
    json_b = len(zlib.compress(json.dumps(b_entry).encode(), 9))
    print(json.dumps({"name": name, "blocks": len(b_entry["params"]["model"]["blocks"]),
                      "sections_whole": size_w, "sections_blocks": size_b,
                      "entry_zlib_whole": json_w, "entry_zlib_blocks": json_b,
                      "same_values": same, "stats_equal": whole[0]["stats"] == b_entry["stats"],
                      "cpu_whole_s": round(t_whole, 1), "cpu_blocks_s": round(t_blocks, 1)}))
