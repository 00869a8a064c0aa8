"""``apihub config check [FILE]``: is an env file a working configuration for the gateway and the workers?

The file is read the way Docker Compose's ``env_file`` and pydantic-settings read one (``KEY=VALUE`` lines,
``#`` comments, optional ``export``, single or double quotes). Every problem is reported per variable with
its reason, in one of five kinds:

- ``syntax``: a line that is not ``KEY=VALUE`` (the line is named by number, never echoed);
- ``duplicate``: a variable set twice (the last one wins, which is rarely what was meant);
- ``unknown``: an ``APIHUB_*`` name that no API Hub process reads, with the nearest known name;
- ``missing``: a setting a deployment cannot do without (each provider's base URL and credentials);
- ``malformed``: a value the settings reject (pydantic's reason), or one that breaks a documented rule
  (KIS key lengths, a mock server named with ``environment=real``, a mock key paced above its broker's
  mock limit, an unknown log level, ...).

Secrets (``SecretStr`` settings) are never printed: the report says only "set" or "missing" for them. Other
values appear in a reason with any URL password masked; values of unknown names never appear.
Policy is pure (``parse_env``, ``check_env``); ``run`` does the I/O and returns the exit code:
0 no problem, 1 problems, 2 the file cannot be read. ``python -m services.config_check FILE`` hands the
file's variables to ``ops/stack.sh`` (``shell_pairs``), which then never lets bash parse ``.env``.
"""

from __future__ import annotations

import difflib
import functools
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, TextIO, cast, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings, SettingsError

from services.sandbox.settings import SandboxSettings
from services.settings import (
    NOT_JSON,
    ClientSettings,
    CredentialSettings,
    EnvMapping,
    GatewaySettings,
    KafkaSettings,
    KisSettings,
    KiwoomSettings,
    ProviderSettings,
    SettingsInvalid,
    WorkerSettings,
    http_url,
)
from services.status.targets import StatusSettings
from services.urls import masked

PROVIDERS = (KisSettings, KiwoomSettings)
ProblemKind = Literal["syntax", "duplicate", "unknown", "missing", "malformed"]
PREFIX = "APIHUB_"

#: What a deployment cannot leave to the defaults (which point at the local sandbox), and why.
REQUIRED: dict[str, str] = {
    "APIHUB_KIS__BASE_URL": "the KIS server to call; unset, the gateway calls the local sandbox",
    "APIHUB_KIS__APPKEY": "the gateway cannot obtain a KIS token without it",
    "APIHUB_KIS__APPSECRET": "the gateway cannot obtain a KIS token without it",
    "APIHUB_KIWOOM__BASE_URL": "the Kiwoom server to call; unset, the gateway calls the local sandbox",
    "APIHUB_KIWOOM__APPKEY": "the gateway cannot obtain a Kiwoom token without it",
    "APIHUB_KIWOOM__SECRETKEY": "the gateway cannot obtain a Kiwoom token without it",
}

#: The provider's own key and secret, which a credential pool may stand in for.
KEY_NAMES = ("__APPKEY", "__APPSECRET", "__SECRETKEY")

#: The brokers' own hosts and the environment each one is (reference/broker-apis.md).
BROKER_HOSTS: dict[str, dict[str, str]] = {
    "KIS": {"openapi.koreainvestment.com": "real", "openapivts.koreainvestment.com": "mock"},
    "KIWOOM": {"api.kiwoom.com": "real", "mockapi.kiwoom.com": "mock"},
}

#: Documented KIS credential lengths (KIS token page; PYKIS ``APPKEY_LENGTH``/``SECRETKEY_LENGTH``).
KIS_LENGTHS = {"APIHUB_KIS__APPKEY": 36, "APIHUB_KIS__APPSECRET": 180}

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_PLACEHOLDER = re.compile(r"^(<.*>|\$\{.*\}|changeme|change-me|change_me|todo|fixme|secret|password)$", re.I)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the file: the variable (or ``line N``), the kind and the reason."""

    name: str
    kind: ProblemKind
    reason: str


@dataclass(frozen=True)
class EnvFile:
    """The variables of an env file, the line each was (last) set on, and its syntax problems."""

    values: dict[str, str]
    lines: dict[str, int]
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class Setting:
    """A variable an API Hub process reads: which settings classes read it, whether it is a secret, and
    whether its value holds secrets (a JSON list of credentials) and so is never shown either."""

    name: str
    owners: tuple[type[BaseSettings], ...]
    secret: bool
    holds_secrets: bool = False


@dataclass(frozen=True)
class Report:
    """What ``check_env`` found: the problems, each secret's state (set or not), how many were read."""

    problems: list[Problem]
    secrets: dict[str, bool]
    checked: int
    ignored: int

    @property
    def ok(self) -> bool:
        """True when there is nothing to fix."""
        return not self.problems


