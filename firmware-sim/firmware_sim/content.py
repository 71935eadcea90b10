"""Content cache and chunk reassembly, as the board does it: chunks arrive on
``loa/v1/content/{sha256}/{index}``; the object is complete when every index is present
and the sha256 of the concatenation matches the signed manifest."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from devices.messages import ContentManifest

__all__ = ["Assembly", "SharedStore"]


class SharedStore:
    """Bytes of verified content, shared by every simulated cluster in the process.

    Each cluster keeps its own set of sha256s it has verified (its "cache"); the bytes are
    stored once per process only to keep thousands of simulated clusters small in memory.
    """

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    def put(self, sha: str, data: bytes) -> None:
        self._blobs.setdefault(sha, data)

    def get(self, sha: str) -> bytes | None:
        return self._blobs.get(sha)


@dataclass(slots=True)
class Assembly:
    manifest: ContentManifest
    parts: dict[int, bytes] = field(default_factory=dict)
    requests: int = 0

    def add(self, index: int, data: bytes) -> None:
        if 0 <= index < self.manifest.chunks and len(data) <= self.manifest.chunk_size:
            self.parts[index] = data

    def missing(self) -> list[int]:
        return [i for i in range(self.manifest.chunks) if i not in self.parts]

    def complete(self) -> bool:
        return len(self.parts) == self.manifest.chunks

    def verified(self) -> bytes | None:
        """The whole object when complete and its sha256 matches, else None."""
        data = b"".join(self.parts[i] for i in range(self.manifest.chunks))
        if len(data) != self.manifest.size or hashlib.sha256(data).hexdigest() != self.manifest.sha256:
            return None
        return data
