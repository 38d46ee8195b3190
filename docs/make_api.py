"""Write ``docs/api.md``, the API reference, from the docstrings of the public API.

    python docs/make_api.py           # (re)write docs/api.md
    python docs/make_api.py --check   # exit 1 when docs/api.md is not up to date

Standard library only (``inspect``, ``ast``): the public names are the ``__all__`` of the
modules in :data:`SECTIONS` (the widget classes that ``critpath_widgets`` imports lazily
included); a class is shown with its signature, its docstring, and the public methods,
properties, fields and traits that classes of this package define (inherited ones from
ipywidgets, torch or the standard library are left out). Attribute docs are read from the
source: a string right under an assignment, or ``#:`` comments right above it. The
output is deterministic: members sorted by name, no memory addresses in default values.
``tests/test_api_docs.py`` checks that every documented name has a docstring and that
``docs/api.md`` is what this script writes now.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib
import inspect
import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
API_MD = ROOT / "docs" / "api.md"
PACKAGE = "critpath_widgets"
FIX_COMMAND = "python docs/make_api.py"

#: (module, one-line description) in the order the reference shows them.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("critpath_widgets", "The engine, attribution baselines, models and the widgets."),
    ("critpath_widgets.evaluation", "Pathway analysis, sanity check, deletion / insertion."),
    ("critpath_widgets.labs", "Classroom labs: self-checking exercises."),
    ("critpath_widgets.report", "Static figures of an explanation (CLI, reports, save)."),
    ("critpath_widgets.errors", "Exception and warning types."),
)

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_WIDTH = 88


@dataclass
class Member:
    """One documented member of a class: a method, property, field or trait."""

    name: str
    kind: str  # "method", "property", "field", "trait", "attribute"
    signature: str
    doc: str


@dataclass
class Entry:
    """One public name of a section, with what the reference shows for it."""

    module: str
    name: str
    kind: str  # "class", "function", "data"
    signature: str
    doc: str
    members: list[Member] = field(default_factory=list)
    see: str = ""  # the section that documents it, for a re-export

    @property
    def anchor(self) -> str:
        """The HTML id of the entry's heading."""
        return anchor(f"{self.module}.{self.name}")


def anchor(qualname: str) -> str:
    """A portable HTML id for ``qualname`` (letters, digits and dashes; the case is kept,
    so that ``Jaccard`` and ``jaccard`` differ)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", qualname).strip("-")


def _own_package(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module == PACKAGE or module.startswith(PACKAGE + ".")


# ------------------------------------------------------------------ docs in the source
def _attribute_docs(source: str) -> dict[str, str]:
    """Docs of the assignments at the top level of ``source`` (a module or a class body):
    the string literal right under the assignment, else the ``#:`` comments above it."""
    source = textwrap.dedent(source)
    tree = ast.parse(source)
    body = tree.body
    if len(body) == 1 and isinstance(body[0], ast.ClassDef):
        body = body[0].body
    lines = source.splitlines()
    docs: dict[str, str] = {}
    for i, node in enumerate(body):
        if isinstance(node, ast.Assign):
            targets = [t for t in node.targets if isinstance(t, ast.Name)]
            names = [t.id for t in targets]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names = [node.target.id]
        else:
            continue
        doc = ""
        nxt = body[i + 1] if i + 1 < len(body) else None
        if (
            isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            doc = inspect.cleandoc(nxt.value.value)
        else:
            comments = []
            j = node.lineno - 2
            while j >= 0 and lines[j].strip().startswith("#:"):
                comments.insert(0, lines[j].strip()[2:].strip())
                j -= 1
            doc = "\n".join(comments)
        for name in names:
            docs[name] = doc
    return docs


def _module_source(module: Any) -> str:
    try:
        return inspect.getsource(module)
    except (OSError, TypeError):
        return ""


def constant_home(module_name: str, name: str, _seen: frozenset[str] = frozenset()) -> str:
    """The module that assigns module-level ``name`` seen in ``module_name``, following
    ``from ... import name`` within the package (``module_name`` itself when not found)."""
    module = importlib.import_module(module_name)
    source = _module_source(module)
    if not source or module_name in _seen or name in _attribute_docs(source):
        return module_name
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom) and any(a.name == name for a in node.names):
            if node.level:
                package = module_name if hasattr(module, "__path__") else module.__package__
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith(PACKAGE):
                return constant_home(target, name, _seen | {module_name})
    return module_name


def constant_doc(module_name: str, name: str) -> str:
    """The doc of module-level ``name`` (a string under it, or ``#:`` comments above)."""
    home = constant_home(module_name, name)
    return _attribute_docs(_module_source(importlib.import_module(home))).get(name, "")


