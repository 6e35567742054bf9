"""Reference pages generated from the code at build time (mkdocs-gen-files), so they cannot drift:
every command's options from its pydantic config (through the same `options_of` that builds the
flags), the manifest's columns from its Arrow schema and column docs, and the HTTP API from the
service's own OpenAPI document."""

from __future__ import annotations

import json
from typing import Any

import mkdocs_gen_files

from connectors.manifest.schema import MANIFEST_COLUMNS_DOC, MANIFEST_SCHEMA
from jobs.common.cli import COMMANDS, Option, load_command, options_of


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _spelling(option: Option) -> str:
    if not option.spellings:
        return f"`{option.name}` (config file only)"
    if option.positional:
        return f"`{option.spellings[0]}...` (arguments)"
    flags = " / ".join(f"`{s}`" for s in option.spellings)
    return flags + (f" / `--no-{option.name.replace('_', '-')}`" if option.boolean else "")


def _value(option: Option) -> str:
    if option.required:
        return "**required**"
    if option.boolean:
        return "off" if option.default is None else option.default
    return f"`{option.default}`" if option.default else ""


def options_page() -> str:
    lines = [
        "# Command options",
        "",
        "Generated from each command's pydantic config: the same source as `birefnet COMMAND --help`.",
        "Every option can also be set in a YAML or JSON file given with `--config FILE` (keys are the",
        "names in the first column without dashes, underscores for hyphens); flags override the file.",
        "",
    ]
    for name, entry in COMMANDS.items():
        command = load_command(name)
        lines += [f"## `birefnet {name}`", "", entry.summary, "", f"Also: `python -m {entry.module}`.", ""]
        lines += ["| option | default | what it does |", "|---|---|---|"]
        for option in options_of(command.config):
            choices = f" One of: {', '.join(f'`{c}`' for c in option.choices)}." if option.choices else ""
            lines.append(
                f"| {_spelling(option)} | {_value(option)} | {_cell(option.description + choices)} |"
            )
        lines.append("")
    return "\n".join(lines)


def manifest_page() -> str:
    lines = [
        "# Manifest schema",
        "",
        "One row per input and run, in Parquet parts under `manifest/` (see the segmentation guide for",
        "how parts are committed and compacted). Generated from `connectors.manifest.schema`.",
        "",
        "| column | Arrow type | nullable | meaning |",
        "|---|---|---|---|",
    ]
    for field in MANIFEST_SCHEMA:
        nullable = "yes" if field.nullable else "no"
        lines.append(
            f"| `{field.name}` | `{field.type}` | {nullable} | {_cell(MANIFEST_COLUMNS_DOC[field.name])} |"
        )
    return "\n".join(lines) + "\n"


def _schema_text(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if "anyOf" in schema:
        return " or ".join(_schema_text(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"list of {_schema_text(schema.get('items', {}))} (comma-separated)"
    return f"`{schema.get('type', 'any')}`" + (f" ({schema['format']})" if "format" in schema else "")


def http_page(document: dict[str, Any]) -> str:
    lines = [
        "# HTTP API",
        "",
        "Generated from the service's OpenAPI document, which a running service also serves at",
        "`/openapi.json` (the full document: [openapi.json](openapi.json)).",
        "",
    ]
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            lines += [
                f"## `{method.upper()} {path}`",
                "",
                operation.get("description", operation["summary"]),
                "",
            ]
            parameters = operation.get("parameters", [])
            if parameters:
                lines += ["| parameter | type | default | meaning |", "|---|---|---|---|"]
                for p in parameters:
                    default = p["schema"].get("default")
                    shown = f"`{json.dumps(default)}`" if default is not None else ""
                    lines.append(
                        f"| `{p['name']}` | {_schema_text(p['schema'])} | {shown} | {_cell(p['description'])} |"
                    )
                lines.append("")
            body = operation.get("requestBody")
            if body:
                kinds = ", ".join(f"`{k}`" for k in body["content"])
                lines += [f"**Body** ({kinds}): {body.get('description', '')}", ""]
            lines += ["| status | content | meaning |", "|---|---|---|"]
            for status, response in operation["responses"].items():
                kinds = ", ".join(f"`{k}`" for k in response.get("content", {}))
                lines.append(f"| {status} | {kinds} | {_cell(response['description'])} |")
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    from jobs.serve.deployments import api  # Ray Serve and torch: loaded only for this page

    document = api.openapi()
    pages = {
        "reference/options.md": options_page(),
        "reference/manifest.md": manifest_page(),
        "reference/http-api.md": http_page(document),
        "reference/openapi.json": json.dumps(document, indent=2),
    }
    for path, text in pages.items():
        with mkdocs_gen_files.open(path, "w") as handle:
            handle.write(text)


main()
