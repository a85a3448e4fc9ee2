"""Plugin types by their `type:` name, each module imported the first time a config uses one of its types.

Check and action types are registered explicitly, one line each (no discovery by name), but importing
every module at start costs the daemon memory for types its host never runs. An entry therefore names
a loader: a function that imports its module's classes by name, so a misspelt class fails loudly when
the loader runs — at the latest in the test that loads every entry.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, Iterable, TypeVar

T = TypeVar("T")
Loader = Callable[[], Iterable[type]]


class TypeRegistry(Mapping[str, type[T]], Generic[T]):
    """`registry["redis"]` imports the module of the redis types (once) and returns the class; `"redis" in
    registry`, iterating and `len` look at the names only. Every class a loader returns must be registered
    under its own `TYPE` with that loader."""

    def __init__(self, kind: str, loaders: dict[str, Loader]):
        self._kind = kind
        self._loaders = loaders
        self._loaded: dict[str, type[T]] = {}
        self._lock = threading.Lock()   # the sink, an action thread and the loop may ask at once

    def __getitem__(self, name: str) -> type[T]:
        cls = self._loaded.get(name)
        if cls is not None:
            return cls
        loader = self._loaders[name]   # KeyError for an unknown name, as from a dict
        with self._lock:
            for cls in loader():
                if self._loaders.get(cls.TYPE) is not loader:
                    raise RuntimeError(f"{self._kind} loader {loader.__name__} returns {cls.__name__} of type "
                                       f"{cls.TYPE!r}, which is not registered with it")
                self._loaded[cls.TYPE] = cls
        if name not in self._loaded:
            raise RuntimeError(f"{self._kind} type {name!r} is registered with {loader.__name__}, which has no "
                               f"class of that type")
        return self._loaded[name]

    def __contains__(self, name: object) -> bool:
        return name in self._loaders

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaders)

    def __len__(self) -> int:
        return len(self._loaders)

    def loaded(self) -> list[str]:
        """The names whose module has been imported (what this process pays for)."""
        return [name for name in self._loaders if name in self._loaded]