# --- reading ---------------------------------------------------------------------------------------


def _unquote(raw: str) -> tuple[str, str | None]:
    """The value of the text after ``=``, or an error; quotes as Compose reads them, comments dropped."""
    text = raw.strip()
    if text[:1] in ("'", '"'):
        quote = text[0]
        end = text.find(quote, 1)
        while quote == '"' and end > 0 and text[end - 1] == "\\":
            end = text.find(quote, end + 1)
        if end < 0:
            return "", "the quote is not closed on this line (values spanning lines are not supported)"
        rest = text[end + 1 :].strip()
        if rest and not rest.startswith("#"):
            return "", "text follows the closing quote"
        value = text[1:end]
        if quote == '"':
            value = value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        return value, None
    comment = re.search(r"\s#", text)
    return (text[: comment.start()] if comment else text).rstrip(), None


def parse_env(text: str) -> EnvFile:
    """Parse env-file text; lines that are not ``KEY=VALUE`` and repeated names become problems."""
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped[len("export ") :].lstrip()
        key, sep, raw = stripped.partition("=")
        key = key.strip()
        # Never echo the line: a secret pasted on a line of its own must not reach a terminal or a CI log.
        if not sep:
            problems.append(Problem(f"line {number}", "syntax", "not KEY=VALUE (no '=')"))
            continue
        if not _NAME.fullmatch(key):
            problems.append(Problem(f"line {number}", "syntax", "the text before '=' is not a variable name"))
            continue
        value, error = _unquote(raw)
        if error:
            problems.append(Problem(key, "syntax", f"line {number}: {error}"))
            continue
        if key in lines:
            problems.append(
                Problem(key, "duplicate", f"set on lines {lines[key]} and {number}; the last one wins")
            )
        values[key] = value
        lines[key] = number
    return EnvFile(values, lines, problems)


# --- what the processes read ----------------------------------------------------------------------


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in get_args(annotation)


def _holds_secrets(annotation: Any) -> bool:
    """True when a value of this type has a secret somewhere inside (``list[CredentialSettings]``)."""
    if _is_secret(annotation):
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return any(_holds_secrets(info.annotation) for info in annotation.model_fields.values())
    return any(_holds_secrets(arg) for arg in get_args(annotation))


def _names(model: type[BaseModel], prefix: str) -> dict[str, Any]:
    """Every variable a settings model reads (nested groups joined by ``__``), with its type."""
    names: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _names(annotation, f"{prefix}{name.upper()}__")
        else:
            names[f"{prefix}{name.upper()}"] = annotation
    return names


def catalog() -> dict[str, Setting]:
    """Every ``APIHUB_*`` variable read by the gateway, the workers, the CLI clients (``apihub status``
    too) and the sandbox."""
    owners: dict[str, list[type[BaseSettings]]] = {}
    types: dict[str, Any] = {}
    for settings_cls in (GatewaySettings, WorkerSettings, ClientSettings, SandboxSettings, StatusSettings):
        prefix = str(settings_cls.model_config.get("env_prefix") or "")
        for name, annotation in _names(settings_cls, prefix).items():
            owners.setdefault(name, []).append(settings_cls)
            types[name] = annotation  # one name means one setting, of one type, wherever it is read
    return {
        name: Setting(name, tuple(owners[name]), _is_secret(types[name]), _holds_secrets(types[name]))
        for name in sorted(owners)
    }


