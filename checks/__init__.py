"""Check types by their `type:` name. Adding a type: one module, one line here."""

from checks.base import Check
from checks.backup import BackupFilesCheck, RestoreTestCheck
from checks.backup_set import BackupSetCheck
from checks.drift import ConfigDriftCheck
from checks.heartbeat import HeartbeatCheck
from checks.http import HttpCheck, TcpCheck, TlsCertCheck
from checks.logscan import LogScanCheck
from checks.nagios import NagiosCheck
from checks.postgres import (
    PgActivityCheck, PgArchivingCheck, PgConnectionsCheck, PgReplicationCheck, PgStatementsCheck, PgTablesCheck,
    PostgresCheck,
)
from checks.redis import RedisCheck, RedisReplicationCheck
from checks.restore_cluster import RestoreClusterCheck
from checks.s3 import S3BackupCheck
from checks.smart import SmartCheck
from checks.systemd import SystemdUnitCheck
from checks.updates import OsUpdatesCheck
from checks.wal_archive import WalArchiveCheck
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
    "http": HttpCheck,
    "tls_cert": TlsCertCheck,
    "tcp": TcpCheck,
    "redis": RedisCheck,
    "redis_replication": RedisReplicationCheck,
    "systemd_unit": SystemdUnitCheck,
    "postgres": PostgresCheck,
    "pg_connections": PgConnectionsCheck,
    "pg_replication": PgReplicationCheck,
    "pg_archiving": PgArchivingCheck,
    "wal_archive": WalArchiveCheck,
    "pg_activity": PgActivityCheck,
    "pg_statements": PgStatementsCheck,
    "pg_tables": PgTablesCheck,
    "backup_files": BackupFilesCheck,
    "restore_test": RestoreTestCheck,
    "restore_cluster": RestoreClusterCheck,
    "backup_set": BackupSetCheck,
    "s3_backup": S3BackupCheck,
    "os_updates": OsUpdatesCheck,
    "log_scan": LogScanCheck,
    "config_drift": ConfigDriftCheck,
    "smart": SmartCheck,
    "heartbeat": HeartbeatCheck,
}

for _name, _cls in CHECK_TYPES.items():
    assert _cls.TYPE == _name, f"CHECK_TYPES[{_name!r}] registers {_cls.__name__} of type {_cls.TYPE!r}"
