"""registries.yaml (k3s's format) → what each containerd line reads.

    mirrors:
      docker.io:
        endpoint: ["https://mirror.local:5000"]
        rewrite: {"^library/(.*)": "mirrored/$1"}
    configs:
      "mirror.local:5000":
        auth: {username: bob, password: secret}     # or auth: <base64 user:pass>, identity_token
        tls: {ca_file: /etc/ssl/site-ca.pem, cert_file: …, key_file: …, insecure_skip_verify: false}

Read from `<config-dir>/registries.yaml` or `--registries FILE`. What it becomes:
- one hosts.toml per registry under `<config-dir>/certs.d/<registry>/` (containerd's
  `config_path`, read by CRI on 1.6/1.7/2.x, by 2.x's transfer service, and by `ctr --hosts-dir`),
  with `ca`, `client`, `skip_verify`, `override_path` per endpoint; an endpoint with basic
  credentials also gets an `Authorization` header there, so every client that reads hosts.toml
  authenticates without a credential on its command line (ctr's `--user` has no environment
  variable and prompts only on a terminal);
- the CRI plugin's `registry.configs."<host>".auth` in config.toml, for token (bearer) registries
  and identity tokens.
This module reads and checks the file; registry_hosts.py makes the tables containerd reads.
Files that hold a credential are 0600 in 0700 directories. Nothing here formats a credential into
a message: `Auth.__repr__` hides them, and `redact()` blanks them in any config that is shown.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from warren_bundle.errors import RegistriesError

FILE_NAME = "registries.yaml"
REDACTED = "<redacted>"
SECRET_KEYS = frozenset({"password", "auth", "identitytoken", "identity_token", "Authorization"})
# A registry as containerd names its hosts.toml directory: a DNS name or IP, an optional port.
_REGISTRY = re.compile(
    r"^(?!-)[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$"
)
_URL_FORBIDDEN = re.compile(r"[\s\"'\\<>{}|^`]|[\x00-\x1f\x7f]")
_TOP_KEYS = {"mirrors", "configs"}
_MIRROR_KEYS = {"endpoint", "rewrite"}
_CONFIG_KEYS = {"auth", "tls"}
_AUTH_KEYS = {"username", "password", "auth", "identity_token", "identitytoken"}
_TLS_KEYS = {"ca_file", "cert_file", "key_file", "insecure_skip_verify"}


@dataclass(frozen=True)
class Auth:
    username: str = ""
    password: str = field(default="", repr=False)
    auth: str = field(default="", repr=False)  # base64 of "user:password"
    identity_token: str = field(default="", repr=False)

    def basic(self) -> tuple[str, str] | None:
        """(user, password) for HTTP basic auth, from username/password or `auth`."""
        if self.username and self.password:
            return self.username, self.password
        if self.auth:
            user, _, password = base64.b64decode(self.auth).decode().partition(":")
            return user, password
        return None

    def header(self) -> str | None:
        """`Authorization` value for hosts.toml's header table (basic credentials only)."""
        pair = self.basic()
        if pair is None:
            return None
        return "Basic " + base64.b64encode(f"{pair[0]}:{pair[1]}".encode()).decode()

    def cri(self) -> dict[str, str]:
        """The CRI plugin's `registry.configs."<host>".auth` table."""
        table = {"username": self.username, "password": self.password, "auth": self.auth}
        table["identitytoken"] = self.identity_token
        return {k: v for k, v in table.items() if v}


@dataclass(frozen=True)
class TLS:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class HostConfig:
    auth: Auth | None = None
    tls: TLS | None = None


@dataclass(frozen=True)
class Mirror:
    endpoints: tuple[str, ...] = ()
    rewrites: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Registries:
    mirrors: dict[str, Mirror] = field(default_factory=dict)
    configs: dict[str, HostConfig] = field(default_factory=dict)
    source: Path | None = None

    def config_for(self, host: str) -> HostConfig | None:
        return self.configs.get(host)

    def with_mirrors(self, extra: dict[str, list[str]]) -> Registries:
        """--registry-mirror entries added as mirror endpoints (after the file's own)."""
        mirrors = dict(self.mirrors)
        for registry, endpoints in extra.items():
            old = mirrors.get(registry, Mirror())
            merged = old.endpoints + tuple(e for e in endpoints if e not in old.endpoints)
            mirrors[registry] = Mirror(merged, old.rewrites)
        return Registries(mirrors, dict(self.configs), self.source)

    def rewrites(self) -> list[str]:
        return [registry for registry, mirror in self.mirrors.items() if mirror.rewrites]


