"""A BERT encoder forward of our own (PyTorch), the judge of whether a restored MiniLM works.

Built from a state dict with the Hugging Face ``BertModel`` names and its ``config.json``;
``encode`` pools like sentence-transformers all-MiniLM-L6-v2 (mean over real tokens, then
L2 normalisation). Tokenisation uses the ``tokenizers`` package when it is installed and a
small WordPiece tokenizer over ``vocab.txt`` otherwise.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from weightdna.errors import InvalidInputError, ModelFileError

# The tensors one encoder layer reads, relative to ``encoder.layer.{i}.``.
LAYER_TENSORS = (
    "attention.self.query.weight",
    "attention.self.query.bias",
    "attention.self.key.weight",
    "attention.self.key.bias",
    "attention.self.value.weight",
    "attention.self.value.bias",
    "attention.output.dense.weight",
    "attention.output.dense.bias",
    "attention.output.LayerNorm.weight",
    "attention.output.LayerNorm.bias",
    "intermediate.dense.weight",
    "intermediate.dense.bias",
    "output.dense.weight",
    "output.dense.bias",
    "output.LayerNorm.weight",
    "output.LayerNorm.bias",
)
EMBEDDING_TENSORS = (
    "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight",
    "embeddings.LayerNorm.weight",
    "embeddings.LayerNorm.bias",
)


@dataclass(frozen=True)
class BertConfig:
    """The shape of a BERT encoder, as its ``config.json`` gives it."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> BertConfig:
        """Take the fields this forward needs from a Hugging Face config dict."""
        if config.get("hidden_act", "gelu") != "gelu":
            raise InvalidInputError(
                f"hidden_act {config['hidden_act']!r} is not supported; this forward "
                "implements BERT's exact (erf) GELU only"
            )
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise InvalidInputError("only absolute position embeddings are supported")
        names = cls.__dataclass_fields__
        made = cls(**{k: v for k, v in config.items() if k in names})
        if made.hidden_size % made.num_attention_heads:
            raise InvalidInputError(
                f"hidden_size {made.hidden_size} is not a multiple of "
                f"num_attention_heads {made.num_attention_heads}"
            )
        return made

    @classmethod
    def from_json(cls, path: str | Path) -> BertConfig:
        """Read a Hugging Face ``config.json``."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise ModelFileError(f"cannot read BERT config {path}: {err}") from err


def _as_tensor(value: Any, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device="cpu", dtype=dtype)
    return torch.as_tensor(np.asarray(value)).to(dtype)


def _strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop a wrapper prefix such as ``bert.`` so names read ``embeddings.…``/``encoder.…``."""
    anchor = "embeddings.word_embeddings.weight"
    for name in state_dict:
        if name.endswith(anchor):
            prefix = name[: -len(anchor)]
            return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    raise InvalidInputError(
        f"no tensor named {anchor!r} (or ending in it): this is not a BERT state dict"
    )


