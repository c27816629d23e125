"""The bundle's two documents for people: ``summary.md`` (what served at T, who approved it, the
validation verdicts) and each serving version's model card, ``cards/<version>.md`` — the facts of the
console's card (ui/card.py's pure folds), as Markdown."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelport.tables import escape_controls

if TYPE_CHECKING:
    from modelport.registry.records import VersionRecord
    from modelport.ui.card import Golden, Proof

__all__ = ["card", "summary_markdown"]


def _text(value: Any) -> str:
    """One table cell or line: control characters escaped, pipes and backticks defused."""
    return escape_controls(str(value)).replace("|", "\\|").replace("`", "'")


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_text(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def summary_markdown(summary: dict[str, Any], generated: str) -> str:
    name, at = summary["model"], summary["at"]
    lines = [
        f"# Evidence: {_text(name)} at {at}",
        "",
        f"Generated {generated} by modelport. Times are UTC. Servers follow an alias move within their "
        'poll interval (`MODELPORT_ROUTE_POLL_SECONDS`, 0.25 s by default): "served at T" is what the '
        "registry pointed at T.",
        "",
        "## Aliases at T",
        "",
    ]
    rows: list[tuple[Any, ...]] = []
    for alias, state in sorted(summary["aliases"].items()):
        release = state["release"]
        traffic = "all" if release is None else ""
        if release is not None:
            parts = []
            if release.get("canary") is not None:
                parts.append(f"canary v{release['canary']} {release.get('weight')}%")
            if release.get("shadow") is not None:
                parts.append(f"shadow v{release['shadow']}")
            traffic = (
                ", ".join(parts) + f" (started {release.get('started_at')} by {release.get('started_by')})"
            )
        approved = state["approved"]
        rows.append(
            (
                alias,
                "—" if state["version"] is None else f"v{state['version']}",
                state["since"] or "—",
                state["moved_by"] or "—",
                traffic,
                "—"
                if approved is None
                else f"change {approved['change']}: {approved['requested_by']} → {approved['approved_by']}",
            )
        )
    lines += _table(("alias", "version", "since", "moved by", "release", "approval"), rows)
    lines += ["## Validation at T", ""]
    lines += _table(
        ("version", "verdict", "by", "at", "environment"),
        [
            (f"v{number}", v["verdict"], v["by"] or "—", v["at"] or "—", (v["environment"] or "—")[:16])
            for number, v in sorted(summary["validation"].items(), key=lambda item: int(item[0]))
        ],
    )
    chain = summary["audit"]
    lines += [
        "## Audit chain",
        "",
        f"{chain['records']} records from genesis to T; head `{chain['head']}`. {chain['in_full']} of this "
        f"model's records are in `audit.jsonl` in full, {chain['omitted']} others only as linked hashes.",
        "",
        "Drift and accuracy: "
        + ("`monitoring.json`." if summary["monitoring"] else "not included (see `monitoring.json`)."),
        "",
        "Verify with `python3 tools/verify_evidence.py BUNDLE.zip --manifest-sha256 HEX`.",
        "",
    ]
    return "\n".join(lines)


def card(
    version: VersionRecord,
    reports: list[dict[str, Any]],
    proof: Proof,
    golden: Golden,
    lineage: list[tuple[str, str]],
    profile: dict[str, Any] | None,
) -> str:
    """The model card of ``version`` with the validation reports that existed at T (newest first)."""
    tags = {k.lower().replace(" ", "_").replace("-", "_"): v for k, v in version.tags.items()}
    intended = tags.get("intended_use") or tags.get("use") or version.description or "not recorded"
    lines = [
        f"# Model card: {_text(version.ref)}",
        "",
        f"- Registered: {version.created_at.isoformat()} by {_text(version.creator)}",
        f"- UUID: {version.uuid}",
        f"- Serving format: {version.serving_format}",
        f"- Intended use: {_text(intended)}",
        "",
        "## Artifacts",
        "",
    ]
    lines += _table(
        ("role", "format", "sha256", "bytes"),
        [(a.role, a.format, a.digest, a.size) for a in version.artifacts],
    )
    metrics = [(k, v) for k, v in (version.lineage.get("metrics") or {}).items()]
    if profile:
        for key in ("accuracy", "log_loss", "rows"):
            if profile.get(key) is not None:
                metrics.append((f"reference {key} (registration sample)", profile[key]))
    lines += ["## Metrics", ""] + (_table(("metric", "value"), metrics) if metrics else ["none recorded", ""])
    lines += ["## Lineage", ""] + (_table(("what", "value"), lineage) if lineage else ["none recorded", ""])
    lines += [
        "## ONNX equivalence proof",
        "",
        f"{_text(proof.verdict)}" + (f" — {_text(proof.reason)}" if proof.reason else ""),
        "",
    ]
    if proof.numbers:
        lines += _table(("what", "value"), list(proof.numbers))
    lines += [f"## Golden cases (first {len(golden.rows)} of {golden.total})", ""]
    if golden.rows:
        lines += _table(
            (*golden.columns, golden.answer_heading),
            [(*row, answer) for row, answer in zip(golden.rows, golden.answers, strict=False)],
        )
    lines += ["## Validation reports at T", ""]
    lines += (
        _table(
            ("report", "verdict", "by", "at", "environment"),
            [
                (
                    r["id"],
                    "passed" if r["passed"] else "failed",
                    r["created_by"],
                    r["created_at"],
                    r["environment_hash"],
                )
                for r in reports
            ],
        )
        if reports
        else ["none", ""]
    )
    return "\n".join(lines)