# --- reading the file ---------------------------------------------------------------------------


def default_path(config_dir: Path) -> Path:
    return config_dir / FILE_NAME


def resolve(config_dir: Path, explicit: str | Path | None) -> Path | None:
    """The file to read: the one given, else <config-dir>/registries.yaml when it exists."""
    if explicit:
        return Path(explicit)
    path = default_path(config_dir)
    return path if path.exists() else None


def load(path: Path | None) -> Registries:
    """Parse and check `path` (None: no registries file). RegistriesError (exit 2) when it cannot
    be read or parsed, has a key k3s does not know, or names a CA/cert/key file that is missing."""
    if path is None:
        return Registries()
    import yaml

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RegistriesError(
            f"cannot read registries file {path}: {exc.strerror or exc}",
            "fix the path given to --registries (WARREN_REGISTRIES)",
        ) from None
    if len(raw) > 1 << 20:
        raise RegistriesError(f"registries file {path} is over 1 MiB", "is it the right file?")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise RegistriesError(
            f"registries file {path} is not valid YAML{line}", f"fix {path}"
        ) from None
    return parse(data, path)


def _fail(path: Path | None, what: str) -> RegistriesError:
    where = str(path) if path else "registries file"
    return RegistriesError(f"{where}: {what}", "see k3s's registries.yaml format")


def _table(value: Any, where: str, allowed: set[str] | None, path: Path | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, f"{where} must be a mapping")
    if allowed is not None:
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            raise _fail(
                path, f"unknown key {unknown[0]!r} in {where} (known: {', '.join(sorted(allowed))})"
            )
    return value


def _string(value: Any, where: str, path: Path | None) -> str:
    if value is None:
        return ""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise _fail(path, f"{where} must be a string")
    return str(value)


def parse(data: Any, path: Path | None = None) -> Registries:
    top = _table(data, "the file", _TOP_KEYS, path)
    mirrors: dict[str, Mirror] = {}
    for name, entry in _table(top.get("mirrors"), "mirrors", None, path).items():
        registry = _registry_name(str(name), "mirrors", path)
        table = _table(entry, f"mirrors.{name}", _MIRROR_KEYS, path)
        endpoints = table.get("endpoint") or []
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if not isinstance(endpoints, list):
            raise _fail(path, f"mirrors.{name}.endpoint must be a list of URLs")
        urls = tuple(
            endpoint_url(_string(e, f"mirrors.{name}.endpoint", path), path) for e in endpoints
        )
        rewrites = []
        for pattern, repl in _table(
            table.get("rewrite"), f"mirrors.{name}.rewrite", None, path
        ).items():
            try:
                re.compile(str(pattern))
            except re.error as exc:
                bad = f"mirrors.{name}.rewrite {pattern!r} is not a regex ({exc})"
                raise _fail(path, bad) from None
            rewrites.append((str(pattern), _string(repl, f"mirrors.{name}.rewrite", path)))
        mirrors[registry] = Mirror(urls, tuple(rewrites))
    configs: dict[str, HostConfig] = {}
    for name, entry in _table(top.get("configs"), "configs", None, path).items():
        host = _config_host(str(name), path)
        table = _table(entry, f"configs.{host}", _CONFIG_KEYS, path)
        configs[host] = HostConfig(
            _auth(table.get("auth"), host, path), _tls(table.get("tls"), host, path)
        )
    return Registries(mirrors, configs, path)


