"""Which config and secret files others could read or change: the file-safety audit `config check` and the
daemon's start run over a loaded config (warnings, or errors with `config check --strict`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config.yamlsrc import ConfigError
from agent.plugin.fields import is_reference

if TYPE_CHECKING:
    from agent.config.load import LoadedConfig

AGENT_USER = "maint-agent"


@dataclass(frozen=True)
class FileExposure:
    """A config or secret file that someone besides root and the agent may read, change or owns."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def exposed_files(loaded: LoadedConfig, strict: bool = False) -> list[FileExposure]:
    """Given a loaded config, return the files that others can read or write: secret files (`${file:…}`,
    the web config's TLS key, a web config with password hashes) and the config itself when it holds a
    literal secret — or always with `strict`. Writable by others or owned by another user always counts.

    "Others" are the users besides root, the one running this and the `maint-agent` user; a group counts
    only when it has such members, so the installed 0640 root:maint-agent files pass.
    """
    from agent.plugin.redact import secrets_in
    secrets = list(secrets_in(loaded.config))
    literal = strict or any(not is_reference(s) for s in secrets)
    # an included file counts as the config itself: whoever may write it may add a check that runs commands
    private = {path: literal for path in (loaded.path, *loaded.included)}
    for secret in secrets:
        if secret.startswith("${file:"):
            private[Path(secret[len("${file:"):-1])] = True
    web_config = loaded.config.http.web_config
    if web_config:
        from agent.config.web import load_web_config
        try:
            web = load_web_config(web_config)
        except ConfigError:
            web = None
        if web is not None:
            tls = web.tls_server_config
            private[Path(web_config)] = strict or bool(web.basic_auth_users) or bool(tls and tls.key)
            private.update({path: True for path in web.secret_files()})
    return [FileExposure(path, reason) for path, secret in private.items() for reason in _exposure(path, secret)]


def _exposure(path: Path, secret: bool) -> list[str]:
    import grp
    import pwd
    import stat
    try:
        st = path.stat()
    except OSError:
        return []   # unreadable secrets are load errors already
    trusted = _trusted_users()
    mode, reasons = stat.S_IMODE(st.st_mode), []
    owner = _user_name(st.st_uid)
    if owner not in trusted:
        reasons.append(f"owned by {owner}, who can change its mode and contents (chown root)")
    if mode & stat.S_IWOTH:
        reasons.append(f"writable by every user (mode {mode:04o})")
    if secret and mode & stat.S_IROTH:
        reasons.append(f"readable by every user (mode {mode:04o}; chmod 0640 or 0600)")
    if mode & (stat.S_IRGRP | stat.S_IWGRP):
        try:
            group = grp.getgrgid(st.st_gid)
            members = set(group.gr_mem) | {u.pw_name for u in pwd.getpwall() if u.pw_gid == st.st_gid}
            name = group.gr_name
        except KeyError:
            members, name = {str(st.st_gid)}, str(st.st_gid)
        others = sorted(members - trusted)
        can = [what for bit, what in ((stat.S_IRGRP, "read"), (stat.S_IWGRP, "write")) if mode & bit
               and (what == "write" or secret)]
        if others and can:
            reasons.append(f"group {name} may {' and '.join(can)} it (mode {mode:04o}) and has other members: "
                           f"{', '.join(others)}")
    return reasons


def _trusted_users() -> set[str]:
    import os
    return {"root", AGENT_USER, _user_name(os.geteuid())}


def _user_name(uid: int) -> str:
    import pwd
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