@functools.cache
def _class_attribute_docs(cls: type) -> dict[str, str]:
    try:
        return _attribute_docs(inspect.getsource(cls))
    except (OSError, TypeError, SyntaxError):
        return {}


# ------------------------------------------------------------------------- formatting
def _repr(value: Any) -> str:
    """``repr`` without memory addresses (``<function f at 0x..>`` -> ``<function f>``)."""
    text = _ADDRESS.sub("", repr(value))
    return text


def _annotation(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__qualname__ if annotation.__module__ == "builtins" else repr(annotation)
    return _ADDRESS.sub("", inspect.formatannotation(annotation))


def format_signature(name: str, obj: Callable[..., Any], drop_first: bool = False) -> str:
    """``name(params) -> return``, annotations as written in the source, wrapped when long."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return f"{name}(...)"
    params = list(sig.parameters.values())
    if drop_first and params:
        params = params[1:]
    parts: list[str] = []
    saw_kw_only = False
    for i, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY and not saw_kw_only:
            saw_kw_only = True
            parts.append("*")
        if p.kind is p.VAR_POSITIONAL:
            saw_kw_only = True
            text = "*" + p.name
        elif p.kind is p.VAR_KEYWORD:
            text = "**" + p.name
        else:
            text = p.name
        if p.annotation is not p.empty:
            text += ": " + _annotation(p.annotation)
        if p.default is not p.empty:
            eq = " = " if p.annotation is not p.empty else "="
            text += eq + _repr(p.default)
        parts.append(text)
        nxt = params[i + 1] if i + 1 < len(params) else None
        if p.kind is p.POSITIONAL_ONLY and (nxt is None or nxt.kind is not p.POSITIONAL_ONLY):
            parts.append("/")
    ret = ""
    if sig.return_annotation is not sig.empty:
        ret = " -> " + _annotation(sig.return_annotation)
    one_line = f"{name}({', '.join(parts)}){ret}"
    if len(one_line) <= _WIDTH:
        return one_line
    inner = "".join(f"    {part},\n" for part in parts)
    return f"{name}(\n{inner}){ret}"


def markdown_doc(doc: str) -> str:
    """A docstring as Markdown: numpy-style section underlines become bold headings,
    doctest lines a ``pycon`` block; the rest stays as written."""
    lines = doc.splitlines()
    out: list[str] = []
    in_section = False  # inside a numpy-style section: "name:" lines, indented text
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and re.fullmatch(r"\s*-{3,}\s*", nxt) and not line.startswith(" "):
            out.append(f"**{line.strip()}**")
            out.append("")
            in_section = True
            i += 2
            continue
        if in_section and line.strip():
            if line.startswith(" "):
                out.append("  " + line.strip())
            else:
                out.append(f"- `{line.strip().rstrip(':')}`")
                if nxt.startswith(" "):
                    out[-1] += ":"
            i += 1
            continue
        if line.lstrip().startswith(">>>"):
            block = []
            while i < len(lines) and (
                lines[i].lstrip().startswith((">>>", "..."))
                or (block and lines[i].strip() and not lines[i - 1].strip() == "")
            ):
                block.append(lines[i].strip())
                i += 1
            if out and out[-1].strip():
                out.append("")
            out += ["```pycon", *block, "```"]
            if i < len(lines) and lines[i].strip():
                out.append("")
            continue
        out.append(line)
        i += 1
    return "\n".join(out).strip()


# ------------------------------------------------------------------------ collecting
def _doc_of_member(cls: type, name: str) -> str:
    """The member's own docstring, else one a class of this package above it gives."""
    for klass in cls.__mro__:
        if name not in vars(klass) or not _own_package(klass):
            continue
        raw = vars(klass)[name]
        if isinstance(raw, (staticmethod, classmethod)):
            raw = raw.__func__
        doc = getattr(raw, "__doc__", None)
        if isinstance(raw, property) and not doc and raw.fget is not None:
            doc = raw.fget.__doc__
        if doc and (inspect.isfunction(raw) or isinstance(raw, property) or hasattr(raw, "func")):
            return inspect.cleandoc(doc)
    return ""


def _property_signature(name: str, raw: Any) -> str:
    fget = getattr(raw, "fget", None) or getattr(raw, "func", None)
    try:
        ret = inspect.signature(fget).return_annotation if fget else inspect.Signature.empty
    except (TypeError, ValueError):
        ret = inspect.Signature.empty
    return name if ret is inspect.Signature.empty else f"{name}: {_annotation(ret)}"


def _trait_signature(name: str, trait: Any) -> str:
    kind = type(trait).__name__.lstrip("_")
    try:
        default = _repr(trait.default())
    except Exception:  # noqa: BLE001 - a dynamic default cannot be shown
        default = "..."
    return f"{name}: {kind} = {default}"


def class_members(cls: type) -> list[Member]:
    """The public methods, properties, fields and traits this package defines on ``cls``."""
    try:
        import traitlets

        trait_type: tuple[type, ...] = (traitlets.TraitType,)
    except ImportError:  # pragma: no cover - traitlets comes with ipywidgets
        trait_type = ()
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    tuple_fields = set(getattr(cls, "_fields", ())) if issubclass(cls, tuple) else set()
    members: dict[str, Member] = {}
    for klass in reversed(cls.__mro__):
        if not _own_package(klass):
            continue
        attr_docs = _class_attribute_docs(klass)
        for name, raw in vars(klass).items():
            if name.startswith("_"):
                continue
            if name in fields:
                f = fields[name]
                sig = f"{name}: {_annotation(f.type)}"
                if f.default is not dataclasses.MISSING:
                    sig += " = " + _repr(f.default)
                elif f.default_factory is not dataclasses.MISSING:
                    sig += " = " + _repr(f.default_factory())
                members[name] = Member(name, "field", sig, attr_docs.get(name, ""))
            elif name in tuple_fields:
                ann = getattr(cls, "__annotations__", {}).get(name)
                sig = name if ann is None else f"{name}: {_annotation(ann)}"
                members[name] = Member(name, "field", sig, attr_docs.get(name, ""))
            elif trait_type and isinstance(raw, trait_type):
                doc = attr_docs.get(name, "")
                helptext = raw.help or ""
                if helptext and helptext not in doc:
                    doc = f"{doc}\n\n*help:* {helptext}".strip()
                members[name] = Member(name, "trait", _trait_signature(name, raw), doc)
            elif isinstance(raw, property) or type(raw).__name__ == "cached_property":
                sig = _property_signature(name, raw)
                members[name] = Member(name, "property", sig, _doc_of_member(cls, name))
            elif isinstance(raw, (staticmethod, classmethod)) or inspect.isfunction(raw):
                func = getattr(cls, name)
                drop = inspect.isfunction(raw)
                prefix = "@classmethod " if isinstance(raw, classmethod) else ""
                prefix = "@staticmethod " if isinstance(raw, staticmethod) else prefix
                sig = prefix + format_signature(name, raw.__func__ if prefix else func, drop)
                if isinstance(raw, classmethod):
                    sig = prefix + format_signature(name, raw.__func__, True)
                members[name] = Member(name, "method", sig, _doc_of_member(cls, name))
            elif hasattr(raw, "func") and callable(raw.func):  # traitlets' event handlers
                sig = format_signature(name, raw.func, True)
                members[name] = Member(name, "method", sig, _doc_of_member(cls, name))
            elif name in attr_docs and not callable(raw):
                sig = f"{name} = {_repr(raw)}"
                members[name] = Member(name, "attribute", sig, attr_docs[name])
    for name in fields:  # dataclass fields without a class-level default
        if name not in members and not name.startswith("_"):
            f = fields[name]
            docs = (_class_attribute_docs(k).get(name, "") for k in cls.__mro__ if _own_package(k))
            doc = next((d for d in docs if d), "")
            members[name] = Member(name, "field", f"{name}: {_annotation(f.type)}", doc)
    return [members[name] for name in sorted(members)]


def _class_doc(cls: type) -> str:
    """The class's own docstring; the one dataclasses and NamedTuple make up counts as none."""
    doc = cls.__dict__.get("__doc__") or ""
    if (dataclasses.is_dataclass(cls) or issubclass(cls, tuple)) and doc.startswith(
        cls.__name__ + "("
    ):
        return ""
    return inspect.cleandoc(doc) if doc else ""


def _short_value(value: Any) -> str:
    text = _repr(value)
    if len(text) <= _WIDTH:
        return text
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_repr(k)}: ..." for k in value) + "}"
    return text[: _WIDTH - 4] + " ..."