class BertEncoder:
    """A BERT encoder forward over a state dict with Hugging Face ``BertModel`` names."""

    def __init__(
        self,
        state_dict: Mapping[str, Any],
        config: BertConfig,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        """``state_dict`` values may be torch tensors or NumPy arrays; they are converted to
        ``dtype`` (float32 or float64)."""
        if dtype not in (torch.float32, torch.float64):
            raise InvalidInputError(f"dtype must be torch.float32 or torch.float64, not {dtype}")
        self.config = config
        self.dtype = dtype
        named = _strip_prefix(state_dict)
        needed = list(EMBEDDING_TENSORS) + [
            f"encoder.layer.{i}.{t}" for i in range(config.num_hidden_layers) for t in LAYER_TENSORS
        ]
        missing = [n for n in needed if n not in named]
        if missing:
            raise InvalidInputError(
                f"the state dict lacks {len(missing)} tensors this BERT config needs, "
                f"e.g. {missing[:3]}; check num_hidden_layers in the config"
            )
        self.tensors = {n: _as_tensor(named[n], dtype) for n in needed}

    @classmethod
    def from_folder(cls, folder: str | Path, dtype: torch.dtype = torch.float32) -> BertEncoder:
        """Load a Hugging Face BERT model folder (its weights and ``config.json``)."""
        from weightdna.weights import load_weights

        folder = Path(folder)
        config = BertConfig.from_json(folder / "config.json")
        return cls(load_weights(folder).state_dict(), config, dtype)

    def _t(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def embed(
        self, token_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Word + position + token-type embeddings, layer-normalised: (batch, seq, hidden)."""
        seq = token_ids.shape[1]
        if seq > self.config.max_position_embeddings:
            raise InvalidInputError(
                f"sequence length {seq} exceeds max_position_embeddings "
                f"{self.config.max_position_embeddings}; truncate the input"
            )
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(token_ids)
        x = (
            self._t("embeddings.word_embeddings.weight")[token_ids]
            + self._t("embeddings.position_embeddings.weight")[:seq][None]
            + self._t("embeddings.token_type_embeddings.weight")[token_type_ids]
        )
        return self._layer_norm(x, "embeddings.LayerNorm")

    def _layer_norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(
            x,
            (x.shape[-1],),
            self._t(f"{name}.weight"),
            self._t(f"{name}.bias"),
            self.config.layer_norm_eps,
        )

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self._t(f"{name}.weight"), self._t(f"{name}.bias"))

    def layer(self, index: int, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One encoder layer: self-attention and feed-forward, each residual + LayerNorm."""
        p = f"encoder.layer.{index}."
        batch, seq, width = hidden.shape
        heads, head_dim = self.config.num_attention_heads, self.config.head_dim

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, seq, heads, head_dim).transpose(1, 2)

        q = split(self._linear(hidden, p + "attention.self.query"))
        k = split(self._linear(hidden, p + "attention.self.key"))
        v = split(self._linear(hidden, p + "attention.self.value"))
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)
        # Padding keys get the most negative finite value, as Hugging Face does, so a
        # fully masked row still yields finite (uniform) weights instead of NaN.
        blocked = (attention_mask == 0)[:, None, None, :]
        scores = scores.masked_fill(blocked, torch.finfo(scores.dtype).min)
        context = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, seq, width)
        attended = self._layer_norm(
            self._linear(context, p + "attention.output.dense") + hidden,
            p + "attention.output.LayerNorm",
        )
        inner = F.gelu(self._linear(attended, p + "intermediate.dense"))  # exact erf GELU
        return self._layer_norm(
            self._linear(inner, p + "output.dense") + attended, p + "output.LayerNorm"
        )

    def hidden_states(
        self,
        token_ids: Any,
        attention_mask: Any | None = None,
        token_type_ids: Any | None = None,
    ) -> torch.Tensor:
        """The last layer's token representations: (batch, seq, hidden)."""
        token_ids = torch.as_tensor(np.asarray(token_ids), dtype=torch.long)
        if token_ids.ndim != 2:
            raise InvalidInputError(f"token_ids must be (batch, seq), got {tuple(token_ids.shape)}")
        mask = self._mask(token_ids, attention_mask)
        if token_type_ids is not None:
            token_type_ids = torch.as_tensor(np.asarray(token_type_ids), dtype=torch.long)
        with torch.no_grad():
            hidden = self.embed(token_ids, token_type_ids)
            for i in range(self.config.num_hidden_layers):
                hidden = self.layer(i, hidden, mask)
        return hidden

    @staticmethod
    def _mask(token_ids: torch.Tensor, attention_mask: Any | None) -> torch.Tensor:
        if attention_mask is None:
            return torch.ones_like(token_ids)
        mask = torch.as_tensor(np.asarray(attention_mask), dtype=torch.long)
        if mask.shape != token_ids.shape:
            raise InvalidInputError(
                f"attention_mask shape {tuple(mask.shape)} differs from token_ids shape "
                f"{tuple(token_ids.shape)}"
            )
        return mask

    def encode(self, token_ids: Any, attention_mask: Any | None = None) -> torch.Tensor:
        """Sentence embeddings as all-MiniLM-L6-v2 makes them: masked mean, L2-normalised."""
        hidden = self.hidden_states(token_ids, attention_mask)
        mask = self._mask(torch.as_tensor(np.asarray(token_ids)), attention_mask)
        return F.normalize(mean_pool(hidden, mask), p=2, dim=1)

    def encode_texts(self, texts: Sequence[str], tokenizer: Tokenizer) -> torch.Tensor:
        """Tokenise ``texts`` and encode them: (len(texts), hidden), unit norm."""
        token_ids, attention_mask = tokenizer(texts)
        return self.encode(token_ids, attention_mask)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors where ``attention_mask`` is 1 (sentence-transformers)."""
    weights = attention_mask.to(hidden.dtype)[..., None]
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


# ---------------------------------------------------------------------------------------
# Tokenisation


class Tokenizer(Protocol):
    """Turns texts into padded ``(token_ids, attention_mask)`` int64 arrays."""

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]: ...

    def tokenize(self, text: str) -> list[str]: ...


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    width = max((len(r) for r in rows), default=0)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


def _is_punctuation(ch: str) -> bool:
    # BERT counts every non-alphanumeric ASCII character as punctuation, as well as
    # Unicode's P* categories.
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


class WordPieceTokenizer:
    """BERT uncased tokenisation: basic splitting, then greedy longest-match WordPiece."""

    def __init__(
        self,
        vocab: Mapping[str, int],
        max_length: int = 512,
        lowercase: bool = True,
        max_chars_per_word: int = 100,
    ) -> None:
        self.vocab = dict(vocab)
        self.max_length = max_length
        self.lowercase = lowercase
        self.max_chars_per_word = max_chars_per_word
        for token in ("[CLS]", "[SEP]", "[UNK]", "[PAD]"):
            if token not in self.vocab:
                raise InvalidInputError(f"the vocabulary lacks the special token {token}")

    @classmethod
    def from_vocab_file(cls, path: str | Path, max_length: int = 512) -> WordPieceTokenizer:
        """Read ``vocab.txt`` (one token a line; the line number is the id)."""
        try:
            lines = Path(path).read_text(encoding="utf-8").split("\n")
        except OSError as err:
            raise ModelFileError(f"cannot read vocabulary {path}: {err}") from err
        if lines and lines[-1] == "":
            lines.pop()
        return cls({token: i for i, token in enumerate(lines)}, max_length=max_length)

    def _basic(self, text: str) -> list[str]:
        chars = []
        for ch in text:
            cp = ord(ch)
            if (
                cp == 0
                or cp == 0xFFFD
                or (unicodedata.category(ch).startswith("C") and ch not in "\t\n\r")
            ):
                continue
            if ch in " \t\n\r" or unicodedata.category(ch) == "Zs":
                chars.append(" ")
            elif _is_cjk(cp):
                chars.append(f" {ch} ")
            else:
                chars.append(ch)
        words = []
        for word in "".join(chars).split():
            if self.lowercase:
                word = unicodedata.normalize("NFD", word.lower())
                word = "".join(c for c in word if unicodedata.category(c) != "Mn")
            piece = ""
            for ch in word:
                if _is_punctuation(ch):
                    if piece:
                        words.append(piece)
                    words.append(ch)
                    piece = ""
                else:
                    piece += ch
            if piece:
                words.append(piece)
        return words

    def _wordpiece(self, word: str) -> list[str]:
        if len(word) > self.max_chars_per_word:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:  # no prefix of the rest is in the vocabulary
                return ["[UNK]"]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Word pieces of ``text``, without [CLS]/[SEP]."""
        return [p for word in self._basic(text) for p in self._wordpiece(word)]

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``[CLS] pieces [SEP]`` ids, truncated to ``max_length`` and right-padded."""
        if isinstance(texts, str):
            texts = [texts]
        rows = []
        for text in texts:
            ids = [self.vocab[p] for p in self.tokenize(text)][: self.max_length - 2]
            rows.append([self.vocab["[CLS]"], *ids, self.vocab["[SEP]"]])
        return _pad(rows, self.vocab["[PAD]"])


class _FastTokenizer:
    """The ``tokenizers`` package's tokenizer from ``tokenizer.json``, same interface."""

    def __init__(self, path: Path, max_length: int) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        self._tok = HFTokenizer.from_file(str(path))
        # The file fixes padding to 128 tokens; we pad to the batch's longest instead.
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_length)
        self.pad_id = self._tok.token_to_id("[PAD]") or 0
        self.max_length = max_length

    def tokenize(self, text: str) -> list[str]:
        return self._tok.encode(text, add_special_tokens=False).tokens

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(texts, str):
            texts = [texts]
        return _pad([e.ids for e in self._tok.encode_batch(list(texts))], self.pad_id)