def _registry_name(name: str, section: str, path: Path | None) -> str:
    if "@" in name:
        raise _fail(path, f"a {section} key carries a user or password; keep those under auth")
    if name == "*":
        return "_default"  # containerd's fallback hosts dir for every registry
    if not _REGISTRY.match(name):
        raise _fail(path, f"{section}: {name!r} is not a registry host name")
    return name


def _config_host(name: str, path: Path | None) -> str:
    """configs are keyed by registry or endpoint host; a URL form is taken for its host."""
    if "@" in name:
        raise _fail(path, "a configs key carries a user or password; keep those under auth")
    if "://" in name:
        name = urlsplit(name).netloc
    return _registry_name(name, "configs", path)


def endpoint_url(text: str, path: Path | None = None) -> str:
    """An http(s) URL without credentials in it; trailing "/" dropped."""
    try:
        url = urlsplit(text)
        url.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        url = None
    if "@" in text.split("://", 1)[-1].split("/", 1)[0]:
        # The URL itself is never repeated: it holds a credential.
        raise _fail(
            path,
            "an endpoint URL carries a user or password (user:password@); "
            "put credentials under configs.<host>.auth",
        )
    if url is None or url.scheme not in ("http", "https") or not url.hostname:
        raise _fail(path, f"{text!r} is not an http(s) URL")
    if _URL_FORBIDDEN.search(text):
        raise _fail(path, f"{text!r} is not an http(s) URL")
    return text.rstrip("/")


def _auth(value: Any, host: str, path: Path | None) -> Auth | None:
    if value is None:
        return None
    table = _table(value, f"configs.{host}.auth", _AUTH_KEYS, path)
    auth = Auth(
        username=_string(table.get("username"), f"configs.{host}.auth.username", path),
        password=_string(table.get("password"), f"configs.{host}.auth.password", path),
        auth=_string(table.get("auth"), f"configs.{host}.auth.auth", path),
        identity_token=_string(
            table.get("identity_token", table.get("identitytoken")),
            f"configs.{host}.auth.identity_token",
            path,
        ),
    )
    if auth.auth:
        try:
            decoded = base64.b64decode(auth.auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        if ":" not in decoded:
            raise _fail(path, f"configs.{host}.auth.auth is not base64 of user:password")
    if bool(auth.username) != bool(auth.password) and not auth.identity_token:
        raise _fail(path, f"configs.{host}.auth needs both username and password")
    return auth


def _tls(value: Any, host: str, path: Path | None) -> TLS | None:
    if value is None:
        return None
    table = _table(value, f"configs.{host}.tls", _TLS_KEYS, path)
    files: dict[str, Path | None] = {}
    for key in ("ca_file", "cert_file", "key_file"):
        text = _string(table.get(key), f"configs.{host}.tls.{key}", path)
        if not text:
            files[key] = None
            continue
        file = Path(text)
        if not file.is_absolute() and path is not None:
            file = path.parent / file
        if not file.is_file():
            raise _fail(path, f"configs.{host}.tls.{key} {file} does not exist")
        files[key] = file
    if bool(files["cert_file"]) != bool(files["key_file"]):
        raise _fail(path, f"configs.{host}.tls needs cert_file and key_file together")
    skip = table.get("insecure_skip_verify", False)
    if not isinstance(skip, bool):
        raise _fail(path, f"configs.{host}.tls.insecure_skip_verify must be true or false")
    return TLS(files["ca_file"], files["cert_file"], files["key_file"], skip)


def warnings(registries: Registries) -> list[str]:
    """What the file asks that warren does not do, or does at a risk: one line each."""
    out = []
    for registry in registries.rewrites():
        out.append(
            f"{registries.source}: mirrors.{registry}.rewrite is not applied: upstream "
            "containerd's hosts.toml has no rewrite (k3s's patched containerd does); mirror the "
            "images under their upstream names"
        )
    source = registries.source
    if source is not None and any(c.auth for c in registries.configs.values()):
        import os

        try:
            mode = os.stat(source).st_mode & 0o777
        except OSError:
            mode = 0
        if mode & 0o077:
            out.append(
                f"{source} holds credentials and is readable by others (mode {mode:o}); "
                f"chmod 600 {source}"
            )
    return out