def describe(module_name: str, name: str) -> Entry:
    """The reference entry of ``module_name.name``."""
    module = importlib.import_module(module_name)
    obj = getattr(module, name)
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):  # the bases say more than (*args, **kwargs)
            sig = f"{name}({', '.join(b.__name__ for b in obj.__bases__)})"
        else:
            sig = format_signature(name, obj).removesuffix(" -> None")
        return Entry(module_name, name, "class", sig, _class_doc(obj), class_members(obj))
    if callable(obj) and not isinstance(obj, (dict, list, tuple)):
        doc = inspect.cleandoc(obj.__doc__) if getattr(obj, "__doc__", None) else ""
        return Entry(module_name, name, "function", format_signature(name, obj), doc)
    home = importlib.import_module(constant_home(module_name, name))
    ann = getattr(home, "__annotations__", {}).get(name)
    type_name = _annotation(ann) if ann is not None else type(obj).__name__
    sig = f"{name}: {type_name} = {_short_value(obj)}"
    return Entry(module_name, name, "data", sig, constant_doc(module_name, name))


def collect() -> list[tuple[str, str, list[Entry]]]:
    """(module, description, entries) for every section; an object that a later section
    documents (the errors re-exported by the package) is a cross-reference there."""
    homes: dict[int, str] = {}
    for module_name, _ in SECTIONS[1:]:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            homes.setdefault(id(getattr(module, name)), f"{module_name}.{name}")
    out = []
    for module_name, description in SECTIONS:
        module = importlib.import_module(module_name)
        entries = []
        for name in sorted(module.__all__, key=lambda n: (n.lower(), n)):
            home = homes.get(id(getattr(module, name)))
            if module_name == PACKAGE and home and home != f"{module_name}.{name}":
                entries.append(Entry(module_name, name, "see", "", "", see=home))
            else:
                entries.append(describe(module_name, name))
        out.append((module_name, description, entries))
    return out