@functools.cache
def _isolated(settings_cls: type[BaseSettings]) -> type[BaseSettings]:
    """``settings_cls`` built from its constructor's arguments only: no process environment, no .env file."""

    def sources(
        cls: type[BaseSettings], /, settings_cls: type[BaseSettings], init_settings: Any, **_: Any
    ) -> tuple[Any, ...]:
        return (init_settings,)

    namespace = {"settings_customise_sources": classmethod(sources), "__module__": __name__}
    return cast(type[BaseSettings], type(f"Isolated{settings_cls.__name__}", (settings_cls,), namespace))


def _validation_errors(settings_cls: type[BaseSettings], name: str, value: str) -> list[str]:
    """Why ``settings_cls`` rejects ``name=value`` (empty when it accepts it); never quotes the value."""
    try:
        data = EnvMapping(settings_cls, {name: value})()
        _isolated(settings_cls)(**data)
    except SettingsError:
        return [NOT_JSON]
    except SettingsInvalid as exc:
        return [reason for _, reason in exc.problems]
    return []


# --- the rules ------------------------------------------------------------------------------------


def _url_problem(value: str) -> str | None:
    try:
        http_url(value)
    except ValueError as exc:
        return str(exc)
    return None


_MOCK_LIMIT = "the broker's mock server allows about {:g} calls a second"


def _mock_rate_problems(
    provider: type[KisSettings | KiwoomSettings], env: Mapping[str, str]
) -> list[Problem]:
    """Mock keys paced above their broker's mock limit: the provider's own (a real key's rate kept after
    switching to mock) and the members of its ``CREDENTIALS`` list (one listed with a real key's rate)."""
    limit = provider.mock_rate_per_s
    if limit is None:
        return []
    group = provider.env_group
    environment = env.get(f"{group}__ENVIRONMENT") or "real"
    problems = []
    try:
        rate = float(env.get(f"{group}__RATE_PER_S", ""))
    except ValueError:
        rate = None  # unset (the mock default), or reported by the settings' own check
    if environment == "mock" and rate is not None and rate > limit:
        reason = f"is {rate:g} but {_MOCK_LIMIT.format(limit)}; set {limit:g} (a mock key's default)"
        problems.append(Problem(f"{group}__RATE_PER_S", "malformed", reason))
    listed = env.get(f"{group}__CREDENTIALS")
    if listed:
        try:
            members = TypeAdapter(list[CredentialSettings]).validate_json(listed)
            pool = provider(credentials=members, environment=environment).pool()
        except (ValidationError, SettingsInvalid):
            return problems  # reported by the settings' own check
        problems += _mock_member_problems(f"{group}__CREDENTIALS", pool, limit)
    return problems


def _mock_member_problems(where: str, pool: Mapping[str, ProviderSettings], limit: float) -> list[Problem]:
    """Pool members on the mock server paced above ``limit`` (only an explicit ``rate_per_s`` can be: a
    mock member that sets none is paced at the limit)."""
    return [
        Problem(
            where,
            "malformed",
            f"member {name!r} is a mock key with rate_per_s {member.rate_per_s:g}, but "
            f"{_MOCK_LIMIT.format(limit)}; set {limit:g}, or leave its rate_per_s out",
        )
        for name, member in pool.items()
        if member.mock and member.rate_per_s > limit
    ]


def _provider_problems(provider: str, env: Mapping[str, str]) -> list[Problem]:
    """Base URL against the broker's known hosts and the chosen environment (real or mock)."""
    group = f"{PREFIX}{provider}__"
    url = env.get(f"{group}BASE_URL", "")
    if not url or _url_problem(url):
        return []
    host = (urlsplit(url).hostname or "").lower()
    expected = BROKER_HOSTS[provider].get(host)
    if expected is None:
        return []
    problems = []
    environment = env.get(f"{group}ENVIRONMENT") or "real"
    if environment != expected:
        problems.append(
            Problem(
                f"{group}ENVIRONMENT",
                "malformed",
                f"is {environment!r} but {group}BASE_URL is {provider}'s {expected} server ({host}); "
                f"tr_ids and limits follow the environment, so set it to {expected!r}",
            )
        )
    if urlsplit(url).scheme != "https":
        problems.append(Problem(f"{group}BASE_URL", "malformed", f"{host} is served over https only"))
    return problems


