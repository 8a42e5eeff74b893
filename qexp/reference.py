"""The manual's reference pages, generated from the code: every config key (from the schema and conf/),
every name of the store's contract (from `qexp.contract`), every command's flags (from its parser).

The manual's build calls these (mkdocs_hooks.py); `python -m qexp.reference config|contract|cli` prints one.
Nobody types a key, a tag or a flag into the manual, so none of them can drift from the code.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import io
import os
import sys
import tokenize
from pathlib import Path
from typing import Any, Callable

from . import contract, schema
from .files import CONF_DIR

__all__ = ["config_reference", "contract_reference", "cli_reference", "config_keys", "PAGES"]


def _comments(path: Path) -> dict[int, str]:
    """Line number -> the comment that ends that line (what the code's authors wrote beside a field)."""
    out = {}
    with path.open() as source:
        for token in tokenize.generate_tokens(source.readline):
            if token.type == tokenize.COMMENT:
                out[token.start[0]] = token.string.lstrip("#").strip()
    return out


def _class_fields(path: Path) -> dict[str, list[tuple[str, str, str]]]:
    """Class name -> its own annotated or assigned names: (name, annotation or value, comment)."""
    comments, tree = _comments(path), ast.parse(path.read_text())
    out: dict[str, list[tuple[str, str, str]]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            rows = []
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    rows.append((item.target.id, ast.unparse(item.annotation), comments.get(item.lineno, "")))
                elif isinstance(item, ast.Assign) and isinstance(item.targets[0], ast.Name):
                    rows.append((item.targets[0].id, ast.unparse(item.value), comments.get(item.lineno, "")))
            out[node.name] = rows
    return out


def _cell(value: Any) -> str:
    text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return "`" + text.replace("|", "\\|") + "`" if text else ""


def _text(comment: str) -> str:
    """A comment as a table cell: no pipes or angle brackets for Markdown to take as markup."""
    return comment.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("\n", " ") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- config
def _yaml_comments(path: Path) -> dict[str, str]:
    """Dotted key -> its comment in a conf/ file: the one on its line (with the comment lines indented under
    it), else the comment lines just above it."""
    import re

    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    above: list[str] = []
    last = None
    for line in path.read_text().splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if last and indent > last[1]:  # a comment continued under a key's own comment
                out[last[0]] = (out.get(last[0], "") + " " + text).strip()
            else:
                above.append(text)
                last = None
            continue
        found = re.match(r"^(\s*)([A-Za-z_][\w]*):(.*)$", line)
        if not found:
            above, last = [], None
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = ".".join([k for _, k in stack] + [found[2]])
        rest = found[3]
        comment = rest.split(" #", 1)[1].strip() if " #" in rest else ""
        out[key] = comment or " ".join(above)
        last = (key, indent + len(found[2]) + 1) if comment else None
        stack.append((indent, found[2]))
        above = []
    return {key: text for key, text in out.items() if text}


def _defaults() -> dict[str, str]:
    """Group -> the option conf/config.yaml's defaults list picks."""
    import yaml

    listed = yaml.safe_load((CONF_DIR / "config.yaml").read_text())["defaults"]
    return {k: v for entry in listed if isinstance(entry, dict) for k, v in entry.items()}


def _comments_for(prefix: str, option: str | None = None) -> dict[str, str]:
    """The conf/ comments of a group's keys (its default option's file, or `option`), by key without prefix."""
    if not prefix:
        found = _yaml_comments(CONF_DIR / "config.yaml")
        return {k: v for k, v in found.items() if "." not in k}
    group, _, nested = prefix[:-1].partition(".")
    if group == "paths":
        return {k[len(prefix):]: v for k, v in _yaml_comments(CONF_DIR / "config.yaml").items() if k.startswith(prefix)}
    found = _yaml_comments(CONF_DIR / group / f"{option or _defaults()[group]}.yaml")
    return {k[len(nested) + 1:]: v for k, v in found.items() if k.startswith(f"{nested}.")} if nested else found


def _schema_rows(cls: type, prefix: str, values: dict, fields: dict, option: str | None = None) -> list[list[str]]:
    """One row per field of the dataclass `cls` (inherited fields included), with the composed value and the
    comment beside the field in the schema, else beside the key in conf/ (`option`'s file, or the default's)."""
    beside = _comments_for(prefix, option)
    own = {}
    for klass in reversed(cls.__mro__):
        for name, annotation, comment in fields.get(klass.__name__, []):
            own[name] = (annotation, comment or own.get(name, ("", ""))[1])
    rows = []
    for field in dataclasses.fields(cls):
        if _section_type(field) is not None:
            continue  # a group of its own, listed under its key
        annotation, comment = own.get(field.name, ("", ""))
        comment = comment or beside.get(field.name, "")
        rows.append([f"`{prefix}{field.name}`", _cell(annotation), _cell(values.get(field.name)), _text(comment)])
    return rows


def _preset_lines(group: str) -> list[list[str]]:
    """Each option of a config group (`+experiment`: an appended group): its name and its file's opening
    comment (Hydra's `@package` directive left out)."""
    rows = []
    for path in sorted((CONF_DIR / group.lstrip("+")).glob("*.yaml")):
        opening = []
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            if not line.lstrip("#").strip().startswith("@package"):
                opening.append(line.lstrip("#").strip())
        rows.append([f"`{group}={path.stem}`", _text(" ".join(opening))])
    return rows


def config_keys() -> set[str]:
    """Every key a user may set on the command line (`model.path`, `quant.block_size`, `seed`, ...)."""
    keys = set()
    for cls, prefix in _config_sections():
        keys |= {f"{prefix}{f.name}" for f in dataclasses.fields(cls) if _section_type(f) is None}
    return keys


def _section_type(field: dataclasses.Field) -> type | None:
    """The schema of a field that is a group of its own (`model: ModelConfig`), else None."""
    cls = getattr(schema, str(field.type), None)
    return cls if dataclasses.is_dataclass(cls) else None


def _config_sections() -> list[tuple[type, str]]:
    """(schema, key prefix) for the top level, each group, and each quantization method and speed schema."""
    sections = [(schema.Config, "")]
    for f in dataclasses.fields(schema.Config):
        if cls := _section_type(f):  # a group, then any section nested in it (eval.sequential)
            sections += [(cls, f"{f.name}.")] + [(sub, f"{f.name}.{g.name}.") for g in dataclasses.fields(cls)
                                                 if (sub := _section_type(g))]
    sections += [(cls, "quant.") for cls in schema.QUANT_SCHEMAS.values()]
    return sections + [(cls, "speed.") for cls in schema.SPEED_SCHEMAS.values()]


def config_reference() -> str:
    """Every config key with its type, the value the default command uses, and its comment; then each group's
    options. Quantization and speed keys are listed per method, from the preset that uses them."""
    from omegaconf import OmegaConf

    fields = _class_fields(Path(schema.__file__))
    default = OmegaConf.to_container(schema.compose(), resolve=False)
    out = ["Generated from `qexp/schema.py` (types and comments) and `conf/` (values: what "
           "`python -m qexp` composes with no overrides; a quantization method's keys, from its preset).", ""]
    header = ["key", "type", "default", "what it is"]
    out += ["## Top-level keys", "", _table(header, _schema_rows(schema.Config, "", default, fields)), ""]
    for cls, prefix in _config_sections()[1:]:
        if prefix not in ("quant.", "speed."):
            values = default
            for part in prefix[:-1].split("."):
                values = values.get(part) or {}
            out += [f"## `{prefix[:-1]}`", "", _table(header, _schema_rows(cls, prefix, values, fields)), ""]
    out += ["## `quant`: one set of keys per method", ""]
    for method, cls in schema.QUANT_SCHEMAS.items():
        values = OmegaConf.to_container(schema.compose([f"quant={method}"]).quant, resolve=False)
        rows = _schema_rows(cls, "quant.", values, fields, method)
        out += [f"### `quant={method}`", "", _table(header, rows), ""]
    out += ["## `speed`", ""]
    for name, cls in schema.SPEED_SCHEMAS.items():
        values = OmegaConf.to_container(schema.compose([f"speed={name}"]).speed, resolve=False)
        out += [f"### `speed={name}`", "", _table(header, _schema_rows(cls, "speed.", values, fields, name)), ""]
    out += ["## Config groups and their options", "",
            "Pick one option per group (`quant=gptq`), or sweep several with `-m` (`quant=gptq,awq`).", ""]
    for group, purpose in schema.GROUPS.items():
        out += [f"### `{group}`: {_text(purpose)}", "", _table(["option", "what it is"], _preset_lines(group)), ""]
    return "\n".join(out).rstrip() + "\n"


# ----------------------------------------------------------------------------- contract
def contract_reference() -> str:
    """Every tag, artifact and metric name of `qexp.contract`, with the comment beside it in the code."""
    fields = _class_fields(Path(contract.__file__))
    out = ["Generated from `qexp/contract.py`. In Python, use the names (`TAGS.QUANT`), not the strings.", ""]
    for cls, what in ((contract.TAGS, "Tags"), (contract.ARTIFACTS, "Artifacts"), (contract.METRICS, "Metrics")):
        rows = [[f"`{cls.__name__}.{name}`", _cell(getattr(cls, name)), _text(comment)]
                for name, _, comment in fields[cls.__name__] if name.isupper()]
        builders = [[f"`{cls.__name__}.{name}(...)`", "", _text((member.__func__.__doc__ or "").strip().split("\n")[0])]
                    for name, member in vars(cls).items() if isinstance(member, staticmethod)]
        out += [f"## {what}", "", _table(["name in qexp.contract", "value", "what it is"], rows + builders), ""]
    return "\n".join(out).rstrip() + "\n"


# ----------------------------------------------------------------------------- command lines
def _commands() -> dict[str, Callable[[list[str]], int]]:
    from .cleanup import main as cleanup
    from .compare.__main__ import main as compare
    from .compare.plan import main as plan

    return {"python -m qexp.compare": compare, "python -m qexp.compare.plan": plan, "python -m qexp.cleanup": cleanup}


def command_help(command: str) -> str:
    """`command --help` as its parser prints it, 100 columns wide."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
            _commands()[command](["--help"])
    finally:
        os.environ.pop("COLUMNS") if old is None else os.environ.__setitem__("COLUMNS", old)
    return buffer.getvalue().rstrip().replace(os.getcwd(), "$PWD")  # defaults under the working folder


def command_flags() -> dict[str, set[str]]:
    """Each command's long flags, as its `--help` lists them."""
    import re

    return {command: set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", command_help(command))) for command in _commands()}


def cli_reference() -> str:
    out = ["Generated from each command's own parser: what `--help` prints.", "",
           "## `python -m qexp`", "",
           "The study itself is a Hydra app: its arguments are config overrides (`quant=gptq`, `calib.n=215`; "
           "the [configuration reference](config.md) lists every key), `-m` sweeps several values, and "
           "`--help` lists the groups:", "", "```", schema.group_help(), "```", ""]
    for command in _commands():
        out += [f"## `{command}`", "", "```", command_help(command), "```", ""]
    return "\n".join(out).rstrip() + "\n"


PAGES = {"config": config_reference, "contract": contract_reference, "cli": cli_reference}


if __name__ == "__main__":
    print(PAGES[sys.argv[1] if len(sys.argv) > 1 else "config"]())
