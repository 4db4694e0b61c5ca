"""A registry of components found by name, with a did-you-mean for unknown names."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from medweave.errors import InputError

__all__ = ["Registry"]

T = TypeVar("T")


@dataclass(frozen=True)
class _Entry(Generic[T]):
    obj: T
    description: str


class Registry(Generic[T]):
    """Components of one kind (encoders, fusions, tasks), one canonical name each."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, _Entry[T]] = {}

    def register(self, name: str, *, description: str) -> Callable[[T], T]:
        def wrap(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = _Entry(obj, description)
            return obj

        return wrap

    def get(self, name: str) -> T:
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=1)
            hint = (
                f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(self.names())}"
            )
            raise InputError(f"unknown {self.kind} {name!r}; {hint}")
        return self._entries[name].obj

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        return {k: self._entries[k].description for k in self.names()}
