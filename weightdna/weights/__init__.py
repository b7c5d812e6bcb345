"""Weights in and out: read a trained model's tensors, describe them, write them back.

``load_weights`` opens safetensors, PyTorch checkpoints, NumPy .npz, Hugging Face folders
and ONNX; ``ModelWeights`` lists every tensor as a ``TensorInfo`` (role, layer, kind) and
reads values on demand; ``save_weights`` writes safetensors. Needs nothing else of weightdna.
"""

from weightdna.weights.load import detect_format, find_state_dict, load_weights
from weightdna.weights.minilm import minilm_path
from weightdna.weights.model import ModelWeights, TensorInfo
from weightdna.weights.roles import ROLES, infer_role, split_layer
from weightdna.weights.save import save_weights

__all__ = [
    "ROLES",
    "ModelWeights",
    "TensorInfo",
    "detect_format",
    "find_state_dict",
    "infer_role",
    "load_weights",
    "minilm_path",
    "save_weights",
    "split_layer",
]
