"""What names a running service instance: the part every service helper reads.

The helpers of :class:`shared.service.Service` (beacons, health, control, the log
stream) take Protocols built on this one instead of the Service itself, so none of
them imports ``shared.service`` and none reaches into its private parts.
"""

from __future__ import annotations

from typing import Protocol

from shared.config import BaseConfig
from shared.subjects import Subjects


class Instance(Protocol):
    """A service instance: its service name, instance id, host, process and settings."""

    @property
    def name(self) -> str: ...
    @property
    def instance(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def config(self) -> BaseConfig: ...
    @property
    def subjects(self) -> Subjects: ...
