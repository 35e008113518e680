"""Tokenizer from a Hugging Face `tokenizer.json`, with truncation and padding switched off.

The engine cuts long texts into overlapping windows itself (engine.batching.chunk_ids), so the
tokenizer must return every token; a shipped tokenizer.json often truncates at 128 or 512.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from engine.errors import InputError, ModelLoadError


class TextTokenizer:
    """Configured once at construction, then only read: safe to call from several threads."""

    def __init__(self, path: str | Path) -> None:
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise ModelLoadError(f"cannot read tokenizer {path}: {exc}") from exc
        self._tok.no_truncation()
        self._tok.no_padding()
        self.cls_id = self._special_id("[CLS]")
        self.sep_id = self._special_id("[SEP]")
        self.pad_id = self._special_id("[PAD]")

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> TextTokenizer:
        return cls(Path(model_dir) / "tokenizer.json")

    def _special_id(self, token: str) -> int:
        token_id = self._tok.token_to_id(token)
        if token_id is None:
            raise ModelLoadError(f"tokenizer has no {token} token")
        return token_id

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without [CLS]/[SEP]: chunking adds those to every window."""
        if not isinstance(text, str):
            raise InputError(f"expected text, got {type(text).__name__}")
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_with_specials(self, text: str) -> list[int]:
        return [self.cls_id, *self.encode(text), self.sep_id]