def _secret_problem(name: str, value: str) -> str | None:
    if _PLACEHOLDER.match(value.strip()):
        return "looks like a placeholder, not a credential"
    if value != value.strip():
        return "has leading or trailing whitespace"
    if any(char.isspace() for char in value):
        return "contains whitespace"
    length = KIS_LENGTHS.get(name)
    if length is not None and len(value) != length:
        return f"is not {length} characters long, as KIS issues them"
    return None


def check_env(env: Mapping[str, str], known: Mapping[str, Setting] | None = None) -> Report:
    """Check the variables of an env file against what the gateway and the workers read (pure)."""
    known = catalog() if known is None else known
    ours = {key.upper(): value for key, value in env.items() if key.upper().startswith(PREFIX)}
    problems: list[Problem] = []
    for name, value in ours.items():
        setting = known.get(name)
        if setting is None:
            near = difflib.get_close_matches(name, list(known), n=1, cutoff=0.8)
            hint = f"; did you mean {near[0]}?" if near else ""
            problems.append(Problem(name, "unknown", f"no API Hub process reads it{hint}"))
            continue
        if value == "":
            continue
        shown = "" if setting.holds_secrets else f" (got {masked(value)!r})"
        reasons = dict.fromkeys(
            reason for owner in setting.owners for reason in _validation_errors(owner, name, value)
        )
        extra = _secret_problem(name, value) if setting.secret else None
        if extra:
            reasons[extra] = None
        problems.extend(Problem(name, "malformed", f"{reason}{shown}") for reason in reasons)
    for name, reason in REQUIRED.items():
        group = name.rpartition("__")[0]
        pooled = name.endswith(KEY_NAMES) and (
            ours.get(f"{group}__CREDENTIALS") or ours.get(f"{group}__CREDENTIALS_FILE")
        )
        if not ours.get(name) and not pooled:
            problems.append(Problem(name, "missing", reason))
    for provider in BROKER_HOSTS:
        problems.extend(_provider_problems(provider, ours))
    for settings in PROVIDERS:
        problems.extend(_mock_rate_problems(settings, ours))
    secrets = {
        name: bool(ours.get(name))
        for name, setting in known.items()
        if setting.secret and GatewaySettings in setting.owners
    }
    ignored = sum(1 for key in env if not key.upper().startswith(PREFIX))
    return Report(problems, secrets, len(ours), ignored)


# --- the command ----------------------------------------------------------------------------------


def format_report(path: str, report: Report, lines: Mapping[str, int] | None = None) -> str:
    """The report as printed: problems in file order, then the secrets' states; no secret value."""
    lines = lines or {}

    def order(problem: Problem) -> tuple[int, str]:
        if problem.name.startswith("line "):
            return int(problem.name.split()[1]), problem.name
        return lines.get(problem.name, 1 << 30), problem.name

    count = len(report.problems)
    head = "ok" if report.ok else f"{count} problem{'s' if count != 1 else ''}"
    out = [f"{path}: {head} ({report.checked} APIHUB_* settings read, {report.ignored} other names ignored)"]
    width = max((len(p.name) for p in report.problems), default=0)
    out += [f"  {p.kind:<9}  {p.name:<{width}}  {p.reason}" for p in sorted(report.problems, key=order)]
    states = ", ".join(f"{name} {'set' if ok else 'missing'}" for name, ok in report.secrets.items())
    out.append(f"secrets: {states}")
    return "\n".join(out)


