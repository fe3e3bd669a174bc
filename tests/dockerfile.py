"""The Dockerfile's own build steps, rehearsed without a container engine.

`parse` reads the Dockerfile into its instructions; `rehearse` carries them out into a
fresh directory that stands for the image's root: each stage's COPY from the build context
(honouring .dockerignore), ENV, WORKDIR and RUN (through `sh -c`, as the image build would,
with cache mounts on this machine's cache), then the final stage's COPY --from=<stage>.
What is left in the directory is only what the final stage copies, so a file the services
need and the image lacks is missing here too.

Paths: the image's own absolute paths (everything but the base image's /usr, /etc, …) are
put under the rehearsal's root, in ENV values, WORKDIR, COPY and cache mounts; RUN
commands must therefore reach them through ENV, never by a literal path (refused here).
The base image's Python is this machine's Python 3.11 (the image pins the same version).

Instructions the rehearsal does not know fail it: a new one needs its meaning here.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# The base image's own directories: left where they are on this machine.
BASE_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc", "/tmp", "/var", "/proc", "/dev")
# What the base image's environment holds (python:3.11-slim) before the Dockerfile's ENV.
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


class RehearsalError(Exception):
    """The Dockerfile asks for something the rehearsal cannot do faithfully."""


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    image: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Image:
    """The final stage, as the rehearsal left it."""

    root: Path
    env: dict[str, str]
    workdir: Path
    user: tuple[int, int]
    cmd: list[str]
    healthcheck: list[str]
    exposed: list[int]

    def command(self, argv: list[str]) -> list[str]:
        """`argv` as the image would run it: its first word looked up on the image's PATH."""
        for directory in self.env["PATH"].split(":"):
            candidate = Path(directory) / argv[0]
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return [str(candidate), *argv[1:]]
        raise RehearsalError(f"{argv[0]} is not on the image's PATH {self.env['PATH']}")


def parse(dockerfile: Path) -> list[Stage]:
    """The stages and their instructions (continuations joined, comments dropped)."""
    stages: list[Stage] = []
    pending, start = "", 0
    for number, raw in enumerate(dockerfile.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        start = start or number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        pending, at = "", start
        start = 0
        instruction = Instruction(keyword.upper(), args.strip(), at)
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(words[0], name))
        elif not stages:
            raise RehearsalError(f"line {at}: {instruction.keyword} before FROM")
        else:
            stages[-1].instructions.append(instruction)
    return stages


def rehearse(dockerfile: Path, root: Path) -> Image:
    """Build the image's final stage into `root` (which must not exist yet).

    Every stage is built at `root` itself, so what RUN writes there (script paths, venv
    links) holds in the final stage too; a finished stage moves aside for COPY --from."""
    context = dockerfile.parent
    stages = _needed(parse(dockerfile))
    built: dict[str, Path] = {}
    final: Image | None = None
    for before, stage in zip([None, *stages], stages, strict=False):
        if before is not None:
            built[before.name] = root.with_name(f"{root.name}.{before.name}")
            os.rename(root, built[before.name])
        final = _StageBuild(stage, context, root, built).run()
    assert final is not None, "no stage"
    for path in built.values():
        shutil.rmtree(path)
    return final


def _needed(stages: list[Stage]) -> list[Stage]:
    """The last stage (the default target, the image) and the stages it copies from."""
    names = {stage.name for stage in stages}
    wanted = {stages[-1].name}
    for stage in reversed(stages):
        if stage.name not in wanted:
            continue
        if stage.image in names:
            raise RehearsalError(f"stage {stage.name}: FROM another stage is not rehearsed")
        for ins in stage.instructions:
            if ins.keyword == "COPY" and ins.args.startswith("--from="):
                wanted.add(ins.args.split()[0].removeprefix("--from="))
    return [stage for stage in stages if stage.name in wanted]


