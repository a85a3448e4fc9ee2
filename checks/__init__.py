"""Check types by their `type:` name. Adding a type: one module, a loader below if it is a new module,
one line in CHECK_TYPES.

A type's module is imported the first time a config uses it (`CHECK_TYPES["redis"]`), so the agent
pays in memory only for the types its host runs; iterating the registry's items imports them all
(the docs, `config schema`, the metric contract).
"""

from agent.plugin.registry import TypeRegistry
from checks.base import Check


def _system():
    from checks.system import (
        CpuCheck, DiskCheck, FileCheck, LoadCheck, MemoryCheck, NetworkLatencyCheck, ProcessCheck, SwapCheck,
    )
    return CpuCheck, MemoryCheck, SwapCheck, DiskCheck, LoadCheck, NetworkLatencyCheck, ProcessCheck, FileCheck


def _nagios():
    from checks.nagios import NagiosCheck
    return (NagiosCheck,)


def _http():
    from checks.http import HttpCheck, TcpCheck, TlsCertCheck
    return HttpCheck, TlsCertCheck, TcpCheck


def _redis():
    from checks.redis import RedisCheck, RedisReplicationCheck
    return RedisCheck, RedisReplicationCheck


def _systemd():
    from checks.systemd import SystemdUnitCheck
    return (SystemdUnitCheck,)


def _postgres():
    from checks.postgres import (
        PgActivityCheck, PgArchivingCheck, PgConnectionsCheck, PgReplicationCheck, PgStatementsCheck, PgTablesCheck,
        PostgresCheck,
    )
    return (PostgresCheck, PgConnectionsCheck, PgReplicationCheck, PgArchivingCheck, PgActivityCheck,
            PgStatementsCheck, PgTablesCheck)


def _backup():
    from checks.backup import BackupFilesCheck
    return (BackupFilesCheck,)


def _restore_test():
    from checks.restore_test import RestoreTestCheck
    return (RestoreTestCheck,)


def _s3():
    from checks.s3 import S3BackupCheck
    return (S3BackupCheck,)


def _updates():
    from checks.updates import OsUpdatesCheck
    return (OsUpdatesCheck,)


def _logscan():
    from checks.logscan import LogScanCheck
    return (LogScanCheck,)


def _drift():
    from checks.drift import ConfigDriftCheck
    return (ConfigDriftCheck,)


def _smart():
    from checks.smart import SmartCheck
    return (SmartCheck,)


def _backup_set():
    from checks.backup_set import BackupSetCheck
    return (BackupSetCheck,)


def _wal_archive():
    from checks.wal_archive import WalArchiveCheck
    return (WalArchiveCheck,)


def _restore_cluster():
    from checks.restore_cluster import RestoreClusterCheck
    return (RestoreClusterCheck,)


def _heartbeat():
    from checks.heartbeat import HeartbeatCheck
    return (HeartbeatCheck,)


CHECK_TYPES: TypeRegistry[Check] = TypeRegistry("check", {
    "cpu": _system,
    "memory": _system,
    "swap": _system,
    "disk": _system,
    "load": _system,
    "network_latency": _system,
    "process": _system,
    "file": _system,
    "nagios": _nagios,
    "http": _http,
    "tls_cert": _http,
    "tcp": _http,
    "redis": _redis,
    "redis_replication": _redis,
    "systemd_unit": _systemd,
    "postgres": _postgres,
    "pg_connections": _postgres,
    "pg_replication": _postgres,
    "pg_archiving": _postgres,
    "wal_archive": _wal_archive,
    "pg_activity": _postgres,
    "pg_statements": _postgres,
    "pg_tables": _postgres,
    "backup_files": _backup,
    "restore_test": _restore_test,
    "restore_cluster": _restore_cluster,
    "backup_set": _backup_set,
    "s3_backup": _s3,
    "os_updates": _updates,
    "log_scan": _logscan,
    "config_drift": _drift,
    "smart": _smart,
    "heartbeat": _heartbeat,
})