def iter_documented(
    sections: list[tuple[str, str, list[Entry]]] | None = None,
) -> Iterator[tuple[str, str]]:
    """(qualified name, docstring) of every public name and member the reference shows."""
    for _module, _desc, entries in sections if sections is not None else collect():
        for entry in entries:
            if entry.kind == "see":
                continue
            qual = f"{entry.module}.{entry.name}"
            yield qual, entry.doc
            for member in entry.members:
                yield f"{qual}.{member.name}", member.doc


def missing_docstrings() -> list[str]:
    """Qualified names of the public names and members that have no docstring."""
    return [qual for qual, doc in iter_documented() if not doc.strip()]


# -------------------------------------------------------------------------- rendering
def _render_entry(entry: Entry) -> list[str]:
    qual = f"{entry.module}.{entry.name}"
    if entry.kind == "see":
        return [
            f'<a id="{entry.anchor}"></a>',
            "",
            f"### `{entry.name}`",
            "",
            f"Re-exported from [`{entry.see}`](#{anchor(entry.see)}).",
            "",
        ]
    label = {"class": "class", "function": "function", "data": "data"}[entry.kind]
    lines = [
        f'<a id="{entry.anchor}"></a>',
        "",
        f"### `{entry.name}` ({label})",
        "",
        "```python",
        ("class " if entry.kind == "class" else "") + entry.signature,
        "```",
        "",
    ]
    if entry.doc:
        lines += [markdown_doc(entry.doc), ""]
    else:
        lines += ["*(no docstring)*", ""]
    groups = (
        ("field", "Fields"),
        ("trait", "Traits"),
        ("property", "Properties"),
        ("method", "Methods"),
        ("attribute", "Class attributes"),
    )
    for kind, title in groups:
        members = [m for m in entry.members if m.kind == kind]
        if not members:
            continue
        lines += [f"**{title}**", ""]
        for m in members:
            lines += [f'<a id="{anchor(qual + "." + m.name)}"></a>', ""]
            lines += [f"#### `{entry.name}.{m.name}`", ""]
            lines += ["```python", m.signature, "```", ""]
            lines += [markdown_doc(m.doc) if m.doc else "*(no docstring)*", ""]
    return lines


def generate() -> str:
    """The text of ``docs/api.md``."""
    sections = collect()
    lines = [
        "# API reference",
        "",
        f"<!-- Generated by docs/make_api.py from the docstrings; do not edit. "
        f"Regenerate with `{FIX_COMMAND}`. -->",
        "",
        "## Contents",
        "",
    ]
    for module_name, description, entries in sections:
        lines.append(f"- [`{module_name}`](#{anchor(module_name)}): {description}")
        for entry in entries:
            lines.append(f"  - [`{entry.name}`](#{entry.anchor})")
    lines.append("")
    for module_name, description, entries in sections:
        module = importlib.import_module(module_name)
        lines += [f'<a id="{anchor(module_name)}"></a>', "", f"## `{module_name}`", ""]
        lines += [markdown_doc(inspect.cleandoc(module.__doc__ or description)), ""]
        for entry in entries:
            lines += _render_entry(entry)
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write docs/api.md, or with ``--check`` say whether it is up to date (exit 1 if not)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/api.md is stale")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        current = API_MD.read_text(encoding="utf-8") if API_MD.exists() else ""
        if current != text:
            print(
                f"{API_MD.relative_to(ROOT)} is not up to date with the docstrings; "
                f"run `{FIX_COMMAND}` and commit the result.",
                file=sys.stderr,
            )
            return 1
        print(f"{API_MD.relative_to(ROOT)} is up to date.")
        return 0
    API_MD.write_text(text, encoding="utf-8")
    missing = missing_docstrings()
    print(f"wrote {API_MD.relative_to(ROOT)} ({len(missing)} names without a docstring)")
    return 0


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