def _read(path: str, err: TextIO, who: str) -> str | None:
    """The file's text, or None after saying on ``err`` why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        if isinstance(exc, UnicodeDecodeError):
            reason = "not UTF-8 text"
        print(f"{who}: cannot read {path}: {reason}", file=err)
        return None


def credentials_file_problems(env: Mapping[str, str]) -> list[Problem]:
    """What is wrong with the credentials files ``env`` names, each read as the gateway reads it, where
    the file is on this host; a path that is not (often a container's) is left to the gateway's start."""
    problems: list[Problem] = []
    for provider in PROVIDERS:
        where = f"{provider.env_group}__CREDENTIALS_FILE"
        path = env.get(where, "")
        if not path or not Path(path).exists():
            continue
        environment = env.get(f"{provider.env_group}__ENVIRONMENT") or "real"
        try:
            pool = provider(credentials_file=path, environment=environment).pool()
        except SettingsInvalid as exc:
            problems += [Problem(name, "malformed", reason) for name, reason in exc.problems]
            continue
        except ValidationError:
            continue  # the environment is reported by the settings' own check
        if provider.mock_rate_per_s is not None:
            problems += _mock_member_problems(where, pool, provider.mock_rate_per_s)
    return problems


def named_file_problems(env: Mapping[str, str]) -> list[Problem]:
    """What is wrong with the permissions file, the providers' CA bundles and Kafka's TLS files ``env``
    names, each read as the processes read it, where it is on this host (as credentials files)."""
    from services.gateway.dispatcher import ca_bundle_context
    from services.gateway.permissions import PERMISSIONS_FILE, load_permissions
    from services.kafka_client import ssl_context

    permissions = env.get(PERMISSIONS_FILE, "")
    checks: list[tuple[list[str], Callable[[], object]]] = [
        ([permissions], lambda: load_permissions(Path(permissions)))
    ]
    for provider in PROVIDERS:
        variable = f"{provider.env_group}__CA_BUNDLE"
        bundle = env.get(variable, "")
        checks.append(([bundle], functools.partial(ca_bundle_context, variable, bundle)))
    cafile, certfile, keyfile = (
        env.get(f"APIHUB_KAFKA__SSL_{name}") for name in ("CAFILE", "CERTFILE", "KEYFILE")
    )
    if env.get("APIHUB_KAFKA__SECURITY_PROTOCOL", "").endswith("SSL"):
        kafka = KafkaSettings.model_construct(ssl_cafile=cafile, ssl_certfile=certfile, ssl_keyfile=keyfile)
        checks.append(([path for path in (cafile, certfile, keyfile) if path], lambda: ssl_context(kafka)))
    problems: list[Problem] = []
    for paths, load in checks:
        if not paths or not all(path and Path(path).exists() for path in paths):
            continue  # unset, or not on this host (often a container's path): left to the process's start
        try:
            load()
        except SettingsInvalid as exc:
            problems += [Problem(name, "malformed", reason) for name, reason in exc.problems]
    return problems


def run(path: str, out: TextIO, err: TextIO) -> int:
    """Check the env file at ``path`` (and the files it names that are on this host) and print the report:
    0 ok, 1 problems, 2 unreadable."""
    text = _read(path, err, "apihub config check")
    if text is None:
        return 2
    parsed = parse_env(text)
    report = check_env(parsed.values)
    problems = [
        *parsed.problems,
        *report.problems,
        *credentials_file_problems(parsed.values),
        *named_file_problems(parsed.values),
    ]
    report = Report(problems, report.secrets, report.checked, report.ignored)
    print(format_report(path, report, parsed.lines), file=out)
    return 0 if report.ok else 1


# --- the env file for a shell ---------------------------------------------------------------------

_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def shell_pairs(env: EnvFile) -> bytes:
    """The variables as NUL-separated ``KEY=VALUE`` items, for a shell to ``export`` one by one (pure).

    No shell parses a value, so a JSON credential pool keeps its quotes and a secret holding ``$``, a
    backtick or a space stays as written. An empty value (a line copied from ``.env.example``) is left out:
    the settings ignore empty variables, so exporting one would only hide a value set before it."""
    return b"".join(
        f"{key}={value}".encode() + b"\0"
        for key, value in env.values.items()
        if value and _SHELL_NAME.fullmatch(key) and "\0" not in value
    )


def export(path: str, out: BinaryIO, err: TextIO) -> int:
    """Write the env file's variables to ``out`` as ``shell_pairs`` does: 0, or 2 with each syntax problem
    (by line, never echoing it) when the file cannot be read as a whole."""
    text = _read(path, err, "env file")
    if text is None:
        return 2
    parsed = parse_env(text)
    syntax = [p for p in parsed.problems if p.kind == "syntax"]
    for problem in syntax:
        print(f"error: {path}: {problem.name}: {problem.reason}", file=err)
    if syntax:
        return 2
    out.write(shell_pairs(parsed))
    return 0


if __name__ == "__main__":  # ops/stack.sh: python -m services.config_check FILE
    sys.exit(export(sys.argv[1], sys.stdout.buffer, sys.stderr))