# A data-free guess at how often each token of a BERT WordPiece vocabulary occurs in text
# (`token_prior`). BERT's vocab.txt lists its special and [unusedN] entries, then single
# characters in code-point order, then word pieces from the most frequent ("the", "of",
# "and", ...) to the rarest; a Zipf law over that order. A single ASCII character
# (punctuation, digits, letters such as "a" and "i") counts as this rank.
PRIOR_EXPONENT = 1.0
PRIOR_CHARACTER_RANK = 30


def read_vocabulary(folder: str | Path, vocab_size: int | None = None) -> list[str]:
    """The entries of ``folder``/vocab.txt (one a line; the line number is the id), at most
    ``vocab_size`` of them; [] without the file."""
    path = Path(folder) / "vocab.txt"
    if not path.is_file():
        return []
    try:
        words = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ModelFileError(f"cannot read vocabulary {path}: {err}") from err
    return words[:vocab_size] if vocab_size is not None else words


def _bracketed(word: str) -> bool:
    return len(word) > 2 and word.startswith("[") and word.endswith("]")


def token_prior(words: Sequence[str], exponent: float = PRIOR_EXPONENT) -> np.ndarray:
    """A probability for each entry of a BERT WordPiece vocabulary (``words``, in id order)
    of occurring in a token sequence, from the vocabulary's order alone (no data):
    1/rank^``exponent`` (Zipf), where the entries that are neither bracketed nor one
    character are ranked in their order, from 1; a single ASCII character counts as rank
    PRIOR_CHARACTER_RANK and any other single character as the rarest; [CLS] and [SEP],
    which every sequence holds once, as rank 1. The other bracketed entries ([PAD],
    [UNK], [MASK], [unusedN]), which text does not hold, get the rarest entry's
    probability (a floor: never 0). Sums to 1."""
    if not exponent >= 0:
        raise InvalidInputError(f"the prior's exponent must be >= 0, got {exponent}")
    if not words:
        raise InvalidInputError("token_prior needs a vocabulary (vocab.txt's entries).")
    words = list(words)
    rank = np.zeros(len(words), dtype=np.float64)
    ranked = [i for i, w in enumerate(words) if not _bracketed(w) and len(w) != 1]
    rank[ranked] = np.arange(1, len(ranked) + 1)
    last = float(len(ranked) + 1)
    for i, w in enumerate(words):
        if len(w) == 1:
            rank[i] = PRIOR_CHARACTER_RANK if w.isascii() else last
        elif _bracketed(w):
            rank[i] = 1.0 if w in ("[CLS]", "[SEP]") else last
    prior = rank ** -float(exponent)
    return prior / prior.sum()


