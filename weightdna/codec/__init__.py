"""The .dna codec: the file container, and how one tensor is quantised, entropy-coded or
stored exactly. The format is specified in docs/FORMAT.md."""

from weightdna._lazy import lazy_exports

# Imported on first use: a light submodule (a command's choices) is read without
# the rest, which imports torch.
_EXPORTS = {
    "DnaFile": "container",
    "decode_tensor": "tensor",
    "encode_tensor": "tensor",
    "read_dna_file": "container",
    "write_dna_file": "container",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
