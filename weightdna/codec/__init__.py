"""The .dna codec: the file container, and how one tensor is quantised, entropy-coded or
stored exactly. The format is specified in docs/FORMAT.md."""

from weightdna.codec.container import DnaFile, read_dna_file, write_dna_file
from weightdna.codec.tensor import decode_tensor, encode_tensor

__all__ = ["DnaFile", "decode_tensor", "encode_tensor", "read_dna_file", "write_dna_file"]
