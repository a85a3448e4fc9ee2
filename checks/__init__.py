"""Check types by their `type:` name. Adding a type: one module, one line here."""

from checks.base import Check
from checks.nagios import NagiosCheck
from checks.system import (
    CpuCheck, DiskCheck, FileCheck, LoadCheck, MemoryCheck, NetworkLatencyCheck, ProcessCheck, SwapCheck,
)

CHECK_TYPES: dict[str, type[Check]] = {
    "cpu": CpuCheck,
    "memory": MemoryCheck,
    "swap": SwapCheck,
    "disk": DiskCheck,
    "load": LoadCheck,
    "network_latency": NetworkLatencyCheck,
    "process": ProcessCheck,
    "file": FileCheck,
    "nagios": NagiosCheck,
}

for _name, _cls in CHECK_TYPES.items():
    assert _cls.TYPE == _name, f"CHECK_TYPES[{_name!r}] registers {_cls.__name__} of type {_cls.TYPE!r}"