def random_token_batch(folder: str | Path, vocab_size: int, samples: int, max_length: int,
                       rng: np.random.Generator, prior: bool = False
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, attention mask) of ``samples`` random sequences: data-free inputs for a
    BERT model. Each is [CLS], 8 to ``max_length`` − 2 tokens drawn from the vocabulary
    without its bracketed special and unused entries ([PAD], [unused12], ...), then [SEP],
    padded with 0. The tokens are drawn uniformly, or with ``prior`` as often as
    `token_prior` guesses they occur in text. Without a vocab.txt in ``folder``: ids from
    1000 up (BERT's vocabularies keep their specials below), drawn uniformly, no [CLS] or
    [SEP]."""
    words = read_vocabulary(folder, vocab_size)
    ordinary = np.array([i for i, w in enumerate(words) if not _bracketed(w)],
                        dtype=np.int64)
    chance = None
    if ordinary.size == 0:
        ordinary = np.arange(min(1000, vocab_size - 1), vocab_size, dtype=np.int64)
    elif prior:
        chance = token_prior(words)[ordinary]
        chance /= chance.sum()
    framing = [words.index(t) if t in words else None for t in ("[CLS]", "[SEP]")]
    first, last = framing
    ends = (first is not None) + (last is not None)
    max_length = max(max_length, ends + 1)
    ids = np.zeros((samples, max_length), dtype=np.int64)
    mask = np.zeros((samples, max_length), dtype=np.int64)
    for i in range(samples):
        count = int(rng.integers(min(8, max_length - ends), max_length - ends + 1))
        row = rng.choice(ordinary, count, p=chance).tolist()
        row = ([first] if first is not None else []) + row + ([last] if last is not None else [])
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return ids, mask


def load_tokenizer(folder: str | Path, fast: bool | None = None) -> Tokenizer:
    """The tokenizer of a Hugging Face BERT folder.

    fast: True requires the ``tokenizers`` package, False uses our WordPiece over
    ``vocab.txt``, None picks ``tokenizers`` when it is installed.
    The maximum length is sentence-transformers' ``max_seq_length`` when the folder has
    ``sentence_bert_config.json`` (256 for all-MiniLM-L6-v2), else 512.
    """
    folder = Path(folder)
    max_length = 512
    st_config = folder / "sentence_bert_config.json"
    if st_config.is_file():
        max_length = int(json.loads(st_config.read_text()).get("max_seq_length", max_length))
    if fast is None:
        import importlib.util

        fast = (
            importlib.util.find_spec("tokenizers") is not None
            and (folder / "tokenizer.json").is_file()
        )
    if fast:
        try:
            return _FastTokenizer(folder / "tokenizer.json", max_length)
        except ImportError as err:
            from weightdna.errors import MissingDependencyError

            raise MissingDependencyError(
                "the 'tokenizers' package is not installed; pip install tokenizers, "
                "or pass fast=False"
            ) from err
    return WordPieceTokenizer.from_vocab_file(folder / "vocab.txt", max_length=max_length)