class _StageBuild:
    """One stage, built into `root`; `built` holds the earlier stages' trees by name."""

    def __init__(self, stage: Stage, context: Path, root: Path, built: dict[str, Path]) -> None:
        self.stage, self.context, self.root, self.built = stage, context, root, built
        self.env: dict[str, str] = dict(BASE_ENV)
        self.workdir = "/"
        self.user = (0, 0)
        self.cmd: list[str] = []
        self.healthcheck: list[str] = []
        self.exposed: list[int] = []

    def run(self) -> Image:
        self.root.mkdir(parents=True)
        for ins in self.stage.instructions:
            handler = getattr(self, f"_{ins.keyword.lower()}", None)
            if handler is None:
                raise RehearsalError(f"line {ins.line}: the rehearsal does not know {ins.keyword}")
            handler(ins)
        return Image(
            root=self.root,
            env={k: self._rerooted(v, self.root) for k, v in self.env.items()},
            workdir=self._rerooted_path(self.workdir, self.root),
            user=self.user,
            cmd=self.cmd,
            healthcheck=self.healthcheck,
            exposed=self.exposed,
        )

    # ---- paths ----

    def _ours(self, path: str) -> bool:
        return path.startswith("/") and not any(
            path == p or path.startswith(p + "/") for p in BASE_PATHS
        )

    def _rerooted_path(self, path: str, base: Path) -> Path:
        return base / path.lstrip("/") if self._ours(path) else Path(path)

    def _rerooted(self, value: str, base: Path) -> str:
        parts = value.split(":")
        return ":".join(str(self._rerooted_path(p, base)) if self._ours(p) else p for p in parts)

    def _inside(self, path: str) -> Path:
        """Where `path` (absolute, or relative to WORKDIR) is written during this stage."""
        full = path if path.startswith("/") else f"{self.workdir.rstrip('/')}/{path}"
        if not self._ours(full):
            raise RehearsalError(f"{path}: the rehearsal writes only the image's own paths")
        return self.root / full.lstrip("/")

    def _build_env(self) -> dict[str, str]:
        """RUN's environment: this machine's (its Python, its proxies) under the stage's
        ENV, whose paths point at where the stage is being built."""
        env = {**os.environ, **{k: self._rerooted(v, self.root) for k, v in self.env.items()}}
        env["PATH"] = f"{env['PATH']}:{os.environ['PATH']}"  # this machine's python3.11
        return env

    # ---- instructions ----

    def _env(self, ins: Instruction) -> None:
        for word in shlex.split(ins.args):
            key, sep, value = word.partition("=")
            if not sep:
                raise RehearsalError(f"line {ins.line}: ENV {word}: use ENV KEY=VALUE")
            self.env[key] = re.sub(r"\$\{?(\w+)\}?", lambda m: self.env.get(m.group(1), ""), value)

    def _workdir(self, ins: Instruction) -> None:
        self.workdir = ins.args
        self._inside(ins.args).mkdir(parents=True, exist_ok=True)

    def _copy(self, ins: Instruction) -> None:
        words = shlex.split(ins.args)
        source_stage = None
        while words and words[0].startswith("--"):
            flag = words.pop(0)
            if not flag.startswith("--from="):
                raise RehearsalError(f"line {ins.line}: COPY {flag} is not rehearsed")
            source_stage = flag.removeprefix("--from=")
        *sources, dest = words
        target = self._inside(dest)
        for source in sources:
            if source_stage is None:
                _copy_context(self.context, source, target, dest.endswith("/"))
            else:
                if source_stage not in self.built:
                    raise RehearsalError(f"line {ins.line}: no stage {source_stage} built")
                origin = self.built[source_stage] / source.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(origin, target, symlinks=True)

    def _run(self, ins: Instruction) -> None:
        command = ins.args
        env = self._build_env()
        while command.startswith("--mount="):
            mount, _, command = command.partition(" ")
            options = dict(o.split("=", 1) for o in mount.removeprefix("--mount=").split(","))
            if options.get("type") != "cache" or "target" not in options:
                raise RehearsalError(f"line {ins.line}: only cache mounts are rehearsed")
            # a cache mount is the build machine's cache: this machine's own
            target = options["target"]
            if not target.startswith("/root/"):
                raise RehearsalError(f"line {ins.line}: cache mount {target} outside /root")
            command = command.strip()
        literal = [w for w in re.findall(r"(?<![\w$}])/\w[\w./-]*", command) if self._ours(w)]
        if literal:
            raise RehearsalError(f"line {ins.line}: RUN names {literal}: reach them via ENV")
        subprocess.run(["sh", "-c", command], cwd=self._inside(self.workdir), env=env, check=True)

    def _user(self, ins: Instruction) -> None:
        uid, _, gid = ins.args.partition(":")
        if not uid.isdigit() or not (gid or uid).isdigit():
            raise RehearsalError(f"line {ins.line}: USER must be numeric (uid:gid)")
        self.user = (int(uid), int(gid or uid))

    def _cmd(self, ins: Instruction) -> None:
        self.cmd = _exec_form(ins)

    def _healthcheck(self, ins: Instruction) -> None:
        _, sep, rest = ins.args.partition("CMD ")
        if not sep:
            raise RehearsalError(f"line {ins.line}: HEALTHCHECK without CMD")
        self.healthcheck = _exec_form(Instruction("CMD", rest, ins.line))

    def _expose(self, ins: Instruction) -> None:
        self.exposed = [int(p.split("/")[0]) for p in ins.args.split()]

    def _label(self, ins: Instruction) -> None:
        pass  # metadata only


def _exec_form(ins: Instruction) -> list[str]:
    try:
        argv = json.loads(ins.args)
    except json.JSONDecodeError:
        argv = None
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise RehearsalError(f"line {ins.line}: {ins.keyword} must be in exec form")
    return argv


def ignored_patterns(context: Path) -> list[str]:
    ignore = context / ".dockerignore"
    if not ignore.exists():
        return []
    lines = ignore.read_text(encoding="utf-8").splitlines()
    return [p.strip().rstrip("/") for p in lines if p.strip() and not p.startswith("#")]


def _ignored(relative: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        if fnmatch.fnmatch(relative, pattern):
            return True
        if pattern.startswith("**/") and any(
            fnmatch.fnmatch(part, pattern[3:]) for part in relative.split("/")
        ):
            return True
        if "*" not in pattern and relative.startswith(pattern + "/"):
            return True
    return False


def _copy_context(context: Path, source: str, target: Path, into: bool) -> None:
    patterns = ignored_patterns(context)
    origin = context / source
    if not origin.exists():
        raise RehearsalError(f"COPY {source}: not in the build context")
    if origin.is_file():
        destination = target / origin.name if into else target
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, destination)
        return
    for path in sorted(origin.rglob("*")):
        relative = path.relative_to(context).as_posix()
        if path.is_dir() or _ignored(relative, patterns):
            continue
        destination = target / path.relative_to(origin)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
